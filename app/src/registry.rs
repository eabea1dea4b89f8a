//! `/services` (the service registry with live health) and `/workflows` (the workflow catalog).
use leptos::prelude::*;
use leptos_meta::Title;

use crate::{
    data::{fetch_services, fetch_workflows},
    format::{MaybeWhen, When},
    live::use_live,
    wire::ServiceStatus,
};

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
                                        <td><code>{s.slug.clone()}</code></td>
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

/// `/workflows`: every workflow definition with its steps, and the latest workflow runs, live.
#[component]
pub fn WorkflowsPage() -> impl IntoView {
    let live = use_live();
    let workflows = Resource::new(move || live.tick.get(), |_| fetch_workflows());
    view! {
        <Title text="Workflows · Switchyard"/>
        <h1>"Workflows"</h1>
        <Transition fallback=|| view! { <p>"Loading workflows…"</p> }>
            {move || Suspend::new(async move {
                match workflows.await {
                    Err(e) => view! { <p class="error" role="alert">"Could not load workflows: " {e.to_string()}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="empty">"No workflows yet. Define one with "<code>"POST /api/workflows"</code>
                            ": steps that run jobs or call services, with their dependencies."</p>
                    }.into_any(),
                    Ok(list) => view! {
                        <table id="workflows">
                            <caption class="visually-hidden">"Workflow definitions"</caption>
                            <thead><tr><th scope="col">"Name"</th><th scope="col">"Slug"</th><th scope="col">"Version"</th>
                                <th scope="col">"Steps"</th><th scope="col">"Updated"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|w| {
                                    let steps: Vec<String> = w.steps.as_array().map(|a| a.iter()
                                        .filter_map(|s| s["id"].as_str().map(str::to_string)).collect()).unwrap_or_default();
                                    view! {
                                        <tr data-slug=w.slug.clone()>
                                            <td>{w.name.clone()}</td>
                                            <td><a href=format!("/workflows/{}", w.slug)><code>{w.slug.clone()}</code></a></td>
                                            <td>{w.version}</td>
                                            <td>{format!("{}: {}", steps.len(), steps.join(", "))}</td>
                                            <td><When t=w.updated_at/></td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
        <crate::workflow_pages::RecentWorkflowRuns/>
    }
}
