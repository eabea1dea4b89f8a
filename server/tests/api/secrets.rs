//! The secret store (api.md "Secrets"): CRUD and validation, encryption at rest, resolution of
//! `source: "store"` references in service steps, http job headers and parameters against a
//! real HTTP receiver, redaction everywhere, `secret.resolve` audit entries, rotation, and
//! the key's handling (key file, setting, wrong key). Run on SQLite and PostgreSQL.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use server::{db::Database, settings::SecretKeyText, store::entities};

use crate::helpers::{TestApp, TestDb, WorkerProcess, spawn_app, spawn_app_with, test_settings};

/// Every response body a test fetched, to search for leaked values at the end.
#[derive(Default)]
struct Seen(Mutex<String>);

impl Seen {
    fn add(&self, text: &str) {
        let mut s = self.0.lock().unwrap();
        s.push_str(text);
        s.push('\n');
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

async fn send(
    app: &TestApp,
    seen: &Seen,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(body) = body {
        req = req.json(body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    seen.add(&text);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(app: &TestApp, seen: &Seen, path: &str) -> (u16, Value) {
    send(app, seen, reqwest::Method::GET, path, None).await
}

async fn put_secret(app: &TestApp, seen: &Seen, key: &str, body: Value) -> (u16, Value) {
    send(
        app,
        seen,
        reqwest::Method::PUT,
        &format!("/api/secrets/{key}"),
        Some(&body),
    )
    .await
}

fn detail_paths(v: &Value) -> Vec<String> {
    v["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| x["path"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn unique_value(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

async fn connect(db: &TestDb) -> Database {
    Database::connect(&db.data_dir(), db.url.as_deref())
        .await
        .expect("connect to the test database")
}

/// The audit entries `secret.resolve`, oldest first.
async fn resolve_audits(db: &Database) -> Vec<entities::audit_log::Model> {
    entities::audit_log::Entity::find()
        .order_by_asc(entities::audit_log::Column::Id)
        .all(&db.conn)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "secret.resolve")
        .collect()
}

/// A real HTTP receiver: records each request's path, `Authorization` and `X-Token` headers
/// and body, and answers with an echo of them (so results would carry the values unless
/// redacted).
#[derive(Clone, Debug)]
struct Call {
    path: String,
    authorization: String,
    token: String,
    body: Value,
}

async fn receiver() -> (String, Arc<Mutex<Vec<Call>>>) {
    use axum::{Json, Router, body::Bytes, extract::Request, http::HeaderMap};
    let calls = Arc::new(Mutex::new(Vec::new()));
    let record = calls.clone();
    let app = Router::new().fallback(move |req: Request| {
        let record = record.clone();
        async move {
            let path = req.uri().path().to_string();
            let headers: HeaderMap = req.headers().clone();
            let bytes: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let call = Call {
                path,
                authorization: header("authorization"),
                token: header("x-token"),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let echo = json!({"authorization": call.authorization, "token": call.token, "body": call.body});
            record.lock().unwrap().push(call);
            Json(echo)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, calls)
}

fn store_ref(key: &str) -> Value {
    json!({"secret": {"source": "store", "key": key}})
}

#[tokio::test]
async fn secrets_crud_validation_and_encryption_at_rest() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    // Big enough to reach the value's own limit (64 KiB) rather than the body limit.
    settings.max_body_bytes = 1024 * 1024;
    let app = spawn_app_with(db, settings).await;
    let seen = Seen::default();
    let v1 = unique_value("first");
    let v2 = unique_value("second");

    let (status, v) = put_secret(&app, &seen, "NOTIFIER_TOKEN", json!({"value": v1})).await;
    assert_eq!(status, 201, "{v}");
    let d = &v["data"];
    assert_eq!(d["key"], "NOTIFIER_TOKEN");
    assert_eq!(d["version"], 1);
    assert!(
        d["createdAt"].is_string() && d["updatedAt"].is_string(),
        "{d}"
    );
    assert_eq!(d["versions"].as_array().unwrap().len(), 1);
    assert_eq!(d["versions"][0]["version"], 1);
    assert!(d.get("value").is_none(), "{d}");

    // Without a version: current + 1 (200: a new version of an existing key).
    let (status, v) = put_secret(&app, &seen, "NOTIFIER_TOKEN", json!({"value": v2})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["version"], 2);
    let versions: Vec<i64> = v["data"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);

    // An explicit version must be above the current one.
    for stale in [1, 2] {
        let (status, v) = put_secret(
            &app,
            &seen,
            "NOTIFIER_TOKEN",
            json!({"value": "x", "version": stale}),
        )
        .await;
        assert_eq!(status, 409, "{v}");
        assert_eq!(v["error"]["code"], "conflict");
    }
    let (status, v) = put_secret(
        &app,
        &seen,
        "NOTIFIER_TOKEN",
        json!({"value": v2, "version": 5}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["version"], 5);
    let (status, v) = put_secret(
        &app,
        &seen,
        "db.password-2",
        json!({"value": "pw", "version": 3}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["data"]["version"], 3);

    // Every problem at once, each with its pointer.
    let (status, v) = put_secret(
        &app,
        &seen,
        "bad%20key",
        json!({"value": "", "version": 0, "extra": 1}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request");
    assert_eq!(detail_paths(&v), ["/key", "/extra", "/value", "/version"]);
    let (status, v) = put_secret(&app, &seen, "K", json!({"value": 7, "version": "2"})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(detail_paths(&v), ["/value", "/version"]);
    let (status, v) = put_secret(
        &app,
        &seen,
        "K",
        json!({"value": "x".repeat(64 * 1024 + 1)}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(detail_paths(&v), ["/value"]);
    let (status, v) = put_secret(&app, &seen, &"k".repeat(256), json!({"value": "x"})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(detail_paths(&v), ["/key"]);
    let (status, v) = put_secret(&app, &seen, "K", json!(["value"])).await;
    assert_eq!(status, 400, "{v}");
    let res = app
        .client
        .put(app.url("/api/secrets/K"))
        .body("value=x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    let (status, v) = get(&app, &seen, "/api/secrets/K").await;
    assert_eq!(status, 404, "rejected writes store nothing: {v}");

    // Lists and metadata: keys, versions, timestamps, never values.
    let (status, v) = get(&app, &seen, "/api/secrets").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["meta"]["total"], 2);
    let keys: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["db.password-2", "NOTIFIER_TOKEN"],
        "most recently changed first"
    );
    let (status, v) = get(&app, &seen, "/api/secrets?q=NOTIFIER&limit=1").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["meta"]["total"], 1);
    assert_eq!(v["data"][0]["version"], 5);
    let (status, v) = get(&app, &seen, "/api/secrets?limit=0&bogus=1").await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(detail_paths(&v).len(), 2, "{v}");
    let (status, v) = get(&app, &seen, "/api/secrets/NOTIFIER_TOKEN").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["version"], 5);
    assert_eq!(v["data"]["versions"].as_array().unwrap().len(), 3);
    let (status, _) = get(&app, &seen, "/api/secrets/NOPE").await;
    assert_eq!(status, 404);

    // At rest: base64 ciphertext and a 96-bit nonce per version, no plaintext anywhere.
    let db = connect(&app.db).await;
    let rows = entities::secret_version::Entity::find()
        .all(&db.conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    let mut nonces = std::collections::HashSet::new();
    for row in &rows {
        use base64::Engine as _;
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(&row.nonce)
            .unwrap();
        assert_eq!(nonce.len(), 12);
        assert!(nonces.insert(row.nonce.clone()), "nonces are not reused");
        let ct = base64::engine::general_purpose::STANDARD
            .decode(&row.ciphertext)
            .unwrap();
        for plain in [&v1, &v2] {
            assert!(!row.ciphertext.contains(plain.as_str()));
            assert!(!String::from_utf8_lossy(&ct).contains(plain.as_str()));
        }
    }
    let dump = format!(
        "{:?}{:?}",
        rows,
        entities::secret::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
    );
    assert!(!dump.contains(&v1) && !dump.contains(&v2));

    // Documented in the OpenAPI document.
    let (_, doc) = app.get_json("/api/openapi.json").await;
    assert!(
        doc["paths"]["/api/secrets"]["get"].is_object(),
        "{}",
        doc["paths"]
    );
    let item = &doc["paths"]["/api/secrets/{key}"];
    for method in ["get", "put", "delete"] {
        assert!(item[method].is_object(), "{method}: {item}");
    }
    assert!(doc["components"]["schemas"]["SecretMetadata"].is_object());

    // Delete: 204 like the other deletes, every version gone, then 404.
    let (status, _) = send(
        &app,
        &seen,
        reqwest::Method::DELETE,
        "/api/secrets/NOTIFIER_TOKEN",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = get(&app, &seen, "/api/secrets/NOTIFIER_TOKEN").await;
    assert_eq!(status, 404);
    let (status, v) = send(
        &app,
        &seen,
        reqwest::Method::DELETE,
        "/api/secrets/NOTIFIER_TOKEN",
        None,
    )
    .await;
    assert_eq!(status, 404, "{v}");
    let left = entities::secret_version::Entity::find()
        .all(&db.conn)
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "only db.password-2's version is left");
    // Every secret write and delete is in the audit log, without the value.
    let audit = entities::audit_log::Entity::find()
        .filter(entities::audit_log::Column::Resource.contains("NOTIFIER_TOKEN"))
        .all(&db.conn)
        .await
        .unwrap();
    let ok = |action: &str| {
        audit
            .iter()
            .filter(|a| a.action == action && a.status == "ok")
            .count()
    };
    assert!(ok("secret.write") >= 2, "{audit:?}");
    assert_eq!(ok("secret.delete"), 1, "{audit:?}");
    let audit_text = format!("{audit:?}");
    assert!(
        !audit_text.contains(&v1) && !audit_text.contains(&v2),
        "{audit_text}"
    );
    let all = seen.text();
    assert!(
        !all.contains(&v1) && !all.contains(&v2),
        "a response carried a value"
    );
    db.close(Duration::from_secs(2)).await;
    app.shutdown().await;
}

#[tokio::test]
async fn store_secrets_reach_real_services_and_leak_nowhere() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    // Steps execute in a separate `switchyard worker` process whose whole output we keep;
    // it reads the key file the app generated in the shared data directory.
    settings.worker.workers = 0;
    let app = spawn_app_with(db, settings).await;
    let worker =
        WorkerProcess::spawn_with_env(&app.db, "worker", &[("SWITCHYARD_LOG", "debug,sqlx=warn")]);
    let seen = Seen::default();
    let secret = unique_value("s3cr3t");
    let mut events = app.get("/api/events").await.bytes_stream();
    let (base, calls) = receiver().await;

    let (status, v) = put_secret(&app, &seen, "NOTIFIER_TOKEN", json!({"value": secret})).await;
    assert_eq!(status, 201, "{v}");

    // 1. A service step with a store reference in a header.
    let (status, v) = send(
        &app,
        &seen,
        reqwest::Method::POST,
        "/api/services",
        Some(&json!({
        "slug": "notifier", "displayName": "Notifier", "kind": "http", "baseUrl": base})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = send(&app, &seen, reqwest::Method::POST, "/api/workflows", Some(&json!({
        "slug": "notify", "name": "Notify", "steps": [
            {"id": "notify", "type": "service", "serviceSlug": "notifier", "captureResponse": true,
             "request": {"method": "POST", "path": "/hooks/service",
                "headers": {"Authorization": {"secret": {"source": "store", "key": "NOTIFIER_TOKEN"}, "prefix": "Bearer "}},
                "body": {"commit": "abc123"}}}
        ]}))).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = send(
        &app,
        &seen,
        reqwest::Method::POST,
        "/api/workflows/notify/run",
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let workflow_run_id = v["data"]["id"].as_str().unwrap().to_string();

    // 2. An http job with a header reference and a parameter reference in its body.
    app.job("hook", "builtin:http", json!({})).await;
    let (status, v) = send(
        &app,
        &seen,
        reqwest::Method::POST,
        "/api/jobs/hook/run",
        Some(&json!({"parameters": {
        "method": "POST", "url": format!("{base}/hooks/http"),
        "headers": {"X-Token": store_ref("NOTIFIER_TOKEN")},
        "body": {"token": store_ref("NOTIFIER_TOKEN"), "plain": "visible"}}})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let http_run_id = v["data"]["id"].as_str().unwrap().to_string();
    // The stored run keeps the reference.
    assert_eq!(
        v["data"]["parameters"]["headers"]["X-Token"],
        store_ref("NOTIFIER_TOKEN")
    );

    // 3. A parameter reference handed to a job that echoes its parameters as its result.
    app.job("echo", "builtin:noop", json!({})).await;
    let (status, v) = send(&app, &seen, reqwest::Method::POST, "/api/jobs/echo/run", Some(&json!({"parameters": {
        "token": {"secret": {"source": "store", "key": "NOTIFIER_TOKEN", "version": 1}, "prefix": "tok:"}}}))).await;
    assert_eq!(status, 202, "{v}");
    let echo_run_id = v["data"]["id"].as_str().unwrap().to_string();

    let http_run = app.wait_terminal(&http_run_id).await;
    assert_eq!(
        http_run["status"],
        "succeeded",
        "{http_run}\n{}",
        worker.output()
    );
    let echo_run = app.wait_terminal(&echo_run_id).await;
    assert_eq!(echo_run["status"], "succeeded", "{echo_run}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let workflow_run = loop {
        let (_, v) = get(
            &app,
            &seen,
            &format!("/api/workflow-runs/{workflow_run_id}"),
        )
        .await;
        if ["succeeded", "failed", "canceled"]
            .contains(&v["data"]["status"].as_str().unwrap_or_default())
        {
            break v["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workflow run never ended: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        workflow_run["status"],
        "succeeded",
        "{workflow_run}\n{}",
        worker.output()
    );

    // The receiver got the real value where the references were.
    let calls = calls.lock().unwrap().clone();
    let service_call = calls
        .iter()
        .find(|c| c.path == "/hooks/service")
        .expect("service step called");
    assert_eq!(service_call.authorization, format!("Bearer {secret}"));
    assert_eq!(service_call.body, json!({"commit": "abc123"}));
    let http_call = calls
        .iter()
        .find(|c| c.path == "/hooks/http")
        .expect("http job called");
    assert_eq!(http_call.token, secret);
    assert_eq!(http_call.body, json!({"token": secret, "plain": "visible"}));

    // Results keep their shape with the value redacted (the receiver echoed it back).
    let http_run = app.get_run(&http_run_id).await;
    seen.add(&http_run.to_string());
    assert_eq!(http_run["result"]["body"]["token"], "***", "{http_run}");
    assert_eq!(
        http_run["result"]["body"]["body"],
        json!({"token": "***", "plain": "visible"})
    );
    let echo_run = app.get_run(&echo_run_id).await;
    seen.add(&echo_run.to_string());
    assert_eq!(echo_run["result"]["token"], "tok:***", "{echo_run}");
    let (_, d) = get(
        &app,
        &seen,
        &format!("/api/workflow-runs/{workflow_run_id}/steps"),
    )
    .await;
    let step = &d["data"]["steps"][0];
    assert_eq!(
        step["output"]["response"]["body"]["authorization"], "Bearer ***",
        "{d}"
    );
    let step_job_run = step["jobRunId"].as_str().unwrap().to_string();

    // Logs say what resolved, from where and which version, never the value.
    let mut logs = String::new();
    for id in [&http_run_id, &echo_run_id, &step_job_run] {
        let log = app.logs(id).await;
        logs.push_str(&log);
    }
    assert!(
        logs.contains("/headers/X-Token: resolved secret NOTIFIER_TOKEN from store (version 1)"),
        "{logs}"
    );
    assert!(
        logs.contains("/body/token: resolved secret NOTIFIER_TOKEN from store (version 1)"),
        "{logs}"
    );
    assert!(
        logs.contains("/request/headers/Authorization: resolved secret NOTIFIER_TOKEN from store"),
        "{logs}"
    );

    // One audit entry per resolution, with source, version, run and job; never the value.
    let db = connect(&app.db).await;
    let audits = resolve_audits(&db).await;
    assert_eq!(audits.len(), 4, "{audits:?}");
    for a in &audits {
        assert_eq!(a.resource.as_deref(), Some("secrets/NOTIFIER_TOKEN"));
        assert_eq!(a.status, "ok");
        assert_eq!(a.details["source"], "store");
        assert_eq!(a.details["version"], 1);
    }
    let for_run = |id: &str| audits.iter().filter(|a| a.details["runId"] == id).count();
    assert_eq!(for_run(&http_run_id), 2);
    assert_eq!(for_run(&echo_run_id), 1);
    assert_eq!(for_run(&step_job_run), 1);
    assert!(audits.iter().any(|a| a.details["jobSlug"] == "hook"));
    assert!(
        audits
            .iter()
            .any(|a| a.details["jobSlug"] == "service-call")
    );

    // Now look everywhere for the value.
    for path in [
        "/api/job-runs?limit=100".to_string(),
        format!("/api/job-runs/{step_job_run}"),
        format!("/api/workflow-runs/{workflow_run_id}"),
        "/api/workflow-runs?limit=100".to_string(),
        "/api/workflows/notify".to_string(),
        "/api/jobs/hook".to_string(),
        "/api/secrets".to_string(),
        "/api/secrets/NOTIFIER_TOKEN".to_string(),
    ] {
        let (status, _) = get(&app, &seen, &path).await;
        assert_eq!(status, 200, "{path}");
    }
    for page in [
        "/runs".to_string(),
        format!("/runs/jobs/{http_run_id}"),
        format!("/runs/workflows/{workflow_run_id}"),
    ] {
        let text = app.get(&page).await.text().await.unwrap_or_default();
        seen.add(&text);
    }
    let mut stream = String::new();
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_millis(300), events.next()).await
    {
        stream.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(stream.contains("job.run.succeeded"), "{stream}");
    let tables = format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        entities::event::Entity::find().all(&db.conn).await.unwrap(),
        entities::job_run::Entity::find()
            .all(&db.conn)
            .await
            .unwrap(),
        entities::job_run_log::Entity::find()
            .all(&db.conn)
            .await
            .unwrap(),
        entities::workflow_run::Entity::find()
            .all(&db.conn)
            .await
            .unwrap(),
        entities::workflow_run_step::Entity::find()
            .all(&db.conn)
            .await
            .unwrap(),
        entities::audit_log::Entity::find()
            .all(&db.conn)
            .await
            .unwrap(),
    );
    assert!(
        tables.contains("job.run.succeeded"),
        "the events table was read"
    );
    let output = worker.output();
    assert!(
        output.contains("run finished"),
        "the worker's output was captured: {output}"
    );
    for (what, text) in [
        ("API responses", seen.text()),
        ("run logs", logs),
        ("event stream", stream),
        ("tables", tables),
        ("worker output", output),
    ] {
        assert!(!text.contains(&secret), "the secret leaked into the {what}");
    }
    db.close(Duration::from_secs(2)).await;
    app.shutdown().await;
}

/// Runs the http job against the receiver with `X-Token` from the store (optionally pinned to a
/// version) and returns the finished run.
async fn call_with_token(app: &TestApp, base: &str, version: Option<i32>) -> Value {
    let mut reference = store_ref("TOKEN");
    if let Some(v) = version {
        reference["secret"]["version"] = json!(v);
    }
    let run = app
        .run("hook", json!({"parameters": {"method": "GET", "url": format!("{base}/r"), "headers": {"X-Token": reference}}}))
        .await;
    app.wait_terminal(run["id"].as_str().unwrap()).await
}

#[tokio::test]
async fn rotation_takes_effect_for_the_next_runs_without_a_restart() {
    let app = spawn_app().await;
    let seen = Seen::default();
    let (base, calls) = receiver().await;
    app.job("hook", "builtin:http", json!({})).await;
    let v1 = unique_value("one");
    let v2 = unique_value("two");
    put_secret(&app, &seen, "TOKEN", json!({"value": v1})).await;

    let run = call_with_token(&app, &base, None).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(calls.lock().unwrap().last().unwrap().token, v1);

    // Rotate while runs keep going: every run succeeds with one of the two values, and runs
    // started after the rotation answered get the new one.
    let mut pending = Vec::new();
    for i in 0..10 {
        if i == 5 {
            let (status, v) = put_secret(&app, &seen, "TOKEN", json!({"value": v2})).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["data"]["version"], 2);
        }
        let run = app
            .run("hook", json!({"parameters": {"method": "GET", "url": format!("{base}/rot/{i}"), "headers": {"X-Token": store_ref("TOKEN")}}}))
            .await;
        pending.push((i, run["id"].as_str().unwrap().to_string()));
    }
    for (_, id) in &pending {
        let run = app.wait_terminal(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let calls_now = calls.lock().unwrap().clone();
    for i in 0..10 {
        let call = calls_now
            .iter()
            .find(|c| c.path == format!("/rot/{i}"))
            .expect("called");
        assert!(call.token == v1 || call.token == v2);
        if i >= 5 {
            assert_eq!(call.token, v2, "run {i} started after the rotation");
        }
    }
    // A pinned version still resolves to the old value; an unknown one fails the run at once.
    let run = call_with_token(&app, &base, Some(1)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(calls.lock().unwrap().last().unwrap().token, v1);
    let run = call_with_token(&app, &base, Some(9)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["attempt"], 1, "a missing version is not retried: {run}");
    let error = run["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains("secret TOKEN has no version 9"), "{run}");
    // A missing key names the key.
    let run = app
        .run("hook", json!({"parameters": {"method": "GET", "url": format!("{base}/missing"), "headers": {"X-Token": store_ref("MISSING")}}}))
        .await;
    let run = app.wait_terminal(run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("no secret MISSING in the store"),
        "{run}"
    );
    assert!(
        !calls.lock().unwrap().iter().any(|c| c.path == "/missing"),
        "nothing is sent without the secret"
    );

    let db = connect(&app.db).await;
    let audits = resolve_audits(&db).await;
    let versions: Vec<Value> = audits
        .iter()
        .filter(|a| a.status == "ok")
        .map(|a| a.details["version"].clone())
        .collect();
    assert!(
        versions.contains(&json!(1)) && versions.contains(&json!(2)),
        "{versions:?}"
    );
    let failed: Vec<&str> = audits
        .iter()
        .filter(|a| a.status == "error")
        .map(|a| a.resource.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(failed, ["secrets/TOKEN", "secrets/MISSING"]);
    db.close(Duration::from_secs(2)).await;
    assert!(!seen.text().contains(&v1) && !seen.text().contains(&v2));
    app.shutdown().await;
}

#[tokio::test]
async fn the_key_file_is_private_and_a_wrong_key_cannot_decrypt() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = spawn_app().await;
    let key_file = app.db.data_dir().join("secret.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the generated key file is private");
    let seen = Seen::default();
    let value = unique_value("kept");
    put_secret(&app, &seen, "TOKEN", json!({"value": value})).await;
    app.job("echo", "builtin:noop", json!({})).await;
    let run = app
        .run("echo", json!({"parameters": {"t": store_ref("TOKEN")}}))
        .await;
    let run = app.wait_terminal(run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let db = app.shutdown().await;

    // Another key (say, a different machine's file): metadata still reads, values do not.
    std::fs::write(&key_file, format!("{}\n", hex_key(7))).unwrap();
    let settings = test_settings(&db);
    let app = spawn_app_with(db, settings).await;
    let (status, v) = app.get_json("/api/secrets/TOKEN").await;
    assert_eq!(status, 200, "{v}");
    let run = app
        .run("echo", json!({"parameters": {"t": store_ref("TOKEN")}}))
        .await;
    let run = app.wait_terminal(run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["attempt"], 1, "a wrong key is not retried: {run}");
    let error = run["errorMessage"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot decrypt secret TOKEN version 1"),
        "{error}"
    );
    assert!(
        error.contains("secret.key"),
        "says which key was used: {error}"
    );
    let db = app.shutdown().await;

    // A key file that is not a key, and an invalid setting, stop the start-up with a clear error.
    std::fs::write(&key_file, "not a key\n").unwrap();
    let err = server::Application::build(test_settings(&db))
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("secret key file") && format!("{err:#}").contains("invalid"),
        "{err:#}"
    );
    let mut settings = test_settings(&db);
    settings.secret_key = Some(SecretKeyText::new("c2hvcnQ="));
    let err = server::Application::build(settings)
        .await
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("SWITCHYARD_SECRET_KEY is invalid") && text.contains("5 bytes, not 32"),
        "{text}"
    );
    assert!(
        !text.contains("c2hvcnQ="),
        "the error never shows the key: {text}"
    );
}

fn hex_key(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

#[tokio::test]
async fn a_key_from_the_setting_is_shared_by_server_and_worker_processes() {
    let db = TestDb::new().await;
    let key = hex_key(42);
    let mut settings = test_settings(&db);
    settings.worker.workers = 0;
    settings.secret_key = Some(SecretKeyText::new(&key));
    let app = spawn_app_with(db, settings).await;
    assert!(
        !app.db.data_dir().join("secret.key").exists(),
        "no key file when the key is set"
    );
    let worker =
        WorkerProcess::spawn_with_env(&app.db, "worker", &[("SWITCHYARD_SECRET_KEY", &key)]);
    worker_resolves_a_stored_secret(&app, &worker, &key, "shared").await;
    app.shutdown().await;
}

/// A secret stored through `app` reaches a real service from a run that `worker` (another
/// process with the same key) executes; neither the value nor the key appears in its output.
async fn worker_resolves_a_stored_secret(
    app: &TestApp,
    worker: &WorkerProcess,
    key: &str,
    label: &str,
) {
    let seen = Seen::default();
    let value = unique_value(label);
    put_secret(app, &seen, "TOKEN", json!({"value": value})).await;
    let (base, calls) = receiver().await;
    app.job("hook", "builtin:http", json!({})).await;
    let run = call_with_token(app, &base, None).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{}", worker.output());
    assert_eq!(calls.lock().unwrap()[0].token, value);
    assert!(!worker.output().contains(&value));
    assert!(!worker.output().contains(key), "the key is never logged");
}

#[tokio::test]
async fn a_key_file_is_shared_by_server_and_worker_processes_and_never_shown() {
    let db = TestDb::new().await;
    let key = hex_key(43);
    let holder = tempfile::tempdir().unwrap();
    let key_file = holder.path().join("switchyard.key");
    // An editor's trailing newline and indentation do not matter.
    std::fs::write(&key_file, format!("  {key}\n")).unwrap();

    // Not together with the variable: which one would win is not obvious.
    let mut both = test_settings(&db);
    both.secret_key = Some(SecretKeyText::new(&key));
    both.secret_key_file = Some(key_file.clone());
    let err = server::Application::build(both)
        .await
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(text.contains("not both"), "{text}");
    assert!(!text.contains(&key), "{text}");

    let mut settings = test_settings(&db);
    settings.worker.workers = 0;
    settings.secret_key_file = Some(key_file.clone());
    let app = spawn_app_with(db, settings).await;
    assert!(
        !app.db.data_dir().join("secret.key").exists(),
        "no key file in the data directory when a key file is given"
    );
    let path = key_file.to_string_lossy().into_owned();
    let worker = WorkerProcess::spawn_with_env(
        &app.db,
        "worker",
        &[("SWITCHYARD_SECRET_KEY_FILE", path.as_str())],
    );
    worker_resolves_a_stored_secret(&app, &worker, &key, "from-a-file").await;
    app.shutdown().await;
}
