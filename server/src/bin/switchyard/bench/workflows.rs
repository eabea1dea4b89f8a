//! `switchyard bench --workflows`: a 10-step linear chain of `builtin:noop` steps (sequential
//! runs, then concurrent ones) and a 1 -> 50 -> 1 fan-out/fan-in. Durations are the server's
//! `completedAt - createdAt` (taken from the `workflow.run.*` event, or from
//! `GET /api/workflow-runs/:id` if the event is late), never the client's clock; the engine
//! overhead per step is the run duration divided by its steps (no-op steps do no work).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::{Value, json};
use server::{Settings, settings::BenchArgs};

use super::{BenchServer, percentile, sort};

/// Steps of the chain workflow.
const CHAIN: usize = 10;
/// Middle steps of the fan-out/fan-in workflow.
const WIDTH: usize = 50;

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

/// The run of one server-sent event block, when it reports a workflow run that finished.
fn finished_run_of(block: &str) -> Option<(String, Value)> {
    let data: String = block
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    let ev = serde_json::from_str::<Value>(&data).ok()?;
    let run = &ev["data"]["run"];
    let (id, status) = (run["id"].as_str()?, run["status"].as_str()?);
    TERMINAL
        .contains(&status)
        .then(|| (id.to_string(), run.clone()))
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
                    if let Some((id, run)) = finished_run_of(&block) {
                        me.runs.lock().expect("not poisoned").insert(id, run);
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

/// The workflow bench on one database: the chain one run at a time, then `concurrent_chains`
/// runs at once, then the fan-out one run at a time, and a summary against the targets.
/// The workloads on each engine `--provider` names, one after the other, on one database.
pub(super) async fn bench_providers(
    label: &str,
    settings: Settings,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let mut dev_server = None;
    for provider in &args.provider {
        let mut settings = settings.clone();
        let label = if provider == "native" {
            label.to_string()
        } else {
            format!("{label}/{provider}")
        };
        if provider == "temporal" {
            let address = match &args.temporal_address {
                Some(a) => a.clone(),
                None => {
                    if dev_server.is_none() {
                        dev_server = Some(TemporalDevServer::start()?);
                    }
                    dev_server
                        .as_ref()
                        .map(|d| d.address.clone())
                        .unwrap_or_default()
                }
            };
            settings.worker.providers.temporal_address = Some(address);
            settings.worker.providers.temporal_task_queue =
                format!("switchyard-bench-{}", uuid::Uuid::new_v4().simple());
        } else if provider != "native" {
            anyhow::bail!("--provider {provider:?}: the bench knows native and temporal");
        }
        bench_workflows(&label, provider, settings, args).await?;
    }
    Ok(())
}

/// `temporal server start-dev` on free ports with a throw-away database, stopped on drop.
struct TemporalDevServer {
    address: String,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl TemporalDevServer {
    fn start() -> anyhow::Result<TemporalDevServer> {
        let cli = std::path::Path::new(".temporal-venv/bin/temporal");
        anyhow::ensure!(
            cli.exists(),
            "{} not found: run the bench from the repository after `make deps`, or pass --temporal-address",
            cli.display()
        );
        let port = |_| -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (frontend, http, metrics) = (port(0)?, port(1)?, port(2)?);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-bench-temporal-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let child = std::process::Command::new(cli)
            .args(["server", "start-dev", "--headless", "--log-level", "error"])
            .args([
                "--port",
                &frontend.to_string(),
                "--http-port",
                &http.to_string(),
            ])
            .args(["--metrics-port", &metrics.to_string()])
            .arg("--db-filename")
            .arg(dir.join("temporal.db"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let address = format!("127.0.0.1:{frontend}");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&address).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "temporal server start-dev did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(TemporalDevServer {
            address,
            child,
            dir,
        })
    }
}

impl Drop for TemporalDevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn bench_workflows(
    label: &str,
    provider: &str,
    settings: Settings,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let step_target = if label == "postgres" { 10.0 } else { 5.0 };
    let server = BenchServer::start(settings).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.create_noop_job().await?;
    create_workflows(&server, provider).await?;
    let (client, base) = (&server.client, server.base.as_str());
    let (finished, events) = FinishedRuns::subscribe(client, base).await?;
    // One unreported warm-up run of each (definition caches, connections, prepared statements).
    for slug in ["bench-chain", "bench-fanout"] {
        let id = start_workflow(client, base, slug).await?;
        finished_duration(&finished, client, base, &id).await?;
    }

    // 1. The 10-step chain, one run at a time.
    let chain = sequential(
        label,
        "chain(10)",
        "bench-chain",
        CHAIN,
        args.chain_runs,
        (&finished, client, base),
    )
    .await?;

    // 1b. The chain, `concurrent_chains` runs started at once.
    let concurrent = if args.concurrent_chains > 0 {
        Some(concurrent_chains(label, args.concurrent_chains, &finished, client, base).await?)
    } else {
        None
    };

    // 2. The 1 -> 50 -> 1 fan-out/fan-in, one run at a time.
    let fanout = sequential(
        label,
        "fan-out(1-50-1)",
        "bench-fanout",
        WIDTH + 2,
        args.fanout_runs,
        (&finished, client, base),
    )
    .await?;

    print_summary(label, step_target, &chain, concurrent, &fanout);
    events.abort();
    server.stop().await;
    Ok(())
}

/// Registers the chain and the fan-out workflows (their steps run `bench-noop`).
async fn create_workflows(server: &BenchServer, provider: &str) -> anyhow::Result<()> {
    for mut body in [
        chain_workflow("bench-chain", CHAIN),
        fanout_workflow("bench-fanout", WIDTH),
    ] {
        body["provider"] = json!(provider);
        let res = server
            .client
            .post(format!("{}/api/workflows", server.base))
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
    Ok(())
}

/// Starts `k` chain runs at once and prints their durations and the server time the batch
/// took; (k, server time per step in ms).
async fn concurrent_chains(
    label: &str,
    k: usize,
    finished: &FinishedRuns,
    client: &reqwest::Client,
    base: &str,
) -> anyhow::Result<(usize, f64)> {
    let wall = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..k {
        let (client, base, finished) = (client.clone(), base.to_string(), finished.clone());
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
    Ok((k, span_ms / (k * CHAIN) as f64))
}

/// The summary line: the chain's cost per step and the fan-out's duration against their
/// targets (`step_target` ms per chain step, under a second per fan-out run).
fn print_summary(
    label: &str,
    step_target: f64,
    chain: &[f64],
    concurrent: Option<(usize, f64)>,
    fanout: &[f64],
) {
    let fan_steps = WIDTH + 2;
    let (chain_p50, chain_p95) = median_p95(chain);
    let (fan_p50, fan_p95) = median_p95(fanout);
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
