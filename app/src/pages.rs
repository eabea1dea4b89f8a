//! Operator pages: the job catalog and the run list, rendered on the server and kept live by
//! the event stream once hydrated.
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_params_map};

use crate::{
    data::{
        cancel_run, fetch_job_detail, get_run, job_summaries, launch, recent_runs, retry_run,
        run_log,
    },
    live::use_live,
    schema_form::SchemaForm,
    wire::{JobType, RunStatus},
};

/// A run status as a coloured badge (one colour per state everywhere).
#[component]
pub fn StatusBadge(status: RunStatus) -> impl IntoView {
    view! { <span class=format!("badge status-{}", status.as_str())>{status.as_str()}</span> }
}

/// The colour legend of run states.
#[component]
pub fn Legend() -> impl IntoView {
    view! {
        <p class="legend" aria-label="Status colours">
            {RunStatus::ALL.iter().map(|s| view! { <StatusBadge status=*s/> " " }).collect_view()}
        </p>
    }
}

/// `/jobs`: every job with its last run and success rate; search and type filter.
#[component]
pub fn JobsPage() -> impl IntoView {
    let live = use_live();
    let jobs = Resource::new(move || live.tick.get(), |_| job_summaries());
    let (query, set_query) = signal(String::new());
    let (kind, set_kind) = signal(String::new());
    view! {
        <Title text="Jobs · Switchyard"/>
        <h1>"Jobs"</h1>
        <form class="filters" role="search" on:submit=|ev| ev.prevent_default()>
            <label>"Search " <input id="job-search" type="search" placeholder="name or slug"
                on:input=move |ev| set_query.set(event_target_value(&ev))/></label>
            <label>"Type "
                <select id="job-type" on:change=move |ev| set_kind.set(event_target_value(&ev))>
                    <option value="">"all"</option>
                    {JobType::ALL.iter().map(|t| view! { <option value=t.as_str()>{t.as_str()}</option> }).collect_view()}
                </select>
            </label>
        </form>
        <Legend/>
        <Transition fallback=|| view! { <p>"Loading jobs…"</p> }>
            {move || Suspend::new(async move {
                match jobs.await {
                    Err(e) => view! { <p class="error">"Could not load jobs: " {e.to_string()}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="empty">"No jobs yet. Register one with "
                            <code>"POST /api/jobs"</code>" (see "<a href="/api/openapi.json">"the API"</a>")."</p>
                    }.into_any(),
                    Ok(list) => {
                        let rows = move || {
                            let q = query.get().to_lowercase();
                            let k = kind.get();
                            list.iter()
                                .filter(|s| q.is_empty() || s.job.slug.contains(&q) || s.job.name.to_lowercase().contains(&q))
                                .filter(|s| k.is_empty() || s.job.job_type.as_str() == k)
                                .map(|s| view! {
                                    <tr data-slug=s.job.slug.clone()>
                                        <td>{s.job.name.clone()}</td>
                                        <td><a href=format!("/jobs/{}", s.job.slug)><code>{s.job.slug.clone()}</code></a></td>
                                        <td>{s.job.job_type.as_str()}</td>
                                        <td><code>{s.job.entry_point.clone()}</code></td>
                                        <td>{s.job.version}</td>
                                        <td>{match s.last_run_status {
                                            Some(st) => view! { <StatusBadge status=st/> }.into_any(),
                                            None => view! { <span class="muted">"never run"</span> }.into_any(),
                                        }}</td>
                                        <td>{s.success_rate.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_else(|| "–".into())}
                                            " (" {s.run_count} " runs)"</td>
                                    </tr>
                                })
                                .collect_view()
                        };
                        view! {
                            <table id="jobs">
                                <thead><tr><th>"Name"</th><th>"Slug"</th><th>"Type"</th><th>"Entry point"</th>
                                    <th>"Version"</th><th>"Last run"</th><th>"Success rate"</th></tr></thead>
                                <tbody>{rows}</tbody>
                            </table>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

/// `/runs`: the newest job runs, filterable by status, live.
#[component]
pub fn RunsPage() -> impl IntoView {
    let live = use_live();
    let (status, set_status) = signal(String::new());
    let runs = Resource::new(
        move || (live.tick.get(), status.get()),
        |(_, s)| recent_runs(Some(s)),
    );
    view! {
        <Title text="Runs · Switchyard"/>
        <h1>"Runs"</h1>
        <form class="filters" on:submit=|ev| ev.prevent_default()>
            <label>"Status "
                <select id="run-status" on:change=move |ev| set_status.set(event_target_value(&ev))>
                    <option value="">"all"</option>
                    {RunStatus::ALL.iter().map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
                </select>
            </label>
        </form>
        <Legend/>
        <Transition fallback=|| view! { <p>"Loading runs…"</p> }>
            {move || Suspend::new(async move {
                match runs.await {
                    Err(e) => view! { <p class="error">"Could not load runs: " {e.to_string()}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No runs yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table id="runs">
                            <thead><tr><th>"Run"</th><th>"Job"</th><th>"Status"</th><th>"Attempt"</th>
                                <th>"Created"</th><th>"Duration"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|r| view! {
                                    <tr data-run-id=r.id.clone()>
                                        <td><a href=format!("/runs/jobs/{}", r.id)><code>{r.id.clone()}</code></a></td>
                                        <td>{r.job_slug.clone()}</td>
                                        <td><StatusBadge status=r.status/></td>
                                        <td>{r.attempt} "/" {r.max_attempts}</td>
                                        <td><time datetime=r.created_at.to_rfc3339() title=r.created_at.to_rfc3339()>
                                            {r.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()}</time></td>
                                        <td>{r.duration_ms.map(|d| format!("{d} ms")).unwrap_or_else(|| "–".into())}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

fn pretty(v: &Option<serde_json::Value>) -> String {
    match v {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => "null".into(),
    }
}

/// `/runs/jobs/:id`: one run: status, attempts, timings, parameters, result, error and the
/// log, which follows the run while it is going; Cancel and Retry where they apply.
#[component]
pub fn RunPage() -> impl IntoView {
    let live = use_live();
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    // While the page is open, poll the log once a second (log lines are not events).
    let (poll, set_poll) = signal(0u64);
    Effect::new(move |_| {
        set_interval(
            move || set_poll.update(|n| *n += 1),
            std::time::Duration::from_secs(1),
        );
    });
    let run = Resource::new(move || (live.tick.get(), id()), |(_, id)| get_run(id));
    let log = Resource::new(
        move || (live.tick.get(), poll.get(), id()),
        |(_, _, id)| run_log(id),
    );
    let cancel = Action::new(|id: &String| cancel_run(id.clone()));
    let retry = Action::new(|id: &String| retry_run(id.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(new_run)) = retry.value().get() {
            navigate(&format!("/runs/jobs/{}", new_run.id), Default::default());
        }
    });
    view! {
        <Title text="Run · Switchyard"/>
        <Transition fallback=|| view! { <p>"Loading run…"</p> }>
            {move || Suspend::new(async move {
                match run.await {
                    Err(e) => view! { <h1>"Run not found"</h1><p class="error">{e.to_string()}</p> }.into_any(),
                    Ok(r) => {
                        let rid = r.id.clone();
                        let rid2 = r.id.clone();
                        let active = !r.status.is_terminal();
                        view! {
                            <h1>"Run of " <a href="/jobs">{r.job_slug.clone()}</a></h1>
                            <p>"Status: " <span id="run-status"><StatusBadge status=r.status/></span>
                                " · attempt " <span id="run-attempt">{r.attempt}</span> " of " {r.max_attempts}
                                " · trigger " {r.trigger.as_str()}</p>
                            <p class="actions">
                                <button id="cancel-run" disabled=!active
                                    title=if active { "Cancel this run" } else { "The run has ended" }
                                    on:click=move |_| { cancel.dispatch(rid.clone()); }>"Cancel"</button>
                                " "
                                <button id="retry-run" disabled=active
                                    title=if active { "Retry is possible once the run has ended" } else { "Start a new run with the same parameters" }
                                    on:click=move |_| { retry.dispatch(rid2.clone()); }>"Retry"</button>
                            </p>
                            <dl>
                                <dt>"Run id"</dt><dd><code>{r.id.clone()}</code></dd>
                                <dt>"Created"</dt><dd>{r.created_at.to_rfc3339()}</dd>
                                <dt>"Started"</dt><dd>{r.started_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "–".into())}</dd>
                                <dt>"Completed"</dt><dd>{r.completed_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "–".into())}</dd>
                                <dt>"Duration"</dt><dd>{r.duration_ms.map(|d| format!("{d} ms")).unwrap_or_else(|| "–".into())}</dd>
                                <dt>"Timeout"</dt><dd>{r.timeout_ms} " ms"</dd>
                            </dl>
                            {r.error_message.clone().map(|e| view! { <p id="run-error" class="error" role="alert">"Error: " {e}</p> })}
                            <h2>"Parameters"</h2>
                            <pre id="run-parameters">{pretty(&Some(r.parameters.clone()))}</pre>
                            <h2>"Result"</h2>
                            <pre id="run-result">{pretty(&r.result)}</pre>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        <h2>"Log"</h2>
        <Transition fallback=|| view! { <p>"Loading log…"</p> }>
            <pre id="run-log">{move || Suspend::new(async move { log.await.unwrap_or_default() })}</pre>
        </Transition>
    }
}

/// `/jobs/:slug`: the definition, its versions, recent runs and the launch form generated from
/// the parameters schema.
#[component]
pub fn JobPage() -> impl IntoView {
    let live = use_live();
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let detail = Resource::new(
        move || (live.tick.get(), slug()),
        |(_, s)| fetch_job_detail(s),
    );
    let (server_problems, set_server_problems) =
        signal(std::collections::BTreeMap::<String, String>::new());
    let (form_error, set_form_error) = signal(None::<String>);
    let start = Action::new(|(slug, doc): &(String, String)| launch(slug.clone(), doc.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| match start.value().get() {
        Some(Ok(outcome)) => match outcome.run {
            Some(run) => navigate(&format!("/runs/jobs/{}", run.id), Default::default()),
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
    // The form is built once per job (not on every live refresh, which would reset typing).
    let form_job = Resource::new(slug, fetch_job_detail);
    view! {
        <Title text="Job · Switchyard"/>
        <Transition fallback=|| view! { <p>"Loading job…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <h1>"Job not found"</h1><p class="error">{e.to_string()}</p> }.into_any(),
                    Ok(d) => {
                        let j = d.job.clone();
                        view! {
                            <h1>{j.name.clone()} " " <small><code>{j.slug.clone()}</code></small></h1>
                            <dl>
                                <dt>"Type"</dt><dd>{j.job_type.as_str()}</dd>
                                <dt>"Entry point"</dt><dd><code>{j.entry_point.clone()}</code></dd>
                                <dt>"Version"</dt><dd>{j.version}</dd>
                                <dt>"Timeout"</dt><dd>{j.timeout_ms} " ms"</dd>
                                <dt>"Retry policy"</dt><dd>{format!("{} attempt(s), {} backoff from {} ms up to {} ms, jitter {}",
                                    j.retry_policy.max_attempts, j.retry_policy.strategy, j.retry_policy.initial_delay_ms,
                                    j.retry_policy.max_delay_ms, j.retry_policy.jitter)}</dd>
                            </dl>
                            <h2>"Parameters schema"</h2>
                            <pre id="job-schema">{serde_json::to_string_pretty(&j.parameters_schema).unwrap_or_default()}</pre>
                            <h2>"Versions"</h2>
                            <ul id="job-versions">
                                {d.versions.iter().map(|v| view! { <li>"v" {v.version} " · " {v.created_at.to_rfc3339()}</li> }).collect_view()}
                            </ul>
                            <h2>"Recent runs"</h2>
                            <ul id="job-runs">
                                {d.runs.iter().map(|r| view! {
                                    <li><a href=format!("/runs/jobs/{}", r.id)><code>{r.id.clone()}</code></a> " " <StatusBadge status=r.status/></li>
                                }).collect_view()}
                            </ul>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        <h2>"Run"</h2>
        <Transition fallback=|| view! { <p>"Loading form…"</p> }>
            {move || Suspend::new(async move {
                match form_job.await {
                    Err(_) => ().into_any(),
                    Ok(d) => {
                        let job_slug = d.job.slug.clone();
                        let submit = Callback::new(move |doc: serde_json::Value| {
                            set_form_error.set(None);
                            start.dispatch((job_slug.clone(), doc.to_string()));
                        });
                        view! {
                            {move || form_error.get().map(|e| view! { <p class="error" role="alert" id="launch-error">{e}</p> })}
                            <SchemaForm schema=d.job.parameters_schema.clone() defaults=d.job.default_parameters.clone()
                                server_problems=server_problems on_submit=submit/>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}
