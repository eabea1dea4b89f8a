//! Collects every problem of a request, each located by a JSON pointer, so a client sees all
//! of them at once.
use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// One problem of a rejected request, located by a JSON pointer into the request
/// (`/steps/2/dependsOn/0`; `/query/limit` for a query parameter, `/headers/...` for a header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Problems(Vec<ErrorDetail>);

impl Problems {
    pub fn new() -> Self {
        Problems(Vec::new())
    }

    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ErrorDetail {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<ErrorDetail> {
        self.0
    }

    pub fn iter(&self) -> impl Iterator<Item = &ErrorDetail> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing was found, else every problem.
    pub fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Why a string holding U+0000 is refused: PostgreSQL can store it neither in `text` nor in
/// `jsonb` (`invalid byte sequence for encoding "UTF8": 0x00`, `unsupported Unicode escape
/// sequence`), and SQLite would keep it where other code stops reading at it; so no input may
/// carry it, whichever database is behind.
pub const NUL_MESSAGE: &str =
    "contains the character U+0000 (NUL), which cannot be stored or searched for: remove it";

/// Whether `s` holds U+0000.
pub fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// Records a problem at `path` when the text `s` holds U+0000.
pub fn check_text(path: &str, s: &str, p: &mut Problems) {
    if has_nul(s) {
        p.add(path, NUL_MESSAGE);
    }
}

/// Records a problem for every string and every object key of `value` that holds U+0000,
/// each located by its JSON pointer below `base` (`""` for the document itself), in document
/// order. A key's problem is located at the member it names (the pointer ends with the key,
/// U+0000 and all, as RFC 6901 spells it), with a message that says it is the key.
pub fn check_json(base: &str, value: &serde_json::Value, p: &mut Problems) {
    use serde_json::Value;
    enum Next<'a> {
        Visit(String, &'a Value),
        Key(String),
    }
    // Iterative: how deep a document goes is the client's choice. Pushed in reverse, so the
    // problems come out in document order.
    let mut stack = vec![Next::Visit(base.to_string(), value)];
    while let Some(next) = stack.pop() {
        let (path, v) = match next {
            Next::Key(path) => {
                p.add(path, format!("the key {NUL_MESSAGE}"));
                continue;
            }
            Next::Visit(path, v) => (path, v),
        };
        match v {
            Value::String(s) => check_text(&path, s, p),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push(Next::Visit(format!("{path}/{i}"), item));
                }
            }
            Value::Object(map) => {
                let members: Vec<_> = map.iter().collect();
                for (key, item) in members.into_iter().rev() {
                    let member = format!("{path}/{}", pointer_segment(key));
                    stack.push(Next::Visit(member.clone(), item));
                    if has_nul(key) {
                        stack.push(Next::Key(member));
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// What a handler produced (a log line, a result, an error), with each U+0000 replaced by
/// U+FFFD (the replacement character), so it can be stored: a run's output is not refused,
/// it is what happened.
pub fn replace_nul(s: String) -> String {
    if has_nul(&s) {
        s.replace('\0', "\u{fffd}")
    } else {
        s
    }
}

/// [`replace_nul`] applied in place to every string and key of a JSON document.
pub fn replace_nul_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if has_nul(s) => *s = replace_nul(std::mem::take(s)),
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => {
                if map.keys().any(|k| has_nul(k)) {
                    let members = std::mem::take(map);
                    *map = members
                        .into_iter()
                        .map(|(k, v)| (replace_nul(k), v))
                        .collect();
                }
                stack.extend(map.values_mut());
            }
            _ => {}
        }
    }
}

/// `s` with each U+0000 written `%00`, for records that keep what a refused request named
/// (audit entries), so they can still be stored.
pub fn escape_nul(s: &str) -> String {
    s.replace('\0', "%00")
}

/// [`escape_nul`] applied to every string and key of a (small) JSON document.
pub fn escape_nul_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if has_nul(&s) => Value::String(escape_nul(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(escape_nul_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (escape_nul(&k), escape_nul_json(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(v: &serde_json::Value) -> Vec<(String, String)> {
        let mut p = Problems::new();
        check_json("", v, &mut p);
        p.into_vec()
            .into_iter()
            .map(|d| (d.path, d.message))
            .collect()
    }

    #[test]
    fn clean_documents_have_no_problems() {
        for v in [
            json!(null),
            json!("plain"),
            json!({"name": "x", "n": 1, "list": [true, null, "\\u0000 spelled out"]}),
            json!([]),
        ] {
            assert!(found(&v).is_empty(), "{v}");
        }
    }

    #[test]
    fn every_nul_string_and_key_is_located_in_document_order() {
        let v = json!({
            "name": "a\u{0}b",
            "metadata": {"ta\u{0}g": "ok", "x/y~z": ["fine", "\u{0}"]},
            "parameters": {"k\u{0}": "v\u{0}"},
        });
        let got = found(&v);
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/metadata/ta\u{0}g",
                "/metadata/x~1y~0z/1",
                "/name",
                "/parameters/k\u{0}",
                "/parameters/k\u{0}",
            ]
        );
        assert!(
            got[0]
                .1
                .starts_with("the key contains the character U+0000")
        );
        assert_eq!(got[1].1, NUL_MESSAGE);
        // A key and its value: both reported, the key first.
        assert!(got[3].1.starts_with("the key "));
        assert_eq!(got[4].1, NUL_MESSAGE);
        // Each pointer resolves to what it names.
        assert_eq!(v.pointer(&got[1].0), Some(&json!("\u{0}")));
        assert_eq!(v.pointer(&got[4].0), Some(&json!("v\u{0}")));
    }

    #[test]
    fn below_a_base_and_at_the_root() {
        let mut p = Problems::new();
        check_json("/query", &json!("\u{0}"), &mut p);
        check_text("/path/slug", "a\u{0}", &mut p);
        check_text("/path/id", "clean", &mut p);
        let paths: Vec<String> = p.into_vec().into_iter().map(|d| d.path).collect();
        assert_eq!(paths, ["/query", "/path/slug"]);
        assert_eq!(found(&json!("\u{0}"))[0].0, "");
    }

    #[test]
    fn escaping_keeps_what_was_named() {
        assert_eq!(escape_nul("jobs/a\u{0}b"), "jobs/a%00b");
        assert_eq!(
            escape_nul_json(json!({"k\u{0}": ["\u{0}", 1], "ok": "x"})),
            json!({"k%00": ["%00", 1], "ok": "x"})
        );
    }

    #[test]
    fn output_is_kept_with_a_replacement_character() {
        assert_eq!(replace_nul("a\u{0}b".into()), "a\u{fffd}b");
        assert_eq!(replace_nul("clean".into()), "clean");
        let mut v = json!({"k\u{0}": ["\u{0}", {"x": "y\u{0}"}], "n": 1});
        replace_nul_json(&mut v);
        assert_eq!(
            v,
            json!({"k\u{fffd}": ["\u{fffd}", {"x": "y\u{fffd}"}], "n": 1})
        );
    }

    #[test]
    fn deep_documents_do_not_recurse() {
        let mut v = json!("\u{0}");
        for _ in 0..10_000 {
            v = serde_json::Value::Array(vec![v]);
        }
        let got = found(&v);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.len(), 2 * 10_000);
        // Dropping such a Value recurses in serde_json; forget it instead.
        std::mem::forget(v);
    }
}
