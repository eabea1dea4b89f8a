//! The secret store's rules as plain code: key names, the `PUT /api/secrets/:key` body, finding
//! `{"secret": {...}, "prefix"?}` references inside run parameters, and the [`Redactor`] that
//! removes resolved values from everything a run writes.
use std::sync::RwLock;

use serde_json::{Map, Value};

use super::{
    Problems,
    problems::pointer_segment,
    workflow::{SecretHeader, SecretRef, SecretSource},
};

/// Longest key name (the `secrets.key` column holds 255 characters).
pub const MAX_KEY_LEN: usize = 255;
/// Largest value in bytes: secrets are tokens, passwords and keys, not files.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// What replaces a resolved secret value in logs, results and errors.
pub const REDACTED: &str = "***";

/// Checks a key name: `^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$`.
pub fn check_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && key.len() <= MAX_KEY_LEN;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_KEY_LEN} characters: letters, digits, '_', '.' or '-', starting with a letter or digit"
        ))
    }
}

/// A validated `PUT /api/secrets/:key` body.
#[derive(Debug, Clone, PartialEq)]
pub struct PutSecret {
    pub value: String,
    /// `None`: the current version + 1 (1 for a new key).
    pub version: Option<i32>,
}

/// Parses a PUT body; problems are located by JSON pointer (`/value`, `/version`, and the
/// path's key as `/key`).
pub fn parse_put(key: &str, body: &Value) -> Result<PutSecret, Problems> {
    let mut p = Problems::new();
    if let Err(why) = check_key(key) {
        p.add("/key", why);
    }
    let Some(obj) = body.as_object() else {
        p.add("", "the body must be an object {\"value\", \"version\"?}");
        return Err(p);
    };
    for name in obj.keys() {
        if !["value", "version"].contains(&name.as_str()) {
            p.add(format!("/{}", pointer_segment(name)), "unknown field");
        }
    }
    let value = match obj.get("value") {
        None | Some(Value::Null) => {
            p.add("/value", "is required");
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            p.add("/value", "must not be empty");
            None
        }
        Some(Value::String(s)) if s.len() > MAX_VALUE_BYTES => {
            p.add(
                "/value",
                format!("must be at most {MAX_VALUE_BYTES} bytes (got {})", s.len()),
            );
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            p.add("/value", "must be a string");
            None
        }
    };
    let version = match obj.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=i64::from(i32::MAX)).contains(&n) => Some(n as i32),
            _ => {
                p.add("/version", "must be a positive integer");
                None
            }
        },
    };
    match value {
        Some(value) if p.is_empty() => Ok(PutSecret { value, version }),
        _ => Err(p),
    }
}

/// Whether `v` is meant as a secret reference: an object with a `secret` object in it.
/// (`{"secret": "text"}` is plain data.)
fn is_reference(v: &Value) -> bool {
    v.as_object()
        .and_then(|o| o.get("secret"))
        .is_some_and(Value::is_object)
}

/// Parses one reference object located at `at`.
fn parse_reference(obj: &Map<String, Value>, at: &str, p: &mut Problems) -> Option<SecretHeader> {
    for name in obj.keys() {
        if !["secret", "prefix"].contains(&name.as_str()) {
            p.add(format!("{at}/{}", pointer_segment(name)), "unknown field");
        }
    }
    let prefix = match obj.get("prefix") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            p.add(format!("{at}/prefix"), "must be a string");
            None
        }
    };
    let secret = obj.get("secret")?.as_object()?;
    let at = format!("{at}/secret");
    for name in secret.keys() {
        if !["source", "key", "version"].contains(&name.as_str()) {
            p.add(format!("{at}/{}", pointer_segment(name)), "unknown field");
        }
    }
    let source = match secret.get("source").and_then(Value::as_str) {
        Some("env") => Some(SecretSource::Env),
        Some("store") => Some(SecretSource::Store),
        _ => {
            p.add(format!("{at}/source"), "must be one of env, store");
            None
        }
    };
    let key = match secret.get("key").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN => Some(k.to_string()),
        _ => {
            p.add(
                format!("{at}/key"),
                format!("must be a string of 1 to {MAX_KEY_LEN} characters"),
            );
            None
        }
    };
    let version = match secret.get("version") {
        None | Some(Value::Null) => None,
        Some(_) if source == Some(SecretSource::Env) => {
            p.add(format!("{at}/version"), "only store secrets have versions");
            None
        }
        Some(v) => match v.as_i64() {
            Some(n) if (1..=i64::from(i32::MAX)).contains(&n) => Some(n as i32),
            _ => {
                p.add(format!("{at}/version"), "must be a positive integer");
                None
            }
        },
    };
    Some(SecretHeader {
        secret: SecretRef {
            source: source?,
            key: key?,
            version,
        },
        prefix,
    })
}

