//! Operator tokens, scopes and the table of what each write endpoint needs (api.md
//! "Conventions", issue 5). Pure code: the HTTP middleware (`http/auth.rs`) asks these functions
//! and records the answer in the audit log.
//!
//! Tokens are kept only as SHA-256 hashes; a presented token is hashed and compared with every
//! configured hash in constant time (`subtle`), so neither the match nor its position leaks
//! through timing.
use std::collections::{BTreeSet, HashSet};

use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Problems;

/// What an operator token may do. `admin` implies every other scope.
///
/// `jobs:exec` and `secrets:use` never stand alone in the route table: they are checked on top
/// of an endpoint's scope by the use cases, from the content of the request (a definition that
/// executes commands, a write that decides where credentials go, a caller's secret reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    JobsWrite,
    JobsRun,
    /// Definitions that execute commands, and their definition-only parameters.
    JobsExec,
    WorkflowsWrite,
    WorkflowsRun,
    ServicesWrite,
    SecretsWrite,
    /// Secret references in a caller's run parameters, and writes that route credentials.
    SecretsUse,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 9] = [
        Scope::JobsWrite,
        Scope::JobsRun,
        Scope::JobsExec,
        Scope::WorkflowsWrite,
        Scope::WorkflowsRun,
        Scope::ServicesWrite,
        Scope::SecretsWrite,
        Scope::SecretsUse,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsWrite => "jobs:write",
            Scope::JobsRun => "jobs:run",
            Scope::JobsExec => "jobs:exec",
            Scope::WorkflowsWrite => "workflows:write",
            Scope::WorkflowsRun => "workflows:run",
            Scope::ServicesWrite => "services:write",
            Scope::SecretsWrite => "secrets:write",
            Scope::SecretsUse => "secrets:use",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|sc| sc.as_str() == s)
    }
}

/// The hex SHA-256 of a token.
pub fn token_hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What the audit log keeps of a token: the first 12 hex characters of its SHA-256.
pub fn token_hash_prefix(token: &str) -> String {
    token_hash_hex(token)[..12].to_string()
}

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub scopes: BTreeSet<Scope>,
    /// `None` in open local mode (no token was presented).
    pub token_hash_prefix: Option<String>,
}

impl Principal {
    /// Open local mode: subject `local`, every scope.
    pub fn local() -> Principal {
        Principal {
            subject: "local".into(),
            scopes: BTreeSet::from([Scope::Admin]),
            token_hash_prefix: None,
        }
    }

    /// The server acting on its own behalf (seeds, triggers firing definitions their authors
    /// wrote): every scope, audited under `subject`.
    pub fn internal(subject: &str) -> Principal {
        Principal {
            subject: subject.into(),
            scopes: BTreeSet::from([Scope::Admin]),
            token_hash_prefix: None,
        }
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    pub fn scope_names(&self) -> Vec<String> {
        self.scopes.iter().map(|s| s.as_str().to_string()).collect()
    }
}

#[derive(Debug, Clone)]
struct TokenEntry {
    subject: String,
    hash: [u8; 32],
    scopes: BTreeSet<Scope>,
}

/// The configured operator tokens, as hashes. Empty means open local mode.
#[derive(Debug, Clone, Default)]
pub struct OperatorTokens {
    entries: Vec<TokenEntry>,
}

impl OperatorTokens {
    /// Parses `[{"subject", "token", "scopes": [...]}]`, listing every problem (unknown scope,
    /// empty token or subject, duplicate token, wrong shape) with its JSON pointer. The token
    /// text itself never appears in a problem.
    pub fn parse(json: &str) -> Result<OperatorTokens, Problems> {
        let mut p = Problems::new();
        let value: Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => {
                p.add(
                    "",
                    format!("not JSON (line {} column {})", e.line(), e.column()),
                );
                return Err(p);
            }
        };
        let Some(items) = value.as_array() else {
            p.add(
                "",
                "must be an array of {\"subject\", \"token\", \"scopes\"}",
            );
            return Err(p);
        };
        if items.is_empty() {
            p.add(
                "",
                "an empty list: configure at least one token, or unset the setting for open local mode (loopback only)",
            );
            return Err(p);
        }
        let mut entries = Vec::new();
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(entry) = token_entry(&format!("/{i}"), item, &mut seen, &mut p) {
                entries.push(entry);
            }
        }
        p.finish(OperatorTokens { entries })
    }

    /// No tokens: the `Default` value, open local mode (`parse` never returns an empty list).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The principal of a presented token, or `None` if it matches no configured token. Every
    /// configured hash is compared, in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found.map(|e| e.principal())
    }

    /// The principal of the configured token whose hex SHA-256 is `token_hash` (a sign-in
    /// session remembers its token this way), or `None` when no configured token has it (any
    /// more). Every configured hash is compared, in constant time.
    pub fn by_hash(&self, token_hash: &str) -> Option<Principal> {
        let mut presented = [0u8; 32];
        hex::decode_to_slice(token_hash, &mut presented).ok()?;
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found.map(|e| e.principal())
    }
}

