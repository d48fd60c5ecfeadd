//! Fixes of the schema schemars generates, so the CRD reads and behaves well on a real API
//! server. Pure functions over the CRD's `openAPIV3Schema` as JSON, applied once in
//! [`super::crd`]; nothing here talks to a cluster.
//!
//! - **Descriptions**: a doc comment's line breaks are layout, not meaning. Lines of a paragraph
//!   are joined with a space, so `kubectl explain` (which wraps text itself) never breaks a
//!   sentence in the middle; blank lines (paragraphs) and list items stay.
//! - **Formats**: the apiextensions server knows a fixed set of `format`s and warns
//!   (`Warning: unrecognized format "uint64"`) on every apply of a CRD with another one. Unknown
//!   formats are dropped; the bounds schemars writes beside them (`minimum: 0`) stay, so the
//!   values are still checked.
//! - **Keyed lists**: a list whose items require a `name` becomes
//!   `x-kubernetes-list-type: map` keyed by `name`, so server-side apply tracks field ownership
//!   per item. As an atomic list, a client-side `kubectl apply` owned the whole list (defaults
//!   filled in by the server included) and the next server-side apply (Argo CD, Flux)
//!   conflicted with it.

use serde_json::{Map, Value};

/// The formats kube-apiserver's apiextensions validation knows; any other draws a warning.
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

/// Key of the map-typed lists.
const LIST_KEY: &str = "name";

/// Applies every fix to `schema` and, recursively, to each schema inside it.
pub fn fix(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    if let Some(Value::String(text)) = map.get_mut("description") {
        *text = join_lines(text);
    }
    if map
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|format| !KNOWN_FORMATS.contains(&format))
    {
        map.remove("format");
    }
    if is_keyed_list(map) {
        map.insert("x-kubernetes-list-type".into(), "map".into());
        map.insert("x-kubernetes-list-map-keys".into(), vec![LIST_KEY].into());
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            // Sub-schemas by name, or a list of them.
            "properties" | "patternProperties" | "definitions" => {
                if let Value::Object(children) = value {
                    children.values_mut().for_each(fix);
                }
            }
            "items" | "additionalProperties" | "not" => fix(value),
            "allOf" | "anyOf" | "oneOf" => {
                if let Value::Array(children) = value {
                    children.iter_mut().for_each(fix);
                }
            }
            // Defaults, enums, examples and CEL rules are data.
            _ => {}
        }
    }
}

/// An array of objects that require a `name` and is not already given a list type.
fn is_keyed_list(map: &Map<String, Value>) -> bool {
    if map.get("type").and_then(Value::as_str) != Some("array")
        || map.contains_key("x-kubernetes-list-type")
    {
        return false;
    }
    let Some(items) = map.get("items") else {
        return false;
    };
    let has_name = items
        .pointer(&format!("/properties/{LIST_KEY}/type"))
        .and_then(Value::as_str)
        == Some("string");
    let requires_name = items
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|required| required.iter().any(|r| r == LIST_KEY));
    has_name && requires_name
}

/// `text` with the line breaks inside paragraphs replaced by spaces. A blank line ends a
/// paragraph; a line that starts a list item (`- `, `* `, `1. `) or is indented starts a new
/// line.
pub fn join_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous_blank = true;
    for line in text.lines() {
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            if !previous_blank {
                out.push_str("\n\n");
            }
            previous_blank = true;
            continue;
        }
        if !previous_blank {
            if starts_own_line(trimmed) {
                out.push('\n');
            } else {
                out.push(' ');
            }
        }
        out.push_str(trimmed);
        previous_blank = false;
    }
    out.trim_end().to_owned()
}

fn starts_own_line(line: &str) -> bool {
    let list_number = line
        .split_once(". ")
        .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    line.starts_with("- ")
        || line.starts_with("* ")
        || line.starts_with(' ')
        || line.starts_with('|')
        || list_number
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_of_a_paragraph_are_joined_and_paragraphs_and_list_items_stay() {
        let text = "Input streams. All sources must have the same\nnumber of partitions.\n\nSteps:\n- first\n- second\n1. one";
        assert_eq!(
            join_lines(text),
            "Input streams. All sources must have the same number of partitions.\n\nSteps:\n- first\n- second\n1. one"
        );
    }

    #[test]
    fn unknown_formats_are_dropped_and_their_bounds_kept() {
        let mut schema = json!({"type": "object", "properties": {
            "a": {"type": "integer", "format": "uint64", "minimum": 0},
            "b": {"type": "array", "items": {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 10}},
            "c": {"type": "integer", "format": "int32"},
            "d": {"anyOf": [{"type": "integer", "format": "uint8"}, {"type": "string"}]},
        }});
        fix(&mut schema);
        assert_eq!(
            schema["properties"]["a"],
            json!({"type": "integer", "minimum": 0})
        );
        assert_eq!(
            schema["properties"]["b"]["items"],
            json!({"type": "integer", "minimum": 0, "maximum": 10})
        );
        assert_eq!(schema["properties"]["c"]["format"], "int32");
        assert_eq!(
            schema["properties"]["d"]["anyOf"][0],
            json!({"type": "integer"})
        );
    }

    #[test]
    fn lists_whose_items_require_a_name_become_maps_keyed_by_name() {
        let item = |required: Value| {
            json!({"type": "object", "required": required, "properties": {
                "name": {"type": "string"}, "topic": {"type": "string"}}})
        };
        let mut schema = json!({"type": "object", "properties": {
            "sources": {"type": "array", "items": item(json!(["name", "topic"]))},
            "optional": {"type": "array", "items": item(json!(["topic"]))},
            "tags": {"type": "array", "items": {"type": "string"}},
            "set": {"type": "array", "x-kubernetes-list-type": "set", "items": item(json!(["name"]))},
        }});
        fix(&mut schema);
        let properties = &schema["properties"];
        assert_eq!(properties["sources"]["x-kubernetes-list-type"], "map");
        assert_eq!(
            properties["sources"]["x-kubernetes-list-map-keys"],
            json!(["name"])
        );
        assert!(properties["optional"]
            .get("x-kubernetes-list-type")
            .is_none());
        assert!(properties["tags"].get("x-kubernetes-list-type").is_none());
        assert_eq!(properties["set"]["x-kubernetes-list-type"], "set");
    }
}
