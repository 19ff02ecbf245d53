//! Server-side apply: field ownership in `metadata.managedFields`, conflicts and `force`, as
//! kube-apiserver's field manager does it (k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager
//! on top of sigs.k8s.io/structured-merge-diff).
//!
//! - `apply` merges an applied configuration into the live object; the applier's `Apply` entry
//!   becomes exactly the configuration's field set; fields it applied before and no longer does
//!   are removed unless another applier owns them; changing a value another manager owns is a
//!   `409 Conflict` unless `force`, which moves ownership.
//! - `record_update` gives a non-apply writer (`Update` entry) ownership of what it changed and
//!   takes those fields away from everybody else.
//!
//! Managers are keyed by (manager, operation, subresource, and apiVersion for updates).

use serde_json::{Map, Value, json};

use crate::apply_fieldset::{FieldSet, Pe, path_string};
use crate::apply_walk::{self, ListMapKeys, Schema};
use crate::status::ApiError;

/// What an apply request says besides its body.
pub struct ApplyContext<'a> {
    pub manager: &'a str,
    pub force: bool,
    /// `status` when applying to the status subresource.
    pub subresource: Option<&'a str>,
    /// True when the resource has a `/status` subresource: an apply to the main resource then
    /// ignores (neither merges nor owns) `status`, and an apply to `/status` only takes `status`,
    /// like kube-apiserver's reset fields.
    pub status_subresource: bool,
    /// RFC 3339 time to stamp on managedFields entries.
    pub now: &'a str,
    /// `x-kubernetes-list-map-keys` at a path of field names from the object root (list items
    /// skipped, e.g. `["status", "conditions"]`), from the CRD schema. Built-in kinds' lists are
    /// known without it.
    pub list_map_keys: &'a dyn Fn(&[String]) -> Option<Vec<String>>,
}

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";
const BEFORE_FIRST_APPLY: &str = "before-first-apply";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Update entries beyond this many are folded into one, like upstream's capManagersManager.
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    set: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: &str, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == subresource
            && (operation == APPLY || self.api_version == api_version)
    }

    /// How conflict messages name the manager (`printManager`).
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == UPDATE {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn decode(v: &Value) -> Result<Entry, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match v.get("fieldsType").and_then(Value::as_str) {
            Some("FieldsV1") | None => {}
            Some(other) => return Err(format!("invalid fieldsType {other:?}")),
        }
        let set = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f)?,
            None => FieldSet::new(),
        };
        Ok(Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource"),
            set,
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

fn decode_entries(obj: &Value) -> Vec<Entry> {
    let Some(items) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|v| match Entry::decode(v) {
            Ok(e) => Some(e),
            Err(err) => {
                tracing::warn!(error = %err, "ignoring an undecodable managedFields entry");
                None
            }
        })
        .collect()
}

/// Writes entries sorted like upstream (`Apply` before `Update`, then by time, manager, ...),
/// folding the oldest update entries when there are too many.
fn store_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    cap_update_entries(&mut entries);
    entries.sort_by(|a, b| {
        (
            &a.operation,
            a.time.as_deref().unwrap_or(""),
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                b.time.as_deref().unwrap_or(""),
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(meta) = obj
        .as_object_mut()
        .map(|m| m.entry("metadata").or_insert_with(|| json!({})))
    else {
        return;
    };
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::encode).collect()),
        );
    }
}

fn cap_update_entries(entries: &mut Vec<Entry>) {
    let updates = entries.iter().filter(|e| e.operation == UPDATE).count();
    if updates <= MAX_UPDATE_MANAGERS {
        return;
    }
    let mut update_idx: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].operation == UPDATE)
        .collect();
    update_idx.sort_by(|&a, &b| entries[a].time.cmp(&entries[b].time));
    // Keep MAX-1 newest plus the folded bucket.
    let fold: Vec<usize> = update_idx[..updates - (MAX_UPDATE_MANAGERS - 1)].to_vec();
    let mut bucket = Entry {
        manager: ANCIENT_CHANGES.into(),
        operation: UPDATE.into(),
        api_version: String::new(),
        time: None,
        subresource: String::new(),
        set: FieldSet::new(),
    };
    for &i in &fold {
        bucket.set = bucket.set.union(&entries[i].set);
        bucket.api_version = entries[i].api_version.clone();
        bucket.time = entries[i].time.clone();
    }
    let mut i = 0;
    entries.retain(|_| {
        let keep = !fold.contains(&i);
        i += 1;
        keep
    });
    if let Some(existing) = entries
        .iter_mut()
        .find(|e| e.manager == ANCIENT_CHANGES && e.operation == UPDATE)
    {
        existing.set = existing.set.union(&bucket.set);
    } else {
        entries.push(bucket);
    }
}

