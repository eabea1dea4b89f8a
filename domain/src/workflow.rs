//! Workflow definitions (`../shared/api.md`, "Workflow definitions"): parsed once from JSON
//! into a checked [`WorkflowSpec`], with every problem reported at once, and the graph
//! questions the orchestrator and the DAG drawing ask of a valid one.
//!
//! Edges point from a step to what it depends on: in messages `a -> b` reads "a depends on b".
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::values::RetryPolicy;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::jobs::{
    MAX_TIMEOUT_MS, MIN_TIMEOUT_MS, Slug, compile_parameters_schema, definition_version,
    merge_parameters, object_with_fields, optional_object, parse_retry_policy, required_name,
    required_slug, schema_problems, validate_parameters,
};
use super::problems::{Problems, pointer_segment};
use super::template;
use crate::graph::Graph;

/// Most steps one workflow may have.
pub const MAX_STEPS: usize = 500;
const MAX_DESCRIPTION: usize = 10_000;
const MAX_IDENTIFIER: usize = 100;
const MAX_SECRET_KEY: usize = 255;

/// What a definition may refer to; the caller backs it by the database.
pub trait Catalog {
    fn job_exists(&self, slug: &str) -> bool;
    fn service_exists(&self, slug: &str) -> bool;
    /// The workflow engines this server runs, by name (`provider`); the built-in one only
    /// unless the server registers others.
    fn providers(&self) -> Vec<String> {
        vec![Provider::NATIVE.to_string()]
    }
}

/// A validated workflow definition as submitted (without id and timestamps). Serializes to
/// the shape of the API document, so it can be stored as JSON and loaded again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSpec {
    pub slug: Slug,
    pub name: String,
    pub version: i32,
    pub description: Option<String>,
    pub parameters_schema: Value,
    pub default_parameters: Value,
    pub metadata: Value,
    pub steps: Vec<StepSpec>,
    pub triggers: Vec<TriggerSpec>,
    pub provider: Provider,
    /// How long a run may take from its start; past it the run fails as timed out and its
    /// unfinished steps are canceled. None: no limit.
    #[serde(default)]
    pub timeout_ms: Option<i64>,
}

/// Which workflow engine runs the workflow, by name: `native` (the built-in orchestrator,
/// the default) or another one the server registers (`temporal`, `memory` in tests).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Provider(pub String);

impl Provider {
    pub const NATIVE: &'static str = "native";

    pub fn native() -> Provider {
        Provider(Provider::NATIVE.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_native(&self) -> bool {
        self.0 == Provider::NATIVE
    }
}

impl Default for Provider {
    fn default() -> Provider {
        Provider::native()
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSpec {
    pub id: String,
    /// Defaults to the id.
    pub name: String,
    pub depends_on: Vec<String>,
    /// `None`: the job's own policy (job steps), a single attempt (service steps).
    pub retry_policy: Option<RetryPolicy>,
    /// `None`: the job's own timeout (job steps), the default job timeout (service steps).
    pub timeout_ms: Option<i64>,
    pub on_failure: OnFailure,
    /// `"type"` and the fields of that type.
    #[serde(flatten)]
    pub action: StepAction,
}

/// What a step does, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StepAction {
    Job(JobStep),
    Service(ServiceStep),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStep {
    pub job_slug: Slug,
    /// An object; its strings may hold templates.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStep {
    pub service_slug: Slug,
    pub request: ServiceRequest,
    /// Wait (with the step's retry policy) while the service is not healthy.
    pub require_healthy: bool,
    /// With `require_healthy`: a degraded service is good enough.
    pub allow_degraded: bool,
    /// Keep the response (status, headers, body) as the step's result.
    pub capture_response: bool,
    /// Also store the captured response under this key of the run's shared context.
    pub store_response_as: Option<String>,
}

/// The HTTP request of a service step; strings may hold templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRequest {
    pub method: HttpMethod,
    /// Below the service's base URL; starts with `/` (or with a template).
    pub path: String,
    /// Values: strings, numbers, booleans or arrays of them.
    pub query: Map<String, Value>,
    pub headers: BTreeMap<String, HeaderValue>,
    pub body: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl HttpMethod {
    pub const ALL: &'static [HttpMethod] = &[
        HttpMethod::Get,
        HttpMethod::Head,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
        HttpMethod::Options,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
        }
    }

    /// Case-insensitive.
    pub fn parse(text: &str) -> Option<HttpMethod> {
        HttpMethod::ALL
            .iter()
            .copied()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

/// A header value: plain text (may hold templates) or a secret resolved at execution time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    Text(String),
    Secret(SecretHeader),
}

/// `{"secret": {...}, "prefix"?}`: the header is `prefix` followed by the secret's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretHeader {
    pub secret: SecretRef,
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub source: SecretSource,
    pub key: String,
    /// Store secrets only; `None` means the latest.
    pub version: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    Env,
    Store,
}

/// What a step's failure does to the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Fail the run and cancel what has not finished.
    #[default]
    Halt,
    /// Skip the step's dependents; other branches go on.
    Continue,
}

/// What starts a run besides the API: `{"type", "options"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "options", rename_all = "lowercase")]
pub enum TriggerSpec {
    Manual,
    Schedule(ScheduleTrigger),
    Event(EventTrigger),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleTrigger {
    /// As given; [`parse_cron`] turns it into a schedule.
    pub cron: String,
    /// Run parameters (merged over the workflow's defaults).
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTrigger {
    /// An event type such as `workflow.run.succeeded`; a `*` segment matches any.
    pub event: String,
    /// Fields the event's payload must have, with these values.
    pub filter: Map<String, Value>,
}

/// State of one step of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Canceled,
}

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, StepStatus::Pending | StepStatus::Running)
    }
}

/// Parses a cron expression: six fields with seconds (`0 */15 * * * *`), an optional seventh
/// for the year, or the classic five fields (minute first, run at second 0).
pub fn parse_cron(expression: &str) -> Result<cron::Schedule, String> {
    let trimmed = expression.trim();
    let fields = trimmed.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {trimmed}")
    } else {
        trimmed.to_string()
    };
    let schedule: cron::Schedule = full.parse().map_err(|e| {
        format!(
            "invalid cron expression {expression:?} (expected `sec min hour day-of-month month day-of-week [year]`, e.g. `0 */15 * * * *`): {e}"
        )
    })?;
    if schedule.upcoming(chrono::Utc).next().is_none() {
        return Err(format!("cron expression {expression:?} never fires"));
    }
    Ok(schedule)
}

const WORKFLOW_FIELDS: &[&str] = &[
    "slug",
    "name",
    "version",
    "description",
    "parametersSchema",
    "defaultParameters",
    "metadata",
    "steps",
    "triggers",
    "provider",
    "timeoutMs",
    // Read-only fields a client may echo back from a GET; ignored.
    "id",
    "createdAt",
    "updatedAt",
];
const STEP_FIELDS: &[&str] = &[
    "id",
    "name",
    "type",
    "dependsOn",
    "retryPolicy",
    "timeoutMs",
    "onFailure",
];
const JOB_STEP_FIELDS: &[&str] = &["jobSlug", "parameters"];
const SERVICE_STEP_FIELDS: &[&str] = &[
    "serviceSlug",
    "request",
    "requireHealthy",
    "allowDegraded",
    "captureResponse",
    "storeResponseAs",
];
const REQUEST_FIELDS: &[&str] = &["method", "path", "query", "headers", "body"];

/// `^[A-Za-z_][A-Za-z0-9_-]{0,99}$`: step ids and shared-context keys.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.len() <= MAX_IDENTIFIER
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

const IDENTIFIER_RULE: &str = "must start with a letter or '_' and contain only letters, digits, '_' and '-' (at most 100 characters)";

/// Parses and validates a workflow definition document.
pub fn parse_workflow_spec(body: &Value, known: &dyn Catalog) -> Result<WorkflowSpec, Problems> {
    let mut p = Problems::new();
    let Some(obj) = object_with_fields(body, WORKFLOW_FIELDS, &mut p) else {
        return Err(p);
    };
    let slug = required_slug(obj.get("slug"), "/slug", &mut p);
    let name = required_name(obj.get("name"), "/name", &mut p);
    let version = definition_version(obj.get("version"), &mut p);
    let description = match obj.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_DESCRIPTION => Some(s.clone()),
        Some(Value::String(_)) => {
            p.add(
                "/description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            );
            None
        }
        Some(_) => {
            p.add("/description", "must be a string");
            None
        }
    };
    let (parameters_schema, schema_ok) = match obj.get("parametersSchema") {
        None | Some(Value::Null) => (serde_json::json!({"type": "object"}), true),
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
            let found = schema_problems(schema);
            let ok = found.is_empty();
            for (path, message) in found {
                p.add(format!("/parametersSchema{path}"), message);
            }
            (schema.clone(), ok)
        }
        Some(_) => {
            p.add("/parametersSchema", "must be a JSON Schema (an object)");
            (Value::Null, false)
        }
    };
    let default_parameters =
        optional_object(obj.get("defaultParameters"), "/defaultParameters", &mut p);
    let metadata = optional_object(obj.get("metadata"), "/metadata", &mut p);
    let provider = provider(obj.get("provider"), known, &mut p);
    let timeout_ms = step_timeout(obj.get("timeoutMs"), "", &mut p);

    let steps = parse_steps(obj.get("steps"), known, &mut p);

    let validator = if schema_ok {
        compile_parameters_schema(&parameters_schema).ok()
    } else {
        None
    };
    let triggers = match obj.get("triggers") {
        None | Some(Value::Null) => vec![TriggerSpec::Manual],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                parse_trigger(
                    t,
                    &format!("/triggers/{i}"),
                    validator.as_ref(),
                    &default_parameters,
                    &mut p,
                )
            })
            .collect(),
        Some(_) => {
            p.add("/triggers", "must be an array");
            Vec::new()
        }
    };

    match (slug, name, steps) {
        (Some(slug), Some(name), Some(steps)) if p.is_empty() => Ok(WorkflowSpec {
            slug,
            name,
            version,
            description,
            parameters_schema,
            default_parameters,
            metadata,
            steps,
            triggers,
            provider,
            timeout_ms,
        }),
        _ => Err(p),
    }
}

