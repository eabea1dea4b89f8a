//! `builtin:repository-build` `{"checkout" | "repoUrl", "command": [argv...], "env"?, "ref"?}`:
//! runs one program (an argv, never a shell string) in a checkout, streaming its output to the
//! run log. The program gets its own process group so that a cancel or timeout stops everything
//! it started, not just the first process.
use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};
use tokio_util::task::AbortOnDropHandle;

use super::{
    JobError, JobHandler, JobResult, JobRunContext, LogSink, LogStream, Problem, REPOSITORY_BUILD,
    check_string, check_string_map, checked_params, field, repository::ingest,
};

/// How long the process group gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the output pipes after the program exited; something that escaped the
/// process group (setsid) may hold them open forever.
const PIPE_DRAIN: Duration = Duration::from_secs(2);
/// Longer lines (progress bars without newlines) are split so one line cannot eat the memory.
const MAX_LINE_BYTES: usize = 64 * 1024;

pub(super) struct Build;

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
impl JobHandler for Build {
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
        let checkout = match field(params, "checkout").and_then(Value::as_str) {
            Some(path) => PathBuf::from(path),
            None => {
                let repo_url = field(params, "repoUrl")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let git_ref = field(params, "ref").and_then(Value::as_str);
                ingest(&ctx, repo_url, git_ref).await?.path
            }
        };
        if !checkout.is_dir() {
            return Err(JobError::Fatal(format!(
                "checkout {} does not exist or is not a directory",
                checkout.display()
            )));
        }
        if ctx.cancel.is_cancelled() {
            return Err(JobError::Canceled);
        }

        let started = Instant::now();
        let outcome = run(&ctx, &checkout, &argv, &env).await;
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

/// Variables a build inherits from the server process; everything else is withheld.
const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM",
];

/// Runs the command to completion (or cancellation); Ok holds the stdout and stderr line counts.
async fn run(
    ctx: &JobRunContext,
    dir: &Path,
    argv: &[String],
    env: &[(String, String)],
) -> Result<(u64, u64), JobError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(JobError::Fatal("command is empty".to_string()));
    };
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        // The server's own environment may hold credentials (DATABASE_URL, tokens): a build
        // sees only a neutral base plus what the run asked for.
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| INHERITED_ENV.iter().any(|i| k == *i)))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| JobError::Fatal(format!("starting {program} failed: {e}")))?;
    // With process_group(0) the group id is the child's pid.
    let Some(pgid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
    else {
        return Err(JobError::Fatal(format!(
            "{program} exited before it could be tracked"
        )));
    };
    let mut group = ProcessGroup {
        pgid,
        reaped: false,
    };
    let env_names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    ctx.log.info(format!(
        "running {argv:?} in {} (pid {pgid}){}",
        dir.display(),
        if env_names.is_empty() {
            String::new()
        } else {
            format!(" with env {}", env_names.join(", "))
        }
    ));

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

    let exited = tokio::select! {
        status = child.wait() => Some(status),
        () = ctx.cancel.cancelled() => None,
    };
    let status = match exited {
        Some(Ok(status)) => {
            group.reaped = true;
            // Background jobs the command left behind must not outlive the run.
            group.signal(Signal::SIGKILL);
            status
        }
        // The guard kills the group on return.
        Some(Err(e)) => {
            return Err(JobError::Retryable(format!(
                "waiting for {program} failed: {e}"
            )));
        }
        None => {
            ctx.log.info("canceled: stopping the command");
            group.terminate(&mut child).await;
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

/// The command's process group. Dropping it before the leader was reaped (the engine enforces
/// timeouts by dropping the handler's future) kills the whole group.
struct ProcessGroup {
    pgid: Pid,
    reaped: bool,
}

impl ProcessGroup {
    fn signal(&self, signal: Signal) {
        // ESRCH just means everyone is gone already.
        let _ = killpg(self.pgid, signal);
    }

    /// SIGTERM, a grace period, then SIGKILL; returns once the leader is reaped.
    async fn terminate(&mut self, child: &mut Child) {
        self.signal(Signal::SIGTERM);
        if tokio::time::timeout(TERM_GRACE, child.wait())
            .await
            .is_err()
        {
            self.signal(Signal::SIGKILL);
            let _ = child.wait().await;
        }
        self.reaped = true;
        // Members that ignored SIGTERM may outlive the leader.
        self.signal(Signal::SIGKILL);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(Signal::SIGKILL);
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
                emit(&log, stream, &mut line, &count);
            }
        }
        if !line.is_empty() {
            emit(&log, stream, &mut line, &count);
        }
    }))
}

