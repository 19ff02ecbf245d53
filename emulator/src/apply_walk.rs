//! Typed walks over JSON objects for server-side apply: the field set of a value, merging an
//! applied configuration into a live object, comparing two objects, and removing paths.
//!
//! Types come from `patch_meta` for built-in kinds and from the CRD schema's
//! `x-kubernetes-list-map-keys` (through a callback) for everything else.

use serde_json::{Map, Value};

use crate::apply_fieldset::{FieldSet, Path, Pe};
use crate::patch_meta::{self, Shape, SsaList};

/// The list-map-keys callback: schema path of field names (list items skipped) to keys.
pub type ListMapKeys<'a> = &'a dyn Fn(&[String]) -> Option<Vec<String>>;

/// How server-side apply treats one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A struct or map merged field by field (or a scalar).
    Granular,
    /// Owned and replaced as a whole.
    Atomic,
    List(SsaList),
}

/// Type knowledge for one object kind.
pub struct Schema<'a> {
    root: Option<&'static str>,
    list_map_keys: ListMapKeys<'a>,
}

/// Where a walk is: the built-in type (if known) and the schema path.
#[derive(Debug, Clone)]
pub struct Cur {
    ty: &'static str,
    root: bool,
    path: Vec<String>,
}

impl<'a> Schema<'a> {
    pub fn new(group: &str, kind: &str, list_map_keys: ListMapKeys<'a>) -> Self {
        Schema {
            root: patch_meta::root_type(group, kind),
            list_map_keys,
        }
    }

    /// The schema for an object, from its own `apiVersion` and `kind`.
    pub fn for_object(obj: &Value, list_map_keys: ListMapKeys<'a>) -> Self {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        Self::new(group, kind, list_map_keys)
    }

    pub fn root(&self) -> Cur {
        Cur {
            ty: self.root.unwrap_or(""),
            root: true,
            path: Vec::new(),
        }
    }

    /// The cursor and kind of `field` under `cur`, given the field's value (for unknown fields,
    /// lists are looked up in the CRD schema and are atomic if it says nothing).
    pub fn child(&self, cur: &Cur, field: &str, value: Option<&Value>) -> (Cur, Kind) {
        let meta = patch_meta::field(cur.ty, field, cur.root);
        let mut path = cur.path.clone();
        path.push(field.to_string());
        let kind = match meta.shape {
            Shape::Atomic => Kind::Atomic,
            Shape::List { ssa, .. } => Kind::List(ssa.to_list()),
            Shape::Granular if patch_meta::type_is_atomic(meta.ty) => Kind::Atomic,
            Shape::Granular => match value {
                Some(Value::Array(_)) => match (self.list_map_keys)(&path) {
                    Some(keys) if !keys.is_empty() => Kind::List(SsaList::Map(keys)),
                    _ => Kind::List(SsaList::Atomic),
                },
                _ => Kind::Granular,
            },
        };
        (
            Cur {
                ty: meta.ty,
                root: false,
                path,
            },
            kind,
        )
    }
}

