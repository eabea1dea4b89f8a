//! `builtin:repository-build` `{"checkout" | "repoUrl", "command": [argv...], "env"?, "ref"?}`:
//! runs one program (an argv, never a shell string) in a checkout, streaming its output to the
//! run log. README "Build isolation" says what confines it:
//! - its working directory is a checkout inside `<data-dir>/checkouts` (`confine`), locked
//!   shared for the whole command (`repository.rs`);
//! - its environment is exactly the definition's `env`, nothing inherited from the server;
//! - it runs under `switchyard build-supervisor` (`supervisor.rs`), as the build user when the
//!   server is root, and nothing it starts outlives the run: on its end, cancel, timeout,
//!   shutdown or a dropped handler the supervisor is told to stop (SIGTERM), and its process
//!   group is killed when it does not exit in time.
use std::{
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt as _, BufReader},
    process::{Child, Command},
};
use tokio_util::task::AbortOnDropHandle;

use super::{
    EntryPoint, JobError, JobResult, JobRunContext, LogSink, LogStream, Problem, REPOSITORY_BUILD,
    check_string, check_string_map, checked_params, field,
    repository::{checkouts_root, ingest, lock_shared},
};
use crate::{sandbox::BuildSandbox, supervisor};

/// How long the supervisor gets to exit after SIGTERM before its group is killed. It needs
/// [`SUPERVISOR_GRACE`] and a moment; the engine waits 5 s for a stopped handler.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long the command's processes get between the supervisor's SIGTERM and its SIGKILL.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for the output pipes after the supervisor exited; it kills everything that
/// could hold them, so this is only a safety net.
const PIPE_DRAIN: Duration = Duration::from_secs(2);
/// Longer lines (progress bars without newlines) are split so one line cannot eat the memory.
const MAX_LINE_BYTES: usize = 64 * 1024;

pub(super) struct Build {
    pub(super) sandbox: Arc<BuildSandbox>,
}

pub(super) fn check(params: &Map<String, Value>, problems: &mut Vec<Problem>) {
    check_string(params, "checkout", false, problems);
    check_string(params, "repoUrl", false, problems);
    if field(params, "checkout").is_none() && field(params, "repoUrl").is_none() {
        problems.push((
            String::new(),
            "one of checkout or repoUrl is required".to_string(),
        ));
    }
    match field(params, "command") {
        Some(Value::Array(argv)) if !argv.is_empty() => {
            for (i, arg) in argv.iter().enumerate() {
                if !arg.is_string() {
                    problems.push((format!("/command/{i}"), "must be a string".to_string()));
                }
            }
            if argv
                .first()
                .and_then(Value::as_str)
                .is_some_and(str::is_empty)
            {
                problems.push((
                    "/command/0".to_string(),
                    "program must not be empty".to_string(),
                ));
            }
        }
        _ => problems.push((
            "/command".to_string(),
            "must be a non-empty array of strings (program and arguments)".to_string(),
        )),
    }
    check_string(params, "ref", false, problems);
    check_string_map(params, "env", problems);
}

