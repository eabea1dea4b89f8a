//! The handler contract: `execute(JobRunContext) -> JobResult`. Every entry point, built in or
//! added later, receives its parameters, attempt number, a cancellation signal, a log sink and a
//! place to report metrics through this context, and nothing else.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use tokio::sync::mpsc;

use domain::{
    secrets::{EnvAllowList, Redactor},
    workflow::{SecretHeader, SecretRef, SecretSource},
};
use tokio_util::sync::CancellationToken;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Messages written by the engine or the handler itself.
    System,
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::System => "system",
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One line for the run log, as handed to the log writer.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub run_id: String,
    pub attempt: i32,
    pub stream: LogStream,
    pub message: String,
    /// Bytes of the writer's buffer this line holds ([`LogSender`]); given back once it is
    /// stored or handed to the run's finish.
    pub reserved: u32,
}

impl LogLine {
    /// A line of the run's log. U+0000 in `message` (a process may print any byte) becomes
    /// U+FFFD: no database stores it.
    pub fn new(run_id: String, attempt: i32, stream: LogStream, message: String) -> Self {
        let message = domain::problems::replace_nul(message);
        LogLine {
            run_id,
            attempt,
            stream,
            message,
            reserved: 0,
        }
    }

    /// The line as the store takes it: (run id, attempt, stream, message).
    pub fn into_row(self) -> (String, i32, String, String) {
        let stream = self.stream.as_str().to_string();
        (self.run_id, self.attempt, stream, self.message)
    }

    /// What the line costs in the log: its bytes and a newline.
    fn cost(&self) -> u64 {
        self.message.len() as u64 + 1
    }
}

/// The way into the log writer. The channel itself is unbounded, but the bytes of lines in it
/// (and in the writer's buffer) are bounded by a [`LogRoom`]: a producer that writes faster
/// than the database stores waits in [`LogSender::send`] (a build's pipe then fills and the
/// build blocks on its writes), so a flood of output cannot grow the server.
/// [`LogSender::send_now`] never waits: the engine's and handlers' own messages (a few per
/// attempt) go through even when the buffer is full.
#[derive(Clone)]
pub struct LogSender {
    tx: mpsc::UnboundedSender<LogLine>,
    room: LogRoom,
}

/// The log writer's buffer, in bytes: taken by lines sent, given back by the writer once they
/// are stored (or handed to their run's finish).
#[derive(Clone)]
pub struct LogRoom {
    free: Arc<tokio::sync::Semaphore>,
    capacity: u32,
}

