//! Build isolation (README "Build isolation"): a `builtin:repository-build` run reaches no
//! further than its definition allows. Its definition (`defaultParameters`) sets the command and
//! the environment; a run only names the repository to build.
//!
//! The suite runs as root here, so builds run as the build user (`switchyard-build`, created by
//! scripts/install-deps.sh).
use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    time::Duration,
};

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, WorkerProcess, spawn_app, spawn_app_with, test_settings};

// ---- helpers shared with engine.rs ----

pub(crate) fn id_of(run: &Value) -> String {
    run["id"].as_str().expect("run id").to_string()
}

/// Commits `files` into the git repository at `dir` (created when missing); returns the commit.
pub(crate) fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    use git2::{IndexAddOption, Repository, Signature};
    let repo = Repository::open(dir)
        .or_else(|_| Repository::init(dir))
        .expect("git init");
    for (path, content) in files {
        std::fs::write(dir.join(path), content).expect("write file");
    }
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .expect("git add");
    index.write().expect("write index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("find tree");
    let sig = Signature::now("Test", "test@example.com").expect("signature");
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .expect("commit")
        .to_string()
}

/// A git repository with a Makefile and a script, one commit. Returns the commit id.
pub(crate) fn make_repository(dir: &Path) -> String {
    commit(
        dir,
        &[
            ("Makefile", "all:\n\t@echo built\n"),
            ("build.sh", "#!/bin/sh\necho building\n"),
        ],
        "initial",
    )
}

/// Registers a `builtin:repository-build` job whose definition holds `defaults` (the command,
/// its env, a checkout) and `extra` definition fields; one attempt.
pub(crate) async fn build_job(app: &TestApp, slug: &str, defaults: Value, extra: Value) {
    let mut fields = json!({
        "defaultParameters": defaults,
        "retryPolicy": {"maxAttempts": 1, "strategy": "none"},
    });
    if let (Some(f), Some(e)) = (fields.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    app.job(slug, "builtin:repository-build", fields).await;
}

/// A `sh -c` command for a definition.
/// Starts a run of build job `slug` on the repository at `repo`; returns its id.
pub(crate) async fn run_build(app: &TestApp, slug: &str, repo: &Path) -> String {
    let run = app
        .run(
            slug,
            json!({"parameters": {"repoUrl": repo.to_string_lossy()}}),
        )
        .await;
    id_of(&run)
}

pub(crate) fn shell(script: &str) -> Value {
    json!(["sh", "-c", script])
}

/// Digits no other test uses, to find this test's processes by their command line.
pub(crate) fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .subsec_nanos();
    format!("{}{nanos:09}", std::process::id() % 1000)
}

/// Pids of live processes whose command line contains `needle` (zombies have none).
pub(crate) fn processes_with(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            })
        })
        .collect()
}

/// Pids of processes running exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<i32> {
    let expected: Vec<u8> = argv
        .iter()
        .flat_map(|a| a.bytes().chain(std::iter::once(0)))
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == expected))
        .collect()
}

/// The two processes [`escaping_command`] leaves behind.
fn sleepers(mark: &str) -> Vec<i32> {
    let mut pids = processes_running(&["sleep", &format!("300.{mark}")]);
    pids.extend(processes_running(&["sleep", &format!("301.{mark}")]));
    pids
}