#[async_trait::async_trait]
impl EntryPoint for Build {
    fn name(&self) -> &'static str {
        REPOSITORY_BUILD
    }

    /// It executes commands: its program, environment and working directory come from
    /// definitions only (the working directory may come from a template in a workflow step:
    /// the handler confines it to `<data-dir>/checkouts` anyway).
    fn rules(&self) -> domain::authority::EntryPointRules {
        domain::authority::EntryPointRules {
            definition_only: &["command", "env", "checkout"],
            templatable: &["checkout"],
            executes_commands: true,
            destinations: &[],
        }
    }

    /// Callers choose the repository; the definition chooses what runs (definition-only
    /// command, env and checkout: change them with a token holding jobs:exec).
    fn default_definition(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "slug": "repository-build", "name": "Repository build", "version": 1, "type": "batch",
            "entryPoint": "builtin:repository-build",
            "parametersSchema": {"type": "object", "required": ["repoUrl"], "properties": {
                "repoUrl": {"type": "string", "description": "Local path, file:// or http(s) URL of the git repository to build"},
                "ref": {"type": "string", "description": "Branch, tag or commit (default: the remote's HEAD)"}}},
            "defaultParameters": {"command": ["make"]}, "timeoutMs": 1800000,
            "retryPolicy": {"maxAttempts": 1, "strategy": "none"},
            "metadata": {"tags": ["build"], "seeded": true,
                "description": "Ingests repoUrl into <data-dir>/checkouts and runs `make` there as the build user; the command and environment are the definition's"}
        }))
    }

    fn check(&self, params: &Map<String, Value>, problems: &mut Vec<Problem>) {
        check(params, problems)
    }

    async fn execute(&self, ctx: JobRunContext) -> JobResult {
        let params = checked_params(REPOSITORY_BUILD, &ctx.parameters)?;
        let argv: Vec<String> = field(params, "command")
            .and_then(Value::as_array)
            .map(|argv| {
                argv.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let env: Vec<(String, String)> = match field(params, "env") {
            Some(Value::Object(env)) => env
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
            _ => Vec::new(),
        };
        // The checkout stays locked (shared) until the command is over, so no ingest changes it
        // under the build's feet.
        let (checkout, _lock) = match field(params, "checkout").and_then(Value::as_str) {
            Some(path) => {
                let (dir, locked) = confine(&ctx.data_dir, path)?;
                (dir, lock_shared(&ctx, &locked).await?)
            }
            None => {
                let repo_url = field(params, "repoUrl")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let git_ref = field(params, "ref").and_then(Value::as_str);
                let (checkout, exclusive) = ingest(&ctx, &self.sandbox, repo_url, git_ref).await?;
                // Downgraded, not released: no other ingest can come in between.
                (checkout.path, exclusive.downgrade())
            }
        };
        let Some(program) = argv.first() else {
            return Err(JobError::Fatal("command is empty".to_string()));
        };
        find_program(program, &env, &checkout)?;
        if ctx.cancel.is_cancelled() {
            return Err(JobError::Canceled);
        }

        let started = Instant::now();
        let outcome = run(&ctx, &self.sandbox, &checkout, &argv, &env).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        ctx.metrics.set("durationMs", duration_ms);
        let (stdout_lines, stderr_lines) = outcome?;
        ctx.log
            .info(format!("command succeeded after {duration_ms} ms"));
        Ok(json!({
            "exitCode": 0,
            "checkout": checkout.to_string_lossy(),
            "command": argv,
            "durationMs": duration_ms,
            "stdoutLines": stdout_lines,
            "stderrLines": stderr_lines,
        }))
    }
}

/// The build's working directory for a `checkout` parameter: it must resolve (symlinks and all)
/// to a directory inside `<data-dir>/checkouts`. A relative path is taken relative to that
/// directory. Returns the resolved directory and the checkout it belongs to (the directory
/// directly below `checkouts`, whose lock the build takes).
fn confine(data_dir: &Path, checkout: &str) -> Result<(PathBuf, PathBuf), JobError> {
    let root = checkouts_root(data_dir)?;
    let dir = root.join(checkout).canonicalize().map_err(|e| {
        JobError::Fatal(format!(
            "checkout {checkout} does not exist or is not a directory: {e}"
        ))
    })?;
    let Some(first) = dir
        .strip_prefix(&root)
        .ok()
        .and_then(|rest| rest.components().next())
    else {
        return Err(JobError::Fatal(format!(
            "checkout {checkout} (resolved to {}) is not inside the checkouts directory {}: \
             builds run only in checkouts made by repository-ingest",
            dir.display(),
            root.display()
        )));
    };
    if !dir.is_dir() {
        return Err(JobError::Fatal(format!(
            "checkout {checkout} is not a directory"
        )));
    }
    let locked = root.join(first);
    Ok((dir, locked))
}

/// Where a program is looked for when the definition's env sets no `PATH` (what execvp uses).
const DEFAULT_PATH: &str = "/usr/bin:/bin";

/// A missing program is the definition's mistake (fatal, named), found before anything starts:
/// a path with a `/` is taken relative to the checkout, a bare name is looked up like execvp
/// would, in the definition's `PATH` or else in /usr/bin and /bin.
fn find_program(program: &str, env: &[(String, String)], dir: &Path) -> Result<(), JobError> {
    if program.contains('/') {
        return if is_executable(&dir.join(program)) {
            Ok(())
        } else {
            Err(JobError::Fatal(format!(
                "program {program} not found in {} (or not executable)",
                dir.display()
            )))
        };
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let found = path.split(':').any(|entry| {
        // An empty entry means the working directory, as for execvp.
        is_executable(&dir.join(entry).join(program))
    });
    if found {
        Ok(())
    } else {
        Err(JobError::Fatal(format!(
            "program {program} not found in PATH {path} (a build's PATH is only what its \
             definition's env sets; without one it is {DEFAULT_PATH})"
        )))
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs the command under the build supervisor to completion (or cancellation); Ok holds the
/// stdout and stderr line counts.
async fn run(
    ctx: &JobRunContext,
    sandbox: &BuildSandbox,
    dir: &Path,
    argv: &[String],
    env: &[(String, String)],
) -> Result<(u64, u64), JobError> {
    let program = argv.first().map_or("", String::as_str);
    let (mut child, pid) = spawn_supervisor(sandbox, dir, argv)?;
    let stdin = child.stdin.take();
    let stdout_lines = Arc::new(AtomicU64::new(0));
    let stderr_lines = Arc::new(AtomicU64::new(0));
    let pumps = [
        child
            .stdout
            .take()
            .map(|out| pump(out, LogStream::Stdout, &ctx.log, &stdout_lines)),
        child
            .stderr
            .take()
            .map(|err| pump(err, LogStream::Stderr, &ctx.log, &stderr_lines)),
    ];
    let mut supervised = Supervised {
        child: Some(child),
        pid,
    };
    ctx.log.info(running_message(sandbox, dir, argv, env, pid));
    if let Some(stdin) = stdin {
        send_env(stdin, env).await?;
    }

    let exited = tokio::select! {
        status = supervised.wait() => Some(status),
        () = ctx.cancel.cancelled() => None,
    };
    let status = match exited {
        Some(Ok(status)) => status,
        // The guard stops the supervisor on return.
        Some(Err(e)) => {
            return Err(JobError::Retryable(format!(
                "waiting for {program} failed: {e}"
            )));
        }
        None => {
            ctx.log.info("canceled: stopping the command");
            supervised.stop().await;
            drain(pumps).await;
            return Err(JobError::Canceled);
        }
    };
    drain(pumps).await;
    let counts = (
        stdout_lines.load(Ordering::Relaxed),
        stderr_lines.load(Ordering::Relaxed),
    );
    if status.success() {
        return Ok(counts);
    }
    let message = failure(status);
    ctx.log.info(message.clone());
    Err(JobError::Retryable(message))
}

/// Starts the build supervisor for `argv` in `dir` (as the sandbox's user, if any), in a
/// process group of its own, its output piped; returns it with its pid (its group's id).
fn spawn_supervisor(
    sandbox: &BuildSandbox,
    dir: &Path,
    argv: &[String],
) -> Result<(Child, Pid), JobError> {
    let mut command = Command::new(&sandbox.supervisor);
    command
        .arg(supervisor::COMMAND)
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--grace-ms")
        .arg(SUPERVISOR_GRACE.as_millis().to_string());
    if let Some(user) = &sandbox.user {
        command
            .arg("--uid")
            .arg(user.uid.to_string())
            .arg("--gid")
            .arg(user.gid.to_string());
    }
    // The supervisor's own environment is empty; the command's comes on stdin.
    command
        .arg("--")
        .args(argv)
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its group: the command stays in it unless it moves out (the supervisor finds those).
        .process_group(0);
    // The parent-death signal the supervisor arms follows the thread that spawned it; this
    // runs on a runtime worker thread, which lives as long as the runtime.
    let child = command.spawn().map_err(|e| {
        JobError::Retryable(format!(
            "starting the build supervisor {} failed: {e}",
            sandbox.supervisor.display()
        ))
    })?;
    // With process_group(0) the group id is the supervisor's pid.
    let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
    else {
        return Err(JobError::Retryable(
            "the build supervisor exited before it could be tracked".to_string(),
        ));
    };
    Ok((child, pid))
}

/// The log line saying what runs where, as whom and with which environment variables (names
/// only).
fn running_message(
    sandbox: &BuildSandbox,
    dir: &Path,
    argv: &[String],
    env: &[(String, String)],
    pid: Pid,
) -> String {
    let env_names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    format!(
        "running {argv:?} in {} as {} (supervisor pid {pid}){}",
        dir.display(),
        sandbox.user.as_ref().map_or_else(
            || "the server's user".to_string(),
            |u| format!("{} (uid {})", u.name, u.uid)
        ),
        if env_names.is_empty() {
            " with an empty environment".to_string()
        } else {
            format!(" with env {}", env_names.join(", "))
        }
    )
}

/// Hands the command's environment to the supervisor on its stdin.
async fn send_env(
    mut stdin: tokio::process::ChildStdin,
    env: &[(String, String)],
) -> Result<(), JobError> {
    let spec = serde_json::to_vec(&supervisor::Spec { env: env.to_vec() })
        .map_err(|e| JobError::Fatal(format!("encoding the build's environment: {e}")))?;
    // A supervisor that gave up early closes its end; its exit status and message say why.
    let _ = stdin.write_all(&spec).await;
    Ok(())
}

fn failure(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("command exited with status {code}"),
        (None, Some(signal)) => {
            let name = Signal::try_from(signal)
                .map_or_else(|_| signal.to_string(), |s| s.as_str().to_string());
            format!("command was killed by signal {name}")
        }
        (None, None) => format!("command failed: {status}"),
    }
}

/// The build supervisor of one command (`supervisor.rs`), in a process group of its own.
/// Stopping it is a SIGTERM (it then stops everything the command started), and a SIGKILL to
/// its group only when it has not exited within [`TERM_GRACE`]. Dropping the guard before the
/// supervisor was reaped (the engine enforces timeouts by dropping the handler's future) does
/// the same in the background.
struct Supervised {
    /// `None` once reaped.
    child: Option<Child>,
    pid: Pid,
}

impl Supervised {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other("the supervisor was already reaped"));
        };
        let status = child.wait().await?;
        self.child = None;
        // Only a supervisor killed from outside leaves members behind; they go too.
        let _ = killpg(self.pid, Signal::SIGKILL);
        Ok(status)
    }

    /// SIGTERM, up to [`TERM_GRACE`], then SIGKILL to the group; returns once it is reaped.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        stop_supervisor(&mut child, self.pid).await;
    }
}

