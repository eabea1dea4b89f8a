//! Bounded resources (issue 15): the per-run log cap and the log writer's backpressure, log
//! reads by `tail` and `after`, follows that wait on the bus for runs that have not started,
//! and the limits on event streams, replays, followers, list offsets and request time. On the
//! real app (and a real worker process for memory), on both databases.
use std::{net::IpAddr, pin::Pin, time::Duration};

use futures::{Stream, StreamExt};
use reqwest::header;
use serde_json::{Value, json};
use server::db::{Database, Pool};

use crate::{
    builds::{build_job, id_of, make_repository, run_build, shell},
    helpers::{TestApp, TestDb, WorkerProcess, spawn_app, spawn_app_with, test_settings},
};

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// A client whose connections come from `ip`: any 127.0.0.0/8 address reaches the loopback
/// server, and each counts as a client of its own.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// (status, Retry-After, error code) of a refusal.
async fn refusal(res: reqwest::Response) -> (u16, Option<String>, String) {
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (status, retry, code)
}

/// A run of a no-op job due in an hour: it has not started while the test looks at it.
async fn later_run(app: &TestApp) -> String {
    app.job("later", "builtin:noop", json!({})).await;
    id_of(&app.run("later", json!({"delayMs": 3_600_000})).await)
}

/// Opens a streaming GET from `client`: the response (whatever its status).
async fn open(client: &reqwest::Client, app: &TestApp, path: &str) -> reqwest::Response {
    tokio::time::timeout(Duration::from_secs(10), client.get(app.url(path)).send())
        .await
        .expect("the server answers")
        .expect("request")
}

/// The next chunk of a body within `wait`: `Some(Some(text))`, `Some(None)` at its end, `None`
/// when nothing came.
async fn next_chunk(body: &mut Body, wait: Duration) -> Option<Option<String>> {
    match tokio::time::timeout(wait, body.next()).await {
        Err(_) => None,
        Ok(None) => Some(None),
        Ok(Some(chunk)) => Some(Some(
            String::from_utf8_lossy(&chunk.expect("the stream does not break")).into_owned(),
        )),
    }
}

/// Reads a body to its end (at most `wait`).
async fn to_end(body: &mut Body, wait: Duration) -> String {
    let mut text = String::new();
    tokio::time::timeout(wait, async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("no break")));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end within {wait:?}; so far: {text}"));
    text
}

fn body_of(res: reqwest::Response) -> Body {
    Box::pin(res.bytes_stream().map(|r| r.map(|b| b.to_vec())))
}

