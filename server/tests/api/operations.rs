//! Operations (api.md "Operations"): `GET /metrics` (Prometheus text, or the page for browsers),
//! `GET /api/metrics`, JSON logs of the real binary, and workflow failure alerts delivered to a
//! real local HTTP receiver. Run on SQLite and PostgreSQL.
use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::{Value, json};
use server::{Application, db::Database, store::Store};

use crate::helpers::{TestApp, TestDb, spawn_app, spawn_app_with, test_settings};

// ---- Prometheus text: a strict reader ----

/// Parses the text exposition format strictly: every line is a `# HELP`, a `# TYPE` or a
/// sample of a declared family, label values quoted, values numbers. Returns the samples as
/// `name{labels}` (labels as written) -> value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let is_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(is_name(name), "bad HELP line: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(is_name(name), "bad TYPE line: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE line: {line}"
            );
            assert!(parts.next().is_none(), "bad TYPE line: {line}");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "unexpected line: {line:?}"
        );
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, Some(l)),
            None => (series, None),
        };
        assert!(is_name(name), "bad metric name in {line}");
        if let Some(labels) = labels {
            let body = labels
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels: {line}"));
            // k="v" pairs separated by commas; values may contain escaped quotes.
            let mut rest = body;
            while !rest.is_empty() {
                let (k, after) = rest
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line}"));
                assert!(is_name(k), "bad label name {k} in {line}");
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated label value in {line}"));
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample of an undeclared family: {line}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse_exposition(&res.text().await.unwrap())
}

