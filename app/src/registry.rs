//! `/services` (the service registry with live health), `/services/:slug` (one service, its
//! headers' names and the workflows that call it) and `/workflows` (the workflow catalog with
//! each workflow's last run and success rate).
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

use crate::{
    data::{fetch_service_detail, fetch_services, fetch_workflow_summaries},
    format::{MaybeWhen, When},
    live::use_live,
    workflow_pages::WorkflowStatusBadge,
};
use wire::{ServiceStatus, WorkflowSummary};

/// A service's health as a coloured badge: healthy green, degraded orange, unhealthy red,
/// unknown grey.
#[component]
pub fn HealthBadge(status: ServiceStatus) -> impl IntoView {
    view! { <span class=format!("badge health-{}", status.as_str())>{status.as_str()}</span> }
}

/// `/services`: every registered service, its health and last check, live.
#[component]
pub fn ServicesPage() -> impl IntoView {
    let live = use_live();
    let services = Resource::new(move || live.tick.get(), |_| fetch_services());
    view! {
        <Title text="Services · Switchyard"/>
        <h1>"Services"</h1>
        <p class="legend" aria-label="Health colours">
            {ServiceStatus::ALL.iter().map(|s| view! { <HealthBadge status=*s/> " " }).collect_view()}
        </p>
        <Transition fallback=|| view! { <p>"Loading services…"</p> }>
            {move || Suspend::new(async move {
                match services.await {
                    Err(e) => view! { <p class="error" role="alert">"Could not load services: " {e.to_string()}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="empty">"No services yet. Register one with "<code>"POST /api/services"</code>
                            " (slug, displayName, kind, baseUrl, healthPath); workflows call them in service steps."</p>
                    }.into_any(),
                    Ok(list) => view! {
                        <table id="services">
                            <caption class="visually-hidden">"Registered services and their health"</caption>
                            <thead><tr><th scope="col">"Name"</th><th scope="col">"Slug"</th><th scope="col">"Kind"</th>
                                <th scope="col">"Base URL"</th><th scope="col">"Health"</th><th scope="col">"Last check"</th>
                                <th scope="col">"Last error"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|s| view! {
                                    <tr data-slug=s.slug.clone()>
                                        <td>{s.display_name.clone()}</td>
                                        <td><a href=format!("/services/{}", s.slug)><code>{s.slug.clone()}</code></a></td>
                                        <td>{s.kind.clone()}</td>
                                        <td><code>{s.base_url.clone()}</code>{s.health_path.clone().map(|p| view! { " " <small>"health: " <code>{p}</code></small> })}</td>
                                        <td><HealthBadge status=s.status/></td>
                                        <td><MaybeWhen t=s.last_checked_at/></td>
                                        <td class="error-cell">{s.last_error.clone().unwrap_or_default()}</td>
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

/// `/services/:slug`: one service with its health, headers (names only: values may be
/// secrets), metadata and the workflows whose steps call it, live.
#[component]
pub fn ServicePage() -> impl IntoView {
    let live = use_live();
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let detail = Resource::new(
        move || (live.tick.get(), slug()),
        |(_, slug)| fetch_service_detail(slug),
    );
    view! {
        <Title text=move || format!("{} · Services · Switchyard", slug())/>
        <p><a href="/services">"← Services"</a></p>
        <Transition fallback=|| view! { <p>"Loading service…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! {
                        <h1>{slug()}</h1>
                        <p class="error" role="alert">"Could not load the service: " {e.to_string()}</p>
                    }.into_any(),
                    Ok(d) => {
                        let s = d.service;
                        let headers: Vec<String> = s.headers.as_object()
                            .map(|h| h.keys().cloned().collect()).unwrap_or_default();
                        let metadata = serde_json::to_string_pretty(&s.metadata).unwrap_or_default();
                        view! {
                            <h1 id="service-name">{s.display_name.clone()}</h1>
                            <dl id="service" class="facts">
                                <dt>"Slug"</dt><dd><code>{s.slug.clone()}</code></dd>
                                <dt>"Kind"</dt><dd>{s.kind.clone()}</dd>
                                <dt>"Base URL"</dt><dd><code>{s.base_url.clone()}</code></dd>
                                <dt>"Health path"</dt><dd>{match s.health_path.clone() {
                                    Some(p) => view! { <code>{p}</code> }.into_any(),
                                    None => view! { <span class="muted">"not polled"</span> }.into_any(),
                                }}</dd>
                                <dt>"Health"</dt><dd><HealthBadge status=s.status/></dd>
                                <dt>"Last check"</dt><dd><MaybeWhen t=s.last_checked_at/></dd>
                                <dt>"Last error"</dt><dd class="error-cell">{s.last_error.clone().unwrap_or_else(|| "–".into())}</dd>
                            </dl>
                            <h2>"Headers"</h2>
                            {if headers.is_empty() {
                                view! { <p class="empty">"No headers."</p> }.into_any()
                            } else {
                                view! {
                                    <table id="service-headers">
                                        <caption class="visually-hidden">"Headers sent with every request (values hidden)"</caption>
                                        <thead><tr><th scope="col">"Name"</th><th scope="col">"Value"</th></tr></thead>
                                        <tbody>{headers.into_iter().map(|h| view! {
                                            <tr><td><code>{h}</code></td><td aria-label="hidden">"••••"</td></tr>
                                        }).collect_view()}</tbody>
                                    </table>
                                }.into_any()
                            }}
                            <h2>"Metadata"</h2>
                            <pre id="service-metadata">{metadata}</pre>
                            <h2>"Used by workflows"</h2>
                            {if d.workflows.is_empty() {
                                view! { <p class="empty">"No workflow calls this service."</p> }.into_any()
                            } else {
                                view! {
                                    <ul id="service-workflows">{d.workflows.into_iter().map(|w| view! {
                                        <li data-slug=w.slug.clone()><a href=format!("/workflows/{}", w.slug)>{w.name.clone()}</a>
                                            " " <code>{w.slug.clone()}</code></li>
                                    }).collect_view()}</ul>
                                }.into_any()
                            }}
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}

/// A success rate as a whole percentage; an em dash when no run has finished.
pub fn success_rate_text(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.0}%", r * 100.0))
        .unwrap_or_else(|| "—".into())
}

/// Whether a catalog row matches the search (slug or name, case-insensitive).
fn matches(w: &WorkflowSummary, q: &str) -> bool {
    q.is_empty()
        || w.workflow.slug.to_lowercase().contains(q)
        || w.workflow.name.to_lowercase().contains(q)
}

/// `/workflows`: every workflow definition with its steps, last run and success rate, a
/// search box, and the latest workflow runs, live.
#[component]
pub fn WorkflowsPage() -> impl IntoView {
    let live = use_live();
    let workflows = Resource::new(move || live.tick.get(), |_| fetch_workflow_summaries());
    let (query, set_query) = signal(String::new());
    view! {
        <Title text="Workflows · Switchyard"/>
        <h1>"Workflows"</h1>
        <form class="filters" role="search" on:submit=|ev| ev.prevent_default()>
            <label>"Search " <input id="workflow-search" type="search" placeholder="name or slug"
                on:input=move |ev| set_query.set(event_target_value(&ev))/></label>
        </form>
        <Transition fallback=|| view! { <p>"Loading workflows…"</p> }>
            {move || Suspend::new(async move {
                match workflows.await {
                    Err(e) => view! { <p class="error" role="alert">"Could not load workflows: " {e.to_string()}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="empty">"No workflows yet. Define one with "<code>"POST /api/workflows"</code>
                            ": steps that run jobs or call services, with their dependencies."</p>
                    }.into_any(),
                    Ok(list) => {
                        let rows = move || {
                            let q = query.get().trim().to_lowercase();
                            list.iter().filter(|w| matches(w, &q)).map(|s| {
                                let w = &s.workflow;
                                let steps: Vec<String> = w.steps.as_array().map(|a| a.iter()
                                    .filter_map(|s| s["id"].as_str().map(str::to_string)).collect()).unwrap_or_default();
                                view! {
                                    <tr data-slug=w.slug.clone()>
                                        <td>{w.name.clone()}</td>
                                        <td><a href=format!("/workflows/{}", w.slug)><code>{w.slug.clone()}</code></a></td>
                                        <td>{w.version}</td>
                                        <td>{format!("{}: {}", steps.len(), steps.join(", "))}</td>
                                        <td class="last-run">{match s.last_run_status {
                                            Some(st) => view! { <WorkflowStatusBadge status=st/> " " <MaybeWhen t=s.last_run_at/> }.into_any(),
                                            None => view! { <span class="muted">"never run"</span> }.into_any(),
                                        }}</td>
                                        <td class="runs">{s.runs}</td>
                                        <td class="success-rate">{success_rate_text(s.success_rate)}</td>
                                        <td><When t=w.updated_at/></td>
                                    </tr>
                                }
                            }).collect_view()
                        };
                        view! {
                            <table id="workflows">
                                <caption class="visually-hidden">"Workflow definitions"</caption>
                                <thead><tr><th scope="col">"Name"</th><th scope="col">"Slug"</th><th scope="col">"Version"</th>
                                    <th scope="col">"Steps"</th><th scope="col">"Last run"</th><th scope="col">"Runs"</th>
                                    <th scope="col">"Success rate"</th><th scope="col">"Updated"</th></tr></thead>
                                <tbody>{rows}</tbody>
                            </table>
                        }.into_any()
                    }
                }
            })}
        </Transition>
        <crate::workflow_pages::RecentWorkflowRuns/>
    }
}

#[cfg(test)]
mod tests {
    use super::success_rate_text;

    #[test]
    fn success_rate_is_a_percentage_or_a_dash() {
        assert_eq!(success_rate_text(None), "—");
        assert_eq!(success_rate_text(Some(1.0)), "100%");
        assert_eq!(success_rate_text(Some(2.0 / 3.0)), "67%");
    }
}
