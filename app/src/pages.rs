//! Operator pages: the job catalog and the run list, rendered on the server and kept live by
//! the event stream once hydrated.
use leptos::prelude::*;
use leptos_meta::Title;

use crate::{
    data::{job_summaries, recent_runs},
    live::use_live,
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
                                        <td><code>{s.job.slug.clone()}</code></td>
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
                                        <td><code>{r.id.clone()}</code></td>
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
