//! The planner: pure. From a run's stored state, the job runs its steps point at and the job
//! definitions, it derives every step's status, applies `onFailure`, renders the templates of
//! the steps that became ready and builds their job runs, and aggregates the run.
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use wire::{
    JobDefinition, JobRun, RunStatus, StepAttempt, StepRunStatus, Trigger, WorkflowRun,
    WorkflowRunStatus, WorkflowRunStep,
};

use crate::entrypoints;
use crate::store::{RunChanges, WorkflowRunState};
use domain::{
    Problems,
    jobs::merge_parameters,
    template::{Scope, render},
    workflow::{OnFailure, StepAction, StepSpec, StepStatus, WorkflowSpec},
};

use super::SERVICE_CALL_JOB;
use crate::application::launcher::{RunParts, new_run};
use crate::store::NewRun;

/// What a reconciliation decided besides the stored changes.
#[derive(Debug, Default)]
pub struct Plan {
    pub changes: RunChanges,
    /// Job runs of steps a halt or cancel stopped.
    pub cancel_job_runs: Vec<String>,
    /// The run's status changed (publish `workflow.run.<status>`).
    pub status_changed: bool,
    /// Some step changed (publish `workflow.run.updated`).
    pub steps_changed: bool,
}

fn to_step_status(s: StepRunStatus) -> StepStatus {
    match s {
        StepRunStatus::Pending => StepStatus::Pending,
        StepRunStatus::Running => StepStatus::Running,
        StepRunStatus::Succeeded => StepStatus::Succeeded,
        StepRunStatus::Failed => StepStatus::Failed,
        StepRunStatus::Skipped => StepStatus::Skipped,
        StepRunStatus::Canceled => StepStatus::Canceled,
    }
}

fn attempts_of(step: &WorkflowRunStep) -> Vec<StepAttempt> {
    step.metrics
        .as_ref()
        .and_then(|m| m.get("attempts"))
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default()
}

