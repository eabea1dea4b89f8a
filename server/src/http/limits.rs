//! What one `serve` process gives its clients at most (README "Limits"): long-lived
//! connections (event streams and log follows) per client address and in total, the `offset`
//! of lists, and the time a request may take until its response starts. Every refusal is the
//! API's JSON error with `Retry-After` where waiting helps: 429 `rate_limited` when one client
//! holds too much, 503 `overloaded` when the server as a whole does, 503 `timeout` for a slow
//! request, 400 `invalid_request` for an offset past the bound.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::error::ApiError;
use crate::settings::LimitSettings;
use domain::Problems;

/// Seconds a refused client is told to wait (`Retry-After`).
pub const RETRY_AFTER_S: u64 = 5;

/// The limits of one process, with the connections they count.
pub struct Limits {
    pub settings: LimitSettings,
    /// `GET /api/events` streams.
    pub streams: ConnectionLimit,
    /// `GET /api/job-runs/:id/logs?follow=true` follows.
    pub followers: ConnectionLimit,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Limits {
        Limits {
            streams: ConnectionLimit::new(
                "event streams",
                "--max-sse-per-client",
                "--max-sse-total",
                settings.sse_per_client,
                settings.sse_total,
            ),
            followers: ConnectionLimit::new(
                "log follows",
                "--max-log-followers-per-client",
                "--max-log-followers",
                settings.followers_per_client,
                settings.followers_total,
            ),
            settings,
        }
    }
}

/// Connections of one kind open at the same time, per client address (IPv6: per /64, like the
/// sign-in limit) and in total. A [`ConnectionPermit`] holds one place until it is dropped,
/// that is when the stream ends or its client goes away.
pub struct ConnectionLimit {
    what: &'static str,
    per_client_flag: &'static str,
    total_flag: &'static str,
    per_client: u32,
    total: u32,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: u32,
    by_client: HashMap<IpAddr, u32>,
}

/// One open connection; gives its place back when dropped.
pub struct ConnectionPermit {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            open.total = open.total.saturating_sub(1);
            if let Some(n) = open.by_client.get_mut(&self.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.by_client.remove(&self.client);
                }
            }
        }
    }
}

impl ConnectionLimit {
    pub fn new(
        what: &'static str,
        per_client_flag: &'static str,
        total_flag: &'static str,
        per_client: u32,
        total: u32,
    ) -> Self {
        ConnectionLimit {
            what,
            per_client_flag,
            total_flag,
            per_client,
            total,
            open: Arc::default(),
        }
    }

    /// A place for one more connection of `client`, or the refusal to answer with (through
    /// [`with_retry_after`]).
    pub fn acquire(&self, client: Option<IpAddr>) -> Result<ConnectionPermit, ApiError> {
        let client = crate::sessions::rate_key(client);
        let mut open = self.open.lock().map_err(|_| ApiError::internal())?;
        let mine = open.by_client.get(&client).copied().unwrap_or(0);
        if mine >= self.per_client {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "too many {} from this address: {} are open, at most {} per client ({}); close one or try again in {RETRY_AFTER_S} s",
                    self.what, mine, self.per_client, self.per_client_flag
                ),
            ));
        }
        if open.total >= self.total {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "this server holds as many {} as it allows ({}, {}); try again in {RETRY_AFTER_S} s",
                    self.what, self.total, self.total_flag
                ),
            ));
        }
        open.total += 1;
        *open.by_client.entry(client).or_insert(0) += 1;
        Ok(ConnectionPermit {
            open: self.open.clone(),
            client,
        })
    }

    /// Connections open now (all clients).
    pub fn open(&self) -> u32 {
        self.open.lock().map(|o| o.total).unwrap_or(0)
    }
}

/// The response of a refusal with `Retry-After: RETRY_AFTER_S`.
pub fn with_retry_after(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    res
}

/// Every request but a stream's body must have started its response within
/// `--request-timeout-ms`: else 503 `timeout` (the API's JSON error) with `Retry-After`. The
/// handler is dropped. Streams (`/api/events`, log follows) answer at once and then stream
/// for as long as they last: the limit covers the time to their first byte only.
pub async fn request_timeout(
    State(limits): State<Arc<Limits>>,
    req: Request,
    next: Next,
) -> Response {
    let limit = limits.settings.request_timeout;
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(%method, %path, limit_ms = limit.as_millis() as u64, "request timed out");
            with_retry_after(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than {} ms (--request-timeout-ms) and was abandoned; a write may or may not have happened: check before repeating it, or try again in {RETRY_AFTER_S} s",
                    limit.as_millis()
                ),
            ))
        }
    }
}

/// Lists page by `offset` only so deep (`--max-list-offset`): a larger `offset` on any API
/// request is a 400 that says to page by `cursor` instead. A deep offset makes the database
/// count and skip every row before it; a cursor is an index seek.
pub async fn bound_offset(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let max = limits.settings.max_offset;
    let offset = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "offset")
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    });
    if let Some(offset) = offset.filter(|o| *o > max) {
        let mut p = Problems::new();
        p.add(
            "/query/offset",
            format!(
                "{offset} is past the deepest offset this server pages to ({max}, --max-list-offset): page further with cursor=<meta.nextCursor of the previous page>"
            ),
        );
        return ApiError::invalid_request(p).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn per_client_then_total_and_places_come_back() {
        let limit = ConnectionLimit::new("event streams", "--a", "--b", 2, 3);
        let a1 = limit.acquire(ip("10.0.0.1")).unwrap();
        let _a2 = limit.acquire(ip("10.0.0.1")).unwrap();
        let e = limit.acquire(ip("10.0.0.1")).err().unwrap();
        assert_eq!((e.status.as_u16(), e.code), (429, "rate_limited"));
        assert!(
            e.message.contains("at most 2 per client (--a)"),
            "{}",
            e.message
        );
        // Another client still gets one, up to the total.
        let _b1 = limit.acquire(ip("10.0.0.2")).unwrap();
        let e = limit.acquire(ip("10.0.0.3")).err().unwrap();
        assert_eq!((e.status.as_u16(), e.code), (503, "overloaded"));
        assert!(e.message.contains("(3, --b)"), "{}", e.message);
        assert_eq!(limit.open(), 3);
        drop(a1);
        assert_eq!(limit.open(), 2);
        let _a3 = limit.acquire(ip("10.0.0.1")).unwrap();
        // IPv6 clients count per /64.
        let limit = ConnectionLimit::new("log follows", "--a", "--b", 1, 10);
        let _v6 = limit.acquire(ip("2001:db8::1")).unwrap();
        assert!(limit.acquire(ip("2001:db8::2")).is_err());
        assert!(limit.acquire(ip("2001:db8:0:1::1")).is_ok());
    }
}
