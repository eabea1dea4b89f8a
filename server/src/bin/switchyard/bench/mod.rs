//! `switchyard bench`: pushes no-op runs through the real HTTP API and workers of an in-process
//! server (fresh SQLite file or fresh PostgreSQL database, default settings) and prints
//! throughput, queue latency (startedAt - createdAt) and idle memory.
//!
//! `--workflows` measures workflow runs instead: a 10-step linear chain of `builtin:noop` steps
//! (sequential runs, then concurrent ones) and a 1 -> 50 -> 1 fan-out/fan-in. Durations are the
//! server's `completedAt - createdAt` (taken from the `workflow.run.*` event, or from
//! `GET /api/workflow-runs/:id` if the event is late), never the client's clock; the engine
//! overhead per step is the run duration divided by its steps (no-op steps do no work).
//!
//! Without make (a release build; PostgreSQL from `DATABASE_URL` or the local default):
//!
//! ```text
//! cargo run --release -p server --bin switchyard -- bench --database both --runs 2000
//! cargo run --release -p server --bin switchyard -- bench --pages 100000 --database sqlite
//! cargo run --release -p server --bin switchyard -- bench --workflows --database both \
//!     [--chain-runs 20] [--concurrent-chains 20] [--fanout-runs 10]
//! ```
mod seed;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::{Value, json};

use server::{
    Application, Settings,
    db::{create_scratch_postgres, drop_scratch_postgres},
    settings::{BenchArgs, BenchDatabase},
};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