/// One item of the token list, at `at` (`/0`, `/1`, ...): its entry when its token is usable,
/// with every problem recorded. `seen` holds the hashes of the tokens before it.
fn token_entry(
    at: &str,
    item: &Value,
    seen: &mut HashSet<[u8; 32]>,
    p: &mut Problems,
) -> Option<TokenEntry> {
    let Some(obj) = item.as_object() else {
        p.add(at, "must be an object {\"subject\", \"token\", \"scopes\"}");
        return None;
    };
    for key in obj.keys() {
        if !["subject", "token", "scopes"].contains(&key.as_str()) {
            p.add(format!("{at}/{key}"), "unknown field");
        }
    }
    let subject = token_subject(obj.get("subject"), at, p);
    let hash = token_hash(obj.get("token"), at, p);
    if let Some(h) = hash
        && !seen.insert(h)
    {
        p.add(
            format!("{at}/token"),
            "duplicate token (the same token is configured twice)",
        );
    }
    let scopes = token_scopes(obj.get("scopes"), at, p);
    hash.map(|hash| TokenEntry {
        subject,
        hash,
        scopes,
    })
}

/// A token's `subject`: a non-empty string, trimmed (empty, with a problem, when it is not).
fn token_subject(v: Option<&Value>, at: &str, p: &mut Problems) -> String {
    match v.and_then(Value::as_str).map(str::trim) {
        Some(s) if !s.is_empty() => {
            // Audited and stored with each session: it must be storable.
            super::problems::check_text(&format!("{at}/subject"), s, p);
            s.to_string()
        }
        _ => {
            p.add(format!("{at}/subject"), "required: a non-empty string");
            String::new()
        }
    }
}

/// The SHA-256 of a `token`, when it is a non-empty string (too short or padded with
/// whitespace is a problem, but still hashed).
fn token_hash(v: Option<&Value>, at: &str, p: &mut Problems) -> Option<[u8; 32]> {
    let at = format!("{at}/token");
    match v.and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => {
            if t.trim() != t {
                p.add(at.clone(), "must not start or end with whitespace");
            }
            if t.chars().count() < MIN_TOKEN_CHARS {
                p.add(
                    at,
                    format!(
                        "too short: a token needs at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -base64 32`)"
                    ),
                );
            }
            Some(Sha256::digest(t.as_bytes()).into())
        }
        Some(_) => {
            p.add(at, "must not be empty");
            None
        }
        None => {
            p.add(at, "required: a non-empty string");
            None
        }
    }
}

/// A token's `scopes`: a non-empty array of scope names; unknown names are problems.
fn token_scopes(v: Option<&Value>, at: &str, p: &mut Problems) -> BTreeSet<Scope> {
    let mut scopes = BTreeSet::new();
    match v.and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            for (j, s) in list.iter().enumerate() {
                match s.as_str().and_then(Scope::parse) {
                    Some(sc) => {
                        scopes.insert(sc);
                    }
                    None => p.add(
                        format!("{at}/scopes/{j}"),
                        format!("unknown scope {s}; expected one of {}", expected_scopes()),
                    ),
                }
            }
        }
        _ => p.add(
            format!("{at}/scopes"),
            format!("required: a non-empty array of {}", expected_scopes()),
        ),
    }
    scopes
}

impl TokenEntry {
    fn principal(&self) -> Principal {
        Principal {
            subject: self.subject.clone(),
            scopes: self.scopes.clone(),
            token_hash_prefix: Some(hex::encode(self.hash)[..12].to_string()),
        }
    }
}

/// Operator tokens shorter than this are refused at start: a short token can be guessed.
pub const MIN_TOKEN_CHARS: usize = 32;

/// A sign-in session's id as stored: the hex SHA-256 of the secret its cookie holds (a copy of
/// the sessions table gives no usable cookie).
pub fn session_id(secret: &str) -> String {
    token_hash_hex(secret)
}

