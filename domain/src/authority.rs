//! Who may make the server execute commands or send credentials somewhere, decided from the
//! content of a request (issue 14). The route table (`auth::RULES`) gives each endpoint its
//! scope; these checks come on top, in the use cases, because they depend on what is written:
//!
//! - **Code execution belongs to definitions.** An entry point declares its *definition-only*
//!   parameters (`builtin:repository-build`: `command`, `env`, `checkout`). A run request never
//!   sets them (400 naming the field); a job definition sets them in `defaultParameters`, and a
//!   workflow step only when its author holds `jobs:exec`, written out (no template) unless the
//!   parameter is one that execution confines anyway (the checkout directory). Creating or
//!   changing a definition whose entry point executes commands needs `jobs:exec`.
//! - **Credentials go where a trusted author sent them.** A secret reference in a caller's run
//!   parameters needs `secrets:use`; so do writes that decide where credentials go: a job whose
//!   defaults carry secret references, a change of a job's destination parameters (`url` of
//!   `builtin:http`), a workflow carrying secret references, and a service's `baseUrl` or
//!   `headers`.
//!
//! `admin` implies every scope; open local mode is `admin`.
use serde_json::{Map, Value};

use super::{
    Problems,
    auth::{Principal, Scope},
    problems::pointer_segment,
    secrets, template,
};

/// What an entry point lets callers and authors set (each entry point's `EntryPoint::rules`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryPointRules {
    /// Parameters only a definition sets: job defaults, or a workflow step written with
    /// `jobs:exec`.
    pub definition_only: &'static [&'static str],
    /// Of those, the ones a workflow step may fill from a template (execution confines them,
    /// e.g. the checkout directory to `<data-dir>/checkouts`).
    pub templatable: &'static [&'static str],
    /// Runs programs on the host: writing such a definition needs `jobs:exec`.
    pub executes_commands: bool,
    /// Parameters that decide where the call goes; with secret references in the job's
    /// defaults, setting them (run requests, workflow steps) or changing their defaults needs
    /// `secrets:use`.
    pub destinations: &'static [&'static str],
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Wrong whoever sends it (400), every problem located.
    Invalid(Problems),
    /// The caller lacks a scope the content needs (403); the message names scope and reason.
    Forbidden(String),
}

fn need(who: &Principal, scope: Scope, why: impl FnOnce() -> String) -> Result<(), Refusal> {
    if who.allows(scope) {
        Ok(())
    } else {
        Err(Refusal::Forbidden(format!(
            "{}: this needs scope {} (or admin); {} has {}",
            why(),
            scope.as_str(),
            who.subject,
            who.scope_names().join(", ")
        )))
    }
}

/// The pointer (relative to `value`) of its first secret reference, well-formed or not.
pub fn first_secret_reference(value: &Value) -> Option<String> {
    match secrets::references(value) {
        Ok(found) => found.into_iter().next().map(|(at, _)| at),
        // A malformed reference is still meant as one; its problems are reported elsewhere.
        Err(p) => p.iter().next().map(|d| d.path.clone()),
    }
}

fn object(value: &Value) -> Option<&Map<String, Value>> {
    value.as_object()
}

