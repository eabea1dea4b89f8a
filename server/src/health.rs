//! Keeps each registered service's `status` current: polls `baseUrl + healthPath`, backs off
//! while a service is failing, records the outcome and publishes `service.updated` when the
//! status changes. Runs in the `serve` process. A service without `healthPath` keeps the status
//! an operator sets (`PATCH /api/services/:slug`).
use std::{collections::HashMap, time::Duration};

use app::wire::{Service, ServiceStatus};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{events::EventBus, secrets::ServiceCredentials, store::Store};

/// How long one health request may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two checks of a failing service.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

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

/// One GET of the service's health URL with its registered headers (`headers` opened: plain
/// values as strings; references, which resolve only in service steps, are not sent).
pub async fn check(
    client: &reqwest::Client,
    service: &Service,
    headers: &serde_json::Map<String, Value>,
    path: &str,
) -> Health {
    let url = format!("{}{}", service.base_url.trim_end_matches('/'), path);
    let mut req = client.get(&url).timeout(CHECK_TIMEOUT);
    for (name, value) in headers {
        if let Some(value) = value.as_str() {
            req = req.header(name, value);
        }
    }
    match req.send().await {
        Ok(res) => {
            let code = res.status().as_u16();
            let body = res.bytes().await.unwrap_or_default();
            classify(code, &body)
        }
        // reqwest's message names the URL and the cause, never the headers.
        Err(e) => Health {
            status: ServiceStatus::Unhealthy,
            error: Some(format!(
                "health check failed: {}",
                if e.is_timeout() {
                    format!("no answer within {} s", CHECK_TIMEOUT.as_secs())
                } else if e.is_connect() {
                    "connection refused or unreachable".to_string()
                } else {
                    e.to_string()
                }
            )),
        },
    }
}

/// Polls every service with a `healthPath` until `stop`.
pub async fn run(
    store: Store,
    credentials: ServiceCredentials,
    bus: EventBus,
    interval: Duration,
    stop: CancellationToken,
) {
    let client = reqwest::Client::new();
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
            bus.publish("service.updated", json!({"service": after}))
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
}
