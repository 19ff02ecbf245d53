//! Deletion: preconditions, finalizers and `deletionTimestamp`, propagation policies,
//! ownerReference garbage collection, namespace termination and CRD cleanup.
//!
//! The real apiserver leaves garbage collection and namespace cleanup to controllers that act
//! a moment later; here the same steps run synchronously inside the write that triggers them,
//! so clients observe the same sequence of watch events, only sooner.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::builtin::{crd_resource, namespaces_resource};
use crate::crds;
use crate::meta::{finalizers, is_deleting, mark_deleting, set_finalizers};
use crate::resource::{GroupResource, PatchKind, ResourceInfo};
use crate::status::ApiError;
use crate::store::{ObjRef, ObjectKey, State, meta_str, owner_uids};

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Safety valve against pathological ownerReference graphs.
const MAX_WORK_ITEMS: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Orphan" => Ok(Propagation::Orphan),
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            other => Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![crate::status::Cause {
                    reason: "FieldValueNotSupported".into(),
                    message: format!(
                        "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                    field: "propagationPolicy".into(),
                }],
            )),
        }
    }
}

/// metav1.DeleteOptions, from the body and/or the query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOptions {
    pub propagation: Option<Propagation>,
    /// Deprecated `orphanDependents`; `propagation` wins when both are set.
    pub orphan_dependents: Option<bool>,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a DeleteOptions JSON body (kube-rs and kubectl send one).
    pub fn merge_body(&mut self, body: &Value) -> Result<(), ApiError> {
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation = Some(Propagation::parse(p)?);
        }
        if let Some(o) = body.get("orphanDependents").and_then(Value::as_bool) {
            self.orphan_dependents = Some(o);
        }
        if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            self.grace_period_seconds = Some(g);
        }
        if let Some(uid) = body.pointer("/preconditions/uid").and_then(Value::as_str) {
            self.precondition_uid = Some(uid.to_string());
        }
        if let Some(rv) = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            self.precondition_rv = Some(rv.to_string());
        }
        if let Some(d) = body.get("dryRun").and_then(Value::as_array)
            && d.iter().any(|v| v.as_str() == Some("All"))
        {
            self.dry_run = true;
        }
        Ok(())
    }

    fn policy(&self, info: &ResourceInfo) -> Propagation {
        if let Some(p) = self.propagation {
            return p;
        }
        match self.orphan_dependents {
            Some(true) => Propagation::Orphan,
            Some(false) => Propagation::Background,
            None if crate::builtin::orphans_by_default(info) => Propagation::Orphan,
            None => Propagation::Background,
        }
    }
}

/// What a DELETE did.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub object: Arc<Value>,
    /// The object is gone (else it is waiting for finalizers).
    pub removed: bool,
    pub warnings: Vec<String>,
}

