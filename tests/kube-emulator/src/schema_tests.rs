//! Unit tests of structural schema pruning, defaulting and validation.

use super::*;
use serde_json::json;

fn pipeline_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["topic"],
                "properties": {
                    "topic": {"type": "string", "pattern": "^[a-z_]+$", "minLength": 1},
                    "parallelism": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 64, "default": 1},
                    "delivery": {"type": "string", "enum": ["exactlyOnce", "atLeastOnce"], "default": "exactlyOnce"},
                    "sources": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                }
            },
            "status": {"type": "object", "nullable": true, "properties": {"phase": {"type": "string"}}}
        }
    })
}

fn prepared(mut object: Value) -> Value {
    prune_and_default(&mut object, &pipeline_schema());
    object
}

#[test]
fn unknown_fields_are_pruned_unless_preserved() {
    let object = prepared(json!({
        "apiVersion": "tidemark.dev/v1alpha1", "kind": "MarketingPipeline", "metadata": {"name": "x"},
        "spec": {"topic": "clicks", "bogus": 1, "extra": {"anything": {"goes": true}}, "labels": {"a": "b"}},
        "top": "level"
    }));
    assert_eq!(object.get("top"), None);
    assert_eq!(object["spec"].get("bogus"), None);
    assert_eq!(object["spec"]["extra"], json!({"anything": {"goes": true}}));
    assert_eq!(object["spec"]["labels"], json!({"a": "b"}));
    assert_eq!(object["metadata"]["name"], "x");
}

#[test]
fn defaults_fill_missing_fields_and_nulls_of_non_nullable_fields_are_dropped() {
    let object = prepared(json!({"spec": {"topic": "clicks", "delivery": null}, "status": null}));
    assert_eq!(object["spec"]["parallelism"], 1);
    assert_eq!(object["spec"]["delivery"], "exactlyOnce");
    assert_eq!(
        object["status"],
        Value::Null,
        "status is nullable and stays"
    );
}

#[test]
fn every_violation_is_reported_with_its_path_and_apiserver_wording() {
    let object = prepared(json!({"spec": {
        "parallelism": 0, "delivery": "sometimes", "sources": ["a", "b", "c"]
    }}));
    let messages: Vec<String> = validate(&object, None, &pipeline_schema())
        .into_iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect();
    assert_eq!(
        messages,
        [
            "spec.topic: Required value",
            "spec.delivery: Unsupported value: \"sometimes\": supported values: \"exactlyOnce\", \"atLeastOnce\"",
            "spec.parallelism: Invalid value: 0: spec.parallelism in body should be greater than or equal to 1",
            "spec.sources: Too many: 3: must have at most 2 items",
        ]
    );
}

#[test]
fn wrong_types_patterns_and_int32_overflow_are_rejected() {
    let object = prepared(json!({"spec": {"topic": "Bad-Topic", "parallelism": "many"}}));
    let messages: Vec<String> = validate(&object, None, &pipeline_schema())
        .into_iter()
        .map(|v| v.message)
        .collect();
    assert!(messages.contains(
        &"Invalid value: \"Bad-Topic\": spec.topic in body should match '^[a-z_]+$'".to_string()
    ));
    assert!(messages.contains(
        &"Invalid value: \"string\": spec.parallelism in body must be of type integer: \"string\""
            .to_string()
    ));
    let schema =
        json!({"type": "object", "properties": {"n": {"type": "integer", "format": "int32"}}});
    let v = validate(&json!({"n": 3_000_000_000_i64}), None, &schema);
    assert_eq!(
        v[0].message,
        "Invalid value: 3000000000: n in body must be of type int32"
    );
}

#[test]
fn cel_rule_failures_carry_the_node_path() {
    let schema = json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must be <= max"}]
    }}});
    let v = validate(&json!({"spec": {"min": 3, "max": 1}}), None, &schema);
    assert_eq!(
        v,
        [Violation {
            field: "spec".into(),
            message: "Invalid value: \"object\": min must be <= max".into()
        }]
    );
}