impl LogRoom {
    pub fn new(capacity_bytes: u32) -> Self {
        let capacity = capacity_bytes.max(1);
        LogRoom {
            free: Arc::new(tokio::sync::Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// The bytes a line reserves: its cost, at most the whole buffer.
    fn reservation(&self, line: &LogLine) -> u32 {
        u32::try_from(line.cost())
            .unwrap_or(u32::MAX)
            .min(self.capacity)
    }

    /// Gives back the room held by lines that were stored or taken.
    pub fn release<'a>(&self, lines: impl IntoIterator<Item = &'a mut LogLine>) {
        let n: usize = lines
            .into_iter()
            .map(|l| std::mem::take(&mut l.reserved) as usize)
            .sum();
        self.release_bytes(n);
    }

    /// Gives back `n` bytes of room (of lines whose reservation was counted already).
    pub fn release_bytes(&self, n: usize) {
        if n > 0 {
            self.free.add_permits(n);
        }
    }

    /// Bytes of room left in the buffer.
    pub fn available(&self) -> usize {
        self.free.available_permits()
    }
}

impl LogSender {
    pub fn new(tx: mpsc::UnboundedSender<LogLine>, room: LogRoom) -> Self {
        LogSender { tx, room }
    }

    /// A sender whose room is never short (tests of handlers).
    pub fn unbounded(tx: mpsc::UnboundedSender<LogLine>) -> Self {
        LogSender::new(tx, LogRoom::new(u32::MAX >> 4))
    }

    /// Sends `line` once the buffer has room for it (backpressure).
    pub async fn send(&self, mut line: LogLine) {
        let n = self.room.reservation(&line);
        if let Ok(permit) = self.room.free.acquire_many(n).await {
            permit.forget();
            line.reserved = n;
        }
        // The writer only goes away at shutdown; a lost line then is no reason to fail the run.
        let _ = self.tx.send(line);
    }

    /// Sends `line` at once, reserving room if there is some.
    pub fn send_now(&self, mut line: LogLine) {
        if let Ok(permit) = self
            .room
            .free
            .try_acquire_many(self.room.reservation(&line))
        {
            line.reserved = permit.num_permits() as u32;
            permit.forget();
        }
        let _ = self.tx.send(line);
    }

    /// The room this sender's lines take.
    pub fn room(&self) -> &LogRoom {
        &self.room
    }
}

/// Engine lines still stored past the cap, so that the outcome of a run that printed too much
/// stays in its log.
const SYSTEM_ALLOWANCE: u64 = 64 * 1024;

/// What one run's log may still take (`--max-log-bytes-per-run`), shared by the sinks of one
/// attempt. Output past the cap is dropped and counted; the log says so once when it happens
/// ([`LogSink::line`]) and how much was cut when the attempt ends ([`LogSink::report_cut`]).
#[derive(Debug)]
pub struct LogBudget {
    cap: u64,
    used: AtomicU64,
    cut_bytes: AtomicU64,
    cut_lines: AtomicU64,
    announced: AtomicBool,
    /// Output was cut: no more output is stored.
    closed: AtomicBool,
}

impl LogBudget {
    /// A budget of `cap` bytes of which `used` are taken already (earlier attempts' lines).
    pub fn new(cap: u64, used: u64) -> Self {
        LogBudget {
            cap,
            used: AtomicU64::new(used),
            cut_bytes: AtomicU64::new(0),
            cut_lines: AtomicU64::new(0),
            announced: AtomicBool::new(used >= cap),
            closed: AtomicBool::new(used >= cap),
        }
    }

    /// No limit (tests of handlers).
    pub fn unlimited() -> Self {
        LogBudget::new(u64::MAX, 0)
    }

    /// Takes `cost` bytes for a line of `stream`; false when the line must be dropped. Once
    /// output was cut, later output is dropped too, even lines that would still fit: the log
    /// keeps the output's beginning, without gaps.
    fn take(&self, cost: u64, stream: LogStream) -> bool {
        let limit = match stream {
            LogStream::System => self.cap.saturating_add(SYSTEM_ALLOWANCE),
            _ if self.closed.load(Ordering::Acquire) => 0,
            _ => self.cap,
        };
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let next = used.saturating_add(cost);
                (next <= limit).then_some(next)
            })
            .is_ok();
        if !taken {
            if stream != LogStream::System {
                self.closed.store(true, Ordering::Release);
            }
            self.cut_bytes.fetch_add(cost, Ordering::AcqRel);
            self.cut_lines.fetch_add(1, Ordering::AcqRel);
        }
        taken
    }

    /// (bytes, lines) dropped so far.
    pub fn cut(&self) -> (u64, u64) {
        (
            self.cut_bytes.load(Ordering::Acquire),
            self.cut_lines.load(Ordering::Acquire),
        )
    }
}

