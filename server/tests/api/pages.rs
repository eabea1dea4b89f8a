//! The pages' data path on both databases: server functions under `/_sf` (backed by the same
//! service as the REST API) and the server-rendered HTML.
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_data_comes_from_the_service_on_both_databases() {
    let app = spawn_app().await;
    app.job("pg-ok", "builtin:noop", json!({})).await;
    app.job("pg-bad", "builtin:fail", json!({})).await;
    let ok = app.run("pg-ok", json!({})).await;
    let bad = app
        .run("pg-bad", json!({"parameters": {"message": "nope"}}))
        .await;
    app.wait_terminal(ok["id"].as_str().unwrap()).await;
    app.wait_terminal(bad["id"].as_str().unwrap()).await;

    let post = |endpoint: &'static str| {
        let client = app.client.clone();
        let url = app.url(&format!("/_sf/{endpoint}"));
        async move {
            let res = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{endpoint}");
            res.json::<Value>().await.unwrap()
        }
    };
    let summaries = post("job-summaries").await;
    let by_slug = |slug: &str| {
        summaries
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["job"]["slug"] == slug)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_slug("pg-ok")["lastRunStatus"], "succeeded");
    assert_eq!(by_slug("pg-ok")["successRate"], 1.0);
    assert_eq!(by_slug("pg-bad")["lastRunStatus"], "failed");
    assert_eq!(by_slug("pg-bad")["successRate"], 0.0);
    assert_eq!(by_slug("repository-ingest")["runCount"], 0);

    let dash = post("dashboard").await;
    let count = |status: &str| {
        dash["counts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == status)
            .unwrap()[1]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count("succeeded"), 1, "{dash}");
    assert_eq!(count("failed"), 1, "{dash}");
    assert_eq!(dash["hourly"].as_array().unwrap().len(), 24);
    let per_hour: u64 = dash["hourly"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| {
            h[1].as_array()
                .unwrap()
                .iter()
                .map(|c| c[1].as_u64().unwrap())
        })
        .sum();
    assert_eq!(per_hour, 2);
    assert_eq!(dash["latestFailures"][0]["errorMessage"], "nope");

    // Server-rendered pages, readable without JavaScript.
    for (path, needle) in [
        ("/", "Last 24 hours"),
        ("/jobs", "pg-bad"),
        ("/runs", "pg-ok"),
        ("/jobs/pg-bad", "Start run"),
    ] {
        let html = app.get(path).await.text().await.unwrap();
        assert!(html.contains(needle), "{path} lacks {needle:?}");
    }
    let run_page = app
        .get(&format!("/runs/jobs/{}", bad["id"].as_str().unwrap()))
        .await
        .text()
        .await
        .unwrap();
    assert!(run_page.contains("nope"), "the run page shows the error");
}

