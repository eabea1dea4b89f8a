//! Service registry entries (api.md "Services"): parsed once from JSON into a checked
//! [`ServiceSpec`], with every problem reported at once.
use crate::values::ServiceStatus;
use serde_json::{Map, Value};

use super::{
    Problems,
    jobs::{Slug, object_with_fields, optional_object, required_name, required_slug},
    problems::pointer_segment,
};

const MAX_KIND: usize = 100;
const MAX_URL: usize = 2_000;
const MAX_HEADER_VALUE: usize = 8_192;

/// A validated service entry as submitted (without id, timestamps and health-check results).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub slug: Slug,
    pub display_name: String,
    pub kind: String,
    pub base_url: String,
    pub health_path: Option<String>,
    /// Header name -> a string value or a secret reference (`{"secret": ..., "prefix"?}`).
    pub headers: Map<String, Value>,
    pub metadata: Value,
    pub status: ServiceStatus,
}

const SERVICE_FIELDS: &[&str] = &[
    "slug",
    "displayName",
    "kind",
    "baseUrl",
    "healthPath",
    "headers",
    "metadata",
    "status",
    // Read-only fields a client may echo back from a GET; ignored.
    "id",
    "lastCheckedAt",
    "lastError",
    "createdAt",
    "updatedAt",
];

/// `^[a-z0-9][a-z0-9_.-]{0,99}$`
fn is_kind(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.len() <= MAX_KIND
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

/// An HTTP header name: one or more RFC 9110 token characters.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses and validates a service document (a `POST` body, or the stored entry with a `PATCH`
/// merged over it).
pub fn parse_service_spec(body: &Value) -> Result<ServiceSpec, Problems> {
    let mut p = Problems::new();
    let Some(obj) = object_with_fields(body, SERVICE_FIELDS, &mut p) else {
        return Err(p);
    };
    let slug = required_slug(obj.get("slug"), "/slug", &mut p);
    let display_name = required_name(obj.get("displayName"), "/displayName", &mut p);
    let kind = parse_kind(obj.get("kind"), &mut p);
    let base_url = parse_base_url(obj.get("baseUrl"), &mut p);
    let health_path = parse_health_path(obj.get("healthPath"), &mut p);
    let headers = parse_headers(obj.get("headers"), &mut p);
    let metadata = optional_object(obj.get("metadata"), "/metadata", &mut p);
    let status = parse_status(obj.get("status"), &mut p);
    match (slug, display_name, kind, base_url) {
        (Some(slug), Some(display_name), Some(kind), Some(base_url)) if p.is_empty() => {
            Ok(ServiceSpec {
                slug,
                display_name,
                kind,
                base_url,
                health_path,
                headers,
                metadata,
                status,
            })
        }
        _ => Err(p),
    }
}

/// The required `kind`: a lower-case label (see [`is_kind`]).
fn parse_kind(v: Option<&Value>, p: &mut Problems) -> Option<String> {
    match v {
        Some(Value::String(s)) if is_kind(s) => Some(s.clone()),
        Some(_) => {
            p.add(
                "/kind",
                "must be a lower-case label matching ^[a-z0-9][a-z0-9_.-]{0,99}$ (e.g. \"http\")",
            );
            None
        }
        None => {
            p.add("/kind", "is required");
            None
        }
    }
}

/// The required `baseUrl`: an absolute http(s) URL with a host, without query or fragment.
fn parse_base_url(v: Option<&Value>, p: &mut Problems) -> Option<String> {
    match v {
        Some(Value::String(s)) if s.len() > MAX_URL => {
            p.add("/baseUrl", format!("must be at most {MAX_URL} characters"));
            None
        }
        Some(Value::String(s)) => match base_url_problem(s) {
            None => Some(s.clone()),
            Some(message) => {
                p.add("/baseUrl", message);
                None
            }
        },
        Some(_) => {
            p.add("/baseUrl", "must be a string");
            None
        }
        None => {
            p.add("/baseUrl", "is required");
            None
        }
    }
}

/// What is wrong with a base URL's text, if anything.
fn base_url_problem(s: &str) -> Option<String> {
    match url::Url::parse(s) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some("must be an http or https URL".into())
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("must name a host".into()),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            Some("must not have a query or a fragment".into())
        }
        Ok(_) => None,
        Err(e) => Some(format!("must be an absolute http(s) URL: {e}")),
    }
}

