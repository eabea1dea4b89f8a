//! Workflow run requests: a caller's `POST /api/workflows/:slug/run` body, parsed with every
//! problem listed, and what only the server's triggers may set.

use serde_json::{Map, Value, json};

use domain::{
    Problems,
    jobs::{is_server_key, server_key_problem},
    problems::pointer_segment,
};

/// A parsed `POST /api/workflows/:slug/run` body.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRunRequest {
    pub parameters: Value,
    pub triggered_by: Option<String>,
    pub trigger: Value,
    pub idempotency_key: Option<String>,
}

/// Trigger types only the server's triggers start runs with.
const SERVER_TRIGGERS: [&str; 2] = ["schedule", "event"];

/// Whether `triggeredBy` names one of the server's triggers (`scheduler`, `event:<type>`).
fn is_server_triggered_by(value: &str) -> bool {
    let v = value.trim();
    v.eq_ignore_ascii_case(SCHEDULE_TRIGGERED_BY)
        || v.get(..EVENT_TRIGGERED_BY.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(EVENT_TRIGGERED_BY))
}

/// `triggeredBy` of runs the schedule triggers start.
pub const SCHEDULE_TRIGGERED_BY: &str = "scheduler";
/// Prefix of `triggeredBy` of runs the event triggers start (`event:<event type>`).
pub const EVENT_TRIGGERED_BY: &str = "event:";

impl WorkflowRunRequest {
    /// A manual run with `parameters` and every option at its default (the launch form).
    pub fn manual(parameters: Value) -> WorkflowRunRequest {
        WorkflowRunRequest {
            parameters,
            triggered_by: None,
            trigger: json!({"type": "manual"}),
            idempotency_key: None,
        }
    }
}

/// Parses a run request; every problem with its pointer.
pub fn parse_workflow_run_request(
    body: &Value,
    header_key: Option<&str>,
) -> Result<WorkflowRunRequest, Problems> {
    let mut p = Problems::new();
    let empty = Map::new();
    let obj = match body {
        Value::Null => &empty,
        Value::Object(o) => o,
        _ => {
            p.add("", "the body must be a JSON object");
            return Err(p);
        }
    };
    for key in obj.keys() {
        if !["parameters", "triggeredBy", "trigger", "idempotencyKey"].contains(&key.as_str()) {
            p.add(format!("/{}", pointer_segment(key)), "unknown field");
        }
    }
    let parameters = match obj.get("parameters") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            p.add("/parameters", "must be an object");
            json!({})
        }
    };
    let triggered_by = match obj.get("triggeredBy") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_server_triggered_by(s) => {
            p.add(
                "/triggeredBy",
                "\"scheduler\" and \"event:...\" name the server's schedule and event triggers; a request cannot claim them",
            );
            None
        }
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 => {
            Some(s.trim().to_string())
        }
        Some(_) => {
            p.add(
                "/triggeredBy",
                "must be a non-empty string of at most 255 characters",
            );
            None
        }
    };
    // Only the server starts runs of its schedule and event triggers, and only it records what
    // a trigger carries (`chain`, `rerunOf`): a caller's run is a manual one.
    let server_only = |t: &str| {
        format!(
            "{t:?} runs are started by the server's {t} triggers; a request can only start a \"manual\" run"
        )
    };
    let trigger = match obj.get("trigger") {
        None | Some(Value::Null) => json!({"type": "manual"}),
        Some(Value::String(t)) if t == "manual" => json!({"type": "manual"}),
        Some(Value::String(t)) if SERVER_TRIGGERS.contains(&t.as_str()) => {
            p.add("/trigger", server_only(t));
            json!({"type": "manual"})
        }
        Some(Value::Object(o)) => {
            let before = p.iter().count();
            if o.contains_key("chain") {
                p.add(
                    "/trigger/chain",
                    "is recorded by the server for runs its event triggers start; a request cannot set it",
                );
            }
            if o.contains_key("rerunOf") {
                p.add(
                    "/trigger/rerunOf",
                    "is recorded by the server for reruns (POST /api/workflow-runs/{id}/rerun); a request cannot set it",
                );
            }
            match o.get("type").and_then(Value::as_str) {
                Some("manual") => {}
                Some(t) if SERVER_TRIGGERS.contains(&t) => p.add("/trigger/type", server_only(t)),
                _ => p.add("/trigger/type", "must be \"manual\""),
            }
            if p.iter().count() == before {
                Value::Object(o.clone())
            } else {
                json!({"type": "manual"})
            }
        }
        Some(_) => {
            p.add(
                "/trigger",
                "must be \"manual\" or an object with \"type\": \"manual\"",
            );
            json!({"type": "manual"})
        }
    };
    let key = match (obj.get("idempotencyKey"), header_key) {
        (Some(Value::String(s)), _) if !s.is_empty() && s.len() <= 255 => Some(s.clone()),
        (Some(Value::Null) | None, Some(h)) if !h.is_empty() && h.len() <= 255 => {
            Some(h.to_string())
        }
        (Some(Value::Null) | None, None) => None,
        (Some(Value::Null) | None, Some(_)) => {
            p.add("", "the Idempotency-Key header must be 1 to 255 bytes");
            None
        }
        (Some(_), _) => {
            p.add("/idempotencyKey", "must be a string of 1 to 255 bytes");
            None
        }
    };
    let key = match key {
        Some(k) if is_server_key(&k) => {
            p.add("/idempotencyKey", server_key_problem());
            None
        }
        k => k,
    };
    p.finish(WorkflowRunRequest {
        parameters,
        triggered_by,
        trigger,
        idempotency_key: key,
    })
}
