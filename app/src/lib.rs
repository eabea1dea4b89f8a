//! The Leptos application (pages and components) and the wire types shared with the server.
//! Server-only code sits behind the `ssr` feature so the crate also compiles to wasm.
pub mod wire;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::{
    StaticSegment,
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
    view! {
        <Stylesheet id="switchyard" href="/pkg/switchyard.css"/>
        <Title text="Switchyard"/>
        <Router>
            <main>
                <Routes fallback=|| view! { <h1>"Not found"</h1> }.into_view()>
                    <Route path=StaticSegment("") view=HomePage/>
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

/// One line of the live feed: (event id, event type, what it is about).
type FeedItem = (String, String, String);

/// The latest job events, fed by `/api/events` once the page has hydrated. The browser's
/// EventSource reconnects by itself (sending Last-Event-ID); the status says when it does.
#[component]
fn LiveFeed() -> impl IntoView {
    let (status, set_status) = signal("connecting".to_string());
    let (items, set_items) = signal(Vec::<FeedItem>::new());
    // Effects run only in the browser, after hydration.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        live::connect(set_status, set_items);
        #[cfg(not(feature = "hydrate"))]
        let _ = (set_status, set_items);
    });
    view! {
        <section aria-labelledby="live-title">
            <h2 id="live-title">"Live activity"</h2>
            <p>
                "Event stream: "
                <span id="feed-status" data-status=move || status.get()>
                    {move || status.get()}
                </span>
            </p>
            <ol id="feed">
                <For
                    each=move || items.get()
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

#[cfg(feature = "hydrate")]
mod live {
    use super::FeedItem;
    use leptos::prelude::*;
    use wasm_bindgen::{JsCast, closure::Closure};

    const TYPES: &[&str] = &[
        "job.definition.updated",
        "job.run.pending",
        "job.run.running",
        "job.run.succeeded",
        "job.run.failed",
        "job.run.canceled",
        "job.run.expired",
        "job.run.updated",
    ];

    fn label(data: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        let d = &v["data"];
        if let Some(run) = d.get("run") {
            format!(
                "{} run {} (attempt {})",
                run["jobSlug"].as_str().unwrap_or("?"),
                run["id"].as_str().unwrap_or("?"),
                run["attempt"]
            )
        } else if let Some(job) = d.get("job") {
            format!("job {}", job["slug"].as_str().unwrap_or("?"))
        } else {
            String::new()
        }
    }

    pub fn connect(set_status: WriteSignal<String>, set_items: WriteSignal<Vec<FeedItem>>) {
        let Ok(source) = web_sys::EventSource::new("/api/events?topics=job.*") else {
            set_status.set("unavailable".into());
            return;
        };
        let on_open =
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| set_status.set("connected".into()));
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        on_open.forget();
        let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            set_status.set("reconnecting".into())
        });
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        on_error.forget();
        for event_type in TYPES {
            let on_event = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
                move |ev: web_sys::MessageEvent| {
                    let data = ev.data().as_string().unwrap_or_default();
                    let item = (ev.last_event_id(), ev.type_(), label(&data));
                    set_items.update(|items| {
                        items.insert(0, item);
                        items.truncate(20);
                    });
                },
            );
            let _ = source
                .add_event_listener_with_callback(event_type, on_event.as_ref().unchecked_ref());
            on_event.forget();
        }
        // The page owns the stream for its whole life.
        std::mem::forget(source);
    }
}
