//! The Leptos application (pages and components) and the wire types shared with the server.
//! Server-only code sits behind the `ssr` feature so the crate also compiles to wasm.
pub mod data;
pub mod live;
pub mod pages;
pub mod schema_form;
pub mod wire;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::{
    ParamSegment, StaticSegment,
    components::{Route, Router, Routes},
};

/// The HTML document around the app, rendered by the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
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
    view! {
        <Stylesheet id="switchyard" href="/pkg/switchyard.css"/>
        <Title text="Switchyard"/>
        <Router>
            <header>
                <nav aria-label="Main">
                    <a href="/">"Switchyard"</a>
                    " · "
                    <a href="/jobs">"Jobs"</a>
                    " · "
                    <a href="/runs">"Runs"</a>
                    " · "
                    <span class="live-status" aria-live="polite">
                        "live updates: "
                        <span id="live-status">{move || live.status.get()}</span>
                    </span>
                </nav>
            </header>
            <main>
                <Routes fallback=|| view! { <h1>"Not found"</h1> }.into_view()>
                    <Route path=StaticSegment("") view=HomePage/>
                    <Route path=StaticSegment("jobs") view=pages::JobsPage/>
                    <Route path=(StaticSegment("jobs"), ParamSegment("slug")) view=pages::JobPage/>
                    <Route path=StaticSegment("runs") view=pages::RunsPage/>
                    <Route
                        path=(StaticSegment("runs"), StaticSegment("jobs"), ParamSegment("id"))
                        view=pages::RunPage
                    />
                </Routes>
            </main>
        </Router>
    }
}

/// Home page until the operator UI lands: points at the API and shows live activity.
#[component]
fn HomePage() -> impl IntoView {
    view! {
        <h1>"Switchyard"</h1>
        <p>"Jobs and workflows orchestrator. The operator pages are on their way; meanwhile the "
            "HTTP API is live:"</p>
        <ul>
            <li><a href="/api/jobs">"/api/jobs"</a>" job definitions"</li>
            <li><a href="/api/job-runs">"/api/job-runs"</a>" job runs"</li>
            <li><a href="/api/openapi.json">"/api/openapi.json"</a>" OpenAPI document"</li>
            <li><a href="/api/health">"/api/health"</a>" health"</li>
        </ul>
        <LiveFeed/>
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