fn expected_scopes() -> String {
    Scope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One protected endpoint: `method` and a path `pattern` (`{name}` matches one segment), the
/// scope it needs and the audit action it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub method: &'static str,
    pub pattern: &'static str,
    pub scope: Scope,
    pub action: &'static str,
    /// The audit resource's collection (`jobs`, `job-runs`, ...); its name comes from the
    /// pattern's parameter, or else from the request form / response field `name_field`.
    pub collection: &'static str,
    pub name_field: Option<&'static str>,
    /// Accepted calls are audited (writes, runs, cancels, retries); reads are not, only their
    /// rejections.
    pub audit_accepted: bool,
}

const fn rule(
    method: &'static str,
    pattern: &'static str,
    scope: Scope,
    action: &'static str,
    collection: &'static str,
    name_field: Option<&'static str>,
) -> Rule {
    Rule {
        method,
        pattern,
        scope,
        action,
        collection,
        name_field,
        audit_accepted: true,
    }
}

const fn read_rule(
    pattern: &'static str,
    scope: Scope,
    action: &'static str,
    collection: &'static str,
) -> Rule {
    Rule {
        method: "GET",
        pattern,
        scope,
        action,
        collection,
        name_field: None,
        audit_accepted: false,
    }
}

use Scope::*;

/// Every write endpoint of api.md, the scope-protected reads, and the pages' server functions
/// that write (or read the audit log). A request matching none of them is a read.
pub const RULES: &[Rule] = &[
    // Job definitions and runs.
    rule(
        "POST",
        "/api/jobs",
        JobsWrite,
        "job.create",
        "jobs",
        Some("slug"),
    ),
    rule(
        "PATCH",
        "/api/jobs/{slug}",
        JobsWrite,
        "job.update",
        "jobs",
        None,
    ),
    rule(
        "DELETE",
        "/api/jobs/{slug}",
        JobsWrite,
        "job.delete",
        "jobs",
        None,
    ),
    rule(
        "POST",
        "/api/jobs/{slug}/run",
        JobsRun,
        "job.run",
        "jobs",
        None,
    ),
    rule(
        "PATCH",
        "/api/job-runs/{id}",
        JobsRun,
        "job_run.cancel",
        "job-runs",
        None,
    ),
    rule(
        "POST",
        "/api/job-runs/{id}/retry",
        JobsRun,
        "job_run.retry",
        "job-runs",
        None,
    ),
    // Workflow definitions and runs.
    rule(
        "POST",
        "/api/workflows",
        WorkflowsWrite,
        "workflow.create",
        "workflows",
        Some("slug"),
    ),
    rule(
        "PATCH",
        "/api/workflows/{slug}",
        WorkflowsWrite,
        "workflow.update",
        "workflows",
        None,
    ),
    rule(
        "DELETE",
        "/api/workflows/{slug}",
        WorkflowsWrite,
        "workflow.delete",
        "workflows",
        None,
    ),
    rule(
        "POST",
        "/api/workflows/{slug}/run",
        WorkflowsRun,
        "workflow.run",
        "workflows",
        None,
    ),
    rule(
        "PATCH",
        "/api/workflow-runs/{id}",
        WorkflowsRun,
        "workflow_run.cancel",
        "workflow-runs",
        None,
    ),
    rule(
        "POST",
        "/api/workflow-runs/{id}/retry",
        WorkflowsRun,
        "workflow_run.retry",
        "workflow-runs",
        None,
    ),
    rule(
        "POST",
        "/api/workflow-runs/{id}/rerun",
        WorkflowsRun,
        "workflow_run.rerun",
        "workflow-runs",
        None,
    ),
    // Services.
    rule(
        "POST",
        "/api/services",
        ServicesWrite,
        "service.create",
        "services",
        Some("slug"),
    ),
    rule(
        "PATCH",
        "/api/services/{slug}",
        ServicesWrite,
        "service.update",
        "services",
        None,
    ),
    rule(
        "DELETE",
        "/api/services/{slug}",
        ServicesWrite,
        "service.delete",
        "services",
        None,
    ),
    // Secrets: key names are sensitive too, so listing them needs the write scope.
    rule(
        "PUT",
        "/api/secrets/{key}",
        SecretsWrite,
        "secret.write",
        "secrets",
        None,
    ),
    rule(
        "POST",
        "/api/secrets",
        SecretsWrite,
        "secret.write",
        "secrets",
        Some("key"),
    ),
    rule(
        "DELETE",
        "/api/secrets/{key}",
        SecretsWrite,
        "secret.delete",
        "secrets",
        None,
    ),
    read_rule("/api/secrets", SecretsWrite, "secret.list", "secrets"),
    read_rule("/api/secrets/{key}", SecretsWrite, "secret.read", "secrets"),
    // Operations.
    read_rule("/api/audit-logs", Admin, "audit.list", "audit-logs"),
    // The pages' server functions (form-encoded bodies name the resource).
    rule(
        "POST",
        "/_sf/launch",
        JobsRun,
        "job.run",
        "jobs",
        Some("slug"),
    ),
    rule(
        "POST",
        "/_sf/cancel-run",
        JobsRun,
        "job_run.cancel",
        "job-runs",
        Some("id"),
    ),
    rule(
        "POST",
        "/_sf/retry-run",
        JobsRun,
        "job_run.retry",
        "job-runs",
        Some("id"),
    ),
    rule(
        "POST",
        "/_sf/launch-workflow",
        WorkflowsRun,
        "workflow.run",
        "workflows",
        Some("slug"),
    ),
    rule(
        "POST",
        "/_sf/cancel-workflow-run",
        WorkflowsRun,
        "workflow_run.cancel",
        "workflow-runs",
        Some("id"),
    ),
    rule(
        "POST",
        "/_sf/retry-workflow-run",
        WorkflowsRun,
        "workflow_run.retry",
        "workflow-runs",
        Some("id"),
    ),
    rule(
        "POST",
        "/_sf/rerun-workflow-run",
        WorkflowsRun,
        "workflow_run.rerun",
        "workflow-runs",
        Some("id"),
    ),
    Rule {
        audit_accepted: false,
        ..rule(
            "POST",
            "/_sf/audit-logs",
            Admin,
            "audit.list",
            "audit-logs",
            None,
        )
    },
];