fn optional_bool(obj: &Map<String, Value>, key: &str, at: &str, p: &mut Problems) -> Option<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            p.add(format!("{at}/{key}"), "must be true or false");
            None
        }
    }
}

/// What one step entry yielded, usable even when the step has problems.
#[derive(Default)]
struct ParsedStep {
    id: Option<String>,
    /// (position in `dependsOn`, step id)
    depends_on: Vec<(usize, String)>,
    /// Documents whose templates are checked, with the pointer of each.
    templated: Vec<(String, Value)>,
    spec: Option<StepSpec>,
}

/// Parses `steps`, then checks the graph (ids, dependencies, cycles) and the templates.
/// `None` when any step has a problem.
/// `provider`: one of the engines the server runs (absent or null: `native`).
fn provider(v: Option<&Value>, known: &dyn Catalog, p: &mut Problems) -> Provider {
    let names = known.providers();
    match v {
        None | Some(Value::Null) => Provider::native(),
        Some(Value::String(s)) if names.iter().any(|n| n == s) => Provider(s.clone()),
        Some(_) => {
            let listed: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
            p.add(
                "/provider",
                format!(
                    "must be one of {} (the engines this server runs)",
                    listed.join(", ")
                ),
            );
            Provider::native()
        }
    }
}

fn parse_steps(v: Option<&Value>, known: &dyn Catalog, p: &mut Problems) -> Option<Vec<StepSpec>> {
    let items = step_items(v, p)?;
    let before = p.iter().count();
    let parsed: Vec<ParsedStep> = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_step(item, &format!("/steps/{i}"), known, p))
        .collect();
    let index = step_index(&parsed, p);
    let graph = Graph::new(step_edges(&parsed, &index, p));
    check_cycles(&parsed, &graph, p);
    check_templates(&parsed, &index, &graph, p);
    if p.iter().count() > before {
        return None;
    }
    parsed.into_iter().map(|s| s.spec).collect()
}

/// The entries of `steps`: an array of 1 to [`MAX_STEPS`] items.
fn step_items<'a>(v: Option<&'a Value>, p: &mut Problems) -> Option<&'a Vec<Value>> {
    match v {
        Some(Value::Array(items)) if items.is_empty() => {
            p.add("/steps", "must list at least one step");
            None
        }
        Some(Value::Array(items)) if items.len() > MAX_STEPS => {
            p.add("/steps", format!("must list at most {MAX_STEPS} steps"));
            None
        }
        Some(Value::Array(items)) => Some(items),
        Some(_) => {
            p.add("/steps", "must be an array of steps");
            None
        }
        None => {
            p.add("/steps", "is required");
            None
        }
    }
}

/// The position of each step id. Ids are unique; a later duplicate is the one reported.
fn step_index<'a>(parsed: &'a [ParsedStep], p: &mut Problems) -> HashMap<&'a str, usize> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in parsed.iter().enumerate() {
        if let Some(id) = step.id.as_deref() {
            if let Some(first) = index.get(id) {
                p.add(
                    format!("/steps/{i}/id"),
                    format!("duplicate step id {id:?} (also /steps/{first}/id)"),
                );
            } else {
                index.insert(id, i);
            }
        }
    }
    index
}

/// Each step's edges to known steps, as (step, position in `dependsOn`); unknown and repeated
/// dependencies are problems.
fn step_edges(
    parsed: &[ParsedStep],
    index: &HashMap<&str, usize>,
    p: &mut Problems,
) -> Vec<Vec<(usize, usize)>> {
    let mut deps: Vec<Vec<(usize, usize)>> = vec![Vec::new(); parsed.len()];
    for (i, step) in parsed.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for (k, dep) in &step.depends_on {
            let at = format!("/steps/{i}/dependsOn/{k}");
            match index.get(dep.as_str()) {
                None => p.add(at, format!("unknown step {dep:?}")),
                Some(_) if !seen.insert(dep.as_str()) => {
                    p.add(at, format!("{dep:?} is listed twice"))
                }
                Some(&j) => deps[i].push((j, *k)),
            }
        }
    }
    deps
}

/// The id of the `i`th step, `?` when it has none.
fn parsed_id(parsed: &[ParsedStep], i: usize) -> &str {
    parsed[i].id.as_deref().unwrap_or("?")
}

/// One problem per dependency cycle, at the edge that starts it.
fn check_cycles(parsed: &[ParsedStep], graph: &Graph, p: &mut Problems) {
    for cycle in graph.cycles() {
        let (start, first_k) = (cycle[0].0, cycle[0].1);
        let mut path: Vec<&str> = cycle
            .iter()
            .map(|&(from, _)| parsed_id(parsed, from))
            .collect();
        path.push(parsed_id(parsed, start));
        p.add(
            format!("/steps/{start}/dependsOn/{first_k}"),
            format!("dependency cycle: {}", path.join(" -> ")),
        );
    }
}

/// Templates read only `parameters`, `shared`, `run` and steps the step depends on.
fn check_templates(
    parsed: &[ParsedStep],
    index: &HashMap<&str, usize>,
    graph: &Graph,
    p: &mut Problems,
) {
    for (i, step) in parsed.iter().enumerate() {
        let ancestors = graph.ancestors(i);
        for (at, doc) in &step.templated {
            for (pointer, message) in template::template_problems(doc) {
                p.add(format!("{at}{pointer}"), message);
            }
            for reference in template::references(doc) {
                let Some(target) = reference.step() else {
                    continue;
                };
                let at = format!("{at}{}", reference.pointer);
                let expr = &reference.expr;
                match index.get(target) {
                    None => p.add(at, format!("`{{{{ {expr} }}}}` refers to unknown step {target:?}")),
                    Some(_) if step.id.as_deref() == Some(target) => p.add(
                        at,
                        format!("`{{{{ {expr} }}}}`: a step cannot read its own result"),
                    ),
                    Some(&j) if !ancestors[j] => p.add(
                        at,
                        format!(
                            "`{{{{ {expr} }}}}`: step {:?} does not depend on step {target:?}, directly or through other steps; add it to dependsOn",
                            parsed_id(parsed, i)
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
}

/// A step's kind, from its `type`.
#[derive(Clone, Copy, PartialEq)]
enum StepKind {
    Job,
    Service,
}

fn parse_step(v: &Value, at: &str, known: &dyn Catalog, p: &mut Problems) -> ParsedStep {
    let mut out = ParsedStep::default();
    let Some(obj) = v.as_object() else {
        p.add(at, "must be an object");
        return out;
    };
    let kind = step_kind(obj.get("type"), at, p);
    check_step_fields(obj, at, kind, p);
    out.id = step_id(obj.get("id"), at, p);
    let name = match obj.get("name") {
        None | Some(Value::Null) => out.id.clone(),
        v => required_name(v, &format!("{at}/name"), p),
    };
    out.depends_on = step_depends_on(obj.get("dependsOn"), at, p);
    let retry_policy = match obj.get("retryPolicy") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_retry_policy(v, &format!("{at}/retryPolicy"), p)),
    };
    let timeout_ms = step_timeout(obj.get("timeoutMs"), at, p);
    let on_failure = step_on_failure(obj.get("onFailure"), at, p);
    let action = match kind {
        Some(StepKind::Job) => parse_job_step(obj, at, known, p, &mut out.templated),
        Some(StepKind::Service) => parse_service_step(obj, at, known, p, &mut out.templated),
        None => None,
    };
    if let (Some(id), Some(name), Some(action)) = (out.id.clone(), name, action) {
        out.spec = Some(StepSpec {
            id,
            name,
            depends_on: out.depends_on.iter().map(|(_, d)| d.clone()).collect(),
            retry_policy,
            timeout_ms,
            on_failure,
            action,
        });
    }
    out
}

/// A step's `type`: job when absent or null.
fn step_kind(v: Option<&Value>, at: &str, p: &mut Problems) -> Option<StepKind> {
    match v {
        None | Some(Value::Null) => Some(StepKind::Job),
        Some(Value::String(s)) if s == "job" => Some(StepKind::Job),
        Some(Value::String(s)) if s == "service" => Some(StepKind::Service),
        Some(_) => {
            p.add(format!("{at}/type"), "must be one of job, service");
            None
        }
    }
}

/// A step's keys: the common ones, and those of its kind (a kind's field on a step of the
/// other kind is a problem).
fn check_step_fields(obj: &Map<String, Value>, at: &str, kind: Option<StepKind>, p: &mut Problems) {
    for key in obj.keys() {
        let key_at = format!("{at}/{}", pointer_segment(key));
        if STEP_FIELDS.contains(&key.as_str()) {
            continue;
        } else if JOB_STEP_FIELDS.contains(&key.as_str()) {
            if kind == Some(StepKind::Service) {
                p.add(key_at, "only allowed on job steps");
            }
        } else if SERVICE_STEP_FIELDS.contains(&key.as_str()) {
            if kind == Some(StepKind::Job) {
                p.add(
                    key_at,
                    "only allowed on service steps (\"type\": \"service\")",
                );
            }
        } else {
            p.add(key_at, "unknown field");
        }
    }
}

/// A step's required `id` (see [`is_identifier`]).
fn step_id(v: Option<&Value>, at: &str, p: &mut Problems) -> Option<String> {
    match v {
        Some(Value::String(s)) if is_identifier(s) => Some(s.clone()),
        Some(Value::String(_)) => {
            p.add(format!("{at}/id"), IDENTIFIER_RULE);
            None
        }
        Some(_) => {
            p.add(format!("{at}/id"), "must be a string");
            None
        }
        None => {
            p.add(format!("{at}/id"), "is required");
            None
        }
    }
}

/// A step's `dependsOn`: the step ids it lists, each with its position.
fn step_depends_on(v: Option<&Value>, at: &str, p: &mut Problems) -> Vec<(usize, String)> {
    let mut depends_on = Vec::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (k, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => depends_on.push((k, s.clone())),
                    _ => p.add(
                        format!("{at}/dependsOn/{k}"),
                        "must be a step id (a string)",
                    ),
                }
            }
        }
        Some(_) => p.add(format!("{at}/dependsOn"), "must be an array of step ids"),
    }
    depends_on
}

/// A step's `timeoutMs`: `None` when absent, null or invalid.
fn step_timeout(v: Option<&Value>, at: &str, p: &mut Problems) -> Option<i64> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if (MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&n) => Some(n),
            _ => {
                p.add(
                    format!("{at}/timeoutMs"),
                    format!("must be an integer from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}"),
                );
                None
            }
        },
    }
}