fn set_metric(step: &mut WorkflowRunStep, key: &str, value: Value) {
    let mut m = match step.metrics.take() {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    m.insert(key.to_string(), value);
    step.metrics = Some(Value::Object(m));
}

/// Brings a step up to date with its job run. Returns true when it changed.
fn follow_job_run(step: &mut WorkflowRunStep, jr: &JobRun) -> bool {
    let before = step.clone();
    let attempts = attempts_after(attempts_of(step), jr);
    let started = jr.started_at.is_some() || jr.attempt > 1;
    if started {
        step.attempt = jr.attempt;
        if step.started_at.is_none() {
            step.started_at = jr.started_at.or(Some(jr.updated_at));
        }
    }
    follow_status(step, jr, started);
    if let Some(Value::Object(reported)) = &jr.metrics {
        for (k, v) in reported {
            if k != "attempts" {
                set_metric(step, k, v.clone());
            }
        }
    }
    set_metric(
        step,
        "attempts",
        serde_json::to_value(&attempts).unwrap_or(Value::Null),
    );
    *step != before
}

/// The step's attempt history brought up to date with its job run `jr`.
fn attempts_after(mut attempts: Vec<StepAttempt>, jr: &JobRun) -> Vec<StepAttempt> {
    // A step's job run numbers its attempts on from the step's earlier ones (see start_step).
    let current = jr.attempt;
    let of_this_run = |a: &StepAttempt| a.job_run_id.as_deref() == Some(jr.id.as_str());
    // Earlier attempts of this job run that are still open failed (the job run moved on).
    for a in attempts.iter_mut() {
        if of_this_run(a) && a.attempt < current && !a.status.is_terminal() {
            a.status = StepRunStatus::Failed;
            a.completed_at = Some(jr.updated_at);
            a.error_message = jr.error_message.clone();
        }
    }
    // Attempts that came and went between two reconciles (nudges coalesce, and another
    // process may have run them) are recorded from what the job run still says: they failed,
    // the newest of them with the job run's last error.
    let first = attempts
        .iter()
        .filter(|a| !of_this_run(a))
        .map(|a| a.attempt)
        .max()
        .unwrap_or(0)
        + 1;
    for n in first..current {
        if !attempts.iter().any(|a| of_this_run(a) && a.attempt == n) {
            attempts.push(StepAttempt {
                attempt: n,
                job_run_id: Some(jr.id.clone()),
                status: StepRunStatus::Failed,
                started_at: None,
                completed_at: None,
                error_message: if n + 1 == current {
                    jr.error_message.clone()
                } else {
                    Some(format!("attempt {n} failed (see the job run's log)"))
                },
            });
        }
    }
    attempts.sort_by_key(|a| a.attempt);
    if jr.status == RunStatus::Running || jr.status.is_terminal() {
        record_current_attempt(&mut attempts, jr);
    }
    attempts
}

/// The job run's current attempt in the history: started, and once it ended, its outcome.
fn record_current_attempt(attempts: &mut Vec<StepAttempt>, jr: &JobRun) {
    let current = jr.attempt;
    let status = match jr.status {
        RunStatus::Running => StepRunStatus::Running,
        RunStatus::Succeeded => StepRunStatus::Succeeded,
        RunStatus::Canceled => StepRunStatus::Canceled,
        _ => StepRunStatus::Failed,
    };
    let at = attempts
        .iter()
        .position(|a| a.job_run_id.as_deref() == Some(jr.id.as_str()) && a.attempt == current);
    let entry = match at {
        Some(i) => &mut attempts[i],
        None => {
            attempts.push(StepAttempt {
                attempt: current,
                job_run_id: Some(jr.id.clone()),
                status: StepRunStatus::Running,
                started_at: jr.started_at,
                completed_at: None,
                error_message: None,
            });
            attempts.last_mut().expect("just pushed")
        }
    };
    if entry.started_at.is_none() {
        entry.started_at = jr.started_at;
    }
    if jr.status.is_terminal() {
        entry.status = status;
        entry.completed_at = jr.completed_at.or(Some(jr.updated_at));
        entry.error_message = jr.error_message.clone();
    }
}

/// The step's status, result and error from its job run's.
fn follow_status(step: &mut WorkflowRunStep, jr: &JobRun, started: bool) {
    let ended_at = jr.completed_at.or(Some(jr.updated_at));
    match jr.status {
        RunStatus::Pending if started => step.status = StepRunStatus::Running,
        RunStatus::Pending => {}
        RunStatus::Running => step.status = StepRunStatus::Running,
        RunStatus::Succeeded => {
            step.status = StepRunStatus::Succeeded;
            step.output = jr.result.clone();
            step.error_message = None;
            step.completed_at = ended_at;
        }
        RunStatus::Failed | RunStatus::Expired => {
            step.status = StepRunStatus::Failed;
            step.error_message = Some(match &jr.error_message {
                Some(e) if jr.status == RunStatus::Expired => format!("expired: {e}"),
                Some(e) => e.clone(),
                None => format!("job run {} {}", jr.id, jr.status),
            });
            step.completed_at = ended_at;
        }
        RunStatus::Canceled => {
            step.status = StepRunStatus::Canceled;
            step.error_message = Some(format!("its job run {} was canceled", jr.id));
            step.completed_at = ended_at;
        }
    }
}

pub fn finish_step(
    step: &mut WorkflowRunStep,
    status: StepRunStatus,
    error: Option<String>,
    now: DateTime<Utc>,
) {
    step.status = status;
    if error.is_some() {
        step.error_message = error;
    }
    step.completed_at = Some(now);
    let mut attempts = attempts_of(step);
    let mut touched = false;
    for a in attempts.iter_mut().filter(|a| !a.status.is_terminal()) {
        a.status = status;
        a.completed_at = Some(now);
        touched = true;
    }
    if touched {
        set_metric(
            step,
            "attempts",
            serde_json::to_value(&attempts).unwrap_or(Value::Null),
        );
    }
}

/// The run's shared context: `shared` of succeeded steps' results (and stored service
/// responses), merged in completion order.
fn shared_context(spec: &[StepSpec], steps: &[WorkflowRunStep]) -> Map<String, Value> {
    let mut done: Vec<(usize, &WorkflowRunStep)> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status == StepRunStatus::Succeeded)
        .collect();
    done.sort_by_key(|(i, s)| (s.completed_at, *i));
    let mut shared = Map::new();
    for (i, s) in done {
        let Some(output) = &s.output else { continue };
        if let Some(Value::Object(values)) = output.get("shared") {
            for (k, v) in values {
                shared.insert(k.clone(), v.clone());
            }
        }
        if let Some(StepAction::Service(svc)) = spec.get(i).map(|st| &st.action)
            && let Some(name) = &svc.store_response_as
        {
            shared.insert(
                name.clone(),
                output.get("response").cloned().unwrap_or(output.clone()),
            );
        }
    }
    shared
}

/// What the planner reads: a run's stored state, its steps' specs, the job runs the steps
/// point at, and the definitions of the jobs the ready steps use (a missing one fails its
/// step), at `now`.
pub struct RunState<'a> {
    pub stored: &'a WorkflowRunState,
    pub spec: &'a [StepSpec],
    pub job_runs: &'a HashMap<String, JobRun>,
    pub jobs: &'a HashMap<String, JobDefinition>,
    pub now: DateTime<Utc>,
    /// None: the native orchestrator runs the steps. Some: a provider does (see
    /// [`DrivenBy`]).
    pub driven: Option<&'a DrivenBy>,
}

/// A run whose steps another workflow engine schedules (a provider's interpreter): the job
/// runs the planner builds carry the provider as their `driver` (Switchyard's queue leaves them
/// alone), and their ids derive from the execution, the step and the attempt, so that a
/// deterministic engine replaying its workflow builds the same ones again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrivenBy {
    pub provider: String,
    /// The engine's execution (one per start or resume of the run).
    pub execution: String,
}

impl DrivenBy {
    /// The id of the job run of `step_id`'s attempt `attempt` in this execution.
    pub fn job_run_id(&self, step_id: &str, attempt: i32) -> String {
        let name = format!("{}/{}/{step_id}/{attempt}", self.provider, self.execution);
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
    }
}

/// How the planner checks a ready step's parameters (the run launcher, with its compiled
/// schemas; see `launcher::RunLauncher::check_parameters`).
pub trait ParameterCheck {
    fn problems(&self, job: &JobDefinition, parameters: &Value) -> Problems;
}

