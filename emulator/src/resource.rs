//! `ResourceInfo`: what one served resource (a group/version/plural) is.

use std::sync::Arc;

use serde_json::Value;

use crate::schema::{PrinterColumn, StructuralSchema};

/// How strategic merge patch treats the kind (built-ins only; CRs refuse it with 415).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Builtin,
    Custom,
}

#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    /// True when `/status` is a subresource (spec/status writes are split, generation tracks spec).
    pub status_subresource: bool,
    /// Compiled schema for validation, pruning and defaults; `None` accepts anything (built-ins).
    pub schema: Option<Arc<StructuralSchema>>,
    /// The raw openAPIV3Schema, published under `/openapi/v3`.
    pub openapi_schema: Option<Value>,
    pub printer_columns: Vec<PrinterColumn>,
    pub patch_kind: PatchKind,
}

impl ResourceInfo {
    /// `apiVersion` as written in objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or just `plural` for the core group), as used in messages and RBAC.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// A group and plural: the identity of one object store, shared by every served version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: impl Into<String>, resource: impl Into<String>) -> Self {
        GroupResource {
            group: group.into(),
            resource: resource.into(),
        }
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

impl ResourceInfo {
    /// The store the resource's objects live in. events.k8s.io/v1 Events are another view
    /// of core v1 Events, stored once like the apiserver does.
    pub fn group_resource_key(&self) -> GroupResource {
        if self.group == "events.k8s.io" && self.plural == "events" {
            return GroupResource::new("", "events");
        }
        GroupResource::new(self.group.clone(), self.plural.clone())
    }
}

/// Every resource currently served, by group/version/plural. Versions of one group are kept
/// in kube's version priority order so that discovery lists the preferred version first.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    by_gvr: std::collections::BTreeMap<(String, String, String), Arc<ResourceInfo>>,
    /// The version objects of a group/resource are stored as (CRD storage version).
    storage_version: std::collections::HashMap<GroupResource, String>,
}

impl Registry {
    pub fn insert(&mut self, info: ResourceInfo, storage: bool) {
        let key = (
            info.group.clone(),
            info.version.clone(),
            info.plural.clone(),
        );
        if storage
            || !self
                .storage_version
                .contains_key(&info.group_resource_key())
        {
            self.storage_version
                .insert(info.group_resource_key(), info.version.clone());
        }
        self.by_gvr.insert(key, Arc::new(info));
    }

    /// Removes every version of a group/resource.
    pub fn remove_resource(&mut self, gr: &GroupResource) {
        self.by_gvr
            .retain(|(g, _, p), _| !(g == &gr.group && p == &gr.resource));
        self.storage_version.remove(gr);
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.by_gvr
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Any served version of a group/resource, the storage version first.
    pub fn any_version(&self, gr: &GroupResource) -> Option<Arc<ResourceInfo>> {
        if let Some(v) = self.storage_version.get(gr)
            && let Some(info) = self.get(&gr.group, v, &gr.resource)
        {
            return Some(info);
        }
        self.by_gvr
            .values()
            .find(|i| i.group == gr.group && i.plural == gr.resource)
            .cloned()
    }

    pub fn storage_version(&self, gr: &GroupResource) -> Option<&str> {
        self.storage_version.get(gr).map(String::as_str)
    }

    /// Finds a resource by group and kind (any version, storage version preferred).
    pub fn by_group_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        let found = self
            .by_gvr
            .values()
            .find(|i| i.group == group && i.kind == kind)?;
        self.any_version(&found.group_resource_key())
    }

    /// Resources served at one group/version.
    pub fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<ResourceInfo>> {
        self.by_gvr
            .iter()
            .filter(|((g, v, _), _)| g == group && v == version)
            .map(|(_, i)| i.clone())
            .collect()
    }

    /// Every served resource.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        self.by_gvr.values().cloned().collect()
    }

    /// Named groups (not the core group) in discovery order, each with its versions sorted
    /// by priority (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for (g, v, _) in self.by_gvr.keys() {
            if g.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(name, _)| name == g) {
                Some((_, versions)) => {
                    if !versions.contains(v) {
                        versions.push(v.clone());
                    }
                }
                None => groups.push((g.clone(), vec![v.clone()])),
            }
        }
        for (_, versions) in &mut groups {
            versions.sort_by(|a, b| compare_versions(a, b));
        }
        groups.sort_by(|a, b| {
            group_rank(&a.0)
                .cmp(&group_rank(&b.0))
                .then_with(|| a.0.cmp(&b.0))
        });
        groups
    }

    /// Versions served for a group, preferred first.
    pub fn group_versions(&self, group: &str) -> Vec<String> {
        self.groups()
            .into_iter()
            .find(|(g, _)| g == group)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }
}

/// Built-in groups first (as the apiserver lists them), then the rest alphabetically.
fn group_rank(group: &str) -> u8 {
    const BUILTIN: &[&str] = &[
        "apps",
        "events.k8s.io",
        "batch",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
    ];
    match BUILTIN.iter().position(|g| *g == group) {
        Some(i) => i as u8,
        None => u8::MAX,
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first, and anything
/// that does not look like a kube version last, alphabetically.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits_end].parse().ok()?;
        let tail = &rest[digits_end..];
        if tail.is_empty() {
            return Some((0, major, 0));
        }
        for (rank, word) in [(1u8, "beta"), (2u8, "alpha")] {
            if let Some(n) = tail.strip_prefix(word) {
                let minor: u64 = n.parse().ok()?;
                return Some((rank, major, minor));
            }
        }
        None
    }
    match (parse(a), parse(b)) {
        (Some((ra, ma, na)), Some((rb, mb, nb))) => ra.cmp(&rb).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_priority() {
        let mut v = vec![
            "v1alpha1",
            "foo",
            "v2beta1",
            "v1",
            "v1beta1",
            "v2",
            "v10alpha2",
            "v1beta2",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v2beta1",
                "v1beta2",
                "v1beta1",
                "v10alpha2",
                "v1alpha1",
                "foo"
            ]
        );
    }
}
