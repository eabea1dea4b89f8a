//! The Temporal side of the `temporal` provider: one deterministic workflow that drives the
//! [`Interpreter`] (the native planner) and two activities that do what needs I/O in a
//! Switchyard process: write the interpreter's records, and execute a step's attempts on the
//! process's engine. Temporal retries an attempt's activity under the step's retry policy, and
//! again when the worker that held it died (its heartbeats stop): the retried activity takes
//! the same job run over as its next attempt, so Switchyard's records hold each step once.
//!
//! Workflow code must stay deterministic: it reads only its input, the workflow clock and
//! activity results, keeps its state in `BTreeMap`s, and waits only with the SDK's
//! `wait_condition` and `join_all` (tokio and channels are not allowed there).
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use temporalio_common::RetryPolicy as TemporalRetryPolicy;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, WorkflowCancellationToken, WorkflowContext,
    WorkflowResult, WorkflowTermination,
    activities::{ActivityContext, ActivityError},
    workflows::{join_all, select},
};
use wire::{RetryStrategy, RunStatus, WorkflowRunStatus};

use super::super::activities::{Activities, Attempted, StepActivities};
use super::super::interpreter::{ExecutionInput, Interpreter, Record, StepJobRun};
use super::NAME;

/// How often an attempt's activity heartbeats, and how long Temporal waits for a heartbeat
/// before it retries the activity elsewhere (its worker presumed dead).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond a step's own timeout (which the engine enforces, failing the attempt as expired),
/// how long Temporal lets an attempt's activity run before it considers it lost.
const START_TO_CLOSE_GRACE: Duration = Duration::from_secs(30);

/// What the attempt activity is given: the step's job run and the attempt its first activity
/// attempt is (a resumed step continues its count).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AttemptInput {
    pub job_run_id: String,
    pub first_attempt: i32,
}

#[workflow]
#[derive(Default)]
pub struct RunWorkflow {
    interpreter: Option<Interpreter>,
    /// Job runs whose record is written, waiting for their step's future, by step id.
    released: BTreeMap<String, StepJobRun>,
    /// Something changed since the last plan.
    dirty: bool,
    /// The run ended: the step futures stop waiting.
    done: bool,
}

fn now(ctx: &WorkflowContext<RunWorkflow>) -> DateTime<Utc> {
    ctx.workflow_time()
        .map(DateTime::<Utc>::from)
        .unwrap_or_default()
}

#[workflow_methods]
impl RunWorkflow {
    /// Runs a Switchyard workflow run to its end; returns its final status.
    #[run(name = "switchyard-workflow-run")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ExecutionInput,
    ) -> WorkflowResult<String> {
        let interpreter = Interpreter::new(input).map_err(ApplicationFailure::non_retryable)?;
        let steps: Vec<String> = interpreter
            .steps()
            .iter()
            .map(|s| s.step_id.clone())
            .collect();
        ctx.state_mut(|s| {
            s.interpreter = Some(interpreter);
            s.dirty = true;
        });
        let ctx: &WorkflowContext<Self> = ctx;
        let mut work: Vec<futures::future::LocalBoxFuture<'_, WorkflowResult<()>>> =
            vec![Box::pin(drive(ctx)), Box::pin(watch_deadline(ctx))];
        for id in &steps {
            work.push(Box::pin(step(ctx, id)));
        }
        let outcomes = join_all(work).await;
        if ctx.cancellation_token().is_cancelled() {
            // Recorded even though the workflow is being canceled: on a token of its own.
            let stop = ctx.state_mut(|s| {
                s.done = true;
                s.interpreter.as_mut().and_then(|i| {
                    i.stop(
                        now(ctx),
                        WorkflowRunStatus::Canceled,
                        "canceled by operator",
                    )
                })
            });
            if let Some(record) = stop {
                write(ctx, record, Some(WorkflowCancellationToken::new())).await?;
            }
            return Err(WorkflowTermination::cancelled());
        }
        outcomes.into_iter().collect::<WorkflowResult<()>>()?;
        Ok(ctx.state(|s| {
            s.interpreter
                .as_ref()
                .map(|i| i.run().status.as_str().to_string())
                .unwrap_or_default()
        }))
    }
}

