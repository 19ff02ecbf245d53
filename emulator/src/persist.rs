//! Persistence of the object store in a data directory (`EmulatorBuilder::data_dir`), so that
//! `privacy-operator dev` survives restarts. A JSON snapshot is written atomically (temp file
//! then rename) whenever the state changed, at most once per interval, and at shutdown; it is
//! loaded at start. Watches cannot resume across a restart (410 Gone), as after an etcd
//! compaction.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::builtin::{crd_resource, namespaces_resource};
use crate::crds;
use crate::ops::Core;
use crate::resource::GroupResource;
use crate::store::meta_str;

const FILE: &str = "emulator-state.json";

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes the current state; returns the resourceVersion it holds.
pub fn save(core: &Core, dir: &Path) -> std::io::Result<u64> {
    let (rv, objects) = {
        let state = core.store.lock();
        (state.current_rv(), state.snapshot())
    };
    let items: Vec<Value> = objects
        .iter()
        .map(|(gr, obj)| json!({"group": gr.group, "resource": gr.resource, "object": &**obj}))
        .collect();
    let doc = json!({"resourceVersion": rv, "objects": items});
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&doc)?)?;
    std::fs::rename(&tmp, state_file(dir))?;
    Ok(rv)
}

/// Loads a snapshot written by `save`, if there is one. CRDs come first so that their
/// resources are served before their objects are put back.
pub fn load(core: &Core, dir: &Path) -> std::io::Result<bool> {
    let path = state_file(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let doc: Value = serde_json::from_slice(&bytes)?;
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let rv = doc
        .get("resourceVersion")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("no resourceVersion"))?;
    let items = doc
        .get("objects")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no objects"))?;
    let mut entries: Vec<(GroupResource, Value)> = items
        .iter()
        .filter_map(|i| {
            let group = i.get("group")?.as_str()?;
            let resource = i.get("resource")?.as_str()?;
            Some((
                GroupResource::new(group, resource),
                i.get("object")?.clone(),
            ))
        })
        .collect();
    let rank = |gr: &GroupResource| {
        if *gr == crd_resource() {
            0
        } else if *gr == namespaces_resource() {
            1
        } else {
            2
        }
    };
    entries.sort_by_key(|(gr, _)| rank(gr));
    let mut state = core.store.lock();
    let now = crate::meta::now_rfc3339();
    for (gr, mut obj) in entries {
        if gr == crd_resource() {
            match crds::prepare(&mut obj, None, &now) {
                Ok(served) => crds::register(&mut state, served, None),
                Err(e) => {
                    tracing::warn!(
                        "not serving persisted CRD {}: {}",
                        meta_str(&obj, "name"),
                        e.message
                    );
                }
            }
        }
        if !state.has_store(&gr) {
            tracing::warn!("dropping persisted object of unserved resource {gr}");
            continue;
        }
        state.restore(&gr, obj);
    }
    state.restore_rv(rv);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::WriteParams;

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("emulator-persist-{}", uuid::Uuid::new_v4()));
        let core = Core::new(10);
        let cm = core.lookup("", "v1", "configmaps").unwrap();
        core.create(
            &cm,
            Some("default"),
            json!({"metadata": {"name": "kept"}, "data": {"a": "b"}}),
            &WriteParams::default(),
        )
        .unwrap();
        let rv = save(&core, &dir).unwrap();

        let restored = Core::new(10);
        assert!(load(&restored, &dir).unwrap());
        let got = restored.get(&cm, "default", "kept").unwrap();
        assert_eq!(got["data"]["a"], "b");
        assert!(restored.store.lock().current_rv() > rv);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
