//! The workflow-engine contract's conformance suite (issue 17): the same scenarios, through the
//! API, for every engine. A run's rows follow its engine's execution, so the API shows the
//! same outcome whichever engine ran it: native (SQLite and PostgreSQL, as this suite runs on
//! both), memory (the in-memory engine, on both databases) and, where a Temporal server is
//! available (`tests/api/temporal.rs`), temporal.
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, spawn_app_with, test_settings};

/// An app with the memory engine enabled besides the native one.
pub async fn app_with_memory() -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.providers.enable_memory_provider = true;
    spawn_app_with(db, settings).await
}

const TERMINAL: &[&str] = &["succeeded", "failed", "canceled"];

async fn define(app: &TestApp, provider: &str, mut body: Value) {
    body["provider"] = json!(provider);
    body["name"] = body["slug"].clone();
    body["version"] = json!(1);
    let (status, v) = app.post_json("/api/workflows", &body).await;
    assert!(
        status == 201 || status == 200,
        "create workflow: {status} {v}"
    );
}

async fn start(app: &TestApp, slug: &str, parameters: Value) -> Value {
    let (status, v) = app
        .post_json(
            &format!("/api/workflows/{slug}/run"),
            &json!({"parameters": parameters}),
        )
        .await;
    assert_eq!(status, 202, "run {slug}: {v}");
    v["data"].clone()
}

pub async fn detail(app: &TestApp, id: &str) -> Value {
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

/// The run and its steps once the run reached one of `statuses`.
pub async fn wait_run(app: &TestApp, id: &str, statuses: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = detail(app, id).await;
        if statuses.contains(&d["run"]["status"].as_str().unwrap_or_default()) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} never reached {statuses:?}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn wait_step(app: &TestApp, id: &str, step_id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = detail(app, id).await;
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

fn statuses(d: &Value) -> Vec<(String, String)> {
    d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stepId"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Every job the scenarios use.
async fn jobs(app: &TestApp) {
    app.job("echo", "builtin:noop", json!({})).await;
    app.job("nap", "builtin:sleep", json!({})).await;
    app.job("flaky", "builtin:fail", json!({})).await;
}

/// A diamond with typed templates: values keep their JSON types, strings render as text, a
/// step's `shared` result merges into the run's context.
pub async fn diamond(app: &TestApp, provider: &str) {
    jobs(app).await;
    define(app, provider, json!({"slug": "diamond",
        "parametersSchema": {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}},
        "defaultParameters": {"n": 2},
        "steps": [
            {"id": "a", "jobSlug": "echo", "parameters": {"greeting": "hello {{ parameters.name }}",
                "n": "{{ parameters.n }}", "shared": {"fromA": "{{ run.id }}"}}},
            {"id": "b", "jobSlug": "echo", "dependsOn": ["a"], "parameters": {"n": "{{ steps.a.result.n }}"}},
            {"id": "c", "jobSlug": "echo", "dependsOn": ["a"], "parameters": {"s": "{{ shared.fromA }}"}},
            {"id": "d", "jobSlug": "echo", "dependsOn": ["b", "c"],
                "parameters": {"both": ["{{ steps.b.result.n }}", "{{ steps.c.result.s }}"],
                    "text": "n={{ steps.b.result.n }}"}}]})).await;
    let run = start(app, "diamond", json!({"name": "ops"})).await;
    assert_eq!(run["provider"], provider);
    let id = run["id"].as_str().unwrap();
    let d = wait_run(app, id, TERMINAL).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d}");
    assert_eq!(step(&d, "a")["output"]["greeting"], "hello ops");
    assert_eq!(step(&d, "b")["output"]["n"], json!(2), "typed: {d}");
    assert_eq!(step(&d, "c")["output"]["s"], json!(id));
    assert_eq!(step(&d, "d")["output"]["both"], json!([2, id]));
    assert_eq!(step(&d, "d")["output"]["text"], "n=2");
    assert_eq!(d["run"]["context"]["shared"]["fromA"], json!(id));
    assert_eq!(d["run"]["metrics"]["completedSteps"], 4);
    // b and c started only after a ended; d after both.
    let ended = |s: &str| step(&d, s)["completedAt"].as_str().unwrap().to_string();
    let started = |s: &str| step(&d, s)["startedAt"].as_str().unwrap().to_string();
    assert!(started("b") >= ended("a") && started("c") >= ended("a"));
    assert!(started("d") >= ended("b") && started("d") >= ended("c"));
    // Every step's job run is a real job run of the run, with its logs.
    for s in ["a", "b", "c", "d"] {
        let jr = app.get_run(step(&d, s)["jobRunId"].as_str().unwrap()).await;
        assert_eq!(jr["workflowRunId"], json!(id));
        assert_eq!(jr["workflowStepId"], json!(s));
        assert_eq!(jr["status"], "succeeded");
    }
}

/// 1 -> 20 -> 1.
pub async fn fan_out(app: &TestApp, provider: &str) {
    jobs(app).await;
    let mut steps = vec![json!({"id": "root", "jobSlug": "echo", "parameters": {"k": 1}})];
    let mut middle = Vec::new();
    for i in 0..20 {
        let sid = format!("m{i}");
        steps.push(json!({"id": sid, "jobSlug": "echo", "dependsOn": ["root"],
            "parameters": {"i": i, "k": "{{ steps.root.result.k }}"}}));
        middle.push(sid);
    }
    steps.push(json!({"id": "sink", "jobSlug": "echo", "dependsOn": middle,
        "parameters": {"last": "{{ steps.m19.result.i }}"}}));
    define(app, provider, json!({"slug": "fan", "steps": steps})).await;
    let run = start(app, "fan", json!({})).await;
    let d = wait_run(app, run["id"].as_str().unwrap(), TERMINAL).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d}");
    assert_eq!(step(&d, "sink")["output"]["last"], json!(19));
    assert_eq!(d["run"]["metrics"]["completedSteps"], 22);
}

