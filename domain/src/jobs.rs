//! Job definitions and run requests: parsed once from JSON into checked domain values, with
//! every problem reported at once.
use crate::values::{Jitter, JobType, RetryPolicy, RetryStrategy, Trigger};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Problems,
    problems::pointer_segment,
    requests::{idempotency_key, parameters_field, request_object},
};

pub const MIN_TIMEOUT_MS: i64 = 1_000;
pub const MAX_TIMEOUT_MS: i64 = 86_400_000;
pub const DEFAULT_TIMEOUT_MS: i64 = 600_000;
pub const MAX_DELAY_MS: i64 = 30 * 86_400_000;

/// A slug: `^[a-z0-9][a-z0-9_-]{0,99}$`, lower-cased on input. Stored as a JSON string
/// (checked again when loaded).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl TryFrom<String> for Slug {
    type Error = String;

    fn try_from(value: String) -> Result<Slug, String> {
        Slug::parse(&value)
    }
}

impl From<Slug> for String {
    fn from(slug: Slug) -> String {
        slug.0
    }
}

impl std::fmt::Display for Slug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Slug {
    pub fn parse(input: &str) -> Result<Slug, String> {
        let lower = input.to_ascii_lowercase();
        let mut chars = lower.chars();
        let ok_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_rest = lower.len() <= 100
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok_first && ok_rest {
            Ok(Slug(lower))
        } else {
            Err("must match ^[a-z0-9][a-z0-9_-]{0,99}$".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated job definition as submitted (without id and timestamps).
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub slug: Slug,
    pub name: String,
    pub version: i32,
    pub job_type: JobType,
    pub entry_point: String,
    pub parameters_schema: Value,
    pub default_parameters: Value,
    pub timeout_ms: i64,
    pub retry_policy: RetryPolicy,
    pub metadata: Value,
}

const JOB_FIELDS: &[&str] = &[
    "slug",
    "name",
    "version",
    "type",
    "entryPoint",
    "parametersSchema",
    "defaultParameters",
    "timeoutMs",
    "retryPolicy",
    "metadata",
    // Read-only fields a client may echo back from a GET; ignored.
    "id",
    "createdAt",
    "updatedAt",
];

/// The document as an object whose keys are all in `allowed` (each other key is an "unknown
/// field" problem); `None`, with a problem, when it is not an object at all.
pub fn object_with_fields<'a>(
    body: &'a Value,
    allowed: &[&str],
    p: &mut Problems,
) -> Option<&'a Map<String, Value>> {
    let Some(obj) = body.as_object() else {
        p.add("", "the body must be a JSON object");
        return None;
    };
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            p.add(format!("/{}", pointer_segment(key)), "unknown field");
        }
    }
    Some(obj)
}

/// A required slug field.
pub fn required_slug(v: Option<&Value>, at: &str, p: &mut Problems) -> Option<Slug> {
    match v {
        Some(Value::String(s)) => Slug::parse(s).map_err(|m| p.add(at, m)).ok(),
        Some(_) => {
            p.add(at, "must be a string");
            None
        }
        None => {
            p.add(at, "is required");
            None
        }
    }
}

/// A definition's `version`: 1 when absent or null, else a positive integer.
pub fn definition_version(v: Option<&Value>, p: &mut Problems) -> i32 {
    match v {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=i32::MAX as i64).contains(&n) => n as i32,
            _ => {
                p.add("/version", "must be a positive integer");
                1
            }
        },
    }
}

/// Longest display name, in characters.
pub const MAX_NAME: usize = 200;

/// A required, non-blank display name of at most `MAX_NAME` characters, trimmed.
pub fn required_name(v: Option<&Value>, at: &str, p: &mut Problems) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_NAME => {
            Some(s.trim().to_string())
        }
        Some(Value::String(_)) => {
            p.add(at, format!("must be 1 to {MAX_NAME} characters"));
            None
        }
        Some(_) => {
            p.add(at, "must be a string");
            None
        }
        None => {
            p.add(at, "is required");
            None
        }
    }
}

