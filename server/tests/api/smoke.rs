use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_run_succeeds_end_to_end() {
    let app = spawn_app().await;
    app.job("noop", "builtin:noop", json!({})).await;
    let run = app
        .run("noop", json!({"parameters": {"hello": "world"}}))
        .await;
    assert_eq!(run["status"], "pending");
    let done = app.wait_terminal(run["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"hello": "world"}));
}
