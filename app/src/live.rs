//! The live event connection shared by every page: one EventSource on `/api/events`, opened
//! once the page has hydrated. Pages read `tick` to refetch when something changed; the
//! browser reconnects by itself (sending Last-Event-ID) and `status` says when it does.
use leptos::prelude::*;

/// One line of the activity feed: (event id, event type, what it is about).
pub type FeedItem = (String, String, String);

#[derive(Clone, Copy)]
pub struct Live {
    pub status: ReadSignal<String>,
    /// Bumped on every event received.
    pub tick: ReadSignal<u64>,
    pub items: ReadSignal<Vec<FeedItem>>,
}

/// Creates the shared connection state and puts it in the context (call once, in `App`).
pub fn provide_live() -> Live {
    let (status, set_status) = signal("connecting".to_string());
    let (tick, set_tick) = signal(0u64);
    let (items, set_items) = signal(Vec::<FeedItem>::new());
    // Effects run only in the browser, after hydration.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        {
            browser::connect(set_status, set_tick, set_items);
            // A safety net, not the mechanism: pages also refresh every few seconds, so an
            // event lost between a reconnect and its replay cannot leave a page stale for long.
            set_interval(
                move || set_tick.update(|t| *t += 1),
                std::time::Duration::from_secs(5),
            );
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (set_status, set_tick, set_items);
    });
    let live = Live {
        status,
        tick,
        items,
    };
    provide_context(live);
    live
}

pub fn use_live() -> Live {
    expect_context::<Live>()
}

#[cfg(feature = "hydrate")]
mod browser {
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
        "service.updated",
        "workflow.definition.updated",
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
        } else if let Some(service) = d.get("service") {
            format!(
                "service {} is {}",
                service["slug"].as_str().unwrap_or("?"),
                service["status"].as_str().unwrap_or("?")
            )
        } else if let Some(workflow) = d.get("workflow") {
            format!("workflow {}", workflow["slug"].as_str().unwrap_or("?"))
        } else {
            String::new()
        }
    }

    pub fn connect(
        set_status: WriteSignal<String>,
        set_tick: WriteSignal<u64>,
        set_items: WriteSignal<Vec<FeedItem>>,
    ) {
        let Ok(source) = web_sys::EventSource::new("/api/events?topics=job.*,service.*,workflow.*")
        else {
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
                    set_tick.update(|t| *t += 1);
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
