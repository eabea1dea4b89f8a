//! A launch form generated from a job's parameters JSON Schema: strings, numbers, integers,
//! booleans, enums, nested objects (as fieldsets) and arrays of scalars (one item per line).
//! Required marks, defaults prefilled, client-side checks of the same rules the server applies
//! (required, type, enum, minimum/maximum, minItems), and the server's problems shown next to
//! their fields by JSON pointer.
use std::collections::BTreeMap;

use leptos::prelude::*;
use serde_json::{Map, Value};

/// One input of the form: a leaf of the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// JSON pointer below the parameters object, e.g. `/git/url`.
    pub pointer: String,
    pub label: String,
    pub kind: Kind,
    pub required: bool,
    pub description: Option<String>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub min_items: Option<u64>,
    /// Depth of nesting, for indentation of nested objects.
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text,
    Number,
    Integer,
    Boolean,
    Enum(Vec<Value>),
    /// Array of scalars of the inner kind.
    List(Box<Kind>),
    /// A nested object's heading (no input).
    Group,
}

fn kind_of(schema: &Value) -> Kind {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Kind::Enum(values.clone());
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("number") => Kind::Number,
        Some("integer") => Kind::Integer,
        Some("boolean") => Kind::Boolean,
        Some("object") => Kind::Group,
        Some("array") => Kind::List(Box::new(
            schema.get("items").map(kind_of).unwrap_or(Kind::Text),
        )),
        _ => Kind::Text,
    }
}

/// The fields of an object schema, depth first.
pub fn fields(schema: &Value) -> Vec<Field> {
    let mut out = Vec::new();
    collect(schema, "", 0, &mut out);
    out
}

fn collect(schema: &Value, prefix: &str, depth: usize, out: &mut Vec<Field>) {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, sub) in props {
        let pointer = format!("{prefix}/{}", name.replace('~', "~0").replace('/', "~1"));
        let kind = kind_of(sub);
        out.push(Field {
            pointer: pointer.clone(),
            label: sub
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_string(),
            kind: kind.clone(),
            required: required.contains(&name.as_str()),
            description: sub
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            minimum: sub.get("minimum").and_then(Value::as_f64),
            maximum: sub.get("maximum").and_then(Value::as_f64),
            min_items: sub.get("minItems").and_then(Value::as_u64),
            depth,
        });
        if kind == Kind::Group {
            collect(sub, &pointer, depth + 1, out);
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Initial text of every field: the job's default parameters, else the schema's `default`.
pub fn initial_values(
    schema: &Value,
    defaults: &Value,
    fields: &[Field],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in fields.iter().filter(|f| f.kind != Kind::Group) {
        let schema_default = schema_at(schema, &f.pointer).and_then(|s| s.get("default").cloned());
        let value = defaults.pointer(&f.pointer).cloned().or(schema_default);
        let text = match (&f.kind, value) {
            (_, None) => String::new(),
            (Kind::List(_), Some(Value::Array(items))) => {
                items.iter().map(scalar_text).collect::<Vec<_>>().join("\n")
            }
            (_, Some(v)) => scalar_text(&v),
        };
        out.insert(f.pointer.clone(), text);
    }
    out
}

fn schema_at<'a>(schema: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut cur = schema;
    for seg in pointer.split('/').skip(1) {
        let name = seg.replace("~1", "/").replace("~0", "~");
        cur = cur.get("properties")?.get(&name)?;
    }
    Some(cur)
}

fn parse_scalar(kind: &Kind, text: &str) -> Result<Value, String> {
    match kind {
        Kind::Text => Ok(Value::String(text.to_string())),
        Kind::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            .ok_or_else(|| "must be a number".to_string()),
        Kind::Integer => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| "must be a whole number".to_string()),
        Kind::Boolean => Ok(Value::Bool(text == "true")),
        Kind::Enum(values) => values
            .iter()
            .find(|v| scalar_text(v) == text)
            .cloned()
            .ok_or_else(|| "must be one of the listed values".to_string()),
        Kind::List(_) | Kind::Group => Err("unsupported".into()),
    }
}

fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let segs: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == segs.len() {
            obj.insert(seg.clone(), value);
            return;
        }
        cur = obj
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Builds the parameters document from the form's texts, or every problem by pointer.
pub fn build(
    fields: &[Field],
    values: &BTreeMap<String, String>,
) -> Result<Value, BTreeMap<String, String>> {
    let mut doc = Value::Object(Map::new());
    let mut problems = BTreeMap::new();
    for f in fields.iter().filter(|f| f.kind != Kind::Group) {
        let text = values.get(&f.pointer).cloned().unwrap_or_default();
        if f.kind == Kind::Boolean {
            set_pointer(&mut doc, &f.pointer, Value::Bool(text == "true"));
            continue;
        }
        if text.trim().is_empty() {
            if f.required {
                problems.insert(f.pointer.clone(), "is required".to_string());
            }
            continue;
        }
        let parsed = match &f.kind {
            Kind::List(inner) => {
                let items: Result<Vec<Value>, String> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| parse_scalar(inner, l))
                    .collect();
                items.and_then(|items| match f.min_items {
                    Some(min) if (items.len() as u64) < min => {
                        Err(format!("needs at least {min} item(s)"))
                    }
                    _ => Ok(Value::Array(items)),
                })
            }
            kind => parse_scalar(kind, &text).and_then(|v| match v.as_f64() {
                Some(n) if f.minimum.is_some_and(|m| n < m) => Err(format!(
                    "must be at least {}",
                    f.minimum.unwrap_or_default()
                )),
                Some(n) if f.maximum.is_some_and(|m| n > m) => {
                    Err(format!("must be at most {}", f.maximum.unwrap_or_default()))
                }
                _ => Ok(v),
            }),
        };
        match parsed {
            Ok(v) => set_pointer(&mut doc, &f.pointer, v),
            Err(message) => {
                problems.insert(f.pointer.clone(), message);
            }
        }
    }
    if problems.is_empty() {
        Ok(doc)
    } else {
        Err(problems)
    }
}

/// The id of a field's input (`param-git-url` for `/git/url`).
pub fn input_id(pointer: &str) -> String {
    format!("param{}", pointer.replace(['/', '~'], "-"))
}

/// The form. `on_submit` receives the parameters document once the client-side checks pass;
/// `server_problems` (pointer below `/parameters` → message) are shown next to their fields.
#[component]
pub fn SchemaForm(
    schema: Value,
    defaults: Value,
    server_problems: ReadSignal<BTreeMap<String, String>>,
    on_submit: Callback<Value>,
    /// Why the viewer may not start a run (the submit button is disabled with this title).
    #[prop(default = None)]
    denied: Option<String>,
) -> impl IntoView {
    let fields = fields(&schema);
    let values = RwSignal::new(initial_values(&schema, &defaults, &fields));
    let (client_problems, set_client_problems) = signal(BTreeMap::<String, String>::new());
    let problem = move |pointer: &str| {
        client_problems
            .with(|c| c.get(pointer).cloned())
            .or_else(|| server_problems.with(|s| s.get(pointer).cloned()))
    };
    let submit_fields = fields.clone();
    let rows = fields
        .into_iter()
        .map(|f| field_row(f, values, problem))
        .collect_view();
    view! {
        <form id="launch-form" novalidate on:submit=move |ev| {
            ev.prevent_default();
            match values.with(|v| build(&submit_fields, v)) {
                Ok(doc) => {
                    set_client_problems.set(BTreeMap::new());
                    on_submit.run(doc);
                }
                Err(problems) => set_client_problems.set(problems),
            }
        }>
            {rows}
            <button id="launch-submit" type="submit" disabled=denied.is_some()
                title=denied.clone().unwrap_or_else(|| "Start a run with these parameters".into())>"Start run"</button>
            {denied.map(|d| view! { " " <small class="muted" id="launch-denied">{d}</small> })}
        </form>
    }
}

/// One field of the form (a group's heading for [`Kind::Group`]): its label, input,
/// description, and the problem `problem` reports for its pointer.
fn field_row(
    f: Field,
    values: RwSignal<BTreeMap<String, String>>,
    problem: impl Fn(&str) -> Option<String> + Copy + Send + Sync + 'static,
) -> AnyView {
    let id = input_id(&f.pointer);
    let Some(input) = field_input(&f, &id, values) else {
        return view! {
            <p class="group" style=format!("margin-left: {}rem", f.depth)><strong>{f.label.clone()}</strong></p>
        }
        .into_any();
    };
    let label = view! {
        <label for=id.clone()>
            {f.label.clone()}
            {f.required.then(|| view! { <abbr class="required" title="required">"*"</abbr> })}
        </label>
    };
    let err_id = format!("{id}-error");
    let p = f.pointer.clone();
    view! {
        <div class="field" style=format!("margin-left: {}rem", f.depth)>
            {label}
            " "
            {input}
            {f.description.clone().map(|d| view! { <small class="muted">" " {d}</small> })}
            <span class="field-error error" id=err_id role="alert">{move || problem(&p).unwrap_or_default()}</span>
        </div>
    }
    .into_any()
}

