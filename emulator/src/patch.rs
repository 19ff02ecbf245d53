//! JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch for built-ins,
//! with kube-apiserver's error replies.
//!
//! Strategic merge patch follows k8s.io/apimachinery/pkg/util/strategicpatch (`mergeMap` with
//! `MergeParallelList` and `IgnoreUnmatchedNulls`, as the apiserver runs it); which list merges by
//! which key comes from `patch_meta`.

use serde_json::{Map, Value, json};

use crate::patch_meta::{self, SmpList};
use crate::resource::{PatchKind, ResourceInfo};
use crate::status::ApiError;

/// kube-apiserver refuses JSON patches with more operations than this.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// Applies an RFC 6902 patch. A malformed patch is `400 BadRequest`; an operation that cannot be
/// applied (including a failed `test`) is `422 Invalid` with the apiserver's generic message.
pub fn json_patch(doc: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let ops: Value =
        serde_json::from_slice(patch).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let count = match &ops {
        Value::Array(a) => a.len(),
        other => {
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
                go_json_kind(other)
            )));
        }
    };
    if count > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {count}"
            ),
        ));
    }
    let p: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &p).map_err(|e| {
        tracing::debug!(error = %e, "json patch could not be applied");
        rejected_request()
    })?;
    Ok(out)
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(doc: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let p: Value =
        serde_json::from_slice(patch).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !p.is_object() {
        // evanphx/json-patch refuses a merge patch that is not an object.
        return Err(ApiError::bad_request("Invalid JSON Patch"));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, &p);
    Ok(out)
}

/// Applies a strategic merge patch to a built-in object. Custom resources refuse it with
/// `415 UnsupportedMediaType` like kube-apiserver.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &[u8],
    info: &ResourceInfo,
) -> Result<Value, ApiError> {
    if info.patch_kind == PatchKind::Custom {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    let patch: Value =
        serde_json::from_slice(patch).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_json_kind(&patch)
        )));
    };
    let original = match doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let root = patch_meta::root_type(&info.group, &info.kind).unwrap_or("");
    let merged = merge_map(
        original,
        patch,
        Ty {
            name: root,
            root: true,
        },
    )
    .map_err(SmpError::into_api)?;
    Ok(Value::Object(merged))
}

/// The reply kube-apiserver gives when a patch cannot be applied (`NewGenericServerResponse(422)`).
fn rejected_request() -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
    )
    .with_details(json!({}))
}

fn go_json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Strategic merge patch failures, classified like the apiserver's
/// `interpretStrategicMergePatchError`.
#[derive(Debug)]
enum SmpError {
    /// Malformed directives: 400.
    BadRequest(&'static str),
    /// Lists of lists, retainKeys mismatch: 422 with the generic message.
    Invalid,
    /// Anything else surfaces as a 500 with the error text.
    Other(String),
}

impl SmpError {
    fn into_api(self) -> ApiError {
        match self {
            SmpError::BadRequest(m) => ApiError::bad_request(m),
            SmpError::Invalid => rejected_request(),
            SmpError::Other(m) => ApiError::internal(m),
        }
    }

    fn bad_primitive_list() -> Self {
        SmpError::BadRequest("invalid patch format of primitive list")
    }

    fn bad_retain_keys() -> Self {
        SmpError::BadRequest("invalid patch format of retainKeys")
    }

    fn bad_set_element_order() -> Self {
        SmpError::BadRequest("invalid patch format of setElementOrder list")
    }

    fn no_merge_key(m: &Map<String, Value>, key: &str) -> Self {
        SmpError::Other(format!(
            "map: {} does not contain declared merge key: {key}",
            go_map(m)
        ))
    }

    fn bad_arg(expected: &str, actual: &Value) -> Self {
        SmpError::Other(format!(
            "expected a {expected}, but received a {}",
            go_kind(actual)
        ))
    }
}

/// Go's `%v` of a map, for error texts that quote patch content.
fn go_map(m: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("{k}:{}", go_value(&m[k.as_str()])))
        .collect();
    format!("map[{}]", parts.join(" "))
}

fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Object(m) => go_map(m),
        Value::Array(a) => format!("[{}]", a.iter().map(go_value).collect::<Vec<_>>().join(" ")),
        other => other.to_string(),
    }
}

fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// Where we are in the built-in type graph.
#[derive(Debug, Clone, Copy)]
struct Ty {
    name: &'static str,
    root: bool,
}

