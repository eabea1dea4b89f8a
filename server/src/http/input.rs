//! Where request input enters, and what it may not do.
//!
//! - Input no database can store, refused: U+0000 (NUL) in a request's path parameters or
//!   query (percent-decoded) is a 400 `invalid_request` naming every such parameter
//!   (`/path/<name>`, `/query/<name>`), before any handler reads it. JSON bodies are checked by
//!   `ApiJson` (`error.rs`); the pages' server functions by the `Backend` of `service.rs`. The
//!   rule is `domain::problems` (`check_text`, `check_json`).
//! - A body left unread ends its connection openly: see [`close_unless_body_read`].
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{MatchedPath, OriginalUri, Request},
    http::{HeaderValue, Version, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::StreamExt;

use super::error::ApiError;
use domain::{
    auth::percent_decode,
    problems::{NUL_MESSAGE, Problems, check_text, has_nul, pointer_segment},
};

/// The `/api` router's layer: refuses a request whose path parameters or query carry U+0000.
/// A path that matches no route passes on (to its 404).
pub async fn refuse_nul(req: Request, next: Next) -> Response {
    let uri = req
        .extensions()
        .get::<OriginalUri>()
        .map(|o| &o.0)
        .unwrap_or(req.uri());
    let mut p = Problems::new();
    if let Some(pattern) = req.extensions().get::<MatchedPath>() {
        path_problems(pattern.as_str(), uri.path(), &mut p);
    }
    if let Some(query) = uri.query() {
        query_problems(query, &mut p);
    }
    if p.is_empty() {
        next.run(req).await
    } else {
        ApiError::invalid_request(p).into_response()
    }
}

/// hyper answers a request whose body was not read to its end (an early refusal: 401, 404,
/// 405, 413, 415, a U+0000 refusal, an endpoint that takes no body) and then closes the
/// connection unless the rest of the body had already arrived, without saying so: a client
/// reusing that connection loses its next request (a broken pipe). So such an answer says so
/// itself, `Connection: close` (HTTP/1), and the client opens a new connection instead.
pub async fn close_unless_body_read(req: Request, next: Next) -> Response {
    let http1 = req.version() <= Version::HTTP_11;
    if !http1 || req.body().is_end_stream() {
        return next.run(req).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let end = read.clone();
    let tracked = body
        .into_data_stream()
        .chain(futures::stream::poll_fn(move |_| {
            end.store(true, Ordering::Release);
            Poll::<Option<Result<Bytes, axum::Error>>>::Ready(None)
        }));
    let mut res = next
        .run(Request::from_parts(parts, Body::from_stream(tracked)))
        .await;
    if !read.load(Ordering::Acquire) {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// Every parameter of the route `pattern` (`/api/jobs/{slug}`) whose segment of `path` holds
/// U+0000 once percent-decoded, as `/path/<name>`.
fn path_problems(pattern: &str, path: &str, p: &mut Problems) {
    if pattern.split('/').count() != path.split('/').count() {
        return;
    }
    for (name, segment) in pattern.split('/').zip(path.split('/')) {
        if let Some(name) = name.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            let name = name.trim_start_matches('*');
            check_text(&format!("/path/{name}"), &percent_decode(segment), p);
        }
    }
}

/// Every query parameter whose name or value holds U+0000 once form-decoded, as
/// `/query/<name>` (each reported once).
fn query_problems(query: &str, p: &mut Problems) {
    let mut seen = std::collections::HashSet::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let path = format!("/query/{}", pointer_segment(&name));
        let message = if has_nul(&name) {
            format!("the name {NUL_MESSAGE}")
        } else if has_nul(&value) {
            NUL_MESSAGE.to_string()
        } else {
            continue;
        };
        if seen.insert(path.clone()) {
            p.add(path, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(p: Problems) -> Vec<String> {
        p.into_vec().into_iter().map(|d| d.path).collect()
    }

    #[test]
    fn path_parameters_are_named_by_the_route() {
        let mut p = Problems::new();
        path_problems("/api/jobs/{slug}/runs", "/api/jobs/a%00b/runs", &mut p);
        path_problems("/api/job-runs/{id}", "/api/job-runs/%00", &mut p);
        path_problems("/api/secrets/{key}", "/api/secrets/K%2500", &mut p);
        path_problems("/api/jobs/{slug}", "/api/jobs/plain", &mut p);
        assert_eq!(paths(p), ["/path/slug", "/path/id"]);
    }

    #[test]
    fn query_names_and_values_each_once() {
        let mut p = Problems::new();
        query_problems(
            "q=%00&status=a,%00&status=%00&a%00b=1&ok=1&text=%2500&plus=+",
            &mut p,
        );
        let found = p.into_vec();
        let got: Vec<&str> = found.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(got, ["/query/q", "/query/status", "/query/a\u{0}b"]);
        assert!(found[2].message.starts_with("the name "));
    }
}
