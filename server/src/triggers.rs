//! Schedule and event triggers of workflows, run by every `serve` process.
//!
//! - `{"type": "schedule", "options": {"cron", "parameters"}}`: a run at every fire time of the
//!   cron expression (checked every second; fire times while no server was up are not caught
//!   up).
//! - `{"type": "event", "options": {"event", "filter"}}`: a run for every event whose type
//!   matches (`*` matches one segment) and whose payload has the filter's fields with those
//!   values (looked up at the top level and in the payload's `run`/`job`/`workflow`/`service`
//!   object). A workflow's own `workflow.run.*` events never trigger it (no loops).
//!
//! Several servers may share a database: every start carries an idempotency key made of the
//! trigger and the fire time or event id, so each fire starts exactly one run.
use std::time::Duration;

use app::wire::WorkflowDefinition;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::workflow::{TriggerSpec, parse_cron},
    events::EventBus,
    workflows::WorkflowService,
};

/// How often the definitions are re-read even without a change event.
const REFRESH: Duration = Duration::from_secs(30);

/// Whether an event type matches a pattern such as `workflow.run.*`.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = event_type.split('.').collect();
    p.len() == t.len() && p.iter().zip(&t).all(|(p, t)| *p == "*" || p == t)
}

/// Whether the event's data (`{"run": ...}` and the like) carries every field of the filter with the same value.
pub fn filter_matches(filter: &serde_json::Map<String, Value>, payload: &Value) -> bool {
    filter.iter().all(|(key, want)| {
        let found = payload.get(key).or_else(|| {
            ["run", "job", "workflow", "service"]
                .iter()
                .find_map(|o| payload.get(*o).and_then(|v| v.get(key)))
        });
        found == Some(want)
    })
}

fn triggers_of(w: &WorkflowDefinition) -> Vec<TriggerSpec> {
    serde_json::from_value(w.triggers.clone()).unwrap_or_default()
}

async fn start(service: &WorkflowService, slug: &str, body: Value) {
    match service.run_workflow(slug, &body, None).await {
        Ok((run, true)) => {
            tracing::info!(workflow = slug, run_id = %run.id, trigger = %body["trigger"], "triggered a workflow run")
        }
        Ok((_, false)) => {} // another server started this one
        Err(e) => {
            tracing::warn!(workflow = slug, error = %e, trigger = %body["trigger"], "could not start a triggered run")
        }
    }
}

/// Runs until `stop`.
pub async fn run(service: WorkflowService, bus: EventBus, stop: CancellationToken) {
    let mut events = bus.subscribe();
    let mut workflows: Vec<WorkflowDefinition> = Vec::new();
    let mut loaded_at: Option<tokio::time::Instant> = None;
    let mut last_tick: DateTime<Utc> = Utc::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if loaded_at.is_none_or(|t| t.elapsed() > REFRESH) {
            match service.list_workflows().await {
                Ok(w) => workflows = w,
                Err(e) => tracing::warn!(error = %e, "could not read workflows for triggers"),
            }
            loaded_at = Some(tokio::time::Instant::now());
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let now = Utc::now();
                for w in &workflows {
                    for (i, t) in triggers_of(w).iter().enumerate() {
                        let TriggerSpec::Schedule(s) = t else { continue };
                        let Ok(schedule) = parse_cron(&s.cron) else { continue };
                        for at in schedule.after(&last_tick).take_while(|at| *at <= now) {
                            let key = format!("schedule:v{}:{i}:{}", w.version, at.to_rfc3339());
                            let body = json!({"parameters": s.parameters, "triggeredBy": "scheduler",
                                "trigger": {"type": "schedule", "cron": s.cron, "firedAt": at},
                                "idempotencyKey": key});
                            start(&service, &w.slug, body).await;
                        }
                    }
                }
                last_tick = now;
            }
            event = events.recv() => {
                let event = match event {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "event triggers fell behind; some events were not matched");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if event.event_type == "workflow.definition.updated" {
                    loaded_at = None;
                    continue;
                }
                for w in &workflows {
                    let data = event.payload.get("data").unwrap_or(&Value::Null);
                    let own = event.event_type.starts_with("workflow.run.")
                        && data.pointer("/run/workflowSlug").and_then(Value::as_str) == Some(w.slug.as_str());
                    if own {
                        continue;
                    }
                    for (i, t) in triggers_of(w).iter().enumerate() {
                        let TriggerSpec::Event(e) = t else { continue };
                        if type_matches(&e.event, &event.event_type) && filter_matches(&e.filter, data) {
                            let body = json!({"parameters": {}, "triggeredBy": format!("event:{}", event.event_type),
                                "trigger": {"type": "event", "event": event.event_type, "eventId": event.id},
                                "idempotencyKey": format!("event:{}:{i}", event.id)});
                            start(&service, &w.slug, body).await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_match_segment_wildcards() {
        assert!(type_matches(
            "workflow.run.succeeded",
            "workflow.run.succeeded"
        ));
        assert!(type_matches("workflow.run.*", "workflow.run.failed"));
        assert!(type_matches("*.run.*", "job.run.failed"));
        assert!(!type_matches("workflow.run.*", "workflow.run"));
        assert!(!type_matches("workflow.*", "workflow.run.failed"));
        assert!(!type_matches("job.run.failed", "job.run.succeeded"));
    }

    #[test]
    fn filters_look_at_the_payload_and_its_object() {
        let payload = json!({"run": {"workflowSlug": "other", "status": "succeeded"}});
        let f = |v: Value| v.as_object().cloned().unwrap();
        assert!(filter_matches(&f(json!({})), &payload));
        assert!(filter_matches(
            &f(json!({"workflowSlug": "other"})),
            &payload
        ));
        assert!(!filter_matches(
            &f(json!({"workflowSlug": "else"})),
            &payload
        ));
        assert!(!filter_matches(&f(json!({"missing": 1})), &payload));
    }
}
