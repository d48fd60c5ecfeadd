//! Structural-schema handling of custom resources, in kube-apiserver's order: prune unknown fields
//! and non-nullable nulls, apply `default`s, then validate (types, required, enum, pattern,
//! bounds, lengths, item counts, int32/int64 formats, allOf/anyOf/oneOf/not) and finally evaluate
//! `x-kubernetes-validations` CEL rules through [`crate::cel_rules`].
//!
//! Pure functions over JSON. `apiVersion`, `kind` and `metadata` at the root are never pruned or
//! validated against the schema (the apiserver handles object metadata itself). Messages follow
//! kube-apiserver's wording, e.g. `spec.parallelism in body should be greater than or equal to 1`.

use serde_json::{Map, Value};

use crate::cel_rules;

/// One rejected field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path like `spec.sources[0].topic`.
    pub field: String,
    /// Reason, e.g. `Required value` or `Invalid value: 0: ... should be ...`.
    pub message: String,
}

const ROOT_META: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// Removes fields the schema does not declare (unless preserved) and nulls of non-nullable
/// fields, then fills in `default`s. Call before [`validate`]. Returns the paths of the unknown
/// fields it removed (what `fieldValidation=Strict` rejects).
pub fn prune_and_default(object: &mut Value, schema: &Value) -> Vec<String> {
    let mut pruned = Vec::new();
    normalize(object, schema, true, "", &mut pruned);
    pruned
}

