//! Every list pages, searches and answers `meta` (api.md "Conventions", issue 15): the
//! catalog lists (jobs, workflows, services) and the run lists' search on both databases.
use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

fn slugs(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|item| {
            item["slug"]
                .as_str()
                .or_else(|| item["id"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn ok(app: &TestApp, path: &str) -> Value {
    let (status, v) = app.get_json(path).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// The 400 of a bad list query names every problem.
async fn refused(app: &TestApp, path: &str, pointers: &[&str]) {
    let (status, v) = app.get_json(path).await;
    assert_eq!(status, 400, "GET {path}: {v}");
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    let got: HashSet<&str> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    for p in pointers {
        assert!(got.contains(p), "GET {path}: {p} not named in {v}");
    }
}

/// Follows `nextCursor` from `first` to the end: every item once, newest first.
async fn all_pages(app: &TestApp, base: &str) -> Vec<String> {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut page = ok(app, base).await;
    let mut out = slugs(&page);
    while let Some(cursor) = page["meta"]["nextCursor"].as_str() {
        page = ok(app, &format!("{base}{sep}cursor={cursor}")).await;
        assert_eq!(page["meta"]["offset"], 0, "{page}");
        out.extend(slugs(&page));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_definitions_page_search_and_answer_meta() {
    let app = spawn_app().await;
    let seeded = ok(&app, "/api/jobs").await["meta"]["total"]
        .as_u64()
        .unwrap();
    let mut made = Vec::new();
    for i in 0..25 {
        let slug = format!("list-job-{i:02}");
        let (status, v) = app
            .post_json(
                "/api/jobs",
                &json!({"slug": slug, "name": format!("Listed {i}"), "entryPoint": "builtin:noop"}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        made.push(slug);
    }
    let (status, v) = app
        .post_json(
            "/api/jobs",
            &json!({"slug": "percent", "name": "100% DONE_now", "entryPoint": "builtin:noop"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let total = seeded + 26;

    // Default page: 20, newest first, with meta.
    let first = ok(&app, "/api/jobs").await;
    assert_eq!(first["meta"]["limit"], 20, "{first}");
    assert_eq!(first["meta"]["offset"], 0);
    assert_eq!(first["meta"]["total"], total);
    assert!(first["meta"]["nextCursor"].is_string(), "{first}");
    let page = slugs(&first);
    assert_eq!(page.len(), 20);
    assert_eq!(page[0], "percent");
    assert_eq!(page[1], "list-job-24");
    assert_eq!(page[19], "list-job-06");

    // Offsets and cursors reach every definition exactly once.
    let second = ok(&app, "/api/jobs?limit=5&offset=5").await;
    assert_eq!(second["meta"]["offset"], 5);
    assert_eq!(slugs(&second), page[5..10].to_vec());
    let every = all_pages(&app, "/api/jobs?limit=7").await;
    assert_eq!(every.len() as u64, total, "{every:?}");
    assert_eq!(every.iter().collect::<HashSet<_>>().len() as u64, total);
    for slug in &made {
        assert!(every.contains(slug), "{slug} missing");
    }

    // `q`: case-insensitive substring of the slug or the name; its wildcards are literal.
    let found = ok(&app, "/api/jobs?q=LIST-JOB-1").await;
    assert_eq!(found["meta"]["total"], 10, "{found}");
    assert!(slugs(&found).iter().all(|s| s.starts_with("list-job-1")));
    let by_name = ok(&app, "/api/jobs?q=listed%202").await;
    let mut named = slugs(&by_name);
    named.sort();
    assert_eq!(
        named,
        [
            "list-job-02",
            "list-job-20",
            "list-job-21",
            "list-job-22",
            "list-job-23",
            "list-job-24"
        ]
    );
    assert_eq!(slugs(&ok(&app, "/api/jobs?q=100%25").await), ["percent"]);
    assert_eq!(slugs(&ok(&app, "/api/jobs?q=e_n").await), ["percent"]);
    assert_eq!(ok(&app, "/api/jobs?q=%25%25").await["meta"]["total"], 0);
    assert_eq!(
        ok(&app, "/api/jobs?q=nothing-like-it").await["data"],
        json!([])
    );
    assert_eq!(ok(&app, "/api/jobs?q=%20").await["meta"]["total"], total);

    // Bad queries: a 400 naming every problem.
    refused(
        &app,
        "/api/jobs?limit=0&offset=-1&cursor=nope&status=active&sort=slug",
        &[
            "/query/limit",
            "/query/offset",
            "/query/cursor",
            "/query/status",
            "/query/sort",
        ],
    )
    .await;
    refused(&app, "/api/jobs?limit=101", &["/query/limit"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_and_services_page_and_search() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    for i in 0..3 {
        let (status, v) = app
            .post_json(
                "/api/workflows",
                &json!({"slug": format!("flow-{i}"), "name": format!("Flow number {i}"),
                    "steps": [{"id": "a", "jobSlug": "echo"}]}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
    let page = ok(&app, "/api/workflows?limit=2").await;
    assert_eq!(slugs(&page), ["flow-2", "flow-1"]);
    assert_eq!(page["meta"]["total"], 3);
    assert_eq!(page["meta"]["limit"], 2);
    assert_eq!(
        all_pages(&app, "/api/workflows?limit=2").await,
        ["flow-2", "flow-1", "flow-0"]
    );
    assert_eq!(
        slugs(&ok(&app, "/api/workflows?q=NUMBER%201").await),
        ["flow-1"]
    );
    refused(&app, "/api/workflows?status=healthy", &["/query/status"]).await;

    for (slug, status) in [
        ("svc-a", "healthy"),
        ("svc-b", "degraded"),
        ("svc-c", "healthy"),
    ] {
        let (code, v) = app
            .post_json(
                "/api/services",
                &json!({"slug": slug, "displayName": format!("Service {slug}"), "kind": "http",
                    "baseUrl": "http://127.0.0.1:9", "status": status}),
            )
            .await;
        assert_eq!(code, 201, "{v}");
    }
    let all = ok(&app, "/api/services").await;
    assert_eq!(slugs(&all), ["svc-c", "svc-b", "svc-a"]);
    assert_eq!(all["meta"]["total"], 3);
    let healthy = ok(&app, "/api/services?status=healthy").await;
    assert_eq!(slugs(&healthy), ["svc-c", "svc-a"]);
    assert_eq!(
        slugs(&ok(&app, "/api/services?status=degraded,unhealthy&q=service").await),
        ["svc-b"]
    );
    assert_eq!(slugs(&ok(&app, "/api/services?q=SVC-A").await), ["svc-a"]);
    refused(
        &app,
        "/api/services?status=fine&limit=x",
        &["/query/status", "/query/limit"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lists_search_ids_slugs_and_errors() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    app.job("breaks", "builtin:fail", json!({})).await;
    let failed = app
        .run(
            "breaks",
            json!({"parameters": {"message": "Kaboom in the flux capacitor"}}),
        )
        .await;
    let failed_id = failed["id"].as_str().unwrap().to_string();
    app.wait_terminal(&failed_id).await;
    let ok_run = app.run("echo", json!({})).await;
    let ok_id = ok_run["id"].as_str().unwrap().to_string();
    app.wait_terminal(&ok_id).await;

    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    // The error message, by substring and case-insensitively: it was written by an update
    // after the run was stored, so the search index follows updates.
    assert_eq!(
        ids(&ok(&app, "/api/job-runs?q=FLUX%20CAP").await),
        [failed_id.as_str()]
    );
    // Slugs, short text (compared row by row), id prefixes, whole ids.
    assert_eq!(
        ids(&ok(&app, "/api/job-runs?q=break").await),
        [failed_id.as_str()]
    );
    assert_eq!(ids(&ok(&app, "/api/job-runs?q=ec").await), [ok_id.as_str()]);
    assert_eq!(
        ids(&ok(&app, &format!("/api/job-runs?q={}", &ok_id[..13])).await),
        [ok_id.as_str()]
    );
    assert_eq!(
        ids(&ok(&app, &format!("/api/job-runs?q={}", ok_id.to_uppercase())).await),
        [ok_id.as_str()]
    );
    assert_eq!(
        ok(&app, "/api/job-runs?q=%22quoted%22%20AND").await["data"],
        json!([])
    );
    assert_eq!(
        ok(&app, "/api/job-runs?q=capacitor&status=succeeded").await["meta"]["total"],
        0
    );

    // Workflow runs take `q` too (it was a 400), over the same fields.
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "searchable-flow", "name": "S", "steps": [{"id": "a", "jobSlug": "echo"}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = app
        .post_json(
            "/api/workflows/searchable-flow/run",
            &json!({"parameters": {}}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let wf_id = v["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        ids(&ok(&app, "/api/workflow-runs?q=").await),
        [wf_id.as_str()]
    );
    assert_eq!(
        ids(&ok(&app, "/api/workflow-runs?q=SEARCHABLE").await),
        [wf_id.as_str()]
    );
    assert_eq!(
        ids(&ok(&app, &format!("/api/workflow-runs?q={}", &wf_id[..8])).await),
        [wf_id.as_str()]
    );
    assert_eq!(
        ok(&app, "/api/workflow-runs?q=nowhere").await["meta"]["total"],
        0
    );
    assert_eq!(
        ids(&ok(&app, "/api/workflows/searchable-flow/runs?q=flow").await),
        [wf_id.as_str()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_lists_page_by_version() {
    let app = spawn_app().await;
    for version in 1..=4 {
        let (status, v) = app
            .post_json(
                "/api/jobs",
                &json!({"slug": "versioned", "name": format!("V{version}"), "version": version,
                    "entryPoint": "builtin:noop"}),
            )
            .await;
        assert!(status == 201 || status == 200, "{v}");
    }
    let versions = |v: &Value| -> Vec<i64> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_i64().unwrap())
            .collect()
    };
    let first = ok(&app, "/api/jobs/versioned/versions?limit=3").await;
    assert_eq!(versions(&first), [4, 3, 2]);
    assert_eq!(first["meta"]["total"], 4);
    assert_eq!(first["meta"]["nextCursor"], "2");
    let rest = ok(&app, "/api/jobs/versioned/versions?limit=3&cursor=2").await;
    assert_eq!(versions(&rest), [1]);
    assert_eq!(rest["meta"]["nextCursor"], Value::Null);
    assert_eq!(
        versions(&ok(&app, "/api/jobs/versioned/versions?offset=3").await),
        [1]
    );
    refused(
        &app,
        "/api/jobs/versioned/versions?cursor=abc&q=x",
        &["/query/cursor", "/query/q"],
    )
    .await;

    app.job("echo", "builtin:noop", json!({})).await;
    for version in 1..=2 {
        let (status, v) = app
            .post_json(
                "/api/workflows",
                &json!({"slug": "wv", "name": "W", "version": version,
                    "steps": [{"id": "a", "jobSlug": "echo"}]}),
            )
            .await;
        assert!(status == 201 || status == 200, "{v}");
    }
    let page = ok(&app, "/api/workflows/wv/versions?limit=1").await;
    assert_eq!(versions(&page), [2]);
    assert_eq!(page["meta"]["nextCursor"], "2");
    let last = ok(&app, "/api/workflows/wv/versions?limit=1&cursor=2").await;
    assert_eq!(versions(&last), [1]);
    let (status, _) = app.get_json("/api/workflows/nope/versions").await;
    assert_eq!(status, 404);
}
