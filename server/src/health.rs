//! Keeps each registered service's `status` current: polls `baseUrl + healthPath`, backs off
//! while a service is failing, records the outcome and publishes `service.updated` when the
//! status changes. Runs in the `serve` process. A service without `healthPath` keeps the status
//! an operator sets (`PATCH /api/services/:slug`).
//!
//! Checks go through the server's egress client (`egress.rs`: the egress policy, same-origin
//! redirects, no proxy) and read at most `MAX_BODY_BYTES` of the answer: a health endpoint that
//! streams an endless body is classified from its first 64 KiB.
use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::{Service, ServiceStatus};

use crate::{
    application::secrets::ServiceCredentials,
    egress::{EgressClient, Refused},
    events::EventBus,
    store::Store,
};

/// How long one health request may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two checks of a failing service.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// What is read of a health answer's body; the rest is not read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What one health request found.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: ServiceStatus,
    pub error: Option<String>,
}

/// Maps a health answer to a status: 2xx is healthy (degraded when the body says
/// `{"status": "degraded"}`), 429 is degraded (up, but shedding load), anything else unhealthy.
pub fn classify(http_status: u16, body: &[u8]) -> Health {
    match http_status {
        200..=299 => {
            let said = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                v.get("status")
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase)
            });
            if said.as_deref() == Some("degraded") {
                Health {
                    status: ServiceStatus::Degraded,
                    error: Some("the service reports itself degraded".into()),
                }
            } else {
                Health {
                    status: ServiceStatus::Healthy,
                    error: None,
                }
            }
        }
        429 => Health {
            status: ServiceStatus::Degraded,
            error: Some("health check answered HTTP 429".into()),
        },
        code => Health {
            status: ServiceStatus::Unhealthy,
            error: Some(format!("health check answered HTTP {code}")),
        },
    }
}

/// The wait before the next check: `interval` while healthy, doubling with each consecutive
/// failure up to `MAX_BACKOFF`.
pub fn next_wait(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(10);
    interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(interval))
}

fn unhealthy(error: String) -> Health {
    Health {
        status: ServiceStatus::Unhealthy,
        error: Some(error),
    }
}

/// One GET of the service's health URL with its registered headers (`headers` opened: plain
/// values as strings; references, which resolve only in service steps, are not sent).
pub async fn check(
    client: &EgressClient,
    service: &Service,
    headers: &serde_json::Map<String, Value>,
    path: &str,
) -> Health {
    let url = format!("{}{}", service.base_url.trim_end_matches('/'), path);
    let Ok(url) = reqwest::Url::parse(&url) else {
        return unhealthy("health check failed: the health URL is not a valid URL".into());
    };
    let mut req = match client.request(reqwest::Method::GET, url) {
        Ok(req) => req.timeout(CHECK_TIMEOUT),
        Err(refused) => return unhealthy(format!("health check failed: {refused}")),
    };
    for (name, value) in headers {
        if let Some(value) = value.as_str() {
            req = req.header(name, value);
        }
    }
    match req.send().await {
        Ok(mut res) => {
            let code = res.status().as_u16();
            // Classified from what was read (at most the cap); a body that fails midway
            // counts as empty.
            let body = crate::egress::read_capped(&mut res, MAX_BODY_BYTES)
                .await
                .map(|(body, _)| body)
                .unwrap_or_default();
            classify(code, &body)
        }
        // reqwest's message names the URL and the cause, never the headers.
        Err(e) => unhealthy(format!(
            "health check failed: {}",
            match Refused::find(&e) {
                Some(refused) => refused.to_string(),
                None if e.is_timeout() => format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
                None if e.is_connect() => "connection refused or unreachable".to_string(),
                None => e.to_string(),
            }
        )),
    }
}