impl Ty {
    fn field(self, key: &str) -> (Ty, patch_meta::FieldMeta) {
        let meta = patch_meta::field(self.name, key, self.root);
        (
            Ty {
                name: meta.ty,
                root: false,
            },
            meta,
        )
    }
}

fn smp_strategy(meta: &patch_meta::FieldMeta) -> SmpList {
    match meta.shape {
        patch_meta::Shape::List { smp, .. } => smp,
        _ => SmpList::Replace,
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    t: Ty,
) -> Result<Map<String, Value>, SmpError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.shift_remove(DIRECTIVE);
                // The replacement is taken as is; nested directives are processed against nothing.
                merge_map(Map::new(), patch, t)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(SmpError::Other(format!(
                "unknown patch type: {} in map: {}",
                go_value(directive),
                go_map(&patch)
            ))),
        };
    }

    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order(&mut original, &mut patch, t)?;

    for (key, patch_v) in patch {
        let (key, is_delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some(rest) => match rest.strip_prefix('/') {
                Some(k) if !k.is_empty() => (k.to_string(), true),
                _ => return Err(SmpError::bad_primitive_list()),
            },
            None => (key, false),
        };

        if patch_v.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let (child_ty, meta) = t.field(&key);
        let Some(orig_v) = original.shift_remove(&key) else {
            if !is_delete_list {
                // Nothing to merge with: process the directives the value may carry.
                original.insert(key, merge_value(None, patch_v, child_ty, &meta, false)?);
            }
            continue;
        };
        let merged = merge_value(Some(orig_v), patch_v, child_ty, &meta, is_delete_list)?;
        original.insert(key, merged);
    }
    Ok(original)
}

/// Merges one field's value. `original` is `None` when the live object lacks the field.
fn merge_value(
    original: Option<Value>,
    patch: Value,
    t: Ty,
    meta: &patch_meta::FieldMeta,
    is_delete_list: bool,
) -> Result<Value, SmpError> {
    match (original, patch) {
        (Some(Value::Object(o)), Value::Object(p)) => Ok(Value::Object(merge_map(o, p, t)?)),
        (None, Value::Object(p)) => Ok(Value::Object(merge_map(Map::new(), p, t)?)),
        (Some(Value::Array(o)), Value::Array(p)) => Ok(Value::Array(merge_slice(
            o,
            p,
            t,
            smp_strategy(meta),
            is_delete_list,
        )?)),
        (None, Value::Array(p)) => Ok(Value::Array(merge_slice(
            Vec::new(),
            p,
            t,
            smp_strategy(meta),
            false,
        )?)),
        // Different kinds of value, or scalars: the patch wins.
        (_, p) => Ok(p),
    }
}

fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), SmpError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(SmpError::bad_retain_keys());
    };
    let keep = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !keep(k) {
            return Err(SmpError::bad_retain_keys());
        }
    }
    original.retain(|k, _| keep(k));
    Ok(())
}

/// Processes `$setElementOrder/<list>` directives: merges the list they name and orders the
/// result by the directive (then by patch order, then by live order).
fn merge_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    t: Ty,
) -> Result<(), SmpError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive_key in keys {
        let Some(order) = patch.shift_remove(&directive_key) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(SmpError::bad_arg("slice", &order));
        };
        let list_key = match directive_key.split_once('/') {
            Some((SET_ELEMENT_ORDER, k)) => k.to_string(),
            _ => return Err(SmpError::bad_set_element_order()),
        };
        let original_list = match original.get(&list_key) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(SmpError::bad_arg("slice", other)),
        };
        let patch_list = match patch.get(&list_key) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(SmpError::bad_arg("slice", other)),
        };
        let (child_ty, meta) = t.field(&list_key);
        let strategy = smp_strategy(&meta);
        let merge_key = match strategy {
            SmpList::MergeByKey(k) => k,
            _ => "",
        };
        if let Some(p) = &patch_list {
            validate_patch_with_set_order(p, &order, merge_key)?;
        }
        let merged = match (&original_list, patch_list) {
            (Some(o), None) => o.clone(),
            (None, Some(p)) => merge_slice(Vec::new(), p, child_ty, strategy, false)?,
            (Some(o), Some(p)) => merge_slice(o.clone(), p, child_ty, strategy, false)?,
            (None, None) => continue,
        };
        let maps = merged.iter().any(Value::is_object);
        let key = if maps { merge_key } else { "" };
        let (in_order, server_only) = partition_by_presence(merged, &order, key)?;
        let server_order = original_list.unwrap_or_default();
        let both = normalize_element_order(in_order, server_only, &order, &server_order, key)?;
        original.insert(list_key.clone(), Value::Array(both));
        patch.shift_remove(&list_key);
    }
    Ok(())
}

