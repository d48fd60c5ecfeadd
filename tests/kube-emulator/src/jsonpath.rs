//! The small JSONPath subset kube-apiserver uses in CRDs: printer columns
//! (`.status.phase`, `.spec.items[0].name`, `.status.conditions[?(@.type=="Ready")].status`,
//! `.metadata.labels['app']`) and scale subresource paths (`.spec.replicas`).
//!
//! Pure. Filters take the first match, as the apiserver's printer shows one value per cell.

use serde_json::{Map, Value};

/// One step of a parsed path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    /// `[?(@.field=="value")]`
    Filter(String, Value),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut steps = Vec::new();
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = find_close(r)?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, value) = filter.split_once("==")?;
                let value = value.trim();
                let value = serde_json::from_str(value)
                    .unwrap_or_else(|_| Value::String(value.trim_matches('\'').to_string()));
                steps.push(Step::Filter(field.trim().to_string(), value));
            } else if let Ok(i) = inner.parse() {
                steps.push(Step::Index(i));
            } else {
                steps.push(Step::Field(inner.trim_matches(['\'', '"']).to_string()));
            }
        } else {
            return None;
        }
    }
    Some(steps)
}

fn find_close(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The value at `path`, or `None` when any step is missing or the path is not understood.
pub fn get<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = object;
    for step in parse(path)? {
        node = match step {
            Step::Field(f) => node.get(&f)?,
            Step::Index(i) => node.get(i)?,
            Step::Filter(field, wanted) => node
                .as_array()?
                .iter()
                .find(|item| item.get(&field) == Some(&wanted))?,
        };
    }
    Some(node)
}

/// Sets the value at a plain field path (`.spec.replicas`), creating intermediate maps.
/// Returns false when the path has filters or indexes, or crosses a non-object.
pub fn set(object: &mut Value, path: &str, value: Value) -> bool {
    let Some(steps) = parse(path) else {
        return false;
    };
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut node = object;
    for step in parents {
        let Step::Field(f) = step else { return false };
        let Some(map) = node.as_object_mut() else {
            return false;
        };
        node = map
            .entry(f.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    match (last, node.as_object_mut()) {
        (Step::Field(f), Some(map)) => {
            map.insert(f.clone(), value);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn condition_filters_select_the_matching_item() {
        let obj = json!({"status": {"conditions": [
            {"type": "Progressing", "status": "False"}, {"type": "Ready", "status": "True"}
        ]}});
        let path = r#".status.conditions[?(@.type=="Ready")].status"#;
        assert_eq!(get(&obj, path), Some(&json!("True")));
        assert_eq!(
            get(&obj, ".status.conditions[0].type"),
            Some(&json!("Progressing"))
        );
        assert_eq!(get(&obj, ".status.missing"), None);
    }

    #[test]
    fn quoted_keys_and_setting_nested_fields_work() {
        let mut obj = json!({"metadata": {"labels": {"app.kubernetes.io/name": "x"}}});
        assert_eq!(
            get(&obj, ".metadata.labels['app.kubernetes.io/name']"),
            Some(&json!("x"))
        );
        assert!(set(&mut obj, ".spec.replicas", json!(3)));
        assert_eq!(obj["spec"]["replicas"], 3);
    }
}
