//! Job entry points compiled into the server: the registry the engine looks handlers up in, and
//! the static parameter checks the API runs before it accepts a run.
pub mod context;

mod build;
mod fail;
mod http;
mod noop;
mod repository;
mod service_call;
mod sleep;

use std::{collections::HashMap, sync::Arc};

use serde_json::{Map, Value};

pub use context::*;

pub const NOOP: &str = "builtin:noop";
pub const SLEEP: &str = "builtin:sleep";
pub const FAIL: &str = "builtin:fail";
pub const HTTP: &str = "builtin:http";
pub const REPOSITORY_INGEST: &str = "builtin:repository-ingest";
pub const REPOSITORY_BUILD: &str = "builtin:repository-build";
pub const SERVICE_CALL: &str = "builtin:service-call";

/// The entry points the engine can run, by name.
#[derive(Clone)]
pub struct Registry {
    entry_points: HashMap<&'static str, Arc<dyn EntryPoint>>,
}

impl Registry {
    /// A registry with no entry points (tests register fakes into it).
    pub fn empty() -> Registry {
        Registry {
            entry_points: HashMap::new(),
        }
    }

    /// Every built-in entry point; builds (and the checkouts ingests prepare for them) are
    /// confined by `sandbox`.
    pub fn builtin(sandbox: Arc<crate::sandbox::BuildSandbox>) -> Registry {
        let mut registry = Registry::empty();
        registry.register(Arc::new(noop::Noop));
        registry.register(Arc::new(sleep::Sleep));
        registry.register(Arc::new(fail::Fail));
        registry.register(Arc::new(http::Http));
        registry.register(Arc::new(repository::Ingest {
            sandbox: sandbox.clone(),
        }));
        registry.register(Arc::new(build::Build { sandbox }));
        registry.register(Arc::new(service_call::ServiceCall));
        registry
    }

    /// Adds or replaces the entry point of its name.
    pub fn register(&mut self, entry_point: Arc<dyn EntryPoint>) {
        self.entry_points.insert(entry_point.name(), entry_point);
    }

    pub fn get(&self, entry_point: &str) -> Option<Arc<dyn EntryPoint>> {
        self.entry_points.get(entry_point).cloned()
    }

    /// Registered entry point names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.entry_points.keys().copied().collect();
        names.sort_unstable();
        names
    }

    pub fn contains(&self, entry_point: &str) -> bool {
        self.entry_points.contains_key(entry_point)
    }

    /// The default definitions of the entry points that have one, by entry point name.
    pub fn default_definitions(&self) -> Vec<(&'static str, Value)> {
        let mut out: Vec<(&'static str, Value)> = self
            .entry_points
            .values()
            .filter_map(|e| Some((e.name(), e.default_definition()?)))
            .collect();
        out.sort_by_key(|(name, _)| *name);
        out
    }
}

/// The built-in entry points as the API's static checks see them (nothing here executes: the
/// sandbox is never used).
pub(crate) fn catalog() -> &'static Registry {
    static CATALOG: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    CATALOG.get_or_init(|| Registry::builtin(Arc::new(crate::sandbox::BuildSandbox::unconfined())))
}

/// What `entry_point` lets callers and definition authors set (see `domain::authority` and
/// each entry point's [`EntryPoint::rules`]); an unknown one has no special rules.
pub fn rules(entry_point: &str) -> domain::authority::EntryPointRules {
    catalog()
        .get(entry_point)
        .map(|e| e.rules())
        .unwrap_or_default()
}

/// One problem with a run's parameters: (JSON pointer relative to the parameters object, message).
pub type Problem = (String, String);

/// Static checks of what a built-in entry point needs from its parameters (presence and types
/// only), on top of the job's own JSON schema. Empty when the parameters are usable.
pub fn parameter_problems(entry_point: &str, params: &Value) -> Vec<Problem> {
    match catalog().get(entry_point) {
        Some(e) => e.problems(params),
        None => vec![(
            String::new(),
            format!("unknown entry point '{entry_point}'"),
        )],
    }
}

