//! The resource reference in Markdown (`docs/reference.md`), generated from the same CRD
//! schemas `kubectl explain` reads, so the two never disagree. Regenerate with
//! `privacy-operator crd --reference > docs/reference.md`; a test fails when it drifts.

use std::fmt::Write as _;

use serde_json::Value;

use super::crd::crds;

/// How deep the tables go; deeper fields are left to `kubectl explain`.
const MAX_DEPTH: usize = 5;

/// The whole reference document.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Resource reference\n\n\
         Generated from the CRD schemas by `privacy-operator crd --reference`; do not edit.\n\
         Every field is also explained on a cluster: `kubectl explain dsr.spec.subject`.\n",
    );
    for crd in crds() {
        let names = &crd.spec.names;
        let Some(version) = crd.spec.versions.first() else {
            continue;
        };
        let Some(schema) = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
        else {
            continue;
        };
        let short = names.short_names.clone().unwrap_or_default().join(", ");
        let _ = write!(
            out,
            "\n## {kind}\n\n`{group}/{version}`, namespaced, short name `{short}`.\n\n{desc}\n",
            kind = names.kind,
            group = crd.spec.group,
            version = version.name,
            desc = schema
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        if let Some(columns) = &version.additional_printer_columns {
            let cols: Vec<String> = columns.iter().map(|c| format!("`{}`", c.name)).collect();
            let _ = writeln!(out, "\n`kubectl get` columns: {}.", cols.join(", "));
        }
        for part in ["spec", "status"] {
            let Some(node) = schema.pointer(&format!("/properties/{part}")) else {
                continue;
            };
            let _ = writeln!(out, "\n### {}.{part}\n", names.kind);
            out.push_str("| field | type | description |\n| --- | --- | --- |\n");
            rows(node, part, 1, &mut out);
        }
    }
    out
}

fn rows(node: &Value, path: &str, depth: usize, out: &mut String) {
    let Some(props) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, child) in props {
        let field = format!("{path}.{name}");
        let mut ty = type_of(child);
        if required.contains(&name.as_str()) {
            ty.push_str(", required");
        }
        let _ = writeln!(out, "| `{field}` | {ty} | {} |", cell(child));
        if depth < MAX_DEPTH {
            let inner = child.get("items").unwrap_or(child);
            let inner_path = if child.get("items").is_some() {
                format!("{field}[]")
            } else {
                field
            };
            rows(inner, &inner_path, depth + 1, out);
        }
    }
}

fn type_of(node: &Value) -> String {
    if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return "int or string".into();
    }
    let base = node.get("type").and_then(Value::as_str).unwrap_or("object");
    match base {
        "array" => format!("[]{}", node.get("items").map(type_of).unwrap_or_default()),
        "object" if node.get("additionalProperties").is_some() => "map".into(),
        other => other.into(),
    }
}

/// A description fit for one table cell: first paragraph, pipes escaped, enum values listed.
fn cell(node: &Value) -> String {
    let desc = node
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let first = desc
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .replace('\n', " ")
        .replace('|', "\\|");
    let values = node.get("enum").or_else(|| node.pointer("/items/enum"));
    match values.and_then(Value::as_array) {
        Some(values) if !values.is_empty() => {
            let list: Vec<String> = values
                .iter()
                .filter_map(Value::as_str)
                .map(|v| format!("`{v}`"))
                .collect();
            format!("{first} One of: {}.", list.join(", "))
        }
        _ => first,
    }
}