/// Paths the field manager never tracks (`stripMetaManager`).
fn strip(set: &mut FieldSet) {
    set.retain(|p| !is_stripped(p));
}

fn is_stripped(p: &[Pe]) -> bool {
    let field = |i: usize| match p.get(i) {
        Some(Pe::Field(f)) => f.as_str(),
        _ => "",
    };
    match (p.len(), field(0)) {
        (1, "apiVersion" | "kind" | "metadata") => true,
        (2, "metadata") => matches!(
            field(1),
            "name"
                | "namespace"
                | "creationTimestamp"
                | "selfLink"
                | "uid"
                | "clusterName"
                | "generation"
                | "managedFields"
                | "resourceVersion"
        ),
        _ => false,
    }
}

fn starts_with_field(p: &[Pe], name: &str) -> bool {
    matches!(p.first(), Some(Pe::Field(f)) if f == name)
}

/// The object without `metadata.managedFields`.
fn body(obj: &Value) -> Value {
    let mut b = obj.clone();
    if let Some(m) = b.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    b
}

/// An object of the same kind with nothing set: what creation is compared against.
fn empty_like(obj: &Value) -> Value {
    let mut m = Map::new();
    for k in ["apiVersion", "kind"] {
        if let Some(v) = obj.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    Value::Object(m)
}

/// Keeps only what an apply to this (sub)resource may set (the reset fields of the strategy).
fn filter_config(config: &Value, ctx: &ApplyContext) -> Value {
    let mut c = config.clone();
    let Some(m) = c.as_object_mut() else { return c };
    if ctx.subresource == Some("status") {
        m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| k == "name" || k == "namespace");
        }
    } else if ctx.status_subresource {
        m.shift_remove("status");
    }
    c
}

fn typed_patch_error(config: &Value, e: String) -> ApiError {
    let ns = config
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = config
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let gv = if api_version.contains('/') {
        api_version.to_string()
    } else {
        format!("/{api_version}")
    };
    let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
    ApiError::internal(format!(
        "failed to create typed patch object ({ns}/{name}; {gv}, Kind={kind}): {e}"
    ))
}

/// Server-side apply of `config` onto `live` (`None` creates). Returns the new object with
/// `metadata.managedFields` updated; identity and server-set metadata are the caller's job.
pub fn apply(live: Option<&Value>, config: &Value, ctx: &ApplyContext) -> Result<Value, ApiError> {
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration is not an object",
        ));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let result = apply_once(live, config, ctx, ctx.force);
    match result {
        Err(ApplyFailure::Conflicts(conflicts))
            if ctx.manager == "kubectl"
                && conflicts_allowed_by_last_applied(live, &conflicts, ctx) =>
        {
            // Upgrading from client-side apply: kubectl takes over what its last-applied
            // configuration holds (upstream lastAppliedManager).
            apply_once(live, config, ctx, true).map_err(ApplyFailure::into_api)
        }
        other => other.map_err(ApplyFailure::into_api),
    }
}

enum ApplyFailure {
    Api(ApiError),
    Conflicts(Vec<(Entry, Vec<Pe>)>),
}

impl ApplyFailure {
    fn into_api(self) -> ApiError {
        match self {
            ApplyFailure::Api(e) => e,
            ApplyFailure::Conflicts(c) => conflict_error(&c),
        }
    }
}