/// The parameters as an object, or a fatal error listing every problem: the engine may run
/// definitions the API never saw, so handlers re-check instead of trusting their input.
pub(crate) fn checked_params<'a>(
    entry_point: &str,
    params: &'a Value,
) -> Result<&'a Map<String, Value>, JobError> {
    let problems = parameter_problems(entry_point, params);
    match params.as_object() {
        Some(object) if problems.is_empty() => Ok(object),
        _ => {
            let listed: Vec<String> = problems
                .iter()
                .map(|(pointer, message)| format!("{}: {message}", display_pointer(pointer)))
                .collect();
            Err(JobError::Fatal(format!(
                "invalid parameters: {}",
                listed.join("; ")
            )))
        }
    }
}

fn display_pointer(pointer: &str) -> &str {
    if pointer.is_empty() { "/" } else { pointer }
}

/// The value at `key`, treating an explicit null like an absent key (defaults merged from a
/// schema often produce nulls for optional fields).
pub(crate) fn field<'a>(params: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    params.get(key).filter(|value| !value.is_null())
}

/// JSON pointer of `key` below `parent` ("" for the parameters object itself).
pub(crate) fn pointer(parent: &str, key: &str) -> String {
    format!("{parent}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Records a problem unless `key` holds a string (absent is fine when `required` is false).
pub(crate) fn check_string(
    params: &Map<String, Value>,
    key: &str,
    required: bool,
    problems: &mut Vec<Problem>,
) {
    match field(params, key) {
        None if required => problems.push((pointer("", key), "is required".to_string())),
        None => {}
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            problems.push((pointer("", key), "must not be empty".to_string()));
        }
        Some(Value::String(_)) => {}
        Some(_) => problems.push((pointer("", key), "must be a string".to_string())),
    }
}

/// Records a problem unless `key` is absent or an object whose values are all strings or
/// secret references (`{"secret": {...}, "prefix"?}`, resolved before the handler runs).
pub(crate) fn check_string_map(
    params: &Map<String, Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) {
    match field(params, key) {
        None => {}
        Some(Value::Object(map)) => {
            let parent = pointer("", key);
            for (name, value) in map {
                let at = pointer(&parent, name);
                if value.get("secret").is_some_and(Value::is_object) {
                    if let Err(p) = domain::secrets::references(value) {
                        for d in p.into_vec() {
                            problems.push((format!("{at}{}", d.path), d.message));
                        }
                    }
                } else if !value.is_string() {
                    problems.push((at, "must be a string or a secret reference".to_string()));
                }
            }
        }
        Some(_) => problems.push((pointer("", key), "must be an object of strings".to_string())),
    }
}

/// A URL fit for logs and error messages: no userinfo (credentials), no query or fragment
/// (tokens). Strings that are not URLs (local paths) come back unchanged.
pub(crate) fn redact_url(raw: &str) -> String {
    if !raw.contains("://") {
        return raw.to_string();
    }
    match reqwest::Url::parse(raw) {
        Ok(mut url) => {
            // Both only fail for URLs that cannot carry userinfo, which then has none to strip.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        // Unparseable: keep the scheme and whatever follows an '@' so no secret survives.
        Err(_) => match (raw.split_once("://"), raw.rsplit_once('@')) {
            (Some((scheme, _)), Some((_, rest))) => format!("{scheme}://{rest}"),
            _ => raw.to_string(),
        },
    }
}

#[cfg(test)]
pub(crate) fn test_ctx(
    params: Value,
    data_dir: &std::path::Path,
) -> (JobRunContext, tokio::sync::mpsc::UnboundedReceiver<LogLine>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = JobRunContext {
        run_id: "run-test".to_string(),
        job_slug: "test".to_string(),
        parameters: params,
        attempt: 1,
        max_attempts: 3,
        timeout: std::time::Duration::from_secs(60),
        cancel: tokio_util::sync::CancellationToken::new(),
        log: LogSink::new(
            "run-test".to_string(),
            1,
            LogSender::unbounded(tx),
            std::sync::Arc::new(LogBudget::unlimited()),
        ),
        metrics: MetricsSink::default(),
        data_dir: data_dir.to_path_buf(),
        // The default policy: loopback test servers are allowed.
        http: crate::egress::EgressClient::build(
            std::sync::Arc::new(crate::egress::EgressPolicy::default()),
            crate::egress::Redirects::SameOrigin,
        )
        .expect("http client"),
        services: std::sync::Arc::new(NoServices),
        secrets: std::sync::Arc::new(EnvSecrets(
            domain::secrets::EnvAllowList::parse("PATH,HOME").unwrap_or_default(),
        )),
    };
    (ctx, rx)
}

/// Every line logged so far (tests call this after the handler returned).
#[cfg(test)]
pub(crate) fn drain_log(rx: &mut tokio::sync::mpsc::UnboundedReceiver<LogLine>) -> Vec<LogLine> {
    let mut lines = Vec::new();
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointers(entry_point: &str, params: Value) -> Vec<String> {
        parameter_problems(entry_point, &params)
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    #[test]
    fn registry_knows_the_builtins() {
        let registry = Registry::builtin(Arc::new(crate::sandbox::BuildSandbox::unconfined()));
        assert_eq!(
            registry.names(),
            vec![
                FAIL,
                HTTP,
                NOOP,
                REPOSITORY_BUILD,
                REPOSITORY_INGEST,
                SERVICE_CALL,
                SLEEP
            ]
        );
        assert!(registry.contains(SLEEP));
        assert!(registry.get("builtin:nope").is_none());
        assert!(registry.get(NOOP).is_some());
    }

    #[test]
    fn unknown_entry_point_and_non_objects() {
        assert_eq!(pointers("builtin:nope", json!({})), vec![""]);
        assert_eq!(pointers(SLEEP, json!([1])), vec![""]);
        assert!(pointers(NOOP, json!("anything")).is_empty());
    }

    #[test]
    fn sleep_problems() {
        assert!(pointers(SLEEP, json!({"durationMs": 0})).is_empty());
        assert!(pointers(SLEEP, json!({"durationMs": 1500})).is_empty());
        for bad in [
            json!({}),
            json!({"durationMs": -1}),
            json!({"durationMs": 1.5}),
            json!({"durationMs": "10"}),
        ] {
            assert_eq!(pointers(SLEEP, bad), vec!["/durationMs"]);
        }
    }

    #[test]
    fn fail_problems() {
        assert!(pointers(FAIL, json!({})).is_empty());
        assert!(pointers(FAIL, json!({"message": "boom", "succeedOnAttempt": 2})).is_empty());
        assert!(pointers(FAIL, json!({"message": null, "succeedOnAttempt": null})).is_empty());
        assert_eq!(
            pointers(FAIL, json!({"message": 3, "succeedOnAttempt": 0})),
            vec!["/message", "/succeedOnAttempt"]
        );
        assert_eq!(
            pointers(FAIL, json!({"succeedOnAttempt": "2"})),
            vec!["/succeedOnAttempt"]
        );
    }

    #[test]
    fn http_problems() {
        assert!(
            pointers(
                HTTP,
                json!({"method": "GET", "url": "https://example.com/x"})
            )
            .is_empty()
        );
        assert!(
            pointers(
                HTTP,
                json!({"method": "post", "url": "http://localhost:8080", "headers": {"X-A": "1"},
                       "body": {"a": 1}, "expectStatus": 201})
            )
            .is_empty()
        );
        assert_eq!(pointers(HTTP, json!({})), vec!["/method", "/url"]);
        assert_eq!(
            pointers(
                HTTP,
                json!({"method": "FETCH", "url": "ftp://example.com", "headers": {"X-A": 1},
                       "expectStatus": 99})
            ),
            vec!["/method", "/url", "/headers/X-A", "/expectStatus"]
        );
        assert_eq!(
            pointers(HTTP, json!({"method": "GET", "url": "not a url"})),
            vec!["/url"]
        );
        assert_eq!(
            pointers(
                HTTP,
                json!({"method": "GET", "url": "https://x", "headers": []})
            ),
            vec!["/headers"]
        );
    }

    #[test]
    fn repository_ingest_problems() {
        assert!(pointers(REPOSITORY_INGEST, json!({"repoUrl": "/srv/repo"})).is_empty());
        assert!(
            pointers(
                REPOSITORY_INGEST,
                json!({"repoUrl": "https://h/r.git", "ref": "v1"})
            )
            .is_empty()
        );
        assert_eq!(pointers(REPOSITORY_INGEST, json!({})), vec!["/repoUrl"]);
        assert_eq!(
            pointers(REPOSITORY_INGEST, json!({"repoUrl": 1, "ref": 2})),
            vec!["/repoUrl", "/ref"]
        );
    }

    #[test]
    fn repository_build_problems() {
        assert!(
            pointers(
                REPOSITORY_BUILD,
                json!({"checkout": "/tmp/x", "command": ["make"]})
            )
            .is_empty()
        );
        assert!(
            pointers(
                REPOSITORY_BUILD,
                json!({"repoUrl": "/srv/r", "command": ["cargo", "build"], "env": {"A": "b"}})
            )
            .is_empty()
        );
        assert_eq!(pointers(REPOSITORY_BUILD, json!({})), vec!["", "/command"]);
        assert_eq!(
            pointers(REPOSITORY_BUILD, json!({"checkout": "/x", "command": []})),
            vec!["/command"]
        );
        assert_eq!(
            pointers(
                REPOSITORY_BUILD,
                json!({"checkout": "/x", "command": "make all"})
            ),
            vec!["/command"]
        );
        assert_eq!(
            pointers(
                REPOSITORY_BUILD,
                json!({"checkout": 1, "command": ["make", 2], "env": {"A/B": 1}})
            ),
            vec!["/checkout", "/command/1", "/env/A~1B"]
        );
    }

    #[test]
    fn checked_params_lists_problems() {
        let err = checked_params(SLEEP, &json!({})).err();
        assert!(matches!(err, Some(JobError::Fatal(m)) if m.contains("/durationMs")));
        assert!(checked_params(SLEEP, &json!({"durationMs": 1})).is_ok());
    }

    /// Resolves `K` (version 3) and nothing else.
    struct FixedSecrets;

    #[async_trait::async_trait]
    impl SecretResolver for FixedSecrets {
        async fn resolve(&self, r: SecretRequest<'_>) -> Result<ResolvedSecret, JobError> {
            match r.key {
                "K" => Ok(ResolvedSecret {
                    value: "v4lue".to_string(),
                    version: Some(3),
                }),
                _ => Err(JobError::Fatal("no such secret".to_string())),
            }
        }
    }

    #[tokio::test]
    async fn parameter_references_resolve_and_values_leave_the_log() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let params = json!({"a": {"secret": {"source": "store", "key": "K"}, "prefix": "Bearer "},
                            "b": [1, {"secret": {"source": "store", "key": "K", "version": 3}}]});
        let (mut ctx, mut rx) = test_ctx(params, dir.path());
        ctx.secrets = Arc::new(FixedSecrets);
        ctx.resolve_parameters().await.expect("resolves");
        assert_eq!(
            ctx.parameters,
            json!({"a": "Bearer v4lue", "b": [1, "v4lue"]})
        );
        ctx.log.info("echo v4lue here");
        let log: Vec<String> = drain_log(&mut rx).into_iter().map(|l| l.message).collect();
        assert_eq!(
            log,
            [
                "/a: resolved secret K from store (version 3)",
                "/b/1: resolved secret K from store (version 3)",
                "echo *** here"
            ]
        );

        let (mut ctx, _rx) = test_ctx(
            json!({"x": {"secret": {"source": "store", "key": "NOPE"}}}),
            dir.path(),
        );
        ctx.secrets = Arc::new(FixedSecrets);
        assert_eq!(
            ctx.resolve_parameters().await,
            Err(JobError::Fatal(
                "/x: secret NOPE: no such secret".to_string()
            ))
        );
        let (mut ctx, _rx) = test_ctx(
            json!({"x": {"secret": {"source": "vault", "key": "K"}}}),
            dir.path(),
        );
        assert!(matches!(
            ctx.resolve_parameters().await,
            Err(JobError::Fatal(m)) if m.contains("/x/secret/source")
        ));
    }

    #[test]
    fn header_maps_accept_secret_references() {
        assert!(
            pointers(
                HTTP,
                json!({"method": "GET", "url": "https://x",
                       "headers": {"X-A": {"secret": {"source": "store", "key": "K"}, "prefix": "t "}}})
            )
            .is_empty()
        );
        assert_eq!(
            pointers(
                HTTP,
                json!({"method": "GET", "url": "https://x",
                       "headers": {"X-A": {"secret": {"source": "store"}}}})
            ),
            vec!["/headers/X-A/secret/key"]
        );
    }

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("https://user:secret@example.com/r.git?token=x"),
            "https://example.com/r.git"
        );
        assert_eq!(redact_url("/srv/repos/a"), "/srv/repos/a");
        assert_eq!(redact_url("file:///srv/repos/a"), "file:///srv/repos/a");
    }
}
