//! Outbound calls cannot be turned against the host's network (issue 14, README "Outbound
//! calls"): the egress policy (default deny of link-local and cloud metadata, `--egress-deny`,
//! `--egress-allow`) holds for `builtin:http`, service steps, health checks and git fetches,
//! at connect time for host names; redirects are followed only within the origin; health answers
//! are read up to a cap. Real local HTTP servers stand in for the destinations. Run on SQLite and
//! PostgreSQL.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use server::egress::{EgressPolicy, parse_list};

use crate::helpers::{TestApp, TestDb, WorkerProcess, spawn_app, spawn_app_with, test_settings};

/// What a destination server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    api_key: Option<String>,
    service_key: Option<String>,
}

type Answer = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// A real HTTP server on `ip`, port 0: records every request and answers it with
/// `answer(path)`. Returns its base URL and what it saw.
async fn destination(ip: &str, answer: Answer) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        record.lock().unwrap().push(Seen {
            path: uri.path().to_string(),
            authorization: header("authorization"),
            api_key: header("x-api-key"),
            service_key: header("x-service-key"),
        });
        let response = answer(uri.path());
        async move { response }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (base, seen)
}

fn ok() -> Answer {
    Arc::new(|path: &str| Json(json!({"path": path})).into_response())
}

fn port(base: &str) -> &str {
    base.rsplit(':').next().unwrap()
}

fn policy(deny: Option<&str>, allow: Option<&str>) -> EgressPolicy {
    EgressPolicy::new(
        deny.map(|d| parse_list(d).unwrap()),
        allow.map(|a| parse_list(a).unwrap()),
    )
}

async fn app_with(egress: EgressPolicy) -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.egress = egress;
    spawn_app_with(db, settings).await
}

/// `builtin:http` and `builtin:repository-ingest` jobs; two attempts each, so a refusal that
/// were retried would show as a second attempt.
async fn outbound_jobs(app: &TestApp) {
    let retry = json!({"timeoutMs": 3000,
        "retryPolicy": {"maxAttempts": 2, "strategy": "fixed", "initialDelayMs": 100}});
    app.job("call", "builtin:http", retry.clone()).await;
    app.job("ingest", "builtin:repository-ingest", retry).await;
}

/// Runs `slug` with `parameters` to its end.
async fn run_to_end(app: &TestApp, slug: &str, parameters: Value) -> Value {
    let run = app.run(slug, json!({ "parameters": parameters })).await;
    app.wait_terminal(run["id"].as_str().unwrap()).await
}

async fn get(app: &TestApp, url: &str) -> Value {
    run_to_end(app, "call", json!({"method": "GET", "url": url})).await
}

/// Failed at the first attempt, with an error that contains `expected`.
fn refused(run: &Value, expected: &str) {
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["attempt"], 1, "a refusal is not retried: {run}");
    let error = run["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains(expected), "{error:?} lacks {expected:?}");
}