/// A caller's parameters for a run of a job (`POST /api/jobs/:slug/run`, the launch form):
/// no definition-only parameter (400), secret references only with `secrets:use`, and no
/// change of destination when the job's defaults carry secrets.
pub fn check_run_parameters(
    entry_point: &str,
    rules: &EntryPointRules,
    defaults: &Value,
    caller: &Value,
    who: &Principal,
) -> Result<(), Refusal> {
    let given = object(caller);
    let mut p = Problems::new();
    for key in rules.definition_only {
        if given.is_some_and(|g| g.contains_key(*key)) {
            p.add(
                format!("/parameters/{}", pointer_segment(key)),
                format!(
                    "is definition-only for {entry_point}: the job's definition sets it (defaultParameters); a run request, a workflow step's parameters or a trigger cannot set or override it"
                ),
            );
        }
    }
    if !p.is_empty() {
        return Err(Refusal::Invalid(p));
    }
    if let Some(at) = first_secret_reference(caller) {
        need(who, Scope::SecretsUse, || {
            format!(
                "/parameters{at} is a secret reference, and a caller's run parameters may hold one only with secrets:use"
            )
        })?;
    }
    if first_secret_reference(defaults).is_some() {
        for key in rules.destinations {
            if given.is_some_and(|g| g.contains_key(*key)) {
                need(who, Scope::SecretsUse, || {
                    format!(
                        "/parameters/{} would change where this job sends the secrets its defaultParameters carry",
                        pointer_segment(key)
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// A caller's parameters for a workflow run (or a rerun of one): secret references only with
/// `secrets:use` (the steps' templates could carry them anywhere).
pub fn check_workflow_run_parameters(parameters: &Value, who: &Principal) -> Result<(), Refusal> {
    match first_secret_reference(parameters) {
        Some(at) => need(who, Scope::SecretsUse, || {
            format!(
                "/parameters{at} is a secret reference, and a caller's run parameters may hold one only with secrets:use"
            )
        }),
        None => Ok(()),
    }
}

/// A job definition as the checks see it.
#[derive(Debug, Clone, Copy)]
pub struct JobShape<'a> {
    pub slug: &'a str,
    pub entry_point: &'a str,
    pub defaults: &'a Value,
}

/// Creating (`old` = `None`) or changing a job definition.
pub fn check_job_write(
    old: Option<JobShape<'_>>,
    new: JobShape<'_>,
    rules_of: &dyn Fn(&str) -> EntryPointRules,
    who: &Principal,
) -> Result<(), Refusal> {
    let rules = rules_of(new.entry_point);
    let old_rules = old.map(|o| rules_of(o.entry_point));
    if rules.executes_commands {
        need(who, Scope::JobsExec, || {
            format!(
                "job {:?} runs commands on the host ({}): creating or changing it",
                new.slug, new.entry_point
            )
        })?;
    }
    if let (Some(o), Some(old_rules)) = (old, old_rules)
        && old_rules.executes_commands
    {
        need(who, Scope::JobsExec, || {
            format!(
                "job {:?} runs commands on the host ({}): changing it",
                o.slug, o.entry_point
            )
        })?;
    }
    for key in rules.definition_only {
        let before = old.and_then(|o| o.defaults.get(*key));
        if new.defaults.get(*key) != before {
            need(who, Scope::JobsExec, || {
                format!(
                    "/defaultParameters/{} is definition-only for {}: setting or changing it",
                    pointer_segment(key),
                    new.entry_point
                )
            })?;
        }
    }
    if let Some(at) = first_secret_reference(new.defaults) {
        need(who, Scope::SecretsUse, || {
            format!(
                "/defaultParameters{at} is a secret reference: a job whose defaults carry secrets decides where they go"
            )
        })?;
    }
    if let Some(o) = old {
        let moved = o.entry_point != new.entry_point
            || rules
                .destinations
                .iter()
                .any(|key| o.defaults.get(*key) != new.defaults.get(*key));
        if moved && !rules.destinations.is_empty() {
            need(who, Scope::SecretsUse, || {
                format!(
                    "changing where job {:?} sends its requests ({}) could redirect the credentials workflow steps pass to it",
                    new.slug,
                    rules
                        .destinations
                        .iter()
                        .map(|k| format!("/defaultParameters/{}", pointer_segment(k)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        }
    }
    Ok(())
}

/// One job step of a workflow definition, with the job it runs.
#[derive(Debug, Clone)]
pub struct StepJob<'a> {
    /// The step's pointer in the definition, e.g. `/steps/2`.
    pub at: String,
    pub step_id: &'a str,
    pub parameters: &'a Value,
    pub entry_point: &'a str,
    pub job_defaults: &'a Value,
}

/// Creating or changing a workflow definition (`doc` as submitted): definition-only
/// parameters of its steps need `jobs:exec` and, unless confined by execution, must be
/// written out; secret references anywhere in it need `secrets:use`.
pub fn check_workflow_write(
    doc: &Value,
    steps: &[StepJob<'_>],
    rules_of: &dyn Fn(&str) -> EntryPointRules,
    who: &Principal,
) -> Result<(), Refusal> {
    let mut p = Problems::new();
    let mut exec: Option<String> = None;
    let mut routes: Option<String> = None;
    for step in steps {
        let rules = rules_of(step.entry_point);
        let Some(given) = object(step.parameters) else {
            continue;
        };
        for key in rules.definition_only {
            let Some(value) = given.get(*key) else {
                continue;
            };
            let at = format!("{}/parameters/{}", step.at, pointer_segment(key));
            if !rules.templatable.contains(key) && !template::references(value).is_empty() {
                p.add(
                    at.clone(),
                    format!(
                        "is definition-only for {}: write it out; a template would let the run's caller or another step set it",
                        step.entry_point
                    ),
                );
            }
            exec.get_or_insert(format!(
                "{at}: step {:?} sets a definition-only parameter of {}",
                step.step_id, step.entry_point
            ));
        }
        if first_secret_reference(step.job_defaults).is_some() {
            for key in rules.destinations {
                if given.contains_key(*key) {
                    routes.get_or_insert(format!(
                        "{}/parameters/{}: step {:?} decides where its job sends the secrets of its defaultParameters",
                        step.at,
                        pointer_segment(key),
                        step.step_id
                    ));
                }
            }
        }
    }
    if !p.is_empty() {
        return Err(Refusal::Invalid(p));
    }
    if let Some(why) = exec {
        need(who, Scope::JobsExec, || why)?;
    }
    if let Some(at) = first_secret_reference(doc) {
        need(who, Scope::SecretsUse, || {
            format!("{at} is a secret reference: a workflow carrying secrets decides where they go")
        })?;
    }
    if let Some(why) = routes {
        need(who, Scope::SecretsUse, || why)?;
    }
    Ok(())
}

/// The value a masked service header is shown as; sent back in a `PATCH`, it keeps the stored
/// value.
pub const MASKED: &str = super::secrets::REDACTED;

/// Registering (`old` = `None`) or changing a service: its `baseUrl` and `headers` route
/// credentials, so setting or changing them needs `secrets:use`.
pub fn check_service_write(
    old: Option<(&str, &Map<String, Value>)>,
    base_url: &str,
    headers: &Map<String, Value>,
    who: &Principal,
) -> Result<(), Refusal> {
    match old {
        None if !headers.is_empty() => need(who, Scope::SecretsUse, || {
            "/headers: a service's headers are credentials, setting them".to_string()
        }),
        None => Ok(()),
        Some((old_url, old_headers)) => {
            if old_url != base_url {
                need(who, Scope::SecretsUse, || {
                    "/baseUrl: changing it redirects the service's headers and the credentials of its steps".to_string()
                })?;
            }
            let same = old_headers.len() == headers.len()
                && headers.iter().all(|(name, value)| {
                    old_headers.contains_key(name)
                        && (value == MASKED || old_headers.get(name) == Some(value))
                });
            if !same {
                need(who, Scope::SecretsUse, || {
                    "/headers: a service's headers are credentials, changing them".to_string()
                })?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;

    const BUILD: EntryPointRules = EntryPointRules {
        definition_only: &["command", "env", "checkout"],
        templatable: &["checkout"],
        executes_commands: true,
        destinations: &[],
    };
    const HTTP: EntryPointRules = EntryPointRules {
        definition_only: &[],
        templatable: &[],
        executes_commands: false,
        destinations: &["url"],
    };

    fn rules_of(entry_point: &str) -> EntryPointRules {
        match entry_point {
            "builtin:repository-build" => BUILD,
            "builtin:http" => HTTP,
            _ => EntryPointRules::default(),
        }
    }

    fn token(scopes: &[Scope]) -> Principal {
        Principal {
            subject: "bob".into(),
            scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
            token_hash_prefix: Some("abc".into()),
        }
    }

    fn forbidden(r: Result<(), Refusal>, scope: &str) {
        match r {
            Err(Refusal::Forbidden(m)) => assert!(m.contains(scope), "{m}"),
            other => panic!("expected a refusal needing {scope}, got {other:?}"),
        }
    }

    fn invalid(r: Result<(), Refusal>) -> Vec<String> {
        match r {
            Err(Refusal::Invalid(p)) => p.iter().map(|d| d.path.clone()).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn run_requests_cannot_set_definition_only_parameters_whoever_calls() {
        let admin = Principal::local();
        let got = invalid(check_run_parameters(
            "builtin:repository-build",
            &BUILD,
            &json!({"command": ["make"]}),
            &json!({"repoUrl": "/r", "command": ["sh", "-c", "id"], "env": {}, "checkout": "/"}),
            &admin,
        ));
        assert_eq!(
            got,
            [
                "/parameters/command",
                "/parameters/env",
                "/parameters/checkout"
            ]
        );
        assert!(
            check_run_parameters(
                "builtin:repository-build",
                &BUILD,
                &json!({"command": ["make"]}),
                &json!({"repoUrl": "/r", "ref": "main"}),
                &token(&[Scope::JobsRun]),
            )
            .is_ok()
        );
    }

    #[test]
    fn caller_secret_references_need_secrets_use() {
        let params = json!({"headers": {"A": {"secret": {"source": "store", "key": "K"}}}});
        forbidden(
            check_run_parameters(
                "builtin:http",
                &HTTP,
                &json!({}),
                &params,
                &token(&[Scope::JobsRun]),
            ),
            "secrets:use",
        );
        assert!(
            check_run_parameters(
                "builtin:http",
                &HTTP,
                &json!({}),
                &params,
                &token(&[Scope::JobsRun, Scope::SecretsUse]),
            )
            .is_ok()
        );
        forbidden(
            check_workflow_run_parameters(
                &json!({"x": [{"secret": {"source": "env", "key": "E"}}]}),
                &token(&[Scope::WorkflowsRun]),
            ),
            "secrets:use",
        );
        assert!(check_workflow_run_parameters(&json!({"x": 1}), &token(&[])).is_ok());
    }

    #[test]
    fn redirecting_a_jobs_secrets_needs_secrets_use() {
        let defaults = json!({"url": "https://ok", "headers": {"Authorization": {"secret": {"source": "store", "key": "T"}}}});
        let runner = token(&[Scope::JobsRun]);
        forbidden(
            check_run_parameters(
                "builtin:http",
                &HTTP,
                &defaults,
                &json!({"url": "https://evil.test"}),
                &runner,
            ),
            "secrets:use",
        );
        // Other fields are fine.
        assert!(
            check_run_parameters(
                "builtin:http",
                &HTTP,
                &defaults,
                &json!({"body": {"a": 1}}),
                &runner
            )
            .is_ok()
        );
        // Without secrets in the defaults the caller picks the URL.
        assert!(
            check_run_parameters(
                "builtin:http",
                &HTTP,
                &json!({}),
                &json!({"url": "https://x"}),
                &runner
            )
            .is_ok()
        );
    }

    #[test]
    fn job_writes_that_execute_or_route_credentials_need_their_scope() {
        let writer = token(&[Scope::JobsWrite]);
        let build = JobShape {
            slug: "b",
            entry_point: "builtin:repository-build",
            defaults: &json!({"command": ["make"]}),
        };
        forbidden(
            check_job_write(None, build, &rules_of, &writer),
            "jobs:exec",
        );
        assert!(
            check_job_write(
                None,
                build,
                &rules_of,
                &token(&[Scope::JobsWrite, Scope::JobsExec])
            )
            .is_ok()
        );
        // Turning a harmless job into a build, or a build into anything else.
        let noop = JobShape {
            slug: "b",
            entry_point: "builtin:noop",
            defaults: &json!({}),
        };
        forbidden(
            check_job_write(Some(noop), build, &rules_of, &writer),
            "jobs:exec",
        );
        forbidden(
            check_job_write(Some(build), noop, &rules_of, &writer),
            "jobs:exec",
        );
        assert!(check_job_write(Some(noop), noop, &rules_of, &writer).is_ok());
        // Secrets in defaults.
        let with_secret = JobShape {
            slug: "h",
            entry_point: "builtin:http",
            defaults: &json!({"headers": {"A": {"secret": {"source": "store", "key": "K"}}}}),
        };
        forbidden(
            check_job_write(None, with_secret, &rules_of, &writer),
            "secrets:use",
        );
        // Moving an existing job's destination.
        let a = JobShape {
            slug: "h",
            entry_point: "builtin:http",
            defaults: &json!({"url": "https://a"}),
        };
        let b = JobShape {
            slug: "h",
            entry_point: "builtin:http",
            defaults: &json!({"url": "https://evil"}),
        };
        assert!(check_job_write(None, b, &rules_of, &writer).is_ok());
        assert!(check_job_write(Some(a), a, &rules_of, &writer).is_ok());
        forbidden(
            check_job_write(Some(a), b, &rules_of, &writer),
            "secrets:use",
        );
    }

    fn build_step<'a>(parameters: &'a Value, job_defaults: &'a Value) -> StepJob<'a> {
        StepJob {
            at: "/steps/1".into(),
            step_id: "build",
            parameters,
            entry_point: "builtin:repository-build",
            job_defaults,
        }
    }

    #[test]
    fn workflow_steps_setting_definition_only_parameters() {
        let defaults = json!({"command": ["make"]});
        let literal =
            json!({"command": ["make", "test"], "checkout": "{{ steps.ingest.result.checkout }}"});
        let doc = json!({"steps": []});
        forbidden(
            check_workflow_write(
                &doc,
                &[build_step(&literal, &defaults)],
                &rules_of,
                &token(&[Scope::WorkflowsWrite]),
            ),
            "jobs:exec",
        );
        let exec = token(&[Scope::WorkflowsWrite, Scope::JobsExec]);
        assert!(
            check_workflow_write(&doc, &[build_step(&literal, &defaults)], &rules_of, &exec)
                .is_ok()
        );
        // Templates in command or env would hand them to the run's caller: refused for all.
        let templated =
            json!({"command": ["sh", "-c", "{{ parameters.cmd }}"], "env": {"A": "{{ run.id }}"}});
        assert_eq!(
            invalid(check_workflow_write(
                &doc,
                &[build_step(&templated, &defaults)],
                &rules_of,
                &Principal::local()
            )),
            ["/steps/1/parameters/command", "/steps/1/parameters/env"]
        );
        // A step that leaves them to the job's definition needs nothing more.
        let plain = json!({"repoUrl": "{{ parameters.repo }}"});
        assert!(
            check_workflow_write(
                &doc,
                &[build_step(&plain, &defaults)],
                &rules_of,
                &token(&[Scope::WorkflowsWrite])
            )
            .is_ok()
        );
    }

    #[test]
    fn workflows_with_secrets_need_secrets_use() {
        let doc = json!({"steps": [{"type": "service", "request": {"headers": {"Authorization": {"secret": {"source": "store", "key": "T"}, "prefix": "Bearer "}}}}]});
        forbidden(
            check_workflow_write(&doc, &[], &rules_of, &token(&[Scope::WorkflowsWrite])),
            "secrets:use",
        );
        assert!(
            check_workflow_write(
                &doc,
                &[],
                &rules_of,
                &token(&[Scope::WorkflowsWrite, Scope::SecretsUse])
            )
            .is_ok()
        );
    }

    #[test]
    fn service_urls_and_headers_need_secrets_use() {
        let writer = token(&[Scope::ServicesWrite]);
        let none = Map::new();
        let mut headers = Map::new();
        headers.insert("Authorization".into(), json!("Bearer x"));
        assert!(check_service_write(None, "https://a", &none, &writer).is_ok());
        forbidden(
            check_service_write(None, "https://a", &headers, &writer),
            "secrets:use",
        );
        forbidden(
            check_service_write(Some(("https://a", &none)), "https://b", &none, &writer),
            "secrets:use",
        );
        forbidden(
            check_service_write(Some(("https://a", &none)), "https://a", &headers, &writer),
            "secrets:use",
        );
        // The masked value sent back keeps the stored one: no change.
        let mut masked = Map::new();
        masked.insert("Authorization".into(), json!(MASKED));
        assert!(
            check_service_write(Some(("https://a", &headers)), "https://a", &masked, &writer)
                .is_ok()
        );
    }
}