/// DELETE of one object.
pub fn delete(
    state: &mut State,
    info: &ResourceInfo,
    key: &ObjectKey,
    opts: &DeleteOptions,
    now: &str,
) -> Result<Deleted, ApiError> {
    let gr = info.group_resource_key();
    let obj = state
        .get(&gr, key)
        .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, &key.name))?;
    if let Some(uid) = &opts.precondition_uid {
        let actual = meta_str(&obj, "uid");
        if uid != actual {
            return Err(ApiError::conflict(
                &info.group,
                &info.plural,
                &key.name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &opts.precondition_rv {
        let actual = meta_str(&obj, "resourceVersion");
        if rv != actual {
            return Err(ApiError::conflict(
                &info.group,
                &info.plural,
                &key.name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    let mut warnings = Vec::new();
    if opts.propagation.is_none()
        && opts.orphan_dependents.is_none()
        && crate::builtin::orphans_by_default(info)
    {
        warnings.push(crate::builtin::JOB_ORPHAN_WARNING.to_string());
    }
    let policy = opts.policy(info);
    if opts.dry_run {
        let (object, removed) = match plan(&obj, &gr, policy, state, now) {
            Plan::Remove => ((*obj).clone(), true),
            Plan::Mark(o) | Plan::Unchanged(o) => (o, false),
        };
        return Ok(Deleted {
            object: Arc::new(object),
            removed,
            warnings,
        });
    }
    let r = ObjRef {
        gr,
        key: key.clone(),
    };
    let mut work = VecDeque::new();
    let outcome = delete_ref(state, &r, policy, now, &mut work);
    run(state, work, now);
    let (object, removed) = outcome.unwrap_or((obj, true));
    Ok(Deleted {
        object,
        removed,
        warnings,
    })
}

enum Plan {
    /// Nothing holds the object: remove it now.
    Remove,
    /// Set deletionTimestamp (and finalizers) and keep it.
    Mark(Value),
    /// Already being deleted; maybe with updated finalizers.
    Unchanged(Value),
}

fn plan(obj: &Value, gr: &GroupResource, policy: Propagation, state: &State, now: &str) -> Plan {
    let uid = meta_str(obj, "uid").to_string();
    let mut fins = finalizers(obj);
    let has_dependents = !uid.is_empty() && !state.dependents_of(&uid).is_empty();
    match policy {
        Propagation::Foreground
            if has_dependents && !fins.iter().any(|f| f == FOREGROUND_FINALIZER) =>
        {
            fins.push(FOREGROUND_FINALIZER.to_string());
        }
        Propagation::Foreground if has_dependents => {}
        Propagation::Foreground | Propagation::Background if !is_deleting(obj) => {
            fins.retain(|f| f != ORPHAN_FINALIZER);
        }
        _ => {}
    }
    let mut new = obj.clone();
    set_finalizers(&mut new, &fins);
    if is_deleting(obj) {
        return Plan::Unchanged(new);
    }
    let ns_blocking = *gr == namespaces_resource();
    if fins.is_empty() && !ns_blocking {
        return Plan::Remove;
    }
    mark_deleting(&mut new, now);
    if ns_blocking {
        new["status"] = json!({"phase": "Terminating"});
    }
    if *gr == crd_resource() {
        crds::mark_terminating(&mut new, now);
    }
    Plan::Mark(new)
}

/// Deletes (or starts deleting) one stored object with a policy. Returns the object as it
/// now stands and whether it is gone; `None` when it did not exist.
fn delete_ref(
    state: &mut State,
    r: &ObjRef,
    policy: Propagation,
    now: &str,
    work: &mut VecDeque<Work>,
) -> Option<(Arc<Value>, bool)> {
    let obj = state.get_ref(r)?;
    let uid = meta_str(&obj, "uid").to_string();
    if policy == Propagation::Orphan && !uid.is_empty() {
        orphan_dependents(state, &uid);
    }
    match plan(&obj, &r.gr, policy, state, now) {
        Plan::Remove => {
            let gone = state.remove(&r.gr, &r.key)?;
            work.push_back(Work::Removed(r.gr.clone(), gone.clone()));
            Some((gone, true))
        }
        Plan::Unchanged(new) => {
            if finalizers(&new) != finalizers(&obj) {
                let stored = state.put(&r.gr, new);
                return Some((stored, false));
            }
            Some((obj, false))
        }
        Plan::Mark(new) => {
            let foreground = finalizers(&new).iter().any(|f| f == FOREGROUND_FINALIZER);
            let stored = state.put(&r.gr, new);
            if foreground {
                for dep in state.dependents_of(&uid) {
                    work.push_back(Work::CheckDependent(dep));
                }
                work.push_back(Work::CheckForeground(r.clone()));
            }
            if r.gr == namespaces_resource() {
                sweep_namespace(state, &r.key.name, now, work);
            }
            if r.gr == crd_resource() {
                sweep_crd(state, &stored, now, work);
            }
            Some((stored, false))
        }
    }
}

/// Removes ownerReferences to `uid` from its dependents.
fn orphan_dependents(state: &mut State, uid: &str) {
    for dep in state.dependents_of(uid) {
        let Some(obj) = state.get_ref(&dep) else {
            continue;
        };
        let mut new = (*obj).clone();
        if let Some(refs) = new
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|o| o.get("uid").and_then(Value::as_str) != Some(uid));
            if refs.is_empty()
                && let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut)
            {
                m.remove("ownerReferences");
            }
        }
        state.put(&dep.gr, new);
    }
}

fn sweep_namespace(state: &mut State, ns: &str, now: &str, work: &mut VecDeque<Work>) {
    for gr in state.resources_with_objects_in(ns) {
        for obj in state.list(&gr, Some(ns), None) {
            if is_deleting(&obj) {
                continue;
            }
            let r = ObjRef {
                gr: gr.clone(),
                key: ObjectKey::of(&obj),
            };
            delete_ref(state, &r, Propagation::Background, now, work);
        }
    }
    work.push_back(Work::CheckNamespace(ns.to_string()));
}

fn sweep_crd(state: &mut State, crd: &Value, now: &str, work: &mut VecDeque<Work>) {
    let Some(gr) = crds::served_resource(crd) else {
        return;
    };
    for obj in state.list(&gr, None, None) {
        if is_deleting(&obj) {
            continue;
        }
        let r = ObjRef {
            gr: gr.clone(),
            key: ObjectKey::of(&obj),
        };
        delete_ref(state, &r, Propagation::Background, now, work);
    }
    work.push_back(Work::CheckCrd(meta_str(crd, "name").to_string()));
}

/// Follow-up work after a write.
#[derive(Debug)]
enum Work {
    /// An object disappeared: its dependents, foreground owners, namespace or CRD may be done.
    Removed(GroupResource, Arc<Value>),
    /// Re-evaluate an object's ownerReferences (GC).
    CheckDependent(ObjRef),
    /// Remove `foregroundDeletion` once no blocking dependent is left.
    CheckForeground(ObjRef),
    CheckNamespace(String),
    CheckCrd(String),
}

/// Follow-ups after an object was created or updated (ownerReferences may dangle) — call
/// with the stored object.
pub fn after_write(
    state: &mut State,
    gr: &GroupResource,
    old: Option<&Value>,
    new: &Value,
    now: &str,
) {
    let mut work = VecDeque::new();
    let refs_changed = old.is_none_or(|o| {
        o.pointer("/metadata/ownerReferences") != new.pointer("/metadata/ownerReferences")
    });
    if refs_changed && new.pointer("/metadata/ownerReferences").is_some() {
        work.push_back(Work::CheckDependent(ObjRef {
            gr: gr.clone(),
            key: ObjectKey::of(new),
        }));
    }
    if is_deleting(new) && finalizers(new).iter().any(|f| f == FOREGROUND_FINALIZER) {
        work.push_back(Work::CheckForeground(ObjRef {
            gr: gr.clone(),
            key: ObjectKey::of(new),
        }));
    }
    if *gr == namespaces_resource() && is_deleting(new) {
        work.push_back(Work::CheckNamespace(meta_str(new, "name").to_string()));
    }
    run(state, work, now);
}

/// Follow-ups after an object was removed by an update that cleared its last finalizer.
pub fn after_remove(state: &mut State, gr: &GroupResource, removed: Arc<Value>, now: &str) {
    let mut work = VecDeque::new();
    work.push_back(Work::Removed(gr.clone(), removed));
    run(state, work, now);
}

fn run(state: &mut State, mut work: VecDeque<Work>, now: &str) {
    let mut steps = 0usize;
    while let Some(item) = work.pop_front() {
        steps += 1;
        if steps > MAX_WORK_ITEMS {
            tracing::warn!("garbage collection stopped after {MAX_WORK_ITEMS} steps");
            return;
        }
        match item {
            Work::Removed(gr, obj) => on_removed(state, &gr, &obj, &mut work),
            Work::CheckDependent(r) => check_dependent(state, &r, now, &mut work),
            Work::CheckForeground(r) => check_foreground(state, &r, now, &mut work),
            Work::CheckNamespace(ns) => check_namespace(state, &ns, &mut work),
            Work::CheckCrd(name) => check_crd(state, &name, &mut work),
        }
    }
}

fn on_removed(state: &mut State, gr: &GroupResource, obj: &Value, work: &mut VecDeque<Work>) {
    let uid = meta_str(obj, "uid");
    if !uid.is_empty() {
        for dep in state.dependents_of(uid) {
            work.push_back(Work::CheckDependent(dep));
        }
    }
    for owner in owner_uids(obj) {
        if let Some(r) = state.by_uid(&owner).cloned() {
            work.push_back(Work::CheckForeground(r));
        }
    }
    let ns = meta_str(obj, "namespace");
    if !ns.is_empty()
        && state
            .get(&namespaces_resource(), &ObjectKey::new("", ns))
            .is_some_and(|n| is_deleting(&n))
    {
        work.push_back(Work::CheckNamespace(ns.to_string()));
    }
    if state
        .registry
        .any_version(gr)
        .is_some_and(|i| i.patch_kind == PatchKind::Custom)
        && let Some(crd) = crds::crd_for(state, gr)
        && is_deleting(&crd)
    {
        work.push_back(Work::CheckCrd(meta_str(&crd, "name").to_string()));
    }
    if *gr == crd_resource() {
        crds::unregister(state, obj);
    }
}

/// The garbage collector's `attemptToDeleteItem`: owners that are gone (dangling) or waiting
/// for their dependents (foreground) decide whether the object goes.
fn check_dependent(state: &mut State, r: &ObjRef, now: &str, work: &mut VecDeque<Work>) {
    let Some(obj) = state.get_ref(r) else { return };
    if is_deleting(&obj) {
        return;
    }
    let Some(refs) = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    else {
        return;
    };
    if refs.is_empty() {
        return;
    }
    let mut solid = 0usize;
    let mut stale: Vec<String> = Vec::new();
    let mut waiting = 0usize;
    for o in refs {
        let uid = o.get("uid").and_then(Value::as_str).unwrap_or_default();
        match state.by_uid(uid).and_then(|or| state.get_ref(or)) {
            None => stale.push(uid.to_string()),
            Some(owner)
                if is_deleting(&owner)
                    && finalizers(&owner).iter().any(|f| f == FOREGROUND_FINALIZER) =>
            {
                waiting += 1;
                stale.push(uid.to_string());
            }
            Some(_) => solid += 1,
        }
    }
    if solid == 0 {
        let policy = if waiting > 0 {
            Propagation::Foreground
        } else {
            Propagation::Background
        };
        delete_ref(state, r, policy, now, work);
    } else if !stale.is_empty() {
        let mut new = (*obj).clone();
        if let Some(refs) = new
            .pointer_mut("/metadata/ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|o| {
                !stale
                    .iter()
                    .any(|s| Some(s.as_str()) == o.get("uid").and_then(Value::as_str))
            });
        }
        state.put(&r.gr, new);
        for uid in stale {
            if let Some(owner) = state.by_uid(&uid).cloned() {
                work.push_back(Work::CheckForeground(owner));
            }
        }
    }
}

fn check_foreground(state: &mut State, r: &ObjRef, _now: &str, work: &mut VecDeque<Work>) {
    let Some(obj) = state.get_ref(r) else { return };
    if !is_deleting(&obj) {
        return;
    }
    let mut fins = finalizers(&obj);
    if !fins.iter().any(|f| f == FOREGROUND_FINALIZER) {
        return;
    }
    let uid = meta_str(&obj, "uid").to_string();
    let blocked = state.dependents_of(&uid).iter().any(|d| {
        state.get_ref(d).is_some_and(|dep| {
            dep.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter().any(|o| {
                        o.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                            && o.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
                    })
                })
        })
    });
    if blocked {
        return;
    }
    fins.retain(|f| f != FOREGROUND_FINALIZER);
    finish_or_store(state, r, &obj, fins, work);
}