/// A rule that matched a request, with the pattern parameter's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub rule: Rule,
    pub param: Option<String>,
}

/// The rule for a request, if it needs a scope. `HEAD` is treated as `GET`; a trailing slash
/// is ignored.
pub fn rule_for(method: &str, path: &str) -> Option<Matched> {
    let method = if method.eq_ignore_ascii_case("HEAD") {
        "GET"
    } else {
        method
    };
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    RULES.iter().find_map(|rule| {
        if !rule.method.eq_ignore_ascii_case(method) {
            return None;
        }
        let pattern: Vec<&str> = rule.pattern.split('/').collect();
        if pattern.len() != segments.len() {
            return None;
        }
        let mut param = None;
        for (p, s) in pattern.iter().zip(&segments) {
            if p.starts_with('{') {
                if s.is_empty() {
                    return None;
                }
                param = Some(percent_decode(s));
            } else if p != s {
                return None;
            }
        }
        Some(Matched { rule: *rule, param })
    })
}

/// Percent-decodes a path segment (`%XX` escapes; invalid ones stay as written; bytes that
/// are not UTF-8 become U+FFFD).
pub fn percent_decode(s: &str) -> String {
    url_decode(s.as_bytes())
}

fn url_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Paths that stay open whatever the settings: liveness, readiness, the sign-in page and its
/// endpoints, and the site's static files (the wasm bundle, styles, icons).
pub fn always_open(path: &str) -> bool {
    // `whoami` tells a page who is looking (nobody, when signed out): the sign-in page and the
    // header need it before anyone signed in.
    matches!(
        path,
        "/api/health" | "/api/ready" | "/sign-in" | "/_sf/whoami"
    ) || path.starts_with("/auth/")
        || path.starts_with("/pkg/")
        || path
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains('.') && !path.starts_with("/api/"))
}

/// Whether an `Origin` (or the origin part of a `Referer`) names the host the request was sent
/// to. `host` is the request's `Host` header.
pub fn same_origin(origin_or_referer: &str, host: &str) -> bool {
    let rest = origin_or_referer
        .strip_prefix("http://")
        .or_else(|| origin_or_referer.strip_prefix("https://"));
    match rest {
        Some(rest) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            !authority.is_empty() && authority.eq_ignore_ascii_case(host)
        }
        None => false,
    }
}

