//! The handler contract: `execute(JobRunContext) -> JobResult`. Every entry point, built in or
//! added later, receives its parameters, attempt number, a cancellation signal, a log sink and a
//! place to report metrics through this context, and nothing else.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::domain::{
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
}

impl LogLine {
    /// The line as the store takes it: (run id, attempt, stream, message).
    pub fn into_row(self) -> (String, i32, String, String) {
        let stream = self.stream.as_str().to_string();
        (self.run_id, self.attempt, stream, self.message)
    }
}

/// Appends lines to the durable run log. Cheap to clone; never blocks the handler (lines go
/// through a channel to a writer that batches them into the database). Every line passes the
/// attempt's [`Redactor`] first, so resolved secret values never reach the log.
#[derive(Clone)]
pub struct LogSink {
    run_id: String,
    attempt: i32,
    tx: mpsc::UnboundedSender<LogLine>,
    redactor: Arc<Redactor>,
}

impl LogSink {
    /// A sink with a redactor of its own (empty until secrets resolve).
    pub fn new(run_id: String, attempt: i32, tx: mpsc::UnboundedSender<LogLine>) -> Self {
        LogSink {
            run_id,
            attempt,
            tx,
            redactor: Arc::default(),
        }
    }

    /// The values this attempt resolved, to redact results and errors with as well.
    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }

    /// Writes one line (a trailing newline is not needed).
    pub fn line(&self, stream: LogStream, message: impl Into<String>) {
        let message = message.into();
        let message = if self.redactor.is_empty() {
            message
        } else {
            self.redactor.redact(&message)
        };
        // The writer only goes away at shutdown; a lost line then is no reason to fail the run.
        let _ = self.tx.send(LogLine {
            run_id: self.run_id.clone(),
            attempt: self.attempt,
            stream,
            message,
        });
    }

    /// Writes a system line.
    pub fn info(&self, message: impl Into<String>) {
        self.line(LogStream::System, message);
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

/// A job entry point compiled into the server.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync {
    async fn execute(&self, ctx: JobRunContext) -> JobResult;
}

/// The service registry as handlers see it (the service steps' `builtin:service-call`).
#[async_trait::async_trait]
pub trait ServiceDirectory: Send + Sync {
    /// The registered service, `None` when there is none by that slug.
    async fn service(&self, slug: &str) -> Result<Option<app::wire::Service>, String>;
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
/// needs the secret store (`crate::secrets::EngineSecrets`, which also audit-logs). For handler
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
        let found = crate::domain::secrets::references(&self.parameters).map_err(|p| {
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
    async fn service(&self, _slug: &str) -> Result<Option<app::wire::Service>, String> {
        Ok(None)
    }
}