/// Bytes as people read them: "10 MiB", "1.5 KiB", "300 bytes".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if (value - value.round()).abs() < 0.05 {
        format!("{} {}", value.round(), UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Appends lines to the durable run log. Cheap to clone. Lines go through a channel to a writer
/// that batches them into the database: [`LogSink::line`] never blocks (the engine's and
/// handlers' messages), [`LogSink::write`] waits while the writer's buffer is full (process
/// output). Every line passes the attempt's [`Redactor`] first, so resolved secret values never
/// reach the log, and the run's [`LogBudget`], so a log never grows past its cap.
#[derive(Clone)]
pub struct LogSink {
    run_id: String,
    attempt: i32,
    tx: LogSender,
    redactor: Arc<Redactor>,
    budget: Arc<LogBudget>,
}

impl LogSink {
    /// A sink with a redactor of its own (empty until secrets resolve).
    pub fn new(run_id: String, attempt: i32, tx: LogSender, budget: Arc<LogBudget>) -> Self {
        LogSink {
            run_id,
            attempt,
            tx,
            redactor: Arc::default(),
            budget,
        }
    }

    /// The values this attempt resolved, to redact results and errors with as well.
    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }

    /// The line, redacted, if the budget takes it; the first line the budget refuses makes
    /// the log say it was cut (once).
    fn admit(&self, stream: LogStream, message: String) -> Option<LogLine> {
        let message = if self.redactor.is_empty() {
            message
        } else {
            self.redactor.redact(&message)
        };
        let line = LogLine::new(self.run_id.clone(), self.attempt, stream, message);
        if self.budget.take(line.cost(), stream) {
            return Some(line);
        }
        if !self.budget.announced.swap(true, Ordering::AcqRel) {
            let notice = format!(
                "log limit reached: this run's log keeps at most {} (--max-log-bytes-per-run); further output is not stored, the run goes on",
                human_bytes(self.budget.cap)
            );
            // Past the cap by design: the notice is what says the log was cut.
            self.tx.send_now(LogLine::new(
                self.run_id.clone(),
                self.attempt,
                LogStream::System,
                notice,
            ));
        }
        None
    }

    /// Writes one line (a trailing newline is not needed); never waits.
    pub fn line(&self, stream: LogStream, message: impl Into<String>) {
        if let Some(line) = self.admit(stream, message.into()) {
            self.tx.send_now(line);
        }
    }

    /// Writes one line of output, waiting while the log writer's buffer is full: the producer
    /// of a flood of output is slowed down to what the database stores.
    pub async fn write(&self, stream: LogStream, message: impl Into<String>) {
        if let Some(line) = self.admit(stream, message.into()) {
            self.tx.send(line).await;
        }
    }

    /// Writes a system line.
    pub fn info(&self, message: impl Into<String>) {
        self.line(LogStream::System, message);
    }

    /// At the end of an attempt: when output was dropped, says how much (past the cap).
    pub fn report_cut(&self) {
        let (bytes, lines) = self.budget.cut();
        if lines == 0 {
            return;
        }
        let message = format!(
            "log cut: {} in {lines} line{} of output not stored (limit {} per run)",
            human_bytes(bytes),
            if lines == 1 { "" } else { "s" },
            human_bytes(self.budget.cap)
        );
        self.tx.send_now(LogLine::new(
            self.run_id.clone(),
            self.attempt,
            LogStream::System,
            message,
        ));
    }
}

/// Collects metrics a handler reports; stored as the run's `metrics` object.
#[derive(Clone, Default)]
pub struct MetricsSink {
    inner: Arc<std::sync::Mutex<BTreeMap<String, Value>>>,
}

impl MetricsSink {
    pub fn set(&self, key: impl Into<String>, value: impl Into<Value>) {
        if let Ok(mut map) = self.inner.lock() {
            map.insert(key.into(), value.into());
        }
    }