fn check_namespace(state: &mut State, ns: &str, work: &mut VecDeque<Work>) {
    let r = ObjRef {
        gr: namespaces_resource(),
        key: ObjectKey::new("", ns),
    };
    let Some(obj) = state.get_ref(&r) else { return };
    if !is_deleting(&obj) || !state.resources_with_objects_in(ns).is_empty() {
        return;
    }
    let mut new = (*obj).clone();
    let spec_fins: Vec<Value> = new
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|f| f.as_str() != Some(NAMESPACE_FINALIZER))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        if spec_fins.is_empty() {
            spec.remove("finalizers");
        } else {
            spec.insert("finalizers".into(), Value::Array(spec_fins.clone()));
        }
    }
    if spec_fins.is_empty() && finalizers(&new).is_empty() {
        if let Some(gone) = state.remove(&r.gr, &r.key) {
            work.push_back(Work::Removed(r.gr.clone(), gone));
        }
    } else if new != *obj {
        state.put(&r.gr, new);
    }
}

fn check_crd(state: &mut State, name: &str, work: &mut VecDeque<Work>) {
    let r = ObjRef {
        gr: crd_resource(),
        key: ObjectKey::new("", name),
    };
    let Some(crd) = state.get_ref(&r) else { return };
    if !is_deleting(&crd) {
        return;
    }
    if let Some(gr) = crds::served_resource(&crd)
        && state.count(&gr, None) > 0
    {
        return;
    }
    let mut fins = finalizers(&crd);
    fins.retain(|f| f != crds::CLEANUP_FINALIZER);
    finish_or_store(state, &r, &crd, fins, work);
}

