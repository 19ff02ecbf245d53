//! The built-in resources we serve, their discovery data, per-kind API behaviour that differs
//! from the generic rules, and their Table columns (computed like kube-apiserver's printers).

use serde_json::{Value, json};

use crate::resource::{GroupResource, PatchKind, ResourceInfo};
use crate::schema::IncludeObject;

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

struct Def {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
}

const DEFS: &[Def] = &[
    Def {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        status: true,
    },
    Def {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
    },
    Def {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        status: false,
    },
    Def {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
    },
    Def {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        status: false,
    },
    Def {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        status: true,
    },
    Def {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        status: true,
    },
    Def {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
    },
    Def {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        namespaced: true,
        short_names: &[],
        categories: &["all"],
        status: true,
    },
    Def {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
    },
    // Served with CRUD-only semantics (no controllers): enough for Helm charts and kubectl
    // to install, diff and delete them as on a real cluster.
    Def {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        status: true,
    },
    Def {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status: false,
    },
    Def {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status: false,
    },
    Def {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
    },
    Def {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
    },
    Def {
        group: "policy",
        version: "v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        status: true,
    },
    Def {
        group: "networking.k8s.io",
        version: "v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        namespaced: true,
        short_names: &["netpol"],
        categories: &[],
        status: false,
    },
    Def {
        group: "admissionregistration.k8s.io",
        version: "v1",
        kind: "ValidatingAdmissionPolicy",
        plural: "validatingadmissionpolicies",
        namespaced: false,
        short_names: &[],
        categories: &["api-extensions"],
        status: true,
    },
    Def {
        group: "admissionregistration.k8s.io",
        version: "v1",
        kind: "ValidatingAdmissionPolicyBinding",
        plural: "validatingadmissionpolicybindings",
        namespaced: false,
        short_names: &[],
        categories: &["api-extensions"],
        status: false,
    },
    Def {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        status: true,
    },
];

/// The group/resource of CustomResourceDefinitions.
pub fn crd_resource() -> GroupResource {
    GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions")
}

pub fn namespaces_resource() -> GroupResource {
    GroupResource::new("", "namespaces")
}

/// Every built-in resource.
pub fn resources() -> Vec<ResourceInfo> {
    DEFS.iter()
        .map(|d| ResourceInfo {
            group: d.group.to_string(),
            version: d.version.to_string(),
            kind: d.kind.to_string(),
            list_kind: format!("{}List", d.kind),
            plural: d.plural.to_string(),
            singular: d.kind.to_lowercase(),
            namespaced: d.namespaced,
            short_names: d.short_names.iter().map(|s| s.to_string()).collect(),
            categories: d.categories.iter().map(|s| s.to_string()).collect(),
            verbs: if d.plural == "namespaces" {
                NAMESPACE_VERBS
            } else {
                ALL_VERBS
            }
            .iter()
            .map(|s| s.to_string())
            .collect(),
            status_subresource: d.status,
            schema: None,
            openapi_schema: None,
            printer_columns: Vec::new(),
            patch_kind: PatchKind::Builtin,
        })
        .collect()
}

/// Extra subresources listed in discovery besides `status` (verbs).
pub fn extra_subresources(info: &ResourceInfo) -> Vec<(&'static str, &'static [&'static str])> {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => vec![("finalize", &["update"])],
        _ => Vec::new(),
    }
}

/// Field selector fields a resource supports besides `metadata.name`/`metadata.namespace`.
pub fn field_selector_fields(info: &ResourceInfo) -> &'static [&'static str] {
    if info.patch_kind == PatchKind::Custom {
        return &[];
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("batch", "jobs") => &["status.successful"],
        _ => &[],
    }
}

/// PUT of a missing object creates it (leases and events do, like the real strategies).
pub fn allow_create_on_update(gr: &GroupResource) -> bool {
    matches!(
        (gr.group.as_str(), gr.resource.as_str()),
        ("coordination.k8s.io", "leases") | ("", "events") | ("events.k8s.io", "events")
    )
}

