//! Object storage: one global monotonic resourceVersion, one object map and one bounded event
//! history per group/resource, watch fan-out, and the uid / ownerReference indexes that
//! garbage collection needs.
//!
//! Everything lives behind one mutex (`Store::lock`): writes are short, and holding a single
//! lock makes cross-resource work (GC, namespace termination, CRD establishment) atomic.
//! Never hold the guard across an `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::watch;

use crate::resource::{GroupResource, Registry};

/// Where an object lives inside one resource store. Cluster-scoped objects have an empty
/// namespace. Ordered by namespace then name, which is also the list and continue order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a stored object, from its metadata.
    pub fn of(obj: &Value) -> Self {
        ObjectKey::new(meta_str(obj, "namespace"), meta_str(obj, "name"))
    }
}

/// A stored object's full address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjRef {
    pub gr: GroupResource,
    pub key: ObjectKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change kept in a resource's history. `prev` is the object before the change, which
/// selector-filtered watches need to turn "stopped matching" into DELETED.
#[derive(Debug, Clone)]
pub struct HistoryEvent {
    pub rv: u64,
    pub kind: EventType,
    pub object: Arc<Value>,
    pub prev: Option<Arc<Value>>,
}

/// The history no longer covers the requested resourceVersion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The oldest resourceVersion still resumable.
    pub oldest: u64,
}

struct ResourceStore {
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    history: VecDeque<HistoryEvent>,
    /// Resuming from an RV below this would miss evicted events: 410 Gone.
    oldest_valid_rv: u64,
    notify: watch::Sender<u64>,
}

impl ResourceStore {
    fn new(rv: u64) -> Self {
        let (notify, _) = watch::channel(rv);
        ResourceStore {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            oldest_valid_rv: 0,
            notify,
        }
    }
}

/// Everything behind the store lock.
pub struct State {
    rv: u64,
    pub registry: Registry,
    stores: HashMap<GroupResource, ResourceStore>,
    uids: HashMap<String, ObjRef>,
    /// owner uid -> objects naming it in ownerReferences.
    dependents: HashMap<String, BTreeSet<ObjRef>>,
    history_capacity: usize,
}

pub struct Store {
    state: Mutex<State>,
}

impl Store {
    pub fn new(history_capacity: usize) -> Self {
        Store {
            state: Mutex::new(State {
                rv: 1,
                registry: Registry::default(),
                stores: HashMap::new(),
                uids: HashMap::new(),
                dependents: HashMap::new(),
                history_capacity: history_capacity.max(1),
            }),
        }
    }

    /// Locks the state. A panic while holding the lock leaves plain data behind, so a
    /// poisoned lock is still usable.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Creates the store of a resource if it does not exist yet.
    pub fn ensure_store(&mut self, gr: &GroupResource) {
        let rv = self.rv;
        self.stores
            .entry(gr.clone())
            .or_insert_with(|| ResourceStore::new(rv));
    }

    /// Drops a resource store and its objects (CRD removed). Open watches end because
    /// their notification channel closes.
    pub fn drop_store(&mut self, gr: &GroupResource) {
        if let Some(store) = self.stores.remove(gr) {
            for (key, obj) in store.objects {
                let r = ObjRef {
                    gr: gr.clone(),
                    key,
                };
                self.unindex(&r, &obj);
            }
        }
    }

    pub fn has_store(&self, gr: &GroupResource) -> bool {
        self.stores.contains_key(gr)
    }

    pub fn get(&self, gr: &GroupResource, key: &ObjectKey) -> Option<Arc<Value>> {
        self.stores.get(gr)?.objects.get(key).cloned()
    }

    pub fn get_ref(&self, r: &ObjRef) -> Option<Arc<Value>> {
        self.get(&r.gr, &r.key)
    }