/// Scrapes until `pred` holds (the database figures are cached for a second).
async fn scrape_until(
    app: &TestApp,
    what: &str,
    pred: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let m = scrape(app).await;
        if pred(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never held: {m:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics_json_until(app: &TestApp, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, v) = app.get_json("/api/metrics").await;
        assert_eq!(status, 200, "{v}");
        if pred(&v["data"]) {
            return v["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never held: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn workflow(app: &TestApp, body: Value) {
    let (status, v) = app.post_json("/api/workflows", &body).await;
    assert!(
        status == 201 || status == 200,
        "create workflow: {status} {v}"
    );
}

async fn start_workflow(app: &TestApp, slug: &str) -> String {
    let (status, v) = app
        .post_json(&format!("/api/workflows/{slug}/run"), &json!({}))
        .await;
    assert_eq!(status, 202, "run {slug}: {v}");
    v["data"]["id"].as_str().unwrap().to_string()
}

async fn wait_workflow(app: &TestApp, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = app.get_json(&format!("/api/workflow-runs/{id}")).await;
        if ["succeeded", "failed", "canceled"].contains(&v["data"]["status"].as_str().unwrap_or(""))
        {
            return v["data"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workflow run {id} never ended: {v}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn id_of(run: &Value) -> String {
    run["id"].as_str().unwrap().to_string()
}

// ---- metrics ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_observe_durations_and_rate_failures() {
    let app = spawn_app().await;
    app.job("ok", "builtin:noop", json!({})).await;
    app.job(
        "bad",
        "builtin:fail",
        json!({"retryPolicy": {"maxAttempts": 1, "strategy": "none"}}),
    )
    .await;
    workflow(
        &app,
        json!({"slug": "pipeline", "name": "Pipeline", "steps": [
            {"id": "first", "jobSlug": "ok", "parameters": {}}
        ]}),
    )
    .await;

    // Before any run: the text parses, the rates are 0, nothing is queued.
    let m = scrape(&app).await;
    assert_eq!(m.get("jobs_failure_rate"), Some(&0.0), "{m:#?}");
    assert_eq!(m.get("workflows_failure_rate"), Some(&0.0), "{m:#?}");
    assert_eq!(m.get("switchyard_queue_depth{state=\"due\"}"), Some(&0.0));

    // A known mix: 3 succeeded and 1 failed job runs, 1 workflow run (its step: a 5th job run),
    // and one run delayed by 10 minutes.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(id_of(&app.run("ok", json!({"parameters": {}})).await));
    }
    ids.push(id_of(
        &app.run("bad", json!({"parameters": {"message": "drill"}}))
            .await,
    ));
    for id in &ids {
        app.wait_terminal(id).await;
    }
    let wf = start_workflow(&app, "pipeline").await;
    assert_eq!(wait_workflow(&app, &wf).await["status"], "succeeded");
    let delayed = app
        .run("ok", json!({"parameters": {}, "delayMs": 600000}))
        .await;
    assert_eq!(delayed["status"], "pending");

    let m = scrape_until(&app, "counters and histograms follow the runs", |m| {
        m.get("switchyard_job_runs_total{job=\"ok\",status=\"succeeded\"}") == Some(&4.0)
            && m.get("switchyard_workflow_step_duration_seconds_count{step=\"first\",workflow=\"pipeline\"}")
                == Some(&1.0)
            && m.get("switchyard_workflow_run_duration_seconds_count{status=\"succeeded\",workflow=\"pipeline\"}")
                == Some(&1.0)
    })
    .await;
    assert_eq!(
        m["switchyard_job_runs_total{job=\"bad\",status=\"failed\"}"],
        1.0
    );
    assert_eq!(
        m["switchyard_job_runs_total{job=\"bad\",status=\"succeeded\"}"],
        0.0
    );
    assert_eq!(
        m["switchyard_workflow_runs_total{status=\"succeeded\",workflow=\"pipeline\"}"],
        1.0
    );
    assert_eq!(
        m["switchyard_job_runs_in_progress{job=\"ok\",status=\"pending\"}"],
        1.0
    );
    assert_eq!(m["switchyard_queue_depth{state=\"delayed\"}"], 1.0);
    assert_eq!(m["switchyard_queue_depth{state=\"due\"}"], 0.0);
    // 1 failed of 5 job runs that ended in the last hour; no failed workflow run.
    assert_eq!(m["jobs_failure_rate"], 0.2, "{m:#?}");
    assert_eq!(m["workflows_failure_rate"], 0.0);
    assert_eq!(m["switchyard_failure_rate_window_seconds"], 3600.0);
    // Histograms: samples with cumulative buckets up to +Inf = count.
    assert_eq!(
        m["switchyard_job_run_duration_seconds_count{job=\"ok\",status=\"succeeded\"}"],
        4.0
    );
    assert_eq!(
        m["switchyard_job_run_duration_seconds_count{job=\"bad\",status=\"failed\"}"],
        1.0
    );
    assert_eq!(
        m["switchyard_job_run_duration_seconds_bucket{job=\"ok\",status=\"succeeded\",le=\"+Inf\"}"],
        4.0
    );
    assert!(m["switchyard_job_run_duration_seconds_sum{job=\"ok\",status=\"succeeded\"}"] >= 0.0);

    // The same figures as JSON.
    let j = metrics_json_until(&app, "the JSON figures", |d| {
        d["durations"]["jobRuns"]["count"] == 5
    })
    .await;
    assert_eq!(j["jobs"]["total"], 6, "{j:#}");
    assert_eq!(j["jobs"]["byStatus"]["succeeded"], 4);
    assert_eq!(j["jobs"]["byStatus"]["failed"], 1);
    assert_eq!(j["jobs"]["byStatus"]["pending"], 1);
    assert_eq!(j["jobs"]["byStatus"]["expired"], 0);
    assert_eq!(j["jobs"]["failureRate"], 0.2);
    assert_eq!(j["jobs"]["windowTerminal"], 5);
    assert_eq!(j["jobs"]["windowFailed"], 1);
    assert_eq!(j["jobs"]["windowMs"], 3_600_000);
    let bad = j["jobs"]["bySlug"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["slug"] == "bad")
        .unwrap();
    assert_eq!(bad["byStatus"]["failed"], 1);
    assert_eq!(j["workflows"]["total"], 1);
    assert_eq!(j["workflows"]["failureRate"], 0.0);
    assert_eq!(j["workflows"]["byStatus"]["succeeded"], 1);
    assert_eq!(
        j["queueDepth"],
        json!({"due": 0, "delayed": 1, "running": 0})
    );
    let jr = &j["durations"]["jobRuns"];
    let bucket_total: u64 = jr["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(bucket_total, 5, "{jr:#}");
    assert!(
        jr["p50Ms"].as_f64().is_some() && jr["p99Ms"].as_f64() >= jr["p50Ms"].as_f64(),
        "{jr:#}"
    );
    assert_eq!(j["durations"]["workflowRuns"]["count"], 1);
    assert_eq!(j["durations"]["steps"]["count"], 1);

    // The OpenAPI document describes the endpoint and its shape.
    let (_, doc) = app.get_json("/api/openapi.json").await;
    assert!(
        doc["paths"]["/api/metrics"]["get"].is_object(),
        "{}",
        doc["paths"]
    );
    assert!(doc["components"]["schemas"]["MetricsReport"].is_object());

    // A browser asking for /metrics gets the page, server-rendered with its charts.
    let res = app
        .client
        .get(app.url("/metrics"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = res.text().await.unwrap();
    for needle in [
        "id=\"failure-rates\"",
        "id=\"jobs-by-status\"",
        "id=\"queue-depth\"",
        "id=\"durations-job-runs\"",
        "20.0%",
    ] {
        assert!(html.contains(needle), "page lacks {needle}: {html}");
    }
    // No 5xx from /metrics for other methods either.
    let res = app.client.post(app.url("/metrics")).send().await.unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_failure_rate_counts_failed_over_ended_runs() {
    let app = spawn_app().await;
    app.job("ok", "builtin:noop", json!({})).await;
    app.job(
        "bad",
        "builtin:fail",
        json!({"retryPolicy": {"maxAttempts": 1, "strategy": "none"}}),
    )
    .await;
    workflow(&app, json!({"slug": "good-wf", "name": "Good", "steps": [{"id": "a", "jobSlug": "ok", "parameters": {}}]})).await;
    workflow(&app, json!({"slug": "bad-wf", "name": "Bad", "steps": [{"id": "a", "jobSlug": "bad", "parameters": {"message": "nope"}}]})).await;
    for slug in ["good-wf", "good-wf", "good-wf", "bad-wf"] {
        let id = start_workflow(&app, slug).await;
        wait_workflow(&app, &id).await;
    }
    let m = scrape_until(&app, "workflow failure rate", |m| {
        m.get("workflows_failure_rate") == Some(&0.25)
    })
    .await;
    assert_eq!(
        m["switchyard_workflow_runs_total{status=\"failed\",workflow=\"bad-wf\"}"],
        1.0
    );
    let j = metrics_json_until(&app, "workflow rate", |d| {
        d["workflows"]["windowTerminal"] == 4
    })
    .await;
    assert_eq!(j["workflows"]["failureRate"], 0.25);
    assert_eq!(j["workflows"]["windowFailed"], 1);
}

// ---- structured logs ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_run_ids() {
    let db = TestDb::new().await;
    let log = db.data_dir().join("serve.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("SWITCHYARD_LOG")
        .arg("--data-dir")
        .arg(db.data_dir())
        .args(["--log-format", "json"]);
    if let Some(url) = &db.url {
        cmd.arg("--database-url").arg(url);
    }
    cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--poll-ms",
        "50",
    ])
    .stdin(Stdio::null())
    .stdout(out.try_clone().unwrap())
    .stderr(out);
    let mut child = cmd.spawn().expect("spawn switchyard serve");
    // The address comes from the start-up line.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let address = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "switchyard serving")
            .and_then(|v| v["addr"].as_str().map(str::to_string))
        {
            break addr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server never started: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{address}");
    let res = client
        .post(format!("{base}/api/jobs"))
        .json(&json!({"slug": "logged", "name": "Logged", "entryPoint": "builtin:noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let run: Value = client
        .post(format!("{base}/api/jobs/logged/run"))
        .json(&json!({"parameters": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["data"]["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = client
            .get(format!("{base}/api/job-runs/{run_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"]["status"] == "succeeded" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run never finished: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the "run finished" line a moment, then stop the server (SIGTERM: graceful).
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;

    let file = std::fs::File::open(&log).unwrap();
    let mut with_run = Vec::new();
    let mut lines = 0;
    for line in BufReader::new(file).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            continue;
        }
        lines += 1;
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.is_object() && v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["run_id"] == run_id.as_str() {
            with_run.push(v);
        }
    }
    assert!(lines >= 3, "too few log lines");
    let messages: HashSet<&str> = with_run
        .iter()
        .filter_map(|v| v["message"].as_str())
        .collect();
    assert!(
        messages.contains("run started") && messages.contains("run finished"),
        "{with_run:#?}"
    );
    assert!(
        with_run.iter().all(|v| v["job"] == "logged"),
        "{with_run:#?}"
    );
}

// ---- alerts ----

/// A real HTTP receiver: records every POSTed body; answers 500 to the first `fail_first`.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    fail_first: Arc<Mutex<usize>>,
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    r.bodies.lock().unwrap().push(body);
    let mut left = r.fail_first.lock().unwrap();
    if *left > 0 {
        *left -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Starts the receiver on a free port; returns it and its URL.
async fn start_receiver(fail_first: usize) -> (Receiver, String) {
    let r = Receiver::default();
    *r.fail_first.lock().unwrap() = fail_first;
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

fn alert_settings(db: &TestDb, url: &str, max_attempts: u32) -> server::Settings {
    let mut s = test_settings(db);
    s.alerts.alert_threshold = 3;
    s.alerts.alert_window_ms = 60_000;
    s.alerts.alert_webhook_url = Some(url.parse().unwrap());
    s.alerts.alert_max_attempts = max_attempts;
    s.alerts.alert_backoff_ms = 50;
    s
}

async fn failing_workflow(app: &TestApp) {
    app.job(
        "broken",
        "builtin:fail",
        json!({"retryPolicy": {"maxAttempts": 1, "strategy": "none"}}),
    )
    .await;
    workflow(
        app,
        json!({"slug": "nightly", "name": "Nightly", "steps": [
            {"id": "only", "jobSlug": "broken", "parameters": {"message": "disk full"}}
        ]}),
    )
    .await;
}

async fn fail_once(app: &TestApp) -> String {
    let id = start_workflow(app, "nightly").await;
    let done = wait_workflow(app, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    id
}

async fn deliveries(db: &TestDb) -> Vec<server::store::AlertDelivery> {
    let database = Database::connect(&db.data_dir(), db.url.as_deref())
        .await
        .unwrap();
    let rows = Store::new(database.clone())
        .alert_deliveries(Some("nightly"))
        .await
        .unwrap();
    database.close(Duration::from_secs(2)).await;
    rows
}

async fn wait_deliveries(
    db: &TestDb,
    pred: impl Fn(&[server::store::AlertDelivery]) -> bool,
) -> Vec<server::store::AlertDelivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = deliveries(db).await;
        if pred(&rows) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never as expected: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alert_fires_once_per_threshold_crossing_across_servers() {
    let (receiver, url) = start_receiver(0).await;
    let db = TestDb::new().await;
    // A second server on the same database, serving only (no workers): it sees the same
    // failures and must not send the alert again.
    let mut second = alert_settings(&db, &url, 3);
    second.worker.workers = 0;
    let first = alert_settings(&db, &url, 3);
    let app = spawn_app_with(db, first).await;
    let other = Application::build(second).await.expect("second server");
    let other_stop = other.stop_token();
    let other_handle = tokio::spawn(other.run_until_stopped());
    failing_workflow(&app).await;

    let one = fail_once(&app).await;
    let two = fail_once(&app).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        receiver.bodies.lock().unwrap().is_empty(),
        "alert before the threshold"
    );
    let three = fail_once(&app).await;
    let rows = wait_deliveries(&app.db, |r| {
        r.first().is_some_and(|d| d.status == "delivered")
    })
    .await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(rows[0].last_run_id.as_deref(), Some(three.as_str()));
    let bodies = receiver.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    let body = &bodies[0];
    assert_eq!(body["workflowSlug"], "nightly");
    assert_eq!(body["failures"], 3);
    assert_eq!(body["windowMs"], 60_000);
    assert_eq!(body["lastRunId"], three.as_str());
    assert!(
        body["lastError"].as_str().unwrap().contains("disk full"),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 5, "{body}");
    assert!(![one, two].contains(&three));

    // A fourth failure inside the window: the same streak, no second alert (from either server).
    fail_once(&app).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.bodies.lock().unwrap().len(), 1);
    assert_eq!(deliveries(&app.db).await.len(), 1);
    other_stop.cancel();
    let _ = other_handle.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_is_retried_after_errors_and_recorded_delivered() {
    let (receiver, url) = start_receiver(2).await;
    let db = TestDb::new().await;
    let settings = alert_settings(&db, &url, 5);
    let app = spawn_app_with(db, settings).await;
    failing_workflow(&app).await;
    for _ in 0..3 {
        fail_once(&app).await;
    }
    let rows = wait_deliveries(&app.db, |r| {
        r.first().is_some_and(|d| d.status == "delivered")
    })
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 3, "{rows:#?}");
    assert!(rows[0].delivered_at.is_some());
    let bodies = receiver.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3, "two refused attempts and the accepted one");
    assert!(bodies.iter().all(|b| b == &bodies[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_the_egress_policy_refuses_is_failed_at_once_and_never_reached() {
    let (receiver, url) = start_receiver(0).await;
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let url = format!("http://localhost:{port}/hook?token=s3cret");
    let db = TestDb::new().await;
    let mut settings = alert_settings(&db, &url, 3);
    settings.egress = server::egress::EgressPolicy::new(
        Some(server::egress::parse_list("127.0.0.0/8,::1").unwrap()),
        None,
    );
    let app = spawn_app_with(db, settings).await;
    failing_workflow(&app).await;
    for _ in 0..3 {
        fail_once(&app).await;
    }
    let rows = wait_deliveries(&app.db, |r| r.first().is_some_and(|d| d.status == "failed")).await;
    // Refused is final: one attempt, not three.
    assert_eq!(rows[0].attempts, 1, "{rows:#?}");
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(
        error.starts_with("webhook request failed: the egress policy refused localhost"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    assert!(receiver.bodies.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_webhook_is_recorded_failed_after_the_retries() {
    // Port 1 (tcpmux): nothing listens there. (A port freed a moment ago could be taken by
    // another test's server meanwhile, and then the webhook would get an answer.)
    let url = "http://127.0.0.1:1/hook".to_string();
    let db = TestDb::new().await;
    let settings = alert_settings(&db, &url, 3);
    let app = spawn_app_with(db, settings).await;
    failing_workflow(&app).await;
    for _ in 0..3 {
        fail_once(&app).await;
    }
    let rows = wait_deliveries(&app.db, |r| r.first().is_some_and(|d| d.status == "failed")).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 3, "{rows:#?}");
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("webhook request failed"), "{error}");
    assert!(
        !error.contains("/hook"),
        "the webhook URL must not be recorded: {error}"
    );
    // Everything else keeps answering normally.
    let (status, _) = app.get_json("/api/metrics").await;
    assert_eq!(status, 200);
    let (status, v) = app.get_json("/api/workflows/nightly/runs").await;
    assert_eq!(status, 200, "{v}");
}