/// The run lists of `/runs` and `/jobs/:slug`: filters by status, job and text, keyset pages
/// that stay put while new runs arrive, and server-rendered pages that work from the URL alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lists_filter_and_page_on_both_databases() {
    let app = spawn_app().await;
    app.job("list-ok", "builtin:noop", json!({})).await;
    app.job("list-bad", "builtin:fail", json!({})).await;
    let mut ok = Vec::new();
    for i in 0..30 {
        ok.push(app.run("list-ok", json!({"parameters": {"i": i}})).await);
    }
    let bad = app
        .run(
            "list-bad",
            json!({"parameters": {"message": "tape jammed"}}),
        )
        .await;
    for r in ok.iter().chain([&bad]) {
        app.wait_terminal(r["id"].as_str().unwrap()).await;
    }
    let runs = |form: &'static str| {
        let client = app.client.clone();
        let url = app.url("/_sf/runs");
        async move {
            let res = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{form}");
            res.json::<Value>().await.unwrap()
        }
    };
    let ids = |page: &Value| -> Vec<String> {
        page["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };

    // Status, job and text filters.
    let failed = runs("status=failed").await;
    assert_eq!(ids(&failed), [bad["id"].as_str().unwrap()], "{failed}");
    assert_eq!(failed["total"], 1);
    let by_job = runs("job=list-ok").await;
    assert_eq!(by_job["total"], 30);
    assert!(
        by_job["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["jobSlug"] == "list-ok")
    );
    let by_text = runs("q=TAPE+JAM").await;
    assert_eq!(
        ids(&by_text),
        [bad["id"].as_str().unwrap()],
        "search is case-insensitive"
    );
    assert_eq!(
        runs("q=50%25").await["total"],
        0,
        "LIKE wildcards are literal"
    );

    // Keyset pages: 25 newest, then the rest; a run arriving meanwhile does not shift page 2.
    let first = runs("").await;
    assert_eq!(first["runs"].as_array().unwrap().len(), 25);
    assert_eq!(first["total"], 31);
    let cursor = first["nextCursor"].as_str().unwrap().to_string();
    let late = app.run("list-ok", json!({})).await;
    let second = {
        let res = app
            .client
            .post(app.url("/_sf/runs"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("cursor={cursor}"))
            .send()
            .await
            .unwrap();
        res.json::<Value>().await.unwrap()
    };
    let all_before: Vec<String> = ok
        .iter()
        .chain([&bad])
        .map(|r| r["id"].as_str().unwrap().to_string())
        .rev()
        .collect();
    let mut seen = ids(&first);
    seen.extend(ids(&second));
    assert_eq!(
        seen, all_before,
        "two pages hold every earlier run once, newest first"
    );
    assert!(second["nextCursor"].is_null());
    assert!(!seen.contains(&late["id"].as_str().unwrap().to_string()));

    // The same lists rendered on the server from the URL (no JavaScript needed).
    let html = app.get("/runs?status=failed").await.text().await.unwrap();
    assert!(
        html.contains(bad["id"].as_str().unwrap()),
        "filtered page shows the failure"
    );
    assert!(
        !html.contains(ok[0]["id"].as_str().unwrap()),
        "and nothing else"
    );
    assert!(html.contains("tape jammed"), "with its error");
    let html = app
        .get(&format!("/runs?cursor={cursor}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(ok[0]["id"].as_str().unwrap()),
        "page 2 holds the oldest run"
    );
    assert!(html.contains("← Newest"), "with a way back");
    let html = app
        .get("/jobs/list-ok?status=succeeded")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("id=\"job-runs\""),
        "the job page has its run history"
    );
    assert!(html.contains("Older →"), "paged: 31 runs > 25 per page");
    assert!(
        !html.contains(bad["id"].as_str().unwrap()),
        "only this job's runs"
    );
    let res = app.get("/runs?status=bogus").await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("unknown status bogus"));
}

/// `/services` and `/workflows` render the registry and the catalog on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_workflows_pages_on_both_databases() {
    let app = spawn_app().await;
    for (path, empty) in [
        ("/services", "No services yet"),
        ("/workflows", "No workflows yet"),
    ] {
        let html = app.get(path).await.text().await.unwrap();
        assert!(html.contains(empty), "{path} empty state");
    }
    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "ledger", "displayName": "Ledger API", "kind": "http",
                    "baseUrl": "http://127.0.0.1:1"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = app
        .patch_json("/api/services/ledger", &json!({"status": "degraded"}))
        .await;
    assert_eq!(status, 200);
    app.job("pg-step", "builtin:noop", json!({})).await;
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "nightly", "name": "Nightly", "steps": [
                {"id": "first", "jobSlug": "pg-step"},
                {"id": "second", "jobSlug": "pg-step", "dependsOn": ["first"]}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let html = app.get("/services").await.text().await.unwrap();
    assert!(html.contains("Ledger API"), "{html}");
    assert!(html.contains("health-degraded"), "status badge");
    let html = app.get("/workflows").await.text().await.unwrap();
    assert!(html.contains("Nightly"), "{html}");
    assert!(html.contains("2: first, second"), "its steps");
}