/// Whether a successful immediate DELETE returns the object (else a Success Status).
pub fn delete_returns_object(info: &ResourceInfo) -> bool {
    info.patch_kind == PatchKind::Custom
        || matches!(
            (info.group.as_str(), info.plural.as_str()),
            ("", "pods")
                | ("", "services")
                | ("", "namespaces")
                | ("apiextensions.k8s.io", "customresourcedefinitions")
        )
}

/// batch/v1 Jobs orphan their dependents unless told otherwise (kept for compatibility by
/// the real server, which warns about it).
pub fn orphans_by_default(info: &ResourceInfo) -> bool {
    info.group == "batch" && info.version == "v1" && info.plural == "jobs"
}

pub const JOB_ORPHAN_WARNING: &str = "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning";

/// `x-kubernetes-list-map-keys` of the built-in fields server-side apply merges by key.
pub fn list_map_keys(path: &[String]) -> Option<Vec<String>> {
    let last = path.last()?.as_str();
    let keys: &[&str] = match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets" => &["name"],
        "ports"
            if path
                .iter()
                .any(|p| p == "containers" || p == "initContainers") =>
        {
            &["containerPort", "protocol"]
        }
        "ports" => &["port", "protocol"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        _ => return None,
    };
    Some(keys.iter().map(|s| s.to_string()).collect())
}

/// Defaults and normalisation the apiserver applies to built-in kinds on every write
/// (`SetDefaults_*` and strategies): Secret `stringData` folded into `data`, `type: Opaque`,
/// Job defaults with the generated selector and pod template labels.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "secrets") => default_secret(obj),
        ("batch", "jobs") => default_job(obj),
        ("", "services")
            if obj.pointer("/spec/type").is_none()
                && obj.get("spec").is_some_and(Value::is_object) =>
        {
            obj["spec"]["type"] = json!("ClusterIP");
        }
        _ => {}
    }
}

fn default_secret(obj: &mut Value) {
    use base64::Engine as _;
    if let Some(Value::Object(string_data)) =
        obj.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default();
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    if obj
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        obj["type"] = json!("Opaque");
    }
}

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_string()).or_insert(v);
    }
}

fn default_job(obj: &mut Value) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    let parallel = spec.get("parallelism").cloned().unwrap_or(json!(1));
    set_default(spec, "parallelism", parallel);
    if spec.get("completions").is_none()
        && spec.get("completionMode").and_then(Value::as_str) != Some("Indexed")
    {
        spec["completions"] = json!(1);
    }
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    // The generated selector (manualSelector unset): controller-uid labels on selector and
    // pod template, as the Job strategy adds them.
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if !manual && !uid.is_empty() {
        if spec.get("selector").is_none() {
            spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        }
        if !spec.get("template").is_some_and(Value::is_object) {
            spec["template"] = json!({});
        }
        let tmpl = &mut spec["template"];
        if !tmpl.get("metadata").is_some_and(Value::is_object) {
            tmpl["metadata"] = json!({});
        }
        if !tmpl["metadata"].get("labels").is_some_and(Value::is_object) {
            tmpl["metadata"]["labels"] = json!({});
        }
        let labels = &mut tmpl["metadata"]["labels"];
        set_default(labels, "batch.kubernetes.io/controller-uid", json!(uid));
        set_default(labels, "batch.kubernetes.io/job-name", json!(name));
        set_default(labels, "controller-uid", json!(uid));
        set_default(labels, "job-name", json!(name));
    }
    if let Some(pod) = spec.pointer_mut("/template/spec").filter(|p| p.is_object()) {
        set_default(pod, "restartPolicy", json!("Never"));
        set_default(pod, "terminationGracePeriodSeconds", json!(30));
        set_default(pod, "dnsPolicy", json!("ClusterFirst"));
        set_default(pod, "securityContext", json!({}));
        set_default(pod, "schedulerName", json!("default-scheduler"));
        if let Some(containers) = pod.get_mut("containers").and_then(Value::as_array_mut) {
            for c in containers {
                let latest = c.get("image").and_then(Value::as_str).is_some_and(|i| {
                    !i.rsplit('/').next().unwrap_or(i).contains(':') || i.ends_with(":latest")
                });
                set_default(
                    c,
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                );
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
            }
        }
    }
}

/// events.k8s.io/v1 field names and the core v1 names they are stored under.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_events_v1(info: &ResourceInfo) -> bool {
    info.group == "events.k8s.io" && info.plural == "events"
}

