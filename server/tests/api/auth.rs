//! Operator tokens, scopes, read protection, CSRF, sign-in and the audit log (issue 5), on the
//! real app and on both databases.
use std::time::Duration;

use domain::auth::OperatorTokens;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use server::settings::AuthSettings;
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, TestDb, spawn_app, spawn_app_with, test_settings};

// Operator tokens need at least 32 characters.
pub const ADMIN: &str = "admin-token-1111-aaaaaaaaaaaaaaaaaaaa";
pub const WRITER: &str = "writer-token-2222-bbbbbbbbbbbbbbbbbbb";
pub const RUNNER: &str = "runner-token-3333-ccccccccccccccccccc";
const FLOWS: &str = "flows-token-4444-dddddddddddddddddddd";
const SERVICES: &str = "services-token-5555-eeeeeeeeeeeeeeeee";
const SECRETS: &str = "secrets-token-6666-ffffffffffffffffff";
pub const BAD: &str = "not-a-configured-token-gggggggggggggg";
const ALL_TOKENS: [&str; 7] = [ADMIN, WRITER, RUNNER, FLOWS, SERVICES, SECRETS, BAD];

pub fn tokens_json() -> String {
    json!([
        {"subject": "ada", "token": ADMIN, "scopes": ["admin"]},
        {"subject": "writer", "token": WRITER, "scopes": ["jobs:write"]},
        {"subject": "runner", "token": RUNNER, "scopes": ["jobs:run"]},
        {"subject": "flows", "token": FLOWS, "scopes": ["workflows:write", "workflows:run"]},
        {"subject": "svc", "token": SERVICES, "scopes": ["services:write"]},
        {"subject": "keeper", "token": SECRETS, "scopes": ["secrets:write"]},
    ])
    .to_string()
}

pub fn prefix(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))[..12].to_string()
}

/// Tokens configured; reads need one unless `public_reads` (`--public-reads`).
async fn spawn_secured(public_reads: bool) -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.auth = AuthSettings {
        tokens: OperatorTokens::parse(&tokens_json()).expect("token config"),
        public_reads,
        ..AuthSettings::default()
    };
    spawn_app_with(db, settings).await
}