    /// The reported metrics as a JSON object (empty object when nothing was reported).
    pub fn snapshot(&self) -> serde_json::Map<String, Value> {
        self.inner
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// Everything a handler may use while executing one attempt of a run.
#[derive(Clone)]
pub struct JobRunContext {
    pub run_id: String,
    pub job_slug: String,
    /// Parameters after merging over the definition's defaults and schema validation.
    pub parameters: Value,
    /// 1-based attempt number.
    pub attempt: i32,
    pub max_attempts: i32,
    /// The run's timeout; the engine enforces it, handlers may use it for their own deadlines.
    pub timeout: Duration,
    /// Fired when the run is canceled, times out, or the worker shuts down.
    pub cancel: CancellationToken,
    pub log: LogSink,
    pub metrics: MetricsSink,
    /// The server's data directory (checkouts live below it).
    pub data_dir: PathBuf,
    /// The shared outbound HTTP client (egress policy, same-origin redirects, no proxy); its
    /// policy also guards git fetches.
    pub http: crate::egress::EgressClient,
    /// Registered services (for service steps).
    pub services: Arc<dyn ServiceDirectory>,
    /// Resolves secret references at execution time.
    pub secrets: Arc<dyn SecretResolver>,
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// A failure another attempt may fix (network error, non-zero exit, ...).
    #[error("{0}")]
    Retryable(String),
    /// A failure no retry can fix (bad parameters, missing checkout, ...): ends the run.
    #[error("{0}")]
    Fatal(String),
    /// The handler stopped because its cancellation token fired.
    #[error("canceled")]
    Canceled,
}

/// What an attempt produced: a JSON result or an error.
pub type JobResult = Result<Value, JobError>;

/// A job entry point compiled into the server: everything the registry, the API and the seeds
/// know of it comes from its implementation of this trait.
#[async_trait::async_trait]
pub trait EntryPoint: Send + Sync {
    /// Its name in definitions' `entryPoint` (`builtin:noop`, ...).
    fn name(&self) -> &'static str;

    /// What callers and definition authors may set: definition-only parameters, destinations
    /// (see `domain::authority`).
    fn rules(&self) -> domain::authority::EntryPointRules {
        domain::authority::EntryPointRules::default()
    }

    /// The static check of an object of parameters (presence and types only), on top of the
    /// job's own JSON schema.
    fn check(&self, _params: &serde_json::Map<String, Value>, _problems: &mut Vec<super::Problem>) {
    }

    /// Every problem of `params`: they must be an object that passes [`EntryPoint::check`].
    fn problems(&self, params: &Value) -> Vec<super::Problem> {
        let Some(object) = params.as_object() else {
            return vec![(String::new(), "parameters must be an object".to_string())];
        };
        let mut problems = Vec::new();
        self.check(object, &mut problems);
        problems
    }

    /// The job definition seeded for it once in the life of a database, if any.
    fn default_definition(&self) -> Option<Value> {
        None
    }

    /// Runs one attempt.
    async fn execute(&self, ctx: JobRunContext) -> JobResult;
}

/// The service registry as handlers see it (the service steps' `builtin:service-call`).
#[async_trait::async_trait]
pub trait ServiceDirectory: Send + Sync {
    /// The registered service, `None` when there is none by that slug.
    async fn service(&self, slug: &str) -> Result<Option<wire::Service>, String>;
}

/// One secret to resolve, and for whom (the audit log records it).
#[derive(Debug, Clone, Copy)]
pub struct SecretRequest<'a> {
    pub source: SecretSource,
    pub key: &'a str,
    /// Store secrets only; `None`: the current version.
    pub version: Option<i32>,
    pub run_id: &'a str,
    pub job_slug: &'a str,
}

/// A resolved secret: the value and, for the store, the version it came from.
pub struct ResolvedSecret {
    pub value: String,
    pub version: Option<i32>,
}

/// Where `{"secret": {"source", "key", "version"?}}` references resolve, at execution time.
/// The value must never be logged, stored in results or sent anywhere but where it is used.
/// Errors name the key, never a value: a missing secret is `Fatal`, an unreachable store
/// `Retryable`.
#[async_trait::async_trait]
pub trait SecretResolver: Send + Sync {
    async fn resolve(&self, request: SecretRequest<'_>) -> Result<ResolvedSecret, JobError>;
}

/// Resolves `source: "env"` from the process environment (the variables `0` allows); `store`
/// needs the secret store (`application::secrets::EngineSecrets`, which also audit-logs). For handler
/// unit tests.
pub struct EnvSecrets(pub EnvAllowList);

/// Reads an environment variable at execution time, if `allowed` lists it.
pub fn env_secret(key: &str, allowed: &EnvAllowList) -> Result<String, JobError> {
    if !allowed.allows(key) {
        return Err(JobError::Fatal(format!(
            "environment variable {key} is not on this worker's --secret-env-allow list (SWITCHYARD_* and DATABASE_URL never are)"
        )));
    }
    // Read at execution time on purpose: an operator may set the variable for the worker
    // process without restarting the server that accepted the definition.
    std::env::var(key).map_err(|_| {
        JobError::Fatal(format!(
            "environment variable {key} is not set on this worker"
        ))
    })
}

#[async_trait::async_trait]
impl SecretResolver for EnvSecrets {
    async fn resolve(&self, request: SecretRequest<'_>) -> Result<ResolvedSecret, JobError> {
        match request.source {
            SecretSource::Env => Ok(ResolvedSecret {
                value: env_secret(request.key, &self.0)?,
                version: None,
            }),
            SecretSource::Store => Err(JobError::Fatal(
                "the secret store is not available here".to_string(),
            )),
        }
    }
}

impl JobRunContext {
    /// Resolves one reference found at `at` (a JSON pointer or a header name, for messages):
    /// remembers the value for redaction and returns `prefix` + value.
    pub async fn resolve_secret(
        &self,
        at: &str,
        reference: &SecretHeader,
    ) -> Result<String, JobError> {
        let SecretRef {
            source,
            key,
            version,
        } = &reference.secret;
        let source_name = match source {
            SecretSource::Env => "env",
            SecretSource::Store => "store",
        };
        let resolved = self
            .secrets
            .resolve(SecretRequest {
                source: *source,
                key,
                version: *version,
                run_id: &self.run_id,
                job_slug: &self.job_slug,
            })
            .await
            .map_err(|e| match e {
                JobError::Fatal(why) => JobError::Fatal(format!("{at}: secret {key}: {why}")),
                JobError::Retryable(why) => {
                    JobError::Retryable(format!("{at}: secret {key}: {why}"))
                }
                JobError::Canceled => JobError::Canceled,
            })?;
        self.log.redactor().add(&resolved.value);
        let shown_version = resolved
            .version
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        self.log.info(format!(
            "{at}: resolved secret {key} from {source_name}{shown_version}"
        ));
        Ok(format!(
            "{}{}",
            reference.prefix.as_deref().unwrap_or(""),
            resolved.value
        ))
    }

