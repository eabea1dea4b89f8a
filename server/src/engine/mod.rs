//! The job engine: executes attempts handed over by the queue, owns run semantics (claims,
//! leases, timeouts, retries with durable backoff, cancellation, hand-back at shutdown) and
//! recovers runs whose worker died. apalis is only the durable queue and worker runtime.
pub mod logs;
pub mod queue;
pub mod reaper;
pub mod workers;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wire::{JobRun, RunStatus};

use crate::entrypoints::{
    JobError, JobResult, JobRunContext, LogBudget, LogLine, LogSink, MetricsSink, Registry,
    SecretResolver,
};
use crate::events::Event;
use crate::{
    egress::EgressClient,
    events::EventBus,
    settings::WorkerSettings,
    store::{ClaimedRun, RunClaim, Store},
};
use domain::problems::{replace_nul, replace_nul_json};
use domain::secrets::Redactor;
use logs::LogWriter;
use queue::{Queue, RunTask, WorkerWaker};

/// Why an executing attempt was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Canceled,
    /// Another worker holds the run now (the heartbeat found the lease taken).
    LeaseLost,
    /// The lease could not be renewed before it ended (the database did not answer): another
    /// worker may take the run over from then on.
    LeaseUnrenewed,
    Shutdown,
    Timeout,
}

/// When this process's hold on an attempt ends, by its own monotonic clock: the lease's end as
/// last written (by the database's clock) and renewed by the heartbeat. The handler is stopped
/// just before it, and writes about the attempt (its outcome) are retried until it.
#[derive(Clone)]
struct LeaseDeadline(Arc<Mutex<tokio::time::Instant>>);

impl LeaseDeadline {
    /// A lease ending at `until` by the database's clock.
    fn new(until: chrono::DateTime<Utc>, clock: &crate::store::DbClock) -> LeaseDeadline {
        let left = (until - clock.now()).to_std().unwrap_or_default();
        LeaseDeadline(Arc::new(Mutex::new(tokio::time::Instant::now() + left)))
    }

    fn get(&self) -> tokio::time::Instant {
        self.0
            .lock()
            .map(|d| *d)
            .unwrap_or_else(|_| tokio::time::Instant::now())
    }

    /// A renewal sent at `sent` for `lease` was committed.
    fn renewed(&self, sent: tokio::time::Instant, lease: Duration) {
        if let Ok(mut d) = self.0.lock() {
            *d = (*d).max(sent + lease);
        }
    }
}

/// The first pause between retries of a write about an attempt (doubling up to
/// [`RETRY_PAUSE_MAX`]) while its lease lasts.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);

struct InFlight {
    token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl InFlight {
    fn stop(&self, reason: StopReason) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.token.cancel();
    }
}

/// Publishes `job.run.<status>` with the run.
pub async fn publish_run(bus: &EventBus, run: &JobRun) {
    bus.publish(Event::JobRun(run.clone())).await;
}

/// What the engine reports to the layer above it: a workflow step's job run changed, and the
/// recovery sweep's tick. The application's orchestrator implements it (it moves workflow
/// runs on); the engine only knows this trait, so it depends on nothing above it.
#[async_trait::async_trait]
pub trait RunObserver: Send + Sync {
    /// `run`, a workflow step's job run (`workflow_run_id` is set), has a new state.
    async fn step_run_changed(&self, run: &JobRun);
    /// The reaper's periodic recovery sweep: bring every unfinished run up to date.
    async fn sweep(&self);
}

/// Shared by every worker of the process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    store: Store,
    bus: EventBus,
    queue: Queue,
    waker: WorkerWaker,
    registry: Arc<Registry>,
    logs: LogWriter,
    owner: String,
    settings: WorkerSettings,
    data_dir: PathBuf,
    http: EgressClient,
    inflight: Mutex<HashMap<String, InFlight>>,
    /// Told about workflow steps' transitions (set once at start-up, see [`Engine::observe`]).
    observer: std::sync::OnceLock<Arc<dyn RunObserver>>,
    /// Resolves secret references at execution time (and audit-logs each resolution).
    secrets: Arc<dyn SecretResolver>,
    /// Registered services with their credentials opened (service steps).
    services: Arc<dyn crate::entrypoints::ServiceDirectory>,
    /// Attempts started by [`Engine::try_run_locally`] that have not returned yet.
    local_running: std::sync::atomic::AtomicUsize,
    /// False once shutdown began: no more local starts.
    accepting: std::sync::atomic::AtomicBool,
    /// Provider-driven attempts executing here (see [`Engine::execute_driven`]): their
    /// transitions are not reported to the observer (the provider moves their runs on).
    driven: Mutex<std::collections::HashSet<String>>,
}