/// A step's `onFailure`: halt when absent or null.
fn step_on_failure(v: Option<&Value>, at: &str, p: &mut Problems) -> OnFailure {
    match v {
        None | Some(Value::Null) => OnFailure::Halt,
        Some(Value::String(s)) if s == "halt" => OnFailure::Halt,
        Some(Value::String(s)) if s == "continue" => OnFailure::Continue,
        Some(_) => {
            p.add(format!("{at}/onFailure"), "must be one of halt, continue");
            OnFailure::Halt
        }
    }
}

/// A slug field naming something in the catalog.
fn catalog_slug(
    obj: &Map<String, Value>,
    key: &str,
    at: &str,
    what: &str,
    exists: &dyn Fn(&str) -> bool,
    p: &mut Problems,
) -> Option<Slug> {
    let at = format!("{at}/{key}");
    match obj.get(key) {
        Some(Value::String(s)) => match Slug::parse(s) {
            Ok(slug) if exists(slug.as_str()) => Some(slug),
            Ok(slug) => {
                p.add(at, format!("unknown {what} {:?}", slug.as_str()));
                None
            }
            Err(m) => {
                p.add(at, m);
                None
            }
        },
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

fn parse_job_step(
    obj: &Map<String, Value>,
    at: &str,
    known: &dyn Catalog,
    p: &mut Problems,
    templated: &mut Vec<(String, Value)>,
) -> Option<StepAction> {
    let job_slug = catalog_slug(obj, "jobSlug", at, "job", &|s| known.job_exists(s), p);
    let parameters = match obj.get("parameters") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => {
            templated.push((format!("{at}/parameters"), v.clone()));
            v.clone()
        }
        Some(_) => {
            p.add(format!("{at}/parameters"), "must be an object");
            return None;
        }
    };
    Some(StepAction::Job(JobStep {
        job_slug: job_slug?,
        parameters,
    }))
}

fn parse_service_step(
    obj: &Map<String, Value>,
    at: &str,
    known: &dyn Catalog,
    p: &mut Problems,
    templated: &mut Vec<(String, Value)>,
) -> Option<StepAction> {
    let service_slug = catalog_slug(
        obj,
        "serviceSlug",
        at,
        "service",
        &|s| known.service_exists(s),
        p,
    );
    let request = match obj.get("request") {
        Some(v @ Value::Object(_)) => {
            templated.push((format!("{at}/request"), v.clone()));
            parse_request(v, &format!("{at}/request"), p)
        }
        Some(_) => {
            p.add(format!("{at}/request"), "must be an object");
            None
        }
        None => {
            p.add(format!("{at}/request"), "is required");
            None
        }
    };
    let require_healthy = optional_bool(obj, "requireHealthy", at, p).unwrap_or(false);
    let allow_degraded = optional_bool(obj, "allowDegraded", at, p).unwrap_or(false);
    let capture = optional_bool(obj, "captureResponse", at, p);
    let store_response_as = match obj.get("storeResponseAs") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_identifier(s) => {
            if capture == Some(false) {
                p.add(
                    format!("{at}/storeResponseAs"),
                    "needs the response, but captureResponse is false",
                );
            }
            Some(s.clone())
        }
        Some(Value::String(_)) => {
            p.add(format!("{at}/storeResponseAs"), IDENTIFIER_RULE);
            None
        }
        Some(_) => {
            p.add(format!("{at}/storeResponseAs"), "must be a string");
            None
        }
    };
    // Storing the response implies capturing it.
    let capture_response = capture.unwrap_or(store_response_as.is_some());
    Some(StepAction::Service(ServiceStep {
        service_slug: service_slug?,
        request: request?,
        require_healthy,
        allow_degraded,
        capture_response,
        store_response_as,
    }))
}

fn parse_request(v: &Value, at: &str, p: &mut Problems) -> Option<ServiceRequest> {
    let obj = v.as_object()?;
    let before = p.iter().count();
    for key in obj.keys() {
        if !REQUEST_FIELDS.contains(&key.as_str()) {
            p.add(format!("{at}/{}", pointer_segment(key)), "unknown field");
        }
    }
    let expected_methods = || {
        HttpMethod::ALL
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let method = match obj.get("method") {
        None | Some(Value::Null) => HttpMethod::Get,
        Some(Value::String(s)) => HttpMethod::parse(s).unwrap_or_else(|| {
            p.add(
                format!("{at}/method"),
                format!("must be one of {}", expected_methods()),
            );
            HttpMethod::Get
        }),
        Some(_) => {
            p.add(
                format!("{at}/method"),
                format!("must be one of {}", expected_methods()),
            );
            HttpMethod::Get
        }
    };
    let path = match obj.get("path") {
        Some(Value::String(s)) if s.starts_with('/') || s.starts_with("{{") => s.clone(),
        Some(Value::String(_)) => {
            p.add(
                format!("{at}/path"),
                "must start with '/' (it is appended to the service's base URL)",
            );
            String::new()
        }
        Some(_) => {
            p.add(format!("{at}/path"), "must be a string");
            String::new()
        }
        None => {
            p.add(format!("{at}/path"), "is required");
            String::new()
        }
    };
    let query = match obj.get("query") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(q)) => {
            let scalar =
                |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
            for (key, value) in q {
                let ok = scalar(value)
                    || matches!(value, Value::Array(items) if items.iter().all(scalar));
                if !ok {
                    p.add(
                        format!("{at}/query/{}", pointer_segment(key)),
                        "must be a string, number or boolean, or an array of them",
                    );
                }
            }
            q.clone()
        }
        Some(_) => {
            p.add(format!("{at}/query"), "must be an object");
            Map::new()
        }
    };
    let mut headers = BTreeMap::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, value) in h {
                let h_at = format!("{at}/headers/{}", pointer_segment(name));
                if !is_header_name(name) {
                    p.add(h_at.clone(), "is not a valid HTTP header name");
                }
                if let Some(parsed) = parse_header_value(value, &h_at, p) {
                    headers.insert(name.clone(), parsed);
                }
            }
        }
        Some(_) => p.add(format!("{at}/headers"), "must be an object"),
    }
    let body = match obj.get("body") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.clone()),
    };
    (p.iter().count() == before).then_some(ServiceRequest {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// An HTTP token (RFC 9110).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

fn no_line_breaks(s: &str, at: &str, p: &mut Problems) {
    if s.contains(['\r', '\n']) {
        p.add(at, "must not contain line breaks");
    }
}

fn parse_header_value(v: &Value, at: &str, p: &mut Problems) -> Option<HeaderValue> {
    let shape = "must be a string or {\"secret\": {\"source\": \"env\" | \"store\", \"key\", \"version\"?}, \"prefix\"?}";
    let obj = match v {
        Value::String(s) => {
            no_line_breaks(s, at, p);
            return Some(HeaderValue::Text(s.clone()));
        }
        Value::Object(obj) => obj,
        _ => {
            p.add(at, shape);
            return None;
        }
    };
    for key in obj.keys() {
        if !["secret", "prefix"].contains(&key.as_str()) {
            p.add(format!("{at}/{}", pointer_segment(key)), "unknown field");
        }
    }
    let prefix = match obj.get("prefix") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            no_line_breaks(s, &format!("{at}/prefix"), p);
            Some(s.clone())
        }
        Some(_) => {
            p.add(format!("{at}/prefix"), "must be a string");
            None
        }
    };
    let secret = match obj.get("secret") {
        Some(v @ Value::Object(_)) => parse_secret_ref(v, &format!("{at}/secret"), p),
        Some(_) => {
            p.add(format!("{at}/secret"), "must be an object");
            None
        }
        None => {
            p.add(at, shape);
            None
        }
    };
    Some(HeaderValue::Secret(SecretHeader {
        secret: secret?,
        prefix,
    }))
}

