//! Service registry entries (api.md "Services"): parsed once from JSON into a checked
//! [`ServiceSpec`], with every problem reported at once.
use crate::values::ServiceStatus;
use serde_json::{Map, Value};

use super::{
    Problems,
    jobs::{Slug, object_with_fields, required_name, required_slug},
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
    let kind = match obj.get("kind") {
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
    };
    let base_url = match obj.get("baseUrl") {
        Some(Value::String(s)) if s.len() > MAX_URL => {
            p.add("/baseUrl", format!("must be at most {MAX_URL} characters"));
            None
        }
        Some(Value::String(s)) => match url::Url::parse(s) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                p.add("/baseUrl", "must be an http or https URL");
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                p.add("/baseUrl", "must name a host");
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                p.add("/baseUrl", "must not have a query or a fragment");
                None
            }
            Ok(_) => Some(s.clone()),
            Err(e) => {
                p.add("/baseUrl", format!("must be an absolute http(s) URL: {e}"));
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
    };
    let health_path = match obj.get("healthPath") {
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
    };
    let headers = match obj.get("headers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let at = format!("/headers/{}", pointer_segment(name));
                if !is_header_name(name) {
                    p.add(at.clone(), "not a valid HTTP header name");
                }
                match value {
                    Value::String(v)
                        if v.len() <= MAX_HEADER_VALUE
                            && !v.chars().any(|c| c == '\r' || c == '\n' || c == '\0') => {}
                    Value::String(_) => {
                        p.add(at, "must be at most 8192 characters without line breaks")
                    }
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
            map.clone()
        }
        Some(_) => {
            p.add(
                "/headers",
                "must be an object of header name -> string or secret reference",
            );
            Map::new()
        }
    };
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            p.add("/metadata", "must be an object");
            Value::Object(Map::new())
        }
    };
    let status = match obj.get("status") {
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
    };
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
