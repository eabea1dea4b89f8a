//! The Leptos application (pages and components); the wire types it shares with the server are
//! in the `wire` crate.
//! Server-only code sits behind the `ssr` feature so the crate also compiles to wasm.
pub mod auth_pages;
pub mod dag;
pub mod data;
pub mod format;
pub mod live;
pub mod metrics_page;
pub mod pages;
pub mod registry;
pub mod schema_form;
pub mod workflow_pages;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::{
    ParamSegment, StaticSegment,
    components::{A, Route, Router, Routes},
};

/// The HTML document around the app, rendered by the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                // Named after the bundle (a content hash once built): cached as immutable.
                <link rel="stylesheet" id="switchyard" href=format!("/pkg/{}.css", options.output_name)/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// Root component: routes to the pages.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let live = live::provide_live();
    auth_pages::provide_viewer();
    view! {
        <Title text="Switchyard"/>
        <Router>
            <a class="skip-link" href="#main">"Skip to content"</a>
            <header>
                <nav aria-label="Main">
                    <A href="/" exact=true>"Switchyard"</A>
                    " · "
                    <A href="/jobs">"Jobs"</A>
                    " · "
                    <A href="/runs">"Runs"</A>
                    " · "
                    <A href="/workflows">"Workflows"</A>
                    " · "
                    <A href="/services">"Services"</A>
                    " · "
                    <A href="/metrics">"Metrics"</A>
                    " · "
                    <span class="live-status" aria-live="polite">
                        "live updates: "
                        <span id="live-status">{move || live.status.get()}</span>
                    </span>
                    <auth_pages::SessionBadge/>
                </nav>
            </header>
            <main id="main" tabindex="-1">
                <Routes fallback=|| view! { <h1>"Not found"</h1> }.into_view()>
                    <Route path=StaticSegment("") view=HomePage/>
                    <Route path=StaticSegment("sign-in") view=auth_pages::SignInPage/>
                    <Route path=StaticSegment("audit") view=auth_pages::AuditPage/>
                    <Route path=StaticSegment("jobs") view=pages::JobsPage/>
                    <Route path=(StaticSegment("jobs"), ParamSegment("slug")) view=pages::JobPage/>
                    <Route path=StaticSegment("runs") view=pages::RunsPage/>
                    <Route path=StaticSegment("services") view=registry::ServicesPage/>
                    <Route path=StaticSegment("metrics") view=metrics_page::MetricsPage/>
                    <Route
                        path=(StaticSegment("services"), ParamSegment("slug"))
                        view=registry::ServicePage
                    />
                    <Route path=StaticSegment("workflows") view=registry::WorkflowsPage/>
                    <Route
                        path=(StaticSegment("workflows"), ParamSegment("slug"))
                        view=workflow_pages::WorkflowPage
                    />
                    <Route
                        path=(StaticSegment("runs"), StaticSegment("workflows"), ParamSegment("id"))
                        view=workflow_pages::WorkflowRunPage
                    />
                    <Route
                        path=(StaticSegment("runs"), StaticSegment("jobs"), ParamSegment("id"))
                        view=pages::RunPage
                    />
                </Routes>
            </main>
        </Router>
    }
}

/// `/`: the dashboard: runs of the last 24 h by status, an hourly chart coloured by outcome,
/// the latest failures, and the live activity feed.
#[component]
fn HomePage() -> impl IntoView {
    let live = live::use_live();
    let dash = Resource::new(move || live.tick.get(), |_| data::fetch_dashboard());
    view! {
        <h1>"Switchyard"</h1>
        <pages::Legend/>
        <Transition fallback=|| view! { <p>"Loading dashboard…"</p> }>
            {move || Suspend::new(async move {
                match dash.await {
                    Err(e) => view! { <p class="error">"Could not load the dashboard: " {e.to_string()}</p> }.into_any(),
                    Ok(d) => view! {
                        <section aria-labelledby="counts-title">
                            <h2 id="counts-title">"Last 24 hours"</h2>
                            <ul id="counts" class="counts">
                                {d.counts.iter().map(|(s, n)| view! {
                                    <li data-status=s.as_str()><pages::StatusBadge status=*s/> " " <strong>{*n}</strong></li>
                                }).collect_view()}
                            </ul>
                            <HourlyChart hourly=d.hourly.clone()/>
                        </section>
                        <section aria-labelledby="failures-title">
                            <h2 id="failures-title">"Latest failures"</h2>
                            {if d.latest_failures.is_empty() {
                                view! { <p class="empty">"No failures. "<a href="/runs">"All runs"</a></p> }.into_any()
                            } else {
                                view! {
                                    <ul id="failures">
                                        {d.latest_failures.iter().map(|r| view! {
                                            <li><a href=format!("/runs/jobs/{}", r.id)>{r.job_slug.clone()}</a> " "
                                                <pages::StatusBadge status=r.status/> " "
                                                <span class="error">{r.error_message.clone().unwrap_or_default()}</span></li>
                                        }).collect_view()}
                                    </ul>
                                }.into_any()
                            }}
                        </section>
                    }.into_any(),
                }
            })}
        </Transition>
        <LiveFeed/>
    }
}

/// Runs per hour as stacked SVG bars, one colour per outcome.
#[component]
fn HourlyChart(hourly: Vec<wire::HourBucket>) -> impl IntoView {
    let max = hourly
        .iter()
        .map(|(_, c)| c.iter().map(|(_, n)| n).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, bar) = (480.0, 120.0, 20.0);
    let bars = hourly
        .iter()
        .enumerate()
        .map(|(i, (hour, counts))| {
            let mut y = h;
            let x = i as f64 * bar;
            let total: u64 = counts.iter().map(|(_, n)| n).sum();
            let label = format!("{} UTC: {total} run(s)", hour.format("%H:00"));
            let rects = counts
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| {
                    let height = *n as f64 / max as f64 * h;
                    y -= height;
                    view! { <rect class=format!("fill-{}", s.as_str()) x=x + 2.0 y=y width=bar - 4.0 height=height/> }
                })
                .collect_view();
            view! { <g><title>{label}</title>{rects}</g> }
        })
        .collect_view();
    view! {
        <svg id="hourly-chart" role="img" aria-label="Runs per hour over the last 24 hours, by outcome"
            viewBox=format!("0 0 {w} {h}") preserveAspectRatio="none" width="100%" height="140">
            {bars}
        </svg>
    }
}

/// The latest job events from the shared live connection.
#[component]
fn LiveFeed() -> impl IntoView {
    let live = live::use_live();
    view! {
        <section aria-labelledby="live-title">
            <h2 id="live-title">"Live activity"</h2>
            <p>
                "Event stream: "
                <span id="feed-status" data-status=move || live.status.get()>
                    {move || live.status.get()}
                </span>
            </p>
            <ol id="feed">
                <For
                    each=move || live.items.get()
                    key=|item| item.0.clone()
                    children=|(_, event_type, label)| {
                        view! {
                            <li>
                                <code>{event_type}</code>
                                " "
                                {label}
                            </li>
                        }
                    }
                />
            </ol>
        </section>
    }
}
