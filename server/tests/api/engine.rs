//! Engine tests: retries, timeouts, cancellation, crash safety, shutdown, cross-process events.
//!
//! Every wait polls with a deadline; nothing asserts on a fixed sleep.
use std::{
    future::Future,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::{
    builds::{build_job, make_repository, marker, run_build},
    helpers::{TestApp, TestDb, WorkerProcess, spawn_app, spawn_app_with, test_settings},
};

const TERMINAL: [&str; 4] = ["succeeded", "failed", "canceled", "expired"];

// ---- small helpers ----

fn id_of(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_string()
}

fn time_of(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// How many lines of `log` contain `needle`.
fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Polls `probe` until it yields a value; panics with `what` after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the run's log until it contains `needle`; returns the log.
async fn wait_for_log(app: &TestApp, id: &str, needle: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let log = app.logs(id).await;
        if log.contains(needle) {
            return log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log of run {id} never contained {needle:?}; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run; asserts it stays in `status` with `startedAt` null for the whole `window`.
async fn assert_stays_unstarted(app: &TestApp, id: &str, status: &str, window: Duration) {
    let deadline = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < deadline {
        let run = app.get_run(id).await;
        assert_eq!(run["status"], status, "{run}");
        assert!(run["startedAt"].is_null(), "run {id} started: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- the event stream ----

/// A live subscription to `GET /api/events`, collecting `(event type, payload)` in arrival order.
struct EventLog {
    /// (SSE id, event type, payload), in arrival order.
    events: Arc<Mutex<Vec<(i64, String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventLog {
    /// Subscribes with `Last-Event-ID: 0` (replays everything stored, then follows live), so
    /// nothing can fall between subscribing and the first event.
    async fn subscribe(app: &TestApp, topics: &str) -> EventLog {
        let res = app
            .client
            .get(app.url(&format!("/api/events?topics={topics}")))
            .header("Last-Event-ID", "0")
            .send()
            .await
            .expect("event stream");
        assert_eq!(res.status().as_u16(), 200, "event stream status");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            let mut body = res.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            let (mut event_type, mut data, mut sse_id) = (String::new(), String::new(), -1);
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = buf.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&raw)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if line.is_empty() {
                        if !event_type.is_empty() {
                            let payload = serde_json::from_str(&data).unwrap_or(Value::Null);
                            sink.lock().unwrap().push((
                                sse_id,
                                std::mem::take(&mut event_type),
                                payload,
                            ));
                        }
                        data.clear();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        sse_id = v.trim().parse().unwrap_or(-1);
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event_type = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
            }
        });
        EventLog { events, task }
    }

    /// Events about run `id`: (type, run as carried by the event).
    fn for_run(&self, id: &str) -> Vec<(String, Value)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, p)| p["data"]["run"]["id"] == id)
            .map(|(_, t, p)| (t.clone(), p["data"]["run"].clone()))
            .collect()
    }

    /// Every event received so far, one per line (for failure messages).
    fn dump(&self) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(i, t, p)| {
                format!(
                    "{i} {t} run={} attempt={}\n",
                    p["data"]["run"]["id"], p["data"]["run"]["attempt"]
                )
            })
            .collect()
    }

    /// Waits for an event of `event_type` matching `pred`; returns its payload.
    async fn wait_for(
        &self,
        event_type: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(&format!("event {event_type}"), timeout, || {
            let found = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|(_, t, p)| t == event_type && pred(p))
                .map(|(_, _, p)| p.clone());
            async move { found }
        })
        .await
    }

    /// Waits for the event of `event_type` about run `id`; returns the run it carries.
    async fn wait_for_run(&self, event_type: &str, id: &str, timeout: Duration) -> Value {
        self.wait_for(event_type, timeout, |p| p["data"]["run"]["id"] == id)
            .await["data"]["run"]
            .clone()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- 1. retries ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_run_is_retried_until_it_succeeds() {
    let app = spawn_app().await;
    app.job(
        "flaky",
        "builtin:fail",
        json!({"retryPolicy": {"maxAttempts": 3, "strategy": "fixed", "initialDelayMs": 200}}),
    )
    .await;
    let run = app
        .run(
            "flaky",
            json!({"parameters": {"message": "flaked", "succeedOnAttempt": 3}}),
        )
        .await;
    assert_eq!(run["maxAttempts"], 3, "{run}");
    let id = id_of(&run);
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 3, "{done}");
    assert_eq!(done["result"], json!({"attempt": 3}), "{done}");
    assert!(done["errorMessage"].is_null(), "{done}");

    let log = app.logs(&id).await;
    assert!(
        log.contains("attempt 1 failed: flaked; retrying in 200 ms"),
        "{log}"
    );
    assert!(
        log.contains("attempt 2 failed: flaked; retrying in 200 ms"),
        "{log}"
    );
    assert_eq!(count_lines(&log, "retrying"), 2, "{log}");
    assert!(!log.contains("attempt 3 failed"), "{log}");
    for attempt in 1..=3 {
        assert_eq!(
            count_lines(&log, &format!("attempt {attempt} of 3 started")),
            1,
            "{log}"
        );
    }
    assert!(log.contains("succeeding as asked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_run_fails_after_its_last_attempt() {
    let app = spawn_app().await;
    app.job(
        "broken",
        "builtin:fail",
        json!({"retryPolicy": {"maxAttempts": 2, "strategy": "fixed", "initialDelayMs": 100}}),
    )
    .await;
    let run = app
        .run("broken", json!({"parameters": {"message": "it is broken"}}))
        .await;
    let id = id_of(&run);
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["errorMessage"], "it is broken", "{done}");
    assert!(done["result"].is_null(), "{done}");
    assert!(done["completedAt"].is_string(), "{done}");

    let log = app.logs(&id).await;
    assert!(
        log.contains("attempt 1 failed: it is broken; retrying in 100 ms"),
        "{log}"
    );
    assert!(
        log.contains("attempt 2 failed: it is broken; no attempts left"),
        "{log}"
    );
    assert_eq!(count_lines(&log, "started on"), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_delays_grow_between_attempts() {
    let app = spawn_app().await;
    app.job(
        "backoff",
        "builtin:fail",
        json!({"retryPolicy": {"maxAttempts": 3, "strategy": "exponential", "initialDelayMs": 300,
                               "maxDelayMs": 10000, "jitter": "none"}}),
    )
    .await;
    let run = app
        .run("backoff", json!({"parameters": {"message": "nope"}}))
        .await;
    let id = id_of(&run);
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempt"], 3, "{done}");

    // Replay the stored events of the run: each retry publishes the run back as pending
    // (updatedAt = when the failed attempt ended, scheduledAt = when the next one is due), and
    // each attempt publishes it as running with its startedAt.
    let events = EventLog::subscribe(&app, "job.run.*").await;
    events
        .wait_for_run("job.run.failed", &id, Duration::from_secs(10))
        .await;
    let seen = events.for_run(&id);
    let pending = |attempt: i64| {
        seen.iter()
            .find(|(t, r)| t == "job.run.pending" && r["attempt"] == attempt)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no pending event for attempt {attempt}: {seen:?}"))
    };
    let running = |attempt: i64| {
        seen.iter()
            .find(|(t, r)| t == "job.run.running" && r["attempt"] == attempt)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no running event for attempt {attempt}: {seen:?}"))
    };
    let mut observed = Vec::new();
    for (attempt, delay_ms) in [(2, 300), (3, 600)] {
        let requeued = pending(attempt);
        let ended = time_of(&requeued["updatedAt"]);
        let due = time_of(&requeued["scheduledAt"]);
        let started = time_of(&running(attempt)["startedAt"]);
        assert_eq!(
            ms_between(ended, due),
            delay_ms,
            "attempt {attempt} scheduled with the wrong delay: {requeued}"
        );
        let gap = ms_between(ended, started);
        assert!(
            gap >= delay_ms,
            "attempt {attempt} started {gap} ms after the previous one ended, before its {delay_ms} ms backoff"
        );
        assert!(
            started >= due,
            "attempt {attempt} started at {started}, before it was due at {due}"
        );
        observed.push(gap);
    }
    let log = app.logs(&id).await;
    assert!(
        log.contains("attempt 1 failed: nope; retrying in 300 ms"),
        "{log}"
    );
    assert!(
        log.contains("attempt 2 failed: nope; retrying in 600 ms"),
        "{log}"
    );
    assert_eq!(count_lines(&log, "started on"), 3, "{log}");
    eprintln!("observed backoff gaps: {observed:?} ms");
}

// ---- 2. timeouts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exceeding_its_timeout_expires() {
    let app = spawn_app().await;
    app.job("slow", "builtin:sleep", json!({})).await;
    let run = app
        .run(
            "slow",
            json!({"parameters": {"durationMs": 10000}, "timeoutMs": 1000, "maxAttempts": 1}),
        )
        .await;
    let id = id_of(&run);
    let done = app
        .wait_for_status(&id, &TERMINAL, Duration::from_secs(6))
        .await;
    assert_eq!(done["status"], "expired", "{done}");
    assert_eq!(done["attempt"], 1, "{done}");
    let error = done["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "{done}");
    let ran = done["durationMs"].as_i64().expect("durationMs");
    assert!(
        (1000..6000).contains(&ran),
        "ran {ran} ms for a 1000 ms timeout: {done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_timing_out_on_every_attempt_expires_after_the_last() {
    let app = spawn_app().await;
    app.job("slow", "builtin:sleep", json!({})).await;
    let run = app
        .run(
            "slow",
            json!({"parameters": {"durationMs": 10000}, "timeoutMs": 1000, "maxAttempts": 2}),
        )
        .await;
    let id = id_of(&run);
    let done = app
        .wait_for_status(&id, &TERMINAL, Duration::from_secs(12))
        .await;
    assert_eq!(done["status"], "expired", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert!(
        done["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{done}"
    );
    let log = app.logs(&id).await;
    assert_eq!(count_lines(&log, "attempt 1 of 2 started"), 1, "{log}");
    assert_eq!(count_lines(&log, "attempt 2 of 2 started"), 1, "{log}");
    assert!(
        log.contains("attempt 1 failed: timed out after 1000 ms; retrying"),
        "{log}"
    );
    assert!(
        log.contains("attempt 2 failed: timed out after 1000 ms; no attempts left"),
        "{log}"
    );
}

// ---- 3./4. cancellation ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceled_pending_run_never_starts() {
    let app = spawn_app().await;
    app.job("quick", "builtin:noop", json!({})).await;
    let run = app
        .run("quick", json!({"parameters": {"n": 1}, "delayMs": 5000}))
        .await;
    let id = id_of(&run);
    // A twin with the same delay that is left alone: once it has run, the canceled run's queue
    // task has come due too.
    let twin = app
        .run("quick", json!({"parameters": {"n": 2}, "delayMs": 5000}))
        .await;
    assert_eq!(run["status"], "pending", "{run}");

    let (status, canceled) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["data"]["status"], "canceled", "{canceled}");
    assert!(canceled["data"]["startedAt"].is_null(), "{canceled}");
    assert!(canceled["data"]["completedAt"].is_string(), "{canceled}");

    let twin_done = app
        .wait_for_status(&id_of(&twin), &TERMINAL, Duration::from_secs(15))
        .await;
    assert_eq!(twin_done["status"], "succeeded", "{twin_done}");
    // And a little past that, it still has not started.
    assert_stays_unstarted(&app, &id, "canceled", Duration::from_millis(1500)).await;
    let log = app.logs(&id).await;
    assert!(!log.contains("started on"), "{log}");

    // Canceling again is a conflict.
    let (status, body) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceled_running_run_stops_and_stays_canceled() {
    let app = spawn_app().await;
    app.job(
        "long",
        "builtin:sleep",
        json!({"retryPolicy": {"maxAttempts": 3}}),
    )
    .await;
    let run = app
        .run("long", json!({"parameters": {"durationMs": 30000}}))
        .await;
    let id = id_of(&run);
    app.wait_for_status(&id, &["running"], Duration::from_secs(10))
        .await;
    wait_for_log(&app, &id, "sleeping for 30000 ms", Duration::from_secs(5)).await;

    let asked = tokio::time::Instant::now();
    let (status, canceled) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["data"]["status"], "canceled", "{canceled}");
    let now = app
        .wait_for_status(&id, &["canceled"], Duration::from_secs(1))
        .await;
    assert!(now["completedAt"].is_string(), "{now}");

    // The worker notices and stops the handler (engine log line "canceled")...
    let log = wait_for_log(&app, &id, "[switchyard] canceled\n", Duration::from_secs(5)).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the attempt took {:?} to stop",
        asked.elapsed()
    );
    assert!(log.contains("cancel requested by operator"), "{log}");
    // ...and does not overwrite the status, retry it, or start another attempt.
    let after = app.get_run(&id).await;
    assert_eq!(after["status"], "canceled", "{after}");
    assert_eq!(after["attempt"], 1, "{after}");
    assert!(after["result"].is_null(), "{after}");
    assert!(!log.contains("retrying"), "{log}");
    assert!(!log.contains("succeeded"), "{log}");
    assert_eq!(count_lines(&log, "started on"), 1, "{log}");
    // The stop is recorded once the handler is gone; past a lease length nothing changed.
    let settle = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < settle {
        let later = app.get_run(&id).await;
        assert_eq!(later["status"], "canceled", "{later}");
        assert_eq!(later["attempt"], 1, "{later}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- 5. repository ingest and build ----
// (build isolation: builds.rs)

/// The supervisor pid the build handler logged ("... (supervisor pid N) ...").
fn supervisor_pid(log: &str) -> i32 {
    log.lines()
        .find_map(|l| {
            l.split("(supervisor pid ")
                .nth(1)?
                .split(')')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no supervisor pid in the build log:\n{log}"))
}

/// State and process group of `pid` from /proc (None when it is gone).
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Live (not zombie) processes running exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<i32> {
    let expected: Vec<u8> = argv
        .iter()
        .flat_map(|a| a.bytes().chain(std::iter::once(0)))
        .collect();
    live_processes()
        .into_iter()
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == expected))
        .collect()
}

fn live_processes() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    proc_stat(*pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes of process group `pgid` (the supervisor's group holds it and the command).
fn group_members(pgid: i32) -> Vec<i32> {
    let mut members: Vec<i32> = live_processes()
        .into_iter()
        .filter(|pid| proc_stat(*pid).is_some_and(|(_, pgrp)| pgrp == pgid))
        .collect();
    members.sort_unstable();
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_ingest_then_build_streams_logs_while_running() {
    let app = spawn_app().await;
    let source = tempfile::tempdir().expect("temp dir");
    let head = make_repository(source.path());
    let repo_url = source.path().to_string_lossy().to_string();

    let ingest = app
        .run(
            "repository-ingest",
            json!({"parameters": {"repoUrl": repo_url}}),
        )
        .await;
    let ingested = app.wait_terminal(&id_of(&ingest)).await;
    assert_eq!(
        ingested["status"],
        "succeeded",
        "{ingested}\n{}",
        app.logs(&id_of(&ingest)).await
    );
    let result = &ingested["result"];
    assert_eq!(result["headCommit"], head, "{result}");
    let manifests: Vec<&str> = result["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(manifests.contains(&"Makefile"), "{result}");
    let checkout = result["checkout"].as_str().expect("checkout").to_string();
    assert!(
        Path::new(&checkout).join("Makefile").is_file(),
        "checkout {checkout} lacks the Makefile"
    );
    assert!(
        Path::new(&checkout).join("build.sh").is_file(),
        "checkout {checkout} lacks build.sh"
    );

    // The definition names the checkout and the command; the run only starts it.
    let script = "for i in 1 2 3; do echo line$i; sleep 0.3; done";
    build_job(
        &app,
        "build-it",
        json!({"checkout": checkout, "command": ["sh", "-c", script]}),
        json!({}),
    )
    .await;
    let build = app.run("build-it", json!({"parameters": {}})).await;
    let id = id_of(&build);
    // The first line is readable while the command still runs: the log is read first, the
    // status after it, so "running" then means it was running when the log was read.
    let (early_log, status_after) = eventually(
        "line1 in the log of the running build",
        Duration::from_secs(20),
        || {
            let app = &app;
            let id = id.clone();
            async move {
                let log = app.logs(&id).await;
                if !log.lines().any(|l| l == "line1") {
                    return None;
                }
                Some((log, app.get_run(&id).await["status"].clone()))
            }
        },
    )
    .await;
    assert_eq!(
        status_after, "running",
        "line1 only became readable after the run ended:\n{early_log}"
    );
    assert!(!early_log.contains("line3"), "{early_log}");

    let done = app.wait_terminal(&id).await;
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\n{}",
        app.logs(&id).await
    );
    assert_eq!(done["result"]["exitCode"], 0, "{done}");
    assert_eq!(done["result"]["stdoutLines"], 3, "{done}");
    assert_eq!(done["result"]["checkout"], checkout.as_str(), "{done}");
    let log = app.logs(&id).await;
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("line")).collect();
    assert_eq!(lines, vec!["line1", "line2", "line3"], "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_build_kills_its_process() {
    let app = spawn_app().await;
    let source = tempfile::tempdir().expect("temp dir");
    make_repository(source.path());
    let seconds = format!("60.{}", marker());
    build_job(
        &app,
        "sleeper",
        json!({"command": ["sleep", seconds]}),
        json!({}),
    )
    .await;
    let id = run_build(&app, "sleeper", source.path()).await;
    app.wait_for_status(&id, &["running"], Duration::from_secs(10))
        .await;
    let log = wait_for_log(&app, &id, "(supervisor pid ", Duration::from_secs(20)).await;
    let supervisor = supervisor_pid(&log);
    let argv = ["sleep", seconds.as_str()];
    let sleeper = eventually(
        "the build's sleep process",
        Duration::from_secs(5),
        || async move { processes_running(&argv).first().copied() },
    )
    .await;
    assert_eq!(
        group_members(supervisor),
        vec![supervisor, sleeper],
        "the supervisor's process group holds it and the command"
    );

    let asked = tokio::time::Instant::now();
    let (status, canceled) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["data"]["status"], "canceled", "{canceled}");
    // Killed and reaped: until reaped, a process lingers as a zombie in its group.
    eventually(
        "the build's process group to be gone",
        Duration::from_secs(5),
        || async move {
            (processes_running(&argv).is_empty() && group_members(supervisor).is_empty())
                .then_some(())
        },
    )
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "killing took {:?}",
        asked.elapsed()
    );
    let log = wait_for_log(&app, &id, "[switchyard] canceled\n", Duration::from_secs(5)).await;
    assert!(log.contains("canceled: stopping the command"), "{log}");
    let after = app.get_run(&id).await;
    assert_eq!(after["status"], "canceled", "{after}");
}

// ---- 6. crash safety with real worker processes ----

/// Serve-only app (no workers) whose runs are executed by worker child processes.
async fn serve_only_app() -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.workers = 0;
    spawn_app_with(db, settings).await
}

/// Starts a `worker-1` child process and a 4 s `nap` run on it; returns once the run is
/// sleeping there.
async fn start_nap_on_worker(app: &TestApp) -> (WorkerProcess, String) {
    let first = WorkerProcess::spawn(&app.db, "worker-1");
    let run = app
        .run("nap", json!({"parameters": {"durationMs": 4000}}))
        .await;
    let id = id_of(&run);
    let running = app
        .wait_for_status(
            &id,
            &["running", "succeeded", "failed"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        running["status"],
        "running",
        "{running}\n{}",
        first.output()
    );
    wait_for_log(app, &id, "sleeping for 4000 ms", Duration::from_secs(5)).await;
    (first, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_process_is_taken_over_by_another() {
    let app = serve_only_app().await;
    app.job(
        "nap",
        "builtin:sleep",
        json!({"retryPolicy": {"maxAttempts": 2}}),
    )
    .await;
    let events = EventLog::subscribe(&app, "job.*").await;
    // Connected and replay done: the job's own definition event has arrived.
    events
        .wait_for("job.definition.updated", Duration::from_secs(10), |p| {
            p["data"]["job"]["slug"] == "nap"
        })
        .await;

    let (mut first, id) = start_nap_on_worker(&app).await;
    // The event of the first attempt reached the serving process.
    let seen = events
        .wait_for_run("job.run.running", &id, Duration::from_secs(5))
        .await;
    assert_eq!(seen["attempt"], 1, "{seen}");
    first.kill();

    // Nobody executes it now; the run stays running until a worker notices the lost lease.
    let still = app.get_run(&id).await;
    assert_eq!(still["status"], "running", "{still}");
    let second = WorkerProcess::spawn(&app.db, "worker-2");
    let done = app
        .wait_for_status(&id, &TERMINAL, Duration::from_secs(40))
        .await;
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\nworker-2:\n{}",
        second.output()
    );
    assert_eq!(done["attempt"], 2, "{done}");

    let log = app.logs(&id).await;
    assert!(log.contains("worker lost during attempt 1"), "{log}");
    assert!(log.contains("retrying as attempt 2"), "{log}");
    assert_eq!(count_lines(&log, "attempt 1 of 2 started"), 1, "{log}");
    assert_eq!(count_lines(&log, "attempt 2 of 2 started"), 1, "{log}");
    assert_eq!(count_lines(&log, "started on"), 2, "{log}");
    // Attempt 2 started only after attempt 1 was declared lost.
    let lost_at = log.find("worker lost during attempt 1").unwrap();
    let second_started = log.find("attempt 2 of 2 started").unwrap();
    assert!(lost_at < second_started, "{log}");
    assert_eq!(count_lines(&log, "[switchyard] succeeded"), 1, "{log}");

    // Events written by the worker processes reached the serving process' stream.
    events
        .wait_for("job.run.running", Duration::from_secs(10), |p| {
            p["data"]["run"]["id"] == id && p["data"]["run"]["attempt"] == 2
        })
        .await;
    let succeeded = events
        .wait_for_run("job.run.succeeded", &id, Duration::from_secs(10))
        .await;
    assert_eq!(succeeded["attempt"], 2, "{succeeded}");
    let types: Vec<String> = events.for_run(&id).into_iter().map(|(t, _)| t).collect();
    let expected = [
        "job.run.pending",
        "job.run.running",
        "job.run.pending",
        "job.run.running",
        "job.run.succeeded",
    ];
    if types != expected {
        let again = EventLog::subscribe(&app, "job.*").await;
        again
            .wait_for_run("job.run.succeeded", &id, Duration::from_secs(10))
            .await;
        panic!(
            "events of the run as streamed live: {types:?}\nreceived:\n{}\nstored:\n{}",
            events.dump(),
            again.dump()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_process_fails_a_run_without_attempts_left() {
    let app = serve_only_app().await;
    app.job(
        "nap",
        "builtin:sleep",
        json!({"retryPolicy": {"maxAttempts": 1}}),
    )
    .await;
    let events = EventLog::subscribe(&app, "job.run.*").await;

    let (mut first, id) = start_nap_on_worker(&app).await;
    first.kill();

    let second = WorkerProcess::spawn(&app.db, "worker-2");
    let done = app
        .wait_for_status(&id, &TERMINAL, Duration::from_secs(40))
        .await;
    assert_eq!(
        done["status"],
        "failed",
        "{done}\nworker-2:\n{}",
        second.output()
    );
    assert_eq!(done["attempt"], 1, "{done}");
    let error = done["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains("worker lost"), "{done}");
    assert!(done["completedAt"].is_string(), "{done}");
    let log = app.logs(&id).await;
    assert!(log.contains("worker lost during attempt 1"), "{log}");
    assert_eq!(count_lines(&log, "started on"), 1, "{log}");

    let failed = events
        .wait_for_run("job.run.failed", &id, Duration::from_secs(10))
        .await;
    assert!(
        failed["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("worker lost"),
        "{failed}"
    );
    // It is never picked up again.
    let settle = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < settle {
        let later = app.get_run(&id).await;
        assert_eq!(later["status"], "failed", "{later}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- 7. graceful shutdown ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_running_runs_back() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.shutdown_grace_ms = 500;
    let app = spawn_app_with(db, settings).await;
    app.job(
        "nap",
        "builtin:sleep",
        json!({"retryPolicy": {"maxAttempts": 3}}),
    )
    .await;
    let run = app
        .run("nap", json!({"parameters": {"durationMs": 3000}}))
        .await;
    let id = id_of(&run);
    app.wait_for_status(&id, &["running"], Duration::from_secs(10))
        .await;
    wait_for_log(&app, &id, "sleeping for 3000 ms", Duration::from_secs(5)).await;
    let db = app.shutdown().await;

    // In the database the run is pending again, same attempt: a hand-back is not a failure.
    let mut idle = test_settings(&db);
    idle.worker.workers = 0;
    let inspector = spawn_app_with(db, idle).await;
    let back = inspector.get_run(&id).await;
    assert_eq!(back["status"], "pending", "{back}");
    assert_eq!(back["attempt"], 1, "{back}");
    assert!(back["completedAt"].is_null(), "{back}");
    let log = inspector.logs(&id).await;
    assert!(log.contains("handing the run back"), "{log}");
    let db = inspector.shutdown().await;

    // A new process picks it up and finishes it.
    let settings = test_settings(&db);
    let app = spawn_app_with(db, settings).await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(done["result"], json!({"sleptMs": 3000}), "{done}");
    let log = app.logs(&id).await;
    assert_eq!(count_lines(&log, "attempt 1 of 3 started"), 2, "{log}");
    assert!(!log.contains("retrying"), "{log}");
}

// ---- 8. no duplicates under concurrency ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_each_execute_exactly_once() {
    let app = spawn_app().await;
    app.job("tick", "builtin:noop", json!({})).await;
    let posts = (0..200).map(|i| {
        let app = &app;
        async move {
            let (status, v) = app
                .post_json("/api/jobs/tick/run", &json!({"parameters": {"i": i}}))
                .await;
            assert_eq!(status, 202, "{v}");
            (i, id_of(&v["data"]))
        }
    });
    let ids = futures::future::join_all(posts).await;
    let mut unique: Vec<&String> = ids.iter().map(|(_, id)| id).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 200);

    for (i, id) in &ids {
        let done = app
            .wait_for_status(id, &TERMINAL, Duration::from_secs(60))
            .await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["attempt"], 1, "{done}");
        assert_eq!(done["result"], json!({"i": i}), "{done}");
    }
    for (_, id) in &ids {
        let log = app.logs(id).await;
        assert_eq!(count_lines(&log, "started on"), 1, "run {id}:\n{log}");
        assert_eq!(
            count_lines(&log, "[switchyard] succeeded"),
            1,
            "run {id}:\n{log}"
        );
    }
    let (status, list) = app
        .get_json("/api/jobs/tick/runs?status=succeeded&limit=100")
        .await;
    assert_eq!(status, 200, "{list}");
    if let Some(total) = list["meta"]["total"].as_u64() {
        assert_eq!(total, 200, "{}", list["meta"]);
    }
}

// ---- 9. crash tests: a restarted PostgreSQL, a worker whose clock is wrong ----

/// The local PostgreSQL cluster the tests run against (Debian's `pg_ctlcluster` names).
const PG_CLUSTER: [&str; 2] = ["15", "main"];

/// Whether this process may restart the local PostgreSQL cluster (root, `pg_ctlcluster`).
fn can_restart_postgres() -> bool {
    nix::unistd::geteuid().is_root()
        && std::process::Command::new("pg_ctlcluster")
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok()
}

/// PostgreSQL restarted (`pg_ctlcluster 15 main restart`, every connection cut) while runs are
/// being accepted and executed by the serving process and two worker processes: they reconnect
/// by themselves, and every accepted run finishes exactly once (one handler execution per run,
/// counted by the destination server of its `builtin:http` call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_and_repeats_no_run() {
    if crate::helpers::postgres_admin_url().is_none() {
        eprintln!("skipped: restarts PostgreSQL (run with DATABASE_URL=postgres://...)");
        return;
    }
    if !can_restart_postgres() {
        eprintln!(
            "SKIPPED LOUDLY: restarting PostgreSQL needs root and pg_ctlcluster on this machine"
        );
        return;
    }
    // The other PostgreSQL tests of this run wait meanwhile (their servers would see errors).
    let db = TestDb::new_alone_on_postgres().await;
    let mut settings = test_settings(&db);
    // Long enough for the restart: a run whose write failed meanwhile keeps its claim.
    settings.worker.lease_ms = 10_000;
    // Few local slots: most runs go through the queue to the worker processes.
    settings.worker.concurrency = 4;
    let app = spawn_app_with(db, settings).await;
    let (base, hits) = crate::durability::counting_server(Duration::from_millis(200)).await;
    app.job(
        "call",
        "builtin:http",
        json!({"defaultParameters": {"method": "GET", "url": format!("{base}/none")},
            "retryPolicy": {"maxAttempts": 5, "strategy": "fixed", "initialDelayMs": 200}}),
    )
    .await;
    let workers = [
        WorkerProcess::spawn_with(&app.db, "worker-1", &[], 10_000),
        WorkerProcess::spawn_with(&app.db, "worker-2", &[], 10_000),
    ];

    let accepted: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = tokio::time::Instant::now();
    let load = {
        let (client, url) = (app.client.clone(), app.url("/api/jobs/call/run"));
        let (accepted, refused, base) = (accepted.clone(), refused.clone(), base.clone());
        tokio::spawn(async move {
            let mut posts = Vec::new();
            let mut i = 0usize;
            while started.elapsed() < Duration::from_secs(8) {
                let (client, url, accepted, refused) = (
                    client.clone(),
                    url.clone(),
                    accepted.clone(),
                    refused.clone(),
                );
                let body = json!({"parameters": {"url": format!("{base}/run/{i}")}});
                posts.push(tokio::spawn(async move {
                    match client.post(&url).json(&body).send().await {
                        Ok(res) if res.status().as_u16() == 202 => {
                            let v: Value = res.json().await.unwrap();
                            accepted.lock().unwrap().push((i, id_of(&v["data"])));
                        }
                        Ok(res) => refused
                            .lock()
                            .unwrap()
                            .push(format!("{i}: {}", res.status())),
                        Err(e) => refused.lock().unwrap().push(format!("{i}: {e}")),
                    }
                }));
                i += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            futures::future::join_all(posts).await;
        })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let restart = std::time::Instant::now();
    let status = tokio::process::Command::new("pg_ctlcluster")
        .args(PG_CLUSTER)
        .args(["restart", "--mode=fast"])
        .status()
        .await
        .expect("pg_ctlcluster");
    let down = restart.elapsed();
    assert!(status.success(), "pg_ctlcluster restart: {status}");
    eprintln!("PostgreSQL restarted; pg_ctlcluster took {down:?}");
    load.await.unwrap();

    let accepted = accepted.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    assert!(accepted.len() > 100, "too few runs accepted: {refused:?}");
    for (i, id) in &accepted {
        let done = app
            .wait_for_status(id, &TERMINAL, Duration::from_secs(90))
            .await;
        assert_eq!(
            done["status"],
            "succeeded",
            "run {i}: {done}\n{}\nworker-1:\n{}\nworker-2:\n{}",
            app.logs(id).await,
            workers[0].output(),
            workers[1].output()
        );
    }
    // Past a lease and a recovery sweep: nothing runs again.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let hits = hits.lock().unwrap().clone();
    for (i, id) in &accepted {
        let n = hits.get(&format!("/run/{i}")).copied().unwrap_or(0);
        assert_eq!(
            n,
            1,
            "run {i} ({id}) executed {n} times:\n{}",
            app.logs(id).await
        );
    }
    // Runs whose answer was lost in the restart ran at most once too.
    for (path, n) in &hits {
        assert!(*n <= 1, "{path} executed {n} times");
    }
    eprintln!(
        "accepted {} runs, refused {} during the restart",
        accepted.len(),
        refused.len()
    );
    app.shutdown().await;
}

/// A worker whose machine's clock is 90 s behind (libfaketime) keeps its lease: leases are
/// written and judged by the database's clock, so another worker's recovery sweep does not take
/// the run over while its attempt is still running. PostgreSQL only: on SQLite the database is
/// a file on this machine and its clock is the machine's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_clock_is_behind_keeps_its_lease() {
    if crate::helpers::postgres_admin_url().is_none() {
        eprintln!(
            "skipped: SQLite's clock is the machine's (run with DATABASE_URL=postgres://...)"
        );
        return;
    }
    let faketime = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is missing: apt-get install faketime (scripts/install-deps.sh does)");
    let faketime = faketime.to_str().unwrap();
    let app = serve_only_app().await;
    app.job(
        "nap",
        "builtin:sleep",
        json!({"retryPolicy": {"maxAttempts": 2}}),
    )
    .await;
    let behind = WorkerProcess::spawn_with(
        &app.db,
        "worker-behind",
        &[
            ("LD_PRELOAD", faketime),
            ("FAKETIME", "-90s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
        2000,
    );
    let run = app
        .run("nap", json!({"parameters": {"durationMs": 5000}}))
        .await;
    let id = id_of(&run);
    wait_for_log(&app, &id, "sleeping for 5000 ms", Duration::from_secs(30)).await;
    // A worker with an honest clock, whose recovery sweep looks at that lease every second.
    let honest = WorkerProcess::spawn(&app.db, "worker-honest");
    let done = app
        .wait_for_status(&id, &TERMINAL, Duration::from_secs(40))
        .await;
    let log = app.logs(&id).await;
    assert_eq!(
        (done["status"].as_str(), done["attempt"].as_i64()),
        (Some("succeeded"), Some(1)),
        "{done}\n{log}\nbehind:\n{}\nhonest:\n{}",
        behind.output(),
        honest.output()
    );
    assert!(!log.contains("worker lost"), "{log}");
    assert_eq!(count_lines(&log, "started on"), 1, "{log}");
    // Its clock really was off, and it knew.
    assert!(
        behind
            .output()
            .contains("this machine's clock differs from the database's"),
        "{}",
        behind.output()
    );
}