fn emit(log: &LogSink, stream: LogStream, line: &mut Vec<u8>, count: &AtomicU64) {
    log.line(
        stream,
        String::from_utf8_lossy(line)
            .trim_end_matches(['\n', '\r'])
            .to_string(),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::{LogLine, drain_log, repository::tests::commit_files, test_ctx};
    use nix::errno::Errno;
    use tokio::sync::mpsc::UnboundedReceiver;

    fn params(dir: &Path, command: &[&str]) -> Value {
        json!({"checkout": dir.to_string_lossy(), "command": command})
    }

    async fn run_build(params: Value, data_dir: &Path) -> (JobResult, Vec<LogLine>) {
        let (ctx, mut rx) = test_ctx(params, data_dir);
        let result = Build.execute(ctx).await;
        (result, drain_log(&mut rx))
    }

    /// Waits for the "(pid N)" line the handler logs once the command started.
    async fn started_pid(rx: &mut UnboundedReceiver<LogLine>) -> Pid {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("command starts")
                .expect("log open");
            if let Some((_, rest)) = line.message.split_once("(pid ") {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                return Pid::from_raw(digits.parse().expect("pid"));
            }
        }
    }

    /// Dead means gone or a zombie waiting to be reaped.
    fn is_dead(pid: Pid) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn streams_stdout_and_stderr() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let command = ["sh", "-c", "echo out; echo err >&2; exit 0"];
        let (result, log) = run_build(params(dir.path(), &command), dir.path()).await;
        let result = result.expect("command succeeds");
        assert_eq!(result["exitCode"], json!(0));
        assert_eq!(result["command"], json!(command));
        assert_eq!(result["stdoutLines"], json!(1));
        assert_eq!(result["stderrLines"], json!(1));
        assert!(
            log.iter()
                .any(|l| l.stream == LogStream::Stdout && l.message == "out")
        );
        assert!(
            log.iter()
                .any(|l| l.stream == LogStream::Stderr && l.message == "err")
        );
    }

    #[tokio::test]
    async fn runs_in_the_checkout_with_extra_env() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let mut params = params(dir.path(), &["sh", "-c", "echo \"$GREETING\"; pwd -P"]);
        params["env"] = json!({"GREETING": "hello there"});
        let (result, log) = run_build(params, dir.path()).await;
        assert_eq!(result.expect("command succeeds")["stdoutLines"], json!(2));
        let stdout: Vec<&str> = log
            .iter()
            .filter(|l| l.stream == LogStream::Stdout)
            .map(|l| l.message.as_str())
            .collect();
        let cwd = dir.path().canonicalize().expect("canonical");
        assert_eq!(stdout, vec!["hello there", cwd.to_str().expect("utf-8")]);
    }

    #[tokio::test]
    async fn failures() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let (result, _) = run_build(params(dir.path(), &["sh", "-c", "exit 3"]), dir.path()).await;
        assert_eq!(
            result,
            Err(JobError::Retryable(
                "command exited with status 3".to_string()
            ))
        );

        let (result, _) =
            run_build(params(dir.path(), &["sh", "-c", "kill -9 $$"]), dir.path()).await;
        assert_eq!(
            result,
            Err(JobError::Retryable(
                "command was killed by signal SIGKILL".to_string()
            ))
        );

        let (result, _) = run_build(
            params(dir.path(), &["switchyard-no-such-program-xyz"]),
            dir.path(),
        )
        .await;
        assert!(
            matches!(result, Err(JobError::Fatal(m)) if m.contains("switchyard-no-such-program-xyz"))
        );

        let missing = dir.path().join("missing");
        let (result, _) = run_build(params(&missing, &["true"]), dir.path()).await;
        assert!(matches!(result, Err(JobError::Fatal(m)) if m.contains("does not exist")));
    }

    #[tokio::test]
    async fn cancel_stops_the_process_group() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let (ctx, mut rx) = test_ctx(params(dir.path(), &["sleep", "30"]), dir.path());
        let cancel = ctx.cancel.clone();
        let task = tokio::spawn(async move { Build.execute(ctx).await });
        let pid = started_pid(&mut rx).await;
        let started = Instant::now();
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops quickly")
            .expect("task ran");
        assert_eq!(result, Err(JobError::Canceled));
        assert!(started.elapsed() < Duration::from_secs(5));
        // The leader was reaped and nothing else was in the group.
        assert_eq!(killpg(pid, None), Err(Errno::ESRCH));
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_process_group() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        // The shell's background child shares the group; both must die.
        let command = ["sh", "-c", "sleep 30 & echo $!; wait"];
        let (ctx, mut rx) = test_ctx(params(dir.path(), &command), dir.path());
        let task = tokio::spawn(async move { Build.execute(ctx).await });
        let pid = started_pid(&mut rx).await;
        let background = loop {
            let line = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("background pid")
                .expect("log open");
            if line.stream == LogStream::Stdout {
                break Pid::from_raw(line.message.trim().parse().expect("pid"));
            }
        };
        task.abort();
        let _ = task.await;
        let deadline = Instant::now() + Duration::from_secs(3);
        while !(is_dead(pid) && is_dead(background)) {
            assert!(
                Instant::now() < deadline,
                "process group survived the dropped future"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn builds_from_a_repository_url() {
        let source = tempfile::TempDir::new().expect("tempdir");
        let data = tempfile::TempDir::new().expect("tempdir");
        commit_files(source.path(), &[("Makefile", "all:\n")], "init");
        let params = json!({"repoUrl": source.path().to_string_lossy(), "command": ["ls"]});
        let (result, log) = run_build(params, data.path()).await;
        let result = result.expect("build succeeds");
        assert!(
            result["checkout"]
                .as_str()
                .is_some_and(|c| c.contains("checkouts"))
        );
        assert!(
            log.iter()
                .any(|l| l.stream == LogStream::Stdout && l.message == "Makefile")
        );
    }
}
