//! `switchyard bench` (the default): no-op job runs pushed by concurrent clients until all
//! succeeded (throughput, queue and accept latency under load), then one run every 25 ms
//! (latency when not saturated), and the process's memory idle and after the load.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use server::{Settings, settings::BenchArgs};

use super::{BenchServer, percentile, rss_mb, sort};

/// Runs pushed one every 25 ms for the unsaturated latencies.
const PACED: usize = 200;

/// What one run bench measured; latencies in ms, sorted.
struct RunsReport {
    total: u64,
    elapsed: Duration,
    pushed: Duration,
    saturated: Vec<f64>,
    accept_loaded: Vec<f64>,
    unsaturated: Vec<f64>,
    accept_paced: Vec<f64>,
    idle_rss: Option<f64>,
    busy_rss: Option<f64>,
}

pub(super) async fn bench_runs(
    label: &str,
    settings: Settings,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let server = BenchServer::start(settings).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_mb();
    server.create_noop_job().await?;
    let (client, base) = (&server.client, server.base.as_str());

    // 1. Throughput: push N runs from concurrent clients, wait until all succeeded.
    let started = Instant::now();
    let accept_loaded = push_runs(&server, args.runs, args.clients).await?;
    let pushed = started.elapsed();
    let total = args.runs as u64;
    loop {
        let done = count(client, base, "succeeded").await?;
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
    let saturated = latencies(client, base, total as usize).await?;

    // 2. Latency when not saturated: one run every 25 ms.
    let accept_paced = push_paced(&server, PACED).await?;
    while count(client, base, "succeeded").await? < total + PACED as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unsaturated = latencies(client, base, PACED).await?;
    let busy_rss = rss_mb();

    print_report(
        label,
        &RunsReport {
            total,
            elapsed,
            pushed,
            saturated,
            accept_loaded,
            unsaturated,
            accept_paced,
            idle_rss,
            busy_rss,
        },
    );
    server.stop().await;
    Ok(())
}

/// Pushes `runs` runs of `bench-noop` from `clients` concurrent clients; the time each request
/// waited for its 202, in ms, sorted.
async fn push_runs(server: &BenchServer, runs: usize, clients: usize) -> anyhow::Result<Vec<f64>> {
    let per_client = runs.div_ceil(clients.max(1));
    let mut pushers = Vec::new();
    for c in 0..clients.max(1) {
        let client = server.client.clone();
        let url = format!("{}/api/jobs/bench-noop/run", server.base);
        let n = per_client.min(runs.saturating_sub(c * per_client));
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
    let mut accepted = Vec::new();
    for p in pushers {
        accepted.extend(p.await??);
    }
    sort(&mut accepted);
    Ok(accepted)
}

/// Pushes `n` runs one every 25 ms; the time each request waited for its 202, in ms, sorted.
async fn push_paced(server: &BenchServer, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut accepted = Vec::with_capacity(n);
    for i in 0..n {
        let sent = Instant::now();
        let r = server
            .client
            .post(format!("{}/api/jobs/bench-noop/run", server.base))
            .json(&json!({"parameters": {"paced": i}}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202);
        accepted.push(sent.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    sort(&mut accepted);
    Ok(accepted)
}

/// Queue latency is startedAt - createdAt (0 for a run stored already claimed by an idle
/// worker of the accepting process); the accept latency is what a client waits for the 202,
/// which the run is committed by (started, or queued).
fn print_report(label: &str, r: &RunsReport) {
    let total = r.total;
    println!(
        "bench {label}: {total} no-op runs in {:.2}s => {:.0} runs/s (push {:.0} req/s); \
         under load: queue latency p50 {:.1} ms p95 {:.1} ms, accept latency p50 {:.1} ms p95 {:.1} ms; \
         unsaturated (1 run/25 ms): queue latency p50 {:.1} ms p95 {:.1} ms, accept latency p50 {:.1} ms p95 {:.1} ms; \
         RSS idle {:.1} MB, after load {:.1} MB",
        r.elapsed.as_secs_f64(),
        total as f64 / r.elapsed.as_secs_f64(),
        total as f64 / r.pushed.as_secs_f64(),
        percentile(&r.saturated, 0.5),
        percentile(&r.saturated, 0.95),
        percentile(&r.accept_loaded, 0.5),
        percentile(&r.accept_loaded, 0.95),
        percentile(&r.unsaturated, 0.5),
        percentile(&r.unsaturated, 0.95),
        percentile(&r.accept_paced, 0.5),
        percentile(&r.accept_paced, 0.95),
        r.idle_rss.unwrap_or(f64::NAN),
        r.busy_rss.unwrap_or(f64::NAN),
    );
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