/// The input of a field, with the id `id`, bound to the field's text in `values`; `None` for
/// a group, which has a heading instead.
fn field_input(f: &Field, id: &str, values: RwSignal<BTreeMap<String, String>>) -> Option<AnyView> {
    let p = f.pointer.clone();
    let value = move || values.with(|m| m.get(&p).cloned().unwrap_or_default());
    let p = f.pointer.clone();
    let set = move |text: String| {
        values.update(|m| {
            m.insert(p.clone(), text);
        })
    };
    let id = id.to_string();
    let input = match &f.kind {
        Kind::Group => return None,
        Kind::Boolean => view! {
            <input id=id.clone() type="checkbox" prop:checked=move || value() == "true"
                on:change=move |ev| set(if event_target_checked(&ev) { "true".into() } else { "false".into() })/>
        }
        .into_any(),
        Kind::Enum(options) => {
            let options = options.clone();
            view! {
                <select id=id.clone() prop:value=value on:change=move |ev| set(event_target_value(&ev))>
                    <option value="">"—"</option>
                    {options.iter().map(|o| { let t = scalar_text(o); view! { <option value=t.clone()>{t.clone()}</option> } }).collect_view()}
                </select>
            }
            .into_any()
        }
        Kind::List(_) => view! {
            <textarea id=id.clone() rows="3" placeholder="one item per line" prop:value=value
                on:input=move |ev| set(event_target_value(&ev))></textarea>
        }
        .into_any(),
        Kind::Number | Kind::Integer => view! {
            <input id=id.clone() type="number" step=if f.kind == Kind::Integer { "1" } else { "any" }
                prop:value=value on:input=move |ev| set(event_target_value(&ev))/>
        }
        .into_any(),
        Kind::Text => view! {
            <input id=id.clone() type="text" prop:value=value on:input=move |ev| set(event_target_value(&ev))/>
        }
        .into_any(),
    };
    Some(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "required": ["name", "mode"], "properties": {
            "name": {"type": "string"},
            "mode": {"enum": ["fast", "slow"]},
            "count": {"type": "integer", "minimum": 1, "default": 2},
            "ratio": {"type": "number"},
            "dry": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "git": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}
        }})
    }

    #[test]
    fn fields_cover_nested_objects_and_defaults() {
        let f = fields(&schema());
        let pointers: Vec<&str> = f.iter().map(|f| f.pointer.as_str()).collect();
        assert!(pointers.contains(&"/git/url"));
        assert!(
            f.iter()
                .any(|f| f.pointer == "/git/url" && f.required && f.depth == 1)
        );
        let values = initial_values(&schema(), &json!({"name": "from-defaults"}), &f);
        assert_eq!(values["/count"], "2");
        assert_eq!(values["/name"], "from-defaults");
    }

    #[test]
    fn build_types_values_and_lists_every_problem() {
        let f = fields(&schema());
        let mut v = initial_values(&schema(), &json!({}), &f);
        v.insert("/count".into(), "0".into());
        v.insert("/ratio".into(), "abc".into());
        v.insert("/mode".into(), "medium".into());
        let problems = build(&f, &v).unwrap_err();
        for p in ["/name", "/mode", "/count", "/ratio", "/git/url"] {
            assert!(problems.contains_key(p), "{p} missing in {problems:?}");
        }
        v.insert("/name".into(), "n".into());
        v.insert("/mode".into(), "slow".into());
        v.insert("/count".into(), "3".into());
        v.insert("/ratio".into(), "0.5".into());
        v.insert("/tags".into(), "a\nb\n".into());
        v.insert("/git/url".into(), "file:///x".into());
        v.insert("/dry".into(), "true".into());
        assert_eq!(
            build(&f, &v).unwrap(),
            json!({"name": "n", "mode": "slow", "count": 3, "ratio": 0.5, "dry": true,
                   "tags": ["a", "b"], "git": {"url": "file:///x"}})
        );
    }
}
