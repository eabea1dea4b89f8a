//! `switchyard bench`: pushes no-op runs through the real HTTP API and workers of an in-process
//! server (fresh SQLite file or fresh PostgreSQL database, default settings) and prints
//! throughput, queue latency (startedAt - createdAt) and idle memory.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
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
            for i in 0..n {
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
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for p in pushers {
        p.await??;
    }
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
    for i in 0..paced {
        let r = client
            .post(format!("{base}/api/jobs/bench-noop/run"))
            .json(&json!({"parameters": {"paced": i}}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    while count(&client, &base, "succeeded").await? < total + paced as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unsat = latencies(&client, &base, paced).await?;
    let busy_rss = rss_mb();

    println!(
        "bench {label}: {total} no-op runs in {:.2}s => {:.0} runs/s (push {:.0} req/s); queue latency saturated p50 {:.1} ms p95 {:.1} ms; \
         unsaturated (1 run/25 ms) p50 {:.1} ms p95 {:.1} ms; RSS idle {:.1} MB, after load {:.1} MB",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        total as f64 / pushed.as_secs_f64(),
        percentile(&saturated, 0.5),
        percentile(&saturated, 0.95),
        percentile(&unsat, 0.5),
        percentile(&unsat, 0.95),
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
    out.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
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
        crate::store::Store::new(crate::db::Database::connect(&data_dir, url.as_deref()).await?);

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
        store
            .seed_finished_runs(&def, stored / jobs, now, chrono::TimeDelta::days(7))
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
        times.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
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
