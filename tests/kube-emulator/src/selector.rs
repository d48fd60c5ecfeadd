//! Label selectors (`a=b,c!=d,e,!f,g in (x,y),h notin (z)`) and field selectors
//! (`metadata.name=x,metadata.namespace!=y`) as list and watch requests send them, plus rendering
//! a `LabelSelector` object back to the string form the `/scale` subresource reports.
//!
//! Pure. Field selectors accept any dotted path (the apiserver allows only a few per kind; we
//! are more permissive, which no correct client notices).

use serde_json::Value;

/// One requirement.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label or field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// The selector string is malformed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unable to parse requirement: {0:?}")]
pub struct SelectorError(pub String);

fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set_values(s: &str) -> Result<Vec<String>, SelectorError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(s.into()))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl Selector {
    /// Parses a selector string.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_terms(s) {
            let req = if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set_values(v)?)
            } else if let Some((k, v)) = term.split_once(" in ") {
                Requirement::In(k.trim().into(), set_values(v)?)
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if term
                .chars()
                .all(|c| c.is_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(term.into())
            } else {
                return Err(SelectorError(term.into()));
            };
            requirements.push(req);
        }
        Ok(Selector { requirements })
    }

    /// Whether `lookup` (key → value) satisfies every requirement.
    fn matches_with(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => lookup(k).as_deref() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => lookup(k).as_deref() != Some(v.as_str()),
            Requirement::Exists(k) => lookup(k).is_some(),
            Requirement::NotExists(k) => lookup(k).is_none(),
            Requirement::In(k, vs) => lookup(k).is_some_and(|x| vs.contains(&x)),
            Requirement::NotIn(k, vs) => lookup(k).is_none_or(|x| !vs.contains(&x)),
        })
    }

    /// Label selector semantics against `metadata.labels`.
    pub fn matches_labels(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.matches_with(|k| {
            labels
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .map(String::from)
        })
    }

    /// Field selector semantics: keys are dotted paths; a missing field compares as `""`.
    pub fn matches_fields(&self, object: &Value) -> bool {
        self.matches_with(|path| {
            let mut node = object;
            for part in path.split('.') {
                match node.get(part) {
                    Some(n) => node = n,
                    None => return Some(String::new()),
                }
            }
            Some(match node {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
    }
}

/// Renders a `LabelSelector` object (matchLabels, matchExpressions) as a selector string; a string
/// is returned as is.
pub fn label_selector_string(selector: &Value) -> String {
    if let Some(s) = selector.as_str() {
        return s.to_string();
    }
    let mut terms: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match expr.get("operator").and_then(Value::as_str) {
            Some("In") => terms.push(format!("{key} in ({})", values.join(","))),
            Some("NotIn") => terms.push(format!("{key} notin ({})", values.join(","))),
            Some("Exists") => terms.push(key.to_string()),
            Some("DoesNotExist") => terms.push(format!("!{key}")),
            _ => {}
        }
    }
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_support_equality_existence_and_sets() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        for (sel, expected) in [
            ("app=web", true),
            ("app==web,tier", true),
            ("app!=web", false),
            ("!tier", false),
            ("tier in (front, back)", true),
            ("app notin (web)", false),
            ("missing", false),
            ("", true),
        ] {
            let parsed = Selector::parse(sel).expect("valid selector");
            assert_eq!(parsed.matches_labels(&obj), expected, "{sel}");
        }
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(Selector::parse("metadata.name=a")
            .expect("ok")
            .matches_fields(&obj));
        assert!(!Selector::parse("metadata.name=b")
            .expect("ok")
            .matches_fields(&obj));
        assert!(Selector::parse("metadata.namespace!=x")
            .expect("ok")
            .matches_fields(&obj));
    }

    #[test]
    fn label_selector_objects_render_as_strings() {
        let sel = json!({"matchLabels": {"app": "x"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]}
        ]});
        assert_eq!(label_selector_string(&sel), "app=x,tier in (a,b)");
    }
}
