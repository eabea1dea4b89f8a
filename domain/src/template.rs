//! The template language of workflow steps (`../shared/api.md`, "Workflow definitions").
//!
//! A string that is exactly `{{ expr }}` (spaces inside the braces optional) renders to the
//! value the expression names, keeping its JSON type; expressions inside a longer string render
//! as text (strings as they are, any other JSON compact). An expression is a dotted path below
//! one of four roots:
//!
//! - `parameters...`: the run's parameters (after merging over the defaults);
//! - `steps.<stepId>.result...`: the result of a step the current step depends on;
//! - `shared...`: the run's shared context;
//! - `run...`: facts about the run, e.g. `run.id`.
//!
//! Array elements are path segments too (`parameters.items.0`). There is no escape for a
//! literal `{{`. Rendering never invents a value: a path that names nothing is an error naming
//! the expression and where it was written (a value that exists and is `null` is fine).
use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::problems::pointer_segment;

/// What an expression starts from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Root {
    Parameters,
    /// `steps.<id>.result`: the result of the step with this id.
    Step(String),
    Shared,
    Run,
}

/// One parsed `{{ ... }}` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    pub root: Root,
    /// Path below the root value (for a step: below its result).
    pub path: Vec<String>,
}

impl Expr {
    /// The step this expression reads the result of, if any.
    pub fn step(&self) -> Option<&str> {
        match &self.root {
            Root::Step(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for Expr {
    /// The expression as written, without braces and spaces: `steps.ingest.result.checkout`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            Root::Parameters => f.write_str("parameters")?,
            Root::Step(id) => write!(f, "steps.{id}.result")?,
            Root::Shared => f.write_str("shared")?,
            Root::Run => f.write_str("run")?,
        }
        for segment in &self.path {
            write!(f, ".{segment}")?;
        }
        Ok(())
    }
}

/// A piece of an interpolated string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Expr(Expr),
}

/// A parsed string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// No expression: the string renders as itself.
    Text(String),
    /// Exactly `{{ expr }}`: renders to the value itself, keeping its JSON type.
    Value(Expr),
    /// Text with expressions: renders to a string.
    Interpolated(Vec<Piece>),
}

impl Template {
    /// The expressions of this template, in order.
    pub fn expressions(&self) -> Vec<&Expr> {
        match self {
            Template::Text(_) => Vec::new(),
            Template::Value(e) => vec![e],
            Template::Interpolated(pieces) => pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Expr(e) => Some(e),
                    Piece::Text(_) => None,
                })
                .collect(),
        }
    }
}

/// Parses one string. Every malformed expression in it is reported (unclosed `{{`, empty
/// expression, unknown root, bad path).
pub fn parse(text: &str) -> Result<Template, Vec<String>> {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut rest = text;
    let mut literal = String::new();
    while let Some(open) = rest.find("{{") {
        literal.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            errors.push(format!(
                "unclosed `{{{{` in {text:?} (every `{{{{` needs a matching `}}}}`)"
            ));
            rest = "";
            break;
        };
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        match parse_expr(after[..close].trim()) {
            Ok(e) => pieces.push(Piece::Expr(e)),
            Err(message) => errors.push(message),
        }
        rest = &after[close + 2..];
    }
    literal.push_str(rest);
    if !errors.is_empty() {
        return Err(errors);
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(match pieces.as_slice() {
        [] => Template::Text(String::new()),
        [Piece::Text(t)] => Template::Text(t.clone()),
        [Piece::Expr(e)] => Template::Value(e.clone()),
        _ => Template::Interpolated(pieces),
    })
}

