//! `switchyard bench`: pushes no-op runs through the real HTTP API and workers of an in-process
//! server (fresh SQLite file or fresh PostgreSQL database, default settings) and prints
//! throughput, queue latency (startedAt - createdAt) and idle memory (`runs`).
//!
//! `--workflows` measures workflow runs instead (a 10-step chain and a 1 -> 50 -> 1
//! fan-out/fan-in, `workflows`), `--pages N` the list pages with N finished runs stored
//! (`pages`). A module of the binary: nothing of the library calls it.
//!
//! Without make (a release build; PostgreSQL from `DATABASE_URL` or the local default):
//!
//! ```text
//! cargo run --release -p server --bin switchyard -- bench --database both --runs 2000
//! cargo run --release -p server --bin switchyard -- bench --pages 100000 --database sqlite
//! cargo run --release -p server --bin switchyard -- bench --workflows --database both \
//!     [--chain-runs 20] [--concurrent-chains 20] [--fanout-runs 10]
//! ```
mod pages;
mod runs;
mod seed;
mod workflows;

use server::{
    Application, Settings,
    db::{create_scratch_postgres, drop_scratch_postgres},
    settings::{BenchArgs, BenchDatabase},
};
use tokio_util::sync::CancellationToken;

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

/// Resident memory of this process in MB (Linux).
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

/// The bench `args` ask for, on one database.
async fn bench_one(label: &str, settings: Settings, args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(stored) = args.pages {
        return pages::bench_pages(label, settings, stored).await;
    }
    if args.workflows {
        return workflows::bench_providers(label, settings, args).await;
    }
    runs::bench_runs(label, settings, args).await
}

/// The in-process server a bench measures, and a client for it.
struct BenchServer {
    base: String,
    client: reqwest::Client,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BenchServer {
    async fn start(settings: Settings) -> anyhow::Result<BenchServer> {
        let app = Application::build(settings).await?;
        let base = format!("http://{}", app.address());
        let stop = app.stop_token();
        let server = tokio::spawn(app.run_until_stopped());
        Ok(BenchServer {
            base,
            client: reqwest::Client::new(),
            stop,
            server,
        })
    }

    /// Registers `bench-noop`, the no-op job the runs and the workflow steps run.
    async fn create_noop_job(&self) -> anyhow::Result<()> {
        let res = self
            .client
            .post(format!("{}/api/jobs", self.base))
            .json(&serde_json::json!({"slug": "bench-noop", "name": "Bench no-op", "entryPoint": "builtin:noop"}))
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "creating the bench job: {}",
            res.status()
        );
        Ok(())
    }

    /// Stops the server and waits for it.
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }
}