/// The real uid of `pid` (None when it is gone).
fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Polls `probe` every 50 ms until it holds; panics with `what` after `timeout`.
pub(crate) async fn until(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !probe() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The build user the suite expects builds to run as.
fn build_user() -> nix::unistd::User {
    nix::unistd::User::from_name("switchyard-build")
        .expect("user lookup")
        .expect("the build user exists (scripts/install-deps.sh creates it)")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

// ---- what a build can read ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_cannot_read_the_servers_secrets_or_inherit_its_environment() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this suite runs as root (the build user path)"
    );
    let app = spawn_app().await;
    let data = app.db.data_dir().canonicalize().expect("data dir");
    let key = data.join("secret.key");
    let database = data.join("switchyard.db");
    // What the build tries to read is there, and readable by the server.
    assert!(!std::fs::read(&key).expect("key file").is_empty());
    if !app.db.is_postgres() {
        assert!(!std::fs::read(&database).expect("database").is_empty());
    }
    let source = tempfile::tempdir().expect("temp dir");
    make_repository(source.path());

    let script = r#"
        try() { what=$1; shift; if "$@" >/dev/null 2>&1; then echo "READ $what"; else echo "DENIED $what"; fi; }
        try key cat "$DATA_DIR/secret.key"
        try database cat "$DATA_DIR/switchyard.db"
        try environ cat "/proc/$SERVER_PID/environ"
        try list ls "$DATA_DIR"
        echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
        tr '\0' '\n' < /proc/$$/environ | sed 's/^/ENV /'
        env | sed 's/^/SHELL-ENV /'
    "#;
    let env = json!({
        "DATA_DIR": data.to_string_lossy(),
        "SERVER_PID": std::process::id().to_string(),
        "GREETING": "hello there",
    });
    build_job(
        &app,
        "probe",
        json!({"command": shell(script), "env": env}),
        json!({}),
    )
    .await;
    let id = run_build(&app, "probe", source.path()).await;
    let done = app.wait_terminal(&id).await;
    let log = app.logs(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{log}");

    for what in ["key", "database", "environ", "list"] {
        assert!(
            log.lines().any(|l| l == format!("DENIED {what}")),
            "the build could read {what}:\n{log}"
        );
    }

    let user = build_user();
    let ids = format!("uid={} gid={} groups={}", user.uid, user.gid, user.gid);
    assert!(
        log.lines().any(|l| l == ids),
        "expected {ids} (no supplementary groups):\n{log}"
    );
    assert_ne!(user.uid.as_raw(), 0);

    // The command's environment is exactly the definition's env.
    let mut seen: Vec<&str> = log.lines().filter_map(|l| l.strip_prefix("ENV ")).collect();
    seen.sort_unstable();
    let expected = [
        format!("DATA_DIR={}", data.display()),
        "GREETING=hello there".to_string(),
        format!("SERVER_PID={}", std::process::id()),
    ];
    assert_eq!(seen, expected, "{log}");
    assert!(
        std::env::vars().any(|(k, _)| k.starts_with("CARGO_")),
        "the test process has CARGO_* variables"
    );
    for absent in [
        "SHELL-ENV CARGO_",
        "SHELL-ENV HOME=",
        "SHELL-ENV DATABASE_URL=",
    ] {
        assert!(!log.contains(absent), "{absent} reached the build:\n{log}");
    }

    // The modes that make it so, and the checkout the build could write in.
    assert_eq!(mode(&data), 0o711);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&data.join("checkouts")), 0o755);
    if !app.db.is_postgres() {
        assert_eq!(mode(&database), 0o600);
        let wal = data.join("switchyard.db-wal");
        if wal.exists() {
            assert_eq!(mode(&wal), 0o600);
        }
    }
    let checkout = done["result"]["checkout"].as_str().expect("checkout");
    for path in [
        Path::new(checkout).to_path_buf(),
        Path::new(checkout).join("Makefile"),
        Path::new(checkout).join(".git/HEAD"),
    ] {
        let meta = std::fs::symlink_metadata(&path).expect("checkout file");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (user.uid.as_raw(), user.gid.as_raw()),
            "{} belongs to the build user",
            path.display()
        );
    }
}

// ---- processes a build leaves behind ----