const PUBLIC: bool = true;
const PROTECTED: bool = false;

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends `method path` with an optional bearer token and JSON body: (status, body).
pub async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, v) = call(
        app,
        Method::GET,
        &format!("/api/audit-logs{query}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200, "audit list {query}: {v}");
    v["data"].as_array().cloned().unwrap_or_default()
}

/// One protected endpoint: it answers 401 without a token, 401 with an unknown one, 403 for a
/// token without its scope, and `ok` (a predicate on the status) with `good`.
async fn check(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Value,
    scope: &str,
    wrong: &str,
    good: &str,
) -> (u16, Value) {
    let body = (!body.is_null()).then_some(body);
    let (s, v) = call(app, method.clone(), path, None, body.as_ref()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("missing_token")),
        "{method} {path} without a token: {v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains(scope),
        "{v}"
    );
    let (s, v) = call(app, method.clone(), path, Some(BAD), body.as_ref()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{method} {path} bad token: {v}"
    );
    let (s, v) = call(app, method.clone(), path, Some(wrong), body.as_ref()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{method} {path} wrong scope: {v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("needs scope {scope}")),
        "{v}"
    );
    let (s, v) = call(app, method.clone(), path, Some(good), body.as_ref()).await;
    assert!(
        s != 401 && s != 403,
        "{method} {path} with scope {scope}: {s} {v}"
    );
    (s, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protected_endpoint_answers_401_403_and_2xx() {
    let app = spawn_secured(PUBLIC).await;
    let post = Method::POST;
    let patch = Method::PATCH;

    let (s, v) = check(
        &app,
        post.clone(),
        "/api/jobs",
        json!({"slug": "build-app", "name": "Build", "entryPoint": "builtin:noop"}),
        "jobs:write",
        RUNNER,
        WRITER,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = check(
        &app,
        post.clone(),
        "/api/jobs",
        json!({"slug": "sleeper", "name": "Sleeper", "entryPoint": "builtin:sleep",
               "defaultParameters": {"durationMs": 20000}}),
        "jobs:write",
        RUNNER,
        ADMIN,
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = check(
        &app,
        patch.clone(),
        "/api/jobs/build-app",
        json!({"name": "Build app"}),
        "jobs:write",
        FLOWS,
        WRITER,
    )
    .await;
    assert_eq!(s, 200);
    let (s, run) = check(
        &app,
        post.clone(),
        "/api/jobs/sleeper/run",
        json!({}),
        "jobs:run",
        WRITER,
        RUNNER,
    )
    .await;
    assert_eq!(s, 202, "{run}");
    let run_id = run["data"]["id"].as_str().unwrap().to_string();
    let (s, v) = check(
        &app,
        patch.clone(),
        &format!("/api/job-runs/{run_id}"),
        json!({"status": "canceled"}),
        "jobs:run",
        WRITER,
        RUNNER,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = check(
        &app,
        post.clone(),
        &format!("/api/job-runs/{run_id}/retry"),
        Value::Null,
        "jobs:run",
        WRITER,
        RUNNER,
    )
    .await;
    assert_eq!(s, 202, "{v}");

    let (s, v) = check(
        &app,
        post.clone(),
        "/api/workflows",
        json!({"slug": "wf", "name": "WF", "steps": [{"id": "nap", "jobSlug": "sleeper"}]}),
        "workflows:write",
        RUNNER,
        FLOWS,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = check(
        &app,
        patch.clone(),
        "/api/workflows/wf",
        json!({"name": "Workflow"}),
        "workflows:write",
        WRITER,
        FLOWS,
    )
    .await;
    assert_eq!(s, 200);
    let (s, wrun) = check(
        &app,
        post.clone(),
        "/api/workflows/wf/run",
        json!({}),
        "workflows:run",
        RUNNER,
        FLOWS,
    )
    .await;
    assert_eq!(s, 202, "{wrun}");
    let wrun_id = wrun["data"]["id"].as_str().unwrap().to_string();
    let (s, v) = check(
        &app,
        patch.clone(),
        &format!("/api/workflow-runs/{wrun_id}"),
        json!({"status": "canceled"}),
        "workflows:run",
        RUNNER,
        FLOWS,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = check(
        &app,
        post.clone(),
        &format!("/api/workflow-runs/{wrun_id}/retry"),
        Value::Null,
        "workflows:run",
        WRITER,
        FLOWS,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = check(
        &app,
        post.clone(),
        &format!("/api/workflow-runs/{wrun_id}/rerun"),
        Value::Null,
        "workflows:run",
        SERVICES,
        ADMIN,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    // Stop the resumed run and the rerun, so the workflow can be deleted below.
    let rerun_id = v["data"]["id"].as_str().unwrap().to_string();
    for id in [&wrun_id, &rerun_id] {
        let (s, v) = call(
            &app,
            patch.clone(),
            &format!("/api/workflow-runs/{id}"),
            Some(FLOWS),
            Some(&json!({"status": "canceled"})),
        )
        .await;
        assert!(s == 200 || s == 409, "{v}");
    }

    let (s, v) = check(&app, post.clone(), "/api/services",
        json!({"slug": "notifier", "displayName": "Notifier", "kind": "http", "baseUrl": "http://127.0.0.1:9"}),
        "services:write", FLOWS, SERVICES).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = check(
        &app,
        patch.clone(),
        "/api/services/notifier",
        json!({"status": "degraded"}),
        "services:write",
        WRITER,
        SERVICES,
    )
    .await;
    assert_eq!(s, 200);

    // Secrets (their endpoints come from another part of issue 5; the table already guards
    // them: with the right scope the request reaches the router).
    check(
        &app,
        Method::PUT,
        "/api/secrets/NOTIFIER_TOKEN",
        json!({"value": "s3cr3t-value"}),
        "secrets:write",
        RUNNER,
        SECRETS,
    )
    .await;
    check(
        &app,
        Method::DELETE,
        "/api/secrets/NOTIFIER_TOKEN",
        Value::Null,
        "secrets:write",
        WRITER,
        SECRETS,
    )
    .await;
    check(
        &app,
        Method::GET,
        "/api/secrets",
        Value::Null,
        "secrets:write",
        FLOWS,
        SECRETS,
    )
    .await;

    let (s, _) = check(
        &app,
        Method::DELETE,
        "/api/workflows/wf",
        Value::Null,
        "workflows:write",
        RUNNER,
        FLOWS,
    )
    .await;
    assert_eq!(s, 204);
    let (s, v) = check(
        &app,
        Method::DELETE,
        "/api/jobs/build-app",
        Value::Null,
        "jobs:write",
        RUNNER,
        WRITER,
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = check(
        &app,
        Method::GET,
        "/api/audit-logs",
        Value::Null,
        "admin",
        SECRETS,
        ADMIN,
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Reads stay open; health and readiness too.
    for path in [
        "/api/jobs",
        "/api/job-runs",
        "/api/workflows",
        "/api/services",
        "/api/health",
        "/api/ready",
    ] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    // An unknown token on an open read is ignored, not rejected.
    let (s, _) = call(&app, Method::GET, "/api/jobs", Some(BAD), None).await;
    assert_eq!(s, 200);

    // Audit: accepted writes with subject, hash prefix, resource and outcome.
    let ok = audit(&app, "?status=ok&limit=100").await;
    let find = |action: &str, resource: &str| {
        ok.iter()
            .find(|e| e["action"] == action && e["resource"] == resource)
            .unwrap_or_else(|| panic!("no ok audit entry {action} {resource} in {ok:#?}"))
            .clone()
    };
    let created = find("job.create", "jobs/build-app");
    assert_eq!(created["subject"], "writer");
    assert_eq!(created["tokenHashPrefix"], prefix(WRITER));
    assert_eq!(created["statusCode"], 201);
    assert!(created["ip"].as_str().unwrap().starts_with("127."));
    let ran = find("job.run", "jobs/sleeper");
    assert_eq!(ran["subject"], "runner");
    assert_eq!(ran["details"]["id"], run_id.as_str());
    find("job_run.cancel", &format!("job-runs/{run_id}"));
    find("workflow.run", "workflows/wf");
    find("workflow_run.cancel", &format!("workflow-runs/{wrun_id}"));
    find("workflow_run.retry", &format!("workflow-runs/{wrun_id}"));
    find("workflow_run.rerun", &format!("workflow-runs/{wrun_id}"));
    find("service.create", "services/notifier");
    find("workflow.delete", "workflows/wf");
    find("job.delete", "jobs/build-app");

    // Rejections: missing, invalid (with the hash prefix of what was sent) and forbidden.
    let rejected = audit(&app, "?action=job.create&limit=100").await;
    let by_status = |st: &str| {
        rejected
            .iter()
            .filter(|e| e["status"] == st)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_status("missing_token").len(), 2);
    assert!(
        by_status("missing_token")
            .iter()
            .all(|e| e["subject"].is_null() && e["statusCode"] == 401)
    );
    assert!(
        by_status("invalid_token")
            .iter()
            .all(|e| e["tokenHashPrefix"] == prefix(BAD))
    );
    let forbidden = by_status("forbidden");
    assert_eq!(forbidden.len(), 2);
    assert!(
        forbidden
            .iter()
            .all(|e| e["subject"] == "runner" && e["statusCode"] == 403)
    );
    assert_eq!(forbidden[0]["details"]["neededScope"], "jobs:write");

    // No token material anywhere in the audit log.
    let everything = serde_json::to_string(&audit(&app, "?limit=100").await).unwrap();
    for t in ALL_TOKENS {
        assert!(!everything.contains(t), "token {t} in the audit log");
    }
    assert!(!everything.contains("s3cr3t-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_reads_guards_reads_the_event_stream_and_pages() {
    let app = spawn_secured(PROTECTED).await;
    for path in [
        "/api/jobs",
        "/api/job-runs",
        "/api/workflows",
        "/api/openapi.json",
        "/api/job-runs/x/logs",
        "/api/metrics",
    ] {
        let (s, v) = call(&app, Method::GET, path, None, None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("missing_token")),
            "{path}: {v}"
        );
        let (s, v) = call(&app, Method::GET, path, Some(BAD), None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("invalid_token")),
            "{path}: {v}"
        );
    }
    // Any valid token reads, whatever its scopes.
    let (s, _) = call(&app, Method::GET, "/api/jobs", Some(SERVICES), None).await;
    assert_eq!(s, 200);
    for path in ["/api/health", "/api/ready"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    // The Prometheus scrape endpoint is a read too.
    let res = no_redirects()
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        [401, 303].contains(&res.status().as_u16()),
        "{}",
        res.status()
    );
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(SERVICES)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        text.contains("switchyard_queue_depth{state=\"due\"} 0")
            && text.contains("jobs_failure_rate"),
        "{text}"
    );
    // The event stream.
    let res = app.get("/api/events").await;
    assert_eq!(res.status(), 401);
    assert!(res.headers().get(header::WWW_AUTHENTICATE).is_some());
    let res = app
        .client
        .get(app.url("/api/events"))
        .bearer_auth(RUNNER)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(res);
    // Server functions and pages: 401, or a redirect to the sign-in page.
    let res = app
        .client
        .post(app.url("/_sf/runs"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let client = no_redirects();
    let res = client
        .get(app.url("/runs?status=failed"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()[header::LOCATION],
        "/sign-in?next=%2Fruns%3Fstatus%3Dfailed&error=sign_in"
    );
    let res = client.get(app.url("/sign-in")).send().await.unwrap();
    assert_eq!(res.status(), 200, "the sign-in page stays open");
    let runner_cookie = session_cookie(&app, RUNNER).await;
    let res = client
        .get(app.url("/runs"))
        .header(header::COOKIE, runner_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("signed in as"), "header names the operator");
    // Rejected reads are audited too.
    let rejected = audit(&app, "?action=read&status=missing_token").await;
    assert!(
        rejected.iter().any(|e| e["resource"] == "/api/events"),
        "{rejected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_local_mode_allows_everything_as_local_and_audits_it() {
    let app = spawn_app().await;
    let (s, _) = call(
        &app,
        Method::POST,
        "/api/jobs",
        None,
        Some(&json!({"slug": "local-job", "name": "L", "entryPoint": "builtin:noop"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = call(
        &app,
        Method::GET,
        "/api/audit-logs?action=job.create",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let e = &v["data"][0];
    assert_eq!(e["subject"], "local");
    assert!(e["tokenHashPrefix"].is_null());
    assert_eq!(e["resource"], "jobs/local-job");
    assert_eq!(e["status"], "ok");
    // A write that names another origin is refused even here (drive-by requests from a web
    // page to the loopback server).
    let res = app
        .client
        .post(app.url("/api/jobs/local-job/run"))
        .header(header::ORIGIN, "http://evil.test")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_api_filters_and_pages() {
    let app = spawn_secured(PUBLIC).await;
    let job = json!({"slug": "audited", "name": "A", "entryPoint": "builtin:noop"});
    call(&app, Method::POST, "/api/jobs", Some(WRITER), Some(&job)).await;
    call(&app, Method::POST, "/api/jobs", None, Some(&job)).await;
    call(
        &app,
        Method::POST,
        "/api/jobs/audited/run",
        Some(RUNNER),
        Some(&json!({})),
    )
    .await;
    call(
        &app,
        Method::POST,
        "/api/jobs/audited/run",
        Some(WRITER),
        Some(&json!({})),
    )
    .await;
    call(
        &app,
        Method::POST,
        "/api/jobs/nope/run",
        Some(RUNNER),
        Some(&json!({})),
    )
    .await;

    let runs = audit(&app, "?action=job.run").await;
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(runs.iter().all(|e| e["action"] == "job.run"));
    // Newest first.
    assert!(
        runs.windows(2)
            .all(|w| w[0]["id"].as_str() > w[1]["id"].as_str())
    );
    // A missing job is recorded with its error code.
    assert_eq!(runs[0]["status"], "not_found");
    assert_eq!(runs[0]["statusCode"], 404);
    let by_runner = audit(&app, "?subject=runner&status=ok").await;
    assert_eq!(by_runner.len(), 1);
    assert_eq!(by_runner[0]["resource"], "jobs/audited");
    let rejected = audit(&app, "?status=missing_token,forbidden").await;
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    // Paging by cursor.
    let (_, first) = call(
        &app,
        Method::GET,
        "/api/audit-logs?limit=2",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    assert_eq!(first["meta"]["limit"], 2);
    let cursor = first["meta"]["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, second) = call(
        &app,
        Method::GET,
        &format!("/api/audit-logs?limit=2&cursor={cursor}"),
        Some(ADMIN),
        None,
    )
    .await;
    let second = second["data"].as_array().unwrap().clone();
    assert!(!second.is_empty());
    assert!(
        second
            .iter()
            .all(|e| e["id"].as_str().unwrap() < cursor.as_str())
    );
    // Time window.
    let now = chrono::Utc::now();
    let later = (now + chrono::Duration::minutes(1)).to_rfc3339();
    let earlier = (now - chrono::Duration::minutes(5)).to_rfc3339();
    assert!(
        audit(&app, &format!("?since={}", urlencode(&later)))
            .await
            .is_empty()
    );
    assert_eq!(
        audit(
            &app,
            &format!("?since={}&action=job.run", urlencode(&earlier))
        )
        .await
        .len(),
        3
    );
    assert!(
        audit(
            &app,
            &format!("?until={}&action=job.run", urlencode(&earlier))
        )
        .await
        .is_empty()
    );
    // Bad queries list every problem.
    let (s, v) = call(
        &app,
        Method::GET,
        "/api/audit-logs?since=yesterday&limit=0&colour=red",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let paths: Vec<&str> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/query/since")
            && paths.contains(&"/query/limit")
            && paths.contains(&"/query/colour"),
        "{paths:?}"
    );
    // The OpenAPI document describes the endpoint and the scopes.
    let (_, doc) = call(&app, Method::GET, "/api/openapi.json", None, None).await;
    let op = &doc["paths"]["/api/audit-logs"]["get"];
    assert!(
        op["description"].as_str().unwrap().contains("admin"),
        "{op}"
    );
    assert!(
        doc["paths"]["/api/jobs/{slug}/run"]["post"]["description"]
            .as_str()
            .unwrap()
            .contains("jobs:run")
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Signs in with `token` through the form; the session cookie (`name=value`) to send back.
pub async fn session_cookie(app: &TestApp, token: &str) -> String {
    let res = sign_in(app, token, Some(&app.address)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set_cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_string()
}

pub async fn sign_in(app: &TestApp, token: &str, origin: Option<&str>) -> reqwest::Response {
    let mut req = no_redirects()
        .post(app.url("/auth/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}&next=%2Fruns", urlencode(token)));
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_cookie_csrf_and_server_functions() {
    let app = spawn_secured(PUBLIC).await;
    let origin = app.address.clone();
    app.client
        .post(app.url("/api/jobs"))
        .bearer_auth(ADMIN)
        .json(&json!({"slug": "form-job", "name": "F", "entryPoint": "builtin:noop"}))
        .send()
        .await
        .unwrap();

    // The sign-in form: a valid token sets the cookie and goes on to `next`.
    let res = sign_in(&app, RUNNER, Some(&origin)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/runs");
    let set_cookie = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set_cookie.starts_with("switchyard_session="),
        "{set_cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    // An invalid token goes back to the form with the error; a cross-site form is refused.
    let res = sign_in(&app, BAD, Some(&origin)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        res.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/sign-in?error=invalid_token")
    );
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(
        sign_in(&app, RUNNER, Some("http://evil.test"))
            .await
            .status(),
        403
    );
    assert_eq!(sign_in(&app, RUNNER, None).await.status(), 403);

    // Server functions with the cookie: same-origin only.
    let sf = |path: &str, body: String, origin: Option<String>, cookie: Option<String>| {
        let mut req = app
            .client
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        req.send()
    };
    let launch = "slug=form-job&parameters=%7B%7D".to_string();
    let res = sf("/_sf/launch", launch.clone(), None, Some(cookie.clone()))
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "no Origin");
    let res = sf(
        "/_sf/launch",
        launch.clone(),
        Some("http://evil.test".into()),
        Some(cookie.clone()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403, "foreign Origin");
    let res = sf("/_sf/launch", launch.clone(), Some(origin.clone()), None)
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "no cookie");
    let res = sf(
        "/_sf/launch",
        launch.clone(),
        Some(origin.clone()),
        Some(cookie.clone()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let outcome: Value = res.json().await.unwrap();
    let run_id = outcome["run"]["id"].as_str().expect("a run").to_string();
    // A Referer of this site does as well as an Origin.
    let res = app
        .client
        .post(app.url("/_sf/cancel-run"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(header::REFERER, format!("{origin}/runs/jobs/{run_id}"))
        .header(header::COOKIE, cookie.clone())
        .body(format!("id={run_id}"))
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 403);
    // The runner may not start workflows, nor read the audit log.
    let res = sf(
        "/_sf/launch-workflow",
        "slug=x&parameters=%7B%7D".into(),
        Some(origin.clone()),
        Some(cookie.clone()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    let res = sf(
        "/_sf/audit-logs",
        String::new(),
        Some(origin.clone()),
        Some(cookie.clone()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    // Bearer requests need no Origin (not a browser's ambient credential).
    let res = app
        .client
        .post(app.url("/_sf/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .bearer_auth(RUNNER)
        .body(launch.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Who am I, as the pages see it.
    let res = sf(
        "/_sf/whoami",
        String::new(),
        Some(origin.clone()),
        Some(cookie.clone()),
    )
    .await
    .unwrap();
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["subject"], "runner");
    assert_eq!(me["scopes"], json!(["jobs:run"]));
    assert_eq!(me["open"], false);

    // Pages: the header shows the operator; the audit page needs admin.
    let page = |path: &str, cookie: Option<String>| {
        let mut req = app.client.get(app.url(path));
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let html = page("/audit", Some(cookie.clone())).await;
    assert!(
        html.contains("signed in as") && html.contains("runner"),
        "header"
    );
    assert!(html.contains("needs scope admin"), "audit page denied");
    assert!(!html.contains("job.run"), "no audit data for a non-admin");
    let html = page("/runs", None).await;
    assert!(html.contains("sign-in-link"), "signed out: a sign-in link");
    let admin_cookie = session_cookie(&app, ADMIN).await;
    let html = page("/audit?action=job.run", Some(admin_cookie)).await;
    assert!(html.contains("id=\"audit\""), "admin sees the table");
    assert!(html.contains("jobs/form-job"));
    // A button the operator may not use is disabled, with the reason.
    let html = page(
        &format!("/runs/jobs/{run_id}"),
        Some(session_cookie(&app, WRITER).await),
    )
    .await;
    assert!(
        html.contains("needs scope jobs:run"),
        "disabled retry/cancel with the reason"
    );

    // Sign out clears the cookie (and is itself a same-origin form post).
    let res = no_redirects()
        .post(app.url("/auth/sign-out"))
        .header(header::COOKIE, cookie.clone())
        .header(header::ORIGIN, origin.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert!(
        res.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );

    // The audit log: the cookie launch, the sign-ins and the CSRF refusals; never a token.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let all = audit(&app, "?limit=100").await;
    let launched = all
        .iter()
        .find(|e| e["action"] == "job.run" && e["status"] == "ok")
        .unwrap();
    assert_eq!(launched["resource"], "jobs/form-job");
    assert_eq!(launched["subject"], "runner");
    assert!(
        all.iter().any(|e| e["action"] == "auth.sign_in"
            && e["status"] == "ok"
            && e["subject"] == "runner")
    );
    assert!(
        all.iter()
            .any(|e| e["action"] == "auth.sign_in" && e["status"] == "invalid_token")
    );
    let csrf: Vec<_> = all
        .iter()
        .filter(|e| e["details"]["reason"] == "csrf")
        .collect();
    assert!(csrf.len() >= 4, "{csrf:?}");
    assert!(
        csrf.iter()
            .all(|e| e["status"] == "forbidden" && e["statusCode"] == 403)
    );
    let text = serde_json::to_string(&all).unwrap();
    for t in ALL_TOKENS {
        assert!(!text.contains(t), "token {t} in the audit log");
    }
}

/// Runs the real binary with `args` and environment; returns (exit success, stderr).
pub fn run_binary(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env_remove("DATABASE_URL")
        .env_remove("SWITCHYARD_OPERATOR_TOKENS")
        .env_remove("SWITCHYARD_OPERATOR_TOKENS_FILE")
        .env_remove("SWITCHYARD_ALLOWED_HOSTS")
        .env_remove("SWITCHYARD_PUBLIC_URL")
        .envs(env.iter().copied())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn switchyard");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchyard {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_refuses_a_public_bind_without_tokens_and_bad_token_configs() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = run_binary(
        dir.path(),
        &["serve", "--bind", "0.0.0.0:0", "--workers", "0"],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("refusing to bind 0.0.0.0:0") && err.contains("open local mode"),
        "{err}"
    );

    let bad = r#"[{"subject": "a", "token": "tok-a-0123456789abcdef0123456789", "scopes": ["jobs:run", "root"]},
                  {"subject": "b", "token": "tok-a-0123456789abcdef0123456789", "scopes": ["admin"]},
                  {"subject": "c", "token": "", "scopes": ["admin"]}]"#;
    let (ok, err) = run_binary(
        dir.path(),
        &["serve", "--workers", "0"],
        &[("SWITCHYARD_OPERATOR_TOKENS", bad)],
    );
    assert!(!ok);
    assert!(err.contains("/0/scopes/1: unknown scope \"root\""), "{err}");
    assert!(err.contains("/1/token: duplicate token"), "{err}");
    assert!(err.contains("/2/token: must not be empty"), "{err}");
    assert!(!err.contains("tok-a"), "the token is not echoed: {err}");

    let file = dir.path().join("tokens.json");
    std::fs::write(
        &file,
        "[{\"subject\": \"a\", \"token\": \"t-0123456789abcdef0123456789abcdef\", \"scopes\": [\"nope\"]}]",
    )
    .unwrap();
    let (ok, err) = run_binary(
        dir.path(),
        &["serve", "--operator-tokens-file", file.to_str().unwrap()],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("tokens.json") && err.contains("unknown scope"),
        "{err}"
    );
    let (ok, err) = run_binary(
        dir.path(),
        &[
            "serve",
            "--operator-tokens-file",
            "/nonexistent/tokens.json",
        ],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("cannot read operator tokens file"), "{err}");
}