/// Worker slots of this process reserved for runs that are stored already claimed by it: the
/// run is inserted `running` with this process's lease ([`LocalSlots::claim`]) and then executed
/// here ([`LocalSlots::start`]), which saves the claim's write on the path of every run that
/// starts at once. Crash-safe like a claimed run: if the process dies before or while executing
/// it, the lease expires and the reaper retries the run as a new attempt (or fails it when no
/// attempt is left). Unused slots are given back on drop (the insert failed, or found an
/// earlier run with the same idempotency key).
pub struct LocalSlots {
    engine: Option<Engine>,
    left: usize,
}

impl LocalSlots {
    /// No slot: the run goes through the queue.
    pub fn none() -> LocalSlots {
        LocalSlots {
            engine: None,
            left: 0,
        }
    }

    /// Slots still reserved.
    pub fn available(&self) -> usize {
        self.left
    }

    /// The claim a run stored on one of these slots carries at `now`; None without slots.
    pub fn claim(&self, now: chrono::DateTime<Utc>) -> Option<RunClaim> {
        let engine = self.engine.as_ref().filter(|_| self.left > 0)?;
        let lease = chrono::Duration::from_std(engine.inner.settings.lease()).unwrap_or_default();
        Some(RunClaim {
            owner: engine.inner.owner.clone(),
            // Judged by other processes: by the database's clock, not this machine's.
            lease_until: engine.inner.store.clock().now() + lease,
            at: now,
        })
    }

    /// Executes `claimed` (committed with this set's claim) on one of the slots, in the
    /// background.
    pub fn start(&mut self, claimed: ClaimedRun) {
        let Some(engine) = self.engine.clone().filter(|_| self.left > 0) else {
            // A caller bug: the run is claimed but there is no slot; the lease will expire
            // and the reaper retry it.
            tracing::error!(run_id = %claimed.run.id, "no reserved worker slot for a claimed run");
            return;
        };
        self.left -= 1;
        tokio::spawn(async move {
            engine.execute_claimed(claimed).await;
            engine.release(1);
        });
    }
}

impl Drop for LocalSlots {
    fn drop(&mut self) {
        if let Some(engine) = &self.engine
            && self.left > 0
        {
            engine.release(self.left);
        }
    }
}

/// The run as it was accepted: `pending` and not started. A run stored already claimed
/// ([`LocalSlots`]) is announced and answered in this state first, like any other run, and
/// reported `running` when its attempt starts.
pub fn as_accepted(run: &JobRun) -> JobRun {
    let mut accepted = run.clone();
    accepted.status = RunStatus::Pending;
    accepted.started_at = None;
    accepted.updated_at = accepted.created_at;
    accepted
}

