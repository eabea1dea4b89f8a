//! Streaming endpoints: the SSE event stream (`GET /api/events`) with replay from
//! `Last-Event-ID` (at most `--max-replay-events`), and run logs (`GET /api/job-runs/:id/logs`,
//! `?tail=N`, `?after=<line id>`, `?follow=true`), streamed from the database in batches. Both
//! kinds of long-lived connection are counted per client and in total (`http::limits`).
use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequestParts, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{StreamExt, stream};
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use utoipa::openapi::{
    RefOr,
    schema::{ObjectBuilder, Schema, Type},
};
use wire::{ErrorResponse, EventMessage};

use super::{
    AppState,
    error::ApiError,
    limits::{ConnectionPermit, with_retry_after},
};
use crate::{
    application::logs::RunLogs,
    events::{self, StoredEvent},
};
use domain::Problems;
use domain::logs::LogLine;

/// One event of `GET /api/events` as an event-stream reader sees it: OpenAPI 3.1 describes
/// each event of a `text/event-stream` response by its fields. `data` is an [`EventMessage`]
/// as JSON (`contentMediaType` / `contentSchema`, generated from that type).
pub struct SseEvent;

impl utoipa::PartialSchema for SseEvent {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let message = serde_json::to_value(<EventMessage as utoipa::PartialSchema>::schema())
            .unwrap_or_default();
        let data = string()
            .description(Some("JSON {\"type\", \"data\"}: the event's type again and its payload ({\"run\"}, {\"job\"}, {\"workflow\"} or {\"service\"})"))
            .content_media_type("application/json")
            // `contentSchema` is JSON Schema (2019-09 and later), not an OpenAPI extension:
            // built without the builder, which would prefix it with `x-`.
            .extensions(Some(utoipa::openapi::extensions::Extensions::from_iter([(
                "contentSchema",
                message,
            )])));
        ObjectBuilder::new()
            .property(
                "id",
                string().description(Some(
                    "The event's sequence number: send the last one seen as Last-Event-ID to resume after it",
                )),
            )
            .property(
                "event",
                string().description(Some(
                    "The event type, e.g. job.run.succeeded; stream.truncated first when a replay was cut short",
                )),
            )
            .property("data", data)
            .required("id")
            .required("event")
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for SseEvent {}

/// The event type of the first event of a replay that was cut short.
pub const TRUNCATED_EVENT: &str = "stream.truncated";

/// Lines read from the database per batch of a log response.
const LOG_BATCH: u64 = 1000;

/// The most lines `?tail=` asks for.
const MAX_TAIL: u64 = 100_000;

/// How often a follow looks for new lines of a running run.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// How long a follow of a run that has not started waits for its events before it looks at
/// the run again (a safety net: the bus wakes it when the run changes).
const FOLLOW_IDLE_CHECK: Duration = Duration::from_secs(60);

/// The response header naming the id of the last line a (non-follow) log response holds:
/// pass it as `?after=` to read only what came since.
pub const LAST_LINE_HEADER: &str = "switchyard-last-line-id";

/// The client's address (the TCP peer), if the server recorded it.
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

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

/// The first event of a replay cut at `max` events: the client missed more than it can be
/// sent and must reload its state; the stream goes on from `resume_after`.
fn truncated_event(last_id: i64, resume_after: i64, max: u64) -> Event {
    let message = format!(
        "more than {max} events followed event {last_id} (--max-replay-events): only the newest {max} are replayed; reload what you show, the stream goes on from event {resume_after}"
    );
    let data = json!({"type": TRUNCATED_EVENT, "data": {
        "lastEventId": last_id, "resumeAfter": resume_after, "maxReplay": max, "message": message}});
    Event::default()
        .id(resume_after.to_string())
        .event(TRUNCATED_EVENT)
        .data(data.to_string())
}

/// `GET /api/events`
#[utoipa::path(get, path = "/api/events", tag = "events", params(
        ("topics" = Option<String>, Query, description = "comma-separated types or prefixes with *, e.g. job.run.*"),
        ("Last-Event-ID" = Option<u64>, Header, description = "replay events after this id (at most --max-replay-events of them; when more were missed the stream starts with a stream.truncated event: reload)"),
        ("lastEventId" = Option<u64>, Query, description = "the same as the Last-Event-ID header (which wins when both are given), for clients that cannot set headers")),
    responses((status = 200, description = "A Server-Sent Events stream that lasts until the client goes away: each event has `id:` (a sequence number), `event:` (its type) and `data:` (JSON `{\"type\", \"data\"}`); comment lines keep the connection alive every 15 s",
               content((SseEvent = "text/event-stream"))),
              (status = 400, body = ErrorResponse, description = "invalid_request: Last-Event-ID is not a non-negative integer"),
              (status = 429, body = ErrorResponse, description = "rate_limited: this client holds --max-sse-per-client streams (Retry-After)",
               headers(("Retry-After" = u64, description = "seconds"))),
              (status = 503, body = ErrorResponse, description = "overloaded: the server holds --max-sse-total streams; or timeout (the request timeout). Retry-After says when to try again",
               headers(("Retry-After" = u64, description = "seconds")))))]
