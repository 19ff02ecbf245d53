//! Discovery documents: `/version`, `/api`, `/apis`, group and group-version resource lists,
//! and aggregated discovery (`apidiscovery.k8s.io` v2 / v2beta1) for `/api` and `/apis`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::builtin;
use crate::resource::{Registry, ResourceInfo};

pub const GIT_VERSION: &str = "v1.33.0-emulator";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

pub fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`; `None` when the group is not served.
pub fn group(registry: &Registry, name: &str) -> Option<Value> {
    let versions = registry.group_versions(name);
    if versions.is_empty() {
        return None;
    }
    let mut g = group_json(name, &versions);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn status_verbs() -> Value {
    json!(["get", "patch", "update"])
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str, resources: &[Arc<ResourceInfo>]) -> Value {
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut out = Vec::new();
    let mut sorted: Vec<&Arc<ResourceInfo>> = resources.iter().collect();
    sorted.sort_by(|a, b| a.plural.cmp(&b.plural));
    for r in sorted {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        out.push(entry);
        for (sub, verbs) in builtin::extra_subresources(r) {
            out.push(json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs}));
        }
        if r.status_subresource {
            out.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": status_verbs()}));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": out})
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let response_kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let mut subresources = Vec::new();
    if r.status_subresource {
        subresources.push(json!({"subresource": "status", "responseKind": response_kind, "verbs": status_verbs()}));
    }
    for (sub, verbs) in builtin::extra_subresources(r) {
        subresources
            .push(json!({"subresource": sub, "responseKind": response_kind, "verbs": verbs}));
    }
    let mut v = json!({
        "resource": r.plural,
        "responseKind": response_kind,
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        v["subresources"] = json!(subresources);
    }
    v
}

fn aggregated_group(registry: &Registry, name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut rs = registry.resources_in(name, v);
            rs.sort_by(|a, b| a.plural.cmp(&b.plural));
            let resources: Vec<Value> = rs.iter().map(|r| aggregated_resource(r)).collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": vs})
}

/// Aggregated discovery for `/api` (core) or `/apis` (named groups) in the requested
/// `apidiscovery.k8s.io` version.
pub fn aggregated(registry: &Registry, core: bool, discovery_version: &str) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(registry, "", &["v1".to_string()])]
    } else {
        registry
            .groups()
            .iter()
            .map(|(g, vs)| aggregated_group(registry, g, vs))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{discovery_version}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let mut r = Registry::default();
        for info in builtin::resources() {
            r.insert(info, true);
        }
        r
    }

    #[test]
    fn lists_groups_and_resources() {
        let r = registry();
        let groups = group_list(&r);
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"batch") && names.contains(&"apiextensions.k8s.io"));
        let core = resource_list("", "v1", &r.resources_in("", "v1"));
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"namespaces/status")
                && names.contains(&"secrets")
                && names.contains(&"namespaces/finalize")
        );
        let agg = aggregated(&r, false, "v2");
        assert_eq!(agg["kind"], "APIGroupDiscoveryList");
        assert!(group(&r, "nope").is_none());
    }
}
