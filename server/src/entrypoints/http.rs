//! `builtin:http` `{"method", "url", "headers"?, "body"?, "expectStatus"?}`: one HTTP request
//! with the shared client (webhooks, health probes, triggering other systems).
//!
//! The client is the engine's [`crate::egress::EgressClient`]: a destination the egress policy
//! refuses fails the run at once (no retry), redirects are followed only within the URL's
//! origin (a redirect elsewhere is the result, 3xx status and `location` header included), and
//! at most `MAX_BODY_BYTES` of the body are read.
use std::{error::Error as _, time::Instant};

use reqwest::{
    Method, Url,
    header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
};
use serde_json::{Map, Value, json};

use super::{
    EntryPoint, HTTP, JobError, JobResult, JobRunContext, Problem, check_string_map,
    checked_params, field, redact_url,
};

/// Text bodies beyond this are cut: results are stored in the database.
const MAX_BODY_BYTES: usize = 1024 * 1024;

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

pub(super) struct Http;

pub(super) fn check(params: &Map<String, Value>, problems: &mut Vec<Problem>) {
    match field(params, "method").map(Value::as_str) {
        None => problems.push(("/method".to_string(), "is required".to_string())),
        Some(Some(method)) if parse_method(method).is_some() => {}
        Some(_) => problems.push((
            "/method".to_string(),
            format!("must be one of {}", METHODS.join(", ")),
        )),
    }
    match field(params, "url").map(Value::as_str) {
        None => problems.push(("/url".to_string(), "is required".to_string())),
        Some(Some(url)) if parse_url(url).is_some() => {}
        Some(_) => problems.push(("/url".to_string(), "must be an http(s) URL".to_string())),
    }
    check_string_map(params, "headers", problems);
    if let Some(value) = field(params, "expectStatus")
        && value.as_u64().is_none_or(|n| !(100..=599).contains(&n))
    {
        problems.push((
            "/expectStatus".to_string(),
            "must be an HTTP status code".to_string(),
        ));
    }
}

fn parse_method(method: &str) -> Option<Method> {
    let upper = method.to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        return None;
    }
    Method::from_bytes(upper.as_bytes()).ok()
}

fn parse_url(url: &str) -> Option<Url> {
    Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

#[async_trait::async_trait]
impl EntryPoint for Http {
    fn name(&self) -> &'static str {
        HTTP
    }

    /// It sends requests whose destination a caller must not move while the job's defaults
    /// carry secrets.
    fn rules(&self) -> domain::authority::EntryPointRules {
        domain::authority::EntryPointRules {
            destinations: &["url"],
            ..Default::default()
        }
    }

    fn check(&self, params: &Map<String, Value>, problems: &mut Vec<Problem>) {
        check(params, problems)
    }

    async fn execute(&self, ctx: JobRunContext) -> JobResult {
        let params = checked_params(HTTP, &ctx.parameters)?;
        let (Some(method), Some(url)) = (
            parse_method(text(params, "method")),
            parse_url(text(params, "url")),
        ) else {
            return Err(JobError::Fatal("invalid method or url".to_string()));
        };
        let shown_url = redact_url(url.as_str());
        let expect_status = field(params, "expectStatus").and_then(Value::as_u64);

        let refused = |refused: &crate::egress::Refused| {
            let message = format!("{method} {shown_url}: {refused}");
            ctx.log.info(message.clone());
            JobError::Fatal(message)
        };
        let mut request = ctx
            .http
            .request(method.clone(), url)
            .map_err(|e| refused(&e))?
            .headers(request_headers(params)?);
        if !ctx.timeout.is_zero() {
            request = request.timeout(ctx.timeout);
        }
        request = match field(params, "body") {
            None => request,
            Some(Value::String(body)) => request.body(body.clone()),
            Some(body) => request.json(body),
        };

        ctx.log.info(format!("{method} {shown_url}"));
        let started = Instant::now();
        let exchange = async move {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response_headers(response.headers());
            let json_body = is_json(response.headers());
            let (bytes, truncated) = read_capped(&mut response).await?;
            Ok::<_, reqwest::Error>((
                status,
                headers,
                body_value(bytes, json_body, truncated),
                truncated,
            ))
        };
        let outcome = tokio::select! {
            outcome = exchange => outcome,
            () = ctx.cancel.cancelled() => return Err(JobError::Canceled),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        ctx.metrics.set("latencyMs", latency_ms);

        let (status, headers, body, truncated) = outcome.map_err(|e| {
            if let Some(r) = crate::egress::Refused::find(&e) {
                return refused(r);
            }
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            let message = format!("{method} {shown_url} {what}: {}", error_chain(e));
            ctx.log.info(message.clone());
            JobError::Retryable(message)
        })?;
        ctx.metrics.set("status", status);
        ctx.log
            .info(format!("status {status} after {latency_ms} ms"));

        match expect_status {
            Some(expected) if u64::from(status) != expected => {
                return Err(JobError::Retryable(format!(
                    "expected status {expected}, got {status}"
                )));
            }
            None if status >= 500 => {
                return Err(JobError::Retryable(format!(
                    "server answered with status {status}"
                )));
            }
            _ => {}
        }
        let mut result = json!({"status": status, "headers": headers, "body": body});
        if truncated && let Some(object) = result.as_object_mut() {
            object.insert("bodyTruncated".to_string(), Value::Bool(true));
        }
        Ok(result)
    }
}

fn text<'a>(params: &'a Map<String, Value>, key: &str) -> &'a str {
    field(params, key)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The request headers; bad ones are fatal, reported by name only since values may be secrets.
