//! Table output (`as=Table;g=meta.k8s.io;v=v1`) built from printer columns, like
//! apiextensions-apiserver's `tableconvertor` and the handler's `includeObject` treatment.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::errors::go_number;
use super::jsonpath::JsonPath;

#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: Option<String>,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// `includeObject` query parameter of Table requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the query parameter; absent means `Metadata` (the server's default).
    pub fn parse(value: Option<&str>) -> Result<IncludeObject, String> {
        match value {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!("unrecognized includeObject value: {other:?}")),
        }
    }
}

/// List metadata carried by the Table itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableMeta {
    pub resource_version: Option<String>,
    pub continue_token: Option<String>,
    pub remaining_item_count: Option<i64>,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The column the apiserver serves when a CRD version defines none.
pub fn default_columns() -> Vec<PrinterColumn> {
    vec![PrinterColumn {
        name: "Age".to_string(),
        type_: "date".to_string(),
        format: None,
        description: CREATION_TIMESTAMP_DESCRIPTION.to_string(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".to_string(),
    }]
}

/// The printer columns of one entry of a CRD's `spec.versions`
/// (`additionalPrinterColumns`, or the default Age column when there are none).
pub fn columns_from_crd_version(version: &Value) -> Vec<PrinterColumn> {
    let cols: Vec<PrinterColumn> = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .filter_map(|c| {
                    let json_path = c.get("jsonPath").and_then(Value::as_str)?.to_string();
                    Some(PrinterColumn {
                        name: c.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                        type_: c.get("type").and_then(Value::as_str).unwrap_or("string").to_string(),
                        format: c.get("format").and_then(Value::as_str).filter(|f| !f.is_empty()).map(String::from),
                        description: c
                            .get("description")
                            .and_then(Value::as_str)
                            .filter(|d| !d.is_empty())
                            .map(String::from)
                            .unwrap_or_else(|| {
                                format!("Custom resource definition column (in JSONPath format): {json_path}")
                            }),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if cols.is_empty() {
        default_columns()
    } else {
        cols
    }
}

/// A Table of `objects` (one object for a GET, the items for a LIST), its metadata empty.
pub fn to_table(
    columns: &[PrinterColumn],
    objects: &[Value],
    include_object: IncludeObject,
) -> Value {
    to_table_with(
        columns,
        objects,
        include_object,
        &TableMeta::default(),
        Utc::now(),
    )
}

/// A Table with list metadata, ages computed against `now`.
pub fn to_table_with(
    columns: &[PrinterColumn],
    objects: &[Value],
    include_object: IncludeObject,
    meta: &TableMeta,
    now: DateTime<Utc>,
) -> Value {
    let defaults;
    let columns = if columns.is_empty() {
        defaults = default_columns();
        &defaults[..]
    } else {
        columns
    };
    let paths: Vec<Option<JsonPath>> = columns
        .iter()
        .map(|c| JsonPath::parse(&c.json_path).ok())
        .collect();

    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0
    })];
    defs.extend(columns.iter().map(|c| {
        json!({
            "name": c.name,
            "type": c.type_,
            "format": c.format.clone().unwrap_or_default(),
            "description": c.description,
            "priority": c.priority,
        })
    }));

    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut cells = vec![
                obj.pointer("/metadata/name")
                    .cloned()
                    .unwrap_or(Value::String(String::new())),
            ];
            for (col, path) in columns.iter().zip(&paths) {
                let value = path.as_ref().and_then(|p| p.find(obj).into_iter().next());
                cells.push(match value {
                    None | Some(Value::Null) => Value::Null,
                    Some(v) => cell(&col.type_, v, now),
                });
            }
            let object = match include_object {
                IncludeObject::None => Value::Null,
                IncludeObject::Object => obj.clone(),
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                }),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();

    let mut table_meta = Map::new();
    if let Some(rv) = &meta.resource_version {
        table_meta.insert("resourceVersion".into(), Value::String(rv.clone()));
    } else if objects.len() == 1
        && let Some(rv) = objects[0].pointer("/metadata/resourceVersion")
    {
        table_meta.insert("resourceVersion".into(), rv.clone());
    }
    if let Some(c) = meta.continue_token.as_ref().filter(|c| !c.is_empty()) {
        table_meta.insert("continue".into(), Value::String(c.clone()));
    }
    if let Some(n) = meta.remaining_item_count {
        table_meta.insert("remainingItemCount".into(), Value::from(n));
    }

    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": table_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// `cellForJSONValue`, with `string` columns printed as JSONPath prints values.
fn cell(type_: &str, v: &Value, now: DateTime<Utc>) -> Value {
    match type_ {
        "string" => Value::String(match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => go_number(n),
            Value::Bool(b) => b.to_string(),
            other => other.to_string(),
        }),
        "integer" => match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Value::from(i),
                None => n
                    .as_f64()
                    .map(|f| Value::from(f.trunc() as i64))
                    .unwrap_or(Value::Null),
            },
            _ => Value::Null,
        },
        "number" => match v {
            Value::Number(n) => Value::Number(n.clone()),
            _ => Value::Null,
        },
        "boolean" => match v {
            Value::Bool(b) => Value::Bool(*b),
            _ => Value::Null,
        },
        "date" => match v {
            Value::String(s) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Value::String(human_duration(
                    now.signed_duration_since(t.with_timezone(&Utc)),
                )),
                Err(_) => Value::String("<invalid>".to_string()),
            },
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// apimachinery's `duration.HumanDuration`: `5s`, `3m20s`, `4h`, `2d3h`, `1y10d`.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsr_version() -> Value {
        json!({"name": "v1alpha1", "additionalPrinterColumns": [
            {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Systems", "type": "integer", "jsonPath": ".status.systemCount", "priority": 1},
            {"name": "Due", "type": "date", "jsonPath": ".status.dueAt"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]})
    }

    #[test]
    fn table_like_the_apiserver() {
        let cols = columns_from_crd_version(&dsr_version());
        assert_eq!(cols.len(), 6);
        assert_eq!(
            cols[0].description,
            "Custom resource definition column (in JSONPath format): .spec.type"
        );
        let now = DateTime::parse_from_rfc3339("2024-05-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let obj = json!({"apiVersion": "privacy-operator.dev/v1alpha1", "kind": "DataSubjectRequest",
            "metadata": {"name": "r1", "namespace": "ns", "resourceVersion": "7", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"type": "Erasure"},
            "status": {"phase": "Running", "systemCount": 3.0, "dueAt": "2024-05-03T11:58:30Z",
                "conditions": [{"type": "Ready", "status": "False"}]}});
        let meta = TableMeta {
            resource_version: Some("9".into()),
            ..Default::default()
        };
        let t = to_table_with(
            &cols,
            std::slice::from_ref(&obj),
            IncludeObject::Metadata,
            &meta,
            now,
        );
        assert_eq!(t["metadata"], json!({"resourceVersion": "9"}));
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["columnDefinitions"][4]["priority"], 1);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["r1", "Erasure", "Running", "False", 3, "90s", "2d1h"])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "r1");
        let t = to_table_with(
            &cols,
            std::slice::from_ref(&obj),
            IncludeObject::None,
            &TableMeta::default(),
            now,
        );
        assert_eq!(t["rows"][0]["object"], Value::Null);
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        let t = to_table_with(
            &cols,
            &[obj],
            IncludeObject::Object,
            &TableMeta::default(),
            now,
        );
        assert_eq!(t["rows"][0]["object"]["spec"]["type"], "Erasure");
    }

    #[test]
    fn default_age_column() {
        let cols = columns_from_crd_version(&json!({"name": "v1"}));
        assert_eq!(cols, default_columns());
        let now = DateTime::parse_from_rfc3339("2024-05-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-03T11:55:00Z"}});
        let t = to_table_with(&[], &[obj], IncludeObject::None, &TableMeta::default(), now);
        assert_eq!(t["rows"][0]["cells"], json!(["x", "5m"]));
    }

    #[test]
    fn human_durations() {
        let s = chrono::Duration::seconds;
        assert_eq!(human_duration(s(5)), "5s");
        assert_eq!(human_duration(s(200)), "3m20s");
        assert_eq!(human_duration(s(3600 * 4)), "4h");
        assert_eq!(human_duration(s(3600 * 4 + 60 * 5)), "4h5m");
        assert_eq!(human_duration(s(3600 * 30)), "30h");
        assert_eq!(human_duration(s(86400 * 3)), "3d");
        assert_eq!(human_duration(s(86400 * 400)), "400d");
        assert_eq!(human_duration(s(86400 * 365 * 3 + 86400 * 10)), "3y10d");
        assert_eq!(human_duration(s(-5)), "<invalid>");
    }
}