/// Parses the inside of `{{ }}` (already trimmed).
pub fn parse_expr(inner: &str) -> Result<Expr, String> {
    if inner.is_empty() {
        return Err("empty expression `{{ }}`".into());
    }
    let segments: Vec<&str> = inner.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "`{inner}`: empty path segment (two dots, or a dot at either end)"
        ));
    }
    if let Some(bad) = segments
        .iter()
        .find(|s| s.chars().any(|c| c.is_whitespace() || c == '{' || c == '}'))
    {
        return Err(format!(
            "`{inner}`: path segment {bad:?} may not contain spaces or braces"
        ));
    }
    let rest = |from: usize| segments[from..].iter().map(|s| s.to_string()).collect();
    match segments[0] {
        "parameters" => Ok(Expr {
            root: Root::Parameters,
            path: rest(1),
        }),
        "shared" => Ok(Expr {
            root: Root::Shared,
            path: rest(1),
        }),
        "run" => Ok(Expr {
            root: Root::Run,
            path: rest(1),
        }),
        "steps" => match segments.get(2) {
            Some(&"result") => Ok(Expr {
                root: Root::Step(segments[1].to_string()),
                path: rest(3),
            }),
            _ => Err(format!(
                "`{inner}`: a step is read as `steps.<stepId>.result`, optionally followed by a path"
            )),
        },
        other => Err(format!(
            "`{inner}`: unknown root {other:?}; expected parameters, steps, shared or run"
        )),
    }
}

/// An expression found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// JSON pointer of the string holding the expression, relative to the walked value.
    pub pointer: String,
    pub expr: Expr,
}

impl Reference {
    pub fn root(&self) -> &Root {
        &self.expr.root
    }

    /// The referenced step id, for `steps.<id>.result...`.
    pub fn step(&self) -> Option<&str> {
        self.expr.step()
    }
}

/// Calls `visit(pointer, text)` for every string value of a document (not object keys).
fn walk_strings(value: &Value, pointer: &mut String, visit: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::String(s) => visit(pointer, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                walk_strings(item, pointer, visit);
                pointer.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&pointer_segment(key));
                walk_strings(item, pointer, visit);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// Every well-formed expression of a document, with the pointer of the string it is in.
/// Malformed templates are left out here; [`template_problems`] reports them.
pub fn references(value: &Value) -> Vec<Reference> {
    let mut found = Vec::new();
    walk_strings(value, &mut String::new(), &mut |pointer, text| {
        if let Ok(template) = parse(text) {
            for expr in template.expressions() {
                found.push(Reference {
                    pointer: pointer.to_string(),
                    expr: expr.clone(),
                });
            }
        }
    });
    found
}

/// Malformed templates of a document, as (pointer relative to the value, message).
pub fn template_problems(value: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    walk_strings(value, &mut String::new(), &mut |pointer, text| {
        if let Err(messages) = parse(text) {
            found.extend(messages.into_iter().map(|m| (pointer.to_string(), m)));
        }
    });
    found
}

/// The values expressions read from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    pub parameters: Value,
    /// Results of finished steps, by step id.
    pub steps: BTreeMap<String, Value>,
    pub shared: Value,
    pub run: Value,
}

impl Scope {
    /// The value an expression names, or why there is none.
    pub fn resolve(&self, expr: &Expr) -> Result<&Value, String> {
        let (mut current, mut so_far) = match &expr.root {
            Root::Parameters => (&self.parameters, "parameters".to_string()),
            Root::Shared => (&self.shared, "shared".to_string()),
            Root::Run => (&self.run, "run".to_string()),
            Root::Step(id) => match self.steps.get(id) {
                Some(result) => (result, format!("steps.{id}.result")),
                None => return Err(format!("step {id:?} has no result (it has not succeeded)")),
            },
        };
        for segment in &expr.path {
            let next = match current {
                Value::Object(map) => map
                    .get(segment)
                    .ok_or_else(|| format!("`{so_far}` has no key {segment:?}"))?,
                Value::Array(items) => {
                    let index: usize = segment.parse().map_err(|_| {
                        format!("`{so_far}` is an array; {segment:?} is not an index")
                    })?;
                    items.get(index).ok_or_else(|| {
                        format!(
                            "`{so_far}` has no element {index} (its length is {})",
                            items.len()
                        )
                    })?
                }
                other => {
                    return Err(format!(
                        "`{so_far}` is {}, not an object or array",
                        kind(other)
                    ));
                }
            };
            so_far.push('.');
            so_far.push_str(segment);
            current = next;
        }
        Ok(current)
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why one expression could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// JSON pointer of the string, relative to the rendered value.
    pub pointer: String,
    /// The expression as written (without braces), or the whole string when it is malformed.
    pub expression: String,
    /// A sentence naming the expression and what is wrong.
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "(root)"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {}", self.message)
    }
}

