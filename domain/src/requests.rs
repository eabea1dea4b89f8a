//! Run requests as callers send them (`POST /api/jobs/:slug/run`, `POST /api/workflows/:slug/run`):
//! what both share (an object of known fields, parameters, an idempotency key that the body or
//! the `Idempotency-Key` header gives), and the workflow run request with what only the
//! server's triggers may set. Every problem is listed with its pointer.
use serde_json::{Map, Value, json};

use crate::{
    Problems,
    jobs::{is_server_key, server_key_problem},
    problems::pointer_segment,
};

/// The body as an object (`null`: an empty one); every field not in `known` is a problem.
/// None (and a problem) when the body is not an object at all.
pub fn request_object<'a>(
    body: &'a Value,
    known: &[&str],
    p: &mut Problems,
) -> Result<&'a Map<String, Value>, Problems> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let obj = match body {
        Value::Null => EMPTY.get_or_init(Map::new),
        Value::Object(o) => o,
        _ => {
            let mut only = Problems::new();
            only.add("", "the body must be a JSON object");
            return Err(only);
        }
    };
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            p.add(format!("/{}", pointer_segment(key)), "unknown field");
        }
    }
    Ok(obj)
}

/// `parameters`: an object (absent or `null`: an empty one); None (and a problem) otherwise.
pub fn parameters_field(obj: &Map<String, Value>, p: &mut Problems) -> Option<Value> {
    match obj.get("parameters") {
        None | Some(Value::Null) => Some(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            p.add("/parameters", "must be an object");
            None
        }
    }
}

/// The idempotency key: the body's `idempotencyKey`, else the `Idempotency-Key` header; 1 to
/// 255 bytes, and not in the namespace the server's triggers use.
pub fn idempotency_key(
    obj: &Map<String, Value>,
    header_key: Option<&str>,
    p: &mut Problems,
) -> Option<String> {
    let key = match (obj.get("idempotencyKey"), header_key) {
        (Some(Value::String(s)), _) if !s.is_empty() && s.len() <= 255 => Some(s.clone()),
        (Some(Value::Null) | None, Some(h)) if !h.is_empty() && h.len() <= 255 => {
            Some(h.to_string())
        }
        (Some(Value::Null) | None, None) => None,
        (Some(Value::Null) | None, Some(_)) => {
            p.add("/headers/Idempotency-Key", "must be 1 to 255 bytes");
            None
        }
        (Some(_), _) => {
            p.add("/idempotencyKey", "must be a string of 1 to 255 bytes");
            None
        }
    };
    match key {
        Some(k) if is_server_key(&k) => {
            p.add("/idempotencyKey", server_key_problem());
            None
        }
        k => k,
    }
}

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
    let obj = request_object(
        body,
        &["parameters", "triggeredBy", "trigger", "idempotencyKey"],
        &mut p,
    )?;
    let parameters = parameters_field(obj, &mut p).unwrap_or_else(|| json!({}));
    let triggered_by = triggered_by_field(obj, &mut p);
    let trigger = trigger_field(obj, &mut p);
    let idempotency_key = idempotency_key(obj, header_key, &mut p);
    p.finish(WorkflowRunRequest {
        parameters,
        triggered_by,
        trigger,
        idempotency_key,
    })
}

/// `triggeredBy`: a caller's label of who started the run; the server's own are refused.
fn triggered_by_field(obj: &Map<String, Value>, p: &mut Problems) -> Option<String> {
    match obj.get("triggeredBy") {
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
    }
}

/// `trigger`: only `manual` (or an object of type `manual` without what the server records).
fn trigger_field(obj: &Map<String, Value>, p: &mut Problems) -> Value {
    // Only the server starts runs of its schedule and event triggers, and only it records what
    // a trigger carries (`chain`, `rerunOf`): a caller's run is a manual one.
    let server_only = |t: &str| {
        format!(
            "{t:?} runs are started by the server's {t} triggers; a request can only start a \"manual\" run"
        )
    };
    match obj.get("trigger") {
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
    }
}