/// Parses and validates a job definition document. `entry_points` lists the handlers compiled
/// into the server.
pub fn parse_job_spec(body: &Value, entry_points: &[&str]) -> Result<JobSpec, Problems> {
    let mut p = Problems::new();
    let Some(obj) = object_with_fields(body, JOB_FIELDS, &mut p) else {
        return Err(p);
    };
    let slug = required_slug(obj.get("slug"), "/slug", &mut p);
    let name = job_name(obj.get("name"), &mut p);
    let version = definition_version(obj.get("version"), &mut p);
    let job_type = job_type(obj.get("type"), &mut p);
    let entry_point = entry_point(obj.get("entryPoint"), entry_points, &mut p);
    let parameters_schema = parameters_schema(obj.get("parametersSchema"), &mut p);
    let default_parameters =
        optional_object(obj.get("defaultParameters"), "/defaultParameters", &mut p);
    let timeout_ms = job_timeout(obj.get("timeoutMs"), &mut p);
    let retry_policy = match obj.get("retryPolicy") {
        None | Some(Value::Null) => RetryPolicy::default(),
        Some(v) => parse_retry_policy(v, "/retryPolicy", &mut p),
    };
    let metadata = optional_object(obj.get("metadata"), "/metadata", &mut p);
    match (slug, name, entry_point) {
        (Some(slug), Some(name), Some(entry_point)) if p.is_empty() => Ok(JobSpec {
            slug,
            name,
            version,
            job_type,
            entry_point,
            parameters_schema,
            default_parameters,
            timeout_ms,
            retry_policy,
            metadata,
        }),
        _ => Err(p),
    }
}

/// An optional object field: `{}` when absent or null.
pub(crate) fn optional_object(v: Option<&Value>, at: &str, p: &mut Problems) -> Value {
    match v {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            p.add(at, "must be an object");
            Value::Object(Map::new())
        }
    }
}

/// A job's required `name`: 1 to 200 bytes once trimmed (a job's limit counts bytes; see
/// [`required_name`] for the character limit of other names).
fn job_name(v: Option<&Value>, p: &mut Problems) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 200 => {
            Some(s.trim().to_string())
        }
        Some(Value::String(_)) => {
            p.add("/name", "must be 1 to 200 characters");
            None
        }
        Some(_) => {
            p.add("/name", "must be a string");
            None
        }
        None => {
            p.add("/name", "is required");
            None
        }
    }
}

/// A job's `type`: batch when absent or null.
fn job_type(v: Option<&Value>, p: &mut Problems) -> JobType {
    match v {
        None | Some(Value::Null) => JobType::Batch,
        Some(Value::String(s)) => JobType::parse(s).unwrap_or_else(|| {
            p.add("/type", format!("must be one of {}", JobType::expected()));
            JobType::Batch
        }),
        Some(_) => {
            p.add("/type", format!("must be one of {}", JobType::expected()));
            JobType::Batch
        }
    }
}

/// A job's required `entryPoint`: one of the handlers in `entry_points`.
fn entry_point(v: Option<&Value>, entry_points: &[&str], p: &mut Problems) -> Option<String> {
    match v {
        Some(Value::String(s)) if entry_points.contains(&s.as_str()) => Some(s.clone()),
        Some(Value::String(s)) => {
            p.add(
                "/entryPoint",
                format!(
                    "unknown entry point {s:?}; known: {}",
                    entry_points.join(", ")
                ),
            );
            None
        }
        Some(_) => {
            p.add("/entryPoint", "must be a string");
            None
        }
        None => {
            p.add("/entryPoint", "is required");
            None
        }
    }
}