/// The relative order of the patch list's items must match the `$setElementOrder` list.
fn validate_patch_with_set_order(
    patch_list: &[Value],
    order: &[Value],
    merge_key: &str,
) -> Result<(), SmpError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = if merge_key.is_empty() {
        patch_list.iter().collect()
    } else {
        patch_list.iter().filter(|v| !is_delete_item(v)).collect()
    };
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        if has_directive(non_delete[pi]) {
            pi += 1;
            continue;
        }
        if merge_key_equal(non_delete[pi], &order[oi], merge_key)? {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() && oi >= order.len() {
        return Err(SmpError::Other(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            go_value(&Value::Array(patch_list.to_vec())),
            go_value(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn merge_key_equal(left: &Value, right: &Value, merge_key: &str) -> Result<bool, SmpError> {
    if merge_key.is_empty() {
        return Ok(left == right);
    }
    let (Value::Object(l), Value::Object(r)) = (left, right) else {
        return Err(SmpError::bad_arg(
            "map",
            if left.is_object() { right } else { left },
        ));
    };
    let lv = l
        .get(merge_key)
        .ok_or_else(|| SmpError::no_merge_key(l, merge_key))?;
    let rv = r
        .get(merge_key)
        .ok_or_else(|| SmpError::no_merge_key(r, merge_key))?;
    Ok(lv == rv)
}

fn has_directive(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.contains_key(DIRECTIVE))
}

fn is_delete_item(v: &Value) -> bool {
    v.as_object()
        .and_then(|m| m.get(DIRECTIVE))
        .and_then(Value::as_str)
        == Some("delete")
}

fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    item_ty: Ty,
    strategy: SmpList,
    is_delete_list: bool,
) -> Result<Vec<Value>, SmpError> {
    let merge_key = match strategy {
        SmpList::Replace => {
            // No merge strategy: the patch list replaces, but its items' directives still apply.
            return patch
                .into_iter()
                .map(|v| match v {
                    Value::Object(m) => merge_map(Map::new(), m, item_ty).map(Value::Object),
                    other => Ok(other),
                })
                .collect();
        }
        SmpList::MergeScalars => "",
        SmpList::MergeByKey(k) => k,
    };
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let maps = element_kind_is_map(&original, &patch)?;

    // `server_order` is the live list after deletions, before patch items are added.
    let (merged, patch_order, server_order, key) = if !maps {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.contains(v))
                .collect());
        }
        let mut both: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !both.contains(v) {
                both.push(v.clone());
            }
        }
        (both, patch, original, "")
    } else {
        if merge_key.is_empty() {
            return Err(SmpError::Other(
                "cannot merge lists without merge key for type map".into(),
            ));
        }
        let (original, patch) = merge_slice_special_elements(original, patch, merge_key)?;
        let merged =
            merge_slice_plain_elements(original.clone(), patch.clone(), merge_key, item_ty)?;
        (merged, patch, original, merge_key)
    };
    let (in_patch, server_only) = partition_by_presence(merged, &patch_order, key)?;
    normalize_element_order(in_patch, server_only, &patch_order, &server_order, key)
}

/// All items must have the same JSON kind, and lists of lists are refused.
fn element_kind_is_map(original: &[Value], patch: &[Value]) -> Result<bool, SmpError> {
    let mut kind: Option<&'static str> = None;
    for v in original.iter().chain(patch.iter()) {
        if v.is_array() {
            return Err(SmpError::Invalid);
        }
        let k = go_kind(v);
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(SmpError::Other(format!(
                    "list element types are not identical: [{} {}]",
                    go_value(&Value::Array(original.to_vec())),
                    go_value(&Value::Array(patch.to_vec()))
                )));
            }
            Some(_) => {}
        }
    }
    Ok(kind == Some("map"))
}

