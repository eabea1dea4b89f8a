//! Workflow runs end to end (api.md "Workflow runs", "Events"): steps execute as job runs on
//! the real workers, in dependency order, with templates, onFailure, cancel, resume, rerun,
//! idempotency and `workflow.run.*` events. Run on SQLite and PostgreSQL.
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const TERMINAL: &[&str] = &["succeeded", "failed", "canceled"];

async fn workflow(app: &TestApp, body: Value) -> Value {
    let (status, v) = app.post_json("/api/workflows", &body).await;
    assert!(
        status == 201 || status == 200,
        "create workflow: {status} {v}"
    );
    v["data"].clone()
}

async fn start(app: &TestApp, slug: &str, body: Value) -> Value {
    let (status, v) = app
        .post_json(&format!("/api/workflows/{slug}/run"), &body)
        .await;
    assert_eq!(status, 202, "run {slug}: {v}");
    v["data"].clone()
}

async fn steps(app: &TestApp, id: &str) -> Value {
    let (status, v) = app
        .get_json(&format!("/api/workflow-runs/{id}/steps"))
        .await;
    assert_eq!(status, 200, "steps: {v}");
    v["data"].clone()
}

fn step<'a>(detail: &'a Value, id: &str) -> &'a Value {
    detail["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stepId"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {detail}"))
}