/// A job's `parametersSchema`: `{"type": "object"}` when absent or null, else a usable JSON
/// Schema.
fn parameters_schema(v: Option<&Value>, p: &mut Problems) -> Value {
    match v {
        None | Some(Value::Null) => serde_json::json!({"type": "object"}),
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
            for (path, message) in schema_problems(schema) {
                p.add(format!("/parametersSchema{path}"), message);
            }
            schema.clone()
        }
        Some(_) => {
            p.add("/parametersSchema", "must be a JSON Schema (an object)");
            Value::Null
        }
    }
}

/// A job's `timeoutMs`: [`DEFAULT_TIMEOUT_MS`] when absent or null (or invalid, with a
/// problem).
fn job_timeout(v: Option<&Value>, p: &mut Problems) -> i64 {
    match v {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_MS,
        Some(v) => match v.as_i64() {
            Some(n) if (MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&n) => n,
            _ => {
                p.add(
                    "/timeoutMs",
                    format!("must be an integer from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}"),
                );
                DEFAULT_TIMEOUT_MS
            }
        },
    }
}

/// Parses a retry policy object; missing fields get defaults.
pub fn parse_retry_policy(v: &Value, at: &str, p: &mut Problems) -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    let Some(obj) = v.as_object() else {
        p.add(at, "must be an object");
        return policy;
    };
    for key in obj.keys() {
        if ![
            "maxAttempts",
            "strategy",
            "initialDelayMs",
            "maxDelayMs",
            "jitter",
        ]
        .contains(&key.as_str())
        {
            p.add(format!("{at}/{}", pointer_segment(key)), "unknown field");
        }
    }
    if let Some(v) = obj.get("maxAttempts").filter(|v| !v.is_null()) {
        match v.as_u64() {
            Some(n) if (1..=10).contains(&n) => policy.max_attempts = n as u32,
            _ => p.add(
                format!("{at}/maxAttempts"),
                "must be an integer from 1 to 10",
            ),
        }
    }
    // A policy that asks for retries without naming a strategy backs off exponentially.
    policy.strategy = if policy.max_attempts > 1 {
        RetryStrategy::Exponential
    } else {
        RetryStrategy::None
    };
    if let Some(v) = obj.get("strategy").filter(|v| !v.is_null()) {
        match v.as_str().and_then(RetryStrategy::parse) {
            Some(s) => policy.strategy = s,
            None => p.add(
                format!("{at}/strategy"),
                format!("must be one of {}", RetryStrategy::expected()),
            ),
        }
    }
    for (field, slot) in [
        ("initialDelayMs", &mut policy.initial_delay_ms),
        ("maxDelayMs", &mut policy.max_delay_ms),
    ] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            match v.as_u64() {
                Some(n) if n <= MAX_DELAY_MS as u64 => *slot = n,
                _ => p.add(
                    format!("{at}/{field}"),
                    format!("must be an integer from 0 to {MAX_DELAY_MS}"),
                ),
            }
        }
    }
    if policy.max_delay_ms < policy.initial_delay_ms {
        p.add(
            format!("{at}/maxDelayMs"),
            "must not be lower than initialDelayMs",
        );
    }
    if let Some(v) = obj.get("jitter").filter(|v| !v.is_null()) {
        match v.as_str().and_then(Jitter::parse) {
            Some(j) => policy.jitter = j,
            None => p.add(
                format!("{at}/jitter"),
                format!("must be one of {}", Jitter::expected()),
            ),
        }
    }
    policy
}