impl ParameterCheck for crate::application::launcher::RunLauncher {
    fn problems(&self, job: &JobDefinition, parameters: &Value) -> Problems {
        self.check_parameters(job, parameters)
    }
}

/// Decides the next state of a run (see the module documentation).
pub fn plan(state: &RunState, check: &dyn ParameterCheck) -> Plan {
    if state.stored.run.status.is_terminal() {
        return Plan::default();
    }
    let mut p = Planning::new(state);
    p.follow_job_runs();
    if p.time_out() {
        return p.aggregate();
    }
    // Repeat until nothing changes: starting a step may fail it at once (a template that does
    // not render), which may skip or halt others.
    for _ in 0..=p.steps.len() {
        if p.halt_on_failure() {
            break;
        }
        let skipped = p.skip_dependents_of_failures();
        let started = p.start_ready_steps(check);
        if !skipped && !started {
            break;
        }
    }
    p.aggregate()
}

/// A run being planned: its steps as they become, which of them changed, and the plan so far.
struct Planning<'a> {
    state: &'a RunState<'a>,
    run: WorkflowRun,
    steps: Vec<WorkflowRunStep>,
    changed: Vec<bool>,
    index: HashMap<String, usize>,
    workflow: WorkflowSpec,
    halted: Option<String>,
    out: Plan,
}

