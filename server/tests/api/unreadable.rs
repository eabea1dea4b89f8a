//! A stored value the server cannot read (a status no version of it writes, a snapshot that
//! does not parse) answers 500 `internal_error`, its cause in the server log and never in the
//! response, instead of a made-up default or a version silently left out. Run on SQLite and
//! PostgreSQL.
use serde_json::{Value, json};

use crate::{
    durability::{exec, raw_db},
    helpers::spawn_app,
};

#[tokio::test]
async fn an_unreadable_stored_value_answers_500_without_its_text() {
    let app = spawn_app().await;
    app.job("spoiled", "builtin:noop", json!({})).await;
    let run = app.run("spoiled", json!({})).await;
    let id = run["id"].as_str().expect("run id").to_string();
    app.wait_terminal(&id).await;
    let (status, versions) = app.get_json("/api/jobs/spoiled/versions").await;
    assert_eq!(status, 200, "{versions}");

    let raw = raw_db(&app).await;
    exec(
        &raw,
        &format!("UPDATE job_runs SET status = 'bogus-status' WHERE id = '{id}'"),
    )
    .await;
    exec(
        &raw,
        "UPDATE job_definition_versions SET definition = '\"bogus-snapshot\"' \
         WHERE slug = 'spoiled'",
    )
    .await;
    for path in [
        format!("/api/job-runs/{id}"),
        "/api/job-runs?limit=10".to_string(),
        "/api/jobs/spoiled/versions".to_string(),
    ] {
        let res = app.get(&path).await;
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        assert_eq!(status, 500, "{path}: {text}");
        let body: Value = serde_json::from_str(&text).expect("a JSON error body");
        assert_eq!(body["error"]["code"], "internal_error", "{path}: {text}");
        for leaked in ["bogus", "job_runs", "job_definition_versions", "row"] {
            assert!(!text.contains(leaked), "{path} shows {leaked:?}: {text}");
        }
    }
    app.shutdown().await;
}
