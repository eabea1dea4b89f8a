//! Schedule and event triggers of workflows, run by every `serve` process.
//!
//! - `{"type": "schedule", "options": {"cron", "parameters"}}`: a run at every fire time of the
//!   cron expression (checked every second; fire times while no server was up are not caught
//!   up).
//! - `{"type": "event", "options": {"event", "filter"}}`: a run for every event whose type
//!   matches (`*` matches one segment) and whose payload has the filter's fields with those
//!   values (looked up at the top level and in the payload's `run`/`job`/`workflow`/`service`
//!   object).
//!
//! Runs started by events form chains: a run's trigger records `chain`, the workflow runs
//! whose events led to it (the run an event belongs to, for a step's `job.run.*` event the
//! workflow run of the step, then that run's own chain). A workflow never starts from an event
//! of a run in its own chain (its own runs and their steps' job runs, or a loop through other
//! workflows), and a chain stops after [`MAX_CHAIN`] runs. Only the server writes `chain`.
//!
//! Several servers may share a database: every start carries an idempotency key made of the
//! trigger and the fire time or event id, so each fire starts exactly one run. These keys start
//! with `switchyard:` (`domain::jobs::SERVER_KEY_PREFIX`), which requests may not use, and only
//! these runs carry the trigger types `schedule` and `event` (`parse_workflow_run_request`
//! refuses them from callers): no caller can pre-empt or impersonate a fire.
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wire::WorkflowDefinition;

use crate::application::orchestrator::{
    EVENT_TRIGGERED_BY, SCHEDULE_TRIGGERED_BY, WorkflowRunRequest,
};
use crate::application::workflows::WorkflowService;
use crate::events::{Event, EventBus};
use domain::jobs::SERVER_KEY_PREFIX;
use domain::workflow::{TriggerSpec, parse_cron};

/// How often the definitions are re-read even without a change event.
const REFRESH: Duration = Duration::from_secs(30);

/// The most runs one chain of event triggers may hold (the run that would be next is not
/// started).
pub const MAX_CHAIN: usize = 8;

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

async fn start(service: &WorkflowService, slug: &str, request: WorkflowRunRequest) {
    let trigger = request.trigger.clone();
    match service.run_triggered(slug, request).await {
        Ok((run, true)) => {
            tracing::info!(workflow = slug, run_id = %run.id, trigger = %trigger, "triggered a workflow run")
        }
        Ok((_, false)) => {} // another server started this one
        Err(e) => {
            tracing::warn!(workflow = slug, error = %e, trigger = %trigger, "could not start a triggered run")
        }
    }
}

/// The chain of the run an event belongs to, that run included (see the module docs): empty
/// for events of no workflow run.
async fn chain_of(service: &WorkflowService, event: Option<&Event>) -> Vec<Value> {
    let run = match event {
        Some(Event::WorkflowRun { run, .. }) => Some(run.clone()),
        Some(Event::JobRun(job_run)) => match &job_run.workflow_run_id {
            Some(id) => match service.get_workflow_run(id).await {
                Ok(run) => Some(run),
                Err(e) => {
                    tracing::warn!(workflow_run_id = %id, error = %e, "could not read the workflow run of a step's event");
                    None
                }
            },
            None => None,
        },
        _ => None,
    };
    let Some(run) = run else {
        return Vec::new();
    };
    let mut chain: Vec<Value> = run
        .trigger
        .get("chain")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    chain.push(json!({"workflowSlug": run.workflow_slug, "runId": run.id}));
    chain
}

/// Why `workflow` may not start from an event whose run has `chain`, if it may not.
pub fn chain_refusal(workflow: &str, chain: &[Value]) -> Option<String> {
    if chain
        .iter()
        .any(|link| link.get("workflowSlug").and_then(Value::as_str) == Some(workflow))
    {
        return Some(format!(
            "the event comes from a run of {workflow} or of a run it started: starting it would loop"
        ));
    }
    (chain.len() >= MAX_CHAIN).then(|| {
        format!(
            "the chain of event-triggered runs already holds {MAX_CHAIN} runs, the most allowed"
        )
    })
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
                            let key = format!("{SERVER_KEY_PREFIX}schedule:v{}:{i}:{}", w.version, at.to_rfc3339());
                            let request = WorkflowRunRequest {
                                parameters: s.parameters.clone(),
                                triggered_by: Some(SCHEDULE_TRIGGERED_BY.into()),
                                trigger: json!({"type": "schedule", "cron": s.cron, "firedAt": at}),
                                idempotency_key: Some(key),
                            };
                            start(&service, &w.slug, request).await;
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
                let data = event.payload.get("data").unwrap_or(&Value::Null);
                // Read once per event, and only when some trigger matches it.
                let mut chain: Option<Vec<Value>> = None;
                for w in &workflows {
                    for (i, t) in triggers_of(w).iter().enumerate() {
                        let TriggerSpec::Event(e) = t else { continue };
                        if !(type_matches(&e.event, &event.event_type) && filter_matches(&e.filter, data)) {
                            continue;
                        }
                        if chain.is_none() {
                            let decoded = Event::decode(&event);
                            chain = Some(chain_of(&service, decoded.as_ref()).await);
                        }
                        let chain = chain.clone().unwrap_or_default();
                        if let Some(why) = chain_refusal(&w.slug, &chain) {
                            tracing::warn!(workflow = %w.slug, event = %event.event_type, event_id = event.id, "event trigger not fired: {why}");
                            continue;
                        }
                        let request = WorkflowRunRequest {
                            parameters: json!({}),
                            triggered_by: Some(format!("{EVENT_TRIGGERED_BY}{}", event.event_type)),
                            trigger: json!({"type": "event", "event": event.event_type,
                                "eventId": event.id, "chain": chain}),
                            idempotency_key: Some(format!("{SERVER_KEY_PREFIX}event:{}:{i}", event.id)),
                        };
                        start(&service, &w.slug, request).await;
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
    fn chains_stop_at_loops_and_at_the_cap() {
        let link = |slug: &str| json!({"workflowSlug": slug, "runId": "r"});
        assert_eq!(chain_refusal("a", &[]), None);
        assert_eq!(chain_refusal("a", &[link("b")]), None);
        // Its own run's events, or its steps' (the step's workflow run is the last link).
        assert!(chain_refusal("a", &[link("a")]).is_some());
        // a -> b -> a
        assert!(chain_refusal("a", &[link("a"), link("b")]).is_some());
        let long: Vec<Value> = (0..MAX_CHAIN).map(|i| link(&format!("w{i}"))).collect();
        assert!(chain_refusal("other", &long[..MAX_CHAIN - 1]).is_none());
        assert!(
            chain_refusal("other", &long).is_some_and(|why| why.contains(&MAX_CHAIN.to_string()))
        );
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