impl<'a> Planning<'a> {
    fn new(state: &'a RunState<'a>) -> Planning<'a> {
        let run = state.stored.run.clone();
        let steps = state.stored.steps.clone();
        let index = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.step_id.clone(), i))
            .collect();
        let workflow = WorkflowSpec {
            slug: domain::jobs::Slug::parse(&run.workflow_slug)
                .unwrap_or_else(|_| domain::jobs::Slug::parse("workflow").expect("valid")),
            name: String::new(),
            version: run.workflow_version,
            description: None,
            parameters_schema: json!({}),
            default_parameters: json!({}),
            metadata: json!({}),
            steps: state.spec.to_vec(),
            triggers: Vec::new(),
            provider: Default::default(),
            timeout_ms: workflow_timeout(&state.stored.definition),
        };
        Planning {
            state,
            changed: vec![false; steps.len()],
            run,
            steps,
            index,
            workflow,
            halted: None,
            out: Plan::default(),
        }
    }

    fn statuses(&self) -> HashMap<String, StepStatus> {
        self.steps
            .iter()
            .map(|s| (s.step_id.clone(), to_step_status(s.status)))
            .collect()
    }

    /// Step 1: each unfinished step follows its job run.
    fn follow_job_runs(&mut self) {
        for (i, step) in self.steps.iter_mut().enumerate() {
            if step.status.is_terminal() {
                continue;
            }
            if let Some(jr) = step
                .job_run_id
                .as_ref()
                .and_then(|id| self.state.job_runs.get(id))
            {
                self.changed[i] |= follow_job_run(step, jr);
            }
        }
    }

    /// Step 2a: a failed step with `onFailure: halt` fails the run and cancels every unfinished
    /// step. Returns whether the run halted.
    /// The workflow's `timeoutMs` ran out (counted from the run's start): the run fails as
    /// timed out and what has not finished is canceled. Returns whether it did.
    fn time_out(&mut self) -> bool {
        let Some((limit, started)) =
            workflow_timeout(&self.state.stored.definition).zip(self.run.started_at)
        else {
            return false;
        };
        if self.state.now < started + chrono::Duration::milliseconds(limit) {
            return false;
        }
        self.halted = Some(format!("the workflow timed out after {limit} ms"));
        self.cancel_unfinished("canceled: the workflow timed out");
        true
    }

    /// Cancels every step that has not finished, and its job run.
    fn cancel_unfinished(&mut self, why: &str) {
        let now = self.state.now;
        for (i, s) in self.steps.iter_mut().enumerate() {
            if s.status.is_terminal() {
                continue;
            }
            if let Some(jr) = &s.job_run_id {
                self.out.cancel_job_runs.push(jr.clone());
            }
            finish_step(s, StepRunStatus::Canceled, Some(why.into()), now);
            self.changed[i] = true;
        }
    }

    fn halt_on_failure(&mut self) -> bool {
        for (i, s) in self.steps.iter().enumerate() {
            if !matches!(s.status, StepRunStatus::Failed | StepRunStatus::Canceled) {
                continue;
            }
            let on_failure = self
                .state
                .spec
                .get(i)
                .map(|st| st.on_failure)
                .unwrap_or_default();
            if on_failure == OnFailure::Halt && self.halted.is_none() {
                self.halted = Some(format!(
                    "step {} {}: {}",
                    s.step_id,
                    s.status,
                    s.error_message.as_deref().unwrap_or("no error message")
                ));
            }
        }
        if self.halted.is_none() {
            return false;
        }
        self.cancel_unfinished("canceled: the run halted");
        true
    }

    /// Step 2b: the unfinished dependents of a failed step (`onFailure: continue`) are skipped.
    /// Returns whether any was.
    fn skip_dependents_of_failures(&mut self) -> bool {
        let statuses = self.statuses();
        let mut to_skip = Vec::new();
        for s in &self.steps {
            if matches!(s.status, StepRunStatus::Failed | StepRunStatus::Canceled) {
                for d in self.workflow.dependents_to_skip(&s.step_id, &statuses) {
                    to_skip.push((d.to_string(), s.step_id.clone()));
                }
            }
        }
        let mut progress = false;
        for (d, because) in to_skip {
            if let Some(&j) = self.index.get(d.as_str())
                && !self.steps[j].status.is_terminal()
            {
                if let Some(jr) = &self.steps[j].job_run_id {
                    self.out.cancel_job_runs.push(jr.clone());
                }
                let msg = format!("skipped: step {because} did not succeed");
                finish_step(
                    &mut self.steps[j],
                    StepRunStatus::Skipped,
                    Some(msg),
                    self.state.now,
                );
                self.changed[j] = true;
                progress = true;
            }
        }
        progress
    }

    /// What templates of ready steps see: the run's parameters, succeeded steps' results and
    /// the shared context.
    fn scope(&self) -> Scope {
        let run = &self.run;
        Scope {
            parameters: run.parameters.clone(),
            steps: self
                .steps
                .iter()
                .filter(|s| s.status == StepRunStatus::Succeeded)
                .map(|s| (s.step_id.clone(), s.output.clone().unwrap_or(Value::Null)))
                .collect::<BTreeMap<_, _>>(),
            shared: Value::Object(shared_context(self.state.spec, &self.steps)),
            run: json!({"id": run.id, "workflowSlug": run.workflow_slug,
                "workflowVersion": run.workflow_version, "triggeredBy": run.triggered_by}),
        }
    }

    /// Step 3: every ready step without a job run gets one, or fails at once. Returns whether
    /// any step was started or failed.
    fn start_ready_steps(&mut self, check: &dyn ParameterCheck) -> bool {
        let statuses = self.statuses();
        let ready: Vec<usize> = self
            .workflow
            .ready_steps(&statuses)
            .into_iter()
            .filter_map(|id| self.index.get(id).copied())
            .filter(|&j| self.steps[j].job_run_id.is_none())
            .collect();
        let scope = self.scope();
        let now = self.state.now;
        let mut progress = false;
        for j in ready {
            let Some(step_spec) = self.state.spec.get(j) else {
                continue;
            };
            let started = start_step(
                &self.run,
                step_spec,
                &self.steps[j],
                &scope,
                self.state.jobs,
                now,
                check,
            )
            .map(|(input, job_run)| (input, driven(job_run, self.state.driven)));
            let s = &mut self.steps[j];
            match started {
                Ok((input, job_run)) => {
                    s.input = Some(input);
                    s.job_run_id = Some(job_run.run.id.clone());
                    s.error_message = None;
                    s.output = None;
                    s.completed_at = None;
                    self.out.changes.job_runs.push(job_run);
                }
                Err((input, msg)) => {
                    s.input = input;
                    s.started_at = Some(now);
                    finish_step(s, StepRunStatus::Failed, Some(msg), now);
                }
            }
            self.changed[j] = true;
            progress = true;
        }
        progress
    }

    /// The run's status from its steps' (and the halt's).
    fn status(&mut self) -> WorkflowRunStatus {
        let steps = &self.steps;
        let all_done = steps.iter().all(|s| s.status.is_terminal());
        let first_failure = steps
            .iter()
            .find(|s| matches!(s.status, StepRunStatus::Failed | StepRunStatus::Canceled));
        let any_started = steps
            .iter()
            .any(|s| s.job_run_id.is_some() || s.status.is_terminal());
        if let Some(msg) = &self.halted {
            self.run.error_message = Some(msg.clone());
            WorkflowRunStatus::Failed
        } else if all_done {
            match first_failure {
                Some(f) => {
                    self.run.error_message = Some(format!(
                        "step {} {}: {}",
                        f.step_id,
                        f.status,
                        f.error_message.as_deref().unwrap_or("no error message")
                    ));
                    WorkflowRunStatus::Failed
                }
                None => {
                    self.run.error_message = None;
                    WorkflowRunStatus::Succeeded
                }
            }
        } else if any_started {
            WorkflowRunStatus::Running
        } else {
            WorkflowRunStatus::Pending
        }
    }

    /// Step 4: aggregates the run (status, times, current step, metrics, context) and collects
    /// what changed.
    fn aggregate(mut self) -> Plan {
        let now = self.state.now;
        let before = &self.state.stored.run;
        let status = self.status();
        let run = &mut self.run;
        if status != WorkflowRunStatus::Pending && run.started_at.is_none() {
            run.started_at = Some(now);
        }
        if status.is_terminal() {
            run.completed_at = Some(now);
            run.duration_ms = run.started_at.map(|s| (now - s).num_milliseconds().max(0));
        }
        let steps = &self.steps;
        let current = steps
            .iter()
            .position(|s| s.status == StepRunStatus::Running)
            .or_else(|| {
                steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.started_at.is_some())
                    .max_by_key(|(i, s)| (s.started_at, *i))
                    .map(|(i, _)| i)
            });
        run.current_step_id = current.map(|i| steps[i].step_id.clone());
        run.current_step_index = current.map(|i| i as i32);
        run.metrics = metrics_of(steps);
        run.context = context_of(self.state.spec, steps);
        let mut out = self.out;
        out.status_changed = status != before.status;
        run.status = status;
        for (s, changed) in self.steps.into_iter().zip(self.changed) {
            if changed {
                let mut s = s;
                s.updated_at = now;
                out.changes.steps.push(s);
            }
        }
        out.steps_changed = !out.changes.steps.is_empty();
        let run_changed = run.status != before.status
            || run.context != before.context
            || run.metrics != before.metrics
            || run.current_step_id != before.current_step_id
            || run.error_message != before.error_message
            || run.started_at != before.started_at;
        if run_changed || out.steps_changed {
            run.updated_at = now;
            out.changes.run = Some(self.run);
        }
        out
    }
}