/// Where to send the browser after signing in: `next` when it is a path on this site, else
/// `/`. A path starts with `/`, not with `//` or `/\` (both name another host), and has no
/// backslash, control character or whitespace anywhere: browsers drop tabs and newlines from
/// URLs and read `\` as `/`, so `/\t/evil.test` would become `//evil.test`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CONFIG: &str = r#"[
        {"subject": "alice", "token": "alice-secret-token-0123456789abcdef", "scopes": ["admin"]},
        {"subject": "bob", "token": "bob-token-0123456789abcdef0123456789", "scopes": ["jobs:run", "workflows:run"]}
    ]"#;
    const ALICE: &str = "alice-secret-token-0123456789abcdef";
    const BOB: &str = "bob-token-0123456789abcdef0123456789";

    #[test]
    fn parses_tokens_and_authenticates_by_hash() {
        let tokens = OperatorTokens::parse(CONFIG).unwrap();
        assert_eq!(tokens.len(), 2);
        let bob = tokens.authenticate(BOB).unwrap();
        assert_eq!(bob.subject, "bob");
        assert!(bob.allows(Scope::JobsRun));
        assert!(!bob.allows(Scope::JobsWrite));
        assert_eq!(
            bob.token_hash_prefix.as_deref(),
            Some(&token_hash_hex(BOB)[..12])
        );
        let alice = tokens.authenticate(ALICE).unwrap();
        assert!(
            Scope::ALL.iter().all(|s| alice.allows(*s)),
            "admin implies all"
        );
        assert!(tokens.authenticate(&format!("{BOB} ")).is_none());
        assert!(tokens.authenticate("").is_none());
        // Only hashes are kept.
        assert!(!format!("{tokens:?}").contains(BOB));
        // A session finds its token by the token's hash.
        assert_eq!(tokens.by_hash(&token_hash_hex(BOB)), Some(bob));
        assert_eq!(tokens.by_hash(&token_hash_hex(ALICE)), Some(alice));
        assert_eq!(tokens.by_hash(&token_hash_hex("removed-token")), None);
        assert_eq!(tokens.by_hash("not hex"), None);
        assert_eq!(tokens.by_hash(""), None);
        assert_eq!(session_id("s"), token_hash_hex("s"));
    }

    #[test]
    fn short_tokens_and_empty_lists_are_refused() {
        let short = "x".repeat(MIN_TOKEN_CHARS - 1);
        let config = json!([
            {"subject": "a", "token": short, "scopes": ["admin"]},
            {"subject": "b", "token": "y".repeat(MIN_TOKEN_CHARS), "scopes": ["admin"]},
            {"subject": "c", "token": "ü".repeat(MIN_TOKEN_CHARS), "scopes": ["admin"]},
        ]);
        let v = OperatorTokens::parse(&config.to_string())
            .unwrap_err()
            .into_vec();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].path, "/0/token");
        assert!(v[0].message.contains("at least 32 characters"), "{v:?}");
        assert!(!v[0].message.contains(&short), "the token is not echoed");
        for empty in ["[]", " [ ] "] {
            let v = OperatorTokens::parse(empty).unwrap_err().into_vec();
            assert_eq!(v[0].path, "");
            assert!(v[0].message.contains("empty list"), "{v:?}");
        }
        assert!(OperatorTokens::default().is_empty(), "open local mode");
    }

    #[test]
    fn bad_config_lists_every_problem_without_the_token() {
        let err = OperatorTokens::parse(
            r#"[{"subject": "a", "token": "dup-token-0123456789abcdef0123456789", "scopes": ["jobs:run", "root"]},
                {"subject": "", "token": "dup-token-0123456789abcdef0123456789", "scopes": []},
                {"subject": "c", "token": "", "scopes": ["admin"], "extra": 1},
                "nope"]"#,
        )
        .unwrap_err();
        let v = err.into_vec();
        let at = |p: &str| v.iter().find(|d| d.path == p).map(|d| d.message.clone());
        assert!(
            at("/0/scopes/1")
                .unwrap()
                .contains("unknown scope \"root\"")
        );
        assert!(at("/1/subject").is_some());
        assert!(at("/1/token").unwrap().contains("duplicate"));
        assert!(at("/1/scopes").is_some());
        assert!(at("/2/token").unwrap().contains("empty"));
        assert!(at("/2/extra").is_some());
        assert!(at("/3").is_some());
        assert!(v.iter().all(|d| !d.message.contains("dup-token")));
        assert!(OperatorTokens::parse("{").is_err());
        assert!(OperatorTokens::parse("{}").is_err());
    }

    #[test]
    fn the_table_covers_every_write_endpoint() {
        let cases = [
            ("POST", "/api/jobs", JobsWrite, None),
            ("PATCH", "/api/jobs/build-app", JobsWrite, Some("build-app")),
            (
                "DELETE",
                "/api/jobs/build-app",
                JobsWrite,
                Some("build-app"),
            ),
            (
                "POST",
                "/api/jobs/build-app/run",
                JobsRun,
                Some("build-app"),
            ),
            ("PATCH", "/api/job-runs/r1", JobsRun, Some("r1")),
            ("POST", "/api/job-runs/r1/retry", JobsRun, Some("r1")),
            ("POST", "/api/workflows", WorkflowsWrite, None),
            ("PATCH", "/api/workflows/w", WorkflowsWrite, Some("w")),
            ("DELETE", "/api/workflows/w", WorkflowsWrite, Some("w")),
            ("POST", "/api/workflows/w/run", WorkflowsRun, Some("w")),
            ("PATCH", "/api/workflow-runs/x", WorkflowsRun, Some("x")),
            (
                "POST",
                "/api/workflow-runs/x/retry",
                WorkflowsRun,
                Some("x"),
            ),
            (
                "POST",
                "/api/workflow-runs/x/rerun",
                WorkflowsRun,
                Some("x"),
            ),
            ("POST", "/api/services", ServicesWrite, None),
            ("PATCH", "/api/services/s", ServicesWrite, Some("s")),
            (
                "PUT",
                "/api/secrets/NOTIFIER_TOKEN",
                SecretsWrite,
                Some("NOTIFIER_TOKEN"),
            ),
            ("DELETE", "/api/secrets/K", SecretsWrite, Some("K")),
            ("GET", "/api/secrets", SecretsWrite, None),
            ("HEAD", "/api/secrets/", SecretsWrite, None),
            ("GET", "/api/audit-logs", Admin, None),
            ("POST", "/_sf/launch", JobsRun, None),
            ("POST", "/_sf/rerun-workflow-run", WorkflowsRun, None),
        ];
        for (method, path, scope, param) in cases {
            let m = rule_for(method, path).unwrap_or_else(|| panic!("{method} {path}"));
            assert_eq!(m.rule.scope, scope, "{method} {path}");
            assert_eq!(m.param.as_deref(), param, "{method} {path}");
        }
        for (method, path) in [
            ("GET", "/api/jobs"),
            ("GET", "/api/jobs/build-app"),
            ("GET", "/api/events"),
            ("GET", "/api/job-runs/r1/logs"),
            ("POST", "/_sf/runs"),
            ("POST", "/api/jobs/a/b/run"),
        ] {
            assert!(rule_for(method, path).is_none(), "{method} {path}");
        }
        assert_eq!(
            rule_for("PUT", "/api/secrets/A%20B")
                .unwrap()
                .param
                .as_deref(),
            Some("A B")
        );
    }

    #[test]
    fn open_paths_origins_and_redirects() {
        assert!(always_open("/api/health"));
        assert!(always_open("/pkg/switchyard.wasm"));
        assert!(always_open("/favicon.ico"));
        assert!(!always_open("/api/jobs"));
        assert!(!always_open("/api/jobs/a.b"));
        assert!(!always_open("/runs"));
        assert!(same_origin("http://127.0.0.1:3000", "127.0.0.1:3000"));
        assert!(same_origin("https://x.test/runs?a", "x.test"));
        assert!(!same_origin("http://evil.test", "127.0.0.1:3000"));
        assert!(!same_origin(
            "http://127.0.0.1:3000.evil.test",
            "127.0.0.1:3000"
        ));
        assert!(!same_origin("null", "127.0.0.1:3000"));
    }

    #[test]
    fn next_is_a_same_origin_path_only() {
        for ok in [
            "/",
            "/runs?x=1",
            "/runs/jobs/a%2Fb",
            "/jobs/ü#top",
            "/a/%09/b",
        ] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.test",
            "/\\evil.test",
            "\\\\evil",
            "/a\\b",
            "https://evil",
            "evil.test",
            "/\t/evil.test",
            "/\n/evil",
            "/\r/evil",
            "\t//evil.test",
            " /runs",
            "/runs ",
            "/a b",
            "/\u{0}x",
            "/\u{7f}x",
            "/\u{85}x",
            "/\u{a0}x",
            "/\u{2028}x",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
