//! The workflow orchestrator. A workflow run's steps execute as job runs (trigger `workflow`)
//! on the apalis workers of the job engine, so they get its claims, leases, timeouts, retries
//! with durable backoff, cancellation and crash recovery. This module decides what happens
//! next:
//!
//! * [`plan`] is pure: from a run's stored state, the job runs its steps point at and the job
//!   definitions, it derives every step's status (attempts, results, errors), applies
//!   `onFailure` (halt: fail the run and cancel the rest; continue: skip the dependents),
//!   renders the templates of the steps that became ready and builds their job runs, and
//!   aggregates the run (status, context with shared values, current step, metrics).
//! * [`Orchestrator::reconcile`] reads, plans and writes the result in one transaction that is
//!   conditional on the run's revision (the loser of a race re-reads and re-plans), then
//!   enqueues the new job runs, cancels what a halt stopped and publishes `workflow.run.*`.
//!
//! Reconciling is idempotent, so it is called whenever anything may have changed: when a run
//! starts, after every transition of a step's job run (by the engine, in whichever process ran
//! it), on cancel and resume, and by the recovery sweep for every unfinished run: a process
//! killed between a job run's end and the next step's start loses nothing.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use wire::{
    JobDefinition, JobRun, RunStatus, StepAttempt, StepRunStatus, Trigger, WorkflowDefinition,
    WorkflowRun, WorkflowRunStatus, WorkflowRunStep, WorkflowRunWithSteps,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use domain::{
        Problems,
        jobs::{
            compile_parameters_schema, is_server_key, merge_parameters, server_key_problem,
            validate_parameters,
        },
        problems::pointer_segment,
        template::{Scope, render},
        workflow::{OnFailure, StepAction, StepSpec, StepStatus, WorkflowSpec},
    };
use crate::{definitions::DefinitionCache, engine::{
        LocalSlots, as_accepted, publish_run,
        queue::{Queue, RunTask, WorkerWaker},
    }, events::EventBus, handlers, service::{ServiceError, ServiceResult}, store::{
        ClaimedRun, InsertedWorkflowRun, NewWorkflowRun, RunChanges, StepJobRun, Store,
        WorkflowRunFilter, WorkflowRunState, new_id,
    }};

/// The job that executes service steps (seeded at first start).
pub const SERVICE_CALL_JOB: &str = "service-call";

/// The definition of the job service steps execute as, seeded at every start when missing.
/// Its retry policy is the default of service steps: five attempts with exponential backoff,
/// so a step that requires a healthy service waits about half a minute for it.
pub fn service_call_definition() -> Value {
    json!({
        "slug": SERVICE_CALL_JOB, "name": "Service call", "version": 1, "type": "service-triggered",
        "entryPoint": crate::handlers::SERVICE_CALL,
        "parametersSchema": {"type": "object", "required": ["serviceSlug", "request"], "properties": {
            "serviceSlug": {"type": "string", "description": "A registered service"},
            "request": {"type": "object", "required": ["method", "path"], "properties": {
                "method": {"type": "string"}, "path": {"type": "string"},
                "query": {"type": "object"}, "headers": {"type": "object"}, "body": {}}},
            "requireHealthy": {"type": "boolean"}, "allowDegraded": {"type": "boolean"},
            "captureResponse": {"type": "boolean"}}},
        "defaultParameters": {"requireHealthy": false, "allowDegraded": false, "captureResponse": false},
        "timeoutMs": 30000,
        "retryPolicy": {"maxAttempts": 5, "strategy": "exponential", "initialDelayMs": 1000,
            "maxDelayMs": 15000, "jitter": "equal"},
        "metadata": {"tags": ["service"], "seeded": true}
    })
}

/// How many times a reconciliation re-reads after losing a race before giving up (the sweep
/// comes back to the run later).
const MAX_RACES: usize = 50;

type ValidatorCache = HashMap<String, (DateTime<Utc>, Arc<jsonschema::Validator>)>;

#[derive(Clone)]
pub struct Orchestrator {
    store: Store,
    bus: EventBus,
    queue: Queue,
    waker: WorkerWaker,
    /// Compiled parameter schemas by job id and `updatedAt`.
    validators: Arc<std::sync::Mutex<ValidatorCache>>,
    /// Runs being reconciled in the background by this process (see [`Orchestrator::nudge`]),
    /// each with whether another nudge arrived meanwhile.
    nudged: Arc<std::sync::Mutex<HashMap<String, bool>>>,
    /// Runs with a deferred nudge waiting (see [`Orchestrator::nudge_soon`]).
    deferred: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Starts a newly ready step's attempt on this process's workers when they have room
    /// (set by the engine; see [`Orchestrator::set_local_dispatch`]).
    local: Arc<std::sync::OnceLock<LocalDispatch>>,
    /// Job definitions of steps that start (shared with the job service).
    definitions: DefinitionCache,
}

/// Reserves up to the given number of this process's idle worker slots for job runs stored
/// already claimed (see `engine::LocalSlots`).
pub type LocalDispatch = Arc<dyn Fn(usize) -> LocalSlots + Send + Sync>;

/// A parsed `POST /api/workflows/:slug/run` body.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRunRequest {
    pub parameters: Value,
    pub triggered_by: Option<String>,
    pub trigger: Value,
    pub idempotency_key: Option<String>,
}