async fn stop_supervisor(child: &mut Child, pid: Pid) {
    // ESRCH just means it is gone already.
    let _ = kill(pid, Signal::SIGTERM);
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = self.pid;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { stop_supervisor(&mut child, pid).await });
            }
            // No runtime (it is shutting down): the supervisor still cleans up on SIGTERM.
            Err(_) => {
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
    }
}

/// Copies `reader` to the log line by line as the output arrives, counting lines. Aborted when
/// the handle is dropped, so an abandoned run leaves no task behind.
fn pump<R>(
    reader: R,
    stream: LogStream,
    log: &LogSink,
    count: &Arc<AtomicU64>,
) -> AbortOnDropHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (log, count) = (log.clone(), Arc::clone(count));
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            // Bytes, not `lines()`: build output is not always valid UTF-8.
            let chunk = match reader.fill_buf().await {
                Ok(chunk) if !chunk.is_empty() => chunk,
                _ => break,
            };
            let (take, complete) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            line.extend_from_slice(&chunk[..take]);
            reader.consume(take);
            if complete || line.len() >= MAX_LINE_BYTES {
                emit(&log, stream, &mut line, &count).await;
            }
        }
        if !line.is_empty() {
            emit(&log, stream, &mut line, &count).await;
        }
    }))
}