fn ts(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("no time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

async fn wait_run(app: &TestApp, id: &str, statuses: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = app.get_json(&format!("/api/workflow-runs/{id}")).await;
        assert_eq!(status, 200, "{v}");
        if statuses.contains(&v["data"]["status"].as_str().unwrap_or_default()) {
            return v["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} never reached {statuses:?}: {}",
            steps(app, id).await
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn wait_step(app: &TestApp, id: &str, step_id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = steps(app, id).await;
        if step(&d, step_id)["status"] == status {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "step {step_id} never {status}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A diamond a → (b, c) → d of noop jobs passing values along.
fn diamond(slug: &str) -> Value {
    json!({"slug": slug, "name": "Diamond", "version": 1,
    "parametersSchema": {"type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}},
    "defaultParameters": {"n": 2},
    "steps": [
        {"id": "a", "jobSlug": "echo", "parameters": {"greeting": "hello {{ parameters.name }}",
            "n": "{{ parameters.n }}", "shared": {"fromA": "{{ run.id }}"}}},
        {"id": "b", "jobSlug": "echo", "dependsOn": ["a"], "parameters": {"n": "{{ steps.a.result.n }}"}},
        {"id": "c", "jobSlug": "echo", "dependsOn": ["a"], "parameters": {"s": "{{ shared.fromA }}"}},
        {"id": "d", "jobSlug": "echo", "dependsOn": ["b", "c"],
            "parameters": {"both": ["{{ steps.b.result.n }}", "{{ steps.c.result.s }}"],
                "text": "n={{ steps.b.result.n }}"}}
    ]})
}

#[tokio::test]
async fn diamond_runs_in_dependency_order_with_typed_templates() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    workflow(&app, diamond("diamond")).await;
    let mut events = app
        .get("/api/events?topics=workflow.run.*")
        .await
        .bytes_stream();
    let run = start(
        &app,
        "diamond",
        json!({"parameters": {"name": "ops"}, "triggeredBy": "tester"}),
    )
    .await;
    for key in [
        "id",
        "workflowDefinitionId",
        "workflowSlug",
        "workflowVersion",
        "status",
        "parameters",
        "context",
        "errorMessage",
        "currentStepId",
        "currentStepIndex",
        "metrics",
        "triggeredBy",
        "trigger",
        "startedAt",
        "completedAt",
        "durationMs",
        "createdAt",
        "updatedAt",
    ] {
        assert!(run.get(key).is_some(), "run lacks {key}: {run}");
    }
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(run["parameters"], json!({"name": "ops", "n": 2}));
    assert_eq!(run["triggeredBy"], "tester");
    assert_eq!(run["trigger"], json!({"type": "manual"}));
    let done = wait_run(&app, &id, TERMINAL).await;
    assert_eq!(done["status"], "succeeded", "{}", steps(&app, &id).await);
    assert_eq!(
        done["metrics"],
        json!({"totalSteps": 4, "completedSteps": 4})
    );
    assert!(done["durationMs"].as_i64().is_some());
    assert_eq!(done["context"]["shared"]["fromA"], json!(id));
    assert_eq!(done["context"]["steps"]["a"]["status"], "succeeded");

    let d = steps(&app, &id).await;
    let (a, b, c, dd) = (step(&d, "a"), step(&d, "b"), step(&d, "c"), step(&d, "d"));
    // Templates: whole-string expressions keep their type; embedded ones render as text.
    assert_eq!(a["input"]["greeting"], "hello ops");
    assert_eq!(a["input"]["n"], json!(2));
    assert_eq!(b["output"]["n"], json!(2));
    assert_eq!(c["output"]["s"], json!(id));
    assert_eq!(dd["output"]["both"], json!([2, id]));
    assert_eq!(dd["output"]["text"], "n=2");
    // Order: b and c start after a ends, d after both.
    for s in [b, c] {
        assert!(ts(&s["startedAt"]) >= ts(&a["completedAt"]), "{d}");
        assert!(ts(&dd["startedAt"]) >= ts(&s["completedAt"]), "{d}");
    }
    for s in [a, b, c, dd] {
        assert_eq!(s["status"], "succeeded");
        assert_eq!(s["attempt"], 1);
        let job_run = app.get_run(s["jobRunId"].as_str().unwrap()).await;
        assert_eq!(job_run["trigger"], "workflow");
        assert_eq!(job_run["workflowRunId"], json!(id));
        assert_eq!(job_run["workflowStepId"], s["stepId"]);
        assert_eq!(s["logsUrl"], job_run["logsUrl"]);
        for key in [
            "id",
            "workflowRunId",
            "stepId",
            "status",
            "attempt",
            "jobRunId",
            "input",
            "output",
            "errorMessage",
            "logsUrl",
            "metrics",
            "startedAt",
            "completedAt",
            "createdAt",
            "updatedAt",
        ] {
            assert!(s.get(key).is_some(), "step lacks {key}: {s}");
        }
    }

    // Events: pending, running, updated (with currentStepId and metrics), succeeded.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("workflow.run.succeeded") {
        let chunk = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("events in time")
            .expect("stream open")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    for ty in [
        "workflow.run.pending",
        "workflow.run.running",
        "workflow.run.updated",
    ] {
        assert!(
            seen.contains(&format!("event: {ty}")),
            "{ty} missing: {seen}"
        );
    }
    assert!(seen.contains("\"currentStepId\""), "{seen}");
    assert!(!seen.contains("job.run."), "topic filter leaked job events");

    // Lists and the workflow's page data.
    let (_, list) = app.get_json("/api/workflows/diamond/runs").await;
    assert_eq!(list["meta"]["total"], 1);
    assert_eq!(list["data"][0]["id"], json!(id));
    let (_, all) = app.get_json("/api/workflow-runs?status=succeeded").await;
    assert_eq!(all["data"][0]["id"], json!(id));
    let (_, none) = app.get_json("/api/workflow-runs?status=failed").await;
    assert_eq!(none["meta"]["total"], 0);
    let (_, wf) = app.get_json("/api/workflows/diamond").await;
    assert_eq!(wf["data"]["runs"][0]["id"], json!(id));
    app.shutdown().await;
}

#[tokio::test]
async fn bad_run_requests_list_every_problem() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    workflow(&app, diamond("diamond")).await;
    let (status, v) = app
        .post_json(
            "/api/workflows/diamond/run",
            &json!({"parameters": {"n": "x"}, "bogus": 1, "trigger": 5}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    let paths: Vec<&str> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/bogus") && paths.contains(&"/trigger"),
        "{v}"
    );
    let (status, v) = app
        .post_json(
            "/api/workflows/diamond/run",
            &json!({"parameters": {"n": "x"}}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_parameters", "{v}");
    let paths: Vec<&str> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/parameters/n"), "{v}");
    assert!(
        paths.iter().any(|p| p.starts_with("/parameters")) && paths.len() >= 2,
        "required name too: {v}"
    );
    let (status, _) = app.post_json("/api/workflows/nope/run", &json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get_json("/api/workflow-runs/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.get_json("/api/workflow-runs?status=bogus").await;
    assert_eq!(status, 400);
    app.shutdown().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_original_run_and_rerun_makes_a_new_one() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    workflow(&app, diamond("diamond")).await;
    let first = start(
        &app,
        "diamond",
        json!({"parameters": {"name": "x"}, "idempotencyKey": "k1"}),
    )
    .await;
    let again = start(
        &app,
        "diamond",
        json!({"parameters": {"name": "y"}, "idempotencyKey": "k1"}),
    )
    .await;
    assert_eq!(first["id"], again["id"]);
    let (_, list) = app.get_json("/api/workflows/diamond/runs").await;
    assert_eq!(list["meta"]["total"], 1);
    let id = first["id"].as_str().unwrap();
    wait_run(&app, id, TERMINAL).await;
    let (status, rerun) = app
        .post_json(&format!("/api/workflow-runs/{id}/rerun"), &json!({}))
        .await;
    assert_eq!(status, 202, "{rerun}");
    assert_ne!(rerun["data"]["id"], first["id"]);
    assert_eq!(rerun["data"]["parameters"], first["parameters"]);
    let done = wait_run(&app, rerun["data"]["id"].as_str().unwrap(), TERMINAL).await;
    assert_eq!(done["status"], "succeeded");
    app.shutdown().await;
}

#[tokio::test]
async fn halt_fails_the_run_and_resume_keeps_succeeded_steps() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    // Fails until its third attempt: the first run fails (one attempt), the resume succeeds
    // on attempt 2 of the step... so give the step two attempts per job run.
    app.job(
        "flaky",
        "builtin:fail",
        json!({"retryPolicy": {"maxAttempts": 1, "strategy": "none"}}),
    )
    .await;
    workflow(
        &app,
        json!({"slug": "halting", "name": "Halting", "steps": [
            {"id": "a", "jobSlug": "echo", "parameters": {"v": 1}},
            {"id": "bad", "jobSlug": "flaky", "dependsOn": ["a"],
                "parameters": {"message": "boom", "succeedOnAttempt": 3},
                "retryPolicy": {"maxAttempts": 2, "strategy": "fixed", "initialDelayMs": 10}},
            {"id": "slow", "jobSlug": "echo", "dependsOn": ["a"], "parameters": {}},
            {"id": "after", "jobSlug": "echo", "dependsOn": ["bad", "slow"], "parameters": {}}
        ]}),
    )
    .await;
    let run = start(&app, "halting", json!({})).await;
    let id = run["id"].as_str().unwrap();
    let failed = wait_run(&app, id, TERMINAL).await;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["errorMessage"].as_str().unwrap().contains("bad"),
        "{failed}"
    );
    assert!(
        failed["errorMessage"].as_str().unwrap().contains("boom"),
        "{failed}"
    );
    let d = steps(&app, id).await;
    assert_eq!(step(&d, "a")["status"], "succeeded");
    assert_eq!(step(&d, "bad")["status"], "failed");
    assert_eq!(step(&d, "bad")["attempt"], 2, "{d}");
    assert_eq!(step(&d, "after")["status"], "canceled", "{d}");
    let a_job_run = step(&d, "a")["jobRunId"].clone();
    let attempts = step(&d, "bad")["metrics"]["attempts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(attempts, 2, "{d}");

    // Resume: same run id; `a` keeps its result; `bad` continues its attempt count (3rd succeeds).
    let (status, resumed) = app
        .post_json(&format!("/api/workflow-runs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 202, "{resumed}");
    assert_eq!(resumed["data"]["id"], json!(id));
    let done = wait_run(&app, id, TERMINAL).await;
    assert_eq!(done["status"], "succeeded", "{}", steps(&app, id).await);
    assert_eq!(done["errorMessage"], Value::Null);
    let d = steps(&app, id).await;
    assert_eq!(
        step(&d, "a")["jobRunId"],
        a_job_run,
        "a succeeded step never runs again"
    );
    assert_eq!(step(&d, "bad")["attempt"], 3, "{d}");
    assert_eq!(step(&d, "after")["status"], "succeeded");
    // Retrying a succeeded run, or canceling a finished one, is a conflict.
    let (status, _) = app
        .post_json(&format!("/api/workflow-runs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 409);
    let (status, _) = app
        .patch_json(
            &format!("/api/workflow-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 409);
    app.shutdown().await;
}

#[tokio::test]
async fn continue_skips_dependents_while_other_branches_finish() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    app.job(
        "broken",
        "builtin:fail",
        json!({"retryPolicy": {"maxAttempts": 1, "strategy": "none"}}),
    )
    .await;
    workflow(&app, json!({"slug": "branches", "name": "Branches", "steps": [
        {"id": "bad", "jobSlug": "broken", "parameters": {"message": "nope"}, "onFailure": "continue"},
        {"id": "below", "jobSlug": "echo", "dependsOn": ["bad"], "parameters": {}},
        {"id": "further", "jobSlug": "echo", "dependsOn": ["below"], "parameters": {}},
        {"id": "other", "jobSlug": "echo", "parameters": {}},
        {"id": "missing", "jobSlug": "echo", "dependsOn": ["other"],
            "parameters": {"x": "{{ steps.other.result.absent }}"}, "onFailure": "continue"}
    ]})).await;
    let run = start(&app, "branches", json!({})).await;
    let id = run["id"].as_str().unwrap();
    let done = wait_run(&app, id, TERMINAL).await;
    let d = steps(&app, id).await;
    assert_eq!(done["status"], "failed", "{d}");
    assert_eq!(step(&d, "bad")["status"], "failed");
    assert_eq!(step(&d, "below")["status"], "skipped");
    assert_eq!(step(&d, "further")["status"], "skipped");
    assert_eq!(step(&d, "other")["status"], "succeeded");
    // A template naming a missing value is a clear step error, not a silent null.
    let missing = step(&d, "missing");
    assert_eq!(missing["status"], "failed");
    assert!(
        missing["errorMessage"].as_str().unwrap().contains("absent"),
        "{missing}"
    );
    assert_eq!(missing["jobRunId"], Value::Null);
    assert_eq!(done["metrics"]["completedSteps"], 5);
    app.shutdown().await;
}

#[tokio::test]
async fn cancel_stops_running_steps_and_pending_ones() {
    let app = spawn_app().await;
    app.job("nap", "builtin:sleep", json!({})).await;
    app.job("echo", "builtin:noop", json!({})).await;
    workflow(
        &app,
        json!({"slug": "sleepy", "name": "Sleepy", "steps": [
            {"id": "nap", "jobSlug": "nap", "parameters": {"durationMs": 20000}},
            {"id": "later", "jobSlug": "echo", "dependsOn": ["nap"], "parameters": {}}
        ]}),
    )
    .await;
    let run = start(&app, "sleepy", json!({})).await;
    let id = run["id"].as_str().unwrap();
    let d = wait_step(&app, id, "nap", "running").await;
    let job_run = step(&d, "nap")["jobRunId"].as_str().unwrap().to_string();
    let (status, bad) = app
        .patch_json(
            &format!("/api/workflow-runs/{id}"),
            &json!({"status": "running"}),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    let (status, canceled) = app
        .patch_json(
            &format!("/api/workflow-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["data"]["status"], "canceled");
    let jr = app.wait_terminal(&job_run).await;
    assert_eq!(jr["status"], "canceled");
    let d = steps(&app, id).await;
    assert_eq!(step(&d, "nap")["status"], "canceled");
    assert_eq!(step(&d, "later")["status"], "canceled");
    assert_eq!(step(&d, "later")["jobRunId"], Value::Null);
    // Stays canceled; a resume then runs it to the end... after shortening the nap is not
    // possible (the definition is the run's snapshot), so only check the 202 and status.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wait_run(&app, id, TERMINAL).await["status"], "canceled");
    app.shutdown().await;
}

#[tokio::test]
async fn wide_fan_out_and_fan_in_complete() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    let mut steps_doc = vec![json!({"id": "start", "jobSlug": "echo", "parameters": {}})];
    let mut mids = Vec::new();
    for i in 0..20 {
        let sid = format!("m{i}");
        steps_doc.push(json!({"id": sid, "jobSlug": "echo", "dependsOn": ["start"],
            "parameters": {"i": i, "shared": {format!("k{i}"): i}}}));
        mids.push(sid);
    }
    steps_doc.push(json!({"id": "end", "jobSlug": "echo", "dependsOn": mids,
        "parameters": {"k7": "{{ shared.k7 }}", "k19": "{{ shared.k19 }}"}}));
    workflow(
        &app,
        json!({"slug": "fan", "name": "Fan", "steps": steps_doc}),
    )
    .await;
    let run = start(&app, "fan", json!({})).await;
    let id = run["id"].as_str().unwrap();
    let done = wait_run(&app, id, TERMINAL).await;
    assert_eq!(done["status"], "succeeded", "{}", steps(&app, id).await);
    let d = steps(&app, id).await;
    assert_eq!(step(&d, "end")["output"], json!({"k7": 7, "k19": 19}));
    assert_eq!(done["metrics"]["completedSteps"], 22);
    app.shutdown().await;
}

/// A real HTTP service: `/health` answers 200; `POST /hooks/build` records the request's
/// Authorization header and body and answers `{"ok": true, "ticket": 42}`.
async fn notifier() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
) {
    use axum::{
        Json, Router,
        http::HeaderMap,
        routing::{get, post},
    };
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/hooks/build",
            post(move |headers: HeaderMap, Json(body): Json<Value>| {
                let record = record.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    record.lock().unwrap().push((auth, body));
                    Json(json!({"ok": true, "ticket": 42}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, seen)
}

#[tokio::test]
async fn service_step_waits_for_health_resolves_secrets_and_stores_the_response() {
    let db = crate::helpers::TestDb::new().await;
    let mut settings = crate::helpers::test_settings(&db);
    // Steps execute in a separate `switchyard worker` process that holds the secret.
    settings.worker.workers = 0;
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let app = crate::helpers::spawn_app_with(db, settings).await;
    // Started after the app migrated the database.
    let worker = crate::helpers::WorkerProcess::spawn_with_env(
        &app.db,
        "worker",
        &[
            ("SY_TEST_NOTIFIER_TOKEN", &secret),
            // env references read only allow-listed variables.
            ("SWITCHYARD_SECRET_ENV_ALLOW", "SY_TEST_*"),
        ],
    );
    let mut events = app.get("/api/events").await.bytes_stream();
    let (base, seen) = notifier().await;
    app.job("echo", "builtin:noop", json!({})).await;
    let (status, v) = app
        .post_json(
            "/api/services",
            &json!({"slug": "notifier", "displayName": "Notifier",
        "kind": "http", "baseUrl": base, "healthPath": "/health"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = app
        .patch_json("/api/services/notifier", &json!({"status": "unhealthy"}))
        .await;
    assert_eq!(status, 200, "{v}");
    workflow(&app, json!({"slug": "notify", "name": "Notify", "steps": [
        {"id": "a", "jobSlug": "echo", "parameters": {"commit": "abc123"}},
        {"id": "notify", "type": "service", "serviceSlug": "notifier", "dependsOn": ["a"],
            "requireHealthy": true, "captureResponse": true, "storeResponseAs": "notifyResponse",
            "retryPolicy": {"maxAttempts": 10, "strategy": "fixed", "initialDelayMs": 300},
            "request": {"method": "POST", "path": "/hooks/build", "query": {"v": 1},
                "headers": {"Authorization": {"secret": {"source": "env", "key": "SY_TEST_NOTIFIER_TOKEN"}, "prefix": "Bearer "}},
                "body": {"commit": "{{ steps.a.result.commit }}"}}},
        {"id": "after", "jobSlug": "echo", "dependsOn": ["notify"],
            "parameters": {"ticket": "{{ shared.notifyResponse.body.ticket }}"}}
    ]})).await;
    let run = start(&app, "notify", json!({})).await;
    let id = run["id"].as_str().unwrap().to_string();
    // While the service is unhealthy the step waits (retryable attempts), nothing is sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = steps(&app, &id).await;
        let n = step(&d, "notify");
        if n["attempt"].as_i64().unwrap_or(0) >= 2 {
            let attempts = n["metrics"]["attempts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                attempts.iter().any(|a| a["errorMessage"]
                    .as_str()
                    .is_some_and(|e| e.contains("unhealthy"))),
                "{d}"
            );
            assert_eq!(n["status"], "running", "{d}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never retried: {d}\n{}",
            worker.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.lock().unwrap().is_empty());
    app.patch_json("/api/services/notifier", &json!({"status": "healthy"}))
        .await;
    let done = wait_run(&app, &id, TERMINAL).await;
    let d = steps(&app, &id).await;
    assert_eq!(done["status"], "succeeded", "{d}\n{}", worker.output());
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, format!("Bearer {secret}"));
    assert_eq!(calls[0].1, json!({"commit": "abc123"}));
    let n = step(&d, "notify");
    assert_eq!(
        n["output"]["response"]["body"],
        json!({"ok": true, "ticket": 42})
    );
    assert_eq!(n["metrics"]["status"], 200);
    assert_eq!(n["metrics"]["baseUrl"], json!(base));
    assert!(n["metrics"]["latencyMs"].as_u64().is_some(), "{n}");
    assert_eq!(step(&d, "after")["output"], json!({"ticket": 42}));
    assert_eq!(done["context"]["shared"]["notifyResponse"]["status"], 200);
    // The secret's value appears nowhere: responses, job runs, logs, events, worker output.
    let job_run_id = n["jobRunId"].as_str().unwrap();
    let mut everything = d.to_string();
    everything.push_str(
        &app.get_json(&format!("/api/job-runs/{job_run_id}"))
            .await
            .1
            .to_string(),
    );
    everything.push_str(&app.get_json("/api/job-runs?limit=100").await.1.to_string());
    everything.push_str(&app.get_json("/api/workflows/notify").await.1.to_string());
    let log = app.logs(job_run_id).await;
    assert!(
        log.contains("resolved secret SY_TEST_NOTIFIER_TOKEN"),
        "{log}"
    );
    everything.push_str(&log);
    let mut stream = String::new();
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_millis(300), events.next()).await
    {
        stream.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(stream.contains("workflow.run.succeeded"), "{stream}");
    everything.push_str(&stream);
    everything.push_str(&worker.output());
    assert!(!everything.contains(&secret), "the secret leaked");
    // The job service steps execute as cannot go while a workflow has service steps.
    let (status, v) = app
        .send_json(
            reqwest::Method::DELETE,
            "/api/jobs/service-call",
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    app.shutdown().await;
}

#[tokio::test]
async fn killed_worker_mid_run_the_run_resumes_without_repeating_succeeded_steps() {
    let db = crate::helpers::TestDb::new().await;
    let mut settings = crate::helpers::test_settings(&db);
    settings.worker.workers = 0;
    let app = crate::helpers::spawn_app_with(db, settings).await;
    let mut first = crate::helpers::WorkerProcess::spawn(&app.db, "first");
    app.job("echo", "builtin:noop", json!({})).await;
    app.job(
        "nap",
        "builtin:sleep",
        json!({"retryPolicy": {"maxAttempts": 2, "strategy": "none"}}),
    )
    .await;
    workflow(&app, json!({"slug": "crashy", "name": "Crashy", "steps": [
        {"id": "a", "jobSlug": "echo", "parameters": {"v": 1}},
        {"id": "nap", "jobSlug": "nap", "dependsOn": ["a"], "parameters": {"durationMs": 1500}},
        {"id": "z", "jobSlug": "echo", "dependsOn": ["nap"], "parameters": {"after": "{{ steps.nap.result.sleptMs }}"}}
    ]})).await;
    let run = start(&app, "crashy", json!({})).await;
    let id = run["id"].as_str().unwrap().to_string();
    let d = wait_step(&app, &id, "nap", "running").await;
    let a_job_run = step(&d, "a")["jobRunId"].clone();
    first.kill();
    // A new worker process takes over once the lease expires.
    let second = crate::helpers::WorkerProcess::spawn(&app.db, "second");
    let done = wait_run(&app, &id, TERMINAL).await;
    let d = steps(&app, &id).await;
    assert_eq!(done["status"], "succeeded", "{d}\n{}", second.output());
    assert_eq!(step(&d, "a")["jobRunId"], a_job_run);
    assert_eq!(
        step(&d, "a")["attempt"],
        1,
        "a succeeded step never runs again"
    );
    let nap = step(&d, "nap");
    assert_eq!(
        nap["attempt"], 2,
        "the interrupted step ran again as a new attempt: {d}"
    );
    let attempts = nap["metrics"]["attempts"].as_array().unwrap();
    assert!(
        attempts[0]["errorMessage"]
            .as_str()
            .is_some_and(|e| e.contains("worker lost")),
        "{d}"
    );
    assert_eq!(step(&d, "z")["output"], json!({"after": 1500}));
    app.shutdown().await;
}

#[tokio::test]
async fn schedule_and_event_triggers_start_runs() {
    let app = spawn_app().await;
    app.job("echo", "builtin:noop", json!({})).await;
    workflow(&app, json!({"slug": "ticker", "name": "Ticker",
        "parametersSchema": {"type": "object", "properties": {"from": {"type": "string"}}},
        "steps": [{"id": "a", "jobSlug": "echo", "parameters": {"from": "{{ parameters.from }}"}}],
        "triggers": [{"type": "schedule", "options": {"cron": "* * * * * *", "parameters": {"from": "cron"}}}]})).await;
    workflow(
        &app,
        json!({"slug": "follower", "name": "Follower",
        "steps": [{"id": "a", "jobSlug": "echo", "parameters": {}}],
        "triggers": [{"type": "event", "options": {"event": "workflow.run.succeeded",
            "filter": {"workflowSlug": "ticker"}}}]}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, ticks) = app.get_json("/api/workflows/ticker/runs").await;
        let (_, follows) = app
            .get_json("/api/workflows/follower/runs?status=succeeded")
            .await;
        if ticks["meta"]["total"].as_u64() >= Some(2)
            && follows["meta"]["total"].as_u64() >= Some(1)
        {
            let tick = &ticks["data"][0];
            assert_eq!(tick["trigger"]["type"], "schedule", "{tick}");
            assert_eq!(tick["parameters"]["from"], "cron");
            assert_eq!(tick["triggeredBy"], "scheduler");
            let follow = &follows["data"][0];
            assert_eq!(follow["trigger"]["type"], "event", "{follow}");
            assert_eq!(follow["trigger"]["event"], "workflow.run.succeeded");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "triggers did not fire: {ticks} {follows}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each fire time starts one run: distinct fire times, no duplicates.
    app.patch_json("/api/workflows/ticker", &json!({"triggers": []}))
        .await;
    let (_, ticks) = app.get_json("/api/workflows/ticker/runs?limit=100").await;
    let mut fired: Vec<String> = ticks["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trigger"]["firedAt"].as_str().unwrap().to_string())
        .collect();
    let n = fired.len();
    fired.sort();
    fired.dedup();
    assert_eq!(fired.len(), n, "a fire time started two runs");
    app.shutdown().await;
}