fn parse_secret_ref(v: &Value, at: &str, p: &mut Problems) -> Option<SecretRef> {
    let obj = v.as_object()?;
    for key in obj.keys() {
        if !["source", "key", "version"].contains(&key.as_str()) {
            p.add(format!("{at}/{}", pointer_segment(key)), "unknown field");
        }
    }
    let source = match obj.get("source") {
        Some(Value::String(s)) if s == "env" => Some(SecretSource::Env),
        Some(Value::String(s)) if s == "store" => Some(SecretSource::Store),
        None => {
            p.add(format!("{at}/source"), "is required");
            None
        }
        Some(_) => {
            p.add(format!("{at}/source"), "must be one of env, store");
            None
        }
    };
    let key = match obj.get("key") {
        Some(Value::String(s)) if source == Some(SecretSource::Env) => {
            let mut chars = s.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && s.len() <= MAX_SECRET_KEY;
            if !ok {
                p.add(
                    format!("{at}/key"),
                    "must be an environment variable name (letters, digits and '_', not starting with a digit)",
                );
            }
            Some(s.clone())
        }
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_SECRET_KEY
                && !s.contains(|c: char| c.is_whitespace() || c == '/') =>
        {
            Some(s.clone())
        }
        Some(Value::String(_)) => {
            p.add(
                format!("{at}/key"),
                format!("must be 1 to {MAX_SECRET_KEY} characters without spaces or '/'"),
            );
            None
        }
        Some(_) => {
            p.add(format!("{at}/key"), "must be a string");
            None
        }
        None => {
            p.add(format!("{at}/key"), "is required");
            None
        }
    };
    let version = match obj.get("version") {
        None | Some(Value::Null) => None,
        Some(_) if source == Some(SecretSource::Env) => {
            p.add(format!("{at}/version"), "only store secrets have versions");
            None
        }
        Some(v) => match v.as_i64() {
            Some(n) if (1..=i32::MAX as i64).contains(&n) => Some(n as i32),
            _ => {
                p.add(format!("{at}/version"), "must be a positive integer");
                None
            }
        },
    };
    Some(SecretRef {
        source: source?,
        key: key?,
        version,
    })
}

fn parse_trigger(
    v: &Value,
    at: &str,
    validator: Option<&jsonschema::Validator>,
    defaults: &Value,
    p: &mut Problems,
) -> Option<TriggerSpec> {
    let Some(obj) = v.as_object() else {
        p.add(at, "must be an object");
        return None;
    };
    for key in obj.keys() {
        if !["type", "options"].contains(&key.as_str()) {
            p.add(format!("{at}/{}", pointer_segment(key)), "unknown field");
        }
    }
    let empty = Map::new();
    let options = match obj.get("options") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => {
            p.add(format!("{at}/options"), "must be an object");
            return None;
        }
    };
    let at_opt = format!("{at}/options");
    match obj.get("type").and_then(Value::as_str) {
        Some("manual") => {
            allow_options(options, &at_opt, &[], p);
            Some(TriggerSpec::Manual)
        }
        Some("schedule") => {
            allow_options(options, &at_opt, &["cron", "parameters"], p);
            schedule_trigger(options, &at_opt, validator, defaults, p)
        }
        Some("event") => {
            allow_options(options, &at_opt, &["event", "filter"], p);
            event_trigger(options, &at_opt, p)
        }
        None if !obj.contains_key("type") => {
            p.add(format!("{at}/type"), "is required");
            None
        }
        _ => {
            p.add(
                format!("{at}/type"),
                "must be one of manual, schedule, event",
            );
            None
        }
    }
}

/// Each key of a trigger's `options` (at `at_opt`) not in `allowed` is an "unknown option".
fn allow_options(options: &Map<String, Value>, at_opt: &str, allowed: &[&str], p: &mut Problems) {
    for key in options.keys() {
        if !allowed.contains(&key.as_str()) {
            p.add(
                format!("{at_opt}/{}", pointer_segment(key)),
                "unknown option",
            );
        }
    }
}

/// The options of a schedule trigger: its `cron` expression and the `parameters` of its
/// runs, which must be valid as they are (merged over the workflow's `defaults`).
fn schedule_trigger(
    options: &Map<String, Value>,
    at_opt: &str,
    validator: Option<&jsonschema::Validator>,
    defaults: &Value,
    p: &mut Problems,
) -> Option<TriggerSpec> {
    let cron = match options.get("cron") {
        Some(Value::String(s)) => match parse_cron(s) {
            Ok(_) => Some(s.trim().to_string()),
            Err(m) => {
                p.add(format!("{at_opt}/cron"), m);
                None
            }
        },
        Some(_) => {
            p.add(format!("{at_opt}/cron"), "must be a string");
            None
        }
        None => {
            p.add(format!("{at_opt}/cron"), "is required");
            None
        }
    };
    let parameters = optional_object(
        options.get("parameters"),
        &format!("{at_opt}/parameters"),
        p,
    );
    // A scheduled run has no other source of parameters: they must be valid as they are.
    if let (Some(validator), Value::Object(_)) = (validator, &parameters) {
        let merged = merge_parameters(defaults, &parameters);
        for d in validate_parameters(validator, &merged).into_vec() {
            p.add(format!("{at_opt}{}", d.path), d.message);
        }
    }
    Some(TriggerSpec::Schedule(ScheduleTrigger {
        cron: cron?,
        parameters,
    }))
}

/// The options of an event trigger: the `event` pattern and the payload `filter`.
fn event_trigger(
    options: &Map<String, Value>,
    at_opt: &str,
    p: &mut Problems,
) -> Option<TriggerSpec> {
    let event = match options.get("event") {
        Some(Value::String(s)) if is_event_pattern(s) => Some(s.clone()),
        Some(Value::String(_)) => {
            p.add(
                format!("{at_opt}/event"),
                "must be an event type such as workflow.run.succeeded (lower-case dot-separated words; a `*` word matches any)",
            );
            None
        }
        Some(_) => {
            p.add(format!("{at_opt}/event"), "must be a string");
            None
        }
        None => {
            p.add(format!("{at_opt}/event"), "is required");
            None
        }
    };
    let filter = match optional_object(options.get("filter"), &format!("{at_opt}/filter"), p) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Some(TriggerSpec::Event(EventTrigger {
        event: event?,
        filter,
    }))
}

fn is_event_pattern(s: &str) -> bool {
    s.len() <= 200
        && s.split('.').all(|word| {
            word == "*"
                || (!word.is_empty()
                    && word.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    }))
        })
}

/// The dependency graph of `steps` (see [`Graph`]); unknown ids are left out.
fn graph_of(steps: &[StepSpec]) -> Graph {
    let mut index = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        index.entry(s.id.as_str()).or_insert(i);
    }
    Graph::new(
        steps
            .iter()
            .map(|s| {
                s.depends_on
                    .iter()
                    .enumerate()
                    .filter_map(|(k, d)| index.get(d.as_str()).map(|&j| (j, k)))
                    .collect()
            })
            .collect(),
    )
}

impl WorkflowSpec {
    pub fn step(&self, id: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.id == id)
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    fn ids(&self, marks: &[bool]) -> Vec<&str> {
        self.steps
            .iter()
            .zip(marks)
            .filter(|(_, m)| **m)
            .map(|(s, _)| s.id.as_str())
            .collect()
    }

    /// Every step `id` depends on, directly or transitively, in definition order.
    pub fn ancestors(&self, id: &str) -> Vec<&str> {
        match self.index_of(id) {
            Some(i) => self.ids(&graph_of(&self.steps).ancestors(i)),
            None => Vec::new(),
        }
    }

    /// Every step that depends on `id`, directly or transitively, in definition order.
    pub fn descendants(&self, id: &str) -> Vec<&str> {
        match self.index_of(id) {
            Some(i) => self.ids(&graph_of(&self.steps).descendants(i)),
            None => Vec::new(),
        }
    }

    /// Every step after the steps it depends on; among steps whose dependencies are met,
    /// definition order.
    pub fn topological_order(&self) -> Vec<&str> {
        graph_of(&self.steps)
            .topological()
            .into_iter()
            .map(|i| self.steps[i].id.as_str())
            .collect()
    }

