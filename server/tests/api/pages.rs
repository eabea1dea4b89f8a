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
                    "baseUrl": "http://127.0.0.1:1", "healthPath": "/healthz",
                    "headers": {"X-Api-Key": "hunter2-secret-value"},
                    "metadata": {"team": "payments-crew"}}),
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
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "bookkeeping", "name": "Bookkeeping", "steps": [
                {"id": "post", "type": "service", "serviceSlug": "ledger",
                 "request": {"method": "POST", "path": "/entries"}}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let html = app.get("/services").await.text().await.unwrap();
    assert!(html.contains("Ledger API"), "{html}");
    assert!(html.contains("health-degraded"), "status badge");
    assert!(html.contains("href=\"/services/ledger\""), "detail link");
    assert!(
        !html.contains("hunter2-secret-value"),
        "the list page (and its hydration data) never carries header values"
    );
    let html = app.get("/workflows").await.text().await.unwrap();
    assert!(html.contains("Nightly"), "{html}");
    assert!(html.contains("2: first, second"), "its steps");
    assert!(html.contains("id=\"workflow-search\""), "search box");
    assert!(html.contains("never run"), "no run yet");
    assert!(html.contains("—"), "no success rate yet");

    // The service's page: its fields, header names but never their values, and the
    // workflows that call it.
    let html = app.get("/services/ledger").await.text().await.unwrap();
    assert!(
        html.contains("<h1 id=\"service-name\">Ledger API</h1>"),
        "{html}"
    );
    assert!(html.contains("http://127.0.0.1:1"), "base URL");
    assert!(html.contains("/healthz"), "health path");
    assert!(html.contains("health-degraded"), "status badge");
    assert!(html.contains("X-Api-Key"), "header name");
    assert!(html.contains("••••"), "masked header value");
    assert!(
        !html.contains("hunter2-secret-value"),
        "header value leaked: {html}"
    );
    assert!(html.contains("payments-crew"), "metadata");
    assert!(
        html.contains("href=\"/workflows/bookkeeping\""),
        "workflows using it"
    );
    assert!(
        !html.contains("href=\"/workflows/nightly\""),
        "only those that call it"
    );
    let res = app
        .client
        .post(app.url("/_sf/service-detail"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("slug=ledger")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(!body.contains("hunter2-secret-value"), "{body}");
    let html = app.get("/services/nope").await.text().await.unwrap();
    assert!(html.contains("Could not load the service"), "{html}");
}

/// `/workflows/:slug` and `/runs/workflows/:id`: the definition with its graph, versions and
/// run history, and one run with its graph coloured by step status, the timeline, the steps
/// and the actions; plus the server functions behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_pages_on_both_databases() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "diamond", "name": "Diamond", "description": "a fans out to b and c",
                "parametersSchema": {"type": "object", "properties": {"who": {"type": "string"}}},
                "steps": [
                {"id": "a", "name": "Start here", "jobSlug": "echo"},
                {"id": "b", "jobSlug": "echo", "dependsOn": ["a"]},
                {"id": "c", "jobSlug": "echo", "dependsOn": ["a"]},
                {"id": "d", "jobSlug": "echo", "dependsOn": ["b", "c"]}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    // Before any run: the graph without statuses and the launch form.
    let html = app.get("/workflows/diamond").await.text().await.unwrap();
    assert!(html.contains("a fans out to b and c"), "{html}");
    assert_eq!(html.matches("data-step=").count(), 4, "{html}");
    assert!(html.contains("status-none"));
    assert!(html.contains("No workflow runs yet."));
    assert!(html.contains("Start run"), "the launch form");
    let listing = app.get("/workflows").await.text().await.unwrap();
    assert!(listing.contains("href=\"/workflows/diamond\""), "{listing}");

    let (status, v) = app
        .post_json(
            "/api/workflows/diamond/run",
            &json!({"parameters": {"who": "ops"}}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, v) = app.get_json(&format!("/api/workflow-runs/{id}")).await;
        if v["data"]["status"] == "succeeded" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never succeeded: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let html = app.get("/workflows/diamond").await.text().await.unwrap();
    assert!(html.contains("id=\"workflow-runs\""), "{html}");
    assert!(html.contains(&format!("/runs/workflows/{id}")), "run link");
    assert_eq!(html.matches("dag-node status-succeeded").count(), 4);
    assert!(html.contains("Start here"), "the step name is the label");
    let listing = app.get("/workflows").await.text().await.unwrap();
    assert!(
        listing.contains(&format!("/runs/workflows/{id}")),
        "recent runs"
    );
    let row = listing
        .split("<tr data-slug=\"diamond\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("the catalog row");
    assert!(
        row.contains("<span class=\"badge status-succeeded\">succeeded</span>"),
        "{row}"
    );
    assert!(row.contains("<time"), "last run time: {row}");
    assert!(row.contains("<td class=\"runs\">1</td>"), "{row}");
    assert!(
        row.contains("<td class=\"success-rate\">100%</td>"),
        "{row}"
    );

    let html = app
        .get(&format!("/runs/workflows/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("class=\"dag\""), "{html}");
    assert!(html.contains("class=\"gantt\""), "{html}");
    assert_eq!(html.matches("dag-node status-succeeded").count(), 4);
    assert_eq!(
        html.matches("class=\"dag-edge\"").count(),
        4,
        "a→b, a→c, b→d, c→d"
    );
    assert_eq!(html.matches("gantt-bar status-succeeded").count(), 4);
    assert!(html.contains("id=\"steps\""));
    assert_eq!(
        html.matches("data-step=").count(),
        8,
        "graph nodes and table rows"
    );
    assert!(html.contains("/runs/jobs/"), "links to the steps' job runs");
    assert!(
        html.contains("&quot;who&quot;") || html.contains("\"who\""),
        "parameters"
    );
    for (button, label) in [
        ("cancel-workflow-run", "Cancel run"),
        ("retry-workflow-run", "Retry failed steps"),
        ("rerun-workflow-run", "Rerun"),
    ] {
        assert!(html.contains(&format!("id=\"{button}\"")), "{button}");
        assert!(html.contains(&format!(">{label}</button>")), "{label}");
    }

    // The server functions behind the pages.
    let sf = |endpoint: &'static str, form: String| {
        let client = app.client.clone();
        let url = app.url(&format!("/_sf/{endpoint}"));
        async move {
            let res = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, d) = sf("workflow-detail", "slug=diamond".into()).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["workflow"]["slug"], "diamond");
    assert_eq!(d["versions"].as_array().unwrap().len(), 1);
    assert_eq!(d["runs"][0]["id"], id.as_str());
    assert_eq!(d["latestSteps"].as_array().unwrap().len(), 4);
    let (status, r) = sf("workflow-run", format!("id={id}")).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["run"]["status"], "succeeded");
    assert_eq!(r["steps"].as_array().unwrap().len(), 4);
    let (status, summaries) = sf("workflow-summaries", String::new()).await;
    assert_eq!(status, 200, "{summaries}");
    assert_eq!(summaries[0]["workflow"]["slug"], "diamond");
    assert_eq!(summaries[0]["lastRunStatus"], "succeeded");
    assert_eq!(summaries[0]["runs"], 1);
    assert_eq!(summaries[0]["succeeded"], 1);
    assert_eq!(summaries[0]["successRate"], 1.0);
    assert!(summaries[0]["lastRunAt"].is_string(), "{summaries}");
    let (status, runs) = sf("workflow-runs", String::new()).await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs[0]["id"], id.as_str());

    // Launch: invalid parameters come back as problems, valid ones start a run.
    let (status, bad) = sf(
        "launch-workflow",
        "slug=diamond&parameters=%7B%22who%22%3A5%7D".into(),
    )
    .await;
    assert_eq!(status, 200, "{bad}");
    assert!(bad["run"].is_null(), "{bad}");
    assert_eq!(bad["problems"][0]["path"], "/parameters/who", "{bad}");
    let (status, ok) = sf(
        "launch-workflow",
        "slug=diamond&parameters=%7B%22who%22%3A%22me%22%7D".into(),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    let launched = ok["run"]["id"].as_str().unwrap().to_string();

    // Rerun makes a new run; cancel and retry of a finished run are refused.
    let (status, rerun) = sf("rerun-workflow-run", format!("id={id}")).await;
    assert_eq!(status, 200, "{rerun}");
    assert_ne!(rerun["id"], id.as_str());
    let (status, _) = sf("cancel-workflow-run", format!("id={id}")).await;
    assert_eq!(status, 500, "a finished run cannot be canceled");
    let (status, _) = sf("retry-workflow-run", format!("id={id}")).await;
    assert_eq!(status, 500, "a succeeded run cannot be resumed");
    for other in [launched, rerun["id"].as_str().unwrap().to_string()] {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, v) = app.get_json(&format!("/api/workflow-runs/{other}")).await;
            if v["data"]["status"] == "succeeded" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never succeeded: {v}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let res = app.get("/runs/workflows/nope").await;
    assert!(res.text().await.unwrap().contains("Workflow run not found"));
}
