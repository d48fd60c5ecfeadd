//! `meta.k8s.io/v1 Table` rendering, what `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! Like kube-apiserver for custom resources: a Name column, then the CRD's
//! `additionalPrinterColumns` (only those; without any, an Age column), with `date` columns shown
//! as ages (`5m`, `3h2m`). Built-in kinds get Name and Age only (the apiserver's per-kind printers
//! are not emulated). Pure.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::jsonpath;
use crate::resource::{PrinterColumn, ResourceDef};

/// What each row embeds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn columns(def: &ResourceDef) -> Vec<PrinterColumn> {
    if def.printer_columns.is_empty() {
        vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            priority: 0,
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        }]
    } else {
        def.printer_columns.clone()
    }
}

/// Renders `objects` as a Table.
pub fn render(
    def: &ResourceDef,
    objects: &[Value],
    resource_version: &str,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Value {
    let cols = columns(def);
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    definitions.extend(cols.iter().map(|c| {
        json!({"name": c.name, "type": c.type_, "format": "", "description": c.description, "priority": c.priority})
    }));
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object
                .pointer("/metadata/name")
                .cloned()
                .unwrap_or(Value::Null)];
            cells.extend(cols.iter().map(|c| cell(object, c, now)));
            let mut row = json!({ "cells": cells });
            match include {
                IncludeObject::None => {}
                IncludeObject::Object => row["object"] = object.clone(),
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn cell(object: &Value, column: &PrinterColumn, now: DateTime<Utc>) -> Value {
    let Some(value) = jsonpath::get(object, &column.json_path) else {
        return Value::Null;
    };
    match (column.type_.as_str(), value) {
        ("date", Value::String(ts)) => match DateTime::parse_from_rfc3339(ts) {
            Ok(t) => json!(human_duration((now - t.with_timezone(&Utc)).num_seconds())),
            Err(_) => json!(ts),
        },
        ("integer" | "number" | "boolean", v) => v.clone(),
        (_, Value::String(s)) => json!(s),
        (_, v) => json!(v.to_string()),
    }
}

/// Kubernetes' short human duration (`duration.HumanDuration`): `45s`, `5m10s`, `3h`, `2d5h`, `1y`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h) = (s / 60, s / 3600);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 && s % 60 != 0 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 && h % 24 != 0 => format!("{}d{}h", h / 24, h % 24),
        _ if h < 24 * 365 * 2 => format!("{}d", h / 24),
        _ if h < 24 * 365 * 8 => format!("{}y{}d", h / 24 / 365, (h / 24) % 365),
        _ => format!("{}y", h / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(310), "5m10s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(53 * 3600), "2d5h");
    }

    #[test]
    fn printer_columns_become_cells() {
        let mut def = crate::resource::builtins().remove(0);
        def.printer_columns = vec![
            PrinterColumn {
                name: "Ready".into(),
                type_: "string".into(),
                json_path: r#".status.conditions[?(@.type=="Ready")].status"#.into(),
                priority: 0,
                description: String::new(),
            },
            PrinterColumn {
                name: "Parallelism".into(),
                type_: "integer".into(),
                json_path: ".spec.parallelism".into(),
                priority: 0,
                description: String::new(),
            },
        ];
        let obj = json!({"metadata": {"name": "p"}, "spec": {"parallelism": 4},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let table = render(&def, &[obj], "7", IncludeObject::None, Utc::now());
        assert_eq!(table["rows"][0]["cells"], json!(["p", "True", 4]));
        assert_eq!(table["columnDefinitions"][2]["name"], "Parallelism");
    }
}