#[tokio::test]
async fn the_metadata_address_is_refused_by_default() {
    let app = spawn_app().await;
    outbound_jobs(&app).await;
    let run = get(&app, "http://169.254.169.254/latest/meta-data/").await;
    refused(
        &run,
        "GET http://169.254.169.254/latest/meta-data/: the egress policy refused \
         169.254.169.254: 169.254.169.254 is in the denied range 169.254.0.0/16",
    );
    // Other spellings of the same address.
    for url in [
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
    ] {
        refused(&get(&app, url).await, "the egress policy refused");
    }
    // A git remote on it is refused before libgit2 connects.
    let run = run_to_end(
        &app,
        "ingest",
        json!({"repoUrl": "http://169.254.169.254/repo.git"}),
    )
    .await;
    refused(
        &run,
        "fetching http://169.254.169.254/repo.git: the egress policy refused 169.254.169.254",
    );
    // Loopback stays allowed by default.
    let (base, seen) = destination("127.0.0.1", ok()).await;
    let run = get(&app, &format!("{base}/fine")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["body"], json!({"path": "/fine"}));
    assert_eq!(seen.lock().unwrap().len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_name_resolving_to_a_denied_address_is_refused_and_nothing_reaches_it() {
    let app = app_with(policy(Some("127.0.0.0/8,::1"), None)).await;
    outbound_jobs(&app).await;
    let (base, seen) = destination("127.0.0.1", ok()).await;
    let port = port(&base);
    let run = get(&app, &format!("http://localhost:{port}/")).await;
    refused(
        &run,
        "the egress policy refused localhost: every address it resolves to is refused",
    );
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
    ] {
        refused(&get(&app, &url).await, "the egress policy refused");
    }
    let run = run_to_end(
        &app,
        "ingest",
        json!({"repoUrl": format!("http://localhost:{port}/repo.git")}),
    )
    .await;
    refused(&run, "the egress policy refused localhost");
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_allow_list_admits_only_its_destinations() {
    let app = app_with(policy(None, Some("127.0.0.2"))).await;
    outbound_jobs(&app).await;
    let (outside, outside_seen) = destination("127.0.0.1", ok()).await;
    let (inside, inside_seen) = destination("127.0.0.2", ok()).await;
    refused(
        &get(&app, &format!("{outside}/")).await,
        "the egress policy refused 127.0.0.1: 127.0.0.1 is not in the allowed list",
    );
    refused(
        &get(&app, &format!("http://localhost:{}/", port(&outside))).await,
        "the egress policy refused localhost",
    );
    let run = get(&app, &format!("{inside}/in")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["body"], json!({"path": "/in"}));
    assert!(outside_seen.lock().unwrap().is_empty());
    assert_eq!(inside_seen.lock().unwrap().len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn redirects_to_another_origin_are_the_answer_and_headers_stay_at_home() {
    let app = spawn_app().await;
    outbound_jobs(&app).await;
    let (other, other_seen) = destination("127.0.0.1", ok()).await;
    let away = format!("{other}/catch");
    let location = away.clone();
    let (base, seen) = destination(
        "127.0.0.1",
        Arc::new(move |path: &str| match path {
            "/away" => (StatusCode::FOUND, [(header::LOCATION, location.clone())]).into_response(),
            "/old" => {
                (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/new")]).into_response()
            }
            _ => Json(json!({"path": path})).into_response(),
        }),
    )
    .await;
    let token = format!("Bearer tok-{}", uuid::Uuid::new_v4().simple());
    let headers = json!({"Authorization": token, "X-Api-Key": "k3y"});
    let call = |path: &str, extra: Value| {
        let mut parameters =
            json!({"method": "GET", "url": format!("{base}{path}"), "headers": headers.clone()});
        for (k, v) in extra.as_object().unwrap() {
            parameters[k] = v.clone();
        }
        run_to_end(&app, "call", parameters)
    };
    // Not followed: the 3xx is the result.
    let run = call("/away", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["status"], 302, "{run}");
    assert_eq!(run["result"]["headers"]["location"], json!(away));
    // expectStatus decides about it like about any answer.
    let run = call("/away", json!({"expectStatus": 200})).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["errorMessage"], "expected status 200, got 302");
    assert!(
        other_seen.lock().unwrap().is_empty(),
        "the other origin was reached: {:?}",
        other_seen.lock().unwrap()
    );
    // Within the origin redirects are followed, headers and all.
    let run = call("/old", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["status"], 200);
    assert_eq!(run["result"]["body"], json!({"path": "/new"}));
    let new = seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.path == "/new")
        .cloned()
        .expect("/new reached");
    assert_eq!(new.authorization.as_deref(), Some(token.as_str()));
    assert_eq!(new.api_key.as_deref(), Some("k3y"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_service_that_redirects_elsewhere_never_gets_its_headers_sent_there() {
    let app = spawn_app().await;
    let (other, other_seen) = destination("127.0.0.1", ok()).await;
    let away = format!("{other}/hooks/build");
    let location = away.clone();
    let (base, seen) = destination(
        "127.0.0.1",
        Arc::new(move |_: &str| {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location.clone())],
            )
                .into_response()
        }),
    )
    .await;
    let service_key = format!("svc-{}", uuid::Uuid::new_v4().simple());
    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "hooks", "displayName": "Hooks", "kind": "http", "baseUrl": base,
                    "headers": {"X-Service-Key": service_key}}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "notify", "name": "Notify", "steps": [
                {"id": "notify", "type": "service", "serviceSlug": "hooks",
                 "captureResponse": true, "retryPolicy": {"maxAttempts": 1},
                 "request": {"method": "POST", "path": "/hooks/build",
                     "headers": {"Authorization": "Bearer step-token"},
                     "body": {"commit": "abc"}}}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = app.post_json("/api/workflows/notify/run", &json!({})).await;
    assert_eq!(status, 202, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let run = loop {
        let (_, v) = app.get_json(&format!("/api/workflow-runs/{id}")).await;
        if ["succeeded", "failed", "canceled"].contains(&v["data"]["status"].as_str().unwrap()) {
            break v["data"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never ended: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, steps) = app
        .get_json(&format!("/api/workflow-runs/{id}/steps"))
        .await;
    let step = &steps["data"]["steps"][0];
    // A 3xx is an answer for a service step: it succeeds with the redirect as its response.
    assert_eq!(run["status"], "succeeded", "{steps}");
    assert_eq!(step["output"]["status"], 307, "{step}");
    assert_eq!(
        step["output"]["response"]["headers"]["location"],
        json!(away)
    );
    // The service got the call with its headers; the other origin got nothing.
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].service_key.as_deref(), Some(service_key.as_str()));
    assert_eq!(calls[0].authorization.as_deref(), Some("Bearer step-token"));
    assert!(
        other_seen.lock().unwrap().is_empty(),
        "headers reached another origin: {:?}",
        other_seen.lock().unwrap()
    );
    app.shutdown().await;
}

/// Counts what one endless response produced; records it when the response is dropped (the
/// client went away).
struct Produced {
    bytes: usize,
    done: Arc<Mutex<Vec<usize>>>,
}

impl Drop for Produced {
    fn drop(&mut self) {
        self.done.lock().unwrap().push(self.bytes);
    }
}

/// A health endpoint answering 200 with a body that never ends (16 KiB per millisecond).
fn endless(done: Arc<Mutex<Vec<usize>>>) -> Answer {
    Arc::new(move |_: &str| {
        let produced = Produced {
            bytes: 0,
            done: done.clone(),
        };
        let chunks = futures::stream::unfold(produced, |mut produced| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            produced.bytes += 16 * 1024;
            let chunk = Bytes::from(vec![b' '; 16 * 1024]);
            Some((Ok::<_, std::convert::Infallible>(chunk), produced))
        });
        (StatusCode::OK, Body::from_stream(chunks)).into_response()
    })
}

#[tokio::test]
async fn health_checks_read_a_capped_body_and_respect_the_policy() {
    let done: Arc<Mutex<Vec<usize>>> = Arc::default();
    let (base, _) = destination("127.0.0.1", endless(done.clone())).await;
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.health_interval = Duration::from_millis(100);
    let app = spawn_app_with(db, settings).await;
    for (slug, base_url) in [
        ("endless", base.as_str()),
        ("metadata", "http://169.254.169.254"),
    ] {
        let (status, v) = app
            .post_json(
                "/api/services",
                &json!({"slug": slug, "displayName": slug, "kind": "http",
                        "baseUrl": base_url, "healthPath": "/health"}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
    // Both are classified well within the checks' 5 s request timeout.
    let started = tokio::time::Instant::now();
    let status_of = |slug: &'static str, want: &'static str| {
        let app = &app;
        async move {
            loop {
                let (_, v) = app.get_json(&format!("/api/services/{slug}")).await;
                if v["data"]["status"] == want {
                    return v["data"].clone();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "{slug} not {want} after 3 s: {v}"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    let endless = status_of("endless", "healthy").await;
    assert!(endless["lastError"].is_null(), "{endless}");
    let metadata = status_of("metadata", "unhealthy").await;
    assert_eq!(
        metadata["lastError"],
        "health check failed: the egress policy refused 169.254.169.254: 169.254.169.254 is \
         in the denied range 169.254.0.0/16"
    );
    // Each endless answer was abandoned after a bounded read (the cap, plus what the sockets
    // buffer), not streamed until the timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while done.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no endless answer was abandoned"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let sizes = done.lock().unwrap().clone();
    assert!(
        sizes.iter().all(|&n| n < 8 * 1024 * 1024),
        "bytes produced per check: {sizes:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_worker_process_takes_its_policy_from_the_environment() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    // Runs execute in the worker process only; this server's own policy is the default.
    settings.worker.workers = 0;
    let app = spawn_app_with(db, settings).await;
    let worker = WorkerProcess::spawn_with_env(
        &app.db,
        "worker",
        &[("SWITCHYARD_EGRESS_DENY", "127.0.0.0/8,::1")],
    );
    outbound_jobs(&app).await;
    let (base, seen) = destination("127.0.0.1", ok()).await;
    let run = get(&app, &format!("http://localhost:{}/", port(&base))).await;
    assert_eq!(run["status"], "failed", "{run}\n{}", worker.output());
    refused(&run, "the egress policy refused localhost");
    assert!(seen.lock().unwrap().is_empty());
    app.shutdown().await;
}
