//! Defaulting (`structuraldefaulting.Default` followed by
//! `PruneNonNullableNullsWithoutDefaults`).

use serde_json::Value;

use super::node::{Additional, Node};

/// Applies `default`s for absent fields and non-nullable nulls, recursively (inside list
/// items and map values too), then drops the non-nullable nulls that have no default.
pub fn apply(node: &Node, v: &mut Value) {
    default(node, v);
    prune_nulls(node, v);
}

fn non_nullable_null(v: &Value, node: &Node) -> bool {
    v.is_null() && !node.nullable
}

fn default(node: &Node, v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, prop) in &node.properties {
                let Some(d) = &prop.default else { continue };
                match map.get(k) {
                    Some(existing) if !non_nullable_null(existing, prop) => {}
                    _ => {
                        map.insert(k.clone(), d.clone());
                    }
                }
            }
            for (k, child) in map.iter_mut() {
                if let Some(p) = node.properties.get(k) {
                    default(p, child);
                } else if let Some(Additional::Schema(s)) = &node.additional {
                    if non_nullable_null(child, s)
                        && let Some(d) = &s.default
                    {
                        *child = d.clone();
                    }
                    default(s, child);
                }
            }
        }
        Value::Array(items) => {
            let Some(item_node) = &node.items else { return };
            for item in items.iter_mut() {
                if non_nullable_null(item, item_node)
                    && let Some(d) = &item_node.default
                {
                    *item = d.clone();
                }
                default(item_node, item);
            }
        }
        _ => {}
    }
}

fn prune_nulls(node: &Node, v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, child| {
                let schema = node.properties.get(k).or(match &node.additional {
                    Some(Additional::Schema(s)) => Some(s.as_ref()),
                    _ => None,
                });
                !matches!(schema, Some(s) if s.default.is_none() && non_nullable_null(child, s))
            });
            for (k, child) in map.iter_mut() {
                if let Some(s) = node.property(k) {
                    prune_nulls(s, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_node) = &node.items {
                for item in items.iter_mut() {
                    prune_nulls(item_node, item);
                }
            }
        }
        _ => {}
    }
}