/// `{"totalSteps", "completedSteps"}`: completed = in a terminal state.
pub fn metrics_of(steps: &[WorkflowRunStep]) -> Value {
    json!({
        "totalSteps": steps.len(),
        "completedSteps": steps.iter().filter(|s| s.status.is_terminal()).count(),
    })
}

/// `{"steps": {"<id>": {"status", "jobRunId", "result"}}, "shared": {}}`.
pub fn context_of(spec: &[StepSpec], steps: &[WorkflowRunStep]) -> Value {
    let mut by_step = Map::new();
    for s in steps {
        by_step.insert(
            s.step_id.clone(),
            json!({"status": s.status, "jobRunId": s.job_run_id, "result": s.output}),
        );
    }
    json!({"steps": by_step, "shared": shared_context(spec, steps)})
}

/// A step may set definition-only parameters of its job only written out (definitions saved
/// since this rule existed were checked when written; this also stops older ones): a template
/// there would let the run's caller or another step's result choose a command.
fn templated_definition_only(parameters: &Value, entry_point: &str) -> Result<(), String> {
    let rules = entrypoints::rules(entry_point);
    for key in rules.definition_only {
        if rules.templatable.contains(key) {
            continue;
        }
        if let Some(value) = parameters.get(*key)
            && !domain::template::references(value).is_empty()
        {
            return Err(format!(
                "its parameter {key} is definition-only for {entry_point} and may not come from a template"
            ));
        }
    }
    Ok(())
}

/// The plan that ends a run as `status` because of `why` (an operator's cancel, an engine's):
/// every unfinished step canceled with its job run, the run's context and metrics aggregated.
pub fn stop(
    state: &WorkflowRunState,
    spec: &[StepSpec],
    now: DateTime<Utc>,
    status: WorkflowRunStatus,
    why: &str,
) -> Plan {
    let mut plan = Plan::default();
    let mut steps = state.steps.clone();
    for s in steps.iter_mut() {
        if s.status.is_terminal() {
            continue;
        }
        if let Some(jr) = &s.job_run_id {
            plan.cancel_job_runs.push(jr.clone());
        }
        finish_step(s, StepRunStatus::Canceled, Some(why.to_string()), now);
        s.updated_at = now;
        plan.changes.steps.push(s.clone());
    }
    let mut run = state.run.clone();
    run.status = status;
    run.error_message = Some(why.to_string());
    run.completed_at = Some(now);
    run.duration_ms = run.started_at.map(|s| (now - s).num_milliseconds().max(0));
    run.context = context_of(spec, &steps);
    run.metrics = metrics_of(&steps);
    run.updated_at = now;
    plan.changes.run = Some(run);
    plan.status_changed = true;
    plan.steps_changed = !plan.changes.steps.is_empty();
    plan
}

/// A stored definition's workflow-level `timeoutMs`, if it has one.
pub fn workflow_timeout(definition: &Value) -> Option<i64> {
    definition.get("timeoutMs").and_then(Value::as_i64)
}

/// When a run of `definition` started at `started` times out, if it can.
pub fn deadline(definition: &Value, started: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    Some(started? + chrono::Duration::milliseconds(workflow_timeout(definition)?))
}

/// `job_run` as the engine of `driven` schedules it (see [`DrivenBy`]).
fn driven(mut job_run: NewRun, driven: Option<&DrivenBy>) -> NewRun {
    if let Some(d) = driven {
        let step = job_run.run.workflow_step_id.clone().unwrap_or_default();
        let id = d.job_run_id(&step, job_run.run.attempt);
        job_run.run.logs_url = format!("/api/job-runs/{id}/logs");
        job_run.run.id = id;
        job_run.driver = Some(d.provider.clone());
    }
    job_run
}