pub async fn events(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let last_id = last_event_id(&headers, &q)?;
    let permit = match s.limits.streams.acquire(client) {
        Ok(p) => p,
        Err(e) => return Ok(with_retry_after(e)),
    };
    let topics = Topics::parse(q.get("topics"));
    // Subscribe before reading the backlog so nothing falls between the two.
    let rx = s.bus.subscribe();
    let (start, truncated) = stream_start(&s, last_id).await?;
    let state = EventStream {
        bus: s.bus.clone(),
        rx,
        sent: start,
        backlog: Default::default(),
        replaying: last_id.is_some(),
        topics,
        first: truncated,
        _permit: permit,
    };
    let stream = stream::unfold(state, EventStream::next_event);
    Ok(Sse::new(stream.fuse())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The event a client of `GET /api/events` last saw: the `Last-Event-ID` header, else the
/// `lastEventId` query parameter; a 400 unless it is a non-negative integer.
fn last_event_id(
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Option<i64>, ApiError> {
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.get("lastEventId").cloned());
    Ok(match last_id {
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
    })
}

/// Where an event stream starts: the id after which it sends events, and the
/// [`truncated_event`] to send first when the replay after `last_id` is cut short.
async fn stream_start(
    s: &AppState,
    last_id: Option<i64>,
) -> Result<(i64, Option<Event>), ApiError> {
    let store_err = |e| ApiError::from(crate::application::AppError::from(e));
    // Without Last-Event-ID a client gets what happens from now on; with one, at most the
    // newest `replay_events` of what it missed.
    let max = s.limits.settings.replay_events;
    Ok(match last_id {
        Some(id) => match s.bus.replay_start(id, max).await.map_err(store_err)? {
            Some(resume) => (resume, Some(truncated_event(id, resume, max))),
            None => (id, None),
        },
        None => (s.bus.last_event_id().await.map_err(store_err)?, None),
    })
}

/// The state of one `GET /api/events` stream.
struct EventStream {
    bus: crate::events::EventBus,
    rx: broadcast::Receiver<Arc<StoredEvent>>,
    sent: i64,
    backlog: std::collections::VecDeque<StoredEvent>,
    replaying: bool,
    topics: Topics,
    first: Option<Event>,
    // Held for the stream's life: its place among the open streams.
    _permit: ConnectionPermit,
}

impl EventStream {
    /// The stream's next event and its state after it: the truncation notice first, then
    /// the replayed backlog, then live events (replaying again after falling behind); None
    /// once the bus is closed.
    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, EventStream)> {
        if let Some(first) = self.first.take() {
            return Some((Ok::<_, Infallible>(first), self));
        }
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                self.sent = ev.id;
                if self.topics.matches(&ev.event_type) {
                    return Some((Ok::<_, Infallible>(sse_event(&ev)), self));
                }
                continue;
            }
            if self.replaying {
                match self.bus.replay(self.sent, 500).await {
                    Ok(batch) if !batch.is_empty() => {
                        self.backlog.extend(batch);
                        continue;
                    }
                    Ok(_) => self.replaying = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "event replay failed");
                        self.replaying = false;
                    }
                }
            }
            match self.rx.recv().await {
                Ok(ev) => {
                    if ev.id <= self.sent {
                        continue;
                    }
                    self.sent = ev.id;
                    if self.topics.matches(&ev.event_type) {
                        return Some((Ok(sse_event(&ev)), self));
                    }
                }
                // Fell behind the in-memory buffer: catch up from the stored log.
                Err(RecvError::Lagged(_)) => self.replaying = true,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The query of a log request.
struct LogQuery {
    follow: bool,
    tail: Option<u64>,
    after: i64,
}

fn log_query(q: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let mut p = Problems::new();
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(_) => {
            p.add("/query/follow", "must be true or false");
            false
        }
    };
    let tail = match q.get("tail") {
        None => None,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=MAX_TAIL).contains(&n) => Some(n),
            _ => {
                p.add(
                    "/query/tail",
                    format!("must be a number of lines from 1 to {MAX_TAIL}"),
                );
                None
            }
        },
    };
    let after = match q.get("after") {
        None => 0,
        Some(v) => {
            match v.trim().parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => {
                    p.add(
                    "/query/after",
                    format!("must be a line id (the {LAST_LINE_HEADER} header of an earlier response)"),
                );
                    0
                }
            }
        }
    };
    p.finish(LogQuery {
        follow,
        tail,
        after,
    })
    .map_err(ApiError::invalid_request)
}

