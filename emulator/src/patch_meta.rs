//! What built-in kinds say about their fields' merge semantics, in one table shared by
//! strategic merge patch (`patchStrategy`/`patchMergeKey` struct tags in k8s.io/api) and
//! server-side apply (`+listType`/`+listMapKey`/`+structType`/`+mapType` markers).
//!
//! Types are named like their Go structs; a kind's root type is the kind name itself. Fields not
//! listed are plain granular structs/maps, or atomic lists that strategic merge patch replaces.

use serde_json::{Map, Value, json};

/// How strategic merge patch combines a list field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmpList {
    /// No patch strategy: the patch's list replaces the live one.
    Replace,
    /// `patchStrategy:"merge"` on a list of scalars: union, `$deleteFromPrimitiveList` removes.
    MergeScalars,
    /// `patchStrategy:"merge" patchMergeKey:"<key>"` on a list of objects.
    MergeByKey(&'static str),
}

/// How server-side apply treats a list field (structured-merge-diff element relationship).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsaList {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// One field's semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMeta {
    /// Type name of the value (of the items, for lists); `""` when we know nothing about it.
    pub ty: &'static str,
    pub shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A struct or map merged field by field.
    Granular,
    /// `+structType=atomic` / `+mapType=atomic`: server-side apply owns it as a whole.
    /// Strategic merge patch still merges maps key by key.
    Atomic,
    List {
        smp: SmpList,
        ssa: SsaShape,
    },
}

/// `SsaList` in a form that fits a `const` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsaShape {
    Atomic,
    Set,
    Map(&'static [&'static str]),
}

impl SsaShape {
    pub fn to_list(self) -> SsaList {
        match self {
            SsaShape::Atomic => SsaList::Atomic,
            SsaShape::Set => SsaList::Set,
            SsaShape::Map(keys) => SsaList::Map(keys.iter().map(|k| k.to_string()).collect()),
        }
    }
}

const fn ty(ty: &'static str) -> FieldMeta {
    FieldMeta {
        ty,
        shape: Shape::Granular,
    }
}

const fn atomic(ty: &'static str) -> FieldMeta {
    FieldMeta {
        ty,
        shape: Shape::Atomic,
    }
}

/// A list SMP merges by `smp_key` and SSA treats as a map keyed by `ssa_keys`.
const fn keyed(
    ty: &'static str,
    smp_key: &'static str,
    ssa_keys: &'static [&'static str],
) -> FieldMeta {
    FieldMeta {
        ty,
        shape: Shape::List {
            smp: SmpList::MergeByKey(smp_key),
            ssa: SsaShape::Map(ssa_keys),
        },
    }
}

/// A list SMP replaces and SSA owns as a whole.
const fn atomic_list(ty: &'static str) -> FieldMeta {
    FieldMeta {
        ty,
        shape: Shape::List {
            smp: SmpList::Replace,
            ssa: SsaShape::Atomic,
        },
    }
}

/// A list SMP merges by key but SSA still treats as atomic (e.g. Job conditions).
const fn smp_keyed_ssa_atomic(ty: &'static str, smp_key: &'static str) -> FieldMeta {
    FieldMeta {
        ty,
        shape: Shape::List {
            smp: SmpList::MergeByKey(smp_key),
            ssa: SsaShape::Atomic,
        },
    }
}

const fn scalar_set() -> FieldMeta {
    FieldMeta {
        ty: "",
        shape: Shape::List {
            smp: SmpList::MergeScalars,
            ssa: SsaShape::Set,
        },
    }
}

const CONDITIONS: FieldMeta = keyed("", "type", &["type"]);

/// (kind group, kind) → root type name. Kinds not listed are still known by their kind name
/// (it is harmless: a name with no rows behaves like an unknown type).
const ROOTS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("", "PodTemplate"),
    ("", "ReplicationController"),
    ("", "Service"),
    ("", "ServiceAccount"),
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolumeClaim"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("policy", "PodDisruptionBudget"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("coordination.k8s.io", "Lease"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "Event"),
    ("events.k8s.io", "Event"),
];

