//! `builtin:service-call` `{"serviceSlug", "request": {"method", "path", "query", "headers",
//! "body"}, "requireHealthy", "allowDegraded", "captureResponse"}`: one request to a
//! registered service; what a workflow's service step executes (the orchestrator builds these
//! parameters from the step with its templates rendered).
//!
//! - With `requireHealthy`, a service that is not healthy (or degraded, unless
//!   `allowDegraded`) fails the attempt with a retryable error: the step waits with its retry
//!   policy while the service is down (health-aware retries).
//! - Header values may be `{"secret": {"source", "key", "version"?}, "prefix"?}` references.
//!   They resolve here, at execution time, and their values are never logged or returned.
//! - The request goes through the engine's egress client: a `baseUrl` the egress policy refuses
//!   fails the step at once, and a redirect to another origin is not followed (the 3xx is the
//!   answer), so the service's headers and the step's never reach another host. At most 1 MiB
//!   of the response body is read.
//! - The result is `{"status", "latencyMs", "baseUrl"}` plus, with `captureResponse`,
//!   `"response": {"status", "headers", "body"}`. Status 5xx and 429 are retryable; any other
//!   status outside 2xx/3xx fails the step.
use std::time::Instant;

use reqwest::{
    Method, Url,
    header::{HeaderMap, HeaderName, HeaderValue},
};
use serde_json::{Map, Value, json};
use wire::ServiceStatus;

use super::{
    EntryPoint, JobError, JobResult, JobRunContext, Problem, SERVICE_CALL, checked_params, field,
    http::{body_value, error_chain, is_json, read_capped, response_headers},
};

pub(super) struct ServiceCall;

pub(super) fn check(params: &Map<String, Value>, problems: &mut Vec<Problem>) {
    if !field(params, "serviceSlug").is_some_and(Value::is_string) {
        problems.push((
            "/serviceSlug".into(),
            "is required and must be a string".into(),
        ));
    }
    match field(params, "request") {
        Some(Value::Object(request)) => {
            let method = field(request, "method").and_then(Value::as_str);
            if method
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
                .is_none()
            {
                problems.push(("/request/method".into(), "must be an HTTP method".into()));
            }
            if !field(request, "path").is_some_and(Value::is_string) {
                problems.push((
                    "/request/path".into(),
                    "is required and must be a string".into(),
                ));
            }
            if field(request, "headers").is_some_and(|h| !h.is_object()) {
                problems.push(("/request/headers".into(), "must be an object".into()));
            }
            if field(request, "query").is_some_and(|h| !h.is_object()) {
                problems.push(("/request/query".into(), "must be an object".into()));
            }
        }
        _ => problems.push((
            "/request".into(),
            "is required and must be an object".into(),
        )),
    }
}

fn flag(params: &Map<String, Value>, key: &str) -> bool {
    field(params, key).and_then(Value::as_bool).unwrap_or(false)
}

/// A query value as text (arrays repeat the key).
fn query_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `baseUrl` + `path` + `query`.
fn target_url(base: &str, path: &str, query: Option<&Map<String, Value>>) -> Result<Url, String> {
    let joined = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    let mut url = Url::parse(&joined).map_err(|e| format!("invalid URL {joined:?}: {e}"))?;
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            match v {
                Value::Array(items) => {
                    for item in items {
                        pairs.append_pair(k, &query_text(item));
                    }
                }
                Value::Null => {}
                other => {
                    pairs.append_pair(k, &query_text(other));
                }
            }
        }
    }
    Ok(url)
}

impl ServiceCall {
    /// The service's own headers, then the request's. References left in the request's
    /// headers (the engine resolves those in parameters before the handler runs) resolve
    /// here too. Errors name the header, never its value.
    async fn headers(
        ctx: &JobRunContext,
        service_headers: &Value,
        request: &Map<String, Value>,
    ) -> Result<HeaderMap, JobError> {
        let mut map = HeaderMap::new();
        let mut put = |name: &str, value: String| -> Result<(), JobError> {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| JobError::Fatal(format!("invalid header name '{name}'")))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| JobError::Fatal(format!("invalid value for header '{name}'")))?;
            value.set_sensitive(true);
            map.insert(header, value);
            Ok(())
        };
        // The service's own header values are credentials: kept out of logs and results like
        // resolved secrets.
        if let Some(given) = service_headers.as_object() {
            for (name, value) in given {
                let text = match value {
                    Value::String(s) => {
                        ctx.log.redactor().add(s);
                        s.clone()
                    }
                    other => Self::header_text(ctx, name, other).await?,
                };
                put(name, text)?;
            }
        }
        if let Some(Value::Object(given)) = field(request, "headers") {
            for (name, value) in given {
                put(name, Self::header_text(ctx, name, value).await?)?;
            }
        }
        Ok(map)
    }

    /// A header value as sent: strings as they are, secret references resolved.
    async fn header_text(
        ctx: &JobRunContext,
        name: &str,
        value: &Value,
    ) -> Result<String, JobError> {
        Ok(match value {
            Value::String(s) => s.clone(),
            Value::Object(reference) if reference.contains_key("secret") => {
                let at = format!("header '{name}'");
                let found = domain::secrets::references(value)
                    .map_err(|_| JobError::Fatal(format!("{at}: invalid secret reference")))?;
                let Some((_, reference)) = found.into_iter().next() else {
                    return Err(JobError::Fatal(format!("{at}: invalid secret reference")));
                };
                ctx.resolve_secret(&at, &reference).await?
            }
            other => query_text(other),
        })
    }
}