/// The `k:` element of an associative list item. Missing key fields take their OpenAPI
/// default where one exists (`protocol: TCP`), like structured-merge-diff does.
pub fn item_key(item: &Value, keys: &[String]) -> Result<Pe, String> {
    let Value::Object(m) = item else {
        return Err("associative list with keys has an element that is not a map".into());
    };
    let mut fields = Vec::with_capacity(keys.len());
    for k in keys {
        let v = match (m.get(k), k.as_str()) {
            (Some(v), _) => v.clone(),
            (None, "protocol") => Value::String("TCP".into()),
            (None, _) => {
                return Err(format!(
                    "associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                ));
            }
        };
        fields.push((k.clone(), v));
    }
    Ok(Pe::key(&fields))
}

fn item_pe(item: &Value, list: &SsaList) -> Result<Pe, String> {
    match list {
        SsaList::Map(keys) => item_key(item, keys),
        SsaList::Set => Ok(Pe::value(item)),
        SsaList::Atomic => Err("atomic lists have no item paths".into()),
    }
}

fn prefix_err(path: &Path, msg: String) -> String {
    if path.is_empty() {
        msg
    } else {
        format!("{}: {msg}", crate::apply_fieldset::path_string(path))
    }
}

/// The set of fields a value sets (structured-merge-diff `ToFieldSet`).
pub fn to_field_set(schema: &Schema, v: &Value) -> Result<FieldSet, String> {
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    walk_set(
        schema,
        v,
        &schema.root(),
        &Kind::Granular,
        &mut path,
        &mut out,
    )?;
    Ok(out)
}

fn walk_set(
    schema: &Schema,
    v: &Value,
    cur: &Cur,
    kind: &Kind,
    path: &mut Path,
    out: &mut FieldSet,
) -> Result<(), String> {
    match (v, kind) {
        (Value::Object(m), Kind::Granular) => {
            for (k, child) in m {
                let (c, ck) = schema.child(cur, k, Some(child));
                path.push(Pe::Field(k.clone()));
                walk_set(schema, child, &c, &ck, path, out)?;
                let empty_map = child.as_object().is_some_and(Map::is_empty);
                if child.is_null() || empty_map {
                    out.insert(path.clone());
                }
                path.pop();
            }
        }
        (Value::Array(items), Kind::List(list @ (SsaList::Map(_) | SsaList::Set))) => {
            let mut seen = std::collections::HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let pe = item_pe(item, list)
                    .map_err(|e| prefix_err(path, format!("element {i}: {e}")))?;
                if !seen.insert(pe.clone()) {
                    return Err(prefix_err(path, format!("duplicate entries for key {pe}")));
                }
                path.push(pe);
                out.insert(path.clone());
                if matches!(list, SsaList::Map(_)) {
                    walk_set(schema, item, cur, &Kind::Granular, path, out)?;
                }
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
    Ok(())
}

/// Merges `config` into `live` (structured-merge-diff `Merge`): config values win, granular maps
/// and associative lists are merged item by item, live items first then new ones.
pub fn merge(schema: &Schema, live: &Value, config: &Value) -> Result<Value, String> {
    merge_node(
        schema,
        Some(live),
        config,
        &schema.root(),
        &Kind::Granular,
        &mut Vec::new(),
    )
}

fn merge_node(
    schema: &Schema,
    live: Option<&Value>,
    config: &Value,
    cur: &Cur,
    kind: &Kind,
    path: &mut Path,
) -> Result<Value, String> {
    match (live, config, kind) {
        (Some(Value::Object(l)), Value::Object(c), Kind::Granular)
            if !(l.is_empty() && c.is_empty()) =>
        {
            let mut out = l.clone();
            for (k, cv) in c {
                let (cc, ck) = schema.child(cur, k, Some(cv));
                path.push(Pe::Field(k.clone()));
                let merged = merge_node(schema, l.get(k), cv, &cc, &ck, path)?;
                path.pop();
                out.insert(k.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (
            Some(Value::Array(l)),
            Value::Array(c),
            Kind::List(list @ (SsaList::Map(_) | SsaList::Set)),
        ) if !(l.is_empty() && c.is_empty()) => {
            let mut config_items: Vec<(Pe, &Value)> = Vec::with_capacity(c.len());
            for (i, item) in c.iter().enumerate() {
                let pe = item_pe(item, list)
                    .map_err(|e| prefix_err(path, format!("element {i}: {e}")))?;
                if config_items.iter().any(|(p, _)| *p == pe) {
                    return Err(prefix_err(path, format!("duplicate entries for key {pe}")));
                }
                config_items.push((pe, item));
            }
            let mut out = Vec::with_capacity(l.len().max(c.len()));
            let mut used = vec![false; config_items.len()];
            for item in l {
                // Live items we cannot identify are kept as they are.
                let Ok(pe) = item_pe(item, list) else {
                    out.push(item.clone());
                    continue;
                };
                match config_items.iter().position(|(p, _)| *p == pe) {
                    Some(i) if matches!(list, SsaList::Map(_)) => {
                        used[i] = true;
                        path.push(pe);
                        out.push(merge_node(
                            schema,
                            Some(item),
                            config_items[i].1,
                            cur,
                            &Kind::Granular,
                            path,
                        )?);
                        path.pop();
                    }
                    Some(i) => {
                        used[i] = true;
                        out.push(config_items[i].1.clone());
                    }
                    None => out.push(item.clone()),
                }
            }
            for (i, (_, item)) in config_items.iter().enumerate() {
                if !used[i] {
                    out.push((*item).clone());
                }
            }
            Ok(Value::Array(out))
        }
        _ => Ok(config.clone()),
    }
}

/// What changed between two objects (structured-merge-diff `Compare`).
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    pub fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

pub fn compare(schema: &Schema, old: &Value, new: &Value) -> Comparison {
    let mut c = Comparison::default();
    compare_node(
        schema,
        Some(old),
        Some(new),
        &schema.root(),
        &Kind::Granular,
        &mut Vec::new(),
        &mut c,
    );
    c
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn compare_node(
    schema: &Schema,
    old: Option<&Value>,
    new: Option<&Value>,
    cur: &Cur,
    kind: &Kind,
    path: &mut Path,
    c: &mut Comparison,
) {
    let leaf = |c: &mut Comparison, path: &Path| match (old, new) {
        (None, Some(_)) => c.added.insert(path.clone()),
        (Some(_), None) => c.removed.insert(path.clone()),
        (Some(a), Some(b)) if a != b => c.modified.insert(path.clone()),
        _ => {}
    };
    let both_empty = is_empty_container(old) && is_empty_container(new);
    let granular_map = matches!(kind, Kind::Granular)
        && (old.is_some_and(Value::is_object) || new.is_some_and(Value::is_object))
        && old.is_none_or(Value::is_object)
        && new.is_none_or(Value::is_object);
    let granular_list = match kind {
        Kind::List(SsaList::Map(_) | SsaList::Set) => {
            (old.is_some_and(Value::is_array) || new.is_some_and(Value::is_array))
                && old.is_none_or(Value::is_array)
                && new.is_none_or(Value::is_array)
        }
        _ => false,
    };
    if both_empty || !(granular_map || granular_list) {
        if !path.is_empty() {
            leaf(c, path);
        }
        return;
    }
    if !path.is_empty() {
        match (old, new) {
            (None, Some(_)) => c.added.insert(path.clone()),
            (Some(_), None) => c.removed.insert(path.clone()),
            _ => {}
        }
    }
    if granular_map {
        let empty = Map::new();
        let om = old.and_then(Value::as_object).unwrap_or(&empty);
        let nm = new.and_then(Value::as_object).unwrap_or(&empty);
        for (k, ov) in om {
            let (cc, ck) = schema.child(cur, k, Some(ov));
            path.push(Pe::Field(k.clone()));
            compare_node(schema, Some(ov), nm.get(k), &cc, &ck, path, c);
            path.pop();
        }
        for (k, nv) in nm {
            if om.contains_key(k) {
                continue;
            }
            let (cc, ck) = schema.child(cur, k, Some(nv));
            path.push(Pe::Field(k.clone()));
            compare_node(schema, None, Some(nv), &cc, &ck, path, c);
            path.pop();
        }
        return;
    }
    let Kind::List(list) = kind else { return };
    let items = |v: Option<&Value>| -> Vec<(Pe, Value)> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|i| item_pe(i, list).ok().map(|pe| (pe, i.clone())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let oi = items(old);
    let ni = items(new);
    let item_kind = match list {
        SsaList::Map(_) => Kind::Granular,
        _ => Kind::Atomic,
    };
    for (pe, ov) in &oi {
        path.push(pe.clone());
        let nv = ni.iter().find(|(p, _)| p == pe).map(|(_, v)| v);
        compare_node(schema, Some(ov), nv, cur, &item_kind, path, c);
        path.pop();
    }
    for (pe, nv) in &ni {
        if oi.iter().any(|(p, _)| p == pe) {
            continue;
        }
        path.push(pe.clone());
        compare_node(schema, None, Some(nv), cur, &item_kind, path, c);
        path.pop();
    }
}

/// Removes the value at `path` (with everything under it). Maps and lists the removal leaves
/// empty are removed too, as structured-merge-diff's `RemoveItems` turns them into nulls.
pub fn remove_path(schema: &Schema, obj: &mut Value, path: &[Pe]) {
    remove_at(schema, obj, path, &schema.root());
}

/// Returns true when `v` became empty because of the removal.
fn remove_at(schema: &Schema, v: &mut Value, path: &[Pe], cur: &Cur) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (first, v) {
        (Pe::Field(name), Value::Object(m)) => {
            if rest.is_empty() {
                if m.shift_remove(name).is_none() {
                    return false;
                }
            } else {
                let Some(child) = m.get_mut(name) else {
                    return false;
                };
                let (cc, _) = schema.child(cur, name, Some(child));
                if remove_at(schema, child, rest, &cc) {
                    m.shift_remove(name);
                } else {
                    return false;
                }
            }
            m.is_empty()
        }
        (pe @ (Pe::Key(_) | Pe::Value(_)), Value::Array(items)) => {
            let matches = |item: &Value| match pe {
                Pe::Key(_) => {
                    let keys: Vec<String> = pe
                        .key_fields()
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    item_key(item, &keys).is_ok_and(|k| k == *pe)
                }
                _ => Pe::value(item) == *pe,
            };
            let Some(i) = items.iter().position(matches) else {
                return false;
            };
            if !rest.is_empty() && !remove_at(schema, &mut items[i], rest, cur) {
                return false;
            }
            items.remove(i);
            items.is_empty()
        }
        (Pe::Index(i), Value::Array(items)) if *i < items.len() => {
            if !rest.is_empty() && !remove_at(schema, &mut items[*i], rest, cur) {
                return false;
            }
            items.remove(*i);
            items.is_empty()
        }
        _ => false,
    }
}

/// Drops `null` values inside objects (what decoding into typed objects or non-nullable CRD
/// fields does to the nulls an applied configuration may carry).
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apply_fieldset::path_string;

    fn none(_: &[String]) -> Option<Vec<String>> {
        None
    }

    fn paths(s: &FieldSet) -> Vec<String> {
        s.iter().map(|p| path_string(p)).collect()
    }

    #[test]
    fn field_set_of_a_deployment_config() {
        let schema = Schema::new("apps", "Deployment", &none);
        let cfg = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"app": "d"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}}
        });
        let set = to_field_set(&schema, &cfg).unwrap();
        assert_eq!(
            paths(&set),
            [
                ".apiVersion",
                ".kind",
                ".metadata.labels.app",
                ".metadata.name",
                ".spec.replicas",
                ".spec.selector",
                ".spec.template.spec.containers[name=\"c\"]",
                ".spec.template.spec.containers[name=\"c\"].image",
                ".spec.template.spec.containers[name=\"c\"].name",
                ".spec.template.spec.containers[name=\"c\"].ports[containerPort=80,protocol=\"TCP\"]",
                ".spec.template.spec.containers[name=\"c\"].ports[containerPort=80,protocol=\"TCP\"].containerPort",
            ]
        );
    }

    #[test]
    fn duplicate_and_keyless_items_are_errors() {
        let schema = Schema::new("", "Pod", &none);
        let dup = json!({"spec": {"containers": [{"name": "a"}, {"name": "a"}]}});
        let err = to_field_set(&schema, &dup).unwrap_err();
        assert_eq!(
            err,
            ".spec.containers: duplicate entries for key [name=\"a\"]"
        );
        let keyless = json!({"spec": {"containers": [{"image": "a"}]}});
        assert!(
            to_field_set(&schema, &keyless)
                .unwrap_err()
                .contains("omits key field \"name\"")
        );
    }

    #[test]
    fn crd_lists_use_the_schema_callback() {
        let keys = |p: &[String]| (p == ["status", "conditions"]).then(|| vec!["type".to_string()]);
        let schema = Schema::new("x.dev", "Thing", &keys);
        let live = json!({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "False"}], "list": [1, 2]}});
        let cfg = json!({"status": {"conditions": [{"type": "B", "status": "True"}, {"type": "C", "status": "True"}], "list": [3]}});
        let merged = merge(&schema, &live, &cfg).unwrap();
        assert_eq!(
            merged,
            json!({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}, {"type": "C", "status": "True"}], "list": [3]}})
        );
    }

    #[test]
    fn compare_reports_added_modified_removed() {
        let schema = Schema::new("", "ConfigMap", &none);
        let old = json!({"data": {"a": "1", "b": "2"}, "metadata": {"finalizers": ["x"]}});
        let new = json!({"data": {"a": "9", "c": "3"}, "metadata": {"finalizers": ["x", "y"]}});
        let c = compare(&schema, &old, &new);
        assert_eq!(paths(&c.modified), [".data.a"]);
        assert_eq!(paths(&c.added), [".data.c", ".metadata.finalizers[=\"y\"]"]);
        assert_eq!(paths(&c.removed), [".data.b"]);
    }

    #[test]
    fn remove_path_collapses_emptied_containers() {
        let schema = Schema::new("", "Pod", &none);
        let mut obj = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let key = item_key(&json!({"name": "c"}), &["name".to_string()]).unwrap();
        remove_path(
            &schema,
            &mut obj,
            &[
                Pe::Field("spec".into()),
                Pe::Field("containers".into()),
                key,
            ],
        );
        remove_path(
            &schema,
            &mut obj,
            &[
                Pe::Field("metadata".into()),
                Pe::Field("labels".into()),
                Pe::Field("a".into()),
            ],
        );
        assert_eq!(obj, json!({"metadata": {"name": "p"}}));
    }
}