    /// Pending steps (a step missing from `statuses` is pending) whose dependencies have all
    /// succeeded, in definition order: they can start now, in parallel.
    pub fn ready_steps(&self, statuses: &HashMap<String, StepStatus>) -> Vec<&str> {
        let status = |id: &str| statuses.get(id).copied().unwrap_or_default();
        self.steps
            .iter()
            .filter(|s| status(&s.id) == StepStatus::Pending)
            .filter(|s| {
                s.depends_on
                    .iter()
                    .all(|d| status(d) == StepStatus::Succeeded)
            })
            .map(|s| s.id.as_str())
            .collect()
    }

    /// When `failed` failed with `onFailure: continue`: its dependents, direct and
    /// transitive, that have not finished yet, in topological order. They become `skipped`.
    pub fn dependents_to_skip(
        &self,
        failed: &str,
        statuses: &HashMap<String, StepStatus>,
    ) -> Vec<&str> {
        let Some(i) = self.index_of(failed) else {
            return Vec::new();
        };
        let graph = graph_of(&self.steps);
        let below = graph.descendants(i);
        graph
            .topological()
            .into_iter()
            .filter(|&n| below[n])
            .map(|n| self.steps[n].id.as_str())
            .filter(|id| !statuses.get(*id).is_some_and(|s| s.is_terminal()))
            .collect()
    }

    /// Steps by layer (a step's layer is the longest dependency path from a step without
    /// dependencies), each layer in definition order: the columns of the DAG drawing.
    pub fn layers(&self) -> Vec<Vec<&str>> {
        let layer = graph_of(&self.steps).layers();
        let mut out: Vec<Vec<&str>> = vec![Vec::new(); layer.iter().max().map_or(0, |m| m + 1)];
        for (step, &l) in self.steps.iter().zip(&layer) {
            out[l].push(step.id.as_str());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::RetryStrategy;
    use serde_json::json;

    struct Known;

    impl Catalog for Known {
        fn job_exists(&self, slug: &str) -> bool {
            ["repository-ingest", "repository-build", "noop"].contains(&slug)
        }
        fn service_exists(&self, slug: &str) -> bool {
            slug == "notifier"
        }
    }

    fn problems(body: Value) -> Vec<(String, String)> {
        parse_workflow_spec(&body, &Known)
            .unwrap_err()
            .into_vec()
            .into_iter()
            .map(|d| (d.path, d.message))
            .collect()
    }

    fn paths(body: Value) -> Vec<String> {
        problems(body).into_iter().map(|(p, _)| p).collect()
    }

    fn parse(body: Value) -> WorkflowSpec {
        match parse_workflow_spec(&body, &Known) {
            Ok(spec) => spec,
            Err(p) => panic!("unexpected problems: {:?}", p.into_vec()),
        }
    }

    #[test]
    fn a_workflow_timeout_is_optional_and_bounded() {
        let mut body = wf(json!([step("a", &[])]));
        assert_eq!(parse(body.clone()).timeout_ms, None);
        body["timeoutMs"] = json!(1500);
        assert_eq!(parse(body.clone()).timeout_ms, Some(1500));
        body["timeoutMs"] = json!(10);
        let problems = parse_workflow_spec(&body, &Known).unwrap_err().into_vec();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "/timeoutMs");
    }

    /// A workflow around the given steps.
    fn wf(steps: Value) -> Value {
        json!({"slug": "wf", "name": "Workflow", "steps": steps})
    }

    /// A no-op job step with dependencies.
    fn step(id: &str, deps: &[&str]) -> Value {
        json!({"id": id, "jobSlug": "noop", "dependsOn": deps})
    }

    fn api_example() -> Value {
        json!({"slug": "ingest-and-build", "name": "Ingest then build", "version": 1, "description": "…",
         "parametersSchema": {"type": "object", "properties": {"repoUrl": {"type": "string"}}},
         "defaultParameters": {}, "metadata": {},
         "steps": [
          {"id": "ingest", "name": "Ingest", "jobSlug": "repository-ingest",
           "parameters": {"repoUrl": "{{ parameters.repoUrl }}"}},
          {"id": "build", "name": "Build", "jobSlug": "repository-build", "dependsOn": ["ingest"],
           "parameters": {"checkout": "{{ steps.ingest.result.checkout }}", "command": ["make"]},
           "retryPolicy": {"maxAttempts": 2}, "timeoutMs": 900000, "onFailure": "halt"},
          {"id": "notify", "name": "Notify", "type": "service", "serviceSlug": "notifier", "dependsOn": ["build"],
           "requireHealthy": true, "captureResponse": true, "storeResponseAs": "notifyResponse",
           "request": {"method": "POST", "path": "/hooks/build", "query": {},
             "headers": {"Authorization": {"secret": {"source": "store", "key": "NOTIFIER_TOKEN"}, "prefix": "Bearer "}},
             "body": {"commit": "{{ steps.ingest.result.headCommit }}"}}}],
         "triggers": [{"type": "manual"},
           {"type": "schedule", "options": {"cron": "0 */15 * * * *", "parameters": {}}},
           {"type": "event", "options": {"event": "workflow.run.succeeded", "filter": {"workflowSlug": "other"}}}],
         "provider": "native"})
    }

    #[test]
    fn the_api_example_parses() {
        let spec = parse(api_example());
        assert_eq!(spec.slug.as_str(), "ingest-and-build");
        assert_eq!(spec.name, "Ingest then build");
        assert_eq!(spec.description.as_deref(), Some("…"));
        assert_eq!(spec.provider, Provider::native());
        assert_eq!(spec.steps.len(), 3);
        let build = spec.step("build").unwrap();
        assert_eq!(build.depends_on, vec!["ingest"]);
        assert_eq!(build.timeout_ms, Some(900_000));
        assert_eq!(build.on_failure, OnFailure::Halt);
        let policy = build.retry_policy.as_ref().unwrap();
        assert_eq!(policy.max_attempts, 2);
        assert_eq!(policy.strategy, RetryStrategy::Exponential);
        assert_eq!(
            build.action,
            StepAction::Job(JobStep {
                job_slug: Slug::parse("repository-build").unwrap(),
                parameters: json!({"checkout": "{{ steps.ingest.result.checkout }}", "command": ["make"]}),
            })
        );
        let StepAction::Service(notify) = &spec.step("notify").unwrap().action else {
            panic!("notify is a service step");
        };
        assert_eq!(notify.service_slug.as_str(), "notifier");
        assert!(notify.require_healthy && notify.capture_response && !notify.allow_degraded);
        assert_eq!(notify.store_response_as.as_deref(), Some("notifyResponse"));
        assert_eq!(notify.request.method, HttpMethod::Post);
        assert_eq!(notify.request.path, "/hooks/build");
        assert_eq!(
            notify.request.headers["Authorization"],
            HeaderValue::Secret(SecretHeader {
                secret: SecretRef {
                    source: SecretSource::Store,
                    key: "NOTIFIER_TOKEN".into(),
                    version: None
                },
                prefix: Some("Bearer ".into()),
            })
        );
        assert_eq!(
            notify.request.body,
            Some(json!({"commit": "{{ steps.ingest.result.headCommit }}"}))
        );
        assert_eq!(
            spec.triggers,
            vec![
                TriggerSpec::Manual,
                TriggerSpec::Schedule(ScheduleTrigger {
                    cron: "0 */15 * * * *".into(),
                    parameters: json!({})
                }),
                TriggerSpec::Event(EventTrigger {
                    event: "workflow.run.succeeded".into(),
                    filter: json!({"workflowSlug": "other"})
                        .as_object()
                        .unwrap()
                        .clone(),
                }),
            ]
        );
        assert_eq!(spec.topological_order(), vec!["ingest", "build", "notify"]);
    }

    #[test]
    fn minimal_definition_gets_defaults() {
        let spec =
            parse(json!({"slug": "WF", "name": " W ", "steps": [{"id": "a", "jobSlug": "NOOP"}]}));
        assert_eq!(spec.slug.as_str(), "wf");
        assert_eq!(spec.name, "W");
        assert_eq!(spec.version, 1);
        assert_eq!(spec.description, None);
        assert_eq!(spec.parameters_schema, json!({"type": "object"}));
        assert_eq!(spec.default_parameters, json!({}));
        assert_eq!(spec.metadata, json!({}));
        assert_eq!(spec.triggers, vec![TriggerSpec::Manual]);
        assert_eq!(
            spec.steps,
            vec![StepSpec {
                id: "a".into(),
                name: "a".into(),
                depends_on: vec![],
                retry_policy: None,
                timeout_ms: None,
                on_failure: OnFailure::Halt,
                action: StepAction::Job(JobStep {
                    job_slug: Slug::parse("noop").unwrap(),
                    parameters: json!({}),
                }),
            }]
        );
    }

    #[test]
    fn a_parsed_spec_round_trips_through_json_in_the_api_shape() {
        let spec = parse(api_example());
        let stored = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            serde_json::from_value::<WorkflowSpec>(stored.clone()).unwrap(),
            spec
        );
        // The stored document is itself a valid definition with the same meaning.
        assert_eq!(parse(stored.clone()), spec);
        assert_eq!(stored["steps"][0]["type"], json!("job"));
        assert_eq!(stored["steps"][0]["jobSlug"], json!("repository-ingest"));
        assert_eq!(stored["steps"][1]["dependsOn"], json!(["ingest"]));
        assert_eq!(stored["steps"][1]["onFailure"], json!("halt"));
        assert_eq!(stored["steps"][1]["retryPolicy"]["maxAttempts"], json!(2));
        assert_eq!(stored["steps"][2]["type"], json!("service"));
        assert_eq!(stored["steps"][2]["serviceSlug"], json!("notifier"));
        assert_eq!(
            stored["steps"][2]["storeResponseAs"],
            json!("notifyResponse")
        );
        assert_eq!(stored["steps"][2]["request"]["method"], json!("POST"));
        assert_eq!(
            stored["steps"][2]["request"]["headers"]["Authorization"],
            json!({"secret": {"source": "store", "key": "NOTIFIER_TOKEN", "version": null}, "prefix": "Bearer "})
        );
        assert_eq!(
            stored["triggers"],
            json!([{"type": "manual"},
                   {"type": "schedule", "options": {"cron": "0 */15 * * * *", "parameters": {}}},
                   {"type": "event", "options": {"event": "workflow.run.succeeded", "filter": {"workflowSlug": "other"}}}])
        );
        assert_eq!(stored["provider"], json!("native"));
    }