/// Stores the object with fewer finalizers, or removes it when none are left.
fn finish_or_store(
    state: &mut State,
    r: &ObjRef,
    obj: &Value,
    fins: Vec<String>,
    work: &mut VecDeque<Work>,
) {
    let ns_blocking = r.gr == namespaces_resource()
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    if fins.is_empty() && !ns_blocking {
        if let Some(gone) = state.remove(&r.gr, &r.key) {
            work.push_back(Work::Removed(r.gr.clone(), gone));
        }
    } else {
        let mut new = obj.clone();
        set_finalizers(&mut new, &fins);
        if new != *obj {
            state.put(&r.gr, new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn info(plural: &str) -> ResourceInfo {
        crate::builtin::resources()
            .into_iter()
            .find(|r| r.plural == plural && r.group.is_empty())
            .unwrap()
    }

    fn cm(name: &str, uid: &str, owners: &[&str]) -> Value {
        let refs: Vec<Value> = owners.iter().map(|o| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": o, "blockOwnerDeletion": true})).collect();
        let mut v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": 1}});
        if !refs.is_empty() {
            v["metadata"]["ownerReferences"] = json!(refs);
        }
        v
    }

    #[test]
    fn background_gc_is_transitive_and_respects_other_owners() {
        let store = Store::new(100);
        let mut s = store.lock();
        let gr = GroupResource::new("", "configmaps");
        s.put(&gr, cm("a", "ua", &[]));
        s.put(&gr, cm("b", "ub", &["ua"]));
        s.put(&gr, cm("c", "uc", &["ub"]));
        s.put(&gr, cm("other", "uo", &[]));
        s.put(&gr, cm("d", "ud", &["ua", "uo"]));
        let d = delete(
            &mut s,
            &info("configmaps"),
            &ObjectKey::new("ns", "a"),
            &DeleteOptions::default(),
            "now",
        )
        .unwrap();
        assert!(d.removed);
        assert!(s.get(&gr, &ObjectKey::new("ns", "b")).is_none());
        assert!(s.get(&gr, &ObjectKey::new("ns", "c")).is_none());
        let d = s.get(&gr, &ObjectKey::new("ns", "d")).unwrap();
        assert_eq!(owner_uids(&d), vec!["uo".to_string()]);
    }

    #[test]
    fn finalizers_hold_and_orphan_keeps_dependents() {
        let store = Store::new(100);
        let mut s = store.lock();
        let gr = GroupResource::new("", "configmaps");
        let mut a = cm("a", "ua", &[]);
        a["metadata"]["finalizers"] = json!(["example.com/hold"]);
        s.put(&gr, a);
        s.put(&gr, cm("b", "ub", &["ua"]));
        let d = delete(
            &mut s,
            &info("configmaps"),
            &ObjectKey::new("ns", "a"),
            &DeleteOptions::default(),
            "now",
        )
        .unwrap();
        assert!(!d.removed);
        assert_eq!(d.object["metadata"]["deletionTimestamp"], "now");
        assert_eq!(d.object["metadata"]["generation"], 2);
        assert!(s.get(&gr, &ObjectKey::new("ns", "b")).is_some());

        let opts = DeleteOptions {
            propagation: Some(Propagation::Orphan),
            ..Default::default()
        };
        s.put(&gr, cm("c", "uc", &[]));
        s.put(&gr, cm("e", "ue", &["uc"]));
        delete(
            &mut s,
            &info("configmaps"),
            &ObjectKey::new("ns", "c"),
            &opts,
            "now",
        )
        .unwrap();
        let e = s.get(&gr, &ObjectKey::new("ns", "e")).unwrap();
        assert!(e.pointer("/metadata/ownerReferences").is_none());
    }

    #[test]
    fn foreground_waits_for_blocking_dependents() {
        let store = Store::new(100);
        let mut s = store.lock();
        let gr = GroupResource::new("", "configmaps");
        s.put(&gr, cm("a", "ua", &[]));
        let mut b = cm("b", "ub", &["ua"]);
        b["metadata"]["finalizers"] = json!(["example.com/hold"]);
        s.put(&gr, b);
        let opts = DeleteOptions {
            propagation: Some(Propagation::Foreground),
            ..Default::default()
        };
        let d = delete(
            &mut s,
            &info("configmaps"),
            &ObjectKey::new("ns", "a"),
            &opts,
            "now",
        )
        .unwrap();
        assert!(!d.removed);
        assert_eq!(
            finalizers(&d.object),
            vec![FOREGROUND_FINALIZER.to_string()]
        );
        let b = s.get(&gr, &ObjectKey::new("ns", "b")).unwrap();
        assert!(is_deleting(&b));
        // Releasing the dependent's finalizer removes it, then the owner.
        let mut b2 = (*b).clone();
        set_finalizers(&mut b2, &[]);
        let gone = s.remove(&gr, &ObjectKey::new("ns", "b")).unwrap();
        after_remove(&mut s, &gr, gone, "now");
        assert!(s.get(&gr, &ObjectKey::new("ns", "a")).is_none());
    }

    #[test]
    fn preconditions() {
        let store = Store::new(100);
        let mut s = store.lock();
        let gr = GroupResource::new("", "configmaps");
        s.put(&gr, cm("a", "ua", &[]));
        let opts = DeleteOptions {
            precondition_uid: Some("nope".into()),
            ..Default::default()
        };
        let err = delete(
            &mut s,
            &info("configmaps"),
            &ObjectKey::new("ns", "a"),
            &opts,
            "now",
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message
                .contains("Precondition failed: UID in precondition: nope, UID in object meta: ua")
        );
    }
}