/// `GET /api/job-runs/:id/logs`
#[utoipa::path(get, path = "/api/job-runs/{id}/logs", tag = "runs", params(("id" = String, Path),
        ("follow" = Option<bool>, Query, description = "stream until the run ends (a run that has not started is waited for, not polled)"),
        ("tail" = Option<u64>, Query, minimum = 1, maximum = 100000, description = "only the last N lines (1..100000), of those after `after`"),
        ("after" = Option<i64>, Query, minimum = 0, description = "only lines after this line id (the switchyard-last-line-id header of an earlier response)")),
    responses((status = 200, description = "The run log as UTF-8 text, one line per log line, streamed from the database; with follow, the stream goes on until the run ends",
               content_type = "text/plain; charset=utf-8", body = String,
               headers(("switchyard-last-line-id" = i64, description = "without follow: the id of the last line the response holds (pass it as `after` to read what came since)"))),
              (status = 400, body = ErrorResponse, description = "invalid_request: follow, tail or after is malformed"),
              (status = 404, body = ErrorResponse),
              (status = 429, body = ErrorResponse, description = "rate_limited: this client holds --max-log-followers-per-client follows (Retry-After)",
               headers(("Retry-After" = u64, description = "seconds"))),
              (status = 503, body = ErrorResponse, description = "overloaded: the server holds --max-log-followers follows; or timeout (the request timeout). Retry-After says when to try again",
               headers(("Retry-After" = u64, description = "seconds")))))]
