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
