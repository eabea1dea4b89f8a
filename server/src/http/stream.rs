//! Streaming endpoints: the SSE event stream (`GET /api/events`) with replay from
//! `Last-Event-ID`, and run logs (`GET /api/job-runs/:id/logs`, `?follow=true`).
use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{StreamExt, stream};
use tokio::sync::broadcast::error::RecvError;

use super::{AppState, error::ApiError};
use crate::{domain::Problems, store::StoredEvent};

/// A topic filter: exact types or prefixes ending in `*` (`job.run.*`).
#[derive(Clone, Debug)]
struct Topics(Vec<String>);

impl Topics {
    fn parse(raw: Option<&String>) -> Topics {
        Topics(
            raw.map(|r| {
                r.split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    fn matches(&self, event_type: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => t == event_type,
            })
    }
}

fn sse_event(ev: &StoredEvent) -> Event {
    Event::default()
        .id(ev.id.to_string())
        .event(ev.event_type.clone())
        .data(ev.payload.to_string())
}

/// `GET /api/events`
#[utoipa::path(get, path = "/api/events", tag = "events", params(
        ("topics" = Option<String>, Query, description = "comma-separated types or prefixes with *, e.g. job.run.*"),
        ("Last-Event-ID" = Option<String>, Header, description = "replay events after this id")),
    responses((status = 200, description = "text/event-stream; data: {\"type\", \"data\"}", content_type = "text/event-stream")))]
pub async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.get("lastEventId").cloned());
    let last_id = match last_id {
        None => None,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                let mut p = Problems::new();
                p.add(
                    "/headers/Last-Event-ID",
                    "must be a non-negative integer event id",
                );
                return Err(ApiError::invalid_request(p));
            }
        },
    };
    let topics = Topics::parse(q.get("topics"));
    // Subscribe before reading the backlog so nothing falls between the two.
    let rx = s.bus.subscribe();
    // Without Last-Event-ID a client gets what happens from now on.
    let start = match last_id {
        Some(id) => id,
        None => s
            .jobs
            .store()
            .last_event_id()
            .await
            .map_err(|e| ApiError::from(crate::service::ServiceError::from(e)))?,
    };
    struct St {
        bus: crate::events::EventBus,
        rx: tokio::sync::broadcast::Receiver<Arc<StoredEvent>>,
        sent: i64,
        backlog: std::collections::VecDeque<StoredEvent>,
        replaying: bool,
        topics: Topics,
    }
    let state = St {
        bus: s.bus.clone(),
        rx,
        sent: start,
        backlog: Default::default(),
        replaying: last_id.is_some(),
        topics,
    };
    let stream = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.backlog.pop_front() {
                st.sent = ev.id;
                if st.topics.matches(&ev.event_type) {
                    return Some((Ok::<_, Infallible>(sse_event(&ev)), st));
                }
                continue;
            }
            if st.replaying {
                match st.bus.replay(st.sent, 500).await {
                    Ok(batch) if !batch.is_empty() => {
                        st.backlog.extend(batch);
                        continue;
                    }
                    Ok(_) => st.replaying = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "event replay failed");
                        st.replaying = false;
                    }
                }
            }
            match st.rx.recv().await {
                Ok(ev) => {
                    if ev.id <= st.sent {
                        continue;
                    }
                    st.sent = ev.id;
                    if st.topics.matches(&ev.event_type) {
                        return Some((Ok(sse_event(&ev)), st));
                    }
                }
                // Fell behind the in-memory buffer: catch up from the stored log.
                Err(RecvError::Lagged(_)) => st.replaying = true,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /api/job-runs/:id/logs`
#[utoipa::path(get, path = "/api/job-runs/{id}/logs", tag = "runs", params(("id" = String, Path),
        ("follow" = Option<bool>, Query, description = "stream until the run ends")),
    responses((status = 200, description = "the run log as text", content_type = "text/plain")))]
pub async fn logs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(_) => {
            let mut p = Problems::new();
            p.add("/query/follow", "must be true or false");
            return Err(ApiError::invalid_request(p));
        }
    };
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !follow {
        return Ok((StatusCode::OK, text_plain, s.jobs.run_log(&id).await?).into_response());
    }
    let id = s.jobs.get_run(&id).await?.id;
    let store = s.jobs.store().clone();
    let jobs = s.jobs.clone();
    let body = stream::unfold((0i64, false), move |(after, done)| {
        let store = store.clone();
        let jobs = jobs.clone();
        let id = id.clone();
        async move {
            if done {
                return None;
            }
            let mut first = true;
            loop {
                if !first {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                first = false;
                // Read the status before the lines: lines written before the run ended are then
                // all visible to the read that follows.
                let ended = matches!(jobs.get_run(&id).await, Ok(r) if r.status.is_terminal());
                let batch = match store.read_logs(&id, after, 1000).await {
                    Ok(b) => b,
                    Err(_) => return None,
                };
                if !batch.is_empty() {
                    let next = batch.last().map(|l| l.id).unwrap_or(after);
                    let chunk: String = batch.iter().map(crate::store::format_log_line).collect();
                    return Some((Ok::<_, Infallible>(chunk), (next, false)));
                }
                if ended {
                    return None;
                }
            }
        }
    });
    // A stream: each chunk must reach the client as it comes, so no compression on the way.
    let streaming = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache, no-transform"),
    ];
    Ok((StatusCode::OK, streaming, Body::from_stream(body.boxed())).into_response())
}
