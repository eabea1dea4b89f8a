//! Operator pages of workflows: `/workflows/:slug` (definition, graph, versions, run history,
//! launch form) and `/runs/workflows/:id` (one run: its graph coloured by step status, the
//! step timeline, every step's input, output and error, and Cancel / Retry / Rerun), live.
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_params_map};
use serde_json::Value;

use crate::{
    dag::{DagNode, DagSvg, Gantt, GanttBar},
    data::{
        cancel_workflow_run, fetch_workflow_detail, fetch_workflow_run, fetch_workflow_runs,
        launch_workflow, rerun_workflow_run, retry_workflow_run,
    },
    format::{Duration, MaybeWhen, When},
    live::use_live,
    pages::short_id,
    schema_form::SchemaForm,
};
use wire::{
    StepAttempt, StepRunStatus, WorkflowRun, WorkflowRunStatus, WorkflowRunStep,
    WorkflowRunWithSteps,
};

/// A workflow run's status as a coloured badge (same colours as job runs).
#[component]
pub fn WorkflowStatusBadge(status: WorkflowRunStatus) -> impl IntoView {
    view! { <span class=format!("badge status-{}", status.as_str())>{status.as_str()}</span> }
}

/// A step's status as a coloured badge.
#[component]
pub fn StepStatusBadge(status: StepRunStatus) -> impl IntoView {
    view! { <span class=format!("badge status-{}", status.as_str())>{status.as_str()}</span> }
}