    /// Objects of a resource in key order, in one namespace (`Some`) or all (`None`),
    /// strictly after `after` when given (pagination).
    pub fn list(
        &self,
        gr: &GroupResource,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
    ) -> Vec<Arc<Value>> {
        let Some(store) = self.stores.get(gr) else {
            return Vec::new();
        };
        let iter: Box<dyn Iterator<Item = (&ObjectKey, &Arc<Value>)>> = match after {
            Some(a) => Box::new(store.objects.range((
                std::ops::Bound::Excluded(a.clone()),
                std::ops::Bound::Unbounded,
            ))),
            None => match namespace {
                Some(ns) => Box::new(store.objects.range(ObjectKey::new(ns, "")..)),
                None => Box::new(store.objects.iter()),
            },
        };
        match namespace {
            Some(ns) => iter
                .skip_while(|(k, _)| k.namespace.as_str() < ns)
                .take_while(|(k, _)| k.namespace == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => iter.map(|(_, v)| v.clone()).collect(),
        }
    }

    /// Number of objects in a resource (optionally one namespace).
    pub fn count(&self, gr: &GroupResource, namespace: Option<&str>) -> usize {
        let Some(store) = self.stores.get(gr) else {
            return 0;
        };
        match namespace {
            None => store.objects.len(),
            Some(ns) => store
                .objects
                .range(ObjectKey::new(ns, "")..)
                .take_while(|(k, _)| k.namespace == ns)
                .count(),
        }
    }

    /// Every resource store that holds at least one object in `namespace`.
    pub fn resources_with_objects_in(&self, namespace: &str) -> Vec<GroupResource> {
        let mut out: Vec<GroupResource> = self
            .stores
            .iter()
            .filter(|(_, s)| {
                s.objects
                    .range(ObjectKey::new(namespace, "")..)
                    .next()
                    .is_some_and(|(k, _)| k.namespace == namespace)
            })
            .map(|(gr, _)| gr.clone())
            .collect();
        out.sort();
        out
    }

    /// Stores `obj` (creating or replacing), stamping the next resourceVersion into it.
    pub fn put(&mut self, gr: &GroupResource, mut obj: Value) -> Arc<Value> {
        self.ensure_store(gr);
        self.rv += 1;
        let rv = self.rv;
        set_resource_version(&mut obj, rv);
        let key = ObjectKey::of(&obj);
        let obj = Arc::new(obj);
        let r = ObjRef {
            gr: gr.clone(),
            key: key.clone(),
        };
        let prev = self
            .stores
            .get_mut(gr)
            .and_then(|s| s.objects.insert(key, obj.clone()));
        if let Some(p) = &prev {
            self.unindex(&r, p);
        }
        self.index(&r, &obj);
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(
            gr,
            HistoryEvent {
                rv,
                kind,
                object: obj.clone(),
                prev,
            },
        );
        obj
    }

    /// Removes an object; the DELETED event carries it with a fresh resourceVersion.
    pub fn remove(&mut self, gr: &GroupResource, key: &ObjectKey) -> Option<Arc<Value>> {
        let old = self.stores.get_mut(gr)?.objects.remove(key)?;
        let r = ObjRef {
            gr: gr.clone(),
            key: key.clone(),
        };
        self.unindex(&r, &old);
        self.rv += 1;
        let rv = self.rv;
        let mut gone = (*old).clone();
        set_resource_version(&mut gone, rv);
        let gone = Arc::new(gone);
        self.record(
            gr,
            HistoryEvent {
                rv,
                kind: EventType::Deleted,
                object: gone.clone(),
                prev: Some(old),
            },
        );
        Some(gone)
    }

    fn record(&mut self, gr: &GroupResource, ev: HistoryEvent) {
        let cap = self.history_capacity;
        let Some(store) = self.stores.get_mut(gr) else {
            return;
        };
        let rv = ev.rv;
        store.history.push_back(ev);
        while store.history.len() > cap {
            if let Some(old) = store.history.pop_front() {
                store.oldest_valid_rv = old.rv;
            }
        }
        store.notify.send_replace(rv);
    }

    fn index(&mut self, r: &ObjRef, obj: &Value) {
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            self.uids.insert(uid.to_string(), r.clone());
        }
        for owner in owner_uids(obj) {
            self.dependents.entry(owner).or_default().insert(r.clone());
        }
    }

    fn unindex(&mut self, r: &ObjRef, obj: &Value) {
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str)
            && self.uids.get(uid) == Some(r)
        {
            self.uids.remove(uid);
        }
        for owner in owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(&owner) {
                set.remove(r);
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }

    /// Where the object with this uid lives, if it exists.
    pub fn by_uid(&self, uid: &str) -> Option<&ObjRef> {
        self.uids.get(uid)
    }

    /// Objects listing `uid` among their ownerReferences.
    pub fn dependents_of(&self, uid: &str) -> Vec<ObjRef> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// History events of a resource after `since`, or `Expired` when some were evicted.
    pub fn events_since(
        &self,
        gr: &GroupResource,
        since: u64,
    ) -> Result<Vec<HistoryEvent>, Expired> {
        let Some(store) = self.stores.get(gr) else {
            return Ok(Vec::new());
        };
        if since < store.oldest_valid_rv {
            return Err(Expired {
                oldest: store.oldest_valid_rv,
            });
        }
        let start = store.history.partition_point(|e| e.rv <= since);
        Ok(store.history.range(start..).cloned().collect())
    }

    /// Fails when resuming a resource from `rv` is no longer possible.
    pub fn check_resumable(&self, gr: &GroupResource, rv: u64) -> Result<(), Expired> {
        match self.stores.get(gr) {
            Some(s) if rv < s.oldest_valid_rv => Err(Expired {
                oldest: s.oldest_valid_rv,
            }),
            _ => Ok(()),
        }
    }

    /// A receiver that changes whenever the resource changes; closed when the store goes.
    pub fn subscribe(&self, gr: &GroupResource) -> Option<watch::Receiver<u64>> {
        self.stores.get(gr).map(|s| s.notify.subscribe())
    }