fn request_headers(params: &Map<String, Value>) -> Result<HeaderMap, JobError> {
    let mut map = HeaderMap::new();
    let Some(Value::Object(given)) = field(params, "headers") else {
        return Ok(map);
    };
    for (name, value) in given {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| JobError::Fatal(format!("invalid header name '{name}'")))?;
        let value = HeaderValue::from_str(value.as_str().unwrap_or_default())
            .map_err(|_| JobError::Fatal(format!("invalid value for header '{name}'")))?;
        map.append(header, value);
    }
    Ok(map)
}

/// Response headers as an object; repeated headers are joined the way HTTP allows.
pub(super) fn response_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                out.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    out
}

pub(super) fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// Reads at most `MAX_BODY_BYTES` as the body streams in, so a huge response cannot exhaust
/// memory.
pub(super) async fn read_capped(
    response: &mut reqwest::Response,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    crate::egress::read_capped(response, MAX_BODY_BYTES).await
}

pub(super) fn body_value(bytes: Vec<u8>, is_json: bool, truncated: bool) -> Value {
    if is_json
        && !truncated
        && let Ok(value) = serde_json::from_slice(&bytes)
    {
        return value;
    }
    Value::String(String::from_utf8_lossy(&bytes).into_owned())
}

/// The error and its causes; reqwest's own message alone ("error sending request") says little.
/// The URL is dropped from it because it may carry credentials.
pub(super) fn error_chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entrypoints::{drain_log, test_ctx};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one canned HTTP response on loopback and returns its base URL.
    async fn serve_once(response: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
                // Closing with unread request bytes would reset the connection under the client.
                let _ = socket.read_to_end(&mut Vec::new()).await;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn returns_status_headers_and_json_body() {
        let base = serve_once(
            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 8\r\nconnection: close\r\n\r\n{\"a\":1}\n",
        )
        .await;
        let dir = tempfile::TempDir::new().expect("tempdir");
        let params = json!({"method": "post", "url": format!("{base}/hook?token=s3cret"),
                            "headers": {"Authorization": "Bearer s3cret"}, "body": {"x": 1},
                            "expectStatus": 201});
        let (ctx, mut rx) = test_ctx(params, dir.path());
        let metrics = ctx.metrics.clone();
        let result = Http.execute(ctx).await.expect("request succeeds");
        assert_eq!(result["status"], json!(201));
        assert_eq!(result["body"], json!({"a": 1}));
        assert_eq!(result["headers"]["content-type"], json!("application/json"));
        assert_eq!(metrics.snapshot().get("status"), Some(&json!(201)));
        let log = drain_log(&mut rx);
        assert!(
            log.iter()
                .any(|l| l.message.starts_with("POST http://127.0.0.1"))
        );
        assert!(log.iter().all(|l| !l.message.contains("s3cret")));
    }

    #[tokio::test]
    async fn unexpected_status_is_retryable() {
        let base = serve_once(
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope",
        )
        .await;
        let dir = tempfile::TempDir::new().expect("tempdir");
        let params = json!({"method": "GET", "url": base, "expectStatus": 200});
        let (ctx, _rx) = test_ctx(params, dir.path());
        assert_eq!(
            Http.execute(ctx).await,
            Err(JobError::Retryable(
                "expected status 200, got 404".to_string()
            ))
        );
    }

    #[tokio::test]
    async fn text_body_and_client_errors_succeed_without_expectation() {
        let base = serve_once(
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope",
        )
        .await;
        let dir = tempfile::TempDir::new().expect("tempdir");
        let (ctx, _rx) = test_ctx(json!({"method": "GET", "url": base}), dir.path());
        let result = Http.execute(ctx).await.expect("4xx is a result");
        assert_eq!(result["status"], json!(404));
        assert_eq!(result["body"], json!("nope"));
    }

    #[tokio::test]
    async fn server_errors_are_retryable() {
        let base = serve_once(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        let dir = tempfile::TempDir::new().expect("tempdir");
        let (ctx, _rx) = test_ctx(json!({"method": "GET", "url": base}), dir.path());
        assert!(
            matches!(Http.execute(ctx).await, Err(JobError::Retryable(m)) if m.contains("503"))
        );
    }

    #[tokio::test]
    async fn a_refused_destination_is_fatal_with_the_policy_error() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let url = "http://169.254.169.254/latest/meta-data/";
        let (ctx, mut rx) = test_ctx(json!({"method": "GET", "url": url}), dir.path());
        let expected = "GET http://169.254.169.254/latest/meta-data/: the egress policy refused \
                        169.254.169.254: 169.254.169.254 is in the denied range 169.254.0.0/16";
        assert_eq!(
            Http.execute(ctx).await,
            Err(JobError::Fatal(expected.to_string()))
        );
        assert!(drain_log(&mut rx).iter().any(|l| l.message == expected));
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let dir = tempfile::TempDir::new().expect("tempdir");
        let url = format!("http://user:pw@{addr}/");
        let (ctx, _rx) = test_ctx(json!({"method": "GET", "url": url}), dir.path());
        let result = Http.execute(ctx).await;
        assert!(
            matches!(&result, Err(JobError::Retryable(m)) if !m.contains("pw")),
            "{result:?}"
        );
    }
}
