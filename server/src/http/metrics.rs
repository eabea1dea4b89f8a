//! `GET /metrics` (Prometheus text, or the page when the client prefers HTML) and
//! `GET /api/metrics` (api.md "Operations").
use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use wire::{Data, MetricsReport};

use super::{AppState, Reply, error::ApiError, reply};
use crate::metrics::Metrics;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /api/metrics`
#[utoipa::path(get, path = "/api/metrics", tag = "operations",
    responses((status = 200, description = "run counts by status, failure rates over the last hour, queue depth, duration summaries", body = Data<MetricsReport>)))]
pub async fn api_metrics(State(s): State<AppState>) -> Reply<MetricsReport> {
    match s.metrics.report().await {
        Ok(report) => Ok(reply(StatusCode::OK, report)),
        Err(e) => {
            tracing::error!(error = %e, "metrics: database figures unavailable");
            Err(ApiError::internal())
        }
    }
}

/// `GET /metrics` for scrapers (documented here; served by [`prometheus_unless_html`]).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4; the /metrics page (HTML) instead when the Accept header prefers text/html",
               content((String = "text/plain; version=0.0.4"), (String = "text/html"))),
              (status = 500, description = "the figures could not be read from the database", content_type = "text/plain", body = String)))]
pub async fn prometheus(metrics: &Metrics) -> Response {
    match metrics.prometheus_text().await {
        Ok(text) => ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: could not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
        }
    }
}

/// `/metrics` is both the scrape endpoint and a page: Prometheus text unless the `Accept`
/// header prefers `text/html` (browsers) over `text/plain` and OpenMetrics.
pub async fn prometheus_unless_html(
    State(metrics): State<Metrics>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if (path == "/metrics" || path == "/metrics/")
        && (req.method() == Method::GET || req.method() == Method::HEAD)
        && !prefers_html(req.headers())
    {
        return prometheus(&metrics).await;
    }
    next.run(req).await
}

/// Whether `text/html` has a higher quality than every text exposition type (and than `*/*`
/// when neither is named). No `Accept` header: not HTML.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut html = 0.0f32;
    let mut text = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" | "application/xhtml+xml" => html = html.max(q),
            "text/plain" | "application/openmetrics-text" | "*/*" | "text/*" => text = text.max(q),
            _ => {}
        }
    }
    html > 0.0 && html > text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn browsers_get_the_page_scrapers_the_text() {
        assert!(prefers_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!prefers_html(&accept(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!prefers_html(&accept("*/*")));
        assert!(!prefers_html(&HeaderMap::new()));
        assert!(!prefers_html(&accept("text/html;q=0.1,text/plain")));
        assert!(!prefers_html(&accept("text/html;q=0")));
    }
}