pub async fn logs(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = log_query(&q)?;
    let run = s.jobs.get_run(&id).await?;
    let store = s.jobs.logs();
    let start = match query.tail {
        Some(n) => store.tail_start(&run.id, query.after, n).await?,
        None => query.after,
    };
    let text_plain = (
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if !query.follow {
        // Exactly the lines stored now: up to the newest, named in the header.
        let last = store.last_id(&run.id).await?;
        let body = read_range(store, run.id, start, last);
        let mut res = (StatusCode::OK, [text_plain], Body::from_stream(body)).into_response();
        res.headers_mut()
            .insert(LAST_LINE_HEADER, HeaderValue::from(last.max(query.after)));
        return Ok(res);
    }
    let permit = match s.limits.followers.acquire(client) {
        Ok(p) => p,
        Err(e) => return Ok(with_retry_after(e)),
    };
    // Subscribed before the first look at the run, so its start cannot fall in between.
    let rx = s.bus.subscribe();
    let body = follow(store, rx, run.id, start, permit);
    // A stream: each chunk must reach the client as it comes, so no compression on the way.
    let streaming = [
        text_plain,
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-transform"),
        ),
    ];
    Ok((StatusCode::OK, streaming, Body::from_stream(body)).into_response())
}

/// Lines after `after` up to and including `last`, in batches.
fn read_range(
    store: RunLogs,
    run_id: String,
    after: i64,
    last: i64,
) -> impl futures::Stream<Item = Result<String, Infallible>> + Send + 'static {
    stream::unfold(after, move |after| {
        let store = store.clone();
        let run_id = run_id.clone();
        async move {
            if after >= last {
                return None;
            }
            let batch = match store.read(&run_id, after, LOG_BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(run_id, error = %e, "reading a run log failed; the response ends early");
                    return None;
                }
            };
            let lines: Vec<_> = batch.iter().filter(|l| l.id <= last).collect();
            let next = lines.last()?.id;
            let chunk: String = lines
                .into_iter()
                .map(LogLine::text)
                .collect();
            Some((Ok(chunk), next))
        }
    })
    // Layers around the body (compression) may poll it again after its end.
    .fuse()
}

/// A follow: what is stored after `after`, then new lines as they are stored, until the run
/// ends. A running run is looked at every `FOLLOW_POLL`; one that has not started (pending,
/// also between attempts) is not polled: the follow waits for the run's next event on the bus.
fn follow(
    store: RunLogs,
    rx: broadcast::Receiver<Arc<StoredEvent>>,
    run_id: String,
    after: i64,
    permit: ConnectionPermit,
) -> impl futures::Stream<Item = Result<String, Infallible>> + Send + 'static {
    struct St {
        store: RunLogs,
        rx: broadcast::Receiver<Arc<StoredEvent>>,
        run_id: String,
        after: i64,
        done: bool,
        _permit: ConnectionPermit,
    }
    let state = St {
        store,
        rx,
        run_id,
        after,
        done: false,
        _permit: permit,
    };
    stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            // The status before the lines: lines written before the run ended are then all
            // visible to the read that follows.
            let status = match st.store.status(&st.run_id).await {
                Ok(Some(status)) => status,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(run_id = st.run_id, error = %e, "following a run log failed; the response ends");
                    return None;
                }
            };
            let batch = match st.store.read(&st.run_id, st.after, LOG_BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(run_id = st.run_id, error = %e, "following a run log failed; the response ends");
                    return None;
                }
            };
            if let Some(last) = batch.last() {
                st.after = last.id;
                st.done = status.is_terminal() && (batch.len() as u64) < LOG_BATCH;
                let chunk: String = batch.iter().map(LogLine::text).collect();
                return Some((Ok(chunk), st));
            }
            if status.is_terminal() {
                return None;
            }
            if status == wire::RunStatus::Pending {
                wait_for_run(&mut st.rx, &st.run_id).await;
            } else {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    })
    .fuse()
}

/// Waits until the bus carries an event about run `run_id` (or events were missed, or
/// `FOLLOW_IDLE_CHECK` passed): the only wake-ups of a follow whose run has not started.
async fn wait_for_run(rx: &mut broadcast::Receiver<Arc<StoredEvent>>, run_id: &str) {
    let _ = tokio::time::timeout(FOLLOW_IDLE_CHECK, async {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if events::Event::decode(&ev)
                        .as_ref()
                        .and_then(events::Event::run_id)
                        == Some(run_id)
                    {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => return,
                // Shutting down: the timeout ends the wait.
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    })
    .await;
}