/// Plans whenever something changed, writes each record, then releases the job runs it
/// started to their steps' futures; until the run ends.
async fn drive(ctx: &WorkflowContext<RunWorkflow>) -> WorkflowResult<()> {
    loop {
        ctx.wait_condition(|s| s.dirty).await?;
        let at = now(ctx);
        let record = ctx.state_mut(|s| {
            s.dirty = false;
            s.interpreter.as_mut().and_then(|i| i.advance(at))
        });
        if let Some(record) = record {
            let started = record.job_runs.clone();
            write(ctx, record, None).await?;
            ctx.state_mut(|s| {
                for j in started {
                    let step = j.run.workflow_step_id.clone().unwrap_or_default();
                    s.released.insert(step, j);
                }
            });
        }
        let ended = ctx.state(|s| s.interpreter.as_ref().is_none_or(|i| i.is_terminal()));
        if ended {
            ctx.state_mut(|s| s.done = true);
            return Ok(());
        }
    }
}

/// The workflow's timeout: once the run has started, a durable timer until its deadline wakes
/// the driver (which plans the time-out); ends with the run.
async fn watch_deadline(ctx: &WorkflowContext<RunWorkflow>) -> WorkflowResult<()> {
    let deadline = |s: &RunWorkflow| s.interpreter.as_ref().and_then(|i| i.deadline());
    ctx.wait_condition(|s| s.done || deadline(s).is_some())
        .await?;
    let Some(at) = ctx.state(deadline) else {
        return Ok(());
    };
    let wait = (at - now(ctx))
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    select! {
        _ = ctx.timer(wait) => { ctx.state_mut(|s| s.dirty = true); }
        _ = ctx.wait_condition(|s| s.done) => {}
    };
    Ok(())
}

/// One step: waits for its job run, executes it (Temporal retries the attempts), reports
/// the outcome to the interpreter.
async fn step(ctx: &WorkflowContext<RunWorkflow>, step_id: &str) -> WorkflowResult<()> {
    ctx.wait_condition(|s| s.done || s.released.contains_key(step_id))
        .await?;
    let Some(job) = ctx.state_mut(|s| s.released.remove(step_id)) else {
        return Ok(());
    };
    let at = now(ctx);
    ctx.state_mut(|s| {
        if let Some(i) = s.interpreter.as_mut() {
            i.attempt_started(&job.run.id, job.run.attempt, at);
        }
        s.dirty = true;
    });
    let input = AttemptInput {
        job_run_id: job.run.id.clone(),
        first_attempt: job.run.attempt,
    };
    let outcome = ctx
        .execute_activity(SwitchyardActivities::attempt, input, attempt_options(&job))
        .await;
    let run = match outcome {
        Ok(done) => done.run,
        Err(e) => {
            if ctx.cancellation_token().is_cancelled() {
                return Err(WorkflowTermination::cancelled());
            }
            // Every activity attempt was lost (its workers died): the step fails.
            let message = format!("the step's attempts were lost: {e}");
            ctx.execute_activity(
                SwitchyardActivities::give_up,
                (job.run.id.clone(), message),
                record_options(None),
            )
            .await
            .map_err(|e| ApplicationFailure::non_retryable(e.to_string()))?
        }
    };
    ctx.state_mut(|s| {
        if let Some(i) = s.interpreter.as_mut() {
            i.job_run_changed(run);
        }
        s.dirty = true;
    });
    Ok(())
}

async fn write(
    ctx: &WorkflowContext<RunWorkflow>,
    record: Record,
    token: Option<WorkflowCancellationToken>,
) -> WorkflowResult<()> {
    ctx.execute_activity(SwitchyardActivities::record, record, record_options(token))
        .await
        .map_err(|e| ApplicationFailure::non_retryable(e.to_string()))?;
    Ok(())
}