#[async_trait::async_trait]
impl EntryPoint for ServiceCall {
    fn name(&self) -> &'static str {
        SERVICE_CALL
    }

    /// Its destination (the service) must not move while the job's defaults carry secrets.
    fn rules(&self) -> domain::authority::EntryPointRules {
        domain::authority::EntryPointRules {
            destinations: &["serviceSlug"],
            ..Default::default()
        }
    }

    /// The job service steps execute as, seeded at every start when missing. Its retry policy
    /// is the default of service steps: five attempts with exponential backoff, so a step
    /// that requires a healthy service waits about half a minute for it.
    fn default_definition(&self) -> Option<Value> {
        Some(serde_json::json!({
            "slug": "service-call", "name": "Service call", "version": 1, "type": "service-triggered",
            "entryPoint": SERVICE_CALL,
            "parametersSchema": {"type": "object", "required": ["serviceSlug", "request"], "properties": {
                "serviceSlug": {"type": "string", "description": "A registered service"},
                "request": {"type": "object", "required": ["method", "path"], "properties": {
                    "method": {"type": "string"}, "path": {"type": "string"},
                    "query": {"type": "object"}, "headers": {"type": "object"}, "body": {}}},
                "requireHealthy": {"type": "boolean"}, "allowDegraded": {"type": "boolean"},
                "captureResponse": {"type": "boolean"}}},
            "defaultParameters": {"requireHealthy": false, "allowDegraded": false, "captureResponse": false},
            "timeoutMs": 30000,
            "retryPolicy": {"maxAttempts": 5, "strategy": "exponential", "initialDelayMs": 1000,
                "maxDelayMs": 15000, "jitter": "equal"},
            "metadata": {"tags": ["service"], "seeded": true}
        }))
    }

    fn check(&self, params: &Map<String, Value>, problems: &mut Vec<Problem>) {
        check(params, problems)
    }

    async fn execute(&self, ctx: JobRunContext) -> JobResult {
        let params = checked_params(SERVICE_CALL, &ctx.parameters)?;
        let slug = field(params, "serviceSlug")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(Value::Object(request)) = field(params, "request") else {
            return Err(JobError::Fatal("request must be an object".into()));
        };
        let service = Self::service(&ctx, slug).await?;
        if flag(params, "requireHealthy") {
            Self::require_healthy(&ctx, slug, &service, params)?;
        }
        let (method, url, builder) = Self::prepare(&ctx, slug, request, &service).await?;
        ctx.log
            .info(format!("{method} {} (service {slug})", url.path()));
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = exchange(builder) => outcome,
            () = ctx.cancel.cancelled() => return Err(JobError::Canceled),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        ctx.metrics.set("latencyMs", latency_ms);
        let (status, headers, body) = outcome.map_err(|e| {
            if let Some(r) = crate::egress::Refused::find(&e) {
                return refused(&ctx, &method, &url, slug, r);
            }
            let message = format!("{method} {} failed: {}", url.path(), error_chain(e));
            ctx.log.info(message.clone());
            JobError::Retryable(message)
        })?;
        ctx.metrics.set("status", status);
        ctx.log
            .info(format!("status {status} after {latency_ms} ms"));
        check_status(slug, status)?;
        let mut result =
            json!({"status": status, "latencyMs": latency_ms, "baseUrl": service.base_url});
        if flag(params, "captureResponse") {
            result["response"] = json!({"status": status, "headers": headers, "body": body});
        }
        Ok(result)
    }
}

impl ServiceCall {
    /// The registered service `slug` (its base URL and status go to the metrics); a service
    /// that cannot be read is a retryable error, one that is not registered a fatal one.
    async fn service(ctx: &JobRunContext, slug: &str) -> Result<wire::Service, JobError> {
        let service = ctx
            .services
            .service(slug)
            .await
            .map_err(|e| JobError::Retryable(format!("could not read service {slug}: {e}")))?
            .ok_or_else(|| JobError::Fatal(format!("service {slug} is not registered")))?;
        ctx.metrics.set("baseUrl", service.base_url.clone());
        ctx.metrics.set("serviceStatus", service.status.as_str());
        Ok(service)
    }