/// Waits until `probe` holds (every 100 ms), at most `timeout`.
async fn eventually(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- run logs: the cap, backpressure ----

/// `sh -c` printing `bytes` bytes of 1000-byte lines as fast as it can.
fn flood(bytes: u64) -> Value {
    shell(&format!(
        "yes '{}' | head -c {bytes}; echo; echo flood-done",
        "x".repeat(999)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_past_its_cap_is_cut_once_and_the_run_goes_on() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.max_log_bytes_per_run = 64 * 1024;
    let app = spawn_app_with(db, settings).await;
    let repo = tempfile::tempdir().unwrap();
    make_repository(repo.path());
    // Two attempts, each printing 2 MiB then failing: the cap is the run's, not an attempt's.
    build_job(
        &app,
        "chatty",
        json!({"command": shell(&format!(
            "yes '{}' | head -c 2097152; echo after-the-flood; exit 3",
            "y".repeat(99)
        ))}),
        json!({"retryPolicy": {"maxAttempts": 2, "strategy": "fixed", "initialDelayMs": 1000}}),
    )
    .await;
    let id = run_build(&app, "chatty", repo.path()).await;
    let done = app
        .wait_for_status(&id, &["failed", "succeeded"], Duration::from_secs(60))
        .await;
    // The run went on to its end: both attempts ran, and the command's outcome is its own.
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(
        done["errorMessage"], "command exited with status 3",
        "{done}"
    );
    let log = app.logs(&id).await;
    assert!(
        log.len() < 64 * 1024 + 16 * 1024,
        "the log holds {} bytes, past its cap of 64 KiB",
        log.len()
    );
    let reached: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("log limit reached"))
        .collect();
    assert_eq!(reached.len(), 1, "said once, for the run: {reached:?}");
    assert!(
        reached[0].contains("64 KiB") && reached[0].contains("--max-log-bytes-per-run"),
        "{}",
        reached[0]
    );
    // Each attempt says how much of its output was cut.
    let cut: Vec<&str> = log.lines().filter(|l| l.contains("log cut:")).collect();
    assert_eq!(cut.len(), 2, "{cut:?}");
    assert!(
        cut.iter()
            .all(|l| l.contains("MiB in") && l.contains("lines of output not stored")),
        "{cut:?}"
    );
    // Engine lines are kept past the cap; output is not.
    assert!(log.contains("attempt 2 failed: command exited with status 3; no attempts left"));
    assert!(
        !log.lines().any(|l| l == "after-the-flood"),
        "output past the cap was stored"
    );
    let stored_before_cut = log.lines().filter(|l| l.starts_with("yyyy")).count();
    assert!(
        stored_before_cut > 500,
        "{stored_before_cut} lines before the cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_keeps_the_worker_small_and_the_run_finishes() {
    // The runs execute in a worker process of their own, whose memory the test reads.
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.workers = 0;
    let app = spawn_app_with(db, settings).await;
    let repo = tempfile::tempdir().unwrap();
    make_repository(repo.path());
    // A cap the flood stays under: every line is stored, at the database's pace.
    let worker = WorkerProcess::spawn_with_args(
        &app.db,
        "flood-worker",
        &[],
        &["--max-log-bytes-per-run", "1073741824"],
    );
    build_job(&app, "warm-up", json!({"command": flood(1024)}), json!({})).await;
    let warm = run_build(&app, "warm-up", repo.path()).await;
    let warm = app
        .wait_for_status(&warm, &["succeeded", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(warm["status"], "succeeded", "{warm}\n{}", worker.output());
    let baseline = worker.memory_kib("VmRSS");

    const FLOOD: u64 = 256 * 1024 * 1024;
    build_job(&app, "flood", json!({"command": flood(FLOOD)}), json!({})).await;
    let id = run_build(&app, "flood", repo.path()).await;
    let done = app
        .wait_for_status(&id, &["succeeded", "failed"], Duration::from_secs(300))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", worker.output());
    let peak = worker.memory_kib("VmHWM");
    // Everything was stored, the last line included.
    let res = app.get(&format!("/api/job-runs/{id}/logs?tail=3")).await;
    let tail = res.text().await.unwrap();
    assert!(tail.contains("flood-done"), "{tail}");
    let mut whole = body_of(app.get(&format!("/api/job-runs/{id}/logs")).await);
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = whole.next().await {
        let chunk = chunk.expect("the log streams");
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    assert!(bytes > FLOOD, "{bytes} bytes stored of {FLOOD}");
    assert!(lines > FLOOD / 1000, "{lines} lines stored");
    // The log writer holds at most 8 MiB of lines; the pipe waits for the rest.
    eprintln!("flood: baseline {baseline} KiB, peak {peak} KiB");
    assert!(
        peak < baseline + 48 * 1024,
        "the worker grew from {baseline} KiB to a peak of {peak} KiB while a build printed {} MiB",
        FLOOD >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_printing_without_end_is_cut_at_the_default_cap_and_finishes() {
    // The issue's `yes`: 256 MiB of output against the default 10 MiB cap, in a worker process.
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.workers = 0;
    let app = spawn_app_with(db, settings).await;
    let repo = tempfile::tempdir().unwrap();
    make_repository(repo.path());
    let worker = WorkerProcess::spawn(&app.db, "yes-worker");
    build_job(&app, "warm-up", json!({"command": flood(1024)}), json!({})).await;
    let warm = run_build(&app, "warm-up", repo.path()).await;
    let warm = app
        .wait_for_status(&warm, &["succeeded", "failed"], Duration::from_secs(60))
        .await;
    assert_eq!(warm["status"], "succeeded", "{warm}\n{}", worker.output());
    let baseline = worker.memory_kib("VmRSS");
    build_job(
        &app,
        "yes",
        json!({"command": flood(268_435_456)}),
        json!({}),
    )
    .await;
    let id = run_build(&app, "yes", repo.path()).await;
    let done = app
        .wait_for_status(&id, &["succeeded", "failed"], Duration::from_secs(300))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", worker.output());
    let peak = worker.memory_kib("VmHWM");
    assert!(
        peak < baseline + 64 * 1024,
        "the worker grew from {baseline} KiB to a peak of {peak} KiB"
    );
    let res = app.get(&format!("/api/job-runs/{id}/logs")).await;
    let log = res.text().await.unwrap();
    assert!(
        log.len() <= 10 * 1024 * 1024 + 64 * 1024,
        "{} bytes stored",
        log.len()
    );
    assert!(
        log.len() > 10 * 1024 * 1024 - 4096,
        "{} bytes stored",
        log.len()
    );
    assert!(log.contains("keeps at most 10 MiB"), "the cut is announced");
    let cut = log
        .lines()
        .find(|l| l.contains("log cut:"))
        .expect("cut line");
    assert!(cut.contains("246 MiB"), "{cut}");
    assert!(
        !log.lines().any(|l| l == "flood-done"),
        "output past the cap was stored"
    );
    assert!(
        log.trim_end().ends_with("succeeded"),
        "{}",
        &log[log.len() - 300..]
    );
}

// ---- run logs: tail, after, follow ----

/// The text of `GET path` and its `switchyard-last-line-id` header.
async fn log_part(app: &TestApp, path: &str) -> (String, i64) {
    let res = app.get(path).await;
    assert_eq!(res.status(), 200, "{path}");
    let last = res
        .headers()
        .get("switchyard-last-line-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no last line id"));
    (res.text().await.unwrap(), last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_read_by_tail_and_after_and_follows_resume() {
    let app = spawn_app().await;
    let repo = tempfile::tempdir().unwrap();
    make_repository(repo.path());
    build_job(
        &app,
        "ticker",
        json!({"command": shell("for i in $(seq 1 8); do echo tick$i; sleep 0.3; done")}),
        json!({}),
    )
    .await;
    let id = run_build(&app, "ticker", repo.path()).await;
    // Part of the log while the run goes on, and where it ends.
    let (early, early_last) = loop {
        let (text, last) = log_part(&app, &format!("/api/job-runs/{id}/logs")).await;
        if text.contains("tick3") {
            break (text, last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(early_last > 0);
    // A follow from there streams the rest, and ends with the run.
    let res = app
        .get(&format!(
            "/api/job-runs/{id}/logs?follow=true&after={early_last}"
        ))
        .await;
    assert_eq!(res.status(), 200);
    let followed = to_end(&mut body_of(res), Duration::from_secs(30)).await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (whole, last) = log_part(&app, &format!("/api/job-runs/{id}/logs")).await;
    assert_eq!(
        format!("{early}{followed}"),
        whole,
        "no line lost or repeated"
    );
    assert!(whole.contains("tick8") && !followed.contains("tick1\n"));
    // `after` reads only what came since.
    let (since, since_last) =
        log_part(&app, &format!("/api/job-runs/{id}/logs?after={early_last}")).await;
    assert_eq!(since, followed);
    assert_eq!(since_last, last);
    let (nothing, same) = log_part(&app, &format!("/api/job-runs/{id}/logs?after={last}")).await;
    assert_eq!((nothing.as_str(), same), ("", last));
    // `tail` reads the end.
    let lines: Vec<&str> = whole.lines().collect();
    let (tail, tail_last) = log_part(&app, &format!("/api/job-runs/{id}/logs?tail=3")).await;
    assert_eq!(tail, format!("{}\n", lines[lines.len() - 3..].join("\n")));
    assert_eq!(tail_last, last);
    let (all, _) = log_part(&app, &format!("/api/job-runs/{id}/logs?tail=100000")).await;
    assert_eq!(all, whole);
    // Compressed on the way (the compression layer polls the body once more after its end).
    for encoding in ["gzip", "br"] {
        let res = app
            .client
            .get(app.url(&format!("/api/job-runs/{id}/logs")))
            .header(header::ACCEPT_ENCODING, encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()[header::CONTENT_ENCODING], encoding);
        let bytes = res.bytes().await.expect("the whole compressed log");
        assert!(!bytes.is_empty());
    }
    // Both: the last 2 of the lines after `early_last`.
    let (both, _) = log_part(
        &app,
        &format!("/api/job-runs/{id}/logs?after={early_last}&tail=2"),
    )
    .await;
    assert_eq!(both, tail.split_inclusive('\n').skip(1).collect::<String>());
    // A follow of an ended run with a tail.
    let res = app
        .get(&format!("/api/job-runs/{id}/logs?follow=true&tail=3"))
        .await;
    assert_eq!(
        to_end(&mut body_of(res), Duration::from_secs(10)).await,
        tail
    );
    for (query, path) in [
        ("tail=0", "/query/tail"),
        ("tail=100001", "/query/tail"),
        ("tail=last", "/query/tail"),
        ("after=-1", "/query/after"),
        ("after=x", "/query/after"),
    ] {
        let (status, body) = app
            .get_json(&format!("/api/job-runs/{id}/logs?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert_eq!(body["error"]["details"][0]["path"], path, "{body}");
    }
}

/// Renames the run log table away and back (the test's own database): a follow that read
/// the log while its run has not started would fail meanwhile.
async fn park_log_table(db: &Database, away: bool) {
    let sql = if away {
        "ALTER TABLE job_run_logs RENAME TO job_run_logs_parked"
    } else {
        "ALTER TABLE job_run_logs_parked RENAME TO job_run_logs"
    };
    match &db.pool {
        Pool::Sqlite(p) => sqlx::query(sql).execute(p).await.map(drop),
        Pool::Postgres(p) => sqlx::query(sql).execute(p).await.map(drop),
    }
    .expect("rename the log table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_of_a_run_that_has_not_started_waits_on_the_bus() {
    let app = spawn_app().await;
    let id = later_run(&app).await;
    let res = app
        .get(&format!("/api/job-runs/{id}/logs?follow=true"))
        .await;
    assert_eq!(res.status(), 200);
    let mut body = body_of(res);
    assert_eq!(
        next_chunk(&mut body, Duration::from_millis(500)).await,
        None,
        "nothing to send yet"
    );
    // While the run is due in an hour the follow does not read the log: without the table it
    // would fail and end.
    let db = Database::connect(&app.db.data_dir(), app.db.url.as_deref())
        .await
        .unwrap();
    park_log_table(&db, true).await;
    assert_eq!(
        next_chunk(&mut body, Duration::from_millis(1500)).await,
        None,
        "the follow read the log of a run that has not started"
    );
    park_log_table(&db, false).await;
    // The run's end wakes it at once (an event, not a poll).
    let (status, v) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    to_end(&mut body, Duration::from_secs(5)).await;
    db.close(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_followers_are_capped_per_client_and_in_total() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.limits.followers_per_client = 2;
    settings.limits.followers_total = 3;
    let app = spawn_app_with(db, settings).await;
    let id = later_run(&app).await;
    let path = format!("/api/job-runs/{id}/logs?follow=true");
    let one = client_from("127.0.0.1");
    let first = open(&one, &app, &path).await;
    let second = open(&one, &app, &path).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let (status, retry, code) = refusal(open(&one, &app, &path).await).await;
    assert_eq!(
        (status, retry.as_deref(), code.as_str()),
        (429, Some("5"), "rate_limited")
    );
    // Another client still gets one, up to the total.
    let third = open(&client_from("127.0.0.2"), &app, &path).await;
    assert_eq!(third.status(), 200);
    let (status, retry, code) = refusal(open(&client_from("127.0.0.3"), &app, &path).await).await;
    assert_eq!(
        (status, retry.as_deref(), code.as_str()),
        (503, Some("5"), "overloaded")
    );
    // Reading the log without following is not limited.
    assert_eq!(
        app.get(&format!("/api/job-runs/{id}/logs")).await.status(),
        200
    );
    // A client that goes away gives its place back.
    drop(first);
    eventually(
        "a freed follow place",
        Duration::from_secs(20),
        async || open(&one, &app, &path).await.status() == 200,
    )
    .await;
    drop((second, third));
}

// ---- event streams ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_client_and_in_total() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.limits.sse_per_client = 2;
    settings.limits.sse_total = 3;
    let app = spawn_app_with(db, settings).await;
    let one = client_from("127.0.0.1");
    let first = open(&one, &app, "/api/events").await;
    let second = open(&one, &app, "/api/events").await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let (status, retry, code) = refusal(open(&one, &app, "/api/events").await).await;
    assert_eq!(
        (status, retry.as_deref(), code.as_str()),
        (429, Some("5"), "rate_limited")
    );
    let third = open(&client_from("127.0.0.2"), &app, "/api/events").await;
    assert_eq!(third.status(), 200);
    let (status, retry, code) =
        refusal(open(&client_from("127.0.0.3"), &app, "/api/events").await).await;
    assert_eq!(
        (status, retry.as_deref(), code.as_str()),
        (503, Some("5"), "overloaded")
    );
    drop(first);
    eventually(
        "a freed stream place",
        Duration::from_secs(20),
        async || open(&one, &app, "/api/events").await.status() == 200,
    )
    .await;
    drop((second, third));
}

/// SSE blocks of a body until `done` holds for one of them: (id, event, data) each.
async fn sse_until(
    body: &mut Body,
    wait: Duration,
    done: impl Fn(&(i64, String, Value)) -> bool,
) -> Vec<(i64, String, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    tokio::time::timeout(wait, async {
        while let Some(chunk) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.expect("no break")));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (0, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().unwrap_or(0);
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() {
                    continue;
                }
                let ev = (
                    id,
                    event,
                    serde_json::from_str(&data).unwrap_or(Value::Null),
                );
                let stop = done(&ev);
                out.push(ev);
                if stop {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching event within {wait:?}; got {out:?}"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_capped_and_says_so() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.limits.replay_events = 5;
    let app = spawn_app_with(db, settings).await;
    // Events to miss: definitions and runs.
    let mut live = body_of(app.get("/api/events").await);
    app.job("replayed", "builtin:noop", json!({})).await;
    for _ in 0..4 {
        let id = id_of(&app.run("replayed", json!({})).await);
        app.wait_terminal(&id).await;
    }
    // A last event: once it is seen live, every event before it is stored.
    app.job("last-one", "builtin:noop", json!({})).await;
    let is_last = |ev: &(i64, String, Value)| ev.2["data"]["job"]["slug"] == "last-one";
    sse_until(&mut live, Duration::from_secs(10), is_last).await;
    drop(live);
    let res = app
        .client
        .get(app.url("/api/events"))
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let mut body = body_of(res);
    let replayed = sse_until(&mut body, Duration::from_secs(10), is_last).await;
    drop(body);
    let (first, rest) = replayed.split_first().unwrap();
    assert_eq!(first.1, "stream.truncated", "{replayed:?}");
    assert_eq!(first.2["type"], "stream.truncated");
    assert_eq!(first.2["data"]["lastEventId"], 0);
    assert_eq!(first.2["data"]["maxReplay"], 5);
    assert!(
        first.2["data"]["message"]
            .as_str()
            .unwrap()
            .contains("reload"),
        "{first:?}"
    );
    assert_eq!(rest.len(), 5, "the newest 5 only: {rest:?}");
    assert_eq!(first.0, first.2["data"]["resumeAfter"].as_i64().unwrap());
    assert_eq!(
        rest[0].0,
        first.0 + 1,
        "the replay goes on right after the cut"
    );
    // A client that missed no more than the cap gets exactly what it missed, no notice.
    let from = rest[1].0;
    let res = app
        .client
        .get(app.url("/api/events"))
        .header("Last-Event-ID", from.to_string())
        .send()
        .await
        .unwrap();
    let again = sse_until(&mut body_of(res), Duration::from_secs(10), is_last).await;
    let ids: Vec<i64> = again.iter().map(|e| e.0).collect();
    assert_eq!(ids, rest[2..].iter().map(|e| e.0).collect::<Vec<_>>());
}

// ---- lists and request time ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_are_bounded_and_point_to_the_cursor() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.limits.max_offset = 50;
    let app = spawn_app_with(db, settings).await;
    for list in [
        "/api/job-runs",
        "/api/workflow-runs",
        "/api/jobs/repository-build/runs",
    ] {
        let (status, body) = app.get_json(&format!("{list}?offset=50")).await;
        assert_eq!(status, 200, "{list}: {body}");
        let (status, body) = app.get_json(&format!("{list}?offset=51&limit=10")).await;
        assert_eq!(status, 400, "{list}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert_eq!(body["error"]["details"][0]["path"], "/query/offset");
        let message = body["error"]["details"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("cursor") && message.contains("50"),
            "{message}"
        );
    }
    // The default bound.
    let app = spawn_app().await;
    let (status, _) = app.get_json("/api/job-runs?offset=10000").await;
    assert_eq!(status, 200);
    let (status, _) = app.get_json("/api/job-runs?offset=10001").await;
    assert_eq!(status, 400);
}

/// Holds the database's write lock (SQLite) or the job definitions' (PostgreSQL) until the
/// returned transaction is rolled back: writes to them wait meanwhile.
async fn hold_writes(db: &Database) -> Held {
    match &db.pool {
        Pool::Sqlite(p) => {
            let mut conn = p.acquire().await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .unwrap();
            Held::Sqlite(conn)
        }
        Pool::Postgres(p) => {
            let mut tx = p.begin().await.unwrap();
            sqlx::query("LOCK TABLE job_definitions IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .unwrap();
            Held::Postgres(tx)
        }
    }
}

enum Held {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Held {
    async fn release(self) {
        match self {
            Held::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
            }
            Held::Postgres(tx) => tx.rollback().await.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_times_out_with_503_and_streams_go_on() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.limits.request_timeout = Duration::from_millis(500);
    let app = spawn_app_with(db, settings).await;
    // Streams outlive the timeout: an event stream and a follow opened now still deliver
    // after it.
    let mut events = body_of(app.get("/api/events?topics=job.definition.*").await);
    let id = later_run(&app).await;
    let mut follow = body_of(
        app.get(&format!("/api/job-runs/{id}/logs?follow=true"))
            .await,
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.job("after-the-timeout", "builtin:noop", json!({}))
        .await;
    sse_until(&mut events, Duration::from_secs(10), |ev| {
        ev.2["data"]["job"]["slug"] == "after-the-timeout"
    })
    .await;
    app.patch_json(
        &format!("/api/job-runs/{id}"),
        &json!({"status": "canceled"}),
    )
    .await;
    to_end(&mut follow, Duration::from_secs(10)).await;

    // A write that cannot get the database in time.
    let db = Database::connect(&app.db.data_dir(), app.db.url.as_deref())
        .await
        .unwrap();
    let held = hold_writes(&db).await;
    let started = std::time::Instant::now();
    let res = app
        .client
        .post(app.url("/api/jobs"))
        .json(&json!({"slug": "stuck", "name": "Stuck", "entryPoint": "builtin:noop"}))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let (status, retry, code) = refusal(res).await;
    held.release().await;
    assert_eq!(
        (status, retry.as_deref(), code.as_str()),
        (503, Some("5"), "timeout")
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // Reads go on meanwhile, and the server is fine afterwards.
    let (status, _) = app.get_json("/api/jobs").await;
    assert_eq!(status, 200);
    db.close(Duration::from_secs(5)).await;
}