/// Renders a ready step and builds its job run; or the rendered input (if any) and why the
/// step fails at once.
fn start_step(
    run: &WorkflowRun,
    spec: &StepSpec,
    step: &WorkflowRunStep,
    scope: &Scope,
    jobs: &HashMap<String, JobDefinition>,
    now: DateTime<Utc>,
    check: &dyn ParameterCheck,
) -> Result<(Value, NewRun), (Option<Value>, String)> {
    let (job_slug, input, parameters) = rendered_action(spec, scope, jobs)?;
    let Some(job) = jobs.get(&job_slug) else {
        return Err((Some(input), format!("job {job_slug:?} does not exist")));
    };
    let parameters = merge_parameters(&job.default_parameters, &parameters);
    let problems = check.problems(job, &parameters);
    if !problems.is_empty() {
        let list: Vec<String> = problems
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect();
        return Err((
            Some(input),
            format!("invalid parameters for job {job_slug}: {}", list.join("; ")),
        ));
    }
    let policy = spec
        .retry_policy
        .clone()
        .unwrap_or_else(|| match &spec.action {
            StepAction::Job(_) => job.retry_policy.clone(),
            StepAction::Service(_) => wire::RetryPolicy::default(),
        });
    let parts = RunParts {
        parameters,
        context: Some(
            json!({"workflowRunId": run.id, "workflowSlug": run.workflow_slug,
            "stepId": step.step_id}),
        ),
        timeout_ms: spec.timeout_ms.unwrap_or(job.timeout_ms),
        // A resumed step continues its attempt count: the job run starts at the step's next
        // attempt and has the step's retry policy's attempts on top of those already used.
        attempt: step.attempt + 1,
        max_attempts: step.attempt + policy.max_attempts as i32,
        retry_policy: policy,
        trigger: Trigger::Workflow,
        step: Some((run.id.clone(), step.step_id.clone())),
        idempotency_key: None,
        scheduled_at: now,
    };
    Ok((input, new_run(job, parts, now)))
}

