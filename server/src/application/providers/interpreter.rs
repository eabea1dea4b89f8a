//! The DAG interpreter another engine drives (the `memory` and `temporal` providers): the
//! native planner (`orchestrator::plan`, the one place the workflow semantics live: templates,
//! `onFailure`, skips, shared context, aggregation) over a run's state held in memory instead
//! of read from the database. It does no I/O and reads no clock: the engine gives it the time
//! and the job runs' outcomes, and writes the [`Record`]s it returns, in order. So a
//! deterministic engine (Temporal) replays it to the same decisions, and the job runs it builds
//! have ids derived from the execution ([`DrivenBy`]).
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wire::{JobDefinition, JobRun, RetryPolicy, WorkflowRun, WorkflowRunStatus, WorkflowRunStep};

use crate::application::orchestrator::{DrivenBy, ParameterCheck, Plan, RunState, plan, stop};
use crate::store::{NewRun, RunChanges, WorkflowRunState};
use domain::{Problems, workflow::StepSpec};

/// Everything an execution starts from: the run's rows as stored when it starts (a resume's
/// reset included), the definitions of the jobs its steps use, and the execution's identity.
/// Serializable: it is a Temporal workflow's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionInput {
    pub run: WorkflowRun,
    pub definition: Value,
    pub revision: i64,
    pub steps: Vec<WorkflowRunStep>,
    /// By slug: read when the execution starts (a native run reads them as steps start).
    pub jobs: HashMap<String, JobDefinition>,
    pub driven: DrivenBy,
}

impl ExecutionInput {
    pub fn new(
        state: &WorkflowRunState,
        jobs: HashMap<String, JobDefinition>,
        driven: DrivenBy,
    ) -> Self {
        ExecutionInput {
            run: state.run.clone(),
            definition: state.definition.clone(),
            revision: state.revision,
            steps: state.steps.clone(),
            jobs,
            driven,
        }
    }
}

/// A job run to insert with a record, as a provider will execute it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepJobRun {
    pub run: JobRun,
    pub entry_point: String,
    pub retry_policy: RetryPolicy,
}

/// One write of the run's rows, to apply in order at `revision` (the run's revision before it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub run_id: String,
    pub revision: i64,
    pub run: Option<WorkflowRun>,
    pub steps: Vec<WorkflowRunStep>,
    /// New job runs of steps that start: the engine executes them after the record is written.
    pub job_runs: Vec<StepJobRun>,
    /// Job runs a halt or a cancel stopped.
    pub cancel_job_runs: Vec<String>,
    pub status_changed: bool,
    pub steps_changed: bool,
}

impl Record {
    /// The store's form of the write.
    pub fn changes(&self, driver: &str) -> RunChanges {
        RunChanges {
            run: self.run.clone(),
            steps: self.steps.clone(),
            job_runs: self
                .job_runs
                .iter()
                .map(|j| NewRun {
                    run: j.run.clone(),
                    entry_point: j.entry_point.clone(),
                    retry_policy: j.retry_policy.clone(),
                    idempotency_key: None,
                    claim: None,
                    driver: Some(driver.to_string()),
                })
                .collect(),
        }
    }
}

/// Parameter checks inside an engine's workflow: the job's schema compiled on the spot (no
/// cache shared with the process: a workflow's code must depend on its input only).
struct Compiled;

impl ParameterCheck for Compiled {
    fn problems(&self, job: &JobDefinition, parameters: &Value) -> Problems {
        match domain::jobs::compile_parameters_schema(&job.parameters_schema) {
            Ok(v) => domain::jobs::validate_parameters(&v, parameters),
            Err(m) => {
                let mut p = Problems::new();
                p.add("/parameters", m);
                p
            }
        }
    }
}

/// A run's state, moved on by the outcomes its engine reports.
#[derive(Debug, Clone)]
pub struct Interpreter {
    state: WorkflowRunState,
    spec: Vec<StepSpec>,
    job_runs: HashMap<String, JobRun>,
    jobs: HashMap<String, JobDefinition>,
    driven: DrivenBy,
}

