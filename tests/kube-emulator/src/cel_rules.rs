//! `x-kubernetes-validations` CEL rules of a schema node, evaluated with the `cel` crate.
//!
//! `self` is bound to the node's value and, for transition rules, `oldSelf` to the stored value
//! (such rules are skipped on create, as kube-apiserver does). A rule that yields `false` fails with
//! its `message` (or `failed rule: <rule>`); one that does not compile or errors while evaluating
//! fails with the error text, like the apiserver. Not emulated: `messageExpression`, cost limits,
//! and the Kubernetes CEL library extensions beyond the standard functions and macros.

use serde_json::Value;

/// Failed rules of `schema`'s node as `(fieldPath suffix, message)`; an empty suffix means the node.
pub fn evaluate(value: &Value, old: Option<&Value>, schema: &Value) -> Vec<(String, String)> {
    let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    for rule in rules {
        let Some(source) = rule.get("rule").and_then(Value::as_str) else {
            continue;
        };
        let field = rule
            .get("fieldPath")
            .and_then(Value::as_str)
            .map(|p| p.trim_start_matches('.').to_string())
            .unwrap_or_default();
        let type_shown = shown_type(value, schema);
        let failure = |reason: String| {
            (
                field.clone(),
                format!("Invalid value: \"{type_shown}\": {reason}"),
            )
        };
        let program = match cel::Program::compile(source) {
            Ok(p) => p,
            Err(e) => {
                failures.push(failure(format!("compilation failed: {e}")));
                continue;
            }
        };
        let transition = program.references().has_variable("oldSelf");
        if transition && old.is_none() {
            continue;
        }
        match run(&program, value, old) {
            Ok(true) => {}
            Ok(false) => {
                let message = rule
                    .get("message")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| format!("failed rule: {source}"));
                failures.push(failure(message));
            }
            Err(e) => failures.push(failure(e)),
        }
    }
    failures
}

fn run(program: &cel::Program, value: &Value, old: Option<&Value>) -> Result<bool, String> {
    let mut context = cel::Context::default();
    let bind = |v: &Value| cel::to_value(v).map_err(|e| format!("failed to bind value: {e}"));
    context.add_variable_from_value("self", bind(value)?);
    if let Some(old) = old {
        context.add_variable_from_value("oldSelf", bind(old)?);
    }
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("rule did not evaluate to a bool: {other:?}")),
        Err(e) => Err(format!("error evaluating rule: {e}")),
    }
}

/// kube-apiserver shows the schema type of the node in CEL failures: `Invalid value: "object"`.
fn shown_type(value: &Value, schema: &Value) -> String {
    schema
        .get("type")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| {
            match value {
                Value::Object(_) => "object",
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "boolean",
                Value::Null => "null",
            }
            .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(rule: &str, message: Option<&str>) -> Value {
        let mut r = json!({"rule": rule});
        if let Some(m) = message {
            r["message"] = json!(m);
        }
        json!({"type": "object", "x-kubernetes-validations": [r]})
    }

    #[test]
    fn a_false_rule_reports_its_message() {
        let s = schema("self.min <= self.max", Some("min must not exceed max"));
        let failures = evaluate(&json!({"min": 5, "max": 2}), None, &s);
        assert_eq!(
            failures,
            [(
                String::new(),
                "Invalid value: \"object\": min must not exceed max".into()
            )]
        );
        assert!(evaluate(&json!({"min": 1, "max": 2}), None, &s).is_empty());
    }

    #[test]
    fn has_size_and_exists_macros_work() {
        let s = schema(
            "has(self.items) && size(self.items) > 0 && self.items.exists(i, i == 'a')",
            None,
        );
        assert!(evaluate(&json!({"items": ["b", "a"]}), None, &s).is_empty());
        let failures = evaluate(&json!({"items": ["b"]}), None, &s);
        assert_eq!(failures.len(), 1);
        assert!(failures[0].1.contains("failed rule:"), "{failures:?}");
    }

    #[test]
    fn transition_rules_apply_only_on_update() {
        let s = schema("self.mode == oldSelf.mode", Some("mode is immutable"));
        assert!(evaluate(&json!({"mode": "a"}), None, &s).is_empty());
        let failures = evaluate(&json!({"mode": "b"}), Some(&json!({"mode": "a"})), &s);
        assert_eq!(
            failures[0].1,
            "Invalid value: \"object\": mode is immutable"
        );
    }
}