/// Problems of a JSON Schema document, as (pointer into the schema, message).
pub fn schema_problems(schema: &Value) -> Vec<(String, String)> {
    match jsonschema::meta::validator_for(schema) {
        Ok(meta) => {
            let found: Vec<(String, String)> = meta
                .iter_errors(schema)
                .map(|e| (e.instance_path().to_string(), e.to_string()))
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
        Err(e) => return vec![(String::new(), format!("not a usable JSON Schema: {e}"))],
    }
    // The meta-schema accepts some documents the compiler cannot use (bad regex, unresolvable $ref).
    match jsonschema::validator_for(schema) {
        Ok(_) => Vec::new(),
        Err(e) => vec![(e.instance_path().to_string(), e.to_string())],
    }
}

/// Idempotency keys the server itself gives runs (its schedule and event triggers) start with
/// this; a request's key may not, so no caller can take a fire's key before the trigger does.
pub const SERVER_KEY_PREFIX: &str = "switchyard:";

/// Whether an idempotency key lies in the server's namespace ([`SERVER_KEY_PREFIX`]).
pub fn is_server_key(key: &str) -> bool {
    key.starts_with(SERVER_KEY_PREFIX)
}

/// The problem of a request's key in the server's namespace.
pub fn server_key_problem() -> String {
    format!(
        "keys starting with {SERVER_KEY_PREFIX:?} are the server's own (schedule and event triggers); choose another"
    )
}

/// A validated request to start a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRequest {
    /// Parameters as given (merged over defaults later, once the definition is known).
    pub parameters: Value,
    pub timeout_ms: Option<i64>,
    pub max_attempts: Option<i32>,
    pub context: Option<Value>,
    pub idempotency_key: Option<String>,
    pub delay_ms: i64,
    pub trigger: Trigger,
}

impl RunRequest {
    /// A manual run with `parameters` and every option at its default (the launch form).
    pub fn manual(parameters: Value) -> RunRequest {
        RunRequest {
            parameters,
            timeout_ms: None,
            max_attempts: None,
            context: None,
            idempotency_key: None,
            delay_ms: 0,
            trigger: Trigger::Manual,
        }
    }
}

/// Parses `POST /api/jobs/:slug/run`. An empty body means "run with the defaults".
pub fn parse_run_request(body: &Value, header_key: Option<&str>) -> Result<RunRequest, Problems> {
    let mut p = Problems::new();
    let known = [
        "parameters",
        "timeoutMs",
        "maxAttempts",
        "context",
        "idempotencyKey",
        "delayMs",
    ];
    let obj = request_object(body, &known, &mut p)?;
    let parameters = parameters_field(obj, &mut p).unwrap_or(Value::Null);
    let timeout_ms = int_field(obj, "timeoutMs", MIN_TIMEOUT_MS, MAX_TIMEOUT_MS, &mut p);
    let max_attempts = int_field(obj, "maxAttempts", 1, 10, &mut p).map(|n| n as i32);
    let context = match obj.get("context") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            p.add("/context", "must be an object");
            None
        }
    };
    let idempotency_key = idempotency_key(obj, header_key, &mut p);
    let delay_ms = int_field(obj, "delayMs", 0, MAX_DELAY_MS, &mut p).unwrap_or(0);
    p.finish(RunRequest {
        parameters,
        timeout_ms,
        max_attempts,
        context,
        idempotency_key,
        delay_ms,
        trigger: Trigger::Manual,
    })
}

/// An optional integer field from `min` to `max` (absent or `null`: None).
fn int_field(
    obj: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
    p: &mut Problems,
) -> Option<i64> {
    let v = obj.get(key).filter(|v| !v.is_null())?;
    match v.as_i64() {
        Some(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            p.add(
                format!("/{key}"),
                format!("must be an integer from {min} to {max}"),
            );
            None
        }
    }
}