    #[test]
    fn top_level_problems_are_all_reported_with_pointers() {
        let got = problems(json!({
            "slug": "-bad", "name": "", "version": 0, "description": 5,
            "parametersSchema": {"type": "objekt"}, "defaultParameters": [], "metadata": "x",
            "steps": {}, "triggers": {}, "provider": "temporal", "extra": 1
        }));
        let got_paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            got_paths,
            vec![
                "/extra",
                "/slug",
                "/name",
                "/version",
                "/description",
                "/parametersSchema/type",
                "/defaultParameters",
                "/metadata",
                "/provider",
                "/steps",
                "/triggers",
            ]
        );
        assert_eq!(got[0].1, "unknown field");
        assert_eq!(
            got[8].1,
            "must be one of \"native\" (the engines this server runs)"
        );
        assert_eq!(got[9].1, "must be an array of steps");
        assert_eq!(paths(json!([])), vec![""]);
        assert_eq!(paths(json!({})), vec!["/slug", "/name", "/steps"]);
        assert_eq!(
            problems(json!({"slug": "a", "name": "A", "steps": []})),
            vec![(
                "/steps".to_string(),
                "must list at least one step".to_string()
            )]
        );
        let many: Vec<Value> = (0..=MAX_STEPS)
            .map(|i| step(&format!("s{i}"), &[]))
            .collect();
        assert_eq!(
            problems(wf(json!(many))),
            vec![(
                "/steps".to_string(),
                "must list at most 500 steps".to_string()
            )]
        );
        // Read-only fields echoed from a GET are ignored.
        let mut echoed = wf(json!([step("a", &[])]));
        echoed["id"] = json!("0190");
        echoed["createdAt"] = json!("2026-01-01T00:00:00Z");
        echoed["updatedAt"] = json!("2026-01-01T00:00:00Z");
        parse(echoed);
    }

    #[test]
    fn step_shape_problems_carry_pointers() {
        let got = problems(wf(json!([
            "not an object",
            {"id": "1bad", "name": "", "type": "lambda", "dependsOn": "a", "retryPolicy": {"maxAttempts": 20},
             "timeoutMs": 10, "onFailure": "ignore", "bogus": true},
            {"jobSlug": "noop", "serviceSlug": "notifier", "dependsOn": [3]},
            {"id": "svc", "type": "service", "jobSlug": "noop", "parameters": {}},
            {"id": "j1", "jobSlug": "Not A Slug", "parameters": [], "requireHealthy": true},
            {"id": "j2", "jobSlug": "ghost"},
            {"id": "s2", "type": "service", "serviceSlug": "ghost", "request": 1,
             "requireHealthy": "yes", "allowDegraded": 1, "captureResponse": "no", "storeResponseAs": "bad key"},
            {"id": "s3", "type": "service", "serviceSlug": "notifier",
             "request": {"path": "/x"}, "captureResponse": false, "storeResponseAs": "k"}
        ])));
        let want: Vec<(&str, &str)> = vec![
            ("/steps/0", "must be an object"),
            ("/steps/1/type", "must be one of job, service"),
            ("/steps/1/bogus", "unknown field"),
            ("/steps/1/id", IDENTIFIER_RULE),
            ("/steps/1/name", "must be 1 to 200 characters"),
            ("/steps/1/dependsOn", "must be an array of step ids"),
            (
                "/steps/1/retryPolicy/maxAttempts",
                "must be an integer from 1 to 10",
            ),
            (
                "/steps/1/timeoutMs",
                "must be an integer from 1000 to 86400000",
            ),
            ("/steps/1/onFailure", "must be one of halt, continue"),
            (
                "/steps/2/serviceSlug",
                "only allowed on service steps (\"type\": \"service\")",
            ),
            ("/steps/2/id", "is required"),
            ("/steps/2/dependsOn/0", "must be a step id (a string)"),
            ("/steps/3/jobSlug", "only allowed on job steps"),
            ("/steps/3/parameters", "only allowed on job steps"),
            ("/steps/3/serviceSlug", "is required"),
            ("/steps/3/request", "is required"),
            (
                "/steps/4/requireHealthy",
                "only allowed on service steps (\"type\": \"service\")",
            ),
            ("/steps/4/jobSlug", "must match ^[a-z0-9][a-z0-9_-]{0,99}$"),
            ("/steps/4/parameters", "must be an object"),
            ("/steps/5/jobSlug", "unknown job \"ghost\""),
            ("/steps/6/serviceSlug", "unknown service \"ghost\""),
            ("/steps/6/request", "must be an object"),
            ("/steps/6/requireHealthy", "must be true or false"),
            ("/steps/6/allowDegraded", "must be true or false"),
            ("/steps/6/captureResponse", "must be true or false"),
            ("/steps/6/storeResponseAs", IDENTIFIER_RULE),
            (
                "/steps/7/storeResponseAs",
                "needs the response, but captureResponse is false",
            ),
        ];
        let want: Vec<(String, String)> = want
            .into_iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn service_requests_and_secret_headers_are_checked() {
        let service = |request: Value| {
            wf(
                json!([{"id": "s", "type": "service", "serviceSlug": "notifier", "request": request}]),
            )
        };
        let got = problems(service(json!({
            "method": "FETCH", "path": "hooks", "query": {"ok": "1", "n": 2, "list": ["a", 1, true], "bad": {"x": 1}, "bad2": [null]},
            "headers": {
                "X-Ok": "text {{ parameters.a }}",
                "Bad Name": "v",
                "X-Split": "a\r\nInjected: 1",
                "X-Num": 5,
                "X-Env": {"secret": {"source": "env", "key": "1BAD", "version": 2}},
                "X-Store": {"secret": {"source": "vault", "key": "", "extra": 1}, "prefix": 7, "other": 1},
                "X-None": {"prefix": "Bearer "},
                "X-Ver": {"secret": {"source": "store", "key": "a/b", "version": 0}},
                "X-Type": {"secret": "TOKEN"}
            },
            "extra": true
        })));
        let shape = "must be a string or {\"secret\": {\"source\": \"env\" | \"store\", \"key\", \"version\"?}, \"prefix\"?}";
        let want: Vec<(&str, &str)> = vec![
            ("/steps/0/request/extra", "unknown field"),
            (
                "/steps/0/request/method",
                "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
            ),
            (
                "/steps/0/request/path",
                "must start with '/' (it is appended to the service's base URL)",
            ),
            (
                "/steps/0/request/query/bad",
                "must be a string, number or boolean, or an array of them",
            ),
            (
                "/steps/0/request/query/bad2",
                "must be a string, number or boolean, or an array of them",
            ),
            (
                "/steps/0/request/headers/Bad Name",
                "is not a valid HTTP header name",
            ),
            (
                "/steps/0/request/headers/X-Env/secret/key",
                "must be an environment variable name (letters, digits and '_', not starting with a digit)",
            ),
            (
                "/steps/0/request/headers/X-Env/secret/version",
                "only store secrets have versions",
            ),
            ("/steps/0/request/headers/X-None", shape),
            ("/steps/0/request/headers/X-Num", shape),
            (
                "/steps/0/request/headers/X-Split",
                "must not contain line breaks",
            ),
            ("/steps/0/request/headers/X-Store/other", "unknown field"),
            (
                "/steps/0/request/headers/X-Store/prefix",
                "must be a string",
            ),
            (
                "/steps/0/request/headers/X-Store/secret/extra",
                "unknown field",
            ),
            (
                "/steps/0/request/headers/X-Store/secret/source",
                "must be one of env, store",
            ),
            (
                "/steps/0/request/headers/X-Store/secret/key",
                "must be 1 to 255 characters without spaces or '/'",
            ),
            (
                "/steps/0/request/headers/X-Type/secret",
                "must be an object",
            ),
            (
                "/steps/0/request/headers/X-Ver/secret/key",
                "must be 1 to 255 characters without spaces or '/'",
            ),
            (
                "/steps/0/request/headers/X-Ver/secret/version",
                "must be a positive integer",
            ),
        ];
        let want: Vec<(String, String)> = want
            .into_iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        assert_eq!(got, want);

        // Defaults: GET, no query, headers or body; a lower-case method is accepted.
        let spec = parse(service(json!({"path": "/x"})));
        let StepAction::Service(s) = &spec.steps[0].action else {
            panic!()
        };
        assert_eq!(
            s.request,
            ServiceRequest {
                method: HttpMethod::Get,
                path: "/x".into(),
                query: Map::new(),
                headers: BTreeMap::new(),
                body: None
            }
        );
        assert!(!s.require_healthy && !s.allow_degraded && !s.capture_response);
        let spec = parse(service(
            json!({"method": "patch", "path": "{{ parameters.path }}",
            "headers": {"X-Env": {"secret": {"source": "env", "key": "API_TOKEN"}}}}),
        ));
        let StepAction::Service(s) = &spec.steps[0].action else {
            panic!()
        };
        assert_eq!(s.request.method, HttpMethod::Patch);
        assert_eq!(s.request.path, "{{ parameters.path }}");
        assert_eq!(
            paths(service(json!({"method": "GET"}))),
            vec!["/steps/0/request/path"]
        );
        // storeResponseAs alone implies capturing the response.
        let spec = parse(wf(
            json!([{"id": "s", "type": "service", "serviceSlug": "notifier",
            "request": {"path": "/"}, "storeResponseAs": "resp", "allowDegraded": true, "requireHealthy": true}]),
        ));
        let StepAction::Service(s) = &spec.steps[0].action else {
            panic!()
        };
        assert!(s.capture_response && s.allow_degraded && s.require_healthy);
    }

    #[test]
    fn step_ids_must_be_unique_and_dependencies_known() {
        let got = problems(wf(json!([
            step("a", &[]),
            step("b", &["a", "ghost", "a"]),
            step("a", &["b"]),
            step("c", &["b", "nope"]),
        ])));
        assert_eq!(
            got,
            vec![
                (
                    "/steps/2/id".to_string(),
                    "duplicate step id \"a\" (also /steps/0/id)".to_string()
                ),
                (
                    "/steps/1/dependsOn/1".to_string(),
                    "unknown step \"ghost\"".to_string()
                ),
                (
                    "/steps/1/dependsOn/2".to_string(),
                    "\"a\" is listed twice".to_string()
                ),
                (
                    "/steps/3/dependsOn/1".to_string(),
                    "unknown step \"nope\"".to_string()
                ),
            ]
        );
        for good in ["a", "A_b-9", "_x", &"x".repeat(100)] {
            parse(wf(json!([step(good, &[])])));
        }
        for bad in ["", "9a", "-a", "a.b", "a b", "ä", &"x".repeat(101)] {
            assert_eq!(
                paths(wf(json!([step(bad, &[])]))),
                vec!["/steps/0/id"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        // Length 1.
        assert_eq!(
            problems(wf(json!([step("a", &["a"])]))),
            vec![(
                "/steps/0/dependsOn/0".to_string(),
                "dependency cycle: a -> a".to_string()
            )]
        );
        // Length 2.
        assert_eq!(
            problems(wf(json!([step("a", &["b"]), step("b", &["a"])]))),
            vec![(
                "/steps/0/dependsOn/0".to_string(),
                "dependency cycle: a -> b -> a".to_string()
            )]
        );
        // Length 3, with an entry point outside the cycle and the pointer at the right position.
        assert_eq!(
            problems(wf(json!([
                step("root", &[]),
                step("a", &["root", "b"]),
                step("b", &["c"]),
                step("c", &["a"]),
                step("after", &["c"]),
            ]))),
            vec![(
                "/steps/1/dependsOn/1".to_string(),
                "dependency cycle: a -> b -> c -> a".to_string()
            )]
        );
        // Two separate cycles are both reported, next to other problems.
        assert_eq!(
            problems(wf(json!([
                step("x", &["y"]),
                step("y", &["x"]),
                step("p", &["q", "ghost"]),
                step("q", &["q"]),
            ]))),
            vec![
                (
                    "/steps/2/dependsOn/1".to_string(),
                    "unknown step \"ghost\"".to_string()
                ),
                (
                    "/steps/0/dependsOn/0".to_string(),
                    "dependency cycle: x -> y -> x".to_string()
                ),
                (
                    "/steps/3/dependsOn/0".to_string(),
                    "dependency cycle: q -> q".to_string()
                ),
            ]
        );
    }

    #[test]
    fn templates_may_read_only_ancestors() {
        let body = wf(json!([
            {"id": "a", "jobSlug": "noop"},
            {"id": "b", "jobSlug": "noop", "dependsOn": ["a"]},
            {"id": "side", "jobSlug": "noop"},
            // Two levels up (c -> b -> a) is fine.
            {"id": "c", "jobSlug": "noop", "dependsOn": ["b"],
             "parameters": {"x": "{{ steps.a.result.value }}", "y": "{{ steps.b.result }}",
                            "p": "{{ parameters.q }} {{ shared.k }} {{ run.id }}"}},
        ]));
        parse(body);

        let got = problems(wf(json!([
            {"id": "a", "jobSlug": "noop"},
            {"id": "b", "jobSlug": "noop", "dependsOn": ["a"],
             "parameters": {"own": "{{ steps.b.result }}", "later": ["{{ steps.c.result.x }}"]}},
            {"id": "side", "jobSlug": "noop", "parameters": {"n": {"deep": "x{{ steps.a.result }}"}}},
            {"id": "c", "jobSlug": "noop", "dependsOn": ["b"],
             "parameters": {"ghost": "{{ steps.ghost.result }}", "bad": "{{ env.HOME }}", "open": "{{ run.id"}},
        ])));
        let want: Vec<(&str, &str)> = vec![
            (
                "/steps/1/parameters/later/0",
                "`{{ steps.c.result.x }}`: step \"b\" does not depend on step \"c\", directly or through other steps; add it to dependsOn",
            ),
            (
                "/steps/1/parameters/own",
                "`{{ steps.b.result }}`: a step cannot read its own result",
            ),
            (
                "/steps/2/parameters/n/deep",
                "`{{ steps.a.result }}`: step \"side\" does not depend on step \"a\", directly or through other steps; add it to dependsOn",
            ),
            (
                "/steps/3/parameters/bad",
                "`env.HOME`: unknown root \"env\"; expected parameters, steps, shared or run",
            ),
            (
                "/steps/3/parameters/open",
                "unclosed `{{` in \"{{ run.id\" (every `{{` needs a matching `}}`)",
            ),
            (
                "/steps/3/parameters/ghost",
                "`{{ steps.ghost.result }}` refers to unknown step \"ghost\"",
            ),
        ];
        let want: Vec<(String, String)> = want
            .into_iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn service_request_templates_are_checked_everywhere() {
        let got = paths(wf(json!([
            {"id": "a", "jobSlug": "noop"},
            {"id": "s", "type": "service", "serviceSlug": "notifier", "dependsOn": ["a"],
             "request": {"path": "/x/{{ steps.z.result }}", "query": {"q": "{{ steps.a.result.q }}"},
               "headers": {"X-A": "{{ steps.a.result.h }}", "X-B": "{{ nope }}",
                           "X-S": {"secret": {"source": "store", "key": "K"}, "prefix": "{{ steps.s2.result }}"}},
               "body": {"list": ["{{ steps.s2.result.b }}"]}}},
            {"id": "s2", "jobSlug": "noop"},
        ])));
        assert_eq!(
            got,
            vec![
                "/steps/1/request/headers/X-B",
                "/steps/1/request/body/list/0",
                "/steps/1/request/headers/X-S/prefix",
                "/steps/1/request/path",
            ]
        );
    }

    #[test]
    fn triggers_are_checked() {
        let with = |triggers: Value| {
            json!({"slug": "wf", "name": "W", "steps": [step("a", &[])], "triggers": triggers,
                   "parametersSchema": {"type": "object", "required": ["repoUrl"],
                                        "properties": {"repoUrl": {"type": "string"}, "depth": {"type": "integer"}}},
                   "defaultParameters": {"depth": 1}})
        };
        let got = problems(with(json!([
            {"type": "manual", "options": {"x": 1}},
            {"type": "schedule", "options": {"cron": "not a cron", "parameters": {"repoUrl": "r"}}},
            {"type": "schedule", "options": {"cron": "0 0 0 30 2 *", "parameters": {"repoUrl": "r"}}},
            {"type": "schedule", "options": {"parameters": {"depth": "deep"}}},
            {"type": "schedule"},
            {"type": "event", "options": {"filter": []}},
            {"type": "event", "options": {"event": "Workflow Run", "extra": 1}},
            {"type": "webhook"},
            {"options": {}},
            {"type": "manual", "extra": 1},
            "manual",
            {"type": "manual", "options": 5},
        ])));
        let got_paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            got_paths,
            vec![
                "/triggers/0/options/x",
                "/triggers/1/options/cron",
                "/triggers/2/options/cron",
                "/triggers/3/options/cron",
                "/triggers/3/options/parameters/repoUrl",
                "/triggers/3/options/parameters/depth",
                "/triggers/4/options/cron",
                "/triggers/4/options/parameters/repoUrl",
                "/triggers/5/options/event",
                "/triggers/5/options/filter",
                "/triggers/6/options/extra",
                "/triggers/6/options/event",
                "/triggers/7/type",
                "/triggers/8/type",
                "/triggers/9/extra",
                "/triggers/10",
                "/triggers/11/options",
            ]
        );
        assert_eq!(got[0].1, "unknown option");
        assert!(
            got[1]
                .1
                .starts_with("invalid cron expression \"not a cron\""),
            "{}",
            got[1].1
        );
        assert_eq!(got[2].1, "cron expression \"0 0 0 30 2 *\" never fires");
        assert_eq!(got[3].1, "is required");
        assert_eq!(got[12].1, "must be one of manual, schedule, event");
        assert_eq!(got[13].1, "is required");

        let spec = parse(with(json!([
            {"type": "schedule", "options": {"cron": " 0 */15 * * * * ", "parameters": {"repoUrl": "r"}}},
            {"type": "schedule", "options": {"cron": "*/5 * * * *", "parameters": {"repoUrl": "r"}}},
            {"type": "event", "options": {"event": "job.run.*"}},
            {"type": "manual", "options": {}},
        ])));
        assert_eq!(
            spec.triggers,
            vec![
                TriggerSpec::Schedule(ScheduleTrigger {
                    cron: "0 */15 * * * *".into(),
                    parameters: json!({"repoUrl": "r"})
                }),
                TriggerSpec::Schedule(ScheduleTrigger {
                    cron: "*/5 * * * *".into(),
                    parameters: json!({"repoUrl": "r"})
                }),
                TriggerSpec::Event(EventTrigger {
                    event: "job.run.*".into(),
                    filter: Map::new()
                }),
                TriggerSpec::Manual,
            ]
        );
        assert_eq!(parse(with(json!([]))).triggers, vec![]);
    }

    #[test]
    fn cron_accepts_seconds_years_and_five_fields() {
        use chrono::{TimeZone, Timelike, Utc};
        let every_quarter = parse_cron("0 */15 * * * *").unwrap();
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 10, 7, 30).unwrap();
        let next: Vec<_> = every_quarter.after(&from).take(2).collect();
        assert_eq!(
            next[0],
            Utc.with_ymd_and_hms(2026, 1, 1, 10, 15, 0).unwrap()
        );
        assert_eq!(
            next[1],
            Utc.with_ymd_and_hms(2026, 1, 1, 10, 30, 0).unwrap()
        );
        let five = parse_cron("*/5 * * * *").unwrap();
        let n = five.after(&from).next().unwrap();
        assert_eq!((n.minute(), n.second()), (10, 0));
        assert!(parse_cron("0 0 12 * * MON-FRI 2099").is_ok());
        assert!(parse_cron("@hourly").is_ok());
        for bad in [
            "",
            "* * * *",
            "61 * * * * *",
            "0 0 25 * * *",
            "0 0 0 30 2 *",
        ] {
            assert!(parse_cron(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn many_problems_at_once() {
        let got = paths(json!({
            "slug": "ok", "name": "N",
            "steps": [
                {"id": "a", "jobSlug": "ghost", "timeoutMs": 1},
                {"id": "b", "dependsOn": ["a", "zzz"], "jobSlug": "noop", "parameters": {"x": "{{ steps.c.result }}"}},
                {"id": "c", "dependsOn": ["c"], "type": "service", "serviceSlug": "notifier", "request": {"path": "/"}}
            ],
            "triggers": [{"type": "schedule", "options": {"cron": "nope"}}]
        }));
        assert_eq!(
            got,
            vec![
                "/steps/0/timeoutMs",
                "/steps/0/jobSlug",
                "/steps/1/dependsOn/1",
                "/steps/2/dependsOn/0",
                "/steps/1/parameters/x",
                "/triggers/0/options/cron",
            ]
        );
    }

    fn statuses(pairs: &[(&str, StepStatus)]) -> HashMap<String, StepStatus> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn diamond() -> WorkflowSpec {
        parse(wf(json!([
            step("top", &[]),
            step("left", &["top"]),
            step("right", &["top"]),
            step("bottom", &["left", "right"]),
        ])))
    }

    #[test]
    fn diamond_graph() {
        use StepStatus::*;
        let d = diamond();
        assert_eq!(
            d.topological_order(),
            vec!["top", "left", "right", "bottom"]
        );
        assert_eq!(
            d.layers(),
            vec![vec!["top"], vec!["left", "right"], vec!["bottom"]]
        );
        assert_eq!(d.ancestors("bottom"), vec!["top", "left", "right"]);
        assert_eq!(d.ancestors("left"), vec!["top"]);
        assert!(d.ancestors("top").is_empty());
        assert!(d.ancestors("ghost").is_empty());
        assert_eq!(d.descendants("top"), vec!["left", "right", "bottom"]);
        assert_eq!(d.descendants("left"), vec!["bottom"]);

        assert_eq!(d.ready_steps(&statuses(&[])), vec!["top"]);
        assert_eq!(
            d.ready_steps(&statuses(&[("top", Running)])),
            Vec::<&str>::new()
        );
        assert_eq!(
            d.ready_steps(&statuses(&[("top", Succeeded)])),
            vec!["left", "right"]
        );
        assert_eq!(
            d.ready_steps(&statuses(&[
                ("top", Succeeded),
                ("left", Succeeded),
                ("right", Running)
            ])),
            Vec::<&str>::new()
        );
        assert_eq!(
            d.ready_steps(&statuses(&[
                ("top", Succeeded),
                ("left", Succeeded),
                ("right", Succeeded)
            ])),
            vec!["bottom"]
        );
        assert_eq!(
            d.ready_steps(&statuses(&[
                ("top", Succeeded),
                ("left", Failed),
                ("right", Succeeded)
            ])),
            Vec::<&str>::new()
        );
        assert_eq!(
            d.ready_steps(&statuses(&[
                ("top", Succeeded),
                ("left", Succeeded),
                ("right", Skipped)
            ])),
            Vec::<&str>::new()
        );

        // `left` fails with onFailure=continue: only `bottom` is skipped; `right` goes on.
        assert_eq!(
            d.dependents_to_skip(
                "left",
                &statuses(&[("top", Succeeded), ("left", Failed), ("right", Running)])
            ),
            vec!["bottom"]
        );
        assert_eq!(
            d.dependents_to_skip("top", &statuses(&[("top", Failed)])),
            vec!["left", "right", "bottom"]
        );
        // Already finished dependents (e.g. on a resumed run) are left alone.
        assert_eq!(
            d.dependents_to_skip("top", &statuses(&[("top", Failed), ("left", Skipped)])),
            vec!["right", "bottom"]
        );
        assert!(d.dependents_to_skip("bottom", &statuses(&[])).is_empty());
        assert!(d.dependents_to_skip("ghost", &statuses(&[])).is_empty());
    }

    #[test]
    fn fan_out_to_fifty_and_back() {
        use StepStatus::*;
        let mut steps = vec![step("start", &[])];
        let middle: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
        for id in &middle {
            steps.push(step(id, &["start"]));
        }
        let refs: Vec<&str> = middle.iter().map(String::as_str).collect();
        steps.push(json!({"id": "end", "jobSlug": "noop", "dependsOn": refs,
                          "parameters": {"first": "{{ steps.m00.result }}", "root": "{{ steps.start.result.x }}"}}));
        let spec = parse(wf(json!(steps)));

        let layers = spec.layers();
        assert_eq!(layers.len(), 3);
        assert_eq!(layers[0], vec!["start"]);
        assert_eq!(layers[1], refs);
        assert_eq!(layers[2], vec!["end"]);
        let order = spec.topological_order();
        assert_eq!(order.len(), 52);
        assert_eq!(order[0], "start");
        assert_eq!(order[1..51], refs[..]);
        assert_eq!(order[51], "end");

        assert_eq!(spec.ready_steps(&statuses(&[("start", Succeeded)])), refs);
        let mut all: Vec<(&str, StepStatus)> = vec![("start", Succeeded)];
        all.extend(refs.iter().map(|id| (*id, Succeeded)));
        assert_eq!(spec.ready_steps(&statuses(&all)), vec!["end"]);
        all[50] = ("m49", Failed);
        assert!(spec.ready_steps(&statuses(&all)).is_empty());
        assert_eq!(spec.dependents_to_skip("m49", &statuses(&all)), vec!["end"]);
        assert_eq!(spec.ancestors("end").len(), 51);
        assert_eq!(spec.descendants("start").len(), 51);
    }

    #[test]
    fn layers_follow_the_longest_path() {
        // a -> b -> c, and d depends on a and c directly: d is in layer 3, not 1.
        let spec = parse(wf(json!([
            step("d", &["a", "c"]),
            step("c", &["b"]),
            step("b", &["a"]),
            step("a", &[]),
            step("lone", &[]),
        ])));
        assert_eq!(
            spec.layers(),
            vec![vec!["a", "lone"], vec!["b"], vec!["c"], vec!["d"]]
        );
        assert_eq!(spec.topological_order(), vec!["a", "b", "c", "d", "lone"]);
    }
}