/// Trigger types only the server's triggers start runs with.
const SERVER_TRIGGERS: [&str; 2] = ["schedule", "event"];

/// Whether `triggeredBy` names one of the server's triggers (`scheduler`, `event:<type>`).
fn is_server_triggered_by(value: &str) -> bool {
    let v = value.trim();
    v.eq_ignore_ascii_case(SCHEDULE_TRIGGERED_BY)
        || v.get(..EVENT_TRIGGERED_BY.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(EVENT_TRIGGERED_BY))
}

/// `triggeredBy` of runs the schedule triggers start.
pub const SCHEDULE_TRIGGERED_BY: &str = "scheduler";
/// Prefix of `triggeredBy` of runs the event triggers start (`event:<event type>`).
pub const EVENT_TRIGGERED_BY: &str = "event:";

/// Parses a run request; every problem with its pointer.
pub fn parse_workflow_run_request(
    body: &Value,
    header_key: Option<&str>,
) -> Result<WorkflowRunRequest, Problems> {
    let mut p = Problems::new();
    let empty = Map::new();
    let obj = match body {
        Value::Null => &empty,
        Value::Object(o) => o,
        _ => {
            p.add("", "the body must be a JSON object");
            return Err(p);
        }
    };
    for key in obj.keys() {
        if !["parameters", "triggeredBy", "trigger", "idempotencyKey"].contains(&key.as_str()) {
            p.add(format!("/{}", pointer_segment(key)), "unknown field");
        }
    }
    let parameters = match obj.get("parameters") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            p.add("/parameters", "must be an object");
            json!({})
        }
    };
    let triggered_by = match obj.get("triggeredBy") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_server_triggered_by(s) => {
            p.add(
                "/triggeredBy",
                "\"scheduler\" and \"event:...\" name the server's schedule and event triggers; a request cannot claim them",
            );
            None
        }
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 => {
            Some(s.trim().to_string())
        }
        Some(_) => {
            p.add(
                "/triggeredBy",
                "must be a non-empty string of at most 255 characters",
            );
            None
        }
    };
    // Only the server starts runs of its schedule and event triggers, and only it records what
    // a trigger carries (`chain`, `rerunOf`): a caller's run is a manual one.
    let server_only = |t: &str| {
        format!(
            "{t:?} runs are started by the server's {t} triggers; a request can only start a \"manual\" run"
        )
    };
    let trigger = match obj.get("trigger") {
        None | Some(Value::Null) => json!({"type": "manual"}),
        Some(Value::String(t)) if t == "manual" => json!({"type": "manual"}),
        Some(Value::String(t)) if SERVER_TRIGGERS.contains(&t.as_str()) => {
            p.add("/trigger", server_only(t));
            json!({"type": "manual"})
        }
        Some(Value::Object(o)) => {
            let before = p.iter().count();
            if o.contains_key("chain") {
                p.add(
                    "/trigger/chain",
                    "is recorded by the server for runs its event triggers start; a request cannot set it",
                );
            }
            if o.contains_key("rerunOf") {
                p.add(
                    "/trigger/rerunOf",
                    "is recorded by the server for reruns (POST /api/workflow-runs/{id}/rerun); a request cannot set it",
                );
            }
            match o.get("type").and_then(Value::as_str) {
                Some("manual") => {}
                Some(t) if SERVER_TRIGGERS.contains(&t) => p.add("/trigger/type", server_only(t)),
                _ => p.add("/trigger/type", "must be \"manual\""),
            }
            if p.iter().count() == before {
                Value::Object(o.clone())
            } else {
                json!({"type": "manual"})
            }
        }
        Some(_) => {
            p.add(
                "/trigger",
                "must be \"manual\" or an object with \"type\": \"manual\"",
            );
            json!({"type": "manual"})
        }
    };
    let key = match (obj.get("idempotencyKey"), header_key) {
        (Some(Value::String(s)), _) if !s.is_empty() && s.len() <= 255 => Some(s.clone()),
        (Some(Value::Null) | None, Some(h)) if !h.is_empty() && h.len() <= 255 => {
            Some(h.to_string())
        }
        (Some(Value::Null) | None, None) => None,
        (Some(Value::Null) | None, Some(_)) => {
            p.add("", "the Idempotency-Key header must be 1 to 255 bytes");
            None
        }
        (Some(_), _) => {
            p.add("/idempotencyKey", "must be a string of 1 to 255 bytes");
            None
        }
    };
    let key = match key {
        Some(k) if is_server_key(&k) => {
            p.add("/idempotencyKey", server_key_problem());
            None
        }
        k => k,
    };
    p.finish(WorkflowRunRequest {
        parameters,
        triggered_by,
        trigger,
        idempotency_key: key,
    })
}

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
    let mut attempts = attempts_of(step);
    // A step's job run numbers its attempts on from the step's earlier ones (see start_step).
    let current = jr.attempt;
    // Earlier attempts of this job run that are still open failed (the job run moved on).
    for a in attempts.iter_mut() {
        if a.job_run_id.as_deref() == Some(jr.id.as_str())
            && a.attempt < current
            && !a.status.is_terminal()
        {
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
        .filter(|a| a.job_run_id.as_deref() != Some(jr.id.as_str()))
        .map(|a| a.attempt)
        .max()
        .unwrap_or(0)
        + 1;
    for n in first..current {
        if !attempts
            .iter()
            .any(|a| a.job_run_id.as_deref() == Some(jr.id.as_str()) && a.attempt == n)
        {
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
    let started = jr.started_at.is_some() || jr.attempt > 1;
    if jr.status == RunStatus::Running || jr.status.is_terminal() {
        let status = match jr.status {
            RunStatus::Running => StepRunStatus::Running,
            RunStatus::Succeeded => StepRunStatus::Succeeded,
            RunStatus::Canceled => StepRunStatus::Canceled,
            _ => StepRunStatus::Failed,
        };
        let entry = attempts
            .iter_mut()
            .find(|a| a.job_run_id.as_deref() == Some(jr.id.as_str()) && a.attempt == current);
        let entry = match entry {
            Some(e) => e,
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
    if started {
        step.attempt = current;
        if step.started_at.is_none() {
            step.started_at = jr.started_at.or(Some(jr.updated_at));
        }
    }
    match jr.status {
        RunStatus::Pending if started => step.status = StepRunStatus::Running,
        RunStatus::Pending => {}
        RunStatus::Running => step.status = StepRunStatus::Running,
        RunStatus::Succeeded => {
            step.status = StepRunStatus::Succeeded;
            step.output = jr.result.clone();
            step.error_message = None;
            step.completed_at = jr.completed_at.or(Some(jr.updated_at));
        }
        RunStatus::Failed | RunStatus::Expired => {
            step.status = StepRunStatus::Failed;
            step.error_message = Some(match &jr.error_message {
                Some(e) if jr.status == RunStatus::Expired => format!("expired: {e}"),
                Some(e) => e.clone(),
                None => format!("job run {} {}", jr.id, jr.status),
            });
            step.completed_at = jr.completed_at.or(Some(jr.updated_at));
        }
        RunStatus::Canceled => {
            step.status = StepRunStatus::Canceled;
            step.error_message = Some(format!("its job run {} was canceled", jr.id));
            step.completed_at = jr.completed_at.or(Some(jr.updated_at));
        }
    }
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

fn finish_step(
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

/// Decides the next state of a run. `job_runs`: the job runs the steps point at; `jobs`:
/// definitions of the jobs the ready steps use (a missing one fails its step).
pub fn plan(
    state: &WorkflowRunState,
    spec: &[StepSpec],
    job_runs: &HashMap<String, JobRun>,
    jobs: &HashMap<String, JobDefinition>,
    now: DateTime<Utc>,
) -> Plan {
    let mut out = Plan::default();
    let mut run = state.run.clone();
    let mut steps = state.steps.clone();
    let mut changed = vec![false; steps.len()];
    if run.status.is_terminal() {
        return out;
    }
    // 1. Follow the job runs.
    for (i, step) in steps.iter_mut().enumerate() {
        if step.status.is_terminal() {
            continue;
        }
        if let Some(jr) = step.job_run_id.as_ref().and_then(|id| job_runs.get(id)) {
            changed[i] |= follow_job_run(step, jr);
        }
    }
    let index: HashMap<String, usize> = steps
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
        steps: spec.to_vec(),
        triggers: Vec::new(),
        provider: Default::default(),
    };
    let mut halted: Option<String> = None;
    // Repeat until nothing changes: starting a step may fail it at once (a template that does
    // not render), which may skip or halt others.
    for _ in 0..=steps.len() {
        let statuses: HashMap<String, StepStatus> = steps
            .iter()
            .map(|s| (s.step_id.clone(), to_step_status(s.status)))
            .collect();
        // 2. Failures.
        let mut progress = false;
        for (i, s) in steps.iter().enumerate() {
            if !matches!(s.status, StepRunStatus::Failed | StepRunStatus::Canceled) {
                continue;
            }
            let on_failure = spec.get(i).map(|st| st.on_failure).unwrap_or_default();
            if on_failure == OnFailure::Halt && halted.is_none() {
                halted = Some(format!(
                    "step {} {}: {}",
                    s.step_id,
                    s.status,
                    s.error_message.as_deref().unwrap_or("no error message")
                ));
            }
        }
        if halted.is_some() {
            for (i, s) in steps.iter_mut().enumerate() {
                if s.status.is_terminal() {
                    continue;
                }
                if let Some(jr) = &s.job_run_id {
                    out.cancel_job_runs.push(jr.clone());
                }
                finish_step(
                    s,
                    StepRunStatus::Canceled,
                    Some("canceled: the run halted".into()),
                    now,
                );
                changed[i] = true;
            }
            break;
        }
        let mut to_skip = Vec::new();
        for s in steps.iter() {
            if matches!(s.status, StepRunStatus::Failed | StepRunStatus::Canceled) {
                for d in workflow.dependents_to_skip(&s.step_id, &statuses) {
                    to_skip.push((d.to_string(), s.step_id.clone()));
                }
            }
        }
        for (d, because) in to_skip {
            if let Some(&j) = index.get(d.as_str())
                && !steps[j].status.is_terminal()
            {
                if let Some(jr) = &steps[j].job_run_id {
                    out.cancel_job_runs.push(jr.clone());
                }
                let msg = format!("skipped: step {because} did not succeed");
                finish_step(&mut steps[j], StepRunStatus::Skipped, Some(msg), now);
                changed[j] = true;
                progress = true;
            }
        }
        // 3. Start the ready steps.
        let statuses: HashMap<String, StepStatus> = steps
            .iter()
            .map(|s| (s.step_id.clone(), to_step_status(s.status)))
            .collect();
        let ready: Vec<String> = workflow
            .ready_steps(&statuses)
            .into_iter()
            .filter(|id| {
                index
                    .get(*id)
                    .is_some_and(|&j| steps[j].job_run_id.is_none())
            })
            .map(str::to_string)
            .collect();
        if !ready.is_empty() {
            let scope = Scope {
                parameters: run.parameters.clone(),
                steps: steps
                    .iter()
                    .filter(|s| s.status == StepRunStatus::Succeeded)
                    .map(|s| (s.step_id.clone(), s.output.clone().unwrap_or(Value::Null)))
                    .collect::<BTreeMap<_, _>>(),
                shared: Value::Object(shared_context(spec, &steps)),
                run: json!({"id": run.id, "workflowSlug": run.workflow_slug,
                    "workflowVersion": run.workflow_version, "triggeredBy": run.triggered_by}),
            };
            for id in ready {
                let j = index[id.as_str()];
                let Some(step_spec) = spec.get(j) else {
                    continue;
                };
                match start_step(&run, step_spec, &steps[j], &scope, jobs, now) {
                    Ok((input, job_run)) => {
                        let s = &mut steps[j];
                        s.input = Some(input);
                        s.job_run_id = Some(job_run.run.id.clone());
                        s.error_message = None;
                        s.output = None;
                        s.completed_at = None;
                        out.changes.job_runs.push(job_run);
                    }
                    Err((input, msg)) => {
                        let s = &mut steps[j];
                        s.input = input;
                        s.started_at = Some(now);
                        finish_step(s, StepRunStatus::Failed, Some(msg), now);
                    }
                }
                changed[j] = true;
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }

    // 4. Aggregate.
    let all_done = steps.iter().all(|s| s.status.is_terminal());
    let first_failure = steps
        .iter()
        .find(|s| matches!(s.status, StepRunStatus::Failed | StepRunStatus::Canceled));
    let any_started = steps
        .iter()
        .any(|s| s.job_run_id.is_some() || s.status.is_terminal());
    let status = if let Some(msg) = &halted {
        run.error_message = Some(msg.clone());
        WorkflowRunStatus::Failed
    } else if all_done {
        match first_failure {
            Some(f) => {
                run.error_message = Some(format!(
                    "step {} {}: {}",
                    f.step_id,
                    f.status,
                    f.error_message.as_deref().unwrap_or("no error message")
                ));
                WorkflowRunStatus::Failed
            }
            None => {
                run.error_message = None;
                WorkflowRunStatus::Succeeded
            }
        }
    } else if any_started {
        WorkflowRunStatus::Running
    } else {
        WorkflowRunStatus::Pending
    };
    if status != WorkflowRunStatus::Pending && run.started_at.is_none() {
        run.started_at = Some(now);
    }
    if status.is_terminal() {
        run.completed_at = Some(now);
        run.duration_ms = run.started_at.map(|s| (now - s).num_milliseconds().max(0));
    }
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
    run.metrics = metrics_of(&steps);
    run.context = context_of(spec, &steps);
    out.status_changed = status != state.run.status;
    run.status = status;
    for (i, s) in steps.into_iter().enumerate() {
        if changed[i] {
            let mut s = s;
            s.updated_at = now;
            out.changes.steps.push(s);
        }
    }
    out.steps_changed = !out.changes.steps.is_empty();
    let run_changed = run.status != state.run.status
        || run.context != state.run.context
        || run.metrics != state.run.metrics
        || run.current_step_id != state.run.current_step_id
        || run.error_message != state.run.error_message
        || run.started_at != state.run.started_at;
    if run_changed || out.steps_changed {
        run.updated_at = now;
        out.changes.run = Some(run);
    }
    out
}

/// `{"totalSteps", "completedSteps"}`: completed = in a terminal state.
fn metrics_of(steps: &[WorkflowRunStep]) -> Value {
    json!({
        "totalSteps": steps.len(),
        "completedSteps": steps.iter().filter(|s| s.status.is_terminal()).count(),
    })
}

/// `{"steps": {"<id>": {"status", "jobRunId", "result"}}, "shared": {}}`.
fn context_of(spec: &[StepSpec], steps: &[WorkflowRunStep]) -> Value {
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
    let rules = handlers::rules(entry_point);
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

/// Renders a ready step and builds its job run; or the rendered input (if any) and why the
/// step fails at once.
fn start_step(
    run: &WorkflowRun,
    spec: &StepSpec,
    step: &WorkflowRunStep,
    scope: &Scope,
    jobs: &HashMap<String, JobDefinition>,
    now: DateTime<Utc>,
) -> Result<(Value, StepJobRun), (Option<Value>, String)> {
    let render_errors = |errors: Vec<domain::template::RenderError>| {
        errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (job_slug, input, parameters) = match &spec.action {
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
            (j.job_slug.as_str().to_string(), rendered.clone(), rendered)
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
            (SERVICE_CALL_JOB.to_string(), rendered, parameters)
        }
    };
    let Some(job) = jobs.get(&job_slug) else {
        return Err((Some(input), format!("job {job_slug:?} does not exist")));
    };
    let parameters = merge_parameters(&job.default_parameters, &parameters);
    // Secret references are checked as the strings they will resolve to.
    let (checked, reference_problems) =
        domain::secrets::with_placeholders(&parameters, "/parameters");
    let mut problems = match compile_parameters_schema(&job.parameters_schema) {
        Ok(v) => validate_parameters(&v, &checked),
        Err(m) => {
            let mut p = Problems::new();
            p.add("/parameters", m);
            p
        }
    };
    for d in reference_problems.into_vec() {
        problems.add(d.path, d.message);
    }
    if problems.is_empty() {
        for (path, message) in handlers::parameter_problems(&job.entry_point, &checked) {
            problems.add(format!("/parameters{path}"), message);
        }
    }
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
    let id = new_id();
    let job_run = JobRun {
        logs_url: format!("/api/job-runs/{id}/logs"),
        id,
        job_definition_id: job.id.clone(),
        job_slug: job.slug.clone(),
        job_version: job.version,
        status: RunStatus::Pending,
        parameters,
        result: None,
        error_message: None,
        metrics: None,
        context: Some(
            json!({"workflowRunId": run.id, "workflowSlug": run.workflow_slug,
            "stepId": step.step_id}),
        ),
        timeout_ms: spec.timeout_ms.unwrap_or(job.timeout_ms),
        // A resumed step continues its attempt count: the job run starts at the step's next
        // attempt and has the step's retry policy's attempts on top of those already used.
        attempt: step.attempt + 1,
        max_attempts: step.attempt + policy.max_attempts as i32,
        trigger: Trigger::Workflow,
        workflow_run_id: Some(run.id.clone()),
        workflow_step_id: Some(step.step_id.clone()),
        duration_ms: None,
        scheduled_at: now,
        started_at: None,
        completed_at: None,
        created_at: now,
        updated_at: now,
    };
    Ok((
        input,
        StepJobRun {
            run: job_run,
            entry_point: job.entry_point.clone(),
            retry_policy: serde_json::to_value(&policy).unwrap_or(Value::Null),
            claim: None,
        },
    ))
}

impl Orchestrator {
    pub fn new(store: Store, bus: EventBus, queue: Queue, waker: WorkerWaker) -> Self {
        Orchestrator {
            definitions: DefinitionCache::new(store.clone(), &bus),
            store,
            bus,
            queue,
            waker,
            validators: Default::default(),
            nudged: Default::default(),
            deferred: Default::default(),
            local: Default::default(),
        }
    }

    /// The job-definition cache steps start from (shared with the job service).
    pub fn definitions(&self) -> &DefinitionCache {
        &self.definitions
    }

    /// Lets newly ready steps start on this process's idle workers instead of going through
    /// the queue (push, a worker's fetch, its ack and the claim: four writes on the critical
    /// path of every chain step). Their job runs are committed already claimed by this process,
    /// in the reconcile's write; safe for crashes like any claimed run (the lease expires and
    /// the reaper retries it).
    pub fn set_local_dispatch(&self, dispatch: LocalDispatch) {
        let _ = self.local.set(dispatch);
    }

    /// A nudge that waits `after` first and is dropped when another nudge of the run comes
    /// sooner (that reconcile sees everything this one would). For a step that just started:
    /// most no-op and short steps finish within the delay, and then the run is reconciled once
    /// per step instead of twice (running, then finished) on the critical path of the next step.
    pub fn nudge_soon(&self, run_id: &str, after: std::time::Duration) {
        match self.deferred.lock() {
            Ok(mut deferred) => {
                if !deferred.insert(run_id.to_string()) {
                    return;
                }
            }
            Err(_) => return self.nudge(run_id),
        }
        let this = self.clone();
        let run_id = run_id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let still = this
                .deferred
                .lock()
                .map(|mut d| d.remove(&run_id))
                .unwrap_or(false);
            if still {
                this.nudge(&run_id);
            }
        });
    }

    /// Asks for a reconcile of `run_id` without waiting for it (a step's job run changed).
    /// Nudges coalesce: while one reconcile of a run is under way in this process, further
    /// nudges only mark it dirty and it runs once more when done, so the 50 completions of a
    /// fan-out cost a handful of reconciles instead of 50 racing ones, and the worker that
    /// finished a step is free at once. Correctness never depends on a nudge: every reconcile
    /// re-reads the run, and the recovery sweep reconciles unfinished runs a nudge missed
    /// (a crash between a step's end and its nudge).
    pub fn nudge(&self, run_id: &str) {
        if let Ok(mut deferred) = self.deferred.lock() {
            deferred.remove(run_id);
        }
        {
            let Ok(mut nudged) = self.nudged.lock() else {
                return;
            };
            if let Some(dirty) = nudged.get_mut(run_id) {
                *dirty = true;
                return;
            }
            nudged.insert(run_id.to_string(), false);
        }
        let this = self.clone();
        let run_id = run_id.to_string();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.reconcile(&run_id).await {
                    tracing::warn!(workflow_run_id = %run_id, error = %e, "could not advance the workflow run; the recovery sweep will");
                }
                let Ok(mut nudged) = this.nudged.lock() else {
                    return;
                };
                if nudged.get(&run_id) == Some(&true) {
                    nudged.insert(run_id.clone(), false);
                    continue;
                }
                nudged.remove(&run_id);
                return;
            }
        });
    }

    fn validator(
        &self,
        id: &str,
        updated_at: DateTime<Utc>,
        schema: &Value,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        if let Ok(cache) = self.validators.lock()
            && let Some((at, v)) = cache.get(id)
            && *at == updated_at
        {
            return Ok(v.clone());
        }
        let v = Arc::new(compile_parameters_schema(schema)?);
        if let Ok(mut cache) = self.validators.lock() {
            cache.insert(id.to_string(), (updated_at, v.clone()));
        }
        Ok(v)
    }

    /// Starts a run of `workflow` for a caller. Returns the run and whether it is new (false:
    /// the idempotency key was used before).
    pub async fn start(
        &self,
        workflow: &WorkflowDefinition,
        body: &Value,
        header_key: Option<&str>,
        who: &domain::auth::Principal,
    ) -> ServiceResult<(WorkflowRun, bool)> {
        let req =
            parse_workflow_run_request(body, header_key).map_err(ServiceError::InvalidRequest)?;
        domain::authority::check_workflow_run_parameters(&req.parameters, who)
            .map_err(crate::service::refused_definition)?;
        self.start_request(workflow, req).await
    }

    /// Starts a run from a parsed request (a caller's, checked, or a trigger's).
    pub async fn start_request(
        &self,
        workflow: &WorkflowDefinition,
        req: WorkflowRunRequest,
    ) -> ServiceResult<(WorkflowRun, bool)> {
        let parameters = merge_parameters(&workflow.default_parameters, &req.parameters);
        let problems = match self.validator(
            &workflow.id,
            workflow.updated_at,
            &workflow.parameters_schema,
        ) {
            Ok(v) => validate_parameters(&v, &parameters),
            Err(m) => {
                let mut p = Problems::new();
                p.add("/parameters", m.replace("job's", "workflow's"));
                p
            }
        };
        if !problems.is_empty() {
            return Err(ServiceError::InvalidParameters(problems));
        }
        self.start_with(
            workflow,
            parameters,
            req.triggered_by,
            req.trigger,
            req.idempotency_key,
        )
        .await
    }

    /// Stores a new run and starts its first steps, on a task of its own (see
    /// `crate::detach`): a caller that goes away cannot cut the work after the commit short.
    async fn start_with(
        &self,
        workflow: &WorkflowDefinition,
        parameters: Value,
        triggered_by: Option<String>,
        trigger: Value,
        idempotency_key: Option<String>,
    ) -> ServiceResult<(WorkflowRun, bool)> {
        let this = self.clone();
        let workflow = workflow.clone();
        crate::detach::uncancellable(async move {
            this.start_here(
                &workflow,
                parameters,
                triggered_by,
                trigger,
                idempotency_key,
            )
            .await
        })
        .await
    }

    async fn start_here(
        &self,
        workflow: &WorkflowDefinition,
        parameters: Value,
        triggered_by: Option<String>,
        trigger: Value,
        idempotency_key: Option<String>,
    ) -> ServiceResult<(WorkflowRun, bool)> {
        let spec = steps_of(&serde_json::to_value(workflow).unwrap_or(Value::Null))?;
        let now = Utc::now();
        let id = new_id();
        let steps: Vec<WorkflowRunStep> = spec
            .iter()
            .map(|s| WorkflowRunStep {
                id: new_id(),
                workflow_run_id: id.clone(),
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
        let run = WorkflowRun {
            id: id.clone(),
            workflow_definition_id: workflow.id.clone(),
            workflow_slug: workflow.slug.clone(),
            workflow_version: workflow.version,
            status: WorkflowRunStatus::Pending,
            parameters,
            context: context_of(&spec, &steps),
            error_message: None,
            current_step_id: None,
            current_step_index: None,
            metrics: metrics_of(&steps),
            triggered_by,
            trigger,
            started_at: None,
            completed_at: None,
            duration_ms: None,
            created_at: now,
            updated_at: now,
        };
        let new = NewWorkflowRun {
            run,
            definition: serde_json::to_value(workflow).unwrap_or(Value::Null),
            idempotency_key,
            steps,
        };
        match self.store.insert_workflow_run(new).await? {
            InsertedWorkflowRun::Existing(run) => Ok((run, false)),
            InsertedWorkflowRun::New(state) => {
                self.publish(&state.run, "pending").await;
                let run = self.reconcile_here(&id).await?.unwrap_or(state.run);
                Ok((run, true))
            }
        }
    }

    /// Brings a run up to date (see the module documentation). Returns the run as it now is.
    /// On a task of its own: steps committed already claimed by this process are started (and
    /// the rest enqueued) even when the caller goes away right after the commit.
    pub async fn reconcile(&self, run_id: &str) -> ServiceResult<Option<WorkflowRun>> {
        let this = self.clone();
        let run_id = run_id.to_string();
        crate::detach::uncancellable(async move { this.reconcile_here(&run_id).await }).await
    }

    async fn reconcile_here(&self, run_id: &str) -> ServiceResult<Option<WorkflowRun>> {
        for _ in 0..MAX_RACES {
            // The run, its steps and their job runs in one consistent read.
            let Some((state, job_runs)) = self.store.workflow_run_snapshot(run_id).await? else {
                return Ok(None);
            };
            if state.run.status.is_terminal() {
                return Ok(Some(state.run));
            }
            let spec = steps_of(&state.definition)?;
            let mut slugs: Vec<String> = Vec::new();
            for (i, s) in state.steps.iter().enumerate() {
                if s.status != StepRunStatus::Pending || s.job_run_id.is_some() {
                    continue;
                }
                let slug = match spec.get(i).map(|st| &st.action) {
                    Some(StepAction::Job(j)) => j.job_slug.as_str().to_string(),
                    Some(StepAction::Service(_)) => SERVICE_CALL_JOB.to_string(),
                    None => continue,
                };
                if !slugs.contains(&slug) {
                    slugs.push(slug);
                }
            }
            // Definitions of jobs that may start: usually cached; the misses are read together.
            let defs =
                futures::future::join_all(slugs.iter().map(|slug| self.definitions.get(slug)))
                    .await;
            let job_runs: HashMap<String, JobRun> =
                job_runs.into_iter().map(|r| (r.id.clone(), r)).collect();
            let mut jobs = HashMap::new();
            for (slug, def) in slugs.into_iter().zip(defs) {
                if let Some(job) = def? {
                    jobs.insert(slug, job);
                }
            }
            let now = Utc::now();
            let mut plan = plan(&state, &spec, &job_runs, &jobs, now);
            let Some(run) = plan.changes.run.clone() else {
                return Ok(Some(state.run));
            };
            // Steps that start now and fit on this process's idle workers are stored claimed.
            let mut slots = match (plan.changes.job_runs.len(), self.local.get()) {
                (0, _) | (_, None) => LocalSlots::none(),
                (n, Some(reserve)) => reserve(n),
            };
            if let Some(claim) = slots.claim(now) {
                for jr in plan.changes.job_runs.iter_mut().take(slots.available()) {
                    jr.run.status = RunStatus::Running;
                    jr.run.started_at = Some(claim.at);
                    jr.claim = Some(claim.clone());
                }
            }
            if !self
                .store
                .apply_workflow_changes(run_id, state.revision, &plan.changes, now)
                .await?
            {
                tokio::task::yield_now().await;
                continue;
            }
            self.after_apply(&run, plan, &mut slots).await;
            return Ok(Some(run));
        }
        tracing::warn!(
            run_id,
            "workflow run changed too often to reconcile; the sweep retries"
        );
        Ok(self.store.get_workflow_run(run_id).await?)
    }

    async fn after_apply(&self, run: &WorkflowRun, plan: Plan, slots: &mut LocalSlots) {
        // Announced as accepted first, so that no worker's `running` overtakes `pending`.
        for jr in &plan.changes.job_runs {
            publish_run(&self.bus, &as_accepted(&jr.run)).await;
        }
        let mut tasks = Vec::new();
        for jr in &plan.changes.job_runs {
            if let Some(claim) = &jr.claim {
                slots.start(ClaimedRun {
                    run: jr.run.clone(),
                    entry_point: jr.entry_point.clone(),
                    retry_policy: serde_json::from_value(jr.retry_policy.clone())
                        .unwrap_or_default(),
                    lease_until: claim.lease_until,
                });
            } else {
                tasks.push(RunTask {
                    run_id: jr.run.id.clone(),
                    attempt: jr.run.attempt,
                });
            }
        }
        if !tasks.is_empty() {
            if let Err(e) = self.queue.push_now(tasks).await {
                tracing::error!(workflow_run_id = %run.id, error = %e, "could not enqueue the steps' job runs; the recovery sweep will");
            }
            self.waker.wake();
        }
        for id in &plan.cancel_job_runs {
            self.cancel_job_run(id).await;
        }
        if plan.steps_changed {
            self.publish(run, "updated").await;
        }
        if plan.status_changed {
            self.publish(run, run.status.as_str()).await;
        }
    }

    async fn cancel_job_run(&self, id: &str) {
        match self.store.cancel(id, Utc::now()).await {
            // Workers (in any process) see the event and stop the attempt.
            Ok(Some(canceled)) => publish_run(&self.bus, &canceled).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job_run_id = id, error = %e, "could not cancel a step's job run")
            }
        }
    }

    async fn publish(&self, run: &WorkflowRun, what: &str) {
        if what != "updated" {
            tracing::info!(run_id = %run.id, workflow = %run.workflow_slug, status = what, "workflow run {what}");
        }
        self.bus
            .publish(&format!("workflow.run.{what}"), json!({"run": run}))
            .await;
    }

    /// Cancels a pending or running run and its unfinished steps (409 once finished), on a
    /// task of its own: the steps' job runs are canceled even when the caller goes away.
    pub async fn cancel(&self, run_id: &str) -> ServiceResult<WorkflowRun> {
        let this = self.clone();
        let run_id = run_id.to_string();
        crate::detach::uncancellable(async move { this.cancel_here(&run_id).await }).await
    }

    async fn cancel_here(&self, run_id: &str) -> ServiceResult<WorkflowRun> {
        for _ in 0..MAX_RACES {
            let state = self.state(run_id).await?;
            if state.run.status.is_terminal() {
                return Err(ServiceError::Conflict(format!(
                    "workflow run {run_id} already ended as {}",
                    state.run.status
                )));
            }
            let now = Utc::now();
            let mut plan = Plan::default();
            let mut run = state.run.clone();
            for s in &state.steps {
                if s.status.is_terminal() {
                    continue;
                }
                let mut s = s.clone();
                if let Some(jr) = &s.job_run_id {
                    plan.cancel_job_runs.push(jr.clone());
                }
                finish_step(
                    &mut s,
                    StepRunStatus::Canceled,
                    Some("canceled by operator".into()),
                    now,
                );
                s.updated_at = now;
                plan.changes.steps.push(s);
            }
            let spec = steps_of(&state.definition)?;
            let mut steps = state.steps.clone();
            for s in &plan.changes.steps {
                if let Some(t) = steps.iter_mut().find(|t| t.id == s.id) {
                    *t = s.clone();
                }
            }
            run.status = WorkflowRunStatus::Canceled;
            run.error_message = Some("canceled by operator".into());
            run.completed_at = Some(now);
            run.duration_ms = run.started_at.map(|s| (now - s).num_milliseconds().max(0));
            run.context = context_of(&spec, &steps);
            run.metrics = metrics_of(&steps);
            run.updated_at = now;
            plan.changes.run = Some(run.clone());
            plan.status_changed = true;
            plan.steps_changed = !plan.changes.steps.is_empty();
            if self
                .store
                .apply_workflow_changes(run_id, state.revision, &plan.changes, now)
                .await?
            {
                self.after_apply(&run, plan, &mut LocalSlots::none()).await;
                return Ok(run);
            }
        }
        Err(ServiceError::Conflict(format!(
            "workflow run {run_id} is changing too fast; try again"
        )))
    }

    /// Resumes a failed or canceled run from the steps that did not succeed (same run id), on
    /// a task of its own.
    pub async fn resume(&self, run_id: &str) -> ServiceResult<WorkflowRun> {
        let this = self.clone();
        let run_id = run_id.to_string();
        crate::detach::uncancellable(async move { this.resume_here(&run_id).await }).await
    }

    async fn resume_here(&self, run_id: &str) -> ServiceResult<WorkflowRun> {
        for _ in 0..MAX_RACES {
            let state = self.state(run_id).await?;
            if !matches!(
                state.run.status,
                WorkflowRunStatus::Failed | WorkflowRunStatus::Canceled
            ) {
                return Err(ServiceError::Conflict(format!(
                    "workflow run {run_id} is {}; only failed or canceled runs can be retried",
                    state.run.status
                )));
            }
            let now = Utc::now();
            let mut changes = RunChanges::default();
            for s in &state.steps {
                if s.status == StepRunStatus::Succeeded {
                    continue;
                }
                let mut s = s.clone();
                s.status = StepRunStatus::Pending;
                s.job_run_id = None;
                s.error_message = None;
                s.output = None;
                s.completed_at = None;
                s.updated_at = now;
                changes.steps.push(s);
            }
            let mut run = state.run.clone();
            run.status = WorkflowRunStatus::Running;
            run.error_message = None;
            run.completed_at = None;
            run.duration_ms = None;
            run.updated_at = now;
            changes.run = Some(run);
            if self
                .store
                .apply_workflow_changes(run_id, state.revision, &changes, now)
                .await?
            {
                return Ok(self.reconcile_here(run_id).await?.unwrap_or(state.run));
            }
        }
        Err(ServiceError::Conflict(format!(
            "workflow run {run_id} is changing too fast; try again"
        )))
    }

    /// A new run of the same workflow version's current definition with the same parameters.
    pub async fn rerun(&self, run_id: &str) -> ServiceResult<WorkflowRun> {
        let state = self.state(run_id).await?;
        let workflow: WorkflowDefinition = serde_json::from_value(state.definition.clone())
            .map_err(|e| {
                ServiceError::Conflict(format!("the run's definition is unreadable: {e}"))
            })?;
        let trigger = json!({"type": "manual", "rerunOf": run_id});
        let (run, _) = self
            .start_with(
                &workflow,
                state.run.parameters.clone(),
                state.run.triggered_by.clone(),
                trigger,
                None,
            )
            .await?;
        Ok(run)
    }

    async fn state(&self, run_id: &str) -> ServiceResult<WorkflowRunState> {
        self.store
            .workflow_run_state(run_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("workflow run {run_id:?} not found")))
    }

    pub async fn get(&self, run_id: &str) -> ServiceResult<WorkflowRun> {
        Ok(self.state(run_id).await?.run)
    }

    pub async fn with_steps(&self, run_id: &str) -> ServiceResult<WorkflowRunWithSteps> {
        let state = self.state(run_id).await?;
        Ok(WorkflowRunWithSteps {
            run: state.run,
            steps: state.steps,
        })
    }

    pub async fn list(
        &self,
        filter: &WorkflowRunFilter,
    ) -> ServiceResult<(Vec<WorkflowRun>, u64, Option<String>)> {
        Ok(self.store.list_workflow_runs(filter).await?)
    }

    /// Reconciles every unfinished run (the recovery sweep).
    pub async fn sweep(&self) -> ServiceResult<()> {
        for id in self.store.active_workflow_run_ids(500).await? {
            self.reconcile_here(&id).await?;
        }
        Ok(())
    }
}

/// The steps of a stored definition (a wire `WorkflowDefinition` as JSON).
fn steps_of(definition: &Value) -> ServiceResult<Vec<StepSpec>> {
    serde_json::from_value(definition.get("steps").cloned().unwrap_or(Value::Null)).map_err(|e| {
        ServiceError::Conflict(format!(
            "the workflow definition's steps are unreadable: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        jr: &StepJobRun,
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