/// (type, field, meta). `metadata` of every root type is ObjectMeta (handled in `field`).
const FIELDS: &[(&str, &str, FieldMeta)] = &[
    // metav1.ObjectMeta
    ("ObjectMeta", "finalizers", scalar_set()),
    (
        "ObjectMeta",
        "ownerReferences",
        keyed("OwnerReference", "uid", &["uid"]),
    ),
    ("ObjectMeta", "managedFields", atomic_list("")),
    ("OwnerReference", "", atomic("")),
    // core/v1 Pod and PodSpec
    ("Pod", "spec", ty("PodSpec")),
    ("Pod", "status", ty("PodStatus")),
    ("PodTemplate", "template", ty("PodTemplateSpec")),
    ("PodTemplateSpec", "metadata", ty("ObjectMeta")),
    ("PodTemplateSpec", "spec", ty("PodSpec")),
    ("PodSpec", "volumes", keyed("Volume", "name", &["name"])),
    (
        "PodSpec",
        "initContainers",
        keyed("Container", "name", &["name"]),
    ),
    (
        "PodSpec",
        "containers",
        keyed("Container", "name", &["name"]),
    ),
    (
        "PodSpec",
        "ephemeralContainers",
        keyed("Container", "name", &["name"]),
    ),
    ("PodSpec", "imagePullSecrets", keyed("", "name", &["name"])),
    ("PodSpec", "hostAliases", keyed("", "ip", &["ip"])),
    ("PodSpec", "tolerations", atomic_list("")),
    ("PodSpec", "readinessGates", atomic_list("")),
    (
        "PodSpec",
        "topologySpreadConstraints",
        keyed(
            "TopologySpreadConstraint",
            "topologyKey",
            &["topologyKey", "whenUnsatisfiable"],
        ),
    ),
    ("PodSpec", "resourceClaims", keyed("", "name", &["name"])),
    ("PodSpec", "schedulingGates", keyed("", "name", &["name"])),
    ("PodSpec", "nodeSelector", atomic("")),
    ("PodSpec", "affinity", ty("Affinity")),
    ("Affinity", "podAffinity", ty("PodAffinity")),
    ("Affinity", "podAntiAffinity", ty("PodAffinity")),
    ("Affinity", "nodeAffinity", ty("NodeAffinity")),
    (
        "NodeAffinity",
        "requiredDuringSchedulingIgnoredDuringExecution",
        atomic(""),
    ),
    (
        "NodeAffinity",
        "preferredDuringSchedulingIgnoredDuringExecution",
        atomic_list(""),
    ),
    (
        "PodAffinity",
        "requiredDuringSchedulingIgnoredDuringExecution",
        atomic_list(""),
    ),
    (
        "PodAffinity",
        "preferredDuringSchedulingIgnoredDuringExecution",
        atomic_list(""),
    ),
    ("TopologySpreadConstraint", "labelSelector", atomic("")),
    (
        "Container",
        "ports",
        keyed("", "containerPort", &["containerPort", "protocol"]),
    ),
    ("Container", "env", keyed("EnvVar", "name", &["name"])),
    ("Container", "envFrom", atomic_list("")),
    (
        "Container",
        "volumeMounts",
        keyed("", "mountPath", &["mountPath"]),
    ),
    (
        "Container",
        "volumeDevices",
        keyed("", "devicePath", &["devicePath"]),
    ),
    ("Container", "resizePolicy", atomic_list("")),
    ("Container", "command", atomic_list("")),
    ("Container", "args", atomic_list("")),
    ("Container", "resources", ty("ResourceRequirements")),
    (
        "ResourceRequirements",
        "claims",
        keyed("", "name", &["name"]),
    ),
    ("EnvVar", "valueFrom", ty("EnvVarSource")),
    ("EnvVarSource", "configMapKeyRef", atomic("")),
    ("EnvVarSource", "secretKeyRef", atomic("")),
    ("EnvVarSource", "fieldRef", atomic("")),
    ("EnvVarSource", "resourceFieldRef", atomic("")),
    ("Volume", "projected", ty("ProjectedVolumeSource")),
    ("ProjectedVolumeSource", "sources", atomic_list("")),
    ("PodStatus", "conditions", CONDITIONS),
    ("PodStatus", "podIPs", keyed("", "ip", &["ip"])),
    ("PodStatus", "hostIPs", keyed("", "ip", &["ip"])),
    ("PodStatus", "containerStatuses", atomic_list("")),
    ("PodStatus", "initContainerStatuses", atomic_list("")),
    ("PodStatus", "ephemeralContainerStatuses", atomic_list("")),
    // core/v1 others
    (
        "ReplicationController",
        "spec",
        ty("ReplicationControllerSpec"),
    ),
    ("ReplicationController", "status", ty("WithConditions")),
    (
        "ReplicationControllerSpec",
        "template",
        ty("PodTemplateSpec"),
    ),
    ("ReplicationControllerSpec", "selector", atomic("")),
    ("Service", "spec", ty("ServiceSpec")),
    ("Service", "status", ty("WithConditions")),
    (
        "ServiceSpec",
        "ports",
        keyed("", "port", &["port", "protocol"]),
    ),
    ("ServiceSpec", "selector", atomic("")),
    ("ServiceSpec", "clusterIPs", atomic_list("")),
    ("ServiceSpec", "externalIPs", atomic_list("")),
    ("ServiceSpec", "ipFamilies", atomic_list("")),
    ("ServiceSpec", "loadBalancerSourceRanges", atomic_list("")),
    ("ServiceAccount", "secrets", keyed("", "name", &["name"])),
    ("ServiceAccount", "imagePullSecrets", atomic_list("")),
    ("Namespace", "spec", ty("NamespaceSpec")),
    ("Namespace", "status", ty("WithConditions")),
    ("NamespaceSpec", "finalizers", atomic_list("")),
    ("Node", "status", ty("NodeStatus")),
    ("NodeStatus", "conditions", CONDITIONS),
    ("NodeStatus", "addresses", keyed("", "type", &["type"])),
    ("PersistentVolumeClaim", "status", ty("WithConditions")),
    ("WithConditions", "conditions", CONDITIONS),
    // apps/v1
    ("Deployment", "spec", ty("DeploymentSpec")),
    ("Deployment", "status", ty("WithConditions")),
    ("DeploymentSpec", "selector", atomic("")),
    ("DeploymentSpec", "template", ty("PodTemplateSpec")),
    ("ReplicaSet", "spec", ty("DeploymentSpec")),
    ("ReplicaSet", "status", ty("WithConditions")),
    ("DaemonSet", "spec", ty("DeploymentSpec")),
    ("DaemonSet", "status", ty("WithConditions")),
    ("StatefulSet", "spec", ty("StatefulSetSpec")),
    ("StatefulSet", "status", ty("WithConditions")),
    ("StatefulSetSpec", "selector", atomic("")),
    ("StatefulSetSpec", "template", ty("PodTemplateSpec")),
    ("StatefulSetSpec", "volumeClaimTemplates", atomic_list("")),
    // batch/v1
    ("Job", "spec", ty("JobSpec")),
    ("Job", "status", ty("JobStatus")),
    ("JobSpec", "selector", atomic("")),
    ("JobSpec", "template", ty("PodTemplateSpec")),
    ("JobStatus", "conditions", smp_keyed_ssa_atomic("", "type")),
    ("CronJob", "spec", ty("CronJobSpec")),
    ("CronJob", "status", ty("CronJobStatus")),
    ("CronJobSpec", "jobTemplate", ty("JobTemplateSpec")),
    ("JobTemplateSpec", "metadata", ty("ObjectMeta")),
    ("JobTemplateSpec", "spec", ty("JobSpec")),
    ("CronJobStatus", "active", atomic_list("")),
    // others
    ("PodDisruptionBudget", "spec", ty("PodDisruptionBudgetSpec")),
    ("PodDisruptionBudget", "status", ty("WithConditions")),
    ("PodDisruptionBudgetSpec", "selector", atomic("")),
    ("CustomResourceDefinition", "status", ty("WithConditions")),
    (
        "CustomResourceDefinition",
        "spec",
        ty("CustomResourceDefinitionSpec"),
    ),
    ("CustomResourceDefinitionSpec", "versions", atomic_list("")),
    ("Role", "rules", atomic_list("")),
    ("ClusterRole", "rules", atomic_list("")),
    ("RoleBinding", "subjects", atomic_list("")),
    ("ClusterRoleBinding", "subjects", atomic_list("")),
    ("RoleBinding", "roleRef", atomic("")),
    ("ClusterRoleBinding", "roleRef", atomic("")),
];

