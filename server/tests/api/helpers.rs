//! Test harness: every test boots the real application on port 0 against a fresh database of
//! its own: a new SQLite file, or, when `DATABASE_URL` points at PostgreSQL, a new database
//! created on that server (dropped again when the test ends).
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Once,
    time::Duration,
};

use serde_json::{Value, json};
use server::{Application, Settings, db};
use tokio_util::sync::CancellationToken;

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    std::env::var("TEST_LOG_FILTER").unwrap_or_else(|_| "info,sqlx=warn".into()),
                )
                .with_test_writer()
                .try_init();
        }
    });
}

/// The PostgreSQL server to test against, if any.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
}

/// PostgreSQL tests of this binary and the crash test that restarts PostgreSQL never overlap:
/// every PostgreSQL test holds a [`PgTurn::Shared`] while its database lives; the restart test
/// waits until none is held and holds [`PgTurn::Exclusive`] meanwhile, new ones wait for it.
static PG_TURNS: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, false));

/// A test's turn on the PostgreSQL server (see [`PG_TURNS`]).
pub enum PgTurn {
    Shared,
    Exclusive,
}

impl PgTurn {
    async fn shared() -> PgTurn {
        loop {
            {
                let mut turns = PG_TURNS.lock().unwrap();
                if !turns.1 {
                    turns.0 += 1;
                    return PgTurn::Shared;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the other PostgreSQL tests of this binary to end (at most `patience`; a
    /// test that opens a second database while holding one would otherwise wait forever).
    async fn exclusive(patience: Duration) -> PgTurn {
        loop {
            {
                let mut turns = PG_TURNS.lock().unwrap();
                if !turns.1 {
                    turns.1 = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deadline = tokio::time::Instant::now() + patience;
        while PG_TURNS.lock().unwrap().0 > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        PgTurn::Exclusive
    }
}

impl Drop for PgTurn {
    fn drop(&mut self) {
        let mut turns = PG_TURNS.lock().unwrap_or_else(|e| e.into_inner());
        match self {
            PgTurn::Shared => turns.0 = turns.0.saturating_sub(1),
            PgTurn::Exclusive => turns.1 = false,
        }
    }
}

/// A fresh, empty database: (data dir, database URL or None for SQLite in the data dir).
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub url: Option<String>,
    /// PostgreSQL: this test's turn on the server (see [`PG_TURNS`]), given back on drop.
    _turn: Option<PgTurn>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let turn = match postgres_admin_url() {
            Some(_) => Some(PgTurn::shared().await),
            None => None,
        };
        TestDb::with_turn(turn).await
    }

    /// For the crash test that restarts PostgreSQL: once no other PostgreSQL test of this
    /// binary runs, and none starts until this database is gone.
    pub async fn new_alone_on_postgres() -> TestDb {
        let turn = match postgres_admin_url() {
            Some(_) => Some(PgTurn::exclusive(Duration::from_secs(120)).await),
            None => None,
        };
        TestDb::with_turn(turn).await
    }

    async fn with_turn(turn: Option<PgTurn>) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match postgres_admin_url() {
            Some(admin) => Some(
                db::create_scratch_postgres(&admin, "switchyard_test")
                    .await
                    .expect("scratch database"),
            ),
            None => None,
        };
        TestDb {
            dir,
            url,
            _turn: turn,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn is_postgres(&self) -> bool {
        self.url.is_some()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let (Some(admin), Some(url)) = (postgres_admin_url(), self.url.clone()) {
            // Best effort, on a thread of its own: Drop cannot await.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    let _ = rt.block_on(db::drop_scratch_postgres(&admin, &url));
                }
            })
            .join();
        }
    }
}

/// A running app and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Default test settings: short leases and polls so recovery paths run in seconds.
pub fn test_settings(db: &TestDb) -> Settings {
    let mut s = Settings::local(db.data_dir(), db.url.clone());
    s.worker.lease_ms = 3_000;
    s.worker.poll_ms = 50;
    s.worker.shutdown_grace_ms = 2_000;
    s.max_body_bytes = 64 * 1024;
    // Off: a poll would overwrite statuses the contract tests set by hand. The health test
    // turns it on.
    s.health_interval = Duration::ZERO;
    // The app runs inside the test binary, which cannot be the build supervisor.
    s.worker.build.build_supervisor = Some(PathBuf::from(env!("CARGO_BIN_EXE_switchyard")));
    s
}

pub async fn spawn_app() -> TestApp {
    let db = TestDb::new().await;
    let settings = test_settings(&db);
    spawn_app_with(db, settings).await
}

pub async fn spawn_app_with(db: TestDb, settings: Settings) -> TestApp {
    init_tracing();
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stop = app.stop_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        db,
        stop,
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let res = self.get(path).await;
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let res = self
            .client
            .request(method, self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PATCH, path, body).await
    }

    /// Registers a job; panics unless it is accepted.
    pub async fn create_job(&self, body: Value) -> Value {
        let (status, v) = self.post_json("/api/jobs", &body).await;
        assert!(status == 201 || status == 200, "create job: {status} {v}");
        v["data"].clone()
    }

    /// Registers `slug` with an entry point and optional extra fields.
    pub async fn job(&self, slug: &str, entry_point: &str, extra: Value) -> Value {
        let mut body = json!({"slug": slug, "name": slug, "entryPoint": entry_point});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.create_job(body).await
    }

    /// Starts a run; panics unless it is accepted (202). Returns the run.
    pub async fn run(&self, slug: &str, body: Value) -> Value {
        let (status, v) = self
            .post_json(&format!("/api/jobs/{slug}/run"), &body)
            .await;
        assert_eq!(status, 202, "run {slug}: {v}");
        v["data"].clone()
    }

    pub async fn get_run(&self, id: &str) -> Value {
        let (status, v) = self.get_json(&format!("/api/job-runs/{id}")).await;
        assert_eq!(status, 200, "get run: {v}");
        v["data"].clone()
    }

    /// Polls until the run's status is one of `statuses`; panics after `timeout`.
    pub async fn wait_for_status(&self, id: &str, statuses: &[&str], timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let run = self.get_run(id).await;
            if statuses.contains(&run["status"].as_str().unwrap_or_default()) {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} never reached {statuses:?}; last: {run}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the run has ended (any terminal status).
    pub async fn wait_terminal(&self, id: &str) -> Value {
        self.wait_for_status(
            id,
            &["succeeded", "failed", "canceled", "expired"],
            Duration::from_secs(30),
        )
        .await
    }

    pub async fn logs(&self, id: &str) -> String {
        self.get(&format!("/api/job-runs/{id}/logs"))
            .await
            .text()
            .await
            .unwrap_or_default()
    }

    /// Stops the app gracefully and waits for it.
    pub async fn shutdown(mut self) -> TestDb {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
        // Move the database out so the caller can start another app on it.
        std::mem::replace(
            &mut self.db,
            TestDb {
                dir: tempfile::tempdir().unwrap(),
                url: None,
                _turn: None,
            },
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---- worker processes ----

/// A `switchyard worker` child process on the test's database; killed (SIGKILL) when dropped.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    pub fn spawn(db: &TestDb, name: &str) -> WorkerProcess {
        WorkerProcess::spawn_with_env(db, name, &[])
    }

    /// With extra environment variables (such as secrets the worker resolves).
    pub fn spawn_with_env(db: &TestDb, name: &str, env: &[(&str, &str)]) -> WorkerProcess {
        WorkerProcess::spawn_with_args(db, name, env, &[])
    }

    /// With extra environment variables and a lease of `lease_ms`.
    pub fn spawn_with(
        db: &TestDb,
        name: &str,
        env: &[(&str, &str)],
        lease_ms: u64,
    ) -> WorkerProcess {
        let lease = lease_ms.to_string();
        WorkerProcess::spawn_with_args(db, name, env, &["--lease-ms", &lease])
    }

    /// With extra environment variables and `worker` arguments (a `--lease-ms` among them
    /// replaces the default 2000).
    pub fn spawn_with_args(
        db: &TestDb,
        name: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> WorkerProcess {
        let log = db.data_dir().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("worker log file");
        let err = out.try_clone().expect("worker log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        // Only what we pass explicitly: the admin DATABASE_URL of the test run must not leak in.
        cmd.env_remove("DATABASE_URL")
            .arg("--data-dir")
            .arg(db.data_dir());
        if let Some(url) = &db.url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(["worker", "--workers", "1", "--poll-ms", "50"]);
        if !args.contains(&"--lease-ms") {
            cmd.args(["--lease-ms", "2000"]);
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().expect("spawn worker process");
        WorkerProcess { child, log }
    }

    /// kill -9, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A memory figure of the process from `/proc/<pid>/status` (`VmRSS`, `VmHWM`: the peak
    /// resident size), in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.child.id()))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