/// The optional `healthPath`: a path starting with `/`, without whitespace or control
/// characters.
fn parse_health_path(v: Option<&Value>, p: &mut Problems) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if s.starts_with('/')
                && s.len() <= MAX_URL
                && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Some(s.clone())
        }
        Some(Value::String(_)) => {
            p.add(
                "/healthPath",
                "must start with '/' and contain no spaces (at most 2000 characters)",
            );
            None
        }
        Some(_) => {
            p.add("/healthPath", "must be a string or null");
            None
        }
    }
}

/// The optional `headers`: header name -> a string or a secret reference, kept as given.
fn parse_headers(v: Option<&Value>, p: &mut Problems) -> Map<String, Value> {
    match v {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => {
            for (name, value) in map {
                check_header(name, value, p);
            }
            map.clone()
        }
        Some(_) => {
            p.add(
                "/headers",
                "must be an object of header name -> string or secret reference",
            );
            Map::new()
        }
    }
}

/// Records the problems of one entry of `headers`.
fn check_header(name: &str, value: &Value, p: &mut Problems) {
    let at = format!("/headers/{}", pointer_segment(name));
    if !is_header_name(name) {
        p.add(at.clone(), "not a valid HTTP header name");
    }
    match value {
        Value::String(v)
            if v.len() <= MAX_HEADER_VALUE
                && !v.chars().any(|c| c == '\r' || c == '\n' || c == '\0') => {}
        Value::String(_) => p.add(at, "must be at most 8192 characters without line breaks"),
        Value::Object(o) if o.contains_key("secret") => {
            // A reference to a stored secret or an environment variable, resolved
            // where the header is sent (api.md "Secrets").
            if let Err(found) = super::secrets::references(value) {
                for d in found.into_vec() {
                    p.add(format!("{at}{}", d.path), d.message);
                }
            }
        }
        _ => p.add(
            at,
            "must be a string or a secret reference {\"secret\": {\"source\", \"key\"}, \"prefix\"?}",
        ),
    }
}

/// The optional `status` (`unknown` when absent).
fn parse_status(v: Option<&Value>, p: &mut Problems) -> ServiceStatus {
    match v {
        None | Some(Value::Null) => ServiceStatus::Unknown,
        Some(Value::String(s)) if ServiceStatus::parse(s).is_some() => {
            ServiceStatus::parse(s).unwrap_or(ServiceStatus::Unknown)
        }
        Some(_) => {
            p.add(
                "/status",
                format!("must be one of {}", ServiceStatus::expected()),
            );
            ServiceStatus::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(body: Value) -> Vec<String> {
        parse_service_spec(&body)
            .unwrap_err()
            .iter()
            .map(|d| d.path.clone())
            .collect()
    }

    #[test]
    fn a_minimal_service_gets_defaults() {
        let spec = parse_service_spec(&json!({
            "slug": "Notifier", "displayName": "Notifier", "kind": "http",
            "baseUrl": "https://notifier.internal:8443/api"
        }))
        .unwrap();
        assert_eq!(spec.slug.as_str(), "notifier");
        assert_eq!(spec.health_path, None);
        assert_eq!(spec.status, ServiceStatus::Unknown);
        assert_eq!(spec.metadata, json!({}));
    }

    #[test]
    fn every_problem_is_reported() {
        let got = problems(json!({
            "slug": "-bad", "displayName": "", "kind": "Not A Kind",
            "baseUrl": "ftp://x", "healthPath": "health", "status": "sleepy",
            "headers": {"X-Ok": "1", "X-Num": 3, "bad header": "x"}, "extra": 1
        }));
        for want in [
            "/slug",
            "/displayName",
            "/kind",
            "/baseUrl",
            "/healthPath",
            "/status",
            "/headers/X-Num",
            "/headers/bad header",
            "/extra",
        ] {
            assert!(got.iter().any(|g| g == want), "missing {want} in {got:?}");
        }
        assert_eq!(got.len(), 9, "{got:?}");
    }

    #[test]
    fn base_url_must_be_absolute_http() {
        for bad in ["/relative", "notaurl", "mailto:a@b.c", "http://h/x?q=1"] {
            assert_eq!(
                problems(json!({"slug": "s", "displayName": "S", "kind": "http", "baseUrl": bad})),
                vec!["/baseUrl"],
                "{bad}"
            );
        }
    }
}
