//! Warnings kube-apiserver attaches to a successful write, as `Warning: 299 - "text"` response
//! headers (kubectl prints each as `Warning: text` on stderr; client-go logs them).
//!
//! Only what Tidemark's tests need: a CustomResourceDefinition whose schema uses a `format` the
//! apiextensions server does not know (schemars' `uint64`, `uint32`, ...) is stored, but every
//! write of it answers `unrecognized format "uint64"`, as on a real API server. Pure functions;
//! the HTTP layer turns them into headers.

use std::collections::BTreeSet;

use serde_json::Value;

/// The formats the apiextensions server validates (`k8s.io/apiextensions-apiserver`'s supported
/// formats); any other `format` in a CRD schema draws a warning.
pub const KNOWN_FORMATS: [&str; 29] = [
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

/// The warnings of writing `object` of API group `group`: for a CRD, one per unknown `format`
/// in any version's schema (each format once, sorted).
pub fn on_write(group: &str, object: &Value) -> Vec<String> {
    if group != "apiextensions.k8s.io" {
        return Vec::new();
    }
    let mut unknown = BTreeSet::new();
    for version in object
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(schema) = version.pointer("/schema/openAPIV3Schema") {
            collect_unknown_formats(schema, &mut unknown);
        }
    }
    unknown
        .into_iter()
        .map(|format| format!("unrecognized format \"{format}\""))
        .collect()
}

fn collect_unknown_formats(schema: &Value, unknown: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    // Defaults, enums and examples are data, not schemas.
                    ("default" | "enum" | "example", _) => {}
                    ("format", Value::String(format)) => {
                        if !KNOWN_FORMATS.contains(&format.as_str()) {
                            unknown.insert(format.clone());
                        }
                    }
                    _ => collect_unknown_formats(value, unknown),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_unknown_formats(item, unknown)),
        _ => {}
    }
}

/// The `Warning` header value of `text` (RFC 7234 form, as kube-apiserver writes it).
pub fn header_value(text: &str) -> String {
    format!("299 - {}", serde_json::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(properties: Value) -> Value {
        json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
            "type": "object", "properties": properties}}}]}})
    }

    #[test]
    fn a_crd_with_unsigned_formats_draws_one_warning_per_unknown_format() {
        let object = crd(json!({
            "a": {"type": "integer", "format": "uint64", "minimum": 0},
            "b": {"type": "array", "items": {"type": "integer", "format": "uint32"}},
            "c": {"type": "integer", "format": "uint64"},
            "d": {"type": "integer", "format": "int32"},
            "e": {"type": "string", "format": "date-time"},
        }));
        assert_eq!(
            on_write("apiextensions.k8s.io", &object),
            [
                "unrecognized format \"uint32\"",
                "unrecognized format \"uint64\""
            ]
        );
    }

    #[test]
    fn known_formats_other_groups_and_property_names_draw_no_warning() {
        let object = crd(json!({
            "format": {"type": "string", "default": "uint64", "enum": ["uint64"]},
            "n": {"type": "integer", "format": "int64"},
        }));
        assert!(on_write("apiextensions.k8s.io", &object).is_empty());
        let with_unknown = crd(json!({"a": {"type": "integer", "format": "uint64"}}));
        assert!(on_write("tidemark.dev", &with_unknown).is_empty());
    }

    #[test]
    fn the_header_quotes_the_text_as_kube_apiserver_does() {
        assert_eq!(
            header_value("unrecognized format \"uint64\""),
            "299 - \"unrecognized format \\\"uint64\\\"\""
        );
    }
}