impl std::error::Error for RenderError {}

/// Renders every string of a document. Every failure is reported, each with its pointer.
pub fn render(value: &Value, scope: &Scope) -> Result<Value, Vec<RenderError>> {
    let mut errors = Vec::new();
    let out = render_at(value, scope, &mut String::new(), &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn render_at(
    value: &Value,
    scope: &Scope,
    pointer: &mut String,
    errors: &mut Vec<RenderError>,
) -> Value {
    match value {
        Value::String(s) => render_string(s, scope, pointer, errors),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let len = pointer.len();
                    pointer.push_str(&format!("/{i}"));
                    let out = render_at(item, scope, pointer, errors);
                    pointer.truncate(len);
                    out
                })
                .collect(),
        ),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, item) in map {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&pointer_segment(key));
                out.insert(key.clone(), render_at(item, scope, pointer, errors));
                pointer.truncate(len);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn render_string(text: &str, scope: &Scope, pointer: &str, errors: &mut Vec<RenderError>) -> Value {
    let template = match parse(text) {
        Ok(t) => t,
        Err(messages) => {
            errors.extend(messages.into_iter().map(|message| RenderError {
                pointer: pointer.to_string(),
                expression: text.to_string(),
                message,
            }));
            return Value::Null;
        }
    };
    let mut fail = |expr: &Expr, reason: String| {
        errors.push(RenderError {
            pointer: pointer.to_string(),
            expression: expr.to_string(),
            message: format!("`{{{{ {expr} }}}}` has no value: {reason}"),
        })
    };
    match template {
        Template::Text(t) => Value::String(t),
        Template::Value(expr) => match scope.resolve(&expr) {
            Ok(v) => v.clone(),
            Err(message) => {
                fail(&expr, message);
                Value::Null
            }
        },
        Template::Interpolated(pieces) => {
            let mut out = String::new();
            for piece in &pieces {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Expr(expr) => match scope.resolve(expr) {
                        Ok(v) => out.push_str(&as_text(v)),
                        Err(message) => fail(expr, message),
                    },
                }
            }
            Value::String(out)
        }
    }
}