    /// Replaces every `{"secret": ...}` reference in `parameters` by its value (the stored
    /// run keeps the references). A malformed reference is a fatal error naming its pointer.
    pub async fn resolve_parameters(&mut self) -> Result<(), JobError> {
        let found = domain::secrets::references(&self.parameters).map_err(|p| {
            let listed: Vec<String> = p
                .iter()
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect();
            JobError::Fatal(format!(
                "invalid secret reference in parameters: {}",
                listed.join("; ")
            ))
        })?;
        for (at, reference) in found {
            let shown = if at.is_empty() { "/" } else { at.as_str() };
            let value = self.resolve_secret(shown, &reference).await?;
            if let Some(slot) = self.parameters.pointer_mut(&at) {
                *slot = Value::String(value);
            }
        }
        Ok(())
    }
}

/// A directory with no services (tests of handlers that do not use it).
pub struct NoServices;

#[async_trait::async_trait]
impl ServiceDirectory for NoServices {
    async fn service(&self, _slug: &str) -> Result<Option<wire::Service>, String> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn line(n: usize) -> LogLine {
        LogLine::new("r".into(), 1, LogStream::Stdout, "x".repeat(n - 1))
    }

    #[tokio::test]
    async fn a_full_buffer_makes_the_producer_wait_until_lines_are_stored() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sender = LogSender::new(tx, LogRoom::new(100));
        sender.send(line(40)).await;
        sender.send(line(40)).await;
        assert_eq!(sender.room().available(), 20);
        // 40 more bytes do not fit: the producer waits, the line is not sent.
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(line(40)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "a producer went past a full buffer");
        let mut first = rx.recv().await.unwrap();
        assert_eq!(first.reserved, 40);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "the third line was sent");
        // The writer stored a line and gives its room back: the producer goes on.
        sender.room().release([&mut first]);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the producer goes on once there is room")
            .unwrap();
        assert_eq!(rx.recv().await.unwrap().reserved, 40);
        // Lines that never waited (the engine's own) go through even when it is full.
        sender.send_now(line(90));
        assert_eq!(rx.try_recv().unwrap().reserved, 0);
    }

    #[tokio::test]
    async fn output_past_the_runs_cap_is_dropped_said_once_and_counted() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // 100 bytes of cap, 30 taken by an earlier attempt.
        let budget = Arc::new(LogBudget::new(100, 30));
        let sink = LogSink::new("r".into(), 2, LogSender::unbounded(tx), budget);
        for i in 0..10 {
            sink.write(LogStream::Stdout, format!("line {i:03}")).await; // 9 bytes with its newline
        }
        // It would fit in the 7 bytes left, but the output was cut before it.
        sink.write(LogStream::Stdout, "tiny").await;
        sink.info("engine line past the cap");
        sink.report_cut();
        let lines: Vec<LogLine> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let texts: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        // 70 bytes left: 7 lines (63 bytes), then the notice, once.
        assert_eq!(
            &texts[..7],
            [
                "line 000", "line 001", "line 002", "line 003", "line 004", "line 005", "line 006"
            ]
        );
        assert!(
            texts[7].starts_with("log limit reached: this run's log keeps at most 100 bytes"),
            "{texts:?}"
        );
        assert_eq!(lines[7].stream, LogStream::System);
        assert_eq!(texts[8], "engine line past the cap");
        assert_eq!(
            texts[9],
            "log cut: 32 bytes in 4 lines of output not stored (limit 100 bytes per run)"
        );
        assert_eq!(texts.len(), 10, "{texts:?}");
        // A later attempt that starts past the cap does not say it again.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = LogSink::new(
            "r".into(),
            3,
            LogSender::unbounded(tx),
            Arc::new(LogBudget::new(100, 120)),
        );
        sink.line(LogStream::Stderr, "more");
        assert!(rx.try_recv().is_err());
        sink.report_cut();
        assert_eq!(
            rx.try_recv().unwrap().message,
            "log cut: 5 bytes in 1 line of output not stored (limit 100 bytes per run)"
        );
    }

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(300), "300 bytes");
        assert_eq!(human_bytes(64 * 1024), "64 KiB");
        assert_eq!(human_bytes(10 * 1024 * 1024), "10 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3 GiB");
    }
}