fn rename_keys(obj: &mut Value, from_to: impl Iterator<Item = (&'static str, &'static str)>) {
    let Some(m) = obj.as_object_mut() else { return };
    for (from, to) in from_to {
        if let Some(v) = m.remove(from) {
            m.insert(to.to_string(), v);
        }
    }
}

/// Converts a body written through `info` into the stored form (events.k8s.io/v1 Events are
/// stored as core v1 Events).
pub fn to_storage(info: &ResourceInfo, obj: &mut Value) {
    if is_events_v1(info) {
        rename_keys(obj, EVENT_FIELDS.iter().copied());
        obj["apiVersion"] = json!("v1");
    }
}

/// Converts a stored object into the form served at `info`; `None` when no conversion but
/// the apiVersion is needed.
pub fn from_storage(info: &ResourceInfo, obj: &Value) -> Option<Value> {
    if !is_events_v1(info) {
        return None;
    }
    let mut out = obj.clone();
    rename_keys(&mut out, EVENT_FIELDS.iter().map(|(v1, core)| (*core, *v1)));
    out["apiVersion"] = json!("events.k8s.io/v1");
    Some(out)
}

/// Parses a field selector for `info`, mapping field labels to the stored object's paths
/// (events.k8s.io `regarding.*` to `involvedObject.*`, core `source` to `source.component`).
pub fn field_selector(
    info: &ResourceInfo,
    raw: &str,
) -> Result<crate::selectors::FieldSelector, crate::status::ApiError> {
    let mut sel = crate::selectors::FieldSelector::parse(raw, field_selector_fields(info))?;
    for r in &mut sel.requirements {
        if is_events_v1(info) {
            if let Some(rest) = r.field.strip_prefix("regarding.") {
                r.field = format!("involvedObject.{rest}");
            } else if r.field == "reportingController" {
                r.field = "reportingComponent".into();
            }
        } else if info.group.is_empty() && info.plural == "events" && r.field == "source" {
            r.field = "source.component".into();
        }
    }
    Ok(sel)
}