/// Every secret reference inside `value`, with its JSON pointer (relative to `value`), in
/// document order; or every malformed one.
pub fn references(value: &Value) -> Result<Vec<(String, SecretHeader)>, Problems> {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, SecretHeader)>, p: &mut Problems) {
        match v {
            Value::Object(obj) if is_reference(v) => {
                if let Some(r) = parse_reference(obj, at, p) {
                    out.push((at.to_string(), r));
                }
            }
            Value::Object(obj) => {
                for (k, child) in obj {
                    walk(child, &format!("{at}/{}", pointer_segment(k)), out, p);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"), out, p);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut p = Problems::new();
    walk(value, "", &mut out, &mut p);
    p.finish(out)
}

/// `value` with each well-formed reference replaced by a placeholder string, for checks that
/// run before execution (JSON schema, entry point checks): a reference stands for a string.
/// Malformed references are problems located below `at` (e.g. `/parameters`).
pub fn with_placeholders(value: &Value, at: &str) -> (Value, Problems) {
    let mut copy = value.clone();
    match references(value) {
        Ok(found) => {
            for (pointer, _) in found {
                if let Some(slot) = copy.pointer_mut(&pointer) {
                    *slot = Value::String(REDACTED.to_string());
                }
            }
            (copy, Problems::new())
        }
        Err(p) => {
            let mut located = Problems::new();
            for d in p.into_vec() {
                located.add(format!("{at}{}", d.path), d.message);
            }
            (copy, located)
        }
    }
}

/// The environment variables `{"secret": {"source": "env", "key"}}` references may read, from
/// `--secret-env-allow`: exact names or `PREFIX*`. The server's own settings never resolve,
/// listed or not (`SWITCHYARD_*`, `DATABASE_URL`), and an entry that could match them is
/// refused at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvAllowList {
    names: Vec<String>,
    prefixes: Vec<String>,
}

/// Names no reference may read, whatever the allow-list says.
fn is_server_setting(name: &str) -> bool {
    name.starts_with("SWITCHYARD_") || name == "DATABASE_URL"
}

impl EnvAllowList {
    /// Parses `A,B,APP_*`; an empty text allows nothing.
    pub fn parse(text: &str) -> Result<EnvAllowList, String> {
        let mut list = EnvAllowList::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (stem, prefix) = match entry.strip_suffix('*') {
                Some(stem) => (stem, true),
                None => (entry, false),
            };
            let valid = stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && (prefix || !stem.is_empty());
            if !valid {
                return Err(format!(
                    "{entry:?} is not an environment variable name or NAME_PREFIX*"
                ));
            }
            let reaches_settings = if prefix {
                "SWITCHYARD_".starts_with(stem)
                    || stem.starts_with("SWITCHYARD_")
                    || "DATABASE_URL".starts_with(stem)
            } else {
                is_server_setting(stem)
            };
            if reaches_settings {
                return Err(format!(
                    "{entry:?} would expose the server's own settings (SWITCHYARD_*, DATABASE_URL), which secret references never read"
                ));
            }
            if prefix {
                list.prefixes.push(stem.to_string());
            } else {
                list.names.push(stem.to_string());
            }
        }
        Ok(list)
    }

    pub fn allows(&self, name: &str) -> bool {
        !is_server_setting(name)
            && (self.names.iter().any(|n| n == name)
                || self.prefixes.iter().any(|p| name.starts_with(p.as_str())))
    }
}

/// The values resolved for one attempt; replaces them by [`REDACTED`] wherever they appear.
/// Shared (behind an `Arc`) by the attempt's log sink and the engine.
#[derive(Default)]
pub struct Redactor {
    /// Longest first, so a value containing another one is replaced whole.
    values: RwLock<Vec<String>>,
}

impl Redactor {
    /// Remembers a resolved value, its JSON-escaped form (as it appears in serialized JSON)
    /// and its usual encodings (see [`encodings`]), so a handler that prints a secret
    /// base64-, URL- or hex-encoded leaks it no more than one that prints it plainly.
    pub fn add(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_default()
            .to_string();
        let mut forms = vec![value.to_string(), escaped];
        forms.extend(encodings(value));
        if let Ok(mut values) = self.values.write() {
            for v in forms {
                if !v.is_empty() && !values.contains(&v) {
                    values.push(v);
                }
            }
            values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn len(&self) -> usize {
        self.values.read().map(|v| v.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `text` with every known value replaced.
    pub fn redact(&self, text: &str) -> String {
        let Ok(values) = self.values.read() else {
            return text.to_string();
        };
        let mut out = text.to_string();
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }

    /// Redacts every string (and object key) inside `value`.
    pub fn redact_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                let r = self.redact(s);
                if r != *s {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(obj) => {
                let taken = std::mem::take(obj);
                for (k, mut v) in taken {
                    self.redact_value(&mut v);
                    obj.insert(self.redact(&k), v);
                }
            }
            _ => {}
        }
    }
}

/// The shortest base64 run (inside a longer encoded text) that is still redacted.
const MIN_BASE64_CORE: usize = 8;

/// The encodings of `value` a program is likely to print: base64 (standard and URL-safe, with
/// and without padding), and the part of its base64 that stays the same wherever it sits in a
/// longer encoded text (each of the three byte alignments, e.g. inside a Basic auth header);
/// URL encoding (`+` or `%20` for spaces); hex (lower and upper case).
pub fn encodings(value: &str) -> Vec<String> {
    use base64::{Engine as _, engine::general_purpose as b64};
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    for engine in [&b64::STANDARD, &b64::URL_SAFE] {
        let full = engine.encode(bytes);
        out.push(full.trim_end_matches('=').to_string());
        out.push(full);
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(bytes);
            let encoded = engine.encode(&shifted);
            // Characters of whole 3-byte groups that hold only the value's bytes.
            let whole = shifted.len() / 3 * 4;
            let start = if offset == 0 { 0 } else { 4 };
            if whole > start && whole - start >= MIN_BASE64_CORE {
                out.push(encoded[start..whole].to_string());
            }
        }
    }
    let form: String = url::form_urlencoded::byte_serialize(bytes).collect();
    out.push(form.replace('+', "%20"));
    out.push(form);
    out.push(hex::encode(bytes));
    out.push(hex::encode_upper(bytes));
    out.retain(|e| e != value && !e.is_empty());
    out.sort();
    out.dedup();
    out
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the values.
        f.debug_struct("Redactor")
            .field("values", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(p: Problems) -> Vec<String> {
        p.into_vec().into_iter().map(|d| d.path).collect()
    }

    #[test]
    fn key_names() {
        for ok in [
            "A",
            "NOTIFIER_TOKEN",
            "db.password-2",
            "0abc",
            &"k".repeat(255),
        ] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "_x",
            "-x",
            ".x",
            "a/b",
            "a b",
            "ä",
            "a:b",
            &"k".repeat(256),
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn put_bodies() {
        assert_eq!(
            parse_put("K", &json!({"value": "v"})),
            Ok(PutSecret {
                value: "v".into(),
                version: None
            })
        );
        assert_eq!(
            parse_put("K", &json!({"value": "v", "version": 7})),
            Ok(PutSecret {
                value: "v".into(),
                version: Some(7)
            })
        );
        let p = parse_put("bad key", &json!({"value": "", "version": 0, "x": 1})).unwrap_err();
        assert_eq!(paths(p), ["/key", "/x", "/value", "/version"]);
        let p = parse_put("K", &json!({"value": 3, "version": "2"})).unwrap_err();
        assert_eq!(paths(p), ["/value", "/version"]);
        let p = parse_put("K", &json!({})).unwrap_err();
        assert_eq!(paths(p), ["/value"]);
        let p = parse_put("K", &json!({"value": "x".repeat(MAX_VALUE_BYTES + 1)})).unwrap_err();
        assert_eq!(paths(p), ["/value"]);
        assert_eq!(paths(parse_put("K", &json!([1])).unwrap_err()), [""]);
    }

    #[test]
    fn finds_references_everywhere() {
        let params = json!({
            "headers": {"Authorization": {"secret": {"source": "store", "key": "T"}, "prefix": "Bearer "}},
            "list": [1, {"secret": {"source": "env", "key": "E"}}],
            "plain": {"secret": "not a reference"},
        });
        let found = references(&params).unwrap();
        let at: Vec<&str> = found.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(at, ["/headers/Authorization", "/list/1"]);
        assert_eq!(found[0].1.secret.source, SecretSource::Store);
        assert_eq!(found[0].1.prefix.as_deref(), Some("Bearer "));
        assert_eq!(found[1].1.secret.key, "E");
        // The parameters themselves may be one reference.
        let root =
            references(&json!({"secret": {"source": "store", "key": "T", "version": 2}})).unwrap();
        assert_eq!(root[0].0, "");
        assert_eq!(root[0].1.secret.version, Some(2));
    }

    #[test]
    fn malformed_references_are_listed() {
        let p = references(&json!({
            "a": {"secret": {"source": "vault", "key": "", "extra": 1}, "prefix": 3, "more": 1},
            "b": [{"secret": {"source": "env", "key": "E", "version": 2}}],
            "c": {"secret": {"source": "store", "key": "K", "version": 0}},
        }))
        .unwrap_err();
        assert_eq!(
            paths(p),
            [
                "/a/more",
                "/a/prefix",
                "/a/secret/extra",
                "/a/secret/source",
                "/a/secret/key",
                "/b/0/secret/version",
                "/c/secret/version"
            ]
        );
    }

    #[test]
    fn placeholders_stand_for_references() {
        let (v, p) = with_placeholders(
            &json!({"h": {"X": {"secret": {"source": "env", "key": "E"}}}}),
            "/parameters",
        );
        assert!(p.is_empty());
        assert_eq!(v, json!({"h": {"X": REDACTED}}));
        let (_, p) = with_placeholders(&json!({"x": {"secret": {"key": "E"}}}), "/parameters");
        assert_eq!(paths(p), ["/parameters/x/secret/source"]);
    }

    #[test]
    fn redacts_values_in_text_and_json() {
        let r = Redactor::default();
        assert_eq!(r.redact("nothing known"), "nothing known");
        r.add("s3cret");
        r.add("s3cret-longer");
        r.add("");
        r.add("quo\"te");
        assert_eq!(r.redact("a s3cret-longer and s3cret"), "a *** and ***");
        let mut v = json!({"body": "token=s3cret", "s3cret": [1, "x quo\"te"], "n": 3});
        r.redact_value(&mut v);
        assert_eq!(v, json!({"body": "token=***", "***": [1, "x ***"], "n": 3}));
        // The escaped form, as in a serialized JSON document.
        let text = json!({"v": "quo\"te"}).to_string();
        assert!(!r.redact(&text).contains("quo"), "{}", r.redact(&text));
        assert!(!format!("{r:?}").contains("s3cret"));
    }

    #[test]
    fn redacts_the_usual_encodings_of_a_value() {
        use base64::{Engine as _, engine::general_purpose as b64};
        let secret = "tok en/+?&=ü-0123456789";
        let r = Redactor::default();
        r.add(secret);
        let shown = |text: String| {
            let out = r.redact(&text);
            assert!(out.contains(REDACTED), "not redacted: {text} -> {out}");
            out
        };
        for encoded in [
            b64::STANDARD.encode(secret),
            b64::STANDARD_NO_PAD.encode(secret),
            b64::URL_SAFE.encode(secret),
            b64::URL_SAFE_NO_PAD.encode(secret),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
            url::form_urlencoded::byte_serialize(secret.as_bytes())
                .collect::<String>()
                .replace('+', "%20"),
            hex::encode(secret),
            hex::encode_upper(secret),
        ] {
            let out = shown(format!("value: {encoded}."));
            assert!(!out.contains(&encoded), "{out}");
        }
        // Inside a longer base64 text at every alignment (a Basic auth header, say), the
        // value's part of the encoding is gone.
        for user in ["u", "us", "usr"] {
            let basic = b64::STANDARD.encode(format!("{user}:{secret}"));
            let out = shown(format!("Authorization: Basic {basic}"));
            // What is left: at most the groups shared with the user name and the end.
            let left = out["Authorization: Basic ".len()..].replace(REDACTED, "");
            assert!(left.len() <= 12, "{basic} -> {out}");
        }
    }
}