/// The root type of a built-in kind, `None` for kinds we know nothing about (custom resources).
pub fn root_type(group: &str, kind: &str) -> Option<&'static str> {
    ROOTS
        .iter()
        .find(|(g, k)| *g == group && *k == kind)
        .map(|(_, k)| *k)
}

/// The semantics of `field` inside a value of type `parent` (`""` = unknown type).
pub fn field(parent: &str, field: &str, at_root: bool) -> FieldMeta {
    if at_root && field == "metadata" {
        return ty("ObjectMeta");
    }
    if parent.is_empty() {
        return ty("");
    }
    FIELDS
        .iter()
        .find(|(t, f, _)| *t == parent && *f == field)
        .map(|(_, _, m)| *m)
        .unwrap_or(ty(""))
}

/// Whether values of `ty` are owned as a whole by server-side apply (`+structType=atomic`).
pub fn type_is_atomic(ty: &str) -> bool {
    !ty.is_empty()
        && FIELDS
            .iter()
            .any(|(t, f, m)| *t == ty && f.is_empty() && m.shape == Shape::Atomic)
}

/// The OpenAPI extensions kube-apiserver publishes on a property of a built-in definition
/// (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`,
/// `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`). kubectl's client-side apply reads the
/// patch ones to compute strategic merge patches, so they must agree with what we merge by.
pub fn openapi_extensions(type_name: &str, property: &str) -> Map<String, Value> {
    let meta = FIELDS
        .iter()
        .find(|(t, f, _)| *t == type_name && *f == property)
        .map(|(_, _, m)| *m)
        .or_else(|| {
            (property == "conditions" && type_name.ends_with("Status")).then_some(CONDITIONS)
        });
    let mut ext = Map::new();
    match meta.map(|m| m.shape) {
        Some(Shape::List { smp, ssa }) => {
            match smp {
                SmpList::Replace => {}
                SmpList::MergeScalars => {
                    ext.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
                }
                SmpList::MergeByKey(key) => {
                    ext.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                    ext.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
                }
            }
            match ssa {
                SsaShape::Atomic => {
                    ext.insert("x-kubernetes-list-type".into(), json!("atomic"));
                }
                SsaShape::Set => {
                    ext.insert("x-kubernetes-list-type".into(), json!("set"));
                }
                SsaShape::Map(keys) => {
                    ext.insert("x-kubernetes-list-map-keys".into(), json!(keys));
                    ext.insert("x-kubernetes-list-type".into(), json!("map"));
                }
            }
        }
        Some(Shape::Atomic) => {
            ext.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
        _ => {}
    }
    // `patchStrategy:"...,retainKeys"`: kubectl then sends `$retainKeys` (which we honour
    // wherever it appears) so that switching a volume source or update strategy drops the old.
    match (type_name, property) {
        ("PodSpec", "volumes") => {
            ext.insert(
                "x-kubernetes-patch-strategy".into(),
                json!("merge,retainKeys"),
            );
        }
        ("DeploymentSpec", "strategy") => {
            ext.insert("x-kubernetes-patch-strategy".into(), json!("retainKeys"));
        }
        _ => {}
    }
    ext
}

/// Adds [`openapi_extensions`] to every property of OpenAPI definitions named like the
/// apiserver names them (`io.k8s.api.core.v1.ServiceSpec`).
pub fn annotate_openapi_definitions(definitions: &mut Map<String, Value>) {
    for (name, def) in definitions.iter_mut() {
        let type_name = name.rsplit('.').next().unwrap_or(name);
        let Some(props) = def.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (prop, schema) in props.iter_mut() {
            let ext = openapi_extensions(type_name, prop);
            if let Some(obj) = schema.as_object_mut() {
                obj.extend(ext);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_spec_containers_merge_by_name() {
        let m = field("PodSpec", "containers", false);
        assert_eq!(m.ty, "Container");
        assert_eq!(
            m.shape,
            Shape::List {
                smp: SmpList::MergeByKey("name"),
                ssa: SsaShape::Map(&["name"])
            }
        );
    }

    #[test]
    fn metadata_is_object_meta_only_at_root() {
        assert_eq!(field("", "metadata", true).ty, "ObjectMeta");
        assert_eq!(field("Deployment", "metadata", true).ty, "ObjectMeta");
        assert_eq!(field("", "metadata", false).ty, "");
    }

    #[test]
    fn openapi_extensions_match_the_apiserver() {
        let mut defs = Map::new();
        defs.insert(
            "io.k8s.api.core.v1.ServiceSpec".into(),
            json!({"properties": {"ports": {"type": "array"}, "type": {"type": "string"}}}),
        );
        defs.insert(
            "io.k8s.api.core.v1.NamespaceStatus".into(),
            json!({"properties": {"conditions": {"type": "array"}}}),
        );
        annotate_openapi_definitions(&mut defs);
        assert_eq!(
            defs["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"],
            json!({
                "type": "array",
                "x-kubernetes-patch-merge-key": "port",
                "x-kubernetes-patch-strategy": "merge",
                "x-kubernetes-list-map-keys": ["port", "protocol"],
                "x-kubernetes-list-type": "map"
            })
        );
        assert_eq!(
            defs["io.k8s.api.core.v1.ServiceSpec"]["properties"]["type"],
            json!({"type": "string"})
        );
        assert_eq!(
            defs["io.k8s.api.core.v1.NamespaceStatus"]["properties"]["conditions"]["x-kubernetes-patch-merge-key"],
            "type"
        );
        assert_eq!(
            openapi_extensions("PodSpec", "volumes")["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        let fin = openapi_extensions("ObjectMeta", "finalizers");
        assert_eq!(fin["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(fin["x-kubernetes-list-type"], "set");
    }

    #[test]
    fn unknown_fields_are_granular_and_untyped() {
        assert_eq!(field("PodSpec", "nope", false), ty(""));
        assert_eq!(
            root_type("privacy-operator.dev", "DataSubjectRequest"),
            None
        );
        assert_eq!(root_type("apps", "Deployment"), Some("Deployment"));
        assert!(type_is_atomic("OwnerReference"));
        assert!(!type_is_atomic("PodSpec"));
    }
}