/// Table of built-in objects: column definitions and cells like kube-apiserver's printers.
pub fn table(
    info: &ResourceInfo,
    objects: &[&Value],
    include: IncludeObject,
    now: jiff::Timestamp,
) -> Value {
    let cols = columns(info);
    let column_definitions: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.0, "type": c.1, "format": c.2, "description": c.3, "priority": c.4}))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(info, o, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Object => row["object"] = (*o).clone(),
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

type Col = (&'static str, &'static str, &'static str, &'static str, i64);

const NAME: Col = (
    "Name",
    "string",
    "name",
    "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically.",
    0,
);
const AGE: Col = (
    "Age",
    "string",
    "",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
    0,
);

fn columns(info: &ResourceInfo) -> Vec<Col> {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => vec![
            NAME,
            ("Status", "string", "", "The status of the namespace", 0),
            AGE,
        ],
        ("", "secrets") => vec![
            NAME,
            ("Type", "string", "", "The type of the secret", 0),
            (
                "Data",
                "string",
                "",
                "The number of entries in the secret",
                0,
            ),
            AGE,
        ],
        ("", "configmaps") => vec![
            NAME,
            (
                "Data",
                "string",
                "",
                "The number of entries in the configmap",
                0,
            ),
            AGE,
        ],
        ("", "serviceaccounts") => vec![
            NAME,
            (
                "Secrets",
                "string",
                "",
                "Secrets is the list of secrets allowed to be used by pods running using this ServiceAccount.",
                0,
            ),
            AGE,
        ],
        ("", "services") => vec![
            NAME,
            ("Type", "string", "", "The type of the service", 0),
            (
                "Cluster-IP",
                "string",
                "",
                "The cluster IP of the service",
                0,
            ),
            (
                "External-IP",
                "string",
                "",
                "The external IPs of the service",
                0,
            ),
            ("Port(s)", "string", "", "The ports of the service", 0),
            AGE,
            (
                "Selector",
                "string",
                "",
                "Route service traffic to pods with label keys and values matching this selector.",
                1,
            ),
        ],
        ("", "pods") => vec![
            NAME,
            (
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            (
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            (
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted.",
                0,
            ),
            AGE,
        ],
        ("", "events") | ("events.k8s.io", "events") => vec![
            (
                "Last Seen",
                "string",
                "",
                "Time when last occurrence was observed",
                0,
            ),
            (
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning), new types could be added in the future.",
                0,
            ),
            (
                "Reason",
                "string",
                "",
                "This should be a short, machine understandable string that gives the reason for this event being generated.",
                0,
            ),
            (
                "Object",
                "string",
                "",
                "The object that this event is about.",
                0,
            ),
            (
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
            ("Name", "string", "name", NAME.3, 1),
        ],
        ("batch", "jobs") => vec![
            NAME,
            ("Status", "string", "", "Status of the job.", 0),
            (
                "Completions",
                "string",
                "",
                "The completion status of the job.",
                0,
            ),
            (
                "Duration",
                "string",
                "",
                "Time required to complete the job.",
                0,
            ),
            AGE,
        ],
        ("coordination.k8s.io", "leases") => vec![
            NAME,
            ("Holder", "string", "", "The holder of the lease.", 0),
            AGE,
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![
                NAME,
                (
                    "Created At",
                    "date",
                    "",
                    "CreationTimestamp is a timestamp representing the server time when this object was created.",
                    0,
                ),
            ]
        }
        _ => vec![NAME, AGE],
    }
}

fn s(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn count(v: &Value, ptr: &str) -> i64 {
    match v.pointer(ptr) {
        Some(Value::Object(m)) => m.len() as i64,
        Some(Value::Array(a)) => a.len() as i64,
        _ => 0,
    }
}

fn age(o: &Value, ptr: &str, now: jiff::Timestamp) -> String {
    match s(o, ptr).parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(now.duration_since(t)),
        Err(_) => "<unknown>".to_string(),
    }
}

fn cells(info: &ResourceInfo, o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = Value::String(s(o, "/metadata/name"));
    let created = || Value::String(age(o, "/metadata/creationTimestamp", now));
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => vec![name, json!(s(o, "/status/phase")), created()],
        ("", "secrets") => {
            let data = count(o, "/data") + count(o, "/stringData");
            vec![name, json!(s(o, "/type")), json!(data), created()]
        }
        ("", "configmaps") => vec![
            name,
            json!(count(o, "/data") + count(o, "/binaryData")),
            created(),
        ],
        ("", "serviceaccounts") => vec![name, json!(count(o, "/secrets")), created()],
        ("", "services") => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!("{}/{}", s(p, "/port"), non_empty(s(p, "/protocol"), "TCP"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let selector: Vec<String> = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(non_empty(s(o, "/spec/type"), "ClusterIP")),
                json!(non_empty(s(o, "/spec/clusterIP"), "<none>")),
                json!("<none>"),
                json!(non_empty(ports.join(","), "<none>")),
                created(),
                json!(non_empty(selector.join(","), "<none>")),
            ]
        }
        ("", "pods") => {
            let total = count(o, "/spec/containers");
            let ready = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                        .count()
                })
                .unwrap_or(0);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(non_empty(s(o, "/status/phase"), "Pending")),
                json!("0"),
                created(),
            ]
        }
        ("", "events") | ("events.k8s.io", "events") => {
            let (obj_ptr, last) = if info.group.is_empty() {
                ("/involvedObject", "/lastTimestamp")
            } else {
                ("/regarding", "/series/lastObservedTime")
            };
            let mut seen = s(o, last);
            for alt in [
                "/eventTime",
                "/lastTimestamp",
                "/deprecatedLastTimestamp",
                "/metadata/creationTimestamp",
            ] {
                if seen.is_empty() {
                    seen = s(o, alt);
                }
            }
            let last_seen = seen
                .parse::<jiff::Timestamp>()
                .map(|t| human_duration(now.duration_since(t)))
                .unwrap_or_else(|_| "<unknown>".into());
            let object = format!(
                "{}/{}",
                s(o, &format!("{obj_ptr}/kind")).to_lowercase(),
                s(o, &format!("{obj_ptr}/name"))
            );
            let message = if info.group.is_empty() {
                s(o, "/message")
            } else {
                s(o, "/note")
            };
            vec![
                json!(last_seen),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(object),
                json!(message),
                name,
            ]
        }
        ("batch", "jobs") => {
            let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(c) => format!(
                    "{}/{c}",
                    o.pointer("/status/succeeded")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                ),
                None => format!(
                    "{}/1 of {}",
                    o.pointer("/status/succeeded")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                    o.pointer("/spec/parallelism")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
            };
            let duration = match (
                s(o, "/status/startTime").parse::<jiff::Timestamp>(),
                s(o, "/status/completionTime").parse::<jiff::Timestamp>(),
            ) {
                (Ok(start), Ok(end)) => human_duration(end.duration_since(start)),
                (Ok(start), Err(_)) => human_duration(now.duration_since(start)),
                _ => String::new(),
            };
            vec![
                name,
                json!(job_status(o)),
                json!(completions),
                json!(duration),
                created(),
            ]
        }
        ("coordination.k8s.io", "leases") => {
            vec![name, json!(s(o, "/spec/holderIdentity")), created()]
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![name, json!(s(o, "/metadata/creationTimestamp"))]
        }
        _ => vec![name, created()],
    }
}