fn normalize(value: &mut Value, schema: &Value, root: bool, path: &str, pruned: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields")
                || additional.and_then(Value::as_bool) == Some(true);
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            map.retain(|k, v| {
                let known = (root || embedded) && ROOT_META.contains(&k.as_str());
                let child = props
                    .and_then(|p| p.get(k))
                    .or(additional.filter(|a| a.is_object()));
                if let (Value::Null, Some(child)) = (&v, child) {
                    return flag(child, "nullable");
                }
                let keep = known || child.is_some() || preserve;
                if !keep {
                    pruned.push(join(path, k));
                }
                keep
            });
            if let Some(props) = props {
                for (k, child_schema) in props {
                    if let (None, Some(default)) = (map.get(k), child_schema.get("default")) {
                        map.insert(k.clone(), default.clone());
                    }
                }
            }
            for (k, v) in map.iter_mut() {
                if (root || embedded) && ROOT_META.contains(&k.as_str()) {
                    continue;
                }
                let child = props
                    .and_then(|p| p.get(k))
                    .or(additional.filter(|a| a.is_object()));
                if let Some(child) = child {
                    normalize(v, child, false, &join(path, k), pruned);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    normalize(item, item_schema, false, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

/// Validates `object` (already pruned and defaulted) against `schema`. `old` is the stored object
/// on updates, for CEL transition rules (`oldSelf`).
pub fn validate(object: &Value, old: Option<&Value>, schema: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    check(object, old, schema, "", true, &mut out);
    out
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(value: &Value, wanted: &str) -> bool {
    match (wanted, value) {
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        ("number", Value::Number(_)) => true,
        ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("object", Value::Object(_)) => true,
        ("array", Value::Array(_)) => true,
        _ => false,
    }
}

/// How the apiserver quotes a bad value: strings in quotes, others as JSON.
pub fn show(value: &Value) -> String {
    value.to_string()
}

fn check(
    value: &Value,
    old: Option<&Value>,
    schema: &Value,
    path: &str,
    root: bool,
    out: &mut Vec<Violation>,
) {
    let mut bad = |message: String| {
        out.push(Violation {
            field: path.to_string(),
            message,
        })
    };
    let shown = if path.is_empty() {
        "body".to_string()
    } else {
        path.to_string()
    };
    if value.is_null() {
        if !flag(schema, "nullable") {
            bad(format!(
                "Invalid value: \"null\": {shown} in body must be of type {}: \"null\"",
                schema_type(schema)
            ));
        }
        return;
    }
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    if let Some(wanted) = schema.get("type").and_then(Value::as_str) {
        let ok = if int_or_string {
            matches!(value, Value::String(_)) || type_matches(value, "integer")
        } else {
            type_matches(value, wanted)
        };
        if !ok {
            let actual = type_name(value);
            bad(format!("Invalid value: \"{actual}\": {shown} in body must be of type {wanted}: \"{actual}\""));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            let supported: Vec<String> = options.iter().map(show).collect();
            bad(format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                supported.join(", ")
            ));
        }
    }
    check_scalar(value, schema, &shown, &mut bad);
    match value {
        Value::Object(map) => check_object(map, old, schema, path, root, out),
        Value::Array(items) => check_array(items, old, schema, path, out),
        _ => {}
    }
    check_combinators(value, old, schema, path, out);
    for (field, message) in cel_rules::evaluate(value, old, schema) {
        let field = if field.is_empty() {
            path.to_string()
        } else {
            join(path, &field)
        };
        out.push(Violation { field, message });
    }
}

fn schema_type(schema: &Value) -> &str {
    schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
}

fn check_scalar(value: &Value, schema: &Value, shown: &str, bad: &mut impl FnMut(String)) {
    if let Some(n) = value.as_f64() {
        let exclusive_min = flag(schema, "exclusiveMinimum");
        let exclusive_max = flag(schema, "exclusiveMaximum");
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if n < min || (exclusive_min && n == min) {
                let op = if exclusive_min {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                bad(format!(
                    "Invalid value: {}: {shown} in body should be {op} {}",
                    show(value),
                    num(min)
                ));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if n > max || (exclusive_max && n == max) {
                let op = if exclusive_max {
                    "less than"
                } else {
                    "less than or equal to"
                };
                bad(format!(
                    "Invalid value: {}: {shown} in body should be {op} {}",
                    show(value),
                    num(max)
                ));
            }
        }
        let range = match schema.get("format").and_then(Value::as_str) {
            Some("int32") => Some((i32::MIN as f64, i32::MAX as f64)),
            Some("int64") => Some((i64::MIN as f64, i64::MAX as f64)),
            _ => None,
        };
        if let Some((lo, hi)) = range {
            if n < lo || n > hi {
                let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
                bad(format!(
                    "Invalid value: {}: {shown} in body must be of type {format}",
                    show(value)
                ));
            }
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if len < min {
                bad(format!(
                    "Invalid value: {}: {shown} in body should be at least {min} chars long",
                    show(value)
                ));
            }
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                bad(format!("Too long: may not be more than {max} bytes"));
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match regex::Regex::new(pattern) {
                Ok(re) if !re.is_match(s) => bad(format!(
                    "Invalid value: {}: {shown} in body should match '{pattern}'",
                    show(value)
                )),
                Ok(_) => {}
                Err(e) => bad(format!("Invalid value: {pattern:?}: invalid pattern: {e}")),
            }
        }
    }
}

fn num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn check_object(
    map: &Map<String, Value>,
    old: Option<&Value>,
    schema: &Value,
    path: &str,
    root: bool,
    out: &mut Vec<Violation>,
) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for field in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(field) {
                out.push(Violation {
                    field: join(path, field),
                    message: "Required value".into(),
                });
            }
        }
    }
    let count = map.len() as u64;
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
        if count < min {
            out.push(Violation {
                field: path.into(),
                message: format!(
                    "Invalid value: {count}: {path} in body should have at least {min} properties"
                ),
            });
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
        if count > max {
            out.push(Violation {
                field: path.into(),
                message: format!("Too many: {count}: must have at most {max} items"),
            });
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    for (k, v) in map {
        if (root || embedded) && ROOT_META.contains(&k.as_str()) {
            continue;
        }
        if let Some(child) = props.and_then(|p| p.get(k)).or(additional) {
            let old_child = old.and_then(|o| o.get(k));
            check(v, old_child, child, &join(path, k), false, out);
        }
    }
}

fn check_array(
    items: &[Value],
    old: Option<&Value>,
    schema: &Value,
    path: &str,
    out: &mut Vec<Violation>,
) {
    let count = items.len() as u64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if count < min {
            out.push(Violation {
                field: path.into(),
                message: format!(
                    "Invalid value: {count}: {path} in body should have at least {min} items"
                ),
            });
        }
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if count > max {
            out.push(Violation {
                field: path.into(),
                message: format!("Too many: {count}: must have at most {max} items"),
            });
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            // Transition rules on list items need identity; only positional old items are offered.
            let old_item = old.and_then(|o| o.get(i));
            check(
                item,
                old_item,
                item_schema,
                &format!("{path}[{i}]"),
                false,
                out,
            );
        }
    }
}

fn check_combinators(
    value: &Value,
    old: Option<&Value>,
    schema: &Value,
    path: &str,
    out: &mut Vec<Violation>,
) {
    let passes = |s: &Value| {
        let mut v = Vec::new();
        check(value, old, s, path, false, &mut v);
        v.is_empty()
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(value, old, s, path, false, out);
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(passes) {
            out.push(Violation {
                field: path.into(),
                message: format!(
                    "Invalid value: {}: must validate at least one schema (anyOf)",
                    show(value)
                ),
            });
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        if one.iter().filter(|s| passes(s)).count() != 1 {
            out.push(Violation {
                field: path.into(),
                message: format!(
                    "Invalid value: {}: must validate one and only one schema (oneOf)",
                    show(value)
                ),
            });
        }
    }
    if let Some(not) = schema.get("not") {
        if passes(not) {
            out.push(Violation {
                field: path.into(),
                message: format!(
                    "Invalid value: {}: must not validate the schema (not)",
                    show(value)
                ),
            });
        }
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
