//! `memory`: an engine that drives the [`Interpreter`] on a task of this process, keeping its
//! executions in memory, with the time of tokio's clock (deterministic under a paused clock,
//! as in the unit tests below). It needs nothing but [`StepActivities`], so the contract's
//! semantics are tested without a database; in a server it is registered only for tests
//! (`--enable-memory-provider`): its executions do not survive the process.
use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wire::{JobRun, RunStatus, WorkflowRun, WorkflowRunStatus};

use super::activities::StepActivities;
use super::interpreter::{ExecutionInput, Interpreter, Record};
use super::{
    Capabilities, ExecutionState, Failure, ProviderError, ProviderResult, WorkflowProvider,
    steps_of,
};
use crate::application::orchestrator::DrivenBy;
use crate::store::WorkflowRunState;

pub const NAME: &str = "memory";

/// The time the memory engine reads: tokio's clock, mapped onto the wall clock at creation
/// (so a paused tokio clock pauses it too).
#[derive(Clone)]
struct Clock {
    wall: DateTime<Utc>,
    mono: tokio::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            wall: Utc::now(),
            mono: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.mono;
        self.wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// What a step's attempts report to the execution.
enum Outcome {
    Started { id: String, attempt: i32 },
    Ended(Box<JobRun>),
}

struct Running {
    execution: String,
    cancel: CancellationToken,
    done: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone)]
pub struct Memory {
    activities: Arc<dyn StepActivities>,
    executions: Arc<std::sync::Mutex<HashMap<String, Running>>>,
    clock: Clock,
}

impl Memory {
    pub fn new(activities: Arc<dyn StepActivities>) -> Memory {
        Memory {
            activities,
            executions: Default::default(),
            clock: Clock::new(),
        }
    }

    fn unavailable(action: &'static str, run_id: &str, e: impl std::fmt::Display) -> ProviderError {
        ProviderError::new(NAME, action, run_id, Failure::Unavailable(e.to_string()))
    }

