//! Workflow failure alerts. Every `serve` process follows `workflow.run.failed` events (which
//! it receives for the runs of all processes) and evaluates each failure:
//!
//! - **Count**: the failure of run R that ended at time t counts the workflow's failed runs
//!   that ended within (t - window, t], ordered by (completedAt, id) and including R itself.
//!   The count is read from the database, so every server computes the same number for R.
//! - **Crossing**: R crosses the threshold N when that count is exactly N: just before R the
//!   window held N - 1 failures. A failure that finds more than N is the same streak (no new
//!   alert); only when failures age out of the window and the count falls below N can a later
//!   failure cross again.
//! - **Once**: the process that first inserts the crossing's `alert_deliveries` row (dedupe key
//!   `workflow-failures:<slug>:<run id>:<completedAt ms>`, a unique index) owns it: it logs the
//!   structured warning and POSTs `{"workflowSlug", "failures", "windowMs", "lastRunId",
//!   "lastError"}` to the webhook, retrying with doubling backoff up to `--alert-max-attempts`,
//!   and records each attempt (`pending` → `delivered` | `failed`; `skipped` without a webhook).
//!   Other servers find the row and do nothing.
//!
//! A failed run that is resumed and fails again is a new failure (a new completion time). A
//! server that dies while delivering leaves its row `pending`; nobody re-sends it.
use std::{sync::Arc, time::Duration};

use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::events::Event;
use crate::{
    egress::{EgressClient, Refused},
    settings::AlertSettings,
    store::{NewAlertDelivery, Store, StoredEvent},
};

/// Timeout of one webhook request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct Alerts {
    store: Store,
    settings: AlertSettings,
    client: EgressClient,
}

impl Alerts {
    /// `client`: the egress client, built without redirects (a webhook's 3xx is a failed
    /// delivery, not a hop).
    pub fn new(store: Store, settings: AlertSettings, client: EgressClient) -> Alerts {
        Alerts {
            store,
            settings,
            client,
        }
    }

    /// Follows the bus until `stop`. Subscribe at start-up, before failures can happen.
    pub async fn follow(self, rx: broadcast::Receiver<Arc<StoredEvent>>, stop: CancellationToken) {
        let missed = "alerts: failures in the skipped events were not evaluated";
        crate::events::follow(rx, stop.clone(), missed, |ev| {
            if ev.event_type == "workflow.run.failed"
                && let Some(Event::WorkflowRun { run, .. }) = Event::decode(&ev)
            {
                // Deliveries wait and retry: never hold up the next event.
                tokio::spawn(self.clone().evaluate(run.id, stop.clone()));
            }
            std::future::ready(())
        })
        .await
    }

    /// Evaluates the failure of workflow run `run_id`: alerts when it crosses the threshold.
    async fn evaluate(self, run_id: String, stop: CancellationToken) {
        if let Err(e) = self.try_evaluate(&run_id, &stop).await {
            tracing::warn!(run_id = %run_id, error = %e, "alerts: could not evaluate a workflow failure");
        }
    }

    async fn try_evaluate(&self, run_id: &str, stop: &CancellationToken) -> anyhow::Result<()> {
        // The stored run: its completion time as the database holds it (the count compares
        // against it) and its status now (a run resumed meanwhile is no longer a failure).
        let Some(run) = self.store.get_workflow_run(run_id).await? else {
            return Ok(());
        };
        let (wire::WorkflowRunStatus::Failed, Some(ended)) = (run.status, run.completed_at) else {
            return Ok(());
        };
        let threshold = u64::from(self.settings.alert_threshold);
        let window_ms = self.settings.alert_window_ms;
        let after = ended - chrono::TimeDelta::milliseconds(window_ms as i64);
        let failures = self
            .store
            .count_workflow_failures(&run.workflow_slug, after, ended, &run.id)
            .await?;
        if failures != threshold {
            return Ok(());
        }
        let payload = json!({
            "workflowSlug": run.workflow_slug,
            "failures": failures,
            "windowMs": window_ms,
            "lastRunId": run.id,
            "lastError": run.error_message,
        });
        let webhook = self.settings.alert_webhook_url.clone();
        let claimed = self
            .store
            .claim_alert_delivery(NewAlertDelivery {
                dedupe_key: format!(
                    "workflow-failures:{}:{}:{}",
                    run.workflow_slug,
                    run.id,
                    ended.timestamp_millis()
                ),
                workflow_slug: run.workflow_slug.clone(),
                failures: failures as i32,
                window_ms: window_ms as i64,
                last_run_id: Some(run.id.clone()),
                payload: payload.clone(),
                status: if webhook.is_some() {
                    "pending"
                } else {
                    "skipped"
                }
                .to_string(),
            })
            .await?;
        let Some(delivery_id) = claimed else {
            // Another server claimed this crossing.
            return Ok(());
        };
        tracing::warn!(
            workflow = %run.workflow_slug,
            run_id = %run.id,
            failures,
            window_ms,
            last_error = run.error_message.as_deref().unwrap_or(""),
            alert_id = %delivery_id,
            webhook = webhook.is_some(),
            "workflow failure alert: {failures} failures within {window_ms} ms"
        );
        if let Some(url) = webhook {
            self.deliver(&delivery_id, url, &payload, stop).await?;
        }
        Ok(())
    }

    /// POSTs the alert until a 2xx answer or the last attempt, recording every attempt.
    async fn deliver(
        &self,
        delivery_id: &str,
        url: url::Url,
        payload: &serde_json::Value,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let max = self.settings.alert_max_attempts.max(1);
        let mut backoff = Duration::from_millis(self.settings.alert_backoff_ms);
        for attempt in 1..=max {
            let outcome = match self.client.request(reqwest::Method::POST, url.clone()) {
                Err(refused) => Err((format!("webhook request failed: {refused}"), true)),
                Ok(request) => match request.timeout(REQUEST_TIMEOUT).json(payload).send().await {
                    Ok(res) if res.status().is_success() => Ok(()),
                    Ok(res) => Err((format!("webhook answered {}", res.status()), false)),
                    Err(e) => match Refused::find(&e) {
                        Some(refused) => Err((format!("webhook request failed: {refused}"), true)),
                        // Without the URL: a webhook URL often carries a token.
                        None => Err((
                            format!("webhook request failed: {}", e.without_url()),
                            false,
                        )),
                    },
                },
            };
            let attempts = attempt as i32;
            // A destination the egress policy refuses stays refused: no more attempts.
            let outcome = outcome.map_err(|(why, last)| (why, last || attempt == max));
            match outcome {
                Ok(()) => {
                    self.store
                        .record_alert_attempt(delivery_id, "delivered", attempts, None)
                        .await?;
                    tracing::info!(alert_id = %delivery_id, attempts, "workflow failure alert delivered");
                    return Ok(());
                }
                Err((why, true)) => {
                    self.store
                        .record_alert_attempt(delivery_id, "failed", attempts, Some(why.clone()))
                        .await?;
                    tracing::warn!(alert_id = %delivery_id, attempts, error = %why, "workflow failure alert could not be delivered");
                    return Ok(());
                }
                Err((why, false)) => {
                    self.store
                        .record_alert_attempt(delivery_id, "pending", attempts, Some(why.clone()))
                        .await?;
                    tracing::info!(alert_id = %delivery_id, attempts, error = %why, retry_in_ms = backoff.as_millis() as u64, "workflow failure alert: retrying");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Ok(())
    }
}