/// A command that starts a process in a session of its own (`setsid`) and one orphaned by a
/// double fork, both marked with `mark`, then waits `then` seconds.
fn escaping_command(mark: &str, then: &str) -> Value {
    shell(&format!(
        "setsid sleep 300.{mark} & (sleep 301.{mark} &); sleep 0.3; echo spawned; sleep {then}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_build_starts_outlives_its_run() {
    let app = spawn_app().await;
    let source = tempfile::tempdir().expect("temp dir");
    make_repository(source.path());
    let params = json!({"parameters": {"repoUrl": source.path().to_string_lossy()}});

    // 1. The command ends by itself: what it left running is gone when the run is reported.
    let mark = marker();
    build_job(
        &app,
        "leaves-daemons",
        json!({"command": escaping_command(&mark, "0")}),
        json!({}),
    )
    .await;
    let id = id_of(&app.run("leaves-daemons", params.clone()).await);
    let done = app.wait_terminal(&id).await;
    let log = app.logs(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{log}");
    assert!(log.lines().any(|l| l == "spawned"), "{log}");
    assert_eq!(
        processes_with(&mark),
        Vec::<i32>::new(),
        "processes of the finished build are still running"
    );

    // 2. Canceled while everything runs: they run as the build user, then all of them go.
    let mark = marker();
    build_job(
        &app,
        "canceled-daemons",
        json!({"command": escaping_command(&mark, "60")}),
        json!({}),
    )
    .await;
    let id = id_of(&app.run("canceled-daemons", params.clone()).await);
    until("the build's processes", Duration::from_secs(20), || {
        sleepers(&mark).len() == 2
    })
    .await;
    let uid = build_user().uid.as_raw();
    for pid in sleepers(&mark) {
        assert_eq!(uid_of(pid), Some(uid), "pid {pid} runs as the build user");
    }
    let asked = tokio::time::Instant::now();
    let (status, canceled) = app
        .patch_json(
            &format!("/api/job-runs/{id}"),
            &json!({"status": "canceled"}),
        )
        .await;
    assert_eq!(status, 200, "{canceled}");
    until(
        "the canceled build's processes to be gone",
        Duration::from_secs(6),
        || processes_with(&mark).is_empty(),
    )
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );

    // 3. Timed out: the same.
    let mark = marker();
    build_job(
        &app,
        "slow-daemons",
        json!({"command": escaping_command(&mark, "60")}),
        json!({"timeoutMs": 2000}),
    )
    .await;
    let id = id_of(&app.run("slow-daemons", params.clone()).await);
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "expired", "{done}");
    assert!(app.logs(&id).await.contains("spawned"));
    assert_eq!(
        processes_with(&mark),
        Vec::<i32>::new(),
        "processes of the expired build are still running"
    );

    // 4. The server shuts down while the build runs (the run is handed back): the same.
    let mark = marker();
    build_job(
        &app,
        "interrupted-daemons",
        json!({"command": escaping_command(&mark, "60")}),
        json!({}),
    )
    .await;
    app.run("interrupted-daemons", params).await;
    until("the build's processes", Duration::from_secs(20), || {
        sleepers(&mark).len() == 2
    })
    .await;
    app.shutdown().await;
    until(
        "the interrupted build's processes to be gone",
        Duration::from_secs(6),
        || processes_with(&mark).is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_dies_with_its_worker_process() {
    // The builds run in a `switchyard worker` process, which is killed with SIGKILL: it cannot
    // stop anything itself; the supervisor's parent-death signal does.
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.workers = 0;
    let app = spawn_app_with(db, settings).await;
    let mut worker = WorkerProcess::spawn(&app.db, "worker-1");
    let source = tempfile::tempdir().expect("temp dir");
    make_repository(source.path());
    let mark = marker();
    build_job(
        &app,
        "orphaned-daemons",
        json!({"command": escaping_command(&mark, "60")}),
        json!({}),
    )
    .await;
    app.run(
        "orphaned-daemons",
        json!({"parameters": {"repoUrl": source.path().to_string_lossy()}}),
    )
    .await;
    until("the build's processes", Duration::from_secs(30), || {
        sleepers(&mark).len() == 2
    })
    .await;
    worker.kill();
    until(
        "the killed worker's build processes to be gone",
        Duration::from_secs(6),
        || processes_with(&mark).is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_build_stops_everything_it_started() {
    use server::{
        entrypoints::{
            EnvSecrets, JobRunContext, LogBudget, LogSender, LogSink, MetricsSink, NoServices,
            REPOSITORY_BUILD, Registry,
        },
        sandbox::{BuildSandbox, BuildUser},
    };
    // The engine drops a handler's future that does not stop in time; here it is dropped
    // directly, while the command and what it started run.
    let data = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(data.path().join("checkouts/repo")).expect("checkout");
    let user = build_user();
    let sandbox = BuildSandbox {
        user: Some(BuildUser {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
        }),
        supervisor: env!("CARGO_BIN_EXE_switchyard").into(),
    };
    let handler = Registry::builtin(std::sync::Arc::new(sandbox))
        .get(REPOSITORY_BUILD)
        .expect("build handler");
    let mark = marker();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = JobRunContext {
        run_id: "dropped".to_string(),
        job_slug: "dropped".to_string(),
        parameters: json!({"checkout": "repo", "command": escaping_command(&mark, "60")}),
        attempt: 1,
        max_attempts: 1,
        timeout: Duration::from_secs(60),
        cancel: tokio_util::sync::CancellationToken::new(),
        log: LogSink::new(
            "dropped".to_string(),
            1,
            LogSender::unbounded(tx),
            std::sync::Arc::new(LogBudget::unlimited()),
        ),
        metrics: MetricsSink::default(),
        data_dir: data.path().to_path_buf(),
        http: server::egress::EgressClient::build(
            std::sync::Arc::new(server::egress::EgressPolicy::default()),
            server::egress::Redirects::SameOrigin,
        )
        .expect("http client"),
        services: std::sync::Arc::new(NoServices),
        secrets: std::sync::Arc::new(EnvSecrets(Default::default())),
    };
    let task = tokio::spawn(async move { handler.execute(ctx).await });
    until("the build's processes", Duration::from_secs(20), || {
        sleepers(&mark).len() == 2
    })
    .await;
    task.abort();
    assert!(task.await.is_err(), "aborted");
    until(
        "the dropped build's processes to be gone",
        Duration::from_secs(6),
        || processes_with(&mark).is_empty(),
    )
    .await;
}

// ---- where a build runs ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_outside_the_checkouts_directory_is_refused() {
    let app = spawn_app().await;
    let outside = tempfile::tempdir().expect("temp dir");
    let escape = app.db.data_dir().join("checkouts").join("escape");
    std::fs::create_dir_all(app.db.data_dir().join("checkouts")).expect("checkouts");
    std::os::unix::fs::symlink(outside.path(), &escape).expect("symlink");
    let witness = outside.path().join("ran");
    let command = shell(&format!("touch {}", witness.display()));

    for (slug, checkout) in [
        ("temp-dir", outside.path().to_string_lossy().into_owned()),
        ("root", "/".to_string()),
        ("symlink-out", escape.to_string_lossy().into_owned()),
        ("data-dir", app.db.data_dir().to_string_lossy().into_owned()),
    ] {
        build_job(
            &app,
            slug,
            json!({"checkout": checkout, "command": command}),
            json!({}),
        )
        .await;
        let id = id_of(&app.run(slug, json!({"parameters": {}})).await);
        let done = app.wait_terminal(&id).await;
        let log = app.logs(&id).await;
        assert_eq!(done["status"], "failed", "{slug}: {done}\n{log}");
        let error = done["errorMessage"].as_str().unwrap_or_default();
        assert!(
            error.contains(&checkout) && error.contains("not inside the checkouts directory"),
            "{slug}: {error}"
        );
        assert!(
            !log.contains("running ["),
            "{slug} started a command:\n{log}"
        );
    }
    assert!(!witness.exists(), "a refused build ran");
}

// ---- checkout locks ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_waits_for_the_build_using_its_checkout() {
    let app = spawn_app().await;
    let source = tempfile::tempdir().expect("temp dir");
    commit(source.path(), &[("VERSION", "one\n")], "one");
    let repo_url = source.path().to_string_lossy().into_owned();
    build_job(
        &app,
        "slow-reader",
        json!({"command": shell("cat VERSION; echo ready; sleep 2; cat VERSION")}),
        json!({}),
    )
    .await;
    let build = id_of(
        &app.run("slow-reader", json!({"parameters": {"repoUrl": repo_url}}))
            .await,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !app.logs(&build).await.lines().any(|l| l == "ready") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the build never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Upstream moves on and an ingest of the same repository comes in while the build runs.
    let two = commit(source.path(), &[("VERSION", "two\n")], "two");
    let ingest = id_of(
        &app.run(
            "repository-ingest",
            json!({"parameters": {"repoUrl": repo_url}}),
        )
        .await,
    );

    let built = app.wait_terminal(&build).await;
    let log = app.logs(&build).await;
    assert_eq!(built["status"], "succeeded", "{built}\n{log}");
    let versions: Vec<&str> = log.lines().filter(|l| *l == "one" || *l == "two").collect();
    assert_eq!(
        versions,
        ["one", "one"],
        "the checkout changed under the build:\n{log}"
    );

    let ingested = app.wait_terminal(&ingest).await;
    let ingest_log = app.logs(&ingest).await;
    assert_eq!(ingested["status"], "succeeded", "{ingested}\n{ingest_log}");
    assert_eq!(ingested["result"]["headCommit"], two, "{ingested}");
    assert!(ingest_log.contains("waiting for"), "{ingest_log}");
    // Into the checkout the build user owns now, not a fresh clone.
    assert!(ingest_log.contains("fetching"), "{ingest_log}");
    let (ended, finished) = (
        built["completedAt"].as_str().expect("completedAt"),
        ingested["completedAt"].as_str().expect("completedAt"),
    );
    let parse = |t: &str| {
        t.parse::<chrono::DateTime<chrono::Utc>>()
            .expect("timestamp")
    };
    assert!(
        parse(finished) >= parse(ended),
        "ingest {finished} before build {ended}"
    );
    assert_eq!(
        ingested["result"]["checkout"], built["result"]["checkout"],
        "one checkout"
    );
}

// ---- outcomes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_outcomes_are_reported_from_the_command() {
    let app = spawn_app().await;
    let source = tempfile::tempdir().expect("temp dir");
    make_repository(source.path());
    let params = json!({"parameters": {"repoUrl": source.path().to_string_lossy()}});
    for (slug, defaults, status, error) in [
        (
            "streams",
            json!({"command": shell("echo \"$GREETING\"; echo err >&2; pwd -P; ls"),
                   "env": {"GREETING": "hello there"}}),
            "succeeded",
            "",
        ),
        (
            "exits-3",
            json!({"command": shell("exit 3")}),
            "failed",
            "command exited with status 3",
        ),
        (
            "killed",
            json!({"command": shell("kill -9 $$")}),
            "failed",
            "command was killed by signal SIGKILL",
        ),
        (
            "missing-program",
            json!({"command": ["switchyard-no-such-program-xyz"]}),
            "failed",
            "switchyard-no-such-program-xyz",
        ),
        (
            "no-path-from-the-server",
            json!({"command": ["sh", "-c", "true"], "env": {"PATH": "/nonexistent"}}),
            "failed",
            "program sh not found in PATH /nonexistent",
        ),
    ] {
        build_job(&app, slug, defaults, json!({})).await;
        let id = id_of(&app.run(slug, params.clone()).await);
        let done = app.wait_terminal(&id).await;
        let log = app.logs(&id).await;
        assert_eq!(done["status"], status, "{slug}: {done}\n{log}");
        if status == "failed" {
            let message = done["errorMessage"].as_str().unwrap_or_default();
            assert!(message.contains(error), "{slug}: {message}\n{log}");
            continue;
        }
        let result = &done["result"];
        assert_eq!(result["exitCode"], 0, "{done}");
        assert_eq!(result["stdoutLines"], 4, "{done}\n{log}");
        assert_eq!(result["stderrLines"], 1, "{done}\n{log}");
        let checkout = result["checkout"].as_str().expect("checkout");
        let lines: Vec<&str> = log.lines().collect();
        for expected in ["hello there", "err", checkout, "Makefile", "build.sh"] {
            assert!(lines.contains(&expected), "{expected:?} missing:\n{log}");
        }
    }
}

// ---- start-up ----

#[tokio::test]
async fn a_root_server_without_its_build_user_does_not_start() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.worker.build.build_user = "switchyard-no-such-user".to_string();
    let err = server::Application::build(settings.clone())
        .await
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("switchyard-no-such-user does not exist")
            && text.contains("useradd --system --no-create-home"),
        "{text}"
    );
    settings.worker.build.build_user = "root".to_string();
    let err = server::Application::build(settings.clone())
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("uid 0"), "{err:#}");
    // A process that executes no runs needs no build user.
    settings.worker.workers = 0;
    let app = server::Application::build(settings)
        .await
        .expect("serve only");
    app.stop_token().cancel();
    app.run_until_stopped().await.expect("stops");
}
