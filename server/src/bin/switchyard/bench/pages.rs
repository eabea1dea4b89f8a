//! `switchyard bench --pages N`: the list pages with N finished runs stored (20 jobs, 7 days
//! of history): medians and p95 of the REST run lists (first page, filtered, searched, deep
//! keyset page), the pages' server functions and the server-rendered pages.
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{Value, json};
use server::{Settings, db::Database, store::Store};

use super::{BenchServer, percentile, seed::seed_finished_runs, sort};

/// Jobs the stored runs are spread over.
const JOBS: u64 = 20;
/// Requests timed per list or page.
const ROUNDS: usize = 15;

pub(super) async fn bench_pages(
    label: &str,
    mut settings: Settings,
    stored: u64,
) -> anyhow::Result<()> {
    settings.worker.workers = 0;
    let (data_dir, url) = (settings.data_dir.clone(), settings.database_url.clone());
    let server = BenchServer::start(settings).await?;
    let store = Store::new(Database::connect(&data_dir, url.as_deref()).await?);
    store_history(label, &server, &store, stored).await?;
    let deep = deep_cursor(&server).await?;
    let base = &server.base;
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
    let sf = |endpoint: &str, form: &str| (format!("{base}/_sf/{endpoint}"), form.to_string());
    let posts = [
        ("fn job-summaries", sf("job-summaries", "")),
        ("fn dashboard", sf("dashboard", "")),
        (
            "fn runs (job+status)",
            sf("runs", "job=bench-job-05&status=canceled"),
        ),
    ];
    for (name, url) in &gets {
        let times = time_requests(name, || server.client.get(url)).await?;
        print_times(label, name, times);
    }
    for (name, (url, form)) in &posts {
        let times = time_requests(name, || {
            server
                .client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.clone())
        })
        .await?;
        print_times(label, name, times);
    }
    server.stop().await;
    Ok(())
}

/// Registers the bench jobs through the API and stores `stored` finished runs over them.
async fn store_history(
    label: &str,
    server: &BenchServer,
    store: &Store,
    stored: u64,
) -> anyhow::Result<()> {
    let seeding = Instant::now();
    let now = chrono::Utc::now();
    for j in 0..JOBS {
        let slug = format!("bench-job-{j:02}");
        let res = server
            .client
            .post(format!("{}/api/jobs", server.base))
            .json(&json!({"slug": slug, "name": format!("Bench job {j}"), "entryPoint": "builtin:noop"}))
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "creating {slug}: {}",
            res.status()
        );
        let def = store.get_job(&slug).await?.context("bench job stored")?;
        seed_finished_runs(
            &store.database().conn,
            &def,
            stored / JOBS,
            now,
            chrono::TimeDelta::days(7),
        )
        .await?;
    }
    println!(
        "bench {label} pages: stored {} runs in {:.1}s",
        stored / JOBS * JOBS,
        seeding.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A cursor half-way down the newest-first list (after 20 pages of 100).
async fn deep_cursor(server: &BenchServer) -> anyhow::Result<String> {
    let mut deep: Option<String> = None;
    for _ in 0..20 {
        let mut url = format!("{}/api/job-runs?limit=100", server.base);
        if let Some(c) = &deep {
            url.push_str(&format!("&cursor={c}"));
        }
        let v: Value = server.client.get(url).send().await?.json().await?;
        deep = v
            .pointer("/meta/nextCursor")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    deep.context("a deep cursor")
}

/// Sends the request `ROUNDS` times, each answer read in full; the times in ms.
async fn time_requests(
    name: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let res = request().send().await?;
        anyhow::ensure!(res.status().is_success(), "{name}: {}", res.status());
        res.bytes().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

fn print_times(label: &str, name: &str, mut times: Vec<f64>) {
    sort(&mut times);
    println!(
        "bench {label} pages: {name:<26} p50 {:>7.1} ms  p95 {:>7.1} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.95)
    );
}