/// Deep-merges `overrides` over `defaults`: objects merge key by key, anything else replaces.
pub fn merge_parameters(defaults: &Value, overrides: &Value) -> Value {
    match (defaults, overrides) {
        (Value::Object(d), Value::Object(o)) => {
            let mut out = d.clone();
            for (k, v) in o {
                let merged = match out.get(k) {
                    Some(existing) => merge_parameters(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, o) => o.clone(),
    }
}

/// Compiles a definition's parameters schema (done once per definition version).
pub fn compile_parameters_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema)
        .map_err(|e| format!("the job's parametersSchema is unusable: {e}"))
}

/// Validates parameters against a definition's schema; every violation with its pointer
/// below `/parameters`.
pub fn parameter_problems(schema: &Value, parameters: &Value) -> Problems {
    match compile_parameters_schema(schema) {
        Ok(validator) => validate_parameters(&validator, parameters),
        Err(message) => {
            let mut p = Problems::new();
            p.add("/parameters", message);
            p
        }
    }
}

/// Like [`parameter_problems`], with a validator from [`compile_parameters_schema`].
pub fn validate_parameters(validator: &jsonschema::Validator, parameters: &Value) -> Problems {
    let mut p = Problems::new();
    for e in validator.iter_errors(parameters) {
        let mut path = format!("/parameters{}", e.instance_path());
        // A missing required property is located where it should be, like `/slug` for
        // a definition without a slug.
        if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind()
            && let Some(name) = property.as_str()
        {
            path.push('/');
            path.push_str(&pointer_segment(name));
        }
        p.add(path, e.to_string());
    }
    p
}

/// Problems of a run PATCH body: only `{"status": "canceled"}` is supported (job and workflow
/// runs alike). Empty when the body asks for a cancel.
pub fn cancel_patch_problems(body: &Value) -> Problems {
    let mut p = Problems::new();
    match body.as_object() {
        None => p.add("", "the body must be a JSON object"),
        Some(obj) => {
            for key in obj.keys().filter(|k| k.as_str() != "status") {
                p.add(
                    format!("/{}", pointer_segment(key)),
                    "unknown field (only status can be changed)",
                );
            }
            match obj.get("status").and_then(Value::as_str) {
                Some("canceled") => {}
                Some(other) => p.add(
                    "/status",
                    format!("cannot set status to {other:?}; only \"canceled\" is allowed"),
                ),
                None => p.add("/status", "is required and must be \"canceled\""),
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EPS: &[&str] = &["builtin:noop", "builtin:sleep"];

    fn paths(p: &Problems) -> Vec<String> {
        p.iter().map(|d| d.path.clone()).collect()
    }

    #[test]
    fn slugs() {
        assert_eq!(
            Slug::parse("Repo-Ingest_1").unwrap().as_str(),
            "repo-ingest_1"
        );
        for bad in ["", "-x", "_x", "a b", "ä", &"a".repeat(101)] {
            assert!(Slug::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Slug::parse(&"a".repeat(100)).is_ok());
    }

    #[test]
    fn slugs_round_trip_through_json_and_are_checked_when_loaded() {
        let slug = Slug::parse("Repo-1").unwrap();
        assert_eq!(serde_json::to_value(&slug).unwrap(), json!("repo-1"));
        assert_eq!(
            serde_json::from_value::<Slug>(json!("repo-1")).unwrap(),
            slug
        );
        assert_eq!(slug.to_string(), "repo-1");
        assert!(serde_json::from_value::<Slug>(json!("-bad")).is_err());
    }

    #[test]
    fn minimal_definition_gets_defaults() {
        let spec = parse_job_spec(
            &json!({"slug": "Noop", "name": "No-op", "entryPoint": "builtin:noop"}),
            EPS,
        )
        .unwrap();
        assert_eq!(spec.slug.as_str(), "noop");
        assert_eq!(spec.version, 1);
        assert_eq!(spec.job_type, JobType::Batch);
        assert_eq!(spec.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(spec.retry_policy, RetryPolicy::default());
        assert_eq!(spec.default_parameters, json!({}));
    }

    #[test]
    fn every_problem_is_reported_with_its_pointer() {
        let err = parse_job_spec(
            &json!({
                "slug": "-bad", "name": "", "version": 0, "type": "cron", "entryPoint": "builtin:nope",
                "parametersSchema": {"type": "objekt"}, "defaultParameters": [], "timeoutMs": 5,
                "retryPolicy": {"maxAttempts": 11, "strategy": "linear", "jitter": "some",
                                "initialDelayMs": 10, "maxDelayMs": 5},
                "metadata": 3, "extra": true
            }),
            EPS,
        )
        .unwrap_err();
        let got = paths(&err);
        for want in [
            "/slug",
            "/name",
            "/version",
            "/type",
            "/entryPoint",
            "/parametersSchema/type",
            "/defaultParameters",
            "/timeoutMs",
            "/retryPolicy/maxAttempts",
            "/retryPolicy/strategy",
            "/retryPolicy/jitter",
            "/retryPolicy/maxDelayMs",
            "/metadata",
            "/extra",
        ] {
            assert!(got.iter().any(|g| g == want), "missing {want} in {got:?}");
        }
    }

    #[test]
    fn missing_required_fields() {
        let got = paths(&parse_job_spec(&json!({}), EPS).unwrap_err());
        assert_eq!(got, vec!["/slug", "/name", "/entryPoint"]);
        assert_eq!(
            paths(&parse_job_spec(&json!([1]), EPS).unwrap_err()),
            vec![""]
        );
    }

    #[test]
    fn retry_policy_with_only_attempts_backs_off_exponentially() {
        let mut p = Problems::new();
        let policy = parse_retry_policy(&json!({"maxAttempts": 3}), "/retryPolicy", &mut p);
        assert!(p.is_empty());
        assert_eq!(policy.strategy, RetryStrategy::Exponential);
        assert_eq!(policy.max_attempts, 3);
    }

    #[test]
    fn run_request_parsing() {
        let r = parse_run_request(&Value::Null, Some("k1")).unwrap();
        assert_eq!(r.parameters, json!({}));
        assert_eq!(r.idempotency_key.as_deref(), Some("k1"));
        let r = parse_run_request(
            &json!({"parameters": {"a": 1}, "idempotencyKey": "body", "delayMs": 50}),
            Some("hdr"),
        )
        .unwrap();
        assert_eq!(r.idempotency_key.as_deref(), Some("body"));
        assert_eq!(r.delay_ms, 50);
        let err = parse_run_request(
            &json!({"parameters": 1, "timeoutMs": 1, "maxAttempts": 0, "delayMs": -1, "context": [], "x": 1}),
            None,
        )
        .unwrap_err();
        assert_eq!(
            paths(&err),
            vec![
                "/x",
                "/parameters",
                "/timeoutMs",
                "/maxAttempts",
                "/context",
                "/delayMs"
            ]
        );
    }

    #[test]
    fn merge_is_deep_for_objects_only() {
        let merged = merge_parameters(
            &json!({"a": 1, "nested": {"x": 1, "y": 2}, "list": [1, 2]}),
            &json!({"nested": {"y": 3}, "list": [9], "b": true}),
        );
        assert_eq!(
            merged,
            json!({"a": 1, "nested": {"x": 1, "y": 3}, "list": [9], "b": true})
        );
    }

    #[test]
    fn schema_violations_listed_with_pointers() {
        let schema = json!({"type": "object", "required": ["repoUrl"],
            "properties": {"repoUrl": {"type": "string"}, "depth": {"type": "integer", "minimum": 1}}});
        let p = parameter_problems(&schema, &json!({"depth": 0}));
        let got = paths(&p);
        assert!(got.contains(&"/parameters/repoUrl".to_string()), "{got:?}");
        assert!(got.contains(&"/parameters/depth".to_string()), "{got:?}");
        let nested = json!({"type": "object", "properties": {"git": {"type": "object", "required": ["a/b"]}}});
        assert_eq!(
            paths(&parameter_problems(&nested, &json!({"git": {}}))),
            vec!["/parameters/git/a~1b"]
        );
        assert!(parameter_problems(&schema, &json!({"repoUrl": "x"})).is_empty());
    }
}