/// The job status column of kubectl 1.30+: Complete, Failed, Suspended, Running, ...
fn job_status(o: &Value) -> &'static str {
    let has = |t: &str| {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some(t)
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            })
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn non_empty(v: String, default: &str) -> String {
    if v.is_empty() { default.to_string() } else { v }
}

/// apimachinery's `duration.HumanDuration`: "5s", "3m", "2m30s", "5h", "2d", "3y".
pub fn human_duration(d: jiff::SignedDuration) -> String {
    let secs = d.as_secs();
    if secs < -1 {
        return "<invalid>".to_string();
    }
    let secs = secs.max(0);
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let d = jiff::SignedDuration::from_secs;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(150)), "2m30s");
        assert_eq!(human_duration(d(600)), "10m");
        assert_eq!(human_duration(d(3600 * 5 + 60)), "5h1m");
        assert_eq!(human_duration(d(3600 * 30)), "30h");
        assert_eq!(human_duration(d(3600 * 24 * 3)), "3d");
    }

    #[test]
    fn secret_and_job_defaults() {
        let info = resources()
            .into_iter()
            .find(|r| r.plural == "secrets")
            .unwrap();
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}});
        apply_defaults(&info, &mut s);
        assert_eq!(
            s,
            json!({"metadata": {"name": "s"}, "data": {"a": "Yg=="}, "type": "Opaque"})
        );
        let info = resources()
            .into_iter()
            .find(|r| r.plural == "jobs")
            .unwrap();
        let mut j = json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}});
        apply_defaults(&info, &mut j);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u"
        );
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["job-name"], "j");
        assert_eq!(
            j["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
    }

    #[test]
    fn events_v1_round_trip_through_core_storage() {
        let info = resources()
            .into_iter()
            .find(|r| r.group == "events.k8s.io")
            .unwrap();
        let mut e = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "regarding": {"name": "x"}, "note": "hi", "reportingController": "c"});
        to_storage(&info, &mut e);
        assert_eq!(
            e,
            json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"name": "x"}, "message": "hi", "reportingComponent": "c"})
        );
        let back = from_storage(&info, &e).unwrap();
        assert_eq!(back["regarding"]["name"], "x");
        assert_eq!(back["apiVersion"], "events.k8s.io/v1");
        let sel = field_selector(&info, "regarding.name=x").unwrap();
        assert_eq!(sel.requirements[0].field, "involvedObject.name");
        assert!(sel.matches(&e));
    }

    #[test]
    fn namespace_table() {
        let info = resources()
            .into_iter()
            .find(|r| r.plural == "namespaces")
            .unwrap();
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2020-01-01T00:00:00Z"}, "status": {"phase": "Active"}});
        let now: jiff::Timestamp = "2020-01-01T00:00:05Z".parse().unwrap();
        let t = table(&info, &[&ns], IncludeObject::Metadata, now);
        assert_eq!(t["rows"][0]["cells"], json!(["default", "Active", "5s"]));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["columnDefinitions"][1]["name"], "Status");
    }
}
