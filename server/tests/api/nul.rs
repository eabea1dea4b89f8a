//! Strings no database can store (issue 15): U+0000 anywhere in a request's input, in JSON
//! bodies (values and keys, nested), path segments and query values, is a 400 that names every
//! field by JSON pointer, on SQLite and on PostgreSQL alike; never a 5xx, and nothing stored.
use std::time::Duration;

use domain::auth::OperatorTokens;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use server::settings::AuthSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, TestDb, spawn_app, spawn_app_with, test_settings};

/// Sends `method path` with a JSON body (or none): (status, body).
async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Asserts a 400 `invalid_request` whose details name exactly `paths` (in any order), each
/// saying why.
fn assert_refused(what: &str, status: u16, v: &Value, paths: &[&str]) {
    assert_eq!(status, 400, "{what}: {v}");
    assert_eq!(v["error"]["code"], "invalid_request", "{what}: {v}");
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    let details = v["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no details in {v}"));
    let mut got: Vec<&str> = details
        .iter()
        .map(|d| d["path"].as_str().unwrap_or_default())
        .collect();
    let mut want = paths.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "{what}: {v}");
    for d in details {
        let message = d["message"].as_str().unwrap_or_default();
        assert!(message.contains("U+0000"), "{what}: {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_json_bodies_is_refused_naming_every_field() {
    let app = spawn_app().await;
    app.job("j", "builtin:noop", json!({})).await;
    let run = app.run("j", json!({})).await;
    let run_id = run["id"].as_str().unwrap().to_string();
    let (status, v) = call(
        &app,
        Method::POST,
        "/api/workflows",
        Some(json!({"slug": "w", "name": "W", "steps": [{"id": "a", "jobSlug": "j"}]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = call(
        &app,
        Method::POST,
        "/api/services",
        Some(json!({"slug": "svc", "displayName": "S", "kind": "http",
            "baseUrl": "http://127.0.0.1:9"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    let cases: Vec<(Method, String, Value, Vec<&str>)> = vec![
        (
            Method::POST,
            "/api/jobs".into(),
            json!({"slug": "nul", "name": "a\u{0}b", "entryPoint": "builtin:noop",
                "metadata": {"ta\u{0}g": "x", "tags": ["ok", "\u{0}"]}}),
            vec!["/name", "/metadata/ta\u{0}g", "/metadata/tags/1"],
        ),
        (
            Method::PATCH,
            "/api/jobs/j".into(),
            json!({"name": "\u{0}", "defaultParameters": {"deep": {"er": ["\u{0}"]}}}),
            vec!["/name", "/defaultParameters/deep/er/0"],
        ),
        (
            Method::POST,
            "/api/jobs/j/run".into(),
            json!({"parameters": {"k": "v\u{0}", "n\u{0}": 1}, "idempotencyKey": "\u{0}"}),
            vec!["/parameters/k", "/parameters/n\u{0}", "/idempotencyKey"],
        ),
        (
            Method::PATCH,
            format!("/api/job-runs/{run_id}"),
            json!({"status": "canceled\u{0}"}),
            vec!["/status"],
        ),
        (
            Method::POST,
            "/api/workflows".into(),
            json!({"slug": "w2", "name": "W", "description": "d\u{0}", "steps": [
                {"id": "a\u{0}", "jobSlug": "j", "parameters": {"x": "{{ parameters.\u{0} }}"}},
                {"id": "b", "jobSlug": "j", "dependsOn": ["a\u{0}"]}]}),
            vec![
                "/description",
                "/steps/0/id",
                "/steps/0/parameters/x",
                "/steps/1/dependsOn/0",
            ],
        ),
        (
            Method::PATCH,
            "/api/workflows/w".into(),
            json!({"metadata": {"a/b\u{0}": 1}}),
            vec!["/metadata/a~1b\u{0}"],
        ),
        (
            Method::POST,
            "/api/workflows/w/run".into(),
            json!({"parameters": {"a": ["\u{0}"]}, "triggeredBy": "me\u{0}"}),
            vec!["/parameters/a/0", "/triggeredBy"],
        ),
        (
            Method::POST,
            "/api/services".into(),
            json!({"slug": "svc2", "displayName": "S", "kind": "http",
                "baseUrl": "http://127.0.0.1:9/\u{0}", "headers": {"X-A": "v\u{0}"}}),
            vec!["/baseUrl", "/headers/X-A"],
        ),
        (
            Method::PATCH,
            "/api/services/svc".into(),
            json!({"status": "healthy", "metadata": {"\u{0}": "\u{0}"}}),
            vec!["/metadata/\u{0}", "/metadata/\u{0}"],
        ),
        (
            Method::PUT,
            "/api/secrets/TOKEN".into(),
            json!({"value": "s3\u{0}cr3t"}),
            vec!["/value"],
        ),
        (
            Method::PUT,
            "/api/secrets/TOKEN".into(),
            json!("\u{0}"),
            vec![""],
        ),
    ];
    for (method, path, body, paths) in cases {
        let what = format!("{method} {path}");
        let (status, v) = call(&app, method, &path, Some(body)).await;
        assert_refused(&what, status, &v, &paths);
    }

    // Nothing was stored or started.
    let (status, _) = app.get_json("/api/jobs/nul").await;
    assert_eq!(status, 404);
    let (_, v) = app.get_json("/api/jobs/j").await;
    assert_eq!(v["data"]["job"]["name"], "j", "{v}");
    assert_eq!(v["data"]["runs"].as_array().map(Vec::len), Some(1), "{v}");
    let (status, _) = app.get_json("/api/workflows/w2").await;
    assert_eq!(status, 404);
    let (_, v) = app.get_json("/api/workflow-runs").await;
    assert_eq!(v["data"], json!([]), "{v}");
    let (status, _) = app.get_json("/api/services/svc2").await;
    assert_eq!(status, 404);
    let (status, _) = app.get_json("/api/secrets/TOKEN").await;
    assert_eq!(status, 404);
    // The same strings without U+0000 are fine (the refusal is about that character only).
    let (status, v) = call(
        &app,
        Method::PUT,
        "/api/secrets/TOKEN",
        Some(json!({"value": "s3\\u0000cr3t"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_paths_and_queries_is_refused_naming_every_parameter() {
    let app = spawn_app().await;
    app.job("j", "builtin:noop", json!({})).await;
    let (status, v) = call(
        &app,
        Method::POST,
        "/api/workflows",
        Some(json!({"slug": "w", "name": "W", "steps": [{"id": "a", "jobSlug": "j"}]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    let uuid = "0190b0a0-0000-7000-8000-000000000000";
    let cases: Vec<(Method, String, Vec<String>)> = vec![
        // Path segments.
        (
            Method::GET,
            "/api/jobs/a%00b".into(),
            vec!["/path/slug".into()],
        ),
        (
            Method::PATCH,
            "/api/jobs/a%00b".into(),
            vec!["/path/slug".into()],
        ),
        (
            Method::DELETE,
            "/api/jobs/%00".into(),
            vec!["/path/slug".into()],
        ),
        (
            Method::GET,
            "/api/jobs/%00/versions".into(),
            vec!["/path/slug".into()],
        ),
        (
            Method::POST,
            "/api/jobs/j%00/run".into(),
            vec!["/path/slug".into()],
        ),
        (
            Method::GET,
            "/api/job-runs/%00".into(),
            vec!["/path/id".into()],
        ),
        (
            Method::PATCH,
            "/api/job-runs/%00".into(),
            vec!["/path/id".into()],
        ),
        (
            Method::GET,
            "/api/job-runs/%00/logs".into(),
            vec!["/path/id".into()],
        ),
        (
            Method::POST,
            "/api/job-runs/%00/retry".into(),
            vec!["/path/id".into()],
        ),
        (
            Method::GET,
            "/api/workflows/w%00".into(),
            vec!["/path/slug".into()],
        ),
        (
            Method::POST,
            "/api/workflows/%00/run".into(),
            vec!["/path/slug".into()],
        ),
        (
            Method::GET,
            "/api/workflow-runs/%00/steps".into(),
            vec!["/path/id".into()],
        ),
        (
            Method::POST,
            "/api/workflow-runs/%00/rerun".into(),
            vec!["/path/id".into()],
        ),
        (
            Method::GET,
            "/api/services/%00".into(),
            vec!["/path/slug".into()],
        ),
        (
            Method::GET,
            "/api/secrets/%00".into(),
            vec!["/path/key".into()],
        ),
        (
            Method::PUT,
            "/api/secrets/K%00".into(),
            vec!["/path/key".into()],
        ),
        (
            Method::DELETE,
            "/api/secrets/%00".into(),
            vec!["/path/key".into()],
        ),
        // Query values on every list, every one named.
        (
            Method::GET,
            "/api/job-runs?q=%00&status=%00&job=%00&cursor=a%00".into(),
            vec![
                "/query/q".into(),
                "/query/status".into(),
                "/query/job".into(),
                "/query/cursor".into(),
            ],
        ),
        (
            Method::GET,
            "/api/jobs/j/runs?q=x%00y&status=failed,%00".into(),
            vec!["/query/q".into(), "/query/status".into()],
        ),
        (
            Method::GET,
            "/api/workflow-runs?q=%00&status=%00&workflow=%00".into(),
            vec![
                "/query/q".into(),
                "/query/status".into(),
                "/query/workflow".into(),
            ],
        ),
        (
            Method::GET,
            "/api/workflows/w/runs?status=%00".into(),
            vec!["/query/status".into()],
        ),
        (
            Method::GET,
            "/api/audit-logs?subject=%00&action=%00&status=a,%00".into(),
            vec![
                "/query/subject".into(),
                "/query/action".into(),
                "/query/status".into(),
            ],
        ),
        (
            Method::GET,
            "/api/secrets?q=%00".into(),
            vec!["/query/q".into()],
        ),
        (
            Method::GET,
            "/api/jobs?q=%00".into(),
            vec!["/query/q".into()],
        ),
        (
            Method::GET,
            "/api/workflows?q=%00".into(),
            vec!["/query/q".into()],
        ),
        (
            Method::GET,
            "/api/services?q=%00".into(),
            vec!["/query/q".into()],
        ),
        (
            Method::GET,
            "/api/events?topics=%00".into(),
            vec!["/query/topics".into()],
        ),
        // A parameter's name, and a path and a query at once.
        (
            Method::GET,
            "/api/job-runs?a%00b=1".into(),
            vec!["/query/a\u{0}b".into()],
        ),
        (
            Method::GET,
            format!("/api/jobs/j%00/runs?q=%00&cursor={uuid}"),
            vec!["/path/slug".into(), "/query/q".into()],
        ),
        (Method::GET, "/api/job-runs?q=%2500".into(), vec![]),
    ];
    for (method, path, paths) in cases {
        let what = format!("{method} {path}");
        let (status, v) = call(&app, method, &path, None).await;
        if paths.is_empty() {
            // `%2500` is the text "%00", not U+0000.
            assert_eq!(status, 200, "{what}: {v}");
            continue;
        }
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        assert_refused(&what, status, &v, &paths);
    }
    // A path that names no route stays a 404.
    let (status, v) = app.get_json("/api/no-such%00thing").await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found", "{v}");
}

/// A header value cannot carry U+0000 through the HTTP layer: hyper answers 400 to such a
/// request itself (no handler runs, nothing is stored), and the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_header_never_reaches_a_handler() {
    let app = spawn_app().await;
    app.job("j", "builtin:noop", json!({})).await;
    let authority = app.address.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let request = format!(
        "POST /api/jobs/j/run HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nIdempotency-Key: a\0b\r\nConnection: close\r\n\r\n{{}}"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let (_, v) = app.get_json("/api/jobs/j").await;
    assert_eq!(v["data"]["runs"], json!([]), "no run was started: {v}");
}

/// The pages' server functions refuse U+0000 before it reaches the service's queries, with a
/// message that says so; the launch form reports it as a problem of the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_functions_refuse_nul() {
    let app = spawn_app().await;
    app.job("j", "builtin:noop", json!({})).await;
    let sf = |endpoint: &str, form: Vec<(&'static str, String)>| {
        let req = app
            .client
            .post(app.url(&format!("/_sf/{endpoint}")))
            .header(header::ORIGIN, &app.address)
            .form(&form);
        async move {
            let res = req.send().await.expect("server function");
            let status = res.status();
            (status, res.text().await.unwrap_or_default())
        }
    };
    for (endpoint, form) in [
        ("job-detail", vec![("slug", "j\u{0}".to_string())]),
        ("get-run", vec![("id", "\u{0}".to_string())]),
        ("run-log-tail", vec![("id", "\u{0}".to_string())]),
        ("cancel-run", vec![("id", "\u{0}".to_string())]),
        ("retry-run", vec![("id", "\u{0}".to_string())]),
        ("service-detail", vec![("slug", "\u{0}".to_string())]),
        ("workflow-detail", vec![("slug", "\u{0}".to_string())]),
        ("workflow-run", vec![("id", "\u{0}".to_string())]),
        ("cancel-workflow-run", vec![("id", "\u{0}".to_string())]),
        ("retry-workflow-run", vec![("id", "\u{0}".to_string())]),
        ("rerun-workflow-run", vec![("id", "\u{0}".to_string())]),
        ("runs", vec![("q", "x\u{0}".to_string())]),
        ("runs", vec![("job", "\u{0}".to_string())]),
        ("runs", vec![("cursor", "\u{0}".to_string())]),
        ("audit-logs", vec![("subject", "\u{0}".to_string())]),
        ("audit-logs", vec![("action", "a,\u{0}".to_string())]),
        (
            "launch",
            vec![("slug", "\u{0}".to_string()), ("parameters", "{}".into())],
        ),
    ] {
        let (status, text) = sf(endpoint, form.clone()).await;
        assert!(
            !status.is_success() && text.contains("U+0000"),
            "{endpoint} {form:?}: {status} {text}"
        );
        assert!(
            !text.contains("invalid byte sequence") && !text.contains("Unicode escape"),
            "{endpoint}: {text}"
        );
    }
    // The launch forms: a problem of the parameter, nothing started.
    for (endpoint, slug) in [("launch", "j")] {
        let (status, text) = sf(
            endpoint,
            vec![
                ("slug", slug.to_string()),
                ("parameters", r#"{"a": "\u0000", "b\u0000": 1}"#.to_string()),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["run"], Value::Null, "{v}");
        let mut paths: Vec<&str> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap())
            .collect();
        paths.sort_unstable();
        assert_eq!(paths, ["/parameters/a", "/parameters/b\u{0}"], "{v}");
    }
    let (_, v) = app.get_json("/api/jobs/j").await;
    assert_eq!(v["data"]["runs"], json!([]), "nothing ran: {v}");
    // A page whose path carries U+0000 renders (its data call says why), never a 5xx.
    let res = app.get("/jobs/j%00").await;
    assert!(!res.status().is_server_error(), "{}", res.status());
}

/// With tokens configured: a refused request whose path names a resource with U+0000 is still
/// audited, and the sign-in form with U+0000 in its fields is an invalid token, audited too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_and_sign_in_survive_nul() {
    const ADMIN: &str = "admin-token-1111-aaaaaaaaaaaaaaaaaaaa";
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.auth = AuthSettings {
        tokens: OperatorTokens::parse(
            &json!([{"subject": "ada", "token": ADMIN, "scopes": ["admin"]}]).to_string(),
        )
        .expect("token config"),
        ..AuthSettings::default()
    };
    let app = spawn_app_with(db, settings).await;

    // No token: 401, audited with the resource as named.
    let res = app
        .client
        .delete(app.url("/api/jobs/a%00b"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // An admin: the 400 of the check, audited too.
    let res = app
        .client
        .delete(app.url("/api/jobs/a%00b"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .client
        .put(app.url("/api/secrets/K%00"))
        .bearer_auth(ADMIN)
        .json(&json!({"value": "v\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // The sign-in form.
    let res = crate::auth::no_redirects()
        .post(app.url("/auth/sign-in"))
        .header(header::ORIGIN, &app.address)
        .form(&[
            ("token", format!("{ADMIN}\u{0}")),
            ("next", "/runs\u{0}".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let location = res.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        location.starts_with("/sign-in?error=invalid_token"),
        "{location}"
    );

    let res = app
        .client
        .get(app.url("/api/audit-logs?limit=100"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let entries = v["data"].as_array().unwrap();
    let text = v.to_string();
    assert!(
        !text.contains("\\u0000"),
        "audit entries hold no U+0000: {v}"
    );
    let find = |action: &str, status: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["status"] == status)
            .unwrap_or_else(|| panic!("no {action} {status} entry in {v}"))
    };
    let refused = find("job.delete", "missing_token");
    assert_eq!(refused["resource"], "jobs/a%00b", "{refused}");
    let invalid = find("job.delete", "invalid_request");
    assert_eq!(invalid["resource"], "jobs/a%00b", "{invalid}");
    find("secret.write", "invalid_request");
    find("auth.sign_in", "invalid_token");
}

/// What a run produces is not refused, it happened: U+0000 in a handler's result (a remote
/// service's answer) or in a build's output is stored as U+FFFD, so the run finishes (on
/// PostgreSQL its finish could otherwise never be written, and the run failed as "worker lost"
/// once its lease ended) and its log keeps the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_output_holding_nul_is_stored_with_a_replacement_character() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let body = r#"{"a\u0000": "x\u0000y"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    let app = spawn_app().await;
    app.job(
        "fetch",
        "builtin:http",
        json!({"defaultParameters": {"method": "GET", "url": format!("http://{addr}/")},
            "retryPolicy": {"maxAttempts": 1}}),
    )
    .await;
    let id = app.run("fetch", json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let result = done["result"].to_string();
    assert!(
        result.contains('\u{fffd}') && !result.contains("\\u0000"),
        "{result}"
    );

    let source = tempfile::tempdir().expect("temp dir");
    crate::builds::make_repository(source.path());
    crate::builds::build_job(
        &app,
        "nul-output",
        json!({"command": crate::builds::shell("printf 'before\\000after\\n'; printf 'next\\n'")}),
        json!({}),
    )
    .await;
    let id = crate::builds::run_build(&app, "nul-output", source.path()).await;
    let done = app.wait_terminal(&id).await;
    let log = app.logs(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.contains(&"before\u{fffd}after"), "{log}");
    assert!(lines.contains(&"next"), "{log}");
}
