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
    /// The latest `workflow.run.*` event: (a sequence number, the workflow run's id).
    pub workflow_run: ReadSignal<Option<(u64, String)>>,
}

/// Creates the shared connection state and puts it in the context (call once, in `App`).
pub fn provide_live() -> Live {
    let (status, set_status) = signal("connecting".to_string());
    let (tick, set_tick) = signal(0u64);
    let (items, set_items) = signal(Vec::<FeedItem>::new());
    let (workflow_run, set_workflow_run) = signal(None::<(u64, String)>);
    // Effects run only in the browser, after hydration.
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        {
            browser::connect(set_status, set_tick, set_items, set_workflow_run);
            // A safety net, not the mechanism: pages also refresh every few seconds, so an
            // event lost between a reconnect and its replay cannot leave a page stale for long.
            set_interval(
                move || set_tick.update(|t| *t += 1),
                std::time::Duration::from_secs(5),
            );
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (set_status, set_tick, set_items, set_workflow_run);
    });
    let live = Live {
        status,
        tick,
        items,
        workflow_run,
    };
    provide_context(live);
    live
}

pub fn use_live() -> Live {
    expect_context::<Live>()
}

/// Streams the text body of `GET url` into `on_chunk` as it arrives, until it ends (`Ok`) or
/// breaks or is refused (`Err`, with the reason); `signal` aborts it.
#[cfg(feature = "hydrate")]
pub async fn stream_text(
    url: &str,
    signal: &web_sys::AbortSignal,
    mut on_chunk: impl FnMut(String),
) -> Result<(), String> {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    let err = |e: wasm_bindgen::JsValue| format!("{e:?}");
    let window = web_sys::window().ok_or("no window")?;
    let init = web_sys::RequestInit::new();
    init.set_signal(Some(signal));
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .map_err(err)?
        .dyn_into()
        .map_err(err)?;
    if !response.ok() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = response.body().ok_or("no body")?;
    let reader: web_sys::ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| "the body has no stream reader".to_string())?;
    let decoder = web_sys::TextDecoder::new().map_err(err)?;
    let options = web_sys::TextDecodeOptions::new();
    options.set_stream(true);
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(err)?;
        let done = js_sys::Reflect::get(&chunk, &"done".into())
            .map_err(err)?
            .as_bool()
            .unwrap_or(true);
        if done {
            return Ok(());
        }
        let bytes: js_sys::Uint8Array = js_sys::Reflect::get(&chunk, &"value".into())
            .map_err(err)?
            .dyn_into()
            .map_err(err)?;
        let text = decoder
            .decode_with_js_u8_array_and_options(&bytes, &options)
            .map_err(err)?;
        if !text.is_empty() {
            on_chunk(text);
        }
    }
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
        "workflow.run.pending",
        "workflow.run.running",
        "workflow.run.succeeded",
        "workflow.run.failed",
        "workflow.run.canceled",
        "workflow.run.updated",
        // The replay after a reconnect was cut short: the tick below makes the pages reload.
        "stream.truncated",
    ];

    fn label(data: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        let d = &v["data"];
        if v["type"] == "stream.truncated" {
            return "missed too many events while disconnected: reloaded".to_string();
        }
        if let Some(run) = d.get("run").filter(|r| r.get("workflowSlug").is_some()) {
            format!(
                "workflow {} run {} is {}",
                run["workflowSlug"].as_str().unwrap_or("?"),
                run["id"].as_str().unwrap_or("?"),
                run["status"].as_str().unwrap_or("?")
            )
        } else if let Some(run) = d.get("run") {
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
        set_workflow_run: WriteSignal<Option<(u64, String)>>,
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
                    if ev.type_().starts_with("workflow.run.") {
                        let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                        if let Some(id) = v["data"]["run"]["id"].as_str() {
                            let id = id.to_string();
                            set_workflow_run.update(|w| {
                                let n = w.as_ref().map_or(0, |(n, _)| n + 1);
                                *w = Some((n, id));
                            });
                        }
                    }
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