pub async fn run(args: BenchArgs, database_url: Option<String>) -> anyhow::Result<()> {
    let pg_admin = database_url
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| DEFAULT_PG.into());
    if matches!(args.database, BenchDatabase::Sqlite | BenchDatabase::Both) {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-bench-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let result = bench_one("sqlite", Settings::local(dir.clone(), None), &args).await;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    if matches!(args.database, BenchDatabase::Postgres | BenchDatabase::Both) {
        let url = create_scratch_postgres(&pg_admin, "switchyard_bench").await?;
        let dir = std::env::temp_dir().join(format!(
            "switchyard-bench-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let result = bench_one(
            "postgres",
            Settings::local(dir.clone(), Some(url.clone())),
            &args,
        )
        .await;
        let _ = drop_scratch_postgres(&pg_admin, &url).await;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    Ok(())
}

fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn sort(values: &mut [f64]) {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn bench_one(label: &str, settings: Settings, args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(stored) = args.pages {
        return bench_pages(label, settings, stored).await;
    }
    if args.workflows {
        return bench_workflows(label, settings, args).await;
    }
    let app = Application::build(settings).await?;
    let base = format!("http://{}", app.address());
    let stop = app.stop_token();
    let server = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_mb();

    let res = client
        .post(format!("{base}/api/jobs"))
        .json(&json!({"slug": "bench-noop", "name": "Bench no-op", "entryPoint": "builtin:noop"}))
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "creating the bench job: {}",
        res.status()
    );

    // 1. Throughput: push N runs from concurrent clients, wait until all succeeded.
    let started = Instant::now();
    let per_client = args.runs.div_ceil(args.clients.max(1));
    let mut pushers = Vec::new();
    for c in 0..args.clients.max(1) {
        let client = client.clone();
        let url = format!("{base}/api/jobs/bench-noop/run");
        let n = per_client.min(args.runs.saturating_sub(c * per_client));
        pushers.push(tokio::spawn(async move {
            let mut answered = Vec::with_capacity(n);
            for i in 0..n {
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .json(&json!({"parameters": {"i": i}}))
                    .send()
                    .await?;
                anyhow::ensure!(
                    r.status().as_u16() == 202,
                    "run request answered {}",
                    r.status()
                );
                answered.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(answered)
        }));
    }
    let mut accept_loaded = Vec::new();
    for p in pushers {
        accept_loaded.extend(p.await??);
    }
    sort(&mut accept_loaded);
    let pushed = started.elapsed();
    let total = args.runs as u64;
    loop {
        let done = count(&client, &base, "succeeded").await?;
        if done >= total {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "bench timed out with {done}/{total} done"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let saturated = latencies(&client, &base, total as usize).await?;

    // 2. Latency when not saturated: one run every 25 ms.
    let paced = 200usize;
    let mut accept_paced = Vec::with_capacity(paced);
    for i in 0..paced {
        let sent = Instant::now();
        let r = client
            .post(format!("{base}/api/jobs/bench-noop/run"))
            .json(&json!({"parameters": {"paced": i}}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202);
        accept_paced.push(sent.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    sort(&mut accept_paced);
    while count(&client, &base, "succeeded").await? < total + paced as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unsat = latencies(&client, &base, paced).await?;
    let busy_rss = rss_mb();

    // Queue latency is startedAt - createdAt (0 for a run stored already claimed by an idle
    // worker of the accepting process); the accept latency is what a client waits for the
    // 202, which the run is committed by (started, or queued).
    println!(
        "bench {label}: {total} no-op runs in {:.2}s => {:.0} runs/s (push {:.0} req/s); \
         under load: queue latency p50 {:.1} ms p95 {:.1} ms, accept latency p50 {:.1} ms p95 {:.1} ms; \
         unsaturated (1 run/25 ms): queue latency p50 {:.1} ms p95 {:.1} ms, accept latency p50 {:.1} ms p95 {:.1} ms; \
         RSS idle {:.1} MB, after load {:.1} MB",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        total as f64 / pushed.as_secs_f64(),
        percentile(&saturated, 0.5),
        percentile(&saturated, 0.95),
        percentile(&accept_loaded, 0.5),
        percentile(&accept_loaded, 0.95),
        percentile(&unsat, 0.5),
        percentile(&unsat, 0.95),
        percentile(&accept_paced, 0.5),
        percentile(&accept_paced, 0.95),
        idle_rss.unwrap_or(f64::NAN),
        busy_rss.unwrap_or(f64::NAN),
    );
    stop.cancel();
    let _ = server.await;
    Ok(())
}

async fn count(client: &reqwest::Client, base: &str, status: &str) -> anyhow::Result<u64> {
    let v: Value = client
        .get(format!("{base}/api/job-runs?status={status}&limit=1"))
        .send()
        .await?
        .json()
        .await?;
    v.pointer("/meta/total")
        .and_then(Value::as_u64)
        .context("meta.total missing")
}

/// startedAt - createdAt in ms of the newest `n` runs, sorted.
async fn latencies(client: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    let mut cursor: Option<String> = None;
    while out.len() < n {
        let mut url = format!("{base}/api/job-runs?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let v: Value = client.get(url).send().await?.json().await?;
        let runs = v["data"].as_array().cloned().unwrap_or_default();
        for r in &runs {
            let created = r["createdAt"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            let started = r["startedAt"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            if let (Some(c), Some(s)) = (created, started) {
                out.push((s - c).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
        cursor = v
            .pointer("/meta/nextCursor")
            .and_then(Value::as_str)
            .map(str::to_string);
        if cursor.is_none() || runs.is_empty() {
            break;
        }
    }
    out.truncate(n);
    sort(&mut out);
    Ok(out)
}

/// The list pages with `stored` finished runs in the database: medians and p95 of the REST run
/// lists (first page, filtered, searched, deep keyset page), the pages' server functions and
/// the server-rendered pages.
async fn bench_pages(label: &str, mut settings: Settings, stored: u64) -> anyhow::Result<()> {
    settings.worker.workers = 0;
    let (data_dir, url) = (settings.data_dir.clone(), settings.database_url.clone());
    let app = Application::build(settings).await?;
    let base = format!("http://{}", app.address());
    let stop = app.stop_token();
    let server = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let store =
        server::store::Store::new(server::db::Database::connect(&data_dir, url.as_deref()).await?);

    let jobs = 20u64;
    let seeding = Instant::now();
    let now = chrono::Utc::now();
    for j in 0..jobs {
        let slug = format!("bench-job-{j:02}");
        let res = client
            .post(format!("{base}/api/jobs"))
            .json(&json!({"slug": slug, "name": format!("Bench job {j}"), "entryPoint": "builtin:noop"}))
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "creating {slug}: {}",
            res.status()
        );
        let def = store.get_job(&slug).await?.context("bench job stored")?;
        seed::seed_finished_runs(
            &store.database().conn,
            &def,
            stored / jobs,
            now,
            chrono::TimeDelta::days(7),
        )
        .await?;
    }
    println!(
        "bench {label} pages: stored {} runs in {:.1}s",
        stored / jobs * jobs,
        seeding.elapsed().as_secs_f64()
    );
    // A cursor half-way down the newest-first list.
    let mut deep: Option<String> = None;
    for _ in 0..20 {
        let mut url = format!("{base}/api/job-runs?limit=100");
        if let Some(c) = &deep {
            url.push_str(&format!("&cursor={c}"));
        }
        let v: Value = client.get(url).send().await?.json().await?;
        deep = v
            .pointer("/meta/nextCursor")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    let deep = deep.context("a deep cursor")?;
    let sf = |endpoint: &str, form: &str| (format!("{base}/_sf/{endpoint}"), form.to_string());
    let gets = [
        ("REST first page", format!("{base}/api/job-runs?limit=25")),
        (
            "REST status=expired",
            format!("{base}/api/job-runs?limit=25&status=expired"),
        ),
        (
            "REST job filter",
            format!("{base}/api/jobs/bench-job-07/runs?limit=25"),
        ),
        (
            "REST search",
            format!("{base}/api/job-runs?limit=25&q=failure%2012345"),
        ),
        (
            "REST page 21 (cursor)",
            format!("{base}/api/job-runs?limit=25&cursor={deep}"),
        ),
        ("page /runs", format!("{base}/runs")),
        (
            "page /runs?status=failed",
            format!("{base}/runs?status=failed"),
        ),
        ("page /jobs", format!("{base}/jobs")),
        ("page /jobs/:slug", format!("{base}/jobs/bench-job-03")),
        ("page / (dashboard)", format!("{base}/")),
    ];
    let posts = [
        ("fn job-summaries", sf("job-summaries", "")),
        ("fn dashboard", sf("dashboard", "")),
        (
            "fn runs (job+status)",
            sf("runs", "job=bench-job-05&status=canceled"),
        ),
    ];
    let rounds = 15;
    let measure = |name: &str, mut times: Vec<f64>| {
        sort(&mut times);
        println!(
            "bench {label} pages: {name:<26} p50 {:>7.1} ms  p95 {:>7.1} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.95)
        );
    };
    for (name, url) in &gets {
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let res = client.get(url).send().await?;
            anyhow::ensure!(res.status().is_success(), "{name}: {}", res.status());
            res.bytes().await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        measure(name, times);
    }
    for (name, (url, form)) in &posts {
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let res = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.clone())
                .send()
                .await?;
            anyhow::ensure!(res.status().is_success(), "{name}: {}", res.status());
            res.bytes().await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        measure(name, times);
    }
    stop.cancel();
    let _ = server.await;
    Ok(())
}

/// A workflow of `steps` no-op steps `s0..s{steps-1}`, each depending on the previous one.
fn chain_workflow(slug: &str, steps: usize) -> Value {
    let steps: Vec<Value> = (0..steps)
        .map(|i| {
            let depends: Vec<String> = if i == 0 {
                vec![]
            } else {
                vec![format!("s{}", i - 1)]
            };
            json!({"id": format!("s{i}"), "jobSlug": "bench-noop", "dependsOn": depends,
                "parameters": {}})
        })
        .collect();
    json!({"slug": slug, "name": format!("Bench chain of {}", steps.len()), "version": 1,
        "steps": steps})
}

/// A workflow `start` -> `m0..m{width-1}` -> `end` of no-op steps.
fn fanout_workflow(slug: &str, width: usize) -> Value {
    let step = |id: &str, depends: Vec<String>| json!({"id": id, "jobSlug": "bench-noop", "dependsOn": depends, "parameters": {}});
    let mids: Vec<String> = (0..width).map(|i| format!("m{i}")).collect();
    let mut steps = vec![step("start", vec![])];
    steps.extend(mids.iter().map(|m| step(m, vec!["start".into()])));
    steps.push(step("end", mids));
    json!({"slug": slug, "name": format!("Bench fan-out 1-{width}-1"), "version": 1,
        "steps": steps})
}

fn timestamp(run: &Value, key: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    run.get(key)?
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
}

/// A finished run's server-side duration, `completedAt - createdAt`, in ms.
fn run_duration_ms(run: &Value) -> Option<f64> {
    let created = timestamp(run, "createdAt")?;
    let completed = timestamp(run, "completedAt")?;
    Some((completed - created).num_microseconds()? as f64 / 1000.0)
}

/// Median and p95 of a sample (nearest rank, as the other benches).
fn median_p95(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sort(&mut sorted);
    (percentile(&sorted, 0.5), percentile(&sorted, 0.95))
}

fn verdict(value: f64, limit: f64) -> &'static str {
    if value <= limit { "met" } else { "NOT met" }
}

const TERMINAL: [&str; 3] = ["succeeded", "failed", "canceled"];

/// Finished workflow runs by id, filled from `/api/events?topics=workflow.run.*`.
#[derive(Clone)]
struct FinishedRuns {
    runs: Arc<Mutex<HashMap<String, Value>>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl FinishedRuns {
    /// Subscribes (the response headers are in when this returns, so nothing started afterwards
    /// is missed) and follows the stream in a task.
    async fn subscribe(
        client: &reqwest::Client,
        base: &str,
    ) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let res = client
            .get(format!("{base}/api/events?topics=workflow.run.*"))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "events: {}", res.status());
        let finished = FinishedRuns {
            runs: Default::default(),
            changed: tokio::sync::watch::Sender::new(0),
        };
        let me = finished.clone();
        let task = tokio::spawn(async move {
            let mut stream = res.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let data: String = block
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect::<Vec<_>>()
                        .join("\n");
                    let Ok(ev) = serde_json::from_str::<Value>(&data) else {
                        continue;
                    };
                    let run = &ev["data"]["run"];
                    let (Some(id), Some(status)) = (run["id"].as_str(), run["status"].as_str())
                    else {
                        continue;
                    };
                    if TERMINAL.contains(&status) {
                        me.runs
                            .lock()
                            .expect("not poisoned")
                            .insert(id.to_string(), run.clone());
                        me.changed.send_modify(|n| *n += 1);
                    }
                }
            }
        });
        Ok((finished, task))
    }

    /// The finished run: from the event stream, or from `GET /api/workflow-runs/:id` when no
    /// event came for 250 ms.
    async fn wait(&self, client: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<Value> {
        let mut rx = self.changed.subscribe();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            rx.borrow_and_update();
            if let Some(run) = self.runs.lock().expect("not poisoned").remove(id) {
                return Ok(run);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "workflow run {id} did not finish"
            );
            if tokio::time::timeout(Duration::from_millis(250), rx.changed())
                .await
                .is_err()
            {
                let v: Value = client
                    .get(format!("{base}/api/workflow-runs/{id}"))
                    .send()
                    .await?
                    .json()
                    .await?;
                let run = &v["data"];
                if run["status"]
                    .as_str()
                    .is_some_and(|s| TERMINAL.contains(&s))
                {
                    return Ok(run.clone());
                }
            }
        }
    }
}

async fn start_workflow(
    client: &reqwest::Client,
    base: &str,
    slug: &str,
) -> anyhow::Result<String> {
    let res = client
        .post(format!("{base}/api/workflows/{slug}/run"))
        .json(&json!({"parameters": {}}))
        .send()
        .await?;
    anyhow::ensure!(
        res.status().as_u16() == 202,
        "starting {slug}: {}",
        res.status()
    );
    let v: Value = res.json().await?;
    v.pointer("/data/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("run id missing")
}

/// Waits for a finished run and checks it succeeded; its server-side duration in ms.
async fn finished_duration(
    finished: &FinishedRuns,
    client: &reqwest::Client,
    base: &str,
    id: &str,
) -> anyhow::Result<(f64, Value)> {
    let run = finished.wait(client, base, id).await?;
    anyhow::ensure!(
        run["status"] == "succeeded",
        "workflow run {id} ended {}: {}",
        run["status"],
        run["errorMessage"]
    );
    let ms = run_duration_ms(&run).context("createdAt/completedAt missing")?;
    Ok((ms, run))
}

/// Runs `slug` `n` times one after the other, printing each run; the durations in ms.
async fn sequential(
    label: &str,
    name: &str,
    slug: &str,
    steps: usize,
    n: usize,
    (finished, client, base): (&FinishedRuns, &reqwest::Client, &str),
) -> anyhow::Result<Vec<f64>> {
    let mut durations = Vec::with_capacity(n);
    let wall = Instant::now();
    for i in 0..n {
        let id = start_workflow(client, base, slug).await?;
        let (ms, _) = finished_duration(finished, client, base, &id).await?;
        println!(
            "bench {label} workflows: {name} run {:>2}: {ms:>8.1} ms  {:>6.2} ms/step  {:>6.1} runs/s",
            i + 1,
            ms / steps as f64,
            1000.0 / ms
        );
        durations.push(ms);
    }
    let (p50, p95) = median_p95(&durations);
    let sum: f64 = durations.iter().sum();
    println!(
        "bench {label} workflows: {name} x{n} sequential: duration p50 {p50:.1} ms p95 {p95:.1} ms; \
         per step p50 {:.2} ms p95 {:.2} ms; {:.1} runs/s by server time ({:.1} runs/s client wall clock)",
        p50 / steps as f64,
        p95 / steps as f64,
        n as f64 * 1000.0 / sum,
        n as f64 / wall.elapsed().as_secs_f64()
    );
    Ok(durations)
}

async fn bench_workflows(label: &str, settings: Settings, args: &BenchArgs) -> anyhow::Result<()> {
    const CHAIN: usize = 10;
    const WIDTH: usize = 50;
    let step_target = if label == "postgres" { 10.0 } else { 5.0 };
    let app = Application::build(settings).await?;
    let base = format!("http://{}", app.address());
    let stop = app.stop_token();
    let server = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let res = client
        .post(format!("{base}/api/jobs"))
        .json(&json!({"slug": "bench-noop", "name": "Bench no-op", "entryPoint": "builtin:noop"}))
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "creating the bench job: {}",
        res.status()
    );
    for body in [
        chain_workflow("bench-chain", CHAIN),
        fanout_workflow("bench-fanout", WIDTH),
    ] {
        let res = client
            .post(format!("{base}/api/workflows"))
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        anyhow::ensure!(
            status.is_success(),
            "creating workflow {}: {status} {}",
            body["slug"],
            res.text().await.unwrap_or_default()
        );
    }
    let (finished, events) = FinishedRuns::subscribe(&client, &base).await?;
    // One unreported warm-up run of each (definition caches, connections, prepared statements).
    for slug in ["bench-chain", "bench-fanout"] {
        let id = start_workflow(&client, &base, slug).await?;
        finished_duration(&finished, &client, &base, &id).await?;
    }

    // 1. The 10-step chain, one run at a time.
    let chain = sequential(
        label,
        "chain(10)",
        "bench-chain",
        CHAIN,
        args.chain_runs,
        (&finished, &client, &base),
    )
    .await?;

    // 1b. The chain, `concurrent_chains` runs started at once.
    let mut concurrent = None;
    if args.concurrent_chains > 0 {
        let k = args.concurrent_chains;
        let wall = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..k {
            let (client, base, finished) = (client.clone(), base.clone(), finished.clone());
            tasks.push(tokio::spawn(async move {
                let id = start_workflow(&client, &base, "bench-chain").await?;
                finished_duration(&finished, &client, &base, &id).await
            }));
        }
        let mut durations = Vec::new();
        let (mut first_created, mut last_completed) = (None, None);
        for t in tasks {
            let (ms, run) = t.await??;
            durations.push(ms);
            let (c, d) = (timestamp(&run, "createdAt"), timestamp(&run, "completedAt"));
            first_created = first_created.min(c).or(c);
            last_completed = last_completed.max(d);
        }
        let span_ms = match (first_created, last_completed) {
            (Some(c), Some(d)) => (d - c).num_microseconds().unwrap_or(0) as f64 / 1000.0,
            _ => f64::NAN,
        };
        let (p50, p95) = median_p95(&durations);
        println!(
            "bench {label} workflows: chain(10) x{k} concurrent: duration p50 {p50:.1} ms p95 {p95:.1} ms; \
             per step p50 {:.2} ms p95 {:.2} ms; {:.1} runs/s over {span_ms:.0} ms of server time \
             ({:.1} runs/s client wall clock) = {:.2} ms of server time per step",
            p50 / CHAIN as f64,
            p95 / CHAIN as f64,
            k as f64 * 1000.0 / span_ms,
            k as f64 / wall.elapsed().as_secs_f64(),
            span_ms / (k * CHAIN) as f64,
        );
        // Each run's steps wait behind the other runs' steps: the engine's cost per step under
        // this load is the server time the batch took over all its steps.
        concurrent = Some((k, span_ms / (k * CHAIN) as f64));
    }

    // 2. The 1 -> 50 -> 1 fan-out/fan-in, one run at a time.
    let fan_steps = WIDTH + 2;
    let fanout = sequential(
        label,
        "fan-out(1-50-1)",
        "bench-fanout",
        fan_steps,
        args.fanout_runs,
        (&finished, &client, &base),
    )
    .await?;

    let (chain_p50, chain_p95) = median_p95(&chain);
    let (fan_p50, fan_p95) = median_p95(&fanout);
    println!(
        "bench {label} workflows: SUMMARY chain(10) per step p50 {:.2} ms p95 {:.2} ms (target <= {step_target} ms: {} at p50, {} at p95){}; \
         fan-out(1-50-1) p50 {fan_p50:.1} ms p95 {fan_p95:.1} ms = {:.2} ms/step, {:.1} ms/level (target < 1000 ms: {} at p50, {} at p95)",
        chain_p50 / CHAIN as f64,
        chain_p95 / CHAIN as f64,
        verdict(chain_p50 / CHAIN as f64, step_target),
        verdict(chain_p95 / CHAIN as f64, step_target),
        concurrent
            .map(|(k, c)| format!(
                "; {k} chains at once: {c:.2} ms of server time per step (throughput, no target)"
            ))
            .unwrap_or_default(),
        fan_p50 / fan_steps as f64,
        fan_p50 / 3.0,
        verdict(fan_p50, 999.999),
        verdict(fan_p95, 999.999),
    );
    events.abort();
    stop.cancel();
    let _ = server.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_links_each_step_to_the_previous_one() {
        let w = chain_workflow("c", 10);
        let steps = w["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 10);
        assert_eq!(steps[0]["id"], "s0");
        assert_eq!(steps[0]["dependsOn"], json!([]));
        assert_eq!(steps[9]["id"], "s9");
        assert_eq!(steps[9]["dependsOn"], json!(["s8"]));
        assert!(steps.iter().all(|s| s["jobSlug"] == "bench-noop"));
        assert!(domain::workflow::parse_workflow_spec(&w, &BenchJobs).is_ok());
    }

    struct BenchJobs;
    impl domain::workflow::Catalog for BenchJobs {
        fn job_exists(&self, slug: &str) -> bool {
            slug == "bench-noop"
        }
        fn service_exists(&self, _: &str) -> bool {
            false
        }
    }

    #[test]
    fn fanout_joins_every_middle_step() {
        let w = fanout_workflow("f", 50);
        let steps = w["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 52);
        assert_eq!(steps[0]["id"], "start");
        assert_eq!(steps[1]["dependsOn"], json!(["start"]));
        assert_eq!(steps[50]["id"], "m49");
        assert_eq!(steps[51]["id"], "end");
        assert_eq!(steps[51]["dependsOn"].as_array().unwrap().len(), 50);
        assert_eq!(steps[51]["dependsOn"][49], "m49");
        assert!(domain::workflow::parse_workflow_spec(&w, &BenchJobs).is_ok());
    }

    #[test]
    fn durations_come_from_server_timestamps() {
        let run = json!({"createdAt": "2025-01-01T00:00:00.000100Z",
            "completedAt": "2025-01-01T00:00:00.042600Z"});
        assert_eq!(run_duration_ms(&run), Some(42.5));
        assert_eq!(
            run_duration_ms(&json!({"createdAt": "2025-01-01T00:00:00Z"})),
            None
        );
    }

    #[test]
    fn median_and_p95_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(median_p95(&v), (11.0, 19.0));
        assert_eq!(median_p95(&[3.0]), (3.0, 3.0));
        assert!(median_p95(&[]).0.is_nan());
        assert_eq!(verdict(5.0, 5.0), "met");
        assert_eq!(verdict(5.1, 5.0), "NOT met");
    }
}