    /// Forgets every kept event so that resuming from any resourceVersion handed out so far
    /// gets 410, like an etcd compaction. The counter advances past the compaction point so
    /// that a fresh list hands out a resourceVersion that can be resumed from.
    pub fn expire_history(&mut self) {
        self.rv += 1;
        let rv = self.rv;
        for store in self.stores.values_mut() {
            store.history.clear();
            store.oldest_valid_rv = rv;
        }
    }

    /// Every stored object with its group/resource, for persistence.
    pub fn snapshot(&self) -> Vec<(GroupResource, Arc<Value>)> {
        let mut out = Vec::new();
        for (gr, store) in &self.stores {
            for obj in store.objects.values() {
                out.push((gr.clone(), obj.clone()));
            }
        }
        out.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| ObjectKey::of(&a.1).cmp(&ObjectKey::of(&b.1)))
        });
        out
    }

    /// Puts back a persisted object as it was (its resourceVersion kept, no watch event).
    pub fn restore(&mut self, gr: &GroupResource, obj: Value) {
        self.ensure_store(gr);
        let key = ObjectKey::of(&obj);
        let obj = Arc::new(obj);
        let r = ObjRef {
            gr: gr.clone(),
            key: key.clone(),
        };
        let prev = self
            .stores
            .get_mut(gr)
            .and_then(|s| s.objects.insert(key, obj.clone()));
        if let Some(p) = &prev {
            self.unindex(&r, p);
        }
        self.index(&r, &obj);
    }

    /// Continues the resourceVersion counter after restored state; older resumes get 410.
    pub fn restore_rv(&mut self, rv: u64) {
        self.rv = self.rv.max(rv) + 1;
        let rv = self.rv;
        for store in self.stores.values_mut() {
            store.history.clear();
            store.oldest_valid_rv = rv;
        }
    }

    /// Total kept history events (for tests of the memory bound).
    pub fn history_len(&self) -> usize {
        self.stores.values().map(|s| s.history.len()).sum()
    }
}

fn set_resource_version(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// `metadata.<field>` as a string, empty when absent.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Uids of every ownerReference of an object.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(ns: &str, name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}")}})
    }

    #[test]
    fn resource_versions_are_global_and_monotonic() {
        let store = Store::new(10);
        let mut s = store.lock();
        let gr = GroupResource::new("", "configmaps");
        let a = s.put(&gr, cm("a", "x"));
        let b = s.put(&GroupResource::new("", "secrets"), cm("a", "y"));
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        assert_eq!(b["metadata"]["resourceVersion"], "3");
        let gone = s.remove(&gr, &ObjectKey::new("a", "x")).unwrap();
        assert_eq!(gone["metadata"]["resourceVersion"], "4");
        assert!(s.get(&gr, &ObjectKey::new("a", "x")).is_none());
    }

    #[test]
    fn list_by_namespace_and_after() {
        let store = Store::new(10);
        let mut s = store.lock();
        let gr = GroupResource::new("", "configmaps");
        for (ns, n) in [("a", "1"), ("b", "1"), ("b", "2"), ("c", "1")] {
            s.put(&gr, cm(ns, n));
        }
        assert_eq!(s.list(&gr, Some("b"), None).len(), 2);
        assert_eq!(s.list(&gr, None, None).len(), 4);
        let after = s.list(&gr, Some("b"), Some(&ObjectKey::new("b", "1")));
        assert_eq!(after.len(), 1);
        assert_eq!(after[0]["metadata"]["name"], "2");
        assert_eq!(s.list(&gr, None, Some(&ObjectKey::new("b", "2"))).len(), 1);
        assert_eq!(s.count(&gr, Some("b")), 2);
        assert_eq!(s.resources_with_objects_in("c"), vec![gr.clone()]);
    }

    #[test]
    fn history_is_bounded_and_expires() {
        let store = Store::new(3);
        let mut s = store.lock();
        let gr = GroupResource::new("", "configmaps");
        for i in 0..5 {
            s.put(&gr, cm("a", &i.to_string()));
        }
        // RVs 2..=6; history keeps 4,5,6 and resuming from 3 still sees 4.
        assert_eq!(s.history_len(), 3);
        assert_eq!(s.events_since(&gr, 3).unwrap().len(), 3);
        assert_eq!(s.events_since(&gr, 2).unwrap_err(), Expired { oldest: 3 });
        s.expire_history();
        assert!(s.events_since(&gr, 6).is_err());
        assert!(s.events_since(&gr, 7).unwrap().is_empty());
    }

    #[test]
    fn owner_index() {
        let store = Store::new(10);
        let mut s = store.lock();
        let gr = GroupResource::new("", "configmaps");
        let mut dep = cm("a", "dep");
        dep["metadata"]["ownerReferences"] = json!([{"uid": "owner-1"}]);
        s.put(&gr, dep);
        assert_eq!(s.dependents_of("owner-1").len(), 1);
        assert!(s.by_uid("a-dep").is_some());
        s.remove(&gr, &ObjectKey::new("a", "dep"));
        assert!(s.dependents_of("owner-1").is_empty());
        assert!(s.by_uid("a-dep").is_none());
    }
}