fn apply_once(
    live: Option<&Value>,
    config: &Value,
    ctx: &ApplyContext,
    force: bool,
) -> Result<Value, ApplyFailure> {
    let config = filter_config(config, ctx);
    let schema = Schema::for_object(&config, ctx.list_map_keys);
    let live_body = live.map(body).unwrap_or_else(|| json!({}));
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let subresource = ctx.subresource.unwrap_or("");

    let mut entries = live.map(decode_entries).unwrap_or_default();
    if let Some(live) = live
        && entries.is_empty()
    {
        // Fields set before anyone applied belong to a synthetic updater
        // (upstream skipNonAppliedManager).
        let mut set = apply_walk::compare(&schema, &empty_like(live), &live_body).added;
        strip(&mut set);
        entries.push(Entry {
            manager: BEFORE_FIRST_APPLY.into(),
            operation: UPDATE.into(),
            api_version: live
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or(&api_version)
                .to_string(),
            time: Some(ctx.now.to_string()),
            subresource: String::new(),
            set,
        });
    }

    let mut config_set = apply_walk::to_field_set(&schema, &config)
        .map_err(|e| ApplyFailure::Api(typed_patch_error(&config, e)))?;
    strip(&mut config_set);
    if ctx.subresource == Some("status") {
        config_set.retain(|p| starts_with_field(p, "status"));
    }
    let mut merged = apply_walk::merge(&schema, &live_body, &config)
        .map_err(|e| ApplyFailure::Api(typed_patch_error(&config, e)))?;

    let idx = entries
        .iter()
        .position(|e| e.is(ctx.manager, APPLY, subresource, &api_version));
    let (last_set, last_time) = match idx {
        Some(i) => (entries[i].set.clone(), entries[i].time.clone()),
        None => (FieldSet::new(), None),
    };
    let mine = Entry {
        manager: ctx.manager.to_string(),
        operation: APPLY.into(),
        api_version: api_version.clone(),
        time: last_time.clone(),
        subresource: subresource.to_string(),
        set: config_set,
    };
    match idx {
        Some(i) => entries[i] = mine,
        None => entries.push(mine),
    }
    let me = idx.unwrap_or(entries.len() - 1);

    // Prune what this applier applied last time and no longer does, unless an applier owns it.
    if !last_set.is_empty() {
        let applied_owned = entries
            .iter()
            .filter(|e| e.operation == APPLY)
            .fold(FieldSet::new(), |acc, e| acc.union(&e.set));
        let merged_set = apply_walk::to_field_set(&schema, &merged).unwrap_or_default();
        let to_remove = last_set
            .intersection(&merged_set)
            .difference(&applied_owned);
        // Ancestors sort first; removing them takes their descendants along (and keys with them).
        for p in to_remove.iter() {
            apply_walk::remove_path(&schema, &mut merged, p);
        }
    }

    let cmp = apply_walk::compare(&schema, &live_body, &merged);
    let changed = cmp.modified.union(&cmp.added);
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i == me {
            continue;
        }
        let c = e.set.intersection(&changed);
        if !c.is_empty() {
            conflicts.push((i, c));
        }
    }
    if !conflicts.is_empty() && !force {
        let mut list: Vec<(Entry, Vec<Pe>)> = Vec::new();
        for (i, set) in &conflicts {
            for p in set.iter() {
                list.push((entries[*i].clone(), p.clone()));
            }
        }
        list.sort_by(|a, b| (&a.0.manager, &a.1).cmp(&(&b.0.manager, &b.1)));
        return Err(ApplyFailure::Conflicts(list));
    }
    for (i, set) in &conflicts {
        entries[*i].set = entries[*i].set.difference(set);
    }
    if !cmp.removed.is_empty() {
        for (i, e) in entries.iter_mut().enumerate() {
            if i != me {
                e.set = e.set.difference(&cmp.removed);
            }
        }
    }
    if !cmp.is_same() || last_time.is_none() {
        entries[me].time = Some(ctx.now.to_string());
    }

    apply_walk::strip_nulls(&mut merged);
    if ctx.manager == "kubectl" {
        update_last_applied(&mut merged, &config);
    }
    store_entries(&mut merged, entries);
    Ok(merged)
}