/// Hands one line to the log, waiting while the log writer is behind: meanwhile the pipe is
/// not read, so a command printing faster than the database stores blocks on its writes.
async fn emit(log: &LogSink, stream: LogStream, line: &mut Vec<u8>, count: &AtomicU64) {
    log.write(
        stream,
        String::from_utf8_lossy(line)
            .trim_end_matches(['\n', '\r'])
            .to_string(),
    )
    .await;
    line.clear();
    count.fetch_add(1, Ordering::Relaxed);
}

/// Waits a little for the pumps to reach the end of the output; gives up on pipes held open by
/// processes outside the group.
async fn drain(pumps: [Option<AbortOnDropHandle<()>>; 2]) {
    for handle in pumps.into_iter().flatten() {
        let _ = tokio::time::timeout(PIPE_DRAIN, handle).await;
    }
}

/// Nothing here starts a process: a unit test cannot start the supervisor (the test binary is
/// not `switchyard`). Builds that run are tested in `server/tests/api/engine.rs`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::entrypoints::{drain_log, test_ctx};

    fn build() -> Build {
        Build {
            sandbox: Arc::new(BuildSandbox::unconfined()),
        }
    }

    fn fatal_message(result: Result<impl std::fmt::Debug, JobError>) -> String {
        match result {
            Err(JobError::Fatal(m)) => m,
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }

    #[test]
    fn the_working_directory_must_be_inside_the_checkouts_directory() {
        let data = tempfile::TempDir::new().expect("tempdir");
        let outside = tempfile::TempDir::new().expect("tempdir");
        let root = checkouts_root(data.path()).expect("checkouts");
        let repo = root.join("repo-0123");
        std::fs::create_dir_all(repo.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).expect("symlink");
        std::os::unix::fs::symlink("../..", repo.join("up")).expect("symlink");

        let (dir, locked) = confine(data.path(), &repo.to_string_lossy()).expect("a checkout");
        assert_eq!(
            (dir.as_path(), locked.as_path()),
            (repo.as_path(), repo.as_path())
        );
        // A directory inside a checkout locks the checkout; a relative path is below checkouts.
        let (dir, locked) = confine(data.path(), "repo-0123/sub").expect("inside a checkout");
        assert_eq!((dir, locked), (repo.join("sub"), repo.clone()));

        let shown = outside.path().to_string_lossy().into_owned();
        let message = fatal_message(confine(data.path(), &shown));
        assert!(
            message.contains(&shown) && message.contains("not inside"),
            "{message}"
        );
        for refused in [
            "/".to_string(),
            root.join("escape").to_string_lossy().into_owned(),
            "repo-0123/up".to_string(),
            root.to_string_lossy().into_owned(),
            data.path().to_string_lossy().into_owned(),
            "..".to_string(),
        ] {
            let message = fatal_message(confine(data.path(), &refused));
            assert!(message.contains(&refused), "{message}");
            assert!(message.contains("not inside"), "{refused}: {message}");
        }
        let message = fatal_message(confine(data.path(), "repo-0123/missing"));
        assert!(message.contains("does not exist"), "{message}");
        std::fs::write(repo.join("file"), "x").expect("write");
        let message = fatal_message(confine(data.path(), "repo-0123/file"));
        assert!(message.contains("not a directory"), "{message}");
    }

    #[test]
    fn programs_are_found_like_execvp_would_or_named_in_a_fatal_error() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        find_program("sh", &[], dir.path()).expect("sh is in /usr/bin or /bin");
        let message = fatal_message(find_program(
            "switchyard-no-such-program-xyz",
            &[],
            dir.path(),
        ));
        assert!(
            message.contains("switchyard-no-such-program-xyz"),
            "{message}"
        );
        assert!(message.contains(DEFAULT_PATH), "{message}");

        // Only the definition's PATH counts, not the server's.
        let path = vec![("PATH".to_string(), "/nonexistent".to_string())];
        let message = fatal_message(find_program("sh", &path, dir.path()));
        assert!(message.contains("/nonexistent"), "{message}");

        // Paths with a slash are relative to the checkout and must be executable.
        let script = dir.path().join("build.sh");
        std::fs::write(&script, "#!/bin/sh\n").expect("write");
        let message = fatal_message(find_program("./build.sh", &[], dir.path()));
        assert!(message.contains("./build.sh"), "{message}");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        find_program("./build.sh", &[], dir.path()).expect("an executable script");
        let bin = vec![(
            "PATH".to_string(),
            dir.path().to_string_lossy().into_owned(),
        )];
        find_program("build.sh", &bin, dir.path()).expect("found in the definition's PATH");
    }

    #[test]
    fn failures_name_the_status_or_the_signal() {
        assert_eq!(
            failure(ExitStatus::from_raw(3 << 8)),
            "command exited with status 3"
        );
        assert_eq!(
            failure(ExitStatus::from_raw(9)),
            "command was killed by signal SIGKILL"
        );
    }

    #[tokio::test]
    async fn refused_builds_start_nothing() {
        let data = tempfile::TempDir::new().expect("tempdir");
        let outside = tempfile::TempDir::new().expect("tempdir");
        let shown = outside.path().to_string_lossy().into_owned();
        let params = json!({"checkout": shown, "command": ["true"]});
        let (ctx, mut rx) = test_ctx(params, data.path());
        let message = fatal_message(build().execute(ctx).await);
        assert!(message.contains(&shown), "{message}");
        assert!(
            drain_log(&mut rx)
                .iter()
                .all(|l| !l.message.starts_with("running"))
        );

        let repo = checkouts_root(data.path()).expect("checkouts").join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir");
        let params = json!({"checkout": "repo", "command": ["switchyard-no-such-program-xyz"]});
        let (ctx, mut rx) = test_ctx(params, data.path());
        let message = fatal_message(build().execute(ctx).await);
        assert!(
            message.contains("switchyard-no-such-program-xyz"),
            "{message}"
        );
        assert!(
            drain_log(&mut rx)
                .iter()
                .all(|l| !l.message.starts_with("running"))
        );
    }
}