fn record_options(token: Option<WorkflowCancellationToken>) -> ActivityOptions {
    let mut options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            TemporalRetryPolicy::builder()
                .initial_interval(Duration::from_millis(100))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(5))
                .build(),
        )
        .build();
    options.cancellation_token = token;
    options
}

/// The step's retry policy and timeout as Temporal's: one activity attempt per attempt the
/// job run has left.
pub fn attempt_options(job: &StepJobRun) -> ActivityOptions {
    let p = &job.retry_policy;
    let left = (job.run.max_attempts - job.run.attempt + 1).max(1);
    let initial = Duration::from_millis(p.initial_delay_ms.max(1));
    let backoff = match p.strategy {
        RetryStrategy::Exponential => 2.0,
        _ => 1.0,
    };
    let timeout = Duration::from_millis(job.run.timeout_ms.max(1) as u64);
    ActivityOptions::with_start_to_close_timeout(timeout + START_TO_CLOSE_GRACE)
        .activity_id(format!("{}/{}", job.run.id, job.run.attempt))
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
        .retry_policy(
            TemporalRetryPolicy::builder()
                .initial_interval(initial)
                .backoff_coefficient(backoff)
                .maximum_interval(Duration::from_millis(
                    p.max_delay_ms.max(p.initial_delay_ms).max(1),
                ))
                .maximum_attempts(left as u32)
                .build(),
        )
        .build()
}

/// The activities, executed on the Switchyard process's own runtime (`main`): the Temporal
/// worker runs on a thread of its own.
pub struct SwitchyardActivities {
    pub activities: Activities,
    pub main: tokio::runtime::Handle,
}

fn retryable(e: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(e.to_string()))
}

#[activities]
impl SwitchyardActivities {
    /// Writes one of the interpreter's records (idempotent).
    #[activity(name = "switchyard-record")]
    pub async fn record(
        self: Arc<Self>,
        _ctx: ActivityContext,
        record: Record,
    ) -> Result<(), ActivityError> {
        let activities = self.activities.clone();
        self.main
            .spawn(async move { activities.record(NAME, &record).await })
            .await
            .map_err(retryable)?
            .map_err(|e| match e {
                crate::application::AppError::Conflict(m) => {
                    ActivityError::application(ApplicationFailure::non_retryable(m))
                }
                other => retryable(other),
            })
    }

    /// Executes the next attempt of a step's job run here, heartbeating meanwhile. A failed
    /// attempt with attempts left is an error, so that Temporal retries it (after the delay of
    /// the step's policy); the last attempt's failure is the job run, failed.
    #[activity(name = "switchyard-attempt")]
    pub async fn attempt(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: AttemptInput,
    ) -> Result<Attempted, ActivityError> {
        let attempt = input.first_attempt + ctx.info().attempt as i32 - 1;
        let activities = self.activities.clone();
        let id = input.job_run_id.clone();
        let mut running = self
            .main
            .spawn(async move { activities.attempt(&id, attempt).await });
        let done = loop {
            tokio::select! {
                done = &mut running => break done,
                _ = tokio::time::sleep(HEARTBEAT_EVERY) => {
                    // Cancellation reaches the attempt through its job run (canceled by the
                    // workflow's record); heartbeats keep Temporal from presuming it lost.
                    let _ = ctx.record_heartbeat(()).await;
                }
            }
        };
        let done = done.map_err(retryable)?.map_err(retryable)?;
        if done.executed && done.run.status == RunStatus::Pending {
            let why = done
                .run
                .error_message
                .clone()
                .unwrap_or_else(|| format!("attempt {attempt} failed"));
            return Err(retryable(why));
        }
        Ok(done)
    }

    /// Fails a step's job run whose attempts were all lost.
    #[activity(name = "switchyard-give-up")]
    pub async fn give_up(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: (String, String),
    ) -> Result<wire::JobRun, ActivityError> {
        let activities = self.activities.clone();
        self.main
            .spawn(async move { activities.give_up(&input.0, &input.1).await })
            .await
            .map_err(retryable)?
            .map_err(retryable)
    }
}