/// How long a handler gets to wind down after being told to stop before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        bus: EventBus,
        queue: Queue,
        waker: WorkerWaker,
        registry: Arc<Registry>,
        settings: WorkerSettings,
        data_dir: PathBuf,
        secrets: Arc<dyn SecretResolver>,
        services: Arc<dyn crate::entrypoints::ServiceDirectory>,
        http: EgressClient,
    ) -> Engine {
        let logs = LogWriter::spawn(store.clone());
        Engine {
            inner: Arc::new(EngineInner {
                store,
                bus,
                queue,
                waker,
                registry,
                logs,
                owner: worker_identity(),
                settings,
                data_dir,
                http,
                inflight: Mutex::new(HashMap::new()),
                observer: std::sync::OnceLock::new(),
                secrets,
                services,
                local_running: Default::default(),
                accepting: std::sync::atomic::AtomicBool::new(true),
                driven: Mutex::new(Default::default()),
            }),
        }
    }

    /// Sets who hears about workflow steps' transitions and the sweep (once, at start-up).
    pub fn observe(&self, observer: Arc<dyn RunObserver>) {
        if self.inner.observer.set(observer).is_err() {
            tracing::warn!("the engine's run observer was set twice; the first one stays");
        }
    }

    /// The recovery sweep of the layer above (workflow runs), on the reaper's tick.
    pub async fn sweep_observed(&self) {
        if let Some(observer) = self.inner.observer.get() {
            observer.sweep().await;
        }
    }

    /// Reserves up to `want` of this process's worker slots (fewer attempts in flight than
    /// workers x concurrency, and not shutting down) for runs that are about to be stored
    /// already claimed by this process (see [`LocalSlots`]).
    pub fn reserve(&self, want: usize) -> LocalSlots {
        let mut left = 0;
        while left < want && self.try_reserve_one() {
            left += 1;
        }
        LocalSlots {
            engine: (left > 0).then(|| self.clone()),
            left,
        }
    }

    fn try_reserve_one(&self) -> bool {
        use std::sync::atomic::Ordering;
        let inner = &self.inner;
        let capacity = inner.settings.workers * inner.settings.concurrency.max(1);
        if capacity == 0 || !inner.accepting.load(Ordering::Acquire) {
            return false;
        }
        let local = inner.local_running.fetch_add(1, Ordering::AcqRel);
        // Counted twice while running (also in `inflight`): errs on the side of queueing.
        if self.inflight_count() + local >= capacity {
            inner.local_running.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn release(&self, slots: usize) {
        self.inner
            .local_running
            .fetch_sub(slots, std::sync::atomic::Ordering::AcqRel);
    }

    /// Shutdown began: steps that become ready go through the queue from now on.
    pub fn stop_accepting(&self) {
        self.inner
            .accepting
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Attempts this process is executing or about to (for draining at shutdown).
    pub fn busy_count(&self) -> usize {
        self.inflight_count()
            + self
                .inner
                .local_running
                .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.inner.settings
    }

    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    pub fn waker(&self) -> &WorkerWaker {
        &self.inner.waker
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    /// Publishes a run's new state; a workflow step's run is also reported to the observer
    /// (which moves its workflow run on, in the background of whichever process ran it).
    pub async fn run_changed(&self, run: &JobRun) {
        publish_run(&self.inner.bus, run).await;
        if run.workflow_run_id.is_some()
            && !self.is_driven(&run.id)
            && let Some(observer) = self.inner.observer.get()
        {
            observer.step_run_changed(run).await;
        }
    }

    /// The attempt's log. The run's cap counts what earlier attempts stored (read once, for a
    /// later attempt only); reading it may fail, and then this attempt gets the whole cap.
    async fn log_sink(&self, run: &JobRun) -> LogSink {
        let cap = self.inner.settings.max_log_bytes_per_run;
        let used = if run.attempt > 1 {
            match self.inner.store.log_bytes(&run.id).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(run_id = %run.id, error = %e, "could not read the size of the run's log; this attempt gets the whole cap");
                    0
                }
            }
        } else {
            0
        };
        LogSink::new(
            run.id.clone(),
            run.attempt,
            self.inner.logs.sender(),
            Arc::new(LogBudget::new(cap, used)),
        )
    }

    /// Number of attempts executing in this process.
    pub fn inflight_count(&self) -> usize {
        self.inner.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Tells every in-flight attempt to stop for `reason`.
    pub fn stop_all(&self, reason: StopReason) {
        if let Ok(map) = self.inner.inflight.lock() {
            for f in map.values() {
                f.stop(reason);
            }
        }
    }

    /// Stops the attempt of `run_id` if it executes here.
    pub fn stop_run(&self, run_id: &str, reason: StopReason) {
        if let Ok(map) = self.inner.inflight.lock()
            && let Some(f) = map.get(run_id)
        {
            f.stop(reason);
        }
    }

    /// Pushes a queue task for an attempt and wakes local workers.
    pub async fn dispatch(&self, run_id: &str, attempt: i32, delay: Duration) {
        let task = RunTask {
            run_id: run_id.to_string(),
            attempt,
        };
        if let Err(e) = self.inner.queue.push(task, delay).await {
            // The reaper's sweep of overdue pending runs pushes it again later.
            tracing::error!(run_id, error = %e, "could not enqueue run attempt");
        }
        if delay.is_zero() {
            self.inner.waker.wake();
        }
    }

    /// Executes one queue task: claim, run with heartbeat and timeout, record the outcome.
    pub async fn execute(&self, task: RunTask) {
        // Leases are judged by other processes: by the database's clock, not this machine's.
        let now = self.inner.store.clock().now();
        let lease_until = now + self.inner.settings.lease();
        let claimed = match self
            .inner
            .store
            .claim(
                &task.run_id,
                task.attempt,
                &self.inner.owner,
                lease_until,
                now,
            )
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => return, // stale, canceled, or owned by another worker
            Err(e) => {
                tracing::warn!(run_id = %task.run_id, error = %e, "claim failed; the task will be retried by the sweep");
                return;
            }
        };
        self.execute_claimed(claimed).await;
    }

    /// Executes attempt `attempt` of a run a workflow provider schedules (its `driver` is set)
    /// here, as any attempt (logs, redaction, secrets, heartbeat, timeout, cancellation), and
    /// returns the run as the attempt left it: finished, or pending for the next attempt when
    /// this one failed and attempts are left (the provider retries it; Switchyard's queue
    /// does not). `None`: the run no longer takes this attempt (canceled, or a later attempt
    /// holds it), and the run as it is.
    pub async fn execute_driven(
        &self,
        run_id: &str,
        attempt: i32,
    ) -> crate::store::StoreResult<(bool, Option<JobRun>)> {
        let now = self.inner.store.clock().now();
        let lease_until = now + self.inner.settings.lease();
        let claimed = self
            .inner
            .store
            .take_attempt(run_id, attempt, &self.inner.owner, lease_until, now)
            .await?;
        let Some(claimed) = claimed else {
            return Ok((false, self.inner.store.get_run(run_id).await?));
        };
        if let Ok(mut d) = self.inner.driven.lock() {
            d.insert(run_id.to_string());
        }
        self.execute_claimed(claimed).await;
        if let Ok(mut d) = self.inner.driven.lock() {
            d.remove(run_id);
        }
        Ok((true, self.inner.store.get_run(run_id).await?))
    }

    fn is_driven(&self, run_id: &str) -> bool {
        self.inner
            .driven
            .lock()
            .map(|d| d.contains(run_id))
            .unwrap_or(false)
    }

    /// Executes an attempt this process has claimed: registered as in flight (so that cancel,
    /// shutdown and lease loss reach it) while it runs.
    async fn execute_claimed(&self, claimed: ClaimedRun) {
        let run_id = claimed.run.id.clone();
        let token = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        if let Ok(mut map) = self.inner.inflight.lock() {
            map.insert(
                run_id.clone(),
                InFlight {
                    token: token.clone(),
                    reason: reason.clone(),
                },
            );
        }
        self.run_claimed(claimed, token, reason).await;
        if let Ok(mut map) = self.inner.inflight.lock() {
            map.remove(&run_id);
        }
    }

    /// Executes a claimed attempt: announces it, runs its handler under heartbeat, timeout and
    /// cancellation, then records how it ended (outcome, retry or hand-back).
    async fn run_claimed(
        &self,
        claimed: ClaimedRun,
        token: CancellationToken,
        reason: Arc<Mutex<Option<StopReason>>>,
    ) {
        let ClaimedRun {
            run,
            entry_point,
            retry_policy,
            lease_until,
        } = claimed;
        let lease = LeaseDeadline::new(lease_until, self.inner.store.clock());
        let log = self.start_attempt(&run, &entry_point).await;

        let heartbeat = self.spawn_heartbeat(&run, token.clone(), reason.clone(), lease.clone());
        let metrics = MetricsSink::default();
        let outcome = self
            .run_handler(&run, &entry_point, &token, &reason, &log, &metrics)
            .await;
        heartbeat.abort();
        log.report_cut();
        // Nothing this attempt resolved may be stored: not in the result, the error or metrics.
        // Nor U+0000 (a remote service may answer with it), which no database stores: it
        // becomes U+FFFD, else the finish could never be written.
        let redactor = log.redactor().clone();
        let outcome = scrub_outcome(&redactor, outcome);
        let stop = reason.lock().ok().and_then(|r| *r);
        let metrics = scrub_metrics(&redactor, &metrics);

        match stop {
            Some(why) => {
                self.record_stop(why, &run, &lease, &retry_policy, &log, metrics)
                    .await
            }
            None => {
                self.record_completion(&run, &lease, &retry_policy, &log, outcome, metrics)
                    .await
            }
        }
    }

    /// Announces that the attempt of `run` started (event, attempt log, trace) and returns the
    /// attempt's log.
    async fn start_attempt(&self, run: &JobRun, entry_point: &str) -> LogSink {
        self.run_changed(run).await;
        let log = self.log_sink(run).await;
        log.info(format!(
            "attempt {} of {} started on {} ({})",
            run.attempt, run.max_attempts, self.inner.owner, entry_point
        ));
        tracing::info!(run_id = %run.id, job = %run.job_slug, attempt = run.attempt, "run started");
        log
    }

    /// Runs the handler of `entry_point` for `run` (an unknown one fails the attempt for good)
    /// under the run's timeout and `token`; see [`supervise`].
    async fn run_handler(
        &self,
        run: &JobRun,
        entry_point: &str,
        token: &CancellationToken,
        reason: &Arc<Mutex<Option<StopReason>>>,
        log: &LogSink,
        metrics: &MetricsSink,
    ) -> JobResult {
        let timeout = Duration::from_millis(run.timeout_ms.max(1) as u64);
        let Some(handler) = self.inner.registry.get(entry_point) else {
            return Err(JobError::Fatal(format!(
                "unknown entry point {entry_point}"
            )));
        };
        let mut ctx = self.job_context(run, timeout, token, log, metrics);
        // References in the parameters resolve now, under the run's timeout and
        // cancellation; the stored run keeps the references.
        let fut = async move {
            ctx.resolve_parameters().await?;
            handler.execute(ctx).await
        };
        supervise(fut, timeout, token, reason).await
    }

    /// The context the handler of `run`'s attempt executes with.
    fn job_context(
        &self,
        run: &JobRun,
        timeout: Duration,
        token: &CancellationToken,
        log: &LogSink,
        metrics: &MetricsSink,
    ) -> JobRunContext {
        let inner = &self.inner;
        JobRunContext {
            run_id: run.id.clone(),
            job_slug: run.job_slug.clone(),
            parameters: run.parameters.clone(),
            attempt: run.attempt,
            max_attempts: run.max_attempts,
            timeout,
            cancel: token.clone(),
            log: log.clone(),
            metrics: metrics.clone(),
            data_dir: inner.data_dir.clone(),
            http: inner.http.clone(),
            services: inner.services.clone(),
            secrets: inner.secrets.clone(),
        }
    }

    /// Records an attempt that was told to stop (`why`): a timeout fails it (or schedules the
    /// next attempt), a shutdown hands the run back, the other reasons leave the run to
    /// whoever holds it now.
    async fn record_stop(
        &self,
        why: StopReason,
        run: &JobRun,
        lease: &LeaseDeadline,
        policy: &wire::RetryPolicy,
        log: &LogSink,
        metrics: Option<Value>,
    ) {
        let now = Utc::now();
        match why {
            StopReason::Canceled => {
                log.info("canceled");
            }
            StopReason::LeaseLost => {
                log.info("lease lost: another worker took this run over; stopping");
            }
            StopReason::LeaseUnrenewed => {
                log.info(format!(
                    "could not renew the lease of attempt {} before it ended (the database did not answer): stopped; another worker takes the run over",
                    run.attempt
                ));
            }
            StopReason::Shutdown => {
                self.hand_back(run, lease, log, now).await;
                return;
            }
            StopReason::Timeout => {
                let msg = format!("timed out after {} ms", run.timeout_ms);
                self.fail_or_retry(run, lease, policy, msg, RunStatus::Expired, metrics, log)
                    .await;
                return;
            }
        }
        self.inner.logs.flush().await;
    }

    /// Hands the run back at shutdown (pending again, same attempt, due `now`) for a worker to
    /// pick up at once.
    async fn hand_back(
        &self,
        run: &JobRun,
        lease: &LeaseDeadline,
        log: &LogSink,
        now: chrono::DateTime<Utc>,
    ) {
        let inner = &self.inner;
        log.info("worker shutting down: handing the run back");
        inner.logs.flush().await;
        let handed_back = self
            .while_leased(lease, &run.id, "hand the run back", || {
                inner.store.requeue(
                    &run.id,
                    run.attempt,
                    Some(&inner.owner),
                    run.attempt,
                    now,
                    None,
                    now,
                )
            })
            .await;
        match handed_back {
            Ok(Some(back)) => {
                self.run_changed(&back).await;
                if !self.is_driven(&back.id) {
                    self.dispatch(&back.id, back.attempt, Duration::ZERO).await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(run_id = %run.id, error = %e, "hand-back failed; the lease will expire and the run be retried")
            }
        }
    }

    /// Records the outcome of an attempt whose handler returned without being told to stop:
    /// success, a fatal failure, or a failure another attempt may fix.
    async fn record_completion(
        &self,
        run: &JobRun,
        lease: &LeaseDeadline,
        policy: &wire::RetryPolicy,
        log: &LogSink,
        outcome: JobResult,
        metrics: Option<Value>,
    ) {
        match outcome {
            Ok(result) => {
                log.info("succeeded");
                self.record_finish(
                    run,
                    lease,
                    RunStatus::Succeeded,
                    Some(result),
                    None,
                    metrics,
                )
                .await;
            }
            Err(JobError::Retryable(msg)) => {
                self.fail_or_retry(run, lease, policy, msg, RunStatus::Failed, metrics, log)
                    .await;
            }
            Err(JobError::Fatal(msg)) => {
                log.info(format!("failed: {msg}"));
                self.record_finish(run, lease, RunStatus::Failed, None, Some(msg), metrics)
                    .await;
            }
            Err(JobError::Canceled) => {
                let msg = "the handler stopped without being asked to".to_string();
                self.fail_or_retry(run, lease, policy, msg, RunStatus::Failed, metrics, log)
                    .await;
            }
        }
    }

    /// Runs `write` (a write about an attempt this process holds) until it succeeds or the
    /// lease ends: a database hiccup must not make a completed attempt run again. After the
    /// lease, another worker may hold the run, and the write's own condition (owner, attempt)
    /// would not apply anyway.
    async fn while_leased<T, F, Fut>(
        &self,
        lease: &LeaseDeadline,
        run_id: &str,
        what: &str,
        mut write: F,
    ) -> crate::store::StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::store::StoreResult<T>>,
    {
        let mut pause = RETRY_PAUSE;
        let mut failures = 0u32;
        loop {
            match write().await {
                Ok(v) => {
                    if failures > 0 {
                        tracing::info!(run_id, failures, "could {what} after retrying");
                    }
                    return Ok(v);
                }
                Err(e) => {
                    failures += 1;
                    let left = lease
                        .get()
                        .saturating_duration_since(tokio::time::Instant::now());
                    if left <= pause {
                        return Err(e);
                    }
                    tracing::warn!(run_id, error = %e, left_ms = left.as_millis() as u64, "could not {what}; retrying while the lease lasts");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fail_or_retry(
        &self,
        run: &JobRun,
        lease: &LeaseDeadline,
        policy: &wire::RetryPolicy,
        msg: String,
        final_status: RunStatus,
        metrics: Option<Value>,
        log: &LogSink,
    ) {
        let inner = &self.inner;
        if run.attempt < run.max_attempts {
            let delay = domain::retry::next_delay(policy, run.attempt, &mut rand::rng());
            log.info(format!(
                "attempt {} failed: {msg}; retrying in {} ms",
                run.attempt,
                delay.as_millis()
            ));
            inner.logs.flush().await;
            let now = Utc::now();
            let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            let requeued = self
                .while_leased(lease, &run.id, "schedule the next attempt", || {
                    inner.store.requeue(
                        &run.id,
                        run.attempt,
                        Some(&inner.owner),
                        run.attempt + 1,
                        at,
                        Some(msg.clone()),
                        now,
                    )
                })
                .await;
            match requeued {
                Ok(Some(next)) => {
                    self.run_changed(&next).await;
                    // A provider-driven run's next attempt is the provider's to start.
                    if !self.is_driven(&next.id) {
                        self.dispatch(&next.id, next.attempt, delay).await;
                    }
                }
                Ok(None) => {} // canceled meanwhile
                Err(e) => {
                    tracing::error!(run_id = %run.id, error = %e, "could not schedule the next attempt")
                }
            }
        } else {
            log.info(format!(
                "attempt {} failed: {msg}; no attempts left",
                run.attempt
            ));
            self.record_finish(run, lease, final_status, None, Some(msg), metrics)
                .await;
        }
    }

    /// Records the attempt's outcome, retried while the lease lasts (see
    /// [`Engine::while_leased`]): a completed attempt is not run again for a failed write.
    async fn record_finish(
        &self,
        run: &JobRun,
        lease: &LeaseDeadline,
        status: RunStatus,
        result: Option<Value>,
        error: Option<String>,
        metrics: Option<Value>,
    ) {
        let inner = &self.inner;
        // The attempt's unstored log lines are written with the outcome, in the same commit.
        let taken = inner.logs.take(&run.id).await;
        let lines: Vec<_> = taken.iter().cloned().map(LogLine::into_row).collect();
        let now = Utc::now();
        let mut tries = 0u32;
        let finished = self
            .while_leased(lease, &run.id, "record the run's outcome", || {
                tries += 1;
                inner.store.finish(
                    run,
                    &inner.owner,
                    status,
                    result.clone(),
                    error.clone(),
                    metrics.clone(),
                    now,
                    lines.clone(),
                )
            })
            .await;
        match finished {
            Ok(Some(done)) => {
                tracing::info!(run_id = %done.id, job = %done.job_slug, status = %done.status, "run finished");
                self.run_changed(&done).await;
            }
            Ok(None) if tries > 1 => {
                // An earlier try may have been committed without its answer reaching us (the
                // connection broke during the commit): then the run is stored as we left it.
                match inner.store.get_run(&run.id).await {
                    Ok(Some(stored))
                        if stored.status == status
                            && stored.attempt == run.attempt
                            && stored.error_message == error =>
                    {
                        tracing::info!(run_id = %stored.id, job = %stored.job_slug, status = %stored.status, "run finished");
                        self.run_changed(&stored).await;
                    }
                    _ => {
                        tracing::info!(run_id = %run.id, "run was canceled or taken over before it finished")
                    }
                }
            }
            Ok(None) => {
                tracing::info!(run_id = %run.id, "run was canceled or taken over before it finished")
            }
            Err(e) => {
                // Nothing was written: the lines go back to the log writer.
                let sender = inner.logs.sender();
                for line in taken {
                    sender.send_now(line);
                }
                tracing::error!(run_id = %run.id, error = %e, "could not record the run's outcome before its lease ended; another worker will run the attempt again")
            }
        }
    }

    /// Renews the lease every third of it while the handler runs. A renewal that finds the
    /// lease taken stops the handler at once (canceled, or another worker holds the run); one
    /// that fails is retried, and when none has succeeded shortly before the lease ends the
    /// handler is stopped then: from that moment another worker may start the same attempt.
    fn spawn_heartbeat(
        &self,
        run: &JobRun,
        token: CancellationToken,
        reason: Arc<Mutex<Option<StopReason>>>,
        lease: LeaseDeadline,
    ) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        let run_id = run.id.clone();
        let attempt = run.attempt;
        tokio::spawn(async move {
            let inner = &engine.inner;
            let every = inner.settings.heartbeat();
            let length = inner.settings.lease();
            // Stopped this long before the lease ends, so that it has stopped when another
            // worker may take over (which also waits for its next recovery sweep).
            let margin = length / 10;
            let retry = (every / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
            let mut next = tokio::time::Instant::now() + every;
            let mut last_try = tokio::time::Instant::now() - Duration::from_millis(50);
            let stop = |why: StopReason| {
                if let Ok(mut r) = reason.lock() {
                    r.get_or_insert(why);
                }
                token.cancel();
            };
            loop {
                let stop_at = lease.get() - margin;
                // A renewal is always tried before the lease runs short (an attempt may start
                // with little of it left: its insert waited for the database).
                let renew_at = next
                    .min(stop_at.checked_sub(retry).unwrap_or(stop_at))
                    .max(last_try + Duration::from_millis(50));
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep_until(renew_at) => {}
                }
                if tokio::time::Instant::now() >= stop_at {
                    tracing::error!(run_id = %run_id, attempt, "could not renew the lease before it ended; stopping the attempt");
                    stop(StopReason::LeaseUnrenewed);
                    return;
                }
                let sent = tokio::time::Instant::now();
                last_try = sent;
                let until = inner.store.clock().now() + length;
                let renewal = tokio::time::timeout_at(
                    stop_at,
                    inner.store.heartbeat(&run_id, attempt, &inner.owner, until),
                )
                .await;
                match renewal {
                    Ok(Ok(true)) => {
                        lease.renewed(sent, length);
                        next = sent + every;
                    }
                    Ok(Ok(false)) => {
                        let canceled = matches!(
                            inner.store.get_run(&run_id).await,
                            Ok(Some(r)) if r.status == RunStatus::Canceled
                        );
                        stop(if canceled {
                            StopReason::Canceled
                        } else {
                            StopReason::LeaseLost
                        });
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(run_id = %run_id, error = %e, "heartbeat failed; retrying while the lease lasts");
                        next = tokio::time::Instant::now() + retry;
                    }
                    // No answer before the lease's end: the loop stops the attempt.
                    Err(_) => {}
                }
            }
        })
    }
}

/// Awaits `fut`, an attempt's handler, until it returns, the run's `timeout` passes (the stop
/// reason becomes [`StopReason::Timeout`] and `token` is canceled) or `token` is canceled; a
/// handler told to stop gets [`STOP_GRACE`] to clean up (kill its processes) before it is
/// dropped, and then counts as canceled.
async fn supervise<F>(
    fut: F,
    timeout: Duration,
    token: &CancellationToken,
    reason: &Arc<Mutex<Option<StopReason>>>,
) -> JobResult
where
    F: std::future::Future<Output = JobResult>,
{
    tokio::pin!(fut);
    let early = tokio::select! {
        r = &mut fut => Some(r),
        _ = tokio::time::sleep(timeout) => {
            if let Ok(mut r) = reason.lock() { r.get_or_insert(StopReason::Timeout); }
            token.cancel();
            None
        }
        _ = token.cancelled() => None,
    };
    match early {
        Some(r) => r,
        // Told to stop: give the handler a moment to clean up (kill its processes).
        None => tokio::time::timeout(STOP_GRACE, fut)
            .await
            .unwrap_or(Err(JobError::Canceled)),
    }
}

/// The handler's outcome as it may be stored: what the attempt resolved redacted, U+0000
/// replaced.
fn scrub_outcome(redactor: &Redactor, outcome: JobResult) -> JobResult {
    match outcome {
        Ok(mut result) => {
            redactor.redact_value(&mut result);
            replace_nul_json(&mut result);
            Ok(result)
        }
        Err(JobError::Retryable(msg)) => {
            Err(JobError::Retryable(replace_nul(redactor.redact(&msg))))
        }
        Err(JobError::Fatal(msg)) => Err(JobError::Fatal(replace_nul(redactor.redact(&msg)))),
        Err(JobError::Canceled) => Err(JobError::Canceled),
    }
}

/// The attempt's metrics as they may be stored (redacted, U+0000 replaced); None when the
/// handler reported none.
fn scrub_metrics(redactor: &Redactor, metrics: &MetricsSink) -> Option<Value> {
    let mut metrics = Value::Object(metrics.snapshot());
    redactor.redact_value(&mut metrics);
    replace_nul_json(&mut metrics);
    if metrics.as_object().is_some_and(|m| m.is_empty()) {
        None
    } else {
        Some(metrics)
    }
}

/// A name unique to this process, used as lease owner and apalis worker name.
pub fn worker_identity() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    let nonce = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{}-{nonce}", std::process::id())
}