/// A step that fails once and succeeds on its retry; one that fails every attempt.
pub async fn retries(app: &TestApp, provider: &str) {
    jobs(app).await;
    let retry = json!({"maxAttempts": 3, "strategy": "fixed", "initialDelayMs": 100});
    define(
        app,
        provider,
        json!({"slug": "retrying", "steps": [
        {"id": "second-time", "jobSlug": "flaky", "parameters": {"succeedOnAttempt": 2},
            "retryPolicy": retry},
        {"id": "never", "jobSlug": "flaky", "parameters": {"message": "nope"},
            "retryPolicy": {"maxAttempts": 2, "strategy": "fixed", "initialDelayMs": 100},
            "onFailure": "continue"},
        {"id": "after-never", "jobSlug": "echo", "dependsOn": ["never"]}]}),
    )
    .await;
    let run = start(app, "retrying", json!({})).await;
    let d = wait_run(app, run["id"].as_str().unwrap(), TERMINAL).await;
    assert_eq!(
        statuses(&d),
        pairs(&[
            ("second-time", "succeeded"),
            ("never", "failed"),
            ("after-never", "skipped")
        ]),
        "{d}"
    );
    assert_eq!(step(&d, "second-time")["attempt"], 2, "{d}");
    assert_eq!(step(&d, "second-time")["output"]["attempt"], 2);
    assert_eq!(step(&d, "never")["attempt"], 2, "{d}");
    assert!(
        step(&d, "never")["errorMessage"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    // Nothing halted the run: `continue` let it end as failed with the other branch done.
    assert_eq!(d["run"]["status"], "failed");
    let jr = app
        .get_run(step(&d, "never")["jobRunId"].as_str().unwrap())
        .await;
    assert_eq!(jr["attempt"], 2);
    assert_eq!(jr["status"], "failed");
}

/// `halt` fails the run and cancels what has not finished; `continue` skips dependents while
/// other branches finish.
pub async fn halt_and_continue(app: &TestApp, provider: &str) {
    jobs(app).await;
    define(
        app,
        provider,
        json!({"slug": "halting", "steps": [
        {"id": "boom", "jobSlug": "flaky", "parameters": {"message": "boom"}},
        {"id": "slow", "jobSlug": "nap", "parameters": {"durationMs": 30000}},
        {"id": "after", "jobSlug": "echo", "dependsOn": ["boom"]}]}),
    )
    .await;
    let run = start(app, "halting", json!({})).await;
    let d = wait_run(app, run["id"].as_str().unwrap(), TERMINAL).await;
    assert_eq!(d["run"]["status"], "failed", "{d}");
    assert!(
        d["run"]["errorMessage"].as_str().unwrap().contains("boom"),
        "{d}"
    );
    assert_eq!(step(&d, "boom")["status"], "failed");
    assert_eq!(step(&d, "slow")["status"], "canceled", "{d}");
    assert_ne!(step(&d, "after")["status"], "succeeded");
    // The halt cancels the job run right after it records the run's end.
    let slow = app
        .wait_for_status(
            step(&d, "slow")["jobRunId"].as_str().unwrap(),
            &["canceled"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(slow["status"], "canceled");

    define(app, provider, json!({"slug": "continuing", "steps": [
        {"id": "boom", "jobSlug": "flaky", "parameters": {"message": "boom"}, "onFailure": "continue"},
        {"id": "skipped", "jobSlug": "echo", "dependsOn": ["boom"]},
        {"id": "other", "jobSlug": "nap", "parameters": {"durationMs": 300}},
        {"id": "after-other", "jobSlug": "echo", "dependsOn": ["other"]}]})).await;
    let run = start(app, "continuing", json!({})).await;
    let d = wait_run(app, run["id"].as_str().unwrap(), TERMINAL).await;
    assert_eq!(
        statuses(&d),
        pairs(&[
            ("boom", "failed"),
            ("skipped", "skipped"),
            ("other", "succeeded"),
            ("after-other", "succeeded")
        ]),
        "{d}"
    );
}

/// A step over its `timeoutMs` fails as timed out.
pub async fn step_timeout(app: &TestApp, provider: &str) {
    jobs(app).await;
    define(
        app,
        provider,
        json!({"slug": "timing-out", "steps": [
        {"id": "late", "jobSlug": "nap", "parameters": {"durationMs": 30000}, "timeoutMs": 1000}]}),
    )
    .await;
    let run = start(app, "timing-out", json!({})).await;
    let d = wait_run(app, run["id"].as_str().unwrap(), TERMINAL).await;
    assert_eq!(d["run"]["status"], "failed", "{d}");
    let late = step(&d, "late");
    assert_eq!(late["status"], "failed");
    assert!(
        late["errorMessage"].as_str().unwrap().contains("timed out"),
        "{d}"
    );
    let jr = app.get_run(late["jobRunId"].as_str().unwrap()).await;
    assert_eq!(jr["status"], "expired");
}

/// A workflow over its `timeoutMs` fails as timed out; what has not finished is canceled.
pub async fn workflow_timeout(app: &TestApp, provider: &str) {
    jobs(app).await;
    define(app, provider, json!({"slug": "slow-workflow", "timeoutMs": 1500, "steps": [
        {"id": "quick", "jobSlug": "echo"},
        {"id": "long", "jobSlug": "nap", "dependsOn": ["quick"], "parameters": {"durationMs": 30000}},
        {"id": "never", "jobSlug": "echo", "dependsOn": ["long"]}]}))
    .await;
    let (status, v) = app.get_json("/api/workflows/slow-workflow").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["workflow"]["timeoutMs"], 1500, "{v}");
    let run = start(app, "slow-workflow", json!({})).await;
    let id = run["id"].as_str().unwrap();
    let d = wait_run(app, id, TERMINAL).await;
    assert_eq!(d["run"]["status"], "failed", "{d}");
    assert!(
        d["run"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("timed out after 1500 ms"),
        "{d}"
    );
    assert_eq!(
        statuses(&d),
        pairs(&[
            ("quick", "succeeded"),
            ("long", "canceled"),
            ("never", "canceled")
        ]),
        "{d}"
    );
    let took = d["run"]["durationMs"].as_i64().unwrap();
    assert!(
        (1500..15_000).contains(&took),
        "timed out in time: {took} ms"
    );
    let long = app
        .wait_for_status(
            step(&d, "long")["jobRunId"].as_str().unwrap(),
            &["canceled"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(long["status"], "canceled");
}

/// Cancel while a step runs: the run and its unfinished steps end canceled, the running job
/// run stops.
pub async fn cancel_running(app: &TestApp, provider: &str) {
    jobs(app).await;
    define(
        app,
        provider,
        json!({"slug": "cancelable", "steps": [
        {"id": "slow", "jobSlug": "nap", "parameters": {"durationMs": 30000}},
        {"id": "next", "jobSlug": "echo", "dependsOn": ["slow"]}]}),
    )
    .await;
    let run = start(app, "cancelable", json!({})).await;
    let id = run["id"].as_str().unwrap();
    let d = wait_step(app, id, "slow", "running").await;
    let jr_id = step(&d, "slow")["jobRunId"].as_str().unwrap().to_string();
    app.wait_for_status(&jr_id, &["running"], Duration::from_secs(30))
        .await;
    let (status, v) = app
        .patch_json(
            &format!("/api/workflow-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["status"], "canceled", "{v}");
    let d = wait_run(app, id, TERMINAL).await;
    assert_eq!(
        statuses(&d),
        pairs(&[("slow", "canceled"), ("next", "canceled")]),
        "{d}"
    );
    let jr = app
        .wait_for_status(&jr_id, &["canceled"], Duration::from_secs(30))
        .await;
    assert_eq!(jr["status"], "canceled");
    // A finished run cannot be canceled again.
    let (status, _) = app
        .patch_json(
            &format!("/api/workflow-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 409);
}

/// Retry-from-failure keeps the succeeded steps and continues the failed one's attempt count;
/// rerun starts a new run with the same parameters.
pub async fn resume_and_rerun(app: &TestApp, provider: &str) {
    jobs(app).await;
    define(
        app,
        provider,
        json!({"slug": "resumable", "steps": [
        {"id": "first", "jobSlug": "echo", "parameters": {"p": "{{ parameters.p }}"}},
        {"id": "second", "jobSlug": "flaky", "dependsOn": ["first"],
            "parameters": {"succeedOnAttempt": 2}},
        {"id": "third", "jobSlug": "echo", "dependsOn": ["second"],
            "parameters": {"a": "{{ steps.second.result.attempt }}"}}]}),
    )
    .await;
    let run = start(app, "resumable", json!({"p": 7})).await;
    let id = run["id"].as_str().unwrap();
    let d = wait_run(app, id, TERMINAL).await;
    assert_eq!(d["run"]["status"], "failed", "{d}");
    let first_job_run = step(&d, "first")["jobRunId"].clone();
    let (status, v) = app
        .post_json(&format!("/api/workflow-runs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    let d = wait_run(app, id, TERMINAL).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d}");
    assert_eq!(step(&d, "first")["jobRunId"], first_job_run, "kept");
    assert_eq!(step(&d, "second")["attempt"], 2);
    assert_eq!(step(&d, "third")["output"]["a"], json!(2));
    // Only failed or canceled runs resume.
    let (status, _) = app
        .post_json(&format!("/api/workflow-runs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 409);

    let (status, v) = app
        .post_json(&format!("/api/workflow-runs/{id}/rerun"), &json!({}))
        .await;
    assert!(status == 200 || status == 202, "{status} {v}");
    let again = v["data"]["id"].as_str().unwrap().to_string();
    assert_ne!(again, id);
    assert_eq!(v["data"]["provider"], provider);
    let d = wait_run(app, &again, TERMINAL).await;
    assert_eq!(d["run"]["parameters"]["p"], json!(7));
    assert_eq!(
        d["run"]["status"], "failed",
        "a new run starts attempts over: {d}"
    );
}

/// A secret resolves for the step and appears nowhere: run, steps, job runs, logs.
pub async fn secrets(app: &TestApp, provider: &str) {
    jobs(app).await;
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let (status, v) = app
        .send_json(
            reqwest::Method::PUT,
            "/api/secrets/CONFORMANCE_TOKEN",
            &json!({"value": secret}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {v}");
    define(app, provider, json!({"slug": "secretive", "steps": [
        {"id": "use", "jobSlug": "echo",
            "parameters": {"token": {"secret": {"source": "store", "key": "CONFORMANCE_TOKEN"}}}}]}))
    .await;
    let run = start(app, "secretive", json!({})).await;
    let id = run["id"].as_str().unwrap();
    let d = wait_run(app, id, TERMINAL).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d}");
    let jr_id = step(&d, "use")["jobRunId"].as_str().unwrap().to_string();
    let jr = app.get_run(&jr_id).await;
    let logs = app.logs(&jr_id).await;
    assert!(
        logs.contains("CONFORMANCE_TOKEN"),
        "the resolution is logged: {logs}"
    );
    let everything = format!("{d}{jr}{logs}");
    assert!(
        !everything.contains(&secret),
        "the secret leaked: {everything}"
    );
}

/// Validation refuses an engine this server does not run, naming those it does.
pub async fn unknown_provider_is_refused(app: &TestApp) {
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "nowhere", "name": "Nowhere", "version": 1, "provider": "airflow",
                "steps": [{"id": "a", "jobSlug": "echo"}]}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("/provider") && text.contains("\\\"native\\\""),
        "{v}"
    );
}

macro_rules! conformance {
    ($module:ident, $provider:literal) => {
        conformance!($module, $provider, app_with_memory);
    };
    ($module:ident, $provider:literal, $app:path) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn diamond_with_typed_templates() {
                let app = $app().await;
                diamond(&app, $provider).await;
            }

            #[tokio::test]
            async fn fan_out_1_20_1() {
                let app = $app().await;
                fan_out(&app, $provider).await;
            }

            #[tokio::test]
            async fn failing_step_with_retries() {
                let app = $app().await;
                retries(&app, $provider).await;
            }

            #[tokio::test]
            async fn halt_and_continue_on_failure() {
                let app = $app().await;
                halt_and_continue(&app, $provider).await;
            }

            #[tokio::test]
            async fn step_timeout_fails_the_step() {
                let app = $app().await;
                step_timeout(&app, $provider).await;
            }

            #[tokio::test]
            async fn workflow_timeout_fails_the_run() {
                let app = $app().await;
                workflow_timeout(&app, $provider).await;
            }

            #[tokio::test]
            async fn cancel_while_running() {
                let app = $app().await;
                cancel_running(&app, $provider).await;
            }

            #[tokio::test]
            async fn retry_from_failure_and_rerun() {
                let app = $app().await;
                resume_and_rerun(&app, $provider).await;
            }

            #[tokio::test]
            async fn secrets_resolve_and_never_leak() {
                let app = $app().await;
                secrets(&app, $provider).await;
            }
        }
    };
}

conformance!(native, "native");
conformance!(memory, "memory");
conformance!(temporal, "temporal", crate::temporal::app_with_temporal);

#[tokio::test]
async fn a_provider_the_server_does_not_run_is_refused() {
    let app = app_with_memory().await;
    app.job("echo", "builtin:noop", json!({})).await;
    unknown_provider_is_refused(&app).await;
}