/// The graph's nodes from a definition's `steps` document: id, name (or id) as the label,
/// dependencies, and the status each step has in `statuses` (none outside a run).
pub fn dag_nodes(steps: &Value, statuses: &[WorkflowRunStep]) -> Vec<DagNode> {
    steps
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| {
            let id = s["id"].as_str()?.to_string();
            let label = s["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(&id)
                .to_string();
            let depends_on = s["dependsOn"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let status = statuses
                .iter()
                .find(|st| st.step_id == id)
                .map(|st| st.status.as_str().to_string());
            Some(DagNode {
                id,
                label,
                depends_on,
                status,
            })
        })
        .collect()
}

/// The attempts a step recorded in `metrics.attempts`.
pub fn step_attempts(step: &WorkflowRunStep) -> Vec<StepAttempt> {
    step.metrics
        .as_ref()
        .and_then(|m| m.get("attempts"))
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default()
}

/// One timeline bar per attempt that started; a step without recorded attempts gets one bar
/// from its own start and end.
pub fn gantt_bars(steps: &[WorkflowRunStep]) -> Vec<GanttBar> {
    let mut bars = Vec::new();
    for s in steps {
        let attempts = step_attempts(s);
        if attempts.is_empty() {
            if let Some(start) = s.started_at {
                bars.push(GanttBar {
                    row: s.step_id.clone(),
                    label: s.step_id.clone(),
                    status: s.status.as_str().to_string(),
                    start,
                    end: s.completed_at,
                });
            }
            continue;
        }
        for a in attempts {
            if let Some(start) = a.started_at {
                bars.push(GanttBar {
                    row: s.step_id.clone(),
                    label: format!("{} attempt {}", s.step_id, a.attempt),
                    status: a.status.as_str().to_string(),
                    start,
                    end: a.completed_at,
                });
            }
        }
    }
    bars
}

fn pretty(v: &Option<Value>) -> String {
    match v {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => "null".into(),
    }
}

fn trigger_text(run: &WorkflowRun) -> String {
    run.trigger["type"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| "manual".into())
}

/// A table of workflow runs, newest first.
#[component]
pub fn WorkflowRunTable(
    runs: Vec<WorkflowRun>,
    table_id: &'static str,
    #[prop(optional)] show_workflow: bool,
) -> impl IntoView {
    if runs.is_empty() {
        return view! { <p class="empty" id=table_id>"No workflow runs yet."</p> }.into_any();
    }
    view! {
        <table id=table_id>
            <caption class="visually-hidden">"Workflow runs, newest first"</caption>
            <thead><tr><th scope="col">"Run"</th>
                {show_workflow.then(|| view! { <th scope="col">"Workflow"</th> })}
                <th scope="col">"Status"</th><th scope="col">"Trigger"</th>
                <th scope="col">"Started"</th><th scope="col">"Duration"</th></tr></thead>
            <tbody>
                {runs.into_iter().map(|r| view! {
                    <tr data-run-id=r.id.clone()>
                        <td class="run-id"><a href=format!("/runs/workflows/{}", r.id) title=r.id.clone()><code>{short_id(&r.id)}</code></a></td>
                        {show_workflow.then(|| view! { <td><a href=format!("/workflows/{}", r.workflow_slug)>{r.workflow_slug.clone()}</a></td> })}
                        <td><WorkflowStatusBadge status=r.status/></td>
                        <td>{trigger_text(&r)}</td>
                        <td><MaybeWhen t=r.started_at/></td>
                        <td><Duration ms=r.duration_ms/></td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

/// The newest runs of every workflow, live (a section of `/workflows`).
#[component]
pub fn RecentWorkflowRuns() -> impl IntoView {
    let live = use_live();
    let runs = Resource::new(move || live.tick.get(), |_| fetch_workflow_runs());
    view! {
        <h2 id="workflow-runs-title">"Workflow runs"</h2>
        <Transition fallback=|| view! { <p>"Loading workflow runs…"</p> }>
            {move || Suspend::new(async move {
                match runs.await {
                    Err(e) => view! { <p class="error" role="alert">"Could not load workflow runs: " {e.to_string()}</p> }.into_any(),
                    Ok(list) => view! { <WorkflowRunTable runs=list table_id="all-workflow-runs" show_workflow=true/> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// `/workflows/:slug`: the definition, its graph (coloured by the latest run), versions, run
/// history and the launch form generated from the parameters schema.
#[component]
pub fn WorkflowPage() -> impl IntoView {
    let live = use_live();
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let detail = Resource::new(
        move || (live.tick.get(), slug()),
        |(_, s)| fetch_workflow_detail(s),
    );
    let (server_problems, set_server_problems) =
        signal(std::collections::BTreeMap::<String, String>::new());
    let (form_error, set_form_error) = signal(None::<String>);
    let start =
        Action::new(|(slug, doc): &(String, String)| launch_workflow(slug.clone(), doc.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| match start.value().get() {
        Some(Ok(outcome)) => match outcome.run {
            Some(run) => navigate(&format!("/runs/workflows/{}", run.id), Default::default()),
            None => {
                let mut by_field = std::collections::BTreeMap::new();
                let mut other = Vec::new();
                for p in outcome.problems {
                    match p.path.strip_prefix("/parameters") {
                        Some(rest) if !rest.is_empty() => {
                            by_field.insert(rest.to_string(), p.message);
                        }
                        _ => other.push(p.message),
                    }
                }
                set_server_problems.set(by_field);
                set_form_error.set((!other.is_empty()).then(|| other.join("; ")));
            }
        },
        Some(Err(e)) => set_form_error.set(Some(e.to_string())),
        None => {}
    });
    // The form is built once per workflow (not on every live refresh, which would reset typing).
    let form_workflow = Resource::new(slug, fetch_workflow_detail);
    view! {
        <Title text=move || format!("{} · Workflows · Switchyard", slug())/>
        <Transition fallback=|| view! { <p>"Loading workflow…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => crate::data::failure_view("Workflow", &e).into_any(),
                    Ok(d) => {
                        let w = d.workflow.clone();
                        let nodes = dag_nodes(&w.steps, d.latest_steps.as_deref().unwrap_or_default());
                        view! {
                            <h1>{w.name.clone()} " " <small><code>{w.slug.clone()}</code></small></h1>
                            <dl>
                                <dt>"Slug"</dt><dd><code id="workflow-slug">{w.slug.clone()}</code></dd>
                                <dt>"Version"</dt><dd id="workflow-version">{w.version}</dd>
                                <dt>"Description"</dt><dd id="workflow-description">{w.description.clone().unwrap_or_else(|| "–".into())}</dd>
                                <dt>"Updated"</dt><dd><When t=w.updated_at/></dd>
                            </dl>
                            <h2>"Steps"</h2>
                            <p class="muted">{if d.latest_steps.is_some() { "Coloured by the latest run." } else { "Not run yet." }}</p>
                            <div class="dag-wrap"><DagSvg nodes/></div>
                            <h2>"Versions"</h2>
                            <ul id="workflow-versions">
                                {d.versions.iter().map(|v| view! { <li>"v" {v.version} " · " <When t=v.created_at/></li> }).collect_view()}
                            </ul>
                            <h2 id="history-title">"Run history"</h2>
                            <WorkflowRunTable runs=d.runs.clone() table_id="workflow-runs"/>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        <h2>"Run"</h2>
        <Transition fallback=|| view! { <p>"Loading form…"</p> }>
            {move || Suspend::new(async move {
                let denied = crate::auth_pages::current_viewer().await.denied("workflows:run");
                match form_workflow.await {
                    Err(_) => ().into_any(),
                    Ok(d) => {
                        let wf_slug = d.workflow.slug.clone();
                        let submit = Callback::new(move |doc: Value| {
                            set_form_error.set(None);
                            start.dispatch((wf_slug.clone(), doc.to_string()));
                        });
                        view! {
                            {move || form_error.get().map(|e| view! { <p class="error" role="alert" id="launch-error">{e}</p> })}
                            <SchemaForm schema=d.workflow.parameters_schema.clone() defaults=d.workflow.default_parameters.clone()
                                server_problems=server_problems on_submit=submit denied=denied.clone()/>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

/// `/runs/workflows/:id`: one workflow run, live: status, parameters, error, the graph coloured
/// by step status, the step timeline (one bar per attempt), every step's details, and the
/// Cancel run / Retry failed steps / Rerun actions.
#[component]
pub fn WorkflowRunPage() -> impl IntoView {
    let live = use_live();
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let (changes, set_changes) = run_changes(live, params);
    let run = Resource::new(
        move || (changes.get(), id()),
        |(_, id)| fetch_workflow_run(id),
    );
    // The definition of the run's version (for the graph's edges), fetched once per run.
    let definition = Resource::new(id, |id| async move {
        let r = fetch_workflow_run(id).await?;
        let d = fetch_workflow_detail(r.run.workflow_slug.clone()).await?;
        let steps = d
            .versions
            .iter()
            .find(|v| v.version == r.run.workflow_version)
            .map(|v| v.definition.steps.clone())
            .unwrap_or(d.workflow.steps);
        Ok::<Value, ServerFnError>(steps)
    });
    let actions = RunActions {
        cancel: Action::new(|id: &String| cancel_workflow_run(id.clone())),
        retry: Action::new(|id: &String| retry_workflow_run(id.clone())),
        rerun: Action::new(|id: &String| rerun_workflow_run(id.clone())),
    };
    let (action_error, set_action_error) = signal(None::<String>);
    follow_run_actions(actions, set_action_error, set_changes);
    view! {
        <Title text=move || format!("Workflow run {} · Switchyard", id())/>
        <Transition fallback=|| view! { <p>"Loading workflow run…"</p> }>
            {move || Suspend::new(async move {
                let steps_def = definition.await.unwrap_or(Value::Null);
                let denied = crate::auth_pages::current_viewer().await.denied("workflows:run");
                match run.await {
                    Err(e) => crate::data::failure_view("Workflow run", &e).into_any(),
                    Ok(data) => workflow_run_view(data, &steps_def, denied, actions, action_error).into_any(),
                }
            })}
        </Transition>
    }
}

/// A counter the run page refetches on: bumped when an event about the run `params` names
/// arrives, once the live connection is up, and every 5 s.
fn run_changes(
    live: crate::live::Live,
    params: Memo<leptos_router::params::ParamsMap>,
) -> (ReadSignal<u64>, WriteSignal<u64>) {
    let (changes, set_changes) = signal(0u64);
    // Refetch when an event about this run arrives (or after an action of this page).
    Effect::new(move |_| {
        if let Some((_, run_id)) = live.workflow_run.get()
            && run_id == params.read_untracked().get("id").unwrap_or_default()
        {
            set_changes.update(|n| *n += 1);
        }
    });
    // Events published between the server render and the connection are not replayed, so
    // refetch once connected; and every 5 s as a safety net (like the other live pages).
    Effect::new(move |_| {
        if live.status.get() == "connected" {
            set_changes.update(|n| *n += 1);
        }
    });
    Effect::new(move |_| {
        if let Ok(handle) = set_interval_with_handle(
            move || set_changes.update(|n| *n += 1),
            std::time::Duration::from_secs(5),
        ) {
            on_cleanup(move || handle.clear());
        }
    });
    (changes, set_changes)
}

/// The run page's actions, each given the run's id.
#[derive(Clone, Copy)]
struct RunActions {
    cancel: Action<String, Result<WorkflowRun, ServerFnError>>,
    retry: Action<String, Result<WorkflowRun, ServerFnError>>,
    rerun: Action<String, Result<WorkflowRun, ServerFnError>>,
}

/// What the actions' outcomes do: an error is shown, a cancel or retry refetches the run, a
/// rerun opens the new run.
fn follow_run_actions(
    actions: RunActions,
    set_action_error: WriteSignal<Option<String>>,
    set_changes: WriteSignal<u64>,
) {
    let RunActions {
        cancel,
        retry,
        rerun,
    } = actions;
    Effect::new(move |_| {
        for result in [cancel.value().get(), retry.value().get()]
            .into_iter()
            .flatten()
        {
            match result {
                Ok(_) => set_action_error.set(None),
                Err(e) => set_action_error.set(Some(e.to_string())),
            }
            set_changes.update(|n| *n += 1);
        }
    });
    let navigate = use_navigate();
    Effect::new(move |_| match rerun.value().get() {
        Some(Ok(new_run)) => navigate(
            &format!("/runs/workflows/{}", new_run.id),
            Default::default(),
        ),
        Some(Err(e)) => set_action_error.set(Some(e.to_string())),
        None => {}
    });
}

/// The run page's content: heading, actions, facts, graph, timeline and step details.
fn workflow_run_view(
    data: WorkflowRunWithSteps,
    steps_def: &Value,
    denied: Option<String>,
    actions: RunActions,
    action_error: ReadSignal<Option<String>>,
) -> impl IntoView + use<> {
    let WorkflowRunWithSteps { run: r, steps } = data;
    let nodes = dag_nodes(steps_def, &steps);
    let bars = gantt_bars(&steps);
    // The same `now` on server and client: the run's last change.
    let now = r.completed_at.unwrap_or(r.updated_at);
    view! {
        {workflow_run_heading(&r)}
        {workflow_run_actions(&r, denied, actions)}
        {move || action_error.get().map(|e| view! { <p class="error" role="alert" id="action-error">{e}</p> })}
        {workflow_run_facts(&r)}
        <h2>"Steps"</h2>
        <div class="dag-wrap"><DagSvg nodes/></div>
        <h2>"Timeline"</h2>
        <div class="gantt-wrap"><Gantt bars now/></div>
        <h2>"Step details"</h2>
        {run_steps_table(steps)}
    }
}

/// The run's title (workflow and version), status and trigger.
fn workflow_run_heading(r: &WorkflowRun) -> impl IntoView + use<> {
    view! {
        <h1 id="workflow-run-title">"Run of " <a href=format!("/workflows/{}", r.workflow_slug)>{r.workflow_slug.clone()}</a>
            " " <small>"v" {r.workflow_version}</small></h1>
        <p>"Status: " <span id="workflow-run-status" data-status=r.status.as_str()><WorkflowStatusBadge status=r.status/></span>
            " · trigger " {trigger_text(r)}</p>
    }
}

/// The Cancel run / Retry failed steps / Rerun buttons, disabled (with the reason as their
/// title) when the run's state or the viewer (`denied`) does not allow them.
fn workflow_run_actions(
    r: &WorkflowRun,
    denied: Option<String>,
    actions: RunActions,
) -> impl IntoView + use<> {
    let (c_id, rt_id, rr_id) = (r.id.clone(), r.id.clone(), r.id.clone());
    let active = !r.status.is_terminal();
    let resumable = matches!(
        r.status,
        WorkflowRunStatus::Failed | WorkflowRunStatus::Canceled
    );
    view! {
        <p class="actions">
            <button id="cancel-workflow-run" disabled=!active || denied.is_some()
                title=denied.clone().unwrap_or_else(|| if active { "Cancel this run and its unfinished steps" } else { "The run has ended" }.into())
                on:click=move |_| { actions.cancel.dispatch(c_id.clone()); }>"Cancel run"</button>
            " "
            <button id="retry-workflow-run" disabled=!resumable || denied.is_some()
                title=denied.clone().unwrap_or_else(|| if resumable { "Resume this run: its failed and canceled steps run again" } else { "Only a failed or canceled run can be resumed" }.into())
                on:click=move |_| { actions.retry.dispatch(rt_id.clone()); }>"Retry failed steps"</button>
            " "
            <button id="rerun-workflow-run" disabled=denied.is_some()
                title=denied.clone().unwrap_or_else(|| "Start a new run of this workflow with the same parameters".into())
                on:click=move |_| { actions.rerun.dispatch(rr_id.clone()); }>"Rerun"</button>
        </p>
    }
}

/// The run's id, times and duration, its error if any, and its parameters.
fn workflow_run_facts(r: &WorkflowRun) -> impl IntoView + use<> {
    view! {
        <dl>
            <dt>"Run id"</dt><dd><code>{r.id.clone()}</code></dd>
            <dt>"Created"</dt><dd><When t=r.created_at/></dd>
            <dt>"Started"</dt><dd><MaybeWhen t=r.started_at/></dd>
            <dt>"Completed"</dt><dd><MaybeWhen t=r.completed_at/></dd>
            <dt>"Duration"</dt><dd><Duration ms=r.duration_ms/></dd>
            <dt>"Engine"</dt><dd id="workflow-run-provider">{r.provider.clone()}</dd>
            {r.execution_id.clone().map(|x| {
                let shown = match r.execution_url.clone() {
                    Some(url) => view! { <a id="workflow-run-execution" href=url rel="noopener noreferrer">{x}</a> }.into_any(),
                    None => view! { <code id="workflow-run-execution">{x}</code> }.into_any(),
                };
                view! { <dt>"Execution"</dt><dd>{shown}</dd> }
            })}
        </dl>
        {r.error_message.clone().map(|e| view! { <p id="workflow-run-error" class="error" role="alert">"Error: " {e}</p> })}
        <h2>"Parameters"</h2>
        <pre id="workflow-run-parameters">{pretty(&Some(r.parameters.clone()))}</pre>
    }
}

/// Every step of the run: status, attempt, input, output, error and its job run.
fn run_steps_table(steps: Vec<WorkflowRunStep>) -> impl IntoView {
    view! {
        <table id="steps">
            <caption class="visually-hidden">"Steps of this run"</caption>
            <thead><tr><th scope="col">"Step"</th><th scope="col">"Status"</th><th scope="col">"Attempt"</th>
                <th scope="col">"Input"</th><th scope="col">"Output"</th><th scope="col">"Error"</th>
                <th scope="col">"Job run"</th></tr></thead>
            <tbody>
                {steps.into_iter().map(|s| {
                    let job_links = s.job_run_id.clone().map(|jid| {
                        let log = s.logs_url.clone().unwrap_or_else(|| format!("/api/job-runs/{jid}/logs"));
                        view! {
                            <a class="step-job-run" href=format!("/runs/jobs/{jid}") title=jid.clone()><code>{short_id(&jid)}</code></a>
                            " · " <a class="step-log" href=log>"log"</a>
                        }
                    });
                    view! {
                        <tr data-step=s.step_id.clone() data-status=s.status.as_str()>
                            <td><code>{s.step_id.clone()}</code></td>
                            <td><StepStatusBadge status=s.status/></td>
                            <td>{s.attempt}</td>
                            <td><pre class="step-input">{pretty(&s.input)}</pre></td>
                            <td><pre class="step-output">{pretty(&s.output)}</pre></td>
                            <td class="error-cell step-error">{s.error_message.clone().unwrap_or_default()}</td>
                            <td>{job_links}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(id: &str, status: StepRunStatus, metrics: Option<Value>) -> WorkflowRunStep {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        WorkflowRunStep {
            id: format!("row-{id}"),
            workflow_run_id: "run".into(),
            step_id: id.into(),
            status,
            attempt: 1,
            job_run_id: None,
            input: None,
            output: None,
            error_message: None,
            logs_url: None,
            metrics,
            started_at: Some(t),
            completed_at: Some(t + chrono::TimeDelta::seconds(1)),
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn nodes_come_from_the_definition_with_run_statuses() {
        let steps = json!([
            {"id": "a", "name": null, "dependsOn": []},
            {"id": "b", "name": "Build it", "dependsOn": ["a"]}
        ]);
        let nodes = dag_nodes(&steps, &[step("b", StepRunStatus::Failed, None)]);
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].label, "a");
        assert_eq!(nodes[0].status, None);
        assert_eq!(nodes[1].label, "Build it");
        assert_eq!(nodes[1].depends_on, vec!["a".to_string()]);
        assert_eq!(nodes[1].status.as_deref(), Some("failed"));
    }

    #[test]
    fn one_bar_per_attempt_or_the_step_itself() {
        let metrics = json!({"attempts": [
            {"attempt": 1, "jobRunId": "j1", "status": "failed", "startedAt": "2026-11-23T12:00:00Z",
             "completedAt": "2026-11-23T12:00:01Z", "errorMessage": "boom"},
            {"attempt": 2, "jobRunId": "j2", "status": "running", "startedAt": "2026-11-23T12:00:02Z",
             "completedAt": null, "errorMessage": null}
        ]});
        let bars = gantt_bars(&[
            step("a", StepRunStatus::Running, Some(metrics)),
            step("b", StepRunStatus::Succeeded, None),
        ]);
        assert_eq!(bars.len(), 3);
        assert_eq!(bars[0].status, "failed");
        assert_eq!(bars[1].end, None);
        assert_eq!(bars[2].row, "b");
    }
}