/// A ready step's action rendered: the job it runs, the input it shows and the job's
/// parameters (a service step runs the service-call job); or why it cannot be rendered.
fn rendered_action(
    spec: &StepSpec,
    scope: &Scope,
    jobs: &HashMap<String, JobDefinition>,
) -> Result<(String, Value, Value), (Option<Value>, String)> {
    let render_errors = |errors: Vec<domain::template::RenderError>| {
        errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    match &spec.action {
        StepAction::Job(j) => {
            if let Some(job) = jobs.get(j.job_slug.as_str()) {
                templated_definition_only(&j.parameters, &job.entry_point)
                    .map_err(|why| (None, why))?;
            }
            let rendered = render(&j.parameters, scope).map_err(|e| {
                (
                    None,
                    format!("its parameters could not be rendered: {}", render_errors(e)),
                )
            })?;
            Ok((j.job_slug.as_str().to_string(), rendered.clone(), rendered))
        }
        StepAction::Service(s) => {
            let request = serde_json::to_value(&s.request).unwrap_or(Value::Null);
            // Secret references in headers are kept as references: they resolve at execution.
            let rendered = render(&request, scope).map_err(|e| {
                (
                    None,
                    format!("its request could not be rendered: {}", render_errors(e)),
                )
            })?;
            let parameters = json!({
                "serviceSlug": s.service_slug.as_str(),
                "request": rendered,
                "requireHealthy": s.require_healthy,
                "allowDegraded": s.allow_degraded,
                "captureResponse": s.capture_response,
            });
            Ok((SERVICE_CALL_JOB.to_string(), rendered, parameters))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::application::orchestrator::parse_workflow_run_request;
    use crate::store::{NewRun, WorkflowRunState};
    use chrono::Utc;
    use domain::jobs::{compile_parameters_schema, validate_parameters};
    use domain::workflow::StepSpec;
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use wire::{
        JobDefinition, JobRun, RunStatus, StepRunStatus, WorkflowRun, WorkflowRunStatus,
        WorkflowRunStep,
    };

    /// The parameter check without the launcher's cache.
    struct Compile;

    impl ParameterCheck for Compile {
        fn problems(&self, job: &JobDefinition, parameters: &Value) -> domain::Problems {
            match compile_parameters_schema(&job.parameters_schema) {
                Ok(v) => validate_parameters(&v, parameters),
                Err(m) => {
                    let mut p = domain::Problems::new();
                    p.add("/parameters", m);
                    p
                }
            }
        }
    }

    fn plan(
        stored: &WorkflowRunState,
        spec: &[StepSpec],
        job_runs: &HashMap<String, JobRun>,
        jobs: &HashMap<String, JobDefinition>,
        now: chrono::DateTime<Utc>,
    ) -> Plan {
        let state = RunState {
            stored,
            spec,
            job_runs,
            jobs,
            now,
            driven: None,
        };
        super::plan(&state, &Compile)
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

    /// Steps as the API stores them: validated and normalized.
    fn spec(steps: Value) -> Vec<StepSpec> {
        let doc = json!({"slug": "wf", "name": "Wf", "steps": steps});
        domain::workflow::parse_workflow_spec(&doc, &Everything)
            .expect("valid steps")
            .steps
    }

    fn job(slug: &str) -> JobDefinition {
        serde_json::from_value(json!({"id": format!("id-{slug}"), "slug": slug, "name": slug,
            "version": 1, "type": "batch", "entryPoint": "builtin:noop",
            "parametersSchema": {"type": "object"}, "defaultParameters": {"d": 1},
            "timeoutMs": 1000, "retryPolicy": {"maxAttempts": 2, "strategy": "none",
                "initialDelayMs": 0, "maxDelayMs": 0, "jitter": "none"},
            "metadata": {}, "createdAt": "2026-11-23T00:00:00Z", "updatedAt": "2026-11-23T00:00:00Z"}))
        .expect("job")
    }

    fn state(steps: &[StepSpec]) -> WorkflowRunState {
        let now = Utc::now();
        let rows = steps
            .iter()
            .map(|s| WorkflowRunStep {
                id: format!("row-{}", s.id),
                workflow_run_id: "run".into(),
                step_id: s.id.clone(),
                status: StepRunStatus::Pending,
                attempt: 0,
                job_run_id: None,
                input: None,
                output: None,
                error_message: None,
                logs_url: None,
                metrics: None,
                started_at: None,
                completed_at: None,
                created_at: now,
                updated_at: now,
            })
            .collect();
        WorkflowRunState {
            run: WorkflowRun {
                id: "run".into(),
                workflow_definition_id: "wf".into(),
                workflow_slug: "wf".into(),
                workflow_version: 1,
                status: WorkflowRunStatus::Pending,
                parameters: json!({"p": "x"}),
                context: json!({}),
                error_message: None,
                current_step_id: None,
                current_step_index: None,
                metrics: json!({}),
                triggered_by: None,
                trigger: json!({"type": "manual"}),
                started_at: None,
                completed_at: None,
                duration_ms: None,
                created_at: now,
                updated_at: now,
                provider: "native".into(),
                execution_id: None,
                execution_url: None,
            },
            definition: json!({}),
            revision: 0,
            idempotency_key: None,
            steps: rows,
        }
    }

    /// Applies a plan's changes to the state, as the store would.
    fn apply(mut st: WorkflowRunState, p: &Plan) -> WorkflowRunState {
        if let Some(r) = &p.changes.run {
            st.run = r.clone();
        }
        for s in &p.changes.steps {
            let row = st.steps.iter_mut().find(|r| r.id == s.id).expect("row");
            *row = s.clone();
        }
        st
    }

    fn finished(
        jr: &NewRun,
        status: RunStatus,
        result: Option<Value>,
        error: Option<&str>,
    ) -> JobRun {
        let mut r = jr.run.clone();
        r.status = status;
        r.result = result;
        r.error_message = error.map(str::to_string);
        r.started_at = Some(Utc::now());
        r.completed_at = Some(Utc::now());
        r
    }

    fn jobs() -> HashMap<String, JobDefinition> {
        [("echo".to_string(), job("echo"))].into_iter().collect()
    }

    #[test]
    fn starts_roots_then_dependents_with_rendered_parameters() {
        let steps = spec(json!([
            {"id": "a", "jobSlug": "echo", "parameters": {"v": "{{ parameters.p }}"}},
            {"id": "b", "jobSlug": "echo", "dependsOn": ["a"], "parameters": {"n": "{{ steps.a.result.n }}"}}
        ]));
        let st = state(&steps);
        let p = plan(&st, &steps, &HashMap::new(), &jobs(), Utc::now());
        assert_eq!(p.changes.job_runs.len(), 1);
        let a = &p.changes.job_runs[0];
        assert_eq!(
            a.run.parameters,
            json!({"d": 1, "v": "x"}),
            "merged over the job's defaults"
        );
        assert_eq!(a.run.workflow_step_id.as_deref(), Some("a"));
        assert_eq!((a.run.attempt, a.run.max_attempts), (1, 2));
        let st = apply(st, &p);
        assert_eq!(st.run.status, WorkflowRunStatus::Running);
        let done = finished(a, RunStatus::Succeeded, Some(json!({"n": 7})), None);
        let runs = [(done.id.clone(), done)].into_iter().collect();
        let p = plan(&st, &steps, &runs, &jobs(), Utc::now());
        assert_eq!(p.changes.job_runs.len(), 1);
        assert_eq!(
            p.changes.job_runs[0].run.parameters["n"],
            json!(7),
            "type kept"
        );
        assert!(p.steps_changed && !p.status_changed);
    }

    #[test]
    fn halt_cancels_the_rest_and_fails_the_run() {
        let steps = spec(json!([
            {"id": "a", "jobSlug": "echo", "parameters": {}},
            {"id": "b", "jobSlug": "echo", "parameters": {}},
            {"id": "c", "jobSlug": "echo", "dependsOn": ["a"], "parameters": {}}
        ]));
        let st = state(&steps);
        let p = plan(&st, &steps, &HashMap::new(), &jobs(), Utc::now());
        let (a, b) = (&p.changes.job_runs[0], &p.changes.job_runs[1]);
        let failed = finished(a, RunStatus::Failed, None, Some("boom"));
        let runs = [(failed.id.clone(), failed)].into_iter().collect();
        let b_id = b.run.id.clone();
        let st = apply(st, &p);
        let p = plan(&st, &steps, &runs, &jobs(), Utc::now());
        let run = p.changes.run.as_ref().expect("changed");
        assert_eq!(run.status, WorkflowRunStatus::Failed);
        assert!(
            run.error_message
                .as_deref()
                .unwrap()
                .contains("step a failed: boom")
        );
        assert_eq!(p.cancel_job_runs, vec![b_id], "b's job run is stopped");
        let st = apply(st, &p);
        let status = |id: &str| st.steps.iter().find(|s| s.step_id == id).unwrap().status;
        assert_eq!(status("b"), StepRunStatus::Canceled);
        assert_eq!(status("c"), StepRunStatus::Canceled);
        assert!(p.changes.job_runs.is_empty());
    }

    #[test]
    fn unrenderable_template_fails_the_step_and_continue_skips_its_dependents() {
        let steps = spec(json!([
            {"id": "a", "jobSlug": "echo", "parameters": {"x": "{{ parameters.missing }}"}, "onFailure": "continue"},
            {"id": "b", "jobSlug": "echo", "dependsOn": ["a"], "parameters": {}},
            {"id": "c", "jobSlug": "nope", "parameters": {}, "onFailure": "continue"}
        ]));
        let st = state(&steps);
        let p = plan(&st, &steps, &HashMap::new(), &jobs(), Utc::now());
        assert!(p.changes.job_runs.is_empty());
        let st = apply(st, &p);
        let step = |id: &str| st.steps.iter().find(|s| s.step_id == id).unwrap().clone();
        assert_eq!(step("a").status, StepRunStatus::Failed);
        assert!(step("a").error_message.unwrap().contains("missing"));
        assert_eq!(step("b").status, StepRunStatus::Skipped);
        assert!(step("c").error_message.unwrap().contains("does not exist"));
        assert_eq!(st.run.status, WorkflowRunStatus::Failed);
        assert_eq!(
            st.run.metrics,
            json!({"totalSteps": 3, "completedSteps": 3})
        );
        // Planning again changes nothing: reconciling is idempotent.
        let again = plan(&st, &steps, &HashMap::new(), &jobs(), Utc::now());
        assert!(again.changes.run.is_none() && again.changes.steps.is_empty());
    }

    #[test]
    fn shared_values_merge_in_completion_order() {
        let steps = spec(json!([
            {"id": "a", "jobSlug": "echo", "parameters": {}},
            {"id": "b", "jobSlug": "echo", "parameters": {}}
        ]));
        let mut st = state(&steps);
        let t = Utc::now();
        for (i, (out, at)) in [
            (
                json!({"shared": {"k": "a", "only_a": 1}}),
                t + chrono::Duration::seconds(2),
            ),
            (json!({"shared": {"k": "b"}}), t),
        ]
        .into_iter()
        .enumerate()
        {
            st.steps[i].status = StepRunStatus::Succeeded;
            st.steps[i].output = Some(out);
            st.steps[i].completed_at = Some(at);
        }
        assert_eq!(
            Value::Object(shared_context(&steps, &st.steps)),
            json!({"k": "a", "only_a": 1})
        );
    }

    #[test]
    fn run_requests_list_every_problem() {
        let p = parse_workflow_run_request(
            &json!({"parameters": 1, "triggeredBy": "", "x": 1, "idempotencyKey": 5}),
            None,
        )
        .unwrap_err();
        let paths: Vec<String> = p.into_vec().into_iter().map(|d| d.path).collect();
        assert_eq!(
            paths,
            ["/x", "/parameters", "/triggeredBy", "/idempotencyKey"]
        );
        let ok = parse_workflow_run_request(&Value::Null, Some("key")).unwrap();
        assert_eq!(ok.idempotency_key.as_deref(), Some("key"));
        assert_eq!(ok.trigger, json!({"type": "manual"}));
    }

    /// What only the server's triggers may claim is refused from a request, naming the field.
    #[test]
    fn run_requests_cannot_claim_what_only_the_server_may() {
        let paths = |body: Value, header: Option<&str>| -> Vec<String> {
            parse_workflow_run_request(&body, header)
                .map(|_| Vec::new())
                .unwrap_or_else(|p| p.into_vec().into_iter().map(|d| d.path).collect())
        };
        assert_eq!(paths(json!({"trigger": "schedule"}), None), ["/trigger"]);
        assert_eq!(paths(json!({"trigger": "event"}), None), ["/trigger"]);
        assert_eq!(
            paths(
                json!({"trigger": {"type": "schedule", "cron": "* * * * * *"}}),
                None
            ),
            ["/trigger/type"]
        );
        assert_eq!(
            paths(json!({"trigger": {"type": "manual", "rerunOf": "x"}}), None),
            ["/trigger/rerunOf"]
        );
        assert_eq!(
            paths(json!({"trigger": {"type": "event", "chain": []}}), None),
            ["/trigger/chain", "/trigger/type"]
        );
        assert_eq!(
            paths(json!({"triggeredBy": "scheduler"}), None),
            ["/triggeredBy"]
        );
        assert_eq!(
            paths(json!({"triggeredBy": "Event:job.run.failed"}), None),
            ["/triggeredBy"]
        );
        let key = format!(
            "{}schedule:v1:0:2026-12-05T00:00:00+00:00",
            domain::jobs::SERVER_KEY_PREFIX
        );
        assert_eq!(
            paths(json!({"idempotencyKey": key}), None),
            ["/idempotencyKey"]
        );
        assert_eq!(paths(json!({}), Some(&key)), ["/idempotencyKey"]);
        // What callers may say stays accepted.
        let ok = parse_workflow_run_request(
            &json!({"trigger": {"type": "manual", "note": "deploy"}, "triggeredBy": "ci",
                "idempotencyKey": "schedule:v1:0:2026-12-05T00:00:00+00:00"}),
            None,
        )
        .unwrap();
        assert_eq!(ok.trigger, json!({"type": "manual", "note": "deploy"}));
        assert_eq!(ok.triggered_by.as_deref(), Some("ci"));
    }
}