    /// Starts an execution of `state` unless one is under way (idempotent by run id).
    async fn execute(
        &self,
        state: &WorkflowRunState,
        action: &'static str,
    ) -> ProviderResult<Option<String>> {
        let run_id = state.run.id.clone();
        let execution = format!("memory-{run_id}-{}", state.revision);
        {
            let map = self
                .executions
                .lock()
                .map_err(|e| Self::unavailable(action, &run_id, e))?;
            if let Some(r) = map.get(&run_id)
                && !r.done.load(std::sync::atomic::Ordering::Acquire)
            {
                return Ok(Some(r.execution.clone()));
            }
        }
        let spec =
            steps_of(&state.definition).map_err(|e| Self::unavailable(action, &run_id, e))?;
        let jobs = self
            .activities
            .jobs(&spec)
            .await
            .map_err(|e| Self::unavailable(action, &run_id, e))?;
        let driven = DrivenBy {
            provider: NAME.to_string(),
            execution: execution.clone(),
        };
        let interpreter = Interpreter::new(ExecutionInput::new(state, jobs, driven))
            .map_err(|e| Self::unavailable(action, &run_id, e))?;
        let running = Running {
            execution: execution.clone(),
            cancel: CancellationToken::new(),
            done: Default::default(),
        };
        let (cancel, done) = (running.cancel.clone(), running.done.clone());
        if let Ok(mut map) = self.executions.lock() {
            map.insert(run_id, running);
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.drive(interpreter, cancel).await;
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        Ok(Some(execution))
    }

    /// Writes `record`, retrying while the database does not answer.
    async fn record(&self, record: &Record) {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.activities.record(NAME, record).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(run_id = %record.run_id, error = %e, "could not record the workflow run's progress; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// The execution: plan, write, execute the steps that start, wait for an outcome or a
    /// cancel, again, until the run ends.
    async fn drive(&self, mut interpreter: Interpreter, cancel: CancellationToken) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
        loop {
            if let Some(record) = interpreter.advance(self.clock.now()) {
                self.record(&record).await;
                for j in &record.job_runs {
                    let this = self.clone();
                    let (tx, run, cancel) = (tx.clone(), j.run.clone(), cancel.clone());
                    tokio::spawn(async move { this.attempts(run, tx, cancel).await });
                }
            }
            if interpreter.is_terminal() {
                return;
            }
            // The workflow's timeout: plan again when it runs out.
            let timeout = match interpreter.deadline() {
                Some(at) => (at - self.clock.now()).to_std().unwrap_or_default(),
                None => Duration::from_secs(365 * 86_400),
            };
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                Some(outcome) = rx.recv() => match outcome {
                    Outcome::Started { id, attempt } => {
                        interpreter.attempt_started(&id, attempt, self.clock.now());
                    }
                    Outcome::Ended(run) => interpreter.job_run_changed(*run),
                },
                _ = cancel.cancelled() => {
                    let stop = interpreter.stop(
                        self.clock.now(),
                        WorkflowRunStatus::Canceled,
                        "canceled by operator",
                    );
                    if let Some(record) = stop {
                        self.record(&record).await;
                    }
                    return;
                }
            }
        }
    }

    /// Executes a step's job run's attempts, each after the delay its retry policy set,
    /// reporting every outcome.
    async fn attempts(
        &self,
        run: JobRun,
        tx: mpsc::UnboundedSender<Outcome>,
        cancel: CancellationToken,
    ) {
        let mut attempt = run.attempt;
        let mut due = run.scheduled_at;
        loop {
            let wait = (due - self.clock.now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
            let started = Outcome::Started {
                id: run.id.clone(),
                attempt,
            };
            if tx.send(started).is_err() {
                return;
            }
            match self.activities.attempt(&run.id, attempt).await {
                Ok(done) => {
                    let again = done.executed && done.run.status == RunStatus::Pending;
                    attempt = done.run.attempt;
                    due = done.run.scheduled_at;
                    if tx.send(Outcome::Ended(Box::new(done.run))).is_err() || !again {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(job_run_id = %run.id, attempt, error = %e, "could not execute the step's attempt; retrying");
                    due = self.clock.now() + chrono::Duration::seconds(1);
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl WorkflowProvider for Memory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cancel: true,
            resume: true,
        }
    }

    async fn start(&self, run: &WorkflowRunState) -> ProviderResult<Option<String>> {
        self.execute(run, "start").await
    }

    async fn describe(&self, run: &WorkflowRun) -> ProviderResult<Option<ExecutionState>> {
        let map = self
            .executions
            .lock()
            .map_err(|e| Self::unavailable("describe", &run.id, e))?;
        Ok(map.get(&run.id).map(|r| {
            if r.done.load(std::sync::atomic::Ordering::Acquire) {
                ExecutionState::of_run(run)
            } else {
                ExecutionState::Running
            }
        }))
    }

    async fn cancel(&self, run: &WorkflowRun) -> ProviderResult<()> {
        let map = self
            .executions
            .lock()
            .map_err(|e| Self::unavailable("cancel", &run.id, e))?;
        match map.get(&run.id) {
            Some(r) => {
                r.cancel.cancel();
                Ok(())
            }
            None => Err(ProviderError::new(
                NAME,
                "cancel",
                &run.id,
                Failure::Conflict("this process has no execution of it (it was restarted)".into()),
            )),
        }
    }

    async fn resume(&self, run: &WorkflowRunState) -> ProviderResult<Option<String>> {
        self.execute(run, "resume").await
    }
}

/// The contract's semantics on the memory engine without a database: fake activities that
/// execute `builtin:noop`, `builtin:fail` and `builtin:sleep` on tokio's paused clock, so
/// every time is exact and every run the same.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::{AppResult, providers::activities::Attempted};
    use serde_json::{Value, json};
    use wire::{JobDefinition, StepRunStatus};

    #[derive(Default)]
    struct Fake {
        records: std::sync::Mutex<Vec<Record>>,
        runs: std::sync::Mutex<HashMap<String, JobRun>>,
        /// (job run id, attempt) in the order attempts started.
        attempts: std::sync::Mutex<Vec<(String, i32)>>,
    }

    fn job(slug: &str, entry_point: &str) -> JobDefinition {
        serde_json::from_value(
            json!({"id": format!("job-{slug}"), "slug": slug, "name": slug,
            "version": 1, "type": "batch", "entryPoint": entry_point,
            "parametersSchema": {"type": "object"}, "defaultParameters": {}, "timeoutMs": 60000,
            "retryPolicy": {"maxAttempts": 1, "strategy": "none", "initialDelayMs": 1000,
                "maxDelayMs": 60000, "jitter": "none"},
            "metadata": {}, "createdAt": Utc::now(), "updatedAt": Utc::now()}),
        )
        .expect("job definition")
    }

    impl Fake {
        fn last_run(&self) -> Option<WorkflowRun> {
            let records = self.records.lock().unwrap();
            records.iter().rev().find_map(|r| r.run.clone())
        }
    }

    #[async_trait::async_trait]
    impl StepActivities for Fake {
        async fn jobs(
            &self,
            _spec: &[domain::workflow::StepSpec],
        ) -> AppResult<HashMap<String, JobDefinition>> {
            Ok([
                ("echo", "builtin:noop"),
                ("flaky", "builtin:fail"),
                ("nap", "builtin:sleep"),
            ]
            .into_iter()
            .map(|(slug, ep)| (slug.to_string(), job(slug, ep)))
            .collect())
        }

        async fn record(&self, _driver: &str, record: &Record) -> AppResult<()> {
            let mut runs = self.runs.lock().unwrap();
            for j in &record.job_runs {
                runs.insert(j.run.id.clone(), j.run.clone());
            }
            for id in &record.cancel_job_runs {
                if let Some(r) = runs.get_mut(id) {
                    r.status = RunStatus::Canceled;
                }
            }
            self.records.lock().unwrap().push(record.clone());
            Ok(())
        }

        async fn attempt(&self, job_run_id: &str, attempt: i32) -> AppResult<Attempted> {
            self.attempts
                .lock()
                .unwrap()
                .push((job_run_id.to_string(), attempt));
            let mut run = self.runs.lock().unwrap()[job_run_id].clone();
            let slug = run.job_slug.clone();
            if slug == "nap" {
                let ms = run.parameters["durationMs"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if self.runs.lock().unwrap()[job_run_id].status == RunStatus::Canceled {
                run.status = RunStatus::Canceled;
                return Ok(Attempted {
                    executed: true,
                    run,
                });
            }
            let now = Clock::new().now();
            run.attempt = attempt;
            let succeed_on = run.parameters["succeedOnAttempt"].as_i64();
            if slug != "flaky" || succeed_on.is_some_and(|n| i64::from(attempt) >= n) {
                run.status = RunStatus::Succeeded;
                run.result = Some(if slug == "flaky" {
                    json!({"attempt": attempt})
                } else {
                    run.parameters.clone()
                });
            } else if attempt < run.max_attempts {
                run.status = RunStatus::Pending;
                run.attempt = attempt + 1;
                run.error_message = Some("failed as asked".into());
                run.scheduled_at = now + chrono::Duration::seconds(2);
            } else {
                run.status = RunStatus::Failed;
                run.error_message = Some("failed as asked".into());
            }
            if run.status.is_terminal() {
                run.completed_at = Some(now);
            }
            self.runs
                .lock()
                .unwrap()
                .insert(job_run_id.to_string(), run.clone());
            Ok(Attempted {
                executed: true,
                run,
            })
        }
    }

    struct Everything;

    impl domain::workflow::Catalog for Everything {
        fn job_exists(&self, _: &str) -> bool {
            true
        }
        fn service_exists(&self, _: &str) -> bool {
            true
        }
    }

    /// A stored-looking state of a new run of `steps`.
    fn new_run(steps: Value) -> WorkflowRunState {
        let doc = json!({"slug": "wf", "name": "wf", "version": 1, "steps": steps});
        let spec = domain::workflow::parse_workflow_spec(&doc, &Everything).expect("valid");
        let definition: wire::WorkflowDefinition = serde_json::from_value(json!({
            "id": "wf-id", "slug": "wf", "name": "wf", "version": 1, "description": null,
            "parametersSchema": {"type": "object"}, "defaultParameters": {}, "metadata": {},
            "steps": serde_json::to_value(&spec.steps).unwrap(), "triggers": [],
            "provider": NAME, "createdAt": Utc::now(), "updatedAt": Utc::now()}))
        .expect("definition");
        let start = super::super::Start {
            parameters: json!({}),
            triggered_by: None,
            trigger: json!({"type": "manual"}),
            idempotency_key: None,
        };
        let new = super::super::new_workflow_run(&definition, start).expect("rows");
        WorkflowRunState {
            run: new.run,
            definition: new.definition,
            revision: 0,
            idempotency_key: None,
            steps: new.steps,
        }
    }

    async fn finished(fake: &Fake) -> WorkflowRun {
        for _ in 0..10_000 {
            if let Some(run) = fake.last_run()
                && run.status.is_terminal()
            {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the run never ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_diamond_with_a_retried_step_takes_exactly_its_critical_path() {
        let fake = Arc::new(Fake::default());
        let memory = Memory::new(fake.clone());
        let state = new_run(json!([
            {"id": "a", "jobSlug": "echo", "parameters": {"n": 3}},
            {"id": "b", "jobSlug": "nap", "dependsOn": ["a"], "parameters": {"durationMs": 5000}},
            {"id": "c", "jobSlug": "flaky", "dependsOn": ["a"],
                "parameters": {"succeedOnAttempt": 2}, "retryPolicy": {"maxAttempts": 2}},
            {"id": "d", "jobSlug": "echo", "dependsOn": ["b", "c"],
                "parameters": {"n": "{{ steps.a.result.n }}", "c": "{{ steps.c.result.attempt }}"}}
        ]));
        let execution = memory.start(&state).await.expect("started");
        assert!(execution.is_some());
        // Starting again is idempotent: the same execution.
        assert_eq!(memory.start(&state).await.expect("again"), execution);
        let run = finished(&fake).await;
        assert_eq!(run.status, WorkflowRunStatus::Succeeded, "{run:?}");
        // b's 5 s nap is the critical path (c's retry waits 2 s): exact on the paused clock.
        assert_eq!(run.duration_ms, Some(5000), "{run:?}");
        assert_eq!(run.context["steps"]["d"]["result"], json!({"n": 3, "c": 2}));
        let attempts = fake.attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), 5, "a, b, c twice, d: {attempts:?}");
        // Revisions were written in order, one record each.
        let records = fake.records.lock().unwrap().clone();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.revision, i as i64);
        }
        assert_eq!(
            memory.describe(&run).await.expect("describe"),
            Some(ExecutionState::Succeeded)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn halt_cancels_the_rest_and_continue_skips_dependents() {
        let fake = Arc::new(Fake::default());
        let memory = Memory::new(fake.clone());
        let state = new_run(json!([
            {"id": "bad", "jobSlug": "flaky", "onFailure": "continue"},
            {"id": "after-bad", "jobSlug": "echo", "dependsOn": ["bad"]},
            {"id": "worse", "jobSlug": "flaky", "dependsOn": ["slow-start"]},
            {"id": "slow-start", "jobSlug": "nap", "parameters": {"durationMs": 1000}},
            {"id": "long", "jobSlug": "nap", "parameters": {"durationMs": 60000}}
        ]));
        memory.start(&state).await.expect("started");
        let run = finished(&fake).await;
        assert_eq!(run.status, WorkflowRunStatus::Failed);
        let steps = &run.context["steps"];
        assert_eq!(steps["bad"]["status"], "failed");
        assert_eq!(steps["after-bad"]["status"], "skipped");
        assert_eq!(steps["worse"]["status"], "failed");
        assert_eq!(steps["long"]["status"], "canceled", "halted: {run:?}");
        // The halt came when `worse` failed, 1 s in, not after the 60 s nap.
        assert_eq!(run.duration_ms, Some(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_the_execution_and_its_steps() {
        let fake = Arc::new(Fake::default());
        let memory = Memory::new(fake.clone());
        let state = new_run(json!([
            {"id": "long", "jobSlug": "nap", "parameters": {"durationMs": 60000}},
            {"id": "next", "jobSlug": "echo", "dependsOn": ["long"]}
        ]));
        memory.start(&state).await.expect("started");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let running = fake.last_run().expect("recorded");
        assert_eq!(running.status, WorkflowRunStatus::Running);
        assert_eq!(
            memory.describe(&running).await.expect("describe"),
            Some(ExecutionState::Running)
        );
        memory.cancel(&running).await.expect("canceled");
        let run = finished(&fake).await;
        assert_eq!(run.status, WorkflowRunStatus::Canceled);
        assert_eq!(run.duration_ms, Some(3000));
        let records = fake.records.lock().unwrap();
        let last = records.last().expect("a record");
        assert!(
            last.steps
                .iter()
                .all(|s| s.status == StepRunStatus::Canceled)
        );
        assert_eq!(last.cancel_job_runs.len(), 1, "the running step's job run");
    }

    #[test]
    fn job_run_ids_are_the_same_on_replay_and_differ_across_executions() {
        let a = DrivenBy {
            provider: NAME.into(),
            execution: "e1".into(),
        };
        let b = DrivenBy {
            provider: NAME.into(),
            execution: "e2".into(),
        };
        assert_eq!(a.job_run_id("s", 1), a.job_run_id("s", 1));
        assert_ne!(a.job_run_id("s", 1), a.job_run_id("s", 2));
        assert_ne!(a.job_run_id("s", 1), b.job_run_id("s", 1));
    }
}