fn conflict_error(conflicts: &[(Entry, Vec<Pe>)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(e, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", e.describe()), "field": path_string(p)}))
        .collect();
    let message = if let [(e, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            e.describe(),
            path_string(p)
        )
    } else {
        let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
        for (e, p) in conflicts {
            let who = e.describe();
            match by_manager.iter_mut().find(|(m, _)| *m == who) {
                Some((_, paths)) => paths.push(path_string(p)),
                None => by_manager.push((who, vec![path_string(p)])),
            }
        }
        by_manager.sort_by(|a, b| a.0.cmp(&b.0));
        let mut lines = Vec::new();
        for (who, paths) in by_manager {
            lines.push(format!("conflicts with {who}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
}

/// Whether every conflict is on a field kubectl's client-side last-applied configuration set,
/// owned by kubectl's client-side apply manager.
fn conflicts_allowed_by_last_applied(
    live: Option<&Value>,
    conflicts: &[(Entry, Vec<Pe>)],
    ctx: &ApplyContext,
) -> bool {
    let Some(live) = live else { return false };
    let annotation = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str);
    let Some(Ok(last_applied)) = annotation
        .filter(|s| !s.is_empty())
        .map(serde_json::from_str::<Value>)
    else {
        return false;
    };
    let schema = Schema::for_object(live, ctx.list_map_keys);
    let Ok(allowed) = apply_walk::to_field_set(&schema, &last_applied) else {
        return false;
    };
    conflicts.iter().all(|(_, p)| allowed.contains(p))
}

/// kubectl's server-side apply keeps an existing client-side last-applied annotation in step
/// with what it applied (upstream lastAppliedUpdater).
fn update_last_applied(obj: &mut Value, config: &Value) {
    let has = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .is_some();
    if !has {
        return;
    }
    let mut applied = config.clone();
    if let Some(a) = applied
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.shift_remove(LAST_APPLIED);
    }
    // Go encodes unstructured maps with sorted keys and a trailing newline.
    let text = format!("{}\n", sorted(&applied));
    if let Some(a) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.insert(LAST_APPLIED.into(), Value::String(text));
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k.as_str()])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Records a non-apply write (create, update, merge/JSON/strategic patch) by `manager`: it takes
/// ownership of the fields it changed, and they leave every other manager's set. Lists of custom
/// resources are treated as atomic; use [`record_update_with`] to pass the CRD's list-map keys.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) {
    record_update_with(old, new, manager, subresource, now, &|_| None);
}

/// [`record_update`] with the CRD schema's `x-kubernetes-list-map-keys`.
pub fn record_update_with(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
    list_map_keys: ListMapKeys,
) {
    let sent = new.pointer("/metadata/managedFields").cloned();
    let reset = matches!(&sent, Some(Value::Array(a)) if a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty));
    let sent_entries = if reset {
        Vec::new()
    } else {
        decode_entries(new)
    };
    let old_entries = old.map(decode_entries).unwrap_or_default();
    // A writer that sends managedFields replaces them; one that drops them keeps the live ones.
    let mut entries = if reset || !sent_entries.is_empty() {
        sent_entries
    } else {
        old_entries
    };
    if entries.is_empty() && old.is_some() {
        // Untracked objects stay untracked until someone applies (upstream skipNonAppliedManager).
        store_entries(new, Vec::new());
        return;
    }

    let schema = Schema::for_object(new, list_map_keys);
    let new_body = body(new);
    let old_body = old.map(body).unwrap_or_else(|| empty_like(new));
    let cmp = apply_walk::compare(&schema, &old_body, &new_body);
    let mut changed = cmp.modified.union(&cmp.added);
    strip(&mut changed);
    if subresource == Some("status") {
        changed.retain(|p| starts_with_field(p, "status"));
    }
    let removed = &cmp.removed;

    for e in entries.iter_mut() {
        e.set = e.set.difference(&changed).difference(removed);
    }
    if !changed.is_empty() {
        let api_version = new
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let sub = subresource.unwrap_or("");
        match entries
            .iter_mut()
            .find(|e| e.is(manager, UPDATE, sub, &api_version))
        {
            Some(e) => {
                e.set = e.set.union(&changed);
                e.time = Some(now.to_string());
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: UPDATE.into(),
                api_version,
                time: Some(now.to_string()),
                subresource: sub.to_string(),
                set: changed,
            }),
        }
    }
    store_entries(new, entries);
}

#[cfg(test)]
mod tests;