/// Polls every service with a `healthPath` until `stop`.
pub async fn run(
    store: Store,
    credentials: ServiceCredentials,
    bus: EventBus,
    client: EgressClient,
    interval: Duration,
    stop: CancellationToken,
) {
    // Per service id: when it is due next and how many checks in a row failed.
    let mut schedule: HashMap<String, (Instant, u32)> = HashMap::new();
    let tick = (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let services = match store.list_services_with_headers().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "health poller could not list services");
                Vec::new()
            }
        };
        schedule.retain(|id, _| services.iter().any(|(s, _)| &s.id == id));
        let now = Instant::now();
        let due: Vec<(Service, serde_json::Map<String, Value>, String)> = services
            .into_iter()
            .filter_map(|(s, stored)| {
                let path = s.health_path.clone()?;
                let is_due = schedule.get(&s.id).is_none_or(|(at, _)| *at <= now);
                if !is_due {
                    return None;
                }
                match credentials.open_headers(&s.slug, &stored) {
                    Ok(headers) => Some((s, headers, path)),
                    Err(e) => {
                        tracing::warn!(service = %s.slug, error = %e, "health check skipped");
                        None
                    }
                }
            })
            .collect();
        let checks = due
            .iter()
            .map(|(s, headers, path)| check(&client, s, headers, path));
        let results = tokio::select! {
            r = futures::future::join_all(checks) => r,
            _ = stop.cancelled() => return,
        };
        for ((service, _, _), health) in due.into_iter().zip(results) {
            let failures = match health.status {
                ServiceStatus::Healthy => 0,
                _ => schedule.get(&service.id).map_or(0, |(_, f)| f + 1),
            };
            schedule.insert(
                service.id.clone(),
                (Instant::now() + next_wait(interval, failures), failures),
            );
            record(&store, &bus, &service, health).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn record(store: &Store, bus: &EventBus, before: &Service, health: Health) {
    let changed = before.status != health.status;
    match store
        .record_service_health(&before.id, health.status, health.error.clone(), Utc::now())
        .await
    {
        Ok(Some(after)) if changed => {
            tracing::info!(service = %after.slug, from = %before.status, to = %after.status, "service status changed");
            bus.publish(crate::events::Event::Service(after.clone()))
                .await;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(service = %before.slug, error = %e, "could not record a health check")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_map_to_statuses() {
        assert_eq!(classify(200, b"").status, ServiceStatus::Healthy);
        assert_eq!(classify(204, b"ok").error, None);
        assert_eq!(
            classify(200, br#"{"status": "ok"}"#).status,
            ServiceStatus::Healthy
        );
        assert_eq!(
            classify(200, br#"{"status": "Degraded"}"#).status,
            ServiceStatus::Degraded
        );
        assert_eq!(classify(429, b"").status, ServiceStatus::Degraded);
        let down = classify(503, b"");
        assert_eq!(down.status, ServiceStatus::Unhealthy);
        assert_eq!(
            down.error.as_deref(),
            Some("health check answered HTTP 503")
        );
        assert_eq!(classify(404, b"").status, ServiceStatus::Unhealthy);
    }

    #[test]
    fn failing_services_are_checked_less_often() {
        let i = Duration::from_secs(15);
        assert_eq!(next_wait(i, 0), i);
        assert_eq!(next_wait(i, 1), Duration::from_secs(30));
        assert_eq!(next_wait(i, 3), Duration::from_secs(120));
        assert_eq!(next_wait(i, 8), MAX_BACKOFF);
        assert_eq!(next_wait(i, 40), MAX_BACKOFF);
        // An interval longer than the cap is kept as it is.
        let long = Duration::from_secs(600);
        assert_eq!(next_wait(long, 2), long);
    }

    // ---- checks against real local servers ----

    use crate::egress::{EgressPolicy, Redirects};
    use axum::{
        Router,
        body::{Body, Bytes},
        http::{StatusCode, header},
        routing::get,
    };
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        base
    }

    fn service(base_url: &str, headers: Value) -> Service {
        Service {
            id: "s".into(),
            slug: "s".into(),
            display_name: "S".into(),
            kind: "http".into(),
            base_url: base_url.into(),
            health_path: Some("/health".into()),
            headers,
            metadata: json!({}),
            status: ServiceStatus::Unknown,
            last_checked_at: None,
            last_error: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn client() -> EgressClient {
        EgressClient::build(Arc::new(EgressPolicy::default()), Redirects::SameOrigin).unwrap()
    }

    /// A 200 whose body never ends (16 KiB every millisecond), counting what it produced.
    fn endless(produced: Arc<AtomicUsize>) -> Router {
        Router::new().route(
            "/health",
            get(move || {
                let produced = produced.clone();
                async move {
                    let chunks = futures::stream::unfold(produced, |produced| async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        produced.fetch_add(16 * 1024, Ordering::SeqCst);
                        let chunk = Bytes::from(vec![b' '; 16 * 1024]);
                        Some((Ok::<_, std::convert::Infallible>(chunk), produced))
                    });
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        Body::from_stream(chunks),
                    )
                }
            }),
        )
    }

    #[tokio::test]
    async fn an_endless_body_is_classified_from_its_first_bytes() {
        let produced = Arc::new(AtomicUsize::new(0));
        let base = serve(endless(produced.clone())).await;
        let started = std::time::Instant::now();
        // Without the cap the body is read until the 5 s request timeout.
        let health = tokio::time::timeout(
            Duration::from_secs(3),
            check(
                &client(),
                &service(&base, json!({})),
                &Default::default(),
                "/health",
            ),
        )
        .await
        .expect("classified long before the request timeout");
        assert_eq!(health.status, ServiceStatus::Healthy, "{health:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The connection is gone: the server stops producing soon after.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = produced.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(produced.load(Ordering::SeqCst), after, "still streaming");
        assert!(after < 8 * 1024 * 1024, "{after} bytes produced");
    }

    #[tokio::test]
    async fn refused_destinations_and_other_origins_are_unhealthy_without_leaking_headers() {
        let health = check(
            &client(),
            &service("http://169.254.169.254", json!({})),
            &Default::default(),
            "/latest/meta-data/",
        )
        .await;
        assert_eq!(health.status, ServiceStatus::Unhealthy);
        assert_eq!(
            health.error.as_deref(),
            Some(
                "health check failed: the egress policy refused 169.254.169.254: \
                 169.254.169.254 is in the denied range 169.254.0.0/16"
            )
        );

        let reached = Arc::new(AtomicUsize::new(0));
        let counter = reached.clone();
        let other = serve(Router::new().route(
            "/health",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        ))
        .await;
        let away = format!("{other}/health");
        let base = serve(Router::new().route(
            "/health",
            get(move || async move { (StatusCode::FOUND, [(header::LOCATION, away)]) }),
        ))
        .await;
        let headers = json!({"X-Service-Key": "k3y"});
        let health = check(
            &client(),
            &service(&base, headers.clone()),
            headers.as_object().expect("object"),
            "/health",
        )
        .await;
        assert_eq!(health.status, ServiceStatus::Unhealthy);
        assert_eq!(
            health.error.as_deref(),
            Some("health check answered HTTP 302")
        );
        assert_eq!(reached.load(Ordering::SeqCst), 0);
    }
}