/// Handles `$patch: delete|replace|merge` items of a merging list of maps.
fn merge_slice_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for v in patch {
        let Value::Object(m) = &v else {
            return Err(SmpError::bad_arg("map", &v));
        };
        match m.get(DIRECTIVE) {
            None => plain.push(v),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let key_value = m
                        .get(merge_key)
                        .ok_or_else(|| SmpError::no_merge_key(m, merge_key))?;
                    for item in &original {
                        if !item.is_object() {
                            return Err(SmpError::Other(format!(
                                "value for key {merge_key} is not a map."
                            )));
                        }
                    }
                    original.retain(|item| item.get(merge_key) != Some(key_value));
                }
                Some("replace") => replace = true,
                Some("merge") => {
                    return Err(SmpError::Other(
                        "merging lists cannot yet be specified in the patch".into(),
                    ));
                }
                _ => {
                    return Err(SmpError::Other(format!(
                        "unknown patch type: {} in map: {}",
                        go_value(d),
                        go_map(m)
                    )));
                }
            },
        }
    }
    if replace {
        Ok((plain, Vec::new()))
    } else {
        Ok((original, plain))
    }
}

fn merge_slice_plain_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
    item_ty: Ty,
) -> Result<Vec<Value>, SmpError> {
    for v in patch {
        let Value::Object(pm) = v else {
            return Err(SmpError::bad_arg("map", &v));
        };
        let key_value = pm
            .get(merge_key)
            .ok_or_else(|| SmpError::no_merge_key(&pm, merge_key))?
            .clone();
        let mut found = None;
        for (i, item) in original.iter().enumerate() {
            let Value::Object(om) = item else {
                return Err(SmpError::Other(format!("value for key {i} is not a map.")));
            };
            if om.get(merge_key) == Some(&key_value) {
                found = Some(i);
                break;
            }
        }
        match found {
            Some(i) => {
                let Value::Object(om) = std::mem::take(&mut original[i]) else {
                    unreachable!("checked above")
                };
                original[i] = Value::Object(merge_map(om, pm, item_ty)?);
            }
            None => original.push(Value::Object(merge_map(Map::new(), pm, item_ty)?)),
        }
    }
    Ok(original)
}

/// The identity of a list item for ordering: its merge key value, or the item itself.
fn identity<'a>(v: &'a Value, merge_key: &str) -> Option<&'a Value> {
    if merge_key.is_empty() {
        Some(v)
    } else {
        v.as_object().and_then(|m| m.get(merge_key))
    }
}

fn index_of(list: &[Value], v: &Value, merge_key: &str) -> Option<usize> {
    let id = identity(v, merge_key)?;
    list.iter().position(|x| identity(x, merge_key) == Some(id))
}

/// Splits `items` into those present in `by` and the rest, keeping their order.
fn partition_by_presence(
    items: Vec<Value>,
    by: &[Value],
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), SmpError> {
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for v in items {
        if !merge_key.is_empty() {
            let Value::Object(m) = &v else {
                return Err(SmpError::bad_arg("map", &v));
            };
            if !m.contains_key(merge_key) {
                return Err(SmpError::no_merge_key(m, merge_key));
            }
        }
        if index_of(by, &v, merge_key).is_some() {
            present.push(v)
        } else {
            absent.push(v)
        }
    }
    Ok((present, absent))
}

/// Orders patch items by `patch_order` and server-only items by `server_order`, then
/// interleaves them keeping both relative orders (`normalizeElementOrder`).
fn normalize_element_order(
    patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
) -> Result<Vec<Value>, SmpError> {
    let patch = normalize_slice_order(patch, patch_order, merge_key);
    let server_only = normalize_slice_order(server_only, server_order, merge_key);
    Ok(merge_sorted(server_only, patch, server_order, merge_key))
}

fn normalize_slice_order(items: Vec<Value>, order: &[Value], merge_key: &str) -> Vec<Value> {
    let (mut keep, deletes): (Vec<Value>, Vec<Value>) = if merge_key.is_empty() {
        (items, Vec::new())
    } else {
        items.into_iter().partition(|v| !is_delete_item(v))
    };
    // Items missing from `order` sort first, like the upstream comparator does.
    keep.sort_by_key(|v| index_of(order, v, merge_key).map_or(0, |i| i + 1));
    keep.extend(deletes);
    keep
}

fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: &str,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        match (l.peek(), r.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(l.next()),
            (None, Some(_)) => out.extend(r.next()),
            (Some(lv), Some(rv)) => {
                let li = index_of(server_order, lv, merge_key);
                let ri = index_of(server_order, rv, merge_key);
                let left_first = matches!((li, ri), (Some(a), Some(b)) if a < b);
                if left_first {
                    out.extend(l.next())
                } else {
                    out.extend(r.next())
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