impl Interpreter {
    pub fn new(input: ExecutionInput) -> Result<Interpreter, String> {
        let spec: Vec<StepSpec> = serde_json::from_value(
            input
                .definition
                .get("steps")
                .cloned()
                .unwrap_or(Value::Null),
        )
        .map_err(|e| format!("the workflow definition's steps are unreadable: {e}"))?;
        Ok(Interpreter {
            state: WorkflowRunState {
                run: input.run,
                definition: input.definition,
                revision: input.revision,
                idempotency_key: None,
                steps: input.steps,
            },
            spec,
            job_runs: HashMap::new(),
            jobs: input.jobs,
            driven: input.driven,
        })
    }

    pub fn run(&self) -> &WorkflowRun {
        &self.state.run
    }

    pub fn steps(&self) -> &[WorkflowRunStep] {
        &self.state.steps
    }

    /// When the run times out (its workflow `timeoutMs` from its start), if it can.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        crate::application::orchestrator::deadline(
            &self.state.definition,
            self.state.run.started_at,
        )
    }

    pub fn is_terminal(&self) -> bool {
        self.state.run.status.is_terminal()
    }

    /// The specs of the run's steps, in definition order.
    pub fn spec(&self) -> &[StepSpec] {
        &self.spec
    }

    /// The engine starts attempt `attempt` of the job run `id` at `now` (shown as running
    /// from then on; the attempt's outcome follows with [`Interpreter::job_run_changed`]).
    pub fn attempt_started(&mut self, id: &str, attempt: i32, now: DateTime<Utc>) {
        if let Some(run) = self.job_runs.get_mut(id)
            && !run.status.is_terminal()
        {
            run.status = wire::RunStatus::Running;
            run.attempt = attempt;
            run.started_at = Some(now);
            run.updated_at = now;
        }
    }

    /// A job run of this execution has a new state (an attempt ended).
    pub fn job_run_changed(&mut self, run: JobRun) {
        self.job_runs.insert(run.id.clone(), run);
    }

    /// Plans at `now`; the record to write, if anything changed.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Option<Record> {
        let plan = plan(
            &RunState {
                stored: &self.state,
                spec: &self.spec,
                job_runs: &self.job_runs,
                jobs: &self.jobs,
                now,
                driven: Some(&self.driven),
            },
            &Compiled,
        );
        self.recorded(plan)
    }

    /// `plan` as the record to write, taken into the state it was planned from; None when it
    /// changes nothing.
    fn recorded(&mut self, plan: Plan) -> Option<Record> {
        plan.changes.run.as_ref()?;
        let record = Record {
            run_id: self.state.run.id.clone(),
            revision: self.state.revision,
            run: plan.changes.run,
            steps: plan.changes.steps,
            job_runs: plan
                .changes
                .job_runs
                .into_iter()
                .map(|j| StepJobRun {
                    run: j.run,
                    entry_point: j.entry_point,
                    retry_policy: j.retry_policy,
                })
                .collect(),
            cancel_job_runs: plan.cancel_job_runs,
            status_changed: plan.status_changed,
            steps_changed: plan.steps_changed,
        };
        self.apply(&record);
        Some(record)
    }

    /// The engine canceled the execution (or its time ran out: `why`): every unfinished step
    /// canceled, the run ended with `status`.
    pub fn stop(
        &mut self,
        now: DateTime<Utc>,
        status: WorkflowRunStatus,
        why: &str,
    ) -> Option<Record> {
        if self.is_terminal() {
            return None;
        }
        self.recorded(stop(&self.state, &self.spec, now, status, why))
    }

    /// Takes `record`'s changes into the state it was planned from.
    fn apply(&mut self, record: &Record) {
        if let Some(run) = &record.run {
            self.state.run = run.clone();
        }
        for s in &record.steps {
            if let Some(t) = self.state.steps.iter_mut().find(|t| t.id == s.id) {
                *t = s.clone();
            }
        }
        for j in &record.job_runs {
            self.job_runs.insert(j.run.id.clone(), j.run.clone());
        }
        self.state.revision += 1;
    }
}