/// A value as it appears inside a longer string: strings unquoted, other JSON compact.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expr(root: Root, path: &[&str]) -> Expr {
        Expr {
            root,
            path: path.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn scope() -> Scope {
        Scope {
            parameters: json!({
                "repoUrl": "https://example.com/r.git", "depth": 3, "ratio": 0.5,
                "flags": {"a": true}, "items": ["x", "y"], "on": false, "nothing": null,
                "a/b": "slash", "n": {"deep": {"er": 7}}
            }),
            steps: BTreeMap::from([
                (
                    "ingest".to_string(),
                    json!({"checkout": "/data/c", "headCommit": "abc123", "files": 12}),
                ),
                ("empty".to_string(), Value::Null),
            ]),
            shared: json!({"token": "t", "list": [1, 2]}),
            run: json!({"id": "run-1"}),
        }
    }

    fn render_one(text: &str) -> Result<Value, Vec<RenderError>> {
        render(&json!(text), &scope())
    }

    #[test]
    fn parses_plain_text_whole_values_and_interpolations() {
        assert_eq!(parse("hello"), Ok(Template::Text("hello".into())));
        assert_eq!(parse(""), Ok(Template::Text("".into())));
        assert_eq!(parse("}} alone"), Ok(Template::Text("}} alone".into())));
        let whole = Template::Value(expr(Root::Parameters, &["repoUrl"]));
        assert_eq!(parse("{{ parameters.repoUrl }}"), Ok(whole.clone()));
        assert_eq!(parse("{{parameters.repoUrl}}"), Ok(whole.clone()));
        assert_eq!(parse("{{   parameters.repoUrl\t}}"), Ok(whole));
        assert_eq!(
            parse("{{ steps.ingest.result.checkout }}"),
            Ok(Template::Value(expr(
                Root::Step("ingest".into()),
                &["checkout"]
            )))
        );
        assert_eq!(
            parse("{{ steps.ingest.result }}"),
            Ok(Template::Value(expr(Root::Step("ingest".into()), &[])))
        );
        assert_eq!(
            parse("{{ shared }}"),
            Ok(Template::Value(expr(Root::Shared, &[])))
        );
        assert_eq!(
            parse("at {{ run.id }}/{{ parameters.items.0 }}!"),
            Ok(Template::Interpolated(vec![
                Piece::Text("at ".into()),
                Piece::Expr(expr(Root::Run, &["id"])),
                Piece::Text("/".into()),
                Piece::Expr(expr(Root::Parameters, &["items", "0"])),
                Piece::Text("!".into()),
            ]))
        );
        // Spaces outside the braces make it text.
        assert!(matches!(
            parse(" {{ parameters.depth }}"),
            Ok(Template::Interpolated(_))
        ));
        assert!(matches!(
            parse("{{ run.id }}{{ run.id }}"),
            Ok(Template::Interpolated(p)) if p.len() == 2
        ));
    }

    #[test]
    fn expressions_print_as_written() {
        for text in [
            "parameters",
            "parameters.a.0.b",
            "steps.ingest.result",
            "steps.ingest.result.checkout",
            "shared.x",
            "run.id",
        ] {
            assert_eq!(parse_expr(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn malformed_templates_are_reported() {
        assert_eq!(
            parse("{{ parameters.a"),
            Err(vec![
                "unclosed `{{` in \"{{ parameters.a\" (every `{{` needs a matching `}}`)".into()
            ])
        );
        assert_eq!(parse("{{ }}"), Err(vec!["empty expression `{{ }}`".into()]));
        assert_eq!(parse("{{}}"), Err(vec!["empty expression `{{ }}`".into()]));
        assert_eq!(
            parse("{{ env.HOME }}"),
            Err(vec![
                "`env.HOME`: unknown root \"env\"; expected parameters, steps, shared or run"
                    .into()
            ])
        );
        assert_eq!(
            parse("{{ parameters..a }}"),
            Err(vec![
                "`parameters..a`: empty path segment (two dots, or a dot at either end)".into()
            ])
        );
        assert_eq!(
            parse("{{ parameters.a b }}"),
            Err(vec![
                "`parameters.a b`: path segment \"a b\" may not contain spaces or braces".into()
            ])
        );
        let step_form = "a step is read as `steps.<stepId>.result`, optionally followed by a path";
        for bad in [
            "steps",
            "steps.ingest",
            "steps.ingest.status",
            "steps.ingest.output.x",
        ] {
            assert_eq!(
                parse(&format!("{{{{ {bad} }}}}")),
                Err(vec![format!("`{bad}`: {step_form}")]),
                "{bad}"
            );
        }
        // Every malformed expression of one string, in order.
        assert_eq!(
            parse("{{ nope }} and {{ }} and {{ run.id"),
            Err(vec![
                "`nope`: unknown root \"nope\"; expected parameters, steps, shared or run".into(),
                "empty expression `{{ }}`".into(),
                "unclosed `{{` in \"{{ nope }} and {{ }} and {{ run.id\" (every `{{` needs a matching `}}`)".into(),
            ])
        );
    }

    #[test]
    fn template_problems_carry_pointers() {
        let doc = json!({
            "ok": "{{ parameters.a }}",
            "list": ["fine", "{{ bogus.x }}"],
            "nested": {"a/b": {"c~d": "{{ }}"}},
            "count": 3
        });
        assert_eq!(
            template_problems(&doc),
            vec![
                (
                    "/list/1".to_string(),
                    "`bogus.x`: unknown root \"bogus\"; expected parameters, steps, shared or run"
                        .to_string()
                ),
                (
                    "/nested/a~1b/c~0d".to_string(),
                    "empty expression `{{ }}`".to_string()
                ),
            ]
        );
        assert_eq!(
            template_problems(&json!("{{ x")),
            vec![(
                String::new(),
                "unclosed `{{` in \"{{ x\" (every `{{` needs a matching `}}`)".to_string()
            )]
        );
    }

    #[test]
    fn references_list_every_expression_with_its_pointer() {
        let doc = json!({
            "repo": "{{ parameters.repoUrl }}",
            "command": ["make", "{{ steps.build.result.target }}"],
            "deep": {"x": [{"y": "{{ shared.a }}-{{ run.id }}-{{ steps.ingest.result }}"}]},
            "bad": "{{ nope }}",
            "keys {{ ignored.in.keys }}": 1,
            "n": 5
        });
        let got: Vec<(String, String, Option<String>)> = references(&doc)
            .into_iter()
            .map(|r| {
                (
                    r.pointer.clone(),
                    r.expr.to_string(),
                    r.step().map(String::from),
                )
            })
            .collect();
        let want = vec![
            ("/command/1", "steps.build.result.target", Some("build")),
            ("/deep/x/0/y", "shared.a", None),
            ("/deep/x/0/y", "run.id", None),
            ("/deep/x/0/y", "steps.ingest.result", Some("ingest")),
            ("/repo", "parameters.repoUrl", None),
        ];
        let want: Vec<(String, String, Option<String>)> = want
            .into_iter()
            .map(|(p, e, s)| (p.to_string(), e.to_string(), s.map(String::from)))
            .collect();
        assert_eq!(got, want);
        let roots: Vec<Root> = references(&doc)
            .into_iter()
            .map(|r| r.root().clone())
            .collect();
        assert_eq!(
            roots,
            vec![
                Root::Step("build".into()),
                Root::Shared,
                Root::Run,
                Root::Step("ingest".into()),
                Root::Parameters
            ]
        );
        // A bare string is its own document, at the empty pointer.
        let top = references(&json!("{{ run.id }}"));
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].pointer, "");
        assert!(references(&json!([1, true, null, "plain"])).is_empty());
    }

    #[test]
    fn whole_string_templates_keep_the_json_type() {
        let cases = [
            ("{{ parameters.depth }}", json!(3)),
            ("{{ parameters.ratio }}", json!(0.5)),
            ("{{ parameters.flags }}", json!({"a": true})),
            ("{{ parameters.items }}", json!(["x", "y"])),
            ("{{ parameters.on }}", json!(false)),
            ("{{ parameters.flags.a }}", json!(true)),
            ("{{ parameters.nothing }}", Value::Null),
            (
                "{{ parameters.repoUrl }}",
                json!("https://example.com/r.git"),
            ),
            ("{{parameters.n.deep.er}}", json!(7)),
            ("{{ parameters.items.1 }}", json!("y")),
            ("{{ parameters.a/b }}", json!("slash")),
            ("{{ steps.ingest.result.files }}", json!(12)),
            (
                "{{ steps.ingest.result }}",
                json!({"checkout": "/data/c", "headCommit": "abc123", "files": 12}),
            ),
            ("{{ steps.empty.result }}", Value::Null),
            ("{{ shared.list }}", json!([1, 2])),
            ("{{ run.id }}", json!("run-1")),
            ("{{ run }}", json!({"id": "run-1"})),
        ];
        for (text, want) in cases {
            assert_eq!(render_one(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn interpolation_renders_text() {
        let cases = [
            (
                "repo={{ parameters.repoUrl }}",
                "repo=https://example.com/r.git",
            ),
            (
                "depth {{ parameters.depth }} ratio {{parameters.ratio}}",
                "depth 3 ratio 0.5",
            ),
            ("flags: {{ parameters.flags }}", "flags: {\"a\":true}"),
            ("items: {{ parameters.items }}", "items: [\"x\",\"y\"]"),
            (
                "on={{ parameters.on }}, nothing={{ parameters.nothing }}",
                "on=false, nothing=null",
            ),
            (" {{ parameters.depth }}", " 3"),
            ("{{ run.id }}{{ run.id }}", "run-1run-1"),
            (
                "commit {{ steps.ingest.result.headCommit }}",
                "commit abc123",
            ),
            ("no templates }} here", "no templates }} here"),
        ];
        for (text, want) in cases {
            assert_eq!(render_one(text), Ok(json!(want)), "{text}");
        }
    }

    #[test]
    fn documents_render_recursively_and_leave_other_values_alone() {
        let doc = json!({
            "checkout": "{{ steps.ingest.result.checkout }}",
            "command": ["make", "-j{{ parameters.depth }}"],
            "opts": {"depth": "{{ parameters.depth }}", "fixed": 1, "none": null, "b": true},
            "secret": {"secret": {"source": "store", "key": "TOKEN"}, "prefix": "Bearer "}
        });
        assert_eq!(
            render(&doc, &scope()),
            Ok(json!({
                "checkout": "/data/c",
                "command": ["make", "-j3"],
                "opts": {"depth": 3, "fixed": 1, "none": null, "b": true},
                "secret": {"secret": {"source": "store", "key": "TOKEN"}, "prefix": "Bearer "}
            }))
        );
    }

    #[test]
    fn missing_values_are_errors_naming_expression_and_location() {
        let doc = json!({
            "a": "{{ parameters.missing }}",
            "b": ["ok", "x {{ steps.build.result.target }} y"],
            "c": "{{ parameters.items.5 }}",
            "d": "{{ parameters.depth.x }}",
            "e": "{{ parameters.items.first }}",
            "f": "{{ parameters.nothing.x }}",
            "g": "{{ shared.token }}",
            "h": "{{ bogus }}"
        });
        let errors = render(&doc, &scope()).unwrap_err();
        let got: Vec<(String, String, String)> = errors
            .iter()
            .map(|e| (e.pointer.clone(), e.expression.clone(), e.message.clone()))
            .collect();
        let want = [
            (
                "/a",
                "parameters.missing",
                "`parameters` has no key \"missing\"",
            ),
            (
                "/b/1",
                "steps.build.result.target",
                "step \"build\" has no result (it has not succeeded)",
            ),
            (
                "/c",
                "parameters.items.5",
                "`parameters.items` has no element 5 (its length is 2)",
            ),
            (
                "/d",
                "parameters.depth.x",
                "`parameters.depth` is a number, not an object or array",
            ),
            (
                "/e",
                "parameters.items.first",
                "`parameters.items` is an array; \"first\" is not an index",
            ),
            (
                "/f",
                "parameters.nothing.x",
                "`parameters.nothing` is null, not an object or array",
            ),
        ];
        let mut want: Vec<(String, String, String)> = want
            .iter()
            .map(|(p, e, m)| {
                (
                    p.to_string(),
                    e.to_string(),
                    format!("`{{{{ {e} }}}}` has no value: {m}"),
                )
            })
            .collect();
        want.push((
            "/h".into(),
            "{{ bogus }}".into(),
            "`bogus`: unknown root \"bogus\"; expected parameters, steps, shared or run".into(),
        ));
        assert_eq!(got, want);
        assert_eq!(
            errors[0].to_string(),
            "/a: `{{ parameters.missing }}` has no value: `parameters` has no key \"missing\""
        );
        let top = render_one("{{ run.start }}").unwrap_err();
        assert_eq!(
            top[0].to_string(),
            "(root): `{{ run.start }}` has no value: `run` has no key \"start\""
        );
    }

    #[test]
    fn a_missing_value_is_never_a_silent_null() {
        let empty = Scope::default();
        assert!(render(&json!("{{ parameters.x }}"), &empty).is_err());
        assert!(render(&json!("{{ run.id }}"), &empty).is_err());
        // The root itself exists (as null) when nothing was given.
        assert_eq!(render(&json!("{{ shared }}"), &empty), Ok(Value::Null));
    }
}