    /// `requireHealthy`: a retryable error (logged) unless the service is healthy, or
    /// degraded with `allowDegraded` in `params`.
    fn require_healthy(
        ctx: &JobRunContext,
        slug: &str,
        service: &wire::Service,
        params: &Map<String, Value>,
    ) -> Result<(), JobError> {
        let ok = match service.status {
            ServiceStatus::Healthy => true,
            ServiceStatus::Degraded => flag(params, "allowDegraded"),
            _ => false,
        };
        if ok {
            return Ok(());
        }
        let why = service
            .last_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        let msg = format!(
            "service {slug} is {}{why}; waiting for it to be healthy",
            service.status
        );
        ctx.log.info(msg.clone());
        Err(JobError::Retryable(msg))
    }

    /// The call's method, URL (the service's base URL, the request's path and query) and
    /// request as sent (headers, timeout, body). A destination the egress policy refuses
    /// fails the attempt.
    async fn prepare(
        ctx: &JobRunContext,
        slug: &str,
        request: &Map<String, Value>,
        service: &wire::Service,
    ) -> Result<(Method, Url, reqwest::RequestBuilder), JobError> {
        let method_text = field(request, "method")
            .and_then(Value::as_str)
            .unwrap_or("GET");
        let method = Method::from_bytes(method_text.as_bytes())
            .map_err(|_| JobError::Fatal(format!("invalid method {method_text}")))?;
        let path = field(request, "path")
            .and_then(Value::as_str)
            .unwrap_or("/");
        let query = field(request, "query").and_then(Value::as_object);
        let url = target_url(&service.base_url, path, query).map_err(JobError::Fatal)?;
        let headers = Self::headers(ctx, &service.headers, request).await?;
        let mut builder = ctx
            .http
            .request(method.clone(), url.clone())
            .map_err(|e| refused(ctx, &method, &url, slug, &e))?
            .headers(headers);
        if !ctx.timeout.is_zero() {
            builder = builder.timeout(ctx.timeout);
        }
        builder = match field(request, "body") {
            None => builder,
            Some(Value::String(body)) => builder.body(body.clone()),
            Some(body) => builder.json(body),
        };
        Ok((method, url, builder))
    }
}

/// Sends the request and reads the answer: its status, headers and body (at most 1 MiB).
async fn exchange(
    builder: reqwest::RequestBuilder,
) -> Result<(u16, Map<String, Value>, Value), reqwest::Error> {
    let mut response = builder.send().await?;
    let status = response.status().as_u16();
    let headers = response_headers(response.headers());
    let json_body = is_json(response.headers());
    let (bytes, truncated) = read_capped(&mut response).await?;
    Ok((status, headers, body_value(bytes, json_body, truncated)))
}

/// The fatal error (logged) of a `method` call to `url` of service `slug` that the egress
/// policy refused.
fn refused(
    ctx: &JobRunContext,
    method: &Method,
    url: &Url,
    slug: &str,
    refused: &crate::egress::Refused,
) -> JobError {
    let message = format!("{method} {} (service {slug}): {refused}", url.path());
    ctx.log.info(message.clone());
    JobError::Fatal(message)
}

/// The error of an answer with `status`: 5xx and 429 are retryable, any other 4xx fatal.
fn check_status(slug: &str, status: u16) -> Result<(), JobError> {
    if status >= 500 || status == 429 {
        return Err(JobError::Retryable(format!(
            "service {slug} answered with status {status}"
        )));
    }
    if status >= 400 {
        return Err(JobError::Fatal(format!(
            "service {slug} answered with status {status}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_joins_base_path_and_query() {
        let q = json!({"a": "x y", "n": 3, "many": [1, "b"], "none": null});
        let url = target_url("http://h:1/api/", "/hooks/build", q.as_object()).unwrap();
        assert_eq!(
            url.as_str(),
            "http://h:1/api/hooks/build?a=x+y&many=1&many=b&n=3"
        );
        assert!(target_url("not a url", "/x", None).is_err());
    }

    #[test]
    fn checks_name_every_problem() {
        let mut p = Vec::new();
        check(
            json!({"request": {"method": "NOT A METHOD", "headers": 1}})
                .as_object()
                .unwrap(),
            &mut p,
        );
        let paths: Vec<&str> = p.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/serviceSlug",
                "/request/method",
                "/request/path",
                "/request/headers"
            ]
        );
    }
}
