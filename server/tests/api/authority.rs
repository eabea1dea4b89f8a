//! Issue 14, on both databases: code execution belongs to definitions (definition-only
//! parameters, `jobs:exec`), credentials go where a trusted author sent them (`secrets:use`,
//! service headers sealed and masked, redaction of encoded values, the env allow-list), seeds
//! are planted once, and event triggers cannot loop.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use domain::auth::OperatorTokens;
use reqwest::Method;
use serde_json::{Value, json};
use server::settings::AuthSettings;

use crate::helpers::{TestApp, TestDb, spawn_app, spawn_app_with, test_settings};

// Tokens (at least 32 characters).
const ADMIN: &str = "authority-admin-token-0000000000000";
const WRITER: &str = "authority-jobs-writer-11111111111111";
const EXEC: &str = "authority-jobs-exec-2222222222222222";
const RUNNER: &str = "authority-jobs-runner-333333333333333";
const USER: &str = "authority-secret-user-444444444444444";
const FLOWS: &str = "authority-workflows-5555555555555555";
const SVC: &str = "authority-services-66666666666666666";
const SVC_SEC: &str = "authority-services-secrets-777777777";

async fn spawn_secured() -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    let tokens = json!([
        {"subject": "ada", "token": ADMIN, "scopes": ["admin"]},
        {"subject": "writer", "token": WRITER, "scopes": ["jobs:write"]},
        {"subject": "builder", "token": EXEC, "scopes": ["jobs:write", "jobs:exec"]},
        {"subject": "runner", "token": RUNNER, "scopes": ["jobs:run"]},
        {"subject": "user", "token": USER, "scopes": ["jobs:run", "secrets:use"]},
        {"subject": "flows", "token": FLOWS, "scopes": ["workflows:write", "workflows:run"]},
        {"subject": "svc", "token": SVC, "scopes": ["services:write"]},
        {"subject": "svcsec", "token": SVC_SEC, "scopes": ["services:write", "secrets:use"]},
    ]);
    settings.auth = AuthSettings {
        tokens: OperatorTokens::parse(&tokens.to_string()).expect("token config"),
        // These tests are about what writes may contain; they read without a token.
        public_reads: true,
        ..AuthSettings::default()
    };
    spawn_app_with(db, settings).await
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The error's detail paths, after checking its status and code.
fn error_paths(status: u16, v: &Value, want_status: u16, code: &str) -> Vec<String> {
    assert_eq!(status, want_status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|x| x["path"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn forbidden(status: u16, v: &Value, scope: &str) {
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(scope), "{message}");
}

async fn run_count(app: &TestApp) -> usize {
    let (status, v) = app.get_json("/api/job-runs?limit=100").await;
    assert_eq!(status, 200, "{v}");
    v["data"].as_array().map(Vec::len).unwrap_or(0)
}

/// A local HTTP server that records every request's Authorization header and answers with
/// it echoed back, plainly and encoded (base64, URL encoding, hex).
async fn echo_server() -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::{Json, Router, http::HeaderMap, routing::any};
    use base64::{Engine as _, engine::general_purpose as b64};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new().fallback(any(move |headers: HeaderMap| {
        let record = record.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            record.lock().unwrap().push(auth.clone());
            let url: String = url::form_urlencoded::byte_serialize(auth.as_bytes()).collect();
            Json(json!({
                "plain": auth,
                "base64": b64::STANDARD.encode(&auth),
                "base64url": b64::URL_SAFE_NO_PAD.encode(&auth),
                "url": url,
                "hex": hex::encode(&auth),
                "basic": b64::STANDARD.encode(format!("user:{auth}")),
            }))
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, seen)
}

/// The store of the test's database, opened beside the app (to look at what is at rest).
async fn raw_store(app: &TestApp) -> server::store::Store {
    let db = server::db::Database::connect(&app.db.data_dir(), app.db.url.as_deref())
        .await
        .expect("database");
    server::store::Store::new(db)
}

// ---- code execution belongs to definitions ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_request_cannot_choose_what_a_build_runs() {
    let app = spawn_app().await;
    // The reproduction of the issue: a caller's command and working directory.
    let (status, v) = app
        .post_json(
            "/api/jobs/repository-build/run",
            &json!({"parameters": {"checkout": "/", "command": ["sh", "-c", "id; cat /proc/1/environ"],
                "env": {"LD_PRELOAD": "/tmp/x.so"}}}),
        )
        .await;
    let paths = error_paths(status, &v, 400, "invalid_parameters");
    for want in [
        "/parameters/command",
        "/parameters/checkout",
        "/parameters/env",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} in {v}");
    }
    assert!(
        v.to_string().contains("definition-only"),
        "the message says why: {v}"
    );
    // The pages' launch form is the same use case.
    let res = app
        .client
        .post(app.url("/_sf/launch"))
        .header("origin", &app.address)
        .form(&[
            ("slug", "repository-build"),
            ("parameters", r#"{"repoUrl": "/r", "command": ["id"]}"#),
        ])
        .send()
        .await
        .expect("launch");
    assert_eq!(res.status(), 200);
    let outcome: Value = res.json().await.unwrap();
    assert_eq!(outcome["run"], Value::Null, "{outcome}");
    assert_eq!(
        outcome["problems"][0]["path"], "/parameters/command",
        "{outcome}"
    );
    assert_eq!(run_count(&app).await, 0, "nothing ran");

    // The seeded build takes a repository and builds with its own command.
    let (_, job) = app.get_json("/api/jobs/repository-build").await;
    let job = &job["data"]["job"];
    assert_eq!(
        job["defaultParameters"]["command"],
        json!(["make"]),
        "{job}"
    );
    assert_eq!(
        job["parametersSchema"]["required"],
        json!(["repoUrl"]),
        "{job}"
    );

    // A workflow step cannot hand the command to the run's caller, even written by an admin.
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "wf", "name": "wf", "steps": [{"id": "b", "jobSlug": "repository-build",
                "parameters": {"repoUrl": "{{ parameters.repo }}", "command": ["sh", "-c", "{{ parameters.cmd }}"]}}]}),
        )
        .await;
    let paths = error_paths(status, &v, 400, "invalid_definition");
    assert_eq!(paths, ["/steps/0/parameters/command"], "{v}");
    // Written out by an admin it is fine, and so is a checkout from the ingest step's result.
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "wf", "name": "wf", "steps": [
                {"id": "ingest", "jobSlug": "repository-ingest", "parameters": {"repoUrl": "{{ parameters.repo }}"}},
                {"id": "b", "jobSlug": "repository-build", "dependsOn": ["ingest"],
                 "parameters": {"checkout": "{{ steps.ingest.result.checkout }}", "command": ["make", "test"]}}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");

    // The launch form sends back the defaults it shows: left as they are, they are not the
    // operator's; changed, they are refused.
    app.job(
        "form-build",
        "builtin:repository-build",
        json!({"parametersSchema": {"type": "object", "properties": {
                "repoUrl": {"type": "string"}, "command": {"type": "array", "items": {"type": "string"}}}},
            "defaultParameters": {"command": ["true"]}}),
    )
    .await;
    let launch = |parameters: &'static str| {
        app.client
            .post(app.url("/_sf/launch"))
            .header("origin", &app.address)
            .form(&[("slug", "form-build"), ("parameters", parameters)])
            .send()
    };
    let outcome: Value = launch(r#"{"repoUrl": "/nonexistent", "command": ["true"]}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(outcome["run"]["id"].is_string(), "{outcome}");
    let outcome: Value = launch(r#"{"repoUrl": "/nonexistent", "command": ["id"]}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        outcome["problems"][0]["path"], "/parameters/command",
        "{outcome}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_takes_definition_only_parameters_from_the_definition() {
    let app = spawn_app().await;
    app.job(
        "build-it",
        "builtin:repository-build",
        json!({"defaultParameters": {"command": ["make", "one"]}}),
    )
    .await;
    // A repository that does not exist: the run fails at once.
    let run = app
        .run(
            "build-it",
            json!({"parameters": {"repoUrl": "/nonexistent/repository"}}),
        )
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["parameters"]["command"], json!(["make", "one"]));
    let (status, v) = app
        .patch_json(
            "/api/jobs/build-it",
            &json!({"defaultParameters": {"command": ["make", "two"]}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = app
        .post_json(&format!("/api/job-runs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["data"]["parameters"]["command"], json!(["make", "two"]));
    assert_eq!(
        v["data"]["parameters"]["repoUrl"],
        "/nonexistent/repository"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_guard_what_executes_and_where_credentials_go() {
    let app = spawn_secured().await;
    let build = json!({"slug": "builder", "name": "B", "entryPoint": "builtin:repository-build",
        "defaultParameters": {"command": ["make"]}});
    // Definitions that execute commands need jobs:exec.
    let (s, v) = call(&app, Method::POST, "/api/jobs", WRITER, Some(build.clone())).await;
    forbidden(s, &v, "jobs:exec");
    let (s, v) = call(&app, Method::POST, "/api/jobs", EXEC, Some(build.clone())).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &app,
        Method::PATCH,
        "/api/jobs/repository-build",
        WRITER,
        Some(json!({"name": "Renamed"})),
    )
    .await;
    forbidden(s, &v, "jobs:exec");
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/jobs",
        WRITER,
        Some(json!({"slug": "plain", "name": "P", "entryPoint": "builtin:noop"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &app,
        Method::PATCH,
        "/api/jobs/plain",
        WRITER,
        Some(json!({"entryPoint": "builtin:repository-build", "defaultParameters": {"command": ["id"]}})),
    )
    .await;
    forbidden(s, &v, "jobs:exec");

    // A job whose defaults carry secrets decides where they go: secrets:use.
    let http = json!({"slug": "notify", "name": "N", "entryPoint": "builtin:http",
        "defaultParameters": {"method": "POST", "url": "http://127.0.0.1:9/hook",
            "headers": {"Authorization": {"secret": {"source": "store", "key": "HOOK"}}}}});
    let (s, v) = call(&app, Method::POST, "/api/jobs", EXEC, Some(http.clone())).await;
    forbidden(s, &v, "secrets:use");
    let (s, v) = call(&app, Method::POST, "/api/jobs", ADMIN, Some(http)).await;
    assert_eq!(s, 201, "{v}");
    // ... and a caller may not move its destination without it.
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/jobs/notify/run",
        RUNNER,
        Some(json!({"parameters": {"url": "http://evil.test/"}})),
    )
    .await;
    forbidden(s, &v, "secrets:use");
    // Nor change its default destination.
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/jobs",
        ADMIN,
        Some(
            json!({"slug": "poster", "name": "P", "entryPoint": "builtin:http",
            "defaultParameters": {"method": "GET", "url": "http://127.0.0.1:9/a"}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &app,
        Method::PATCH,
        "/api/jobs/poster",
        WRITER,
        Some(json!({"defaultParameters": {"method": "GET", "url": "http://evil.test/"}})),
    )
    .await;
    forbidden(s, &v, "secrets:use");

    // Secret references in a caller's parameters need secrets:use, and so does a retry.
    let with_ref = json!({"parameters": {"token": {"secret": {"source": "store", "key": "K"}}}});
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/jobs/plain/run",
        RUNNER,
        Some(with_ref.clone()),
    )
    .await;
    forbidden(s, &v, "secrets:use");
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/jobs/plain/run",
        USER,
        Some(with_ref),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    app.wait_terminal(&id).await;
    let retry = format!("/api/job-runs/{id}/retry");
    let (s, v) = call(&app, Method::POST, &retry, RUNNER, None).await;
    forbidden(s, &v, "secrets:use");
    let (s, v) = call(&app, Method::POST, &retry, USER, None).await;
    assert_eq!(s, 202, "{v}");

    // Workflows: steps that set definition-only parameters need jobs:exec, secrets secrets:use.
    let flow = |params: Value| json!({"slug": "flow", "name": "F", "steps": [{"id": "b", "jobSlug": "builder", "parameters": params}]});
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/workflows",
        FLOWS,
        Some(flow(json!({"repoUrl": "/r", "command": ["make", "x"]}))),
    )
    .await;
    forbidden(s, &v, "jobs:exec");
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/workflows",
        FLOWS,
        Some(flow(json!({"repoUrl": "/r"}))),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/workflows",
        FLOWS,
        Some(
            json!({"slug": "flow2", "name": "F", "steps": [{"id": "a", "jobSlug": "plain",
            "parameters": {"t": {"secret": {"source": "store", "key": "K"}}}}]}),
        ),
    )
    .await;
    forbidden(s, &v, "secrets:use");
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/workflows/flow/run",
        FLOWS,
        Some(json!({"parameters": {"t": {"secret": {"source": "env", "key": "HOME"}}}})),
    )
    .await;
    forbidden(s, &v, "secrets:use");

    // A run whose parameters carry references resumes or reruns only with secrets:use.
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/workflows",
        ADMIN,
        Some(json!({"slug": "echoflow", "name": "E", "steps": [{"id": "a", "jobSlug": "plain", "parameters": {}}]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &app,
        Method::POST,
        "/api/workflows/echoflow/run",
        ADMIN,
        Some(json!({"parameters": {"t": {"secret": {"source": "store", "key": "K"}}}})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let run_id = v["data"]["id"].as_str().unwrap().to_string();
    for action in ["rerun", "retry"] {
        let (s, v) = call(
            &app,
            Method::POST,
            &format!("/api/workflow-runs/{run_id}/{action}"),
            FLOWS,
            None,
        )
        .await;
        forbidden(s, &v, "secrets:use");
    }

    // Services: headers and baseUrl route credentials.
    let svc = json!({"slug": "hook", "displayName": "Hook", "kind": "http", "baseUrl": "http://127.0.0.1:9"});
    let mut with_headers = svc.clone();
    with_headers["headers"] = json!({"Authorization": "Bearer x"});
    let (s, v) = call(&app, Method::POST, "/api/services", SVC, Some(with_headers)).await;
    forbidden(s, &v, "secrets:use");
    let (s, v) = call(&app, Method::POST, "/api/services", SVC, Some(svc)).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &app,
        Method::PATCH,
        "/api/services/hook",
        SVC,
        Some(json!({"baseUrl": "http://evil.test"})),
    )
    .await;
    forbidden(s, &v, "secrets:use");
    let (s, v) = call(
        &app,
        Method::PATCH,
        "/api/services/hook",
        SVC,
        Some(json!({"status": "degraded"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &app,
        Method::PATCH,
        "/api/services/hook",
        SVC_SEC,
        Some(json!({"baseUrl": "http://127.0.0.1:10", "headers": {"X-Key": "k"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Refusals are audited as forbidden.
    let (s, v) = call(
        &app,
        Method::GET,
        "/api/audit-logs?status=forbidden&subject=writer",
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["data"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["action"] == "job.create")),
        "{v}"
    );
    app.shutdown().await;
}

// ---- secrets stay secret ----

/// Runs workflow `call` and waits until it succeeded; returns its steps document.
async fn call_once(app: &TestApp) -> Value {
    let (status, v) = app.post_json("/api/workflows/call/run", &json!({})).await;
    assert_eq!(status, 202, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, run) = app
            .get_json(&format!("/api/workflow-runs/{id}/steps"))
            .await;
        if run["data"]["run"]["status"] == "succeeded" {
            return run;
        }
        assert!(tokio::time::Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_credentials_are_write_only() {
    let app = spawn_app().await;
    let (base, seen) = echo_server().await;
    let secret = format!("Bearer s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "echo", "displayName": "Echo", "kind": "http", "baseUrl": base,
                "headers": {"Authorization": secret}}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["data"]["headers"], json!({"Authorization": "***"}), "{v}");
    for path in ["/api/services/echo", "/api/services", "/services/echo"] {
        let text = app.get(path).await.text().await.unwrap();
        assert!(!text.contains(&secret), "{path} shows the header value");
    }
    // At rest: sealed; in the event log: masked.
    let store = raw_store(&app).await;
    let (_, stored) = store
        .get_service_with_headers("echo")
        .await
        .unwrap()
        .expect("service");
    assert!(!stored.to_string().contains(&secret), "{stored}");
    assert!(stored["Authorization"]["sealed"].is_string(), "{stored}");
    let events = store.events_after(0, 1000).await.unwrap();
    assert!(events.iter().any(|e| e.event_type == "service.updated"));
    assert!(
        events
            .iter()
            .all(|e| !e.payload.to_string().contains(&secret)),
        "an event carries the header value"
    );

    // A service step sends it, and nothing the run keeps shows it.
    app.job("echo-job", "builtin:noop", json!({})).await;
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "call", "name": "Call", "steps": [{"id": "s", "type": "service",
                "serviceSlug": "echo", "captureResponse": true,
                "request": {"method": "POST", "path": "/hook", "body": {"a": 1}}}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let steps = call_once(&app).await;
    assert_eq!(seen.lock().unwrap().last(), Some(&secret));
    let job_run = steps["data"]["steps"][0]["jobRunId"]
        .as_str()
        .unwrap()
        .to_string();
    let run = app.get_run(&job_run).await;
    let log = app.logs(&job_run).await;
    for (what, text) in [
        ("steps", steps.to_string()),
        ("job run", run.to_string()),
        ("log", log),
    ] {
        assert!(!text.contains(&secret), "{what} shows the value: {text}");
    }
    assert_eq!(run["result"]["response"]["body"]["plain"], "***", "{run}");

    // `***` sent back keeps the stored value; for an unknown header it is a 400.
    let (status, v) = app
        .patch_json(
            "/api/services/echo",
            &json!({"headers": {"Authorization": "***", "X-Other": "1"}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"]["headers"],
        json!({"Authorization": "***", "X-Other": "***"})
    );
    call_once(&app).await;
    assert_eq!(seen.lock().unwrap().last(), Some(&secret));
    let (status, v) = app
        .patch_json("/api/services/echo", &json!({"headers": {"X-New": "***"}}))
        .await;
    assert_eq!(
        error_paths(status, &v, 400, "invalid_definition"),
        ["/headers/X-New"]
    );
    // A reference is kept as written (it is not a value).
    let reference =
        json!({"secret": {"source": "store", "key": "ECHO_TOKEN"}, "prefix": "Bearer "});
    let (status, v) = app
        .patch_json(
            "/api/services/echo",
            &json!({"headers": {"Authorization": reference}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["headers"]["Authorization"], reference);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_secret_values_are_redacted_too() {
    let app = spawn_app().await;
    let (base, _) = echo_server().await;
    let value = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let (status, v) = app
        .send_json(
            Method::PUT,
            "/api/secrets/ECHO_TOKEN",
            &json!({"value": value}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    app.job("fetch", "builtin:http", json!({})).await;
    let run = app
        .run(
            "fetch",
            json!({"parameters": {"method": "GET", "url": format!("{base}/x"),
                "headers": {"Authorization": {"secret": {"source": "store", "key": "ECHO_TOKEN"}}}}}),
        )
        .await;
    let id = run["id"].as_str().unwrap().to_string();
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let body = &done["result"]["body"];
    for key in ["plain", "base64", "base64url", "url", "hex", "basic"] {
        let shown = body[key].as_str().unwrap_or_default();
        assert!(shown.contains("***"), "{key} not redacted: {body}");
    }
    use base64::{Engine as _, engine::general_purpose as b64};
    let text = done.to_string();
    for encoded in [
        value.clone(),
        b64::STANDARD.encode(&value),
        b64::URL_SAFE_NO_PAD.encode(&value),
        hex::encode(&value),
    ] {
        assert!(!text.contains(&encoded), "{encoded} in {text}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_references_read_only_allow_listed_variables() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.secret_env_allow =
        domain::secrets::EnvAllowList::parse("PATH").expect("allow list");
    let app = spawn_app_with(db, settings).await;
    app.job("echo", "builtin:noop", json!({})).await;
    let env_ref =
        |key: &str| json!({"parameters": {"v": {"secret": {"source": "env", "key": key}}}});
    for key in ["HOME", "SWITCHYARD_SECRET_ENV_ALLOW", "DATABASE_URL"] {
        let run = app.run("echo", env_ref(key)).await;
        let done = app.wait_terminal(run["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "failed", "{key}: {done}");
        assert!(
            done["errorMessage"]
                .as_str()
                .is_some_and(|m| m.contains("--secret-env-allow")),
            "{done}"
        );
    }
    let run = app.run("echo", env_ref("PATH")).await;
    let done = app.wait_terminal(run["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["v"], "***", "{done}");
    app.shutdown().await;
}

// ---- seeds ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_seeded_job_stays_deleted_and_an_old_build_seed_is_replaced() {
    let app = spawn_app().await;
    let (status, v) = app
        .send_json(Method::DELETE, "/api/jobs/repository-ingest", &json!({}))
        .await;
    assert_eq!(status, 204, "{v}");
    // repository-build as an older version seeded it: the caller's command.
    let old_seed = json!({"version": 1, "defaultParameters": {},
        "parametersSchema": {"type": "object", "required": ["command"], "properties": {
            "command": {"type": "array", "items": {"type": "string"}}}}});
    let (status, v) = app
        .patch_json("/api/jobs/repository-build", &old_seed)
        .await;
    assert_eq!(status, 200, "{v}");
    let db = app.shutdown().await;
    // A database from before seed markers: none recorded.
    {
        use sea_orm::ConnectionTrait;
        let raw = server::db::Database::connect(&db.data_dir(), db.url.as_deref())
            .await
            .unwrap();
        raw.conn
            .execute_unprepared("DELETE FROM seed_markers WHERE name = 'job:repository-build'")
            .await
            .unwrap();
    }
    let settings = test_settings(&db);
    let app = spawn_app_with(db, settings).await;
    let (status, _) = app.get_json("/api/jobs/repository-ingest").await;
    assert_eq!(status, 404, "a deleted seed came back");
    let (status, v) = app.get_json("/api/jobs/repository-build").await;
    assert_eq!(status, 200, "{v}");
    let job = &v["data"]["job"];
    assert_eq!(job["version"], 2, "{job}");
    assert_eq!(
        job["defaultParameters"]["command"],
        json!(["make"]),
        "{job}"
    );
    // The service steps' own job is infrastructure: it is there.
    let (status, _) = app.get_json("/api/jobs/service-call").await;
    assert_eq!(status, 200);
    app.shutdown().await;
}

// ---- triggers ----

async fn workflow_runs_of(app: &TestApp, slug: &str) -> Vec<Value> {
    let (status, v) = app
        .get_json(&format!("/api/workflows/{slug}/runs?limit=100"))
        .await;
    assert_eq!(status, 200, "{v}");
    v["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_triggers_cannot_loop() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    let step = json!([{"id": "a", "jobSlug": "echo", "parameters": {}}]);
    // ping starts pong, pong starts ping: a loop through two workflows.
    for (slug, other) in [("ping", "pong"), ("pong", "ping")] {
        let (status, v) = app
            .post_json(
                "/api/workflows",
                &json!({"slug": slug, "name": slug, "steps": step,
                    "triggers": [{"type": "event", "options": {"event": "workflow.run.succeeded",
                        "filter": {"workflowSlug": other}}}]}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
    // watch starts on any job run's success, including its own steps' runs.
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "watch", "name": "watch", "steps": step,
                "triggers": [{"type": "event", "options": {"event": "job.run.succeeded",
                    "filter": {"jobSlug": "echo"}}}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    // A caller cannot forge a chain, nor claim an event trigger's run.
    let (status, v) = app
        .post_json(
            "/api/workflows/ping/run",
            &json!({"trigger": {"type": "event", "chain": []}}),
        )
        .await;
    assert_eq!(
        error_paths(status, &v, 400, "invalid_request"),
        ["/trigger/chain", "/trigger/type"]
    );

    let (status, v) = app.post_json("/api/workflows/ping/run", &json!({})).await;
    assert_eq!(status, 202, "{v}");
    // Settle: every run that will start has started and ended.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ping = workflow_runs_of(&app, "ping").await;
    let pong = workflow_runs_of(&app, "pong").await;
    assert_eq!(ping.len(), 1, "ping ran again: {ping:?}");
    assert_eq!(pong.len(), 1, "{pong:?}");
    assert_eq!(pong[0]["trigger"]["chain"][0]["workflowSlug"], "ping");
    // watch: started by the steps of ping and pong (two job runs of echo), never by its own.
    let watch = workflow_runs_of(&app, "watch").await;
    assert_eq!(watch.len(), 2, "{watch:?}");
    for run in &watch {
        let chain = run["trigger"]["chain"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(chain.iter().all(|l| l["workflowSlug"] != "watch"), "{run}");
    }
    app.shutdown().await;
}
