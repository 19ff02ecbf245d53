//! Pruning of unknown fields (`structuralpruning.PruneWithOptions`) and non-nullable nulls.

use serde_json::{Map, Value};

use super::node::{Additional, Node};

/// The fields of `metav1.ObjectMeta`; anything else under `metadata` is dropped.
pub const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Prunes `obj` (a whole custom resource) and returns the paths of the removed fields, sorted.
pub fn prune_object(root: &Node, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    if let Value::Object(map) = obj {
        prune_map(root, map, "", true, &mut pruned);
    }
    pruned.sort();
    pruned
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Drops unknown `metadata` fields of a resource root (the real server's ObjectMeta decoding).
fn prune_metadata(meta: &mut Map<String, Value>, path: &str, pruned: &mut Vec<String>) {
    let unknown: Vec<String> = meta
        .keys()
        .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in unknown {
        meta.remove(&k);
        pruned.push(join(path, &k));
    }
}

fn prune_value(node: Option<&Node>, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    match node {
        Some(n) if n.preserve_unknown => skip_prune(n, v, path, pruned),
        Some(n) => match v {
            Value::Object(map) => prune_map(n, map, path, n.embedded_resource, pruned),
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(n.items.as_deref(), item, &format!("{path}[{i}]"), pruned);
                }
            }
            _ => {}
        },
        None => match v {
            Value::Object(map) => {
                for k in map.keys() {
                    pruned.push(join(path, k));
                }
                map.clear();
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(None, item, &format!("{path}[{i}]"), pruned);
                }
            }
            _ => {}
        },
    }
}

/// Whether `k` is an `apiVersion`/`kind`/`metadata` field an embedded resource keeps.
fn is_kept_meta_field(k: &str, v: &Value) -> bool {
    match k {
        "apiVersion" | "kind" => v.is_string(),
        "metadata" => v.is_object(),
        _ => false,
    }
}

fn prune_map(
    node: &Node,
    map: &mut Map<String, Value>,
    path: &str,
    resource: bool,
    pruned: &mut Vec<String>,
) {
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        let child_path = join(path, &k);
        if resource && is_kept_meta_field(&k, &map[&k]) {
            if k == "metadata"
                && let Some(Value::Object(meta)) = map.get_mut("metadata")
            {
                prune_metadata(meta, &child_path, pruned);
            }
            continue;
        }
        if node.preserve_unknown {
            // The root keeps unknown fields but still prunes below known ones.
            if let Some(child) = node.property(&k)
                && let Some(v) = map.get_mut(&k)
            {
                prune_value(Some(child), v, &child_path, pruned);
            }
            continue;
        }
        let child = node.properties.get(&k).or(match &node.additional {
            Some(Additional::Schema(s)) => Some(s.as_ref()),
            _ => None,
        });
        match (child, &node.additional) {
            (Some(c), _) => {
                if let Some(v) = map.get_mut(&k) {
                    prune_value(Some(c), v, &child_path, pruned);
                }
            }
            (None, Some(Additional::Allows(true))) => {}
            (None, _) => {
                map.remove(&k);
                if !(path.is_empty() && META_FIELDS.contains(&k.as_str())) {
                    pruned.push(child_path);
                }
            }
        }
    }
}

/// `x-kubernetes-preserve-unknown-fields`: keep unknown fields, prune below known ones.
fn skip_prune(node: &Node, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if node.embedded_resource && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(n) = node.property(k) {
                    prune_value(Some(n), child, &join(path, k), pruned);
                }
            }
            if node.embedded_resource
                && let Some(Value::Object(meta)) = map.get_mut("metadata")
            {
                prune_metadata(meta, &join(path, "metadata"), pruned);
            }
        }
        Value::Array(items) => {
            if let Some(item_node) = &node.items {
                for (i, item) in items.iter_mut().enumerate() {
                    skip_prune(item_node, item, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}
