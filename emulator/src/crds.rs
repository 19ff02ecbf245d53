//! CustomResourceDefinitions: validation and defaulting of the CRD itself, establishment
//! (status conditions, accepted names) and turning each served version into a `ResourceInfo`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::builtin::crd_resource;
use crate::resource::{GroupResource, PatchKind, ResourceInfo};
use crate::schema::{PrinterColumn, StructuralSchema};
use crate::status::{ApiError, Cause};
use crate::store::State;

/// The finalizer the apiserver puts on every CRD so that deleting it first deletes its objects.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

const CR_VERBS: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];

/// What a valid CRD serves: one `ResourceInfo` per served version, and which one stores.
#[derive(Debug)]
pub struct Served {
    pub resources: Vec<ResourceInfo>,
    pub storage_version: String,
}

fn invalid(name: &str, field: &str, reason: &str, message: String) -> ApiError {
    ApiError::invalid(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        name,
        vec![Cause {
            reason: reason.into(),
            message,
            field: field.into(),
        }],
    )
}

fn required(name: &str, field: &str) -> ApiError {
    invalid(
        name,
        field,
        "FieldValueRequired",
        format!("{field}: Required value"),
    )
}

/// Validates a CRD, applies the apiserver's defaults to its spec and compiles every served
/// version's schema. On success the CRD's status is filled in as if the establishing
/// controllers had run.
pub fn prepare(crd: &mut Value, old: Option<&Value>, now: &str) -> Result<Served, ApiError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    let kind = str_at(crd, "/spec/names/kind");
    if group.is_empty() {
        return Err(required(&name, "spec.group"));
    }
    if plural.is_empty() {
        return Err(required(&name, "spec.names.plural"));
    }
    if kind.is_empty() {
        return Err(required(&name, "spec.names.kind"));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            &name,
            "metadata.name",
            "FieldValueInvalid",
            format!(
                "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
            ),
        ));
    }
    let scope = str_at(crd, "/spec/scope");
    let namespaced = match scope.as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        "" => return Err(required(&name, "spec.scope")),
        other => {
            return Err(invalid(
                &name,
                "spec.scope",
                "FieldValueNotSupported",
                format!(
                    "spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                ),
            ));
        }
    };
    if let Some(old_scope) = old.map(|o| str_at(o, "/spec/scope"))
        && !old_scope.is_empty()
        && old_scope != scope
    {
        return Err(invalid(
            &name,
            "spec.scope",
            "FieldValueInvalid",
            format!("spec.scope: Invalid value: {scope:?}: field is immutable"),
        ));
    }

    // Defaults (SetDefaults_CustomResourceDefinitionSpec).
    let singular = non_empty_or(str_at(crd, "/spec/names/singular"), kind.to_lowercase());
    let list_kind = non_empty_or(str_at(crd, "/spec/names/listKind"), format!("{kind}List"));
    crd["spec"]["names"]["singular"] = json!(singular);
    crd["spec"]["names"]["listKind"] = json!(list_kind);
    if crd.pointer("/spec/conversion").is_none() {
        crd["spec"]["conversion"] = json!({"strategy": "None"});
    }

    let short_names = str_list(crd, "/spec/names/shortNames");
    let categories = str_list(crd, "/spec/names/categories");
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        return Err(required(&name, "spec.versions"));
    }
    let storage: Vec<String> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|v| str_at(v, "/name"))
        .collect();
    if storage.len() != 1 {
        return Err(invalid(
            &name,
            "spec.versions",
            "FieldValueInvalid",
            format!(
                "spec.versions: Invalid value: {}: must have exactly one version marked as storage version",
                Value::Array(versions.clone())
            ),
        ));
    }
    let storage_version = storage[0].clone();

    let mut resources = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let vname = str_at(v, "/name");
        if vname.is_empty() {
            return Err(required(&name, &format!("spec.versions[{i}].name")));
        }
        let schema_field = format!("spec.versions[{i}].schema.openAPIV3Schema");
        let Some(raw_schema) = v.pointer("/schema/openAPIV3Schema") else {
            return Err(invalid(
                &name,
                &schema_field,
                "FieldValueRequired",
                format!("{schema_field}: Required value: schemas are required"),
            ));
        };
        let compiled = StructuralSchema::compile_at(raw_schema, &schema_field).map_err(|errs| {
            ApiError::from_field_errors(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &name,
                &errs,
            )
        })?;
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let status_subresource = v.pointer("/subresources/status").is_some();
        let printer_columns = printer_columns(v);
        resources.push(ResourceInfo {
            group: group.clone(),
            version: vname,
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: short_names.clone(),
            categories: categories.clone(),
            verbs: CR_VERBS.iter().map(|s| s.to_string()).collect(),
            status_subresource,
            schema: Some(Arc::new(compiled)),
            openapi_schema: Some(raw_schema.clone()),
            printer_columns,
            patch_kind: PatchKind::Custom,
        });
    }

    set_established_status(crd, old, &storage_version, now);
    Ok(Served {
        resources,
        storage_version,
    })
}

fn printer_columns(version: &Value) -> Vec<PrinterColumn> {
    let cols = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array);
    match cols {
        Some(cols) if !cols.is_empty() => cols
            .iter()
            .map(|c| PrinterColumn {
                name: str_at(c, "/name"),
                type_: str_at(c, "/type"),
                format: c.get("format").and_then(Value::as_str).map(str::to_string),
                description: str_at(c, "/description"),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                json_path: str_at(c, "/jsonPath"),
            })
            .collect(),
        // The apiserver's default when a CRD declares no columns.
        _ => vec![PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            format: None,
            description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata".into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        }],
    }
}

/// Status as the naming and establishing controllers leave it: names accepted, established,
/// storage version recorded. Condition transition times survive unchanged conditions.
fn set_established_status(crd: &mut Value, old: Option<&Value>, storage_version: &str, now: &str) {
    let names = crd["spec"]["names"].clone();
    let old_conditions: Vec<Value> = old
        .and_then(|o| o.pointer("/status/conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let since = |t: &str| {
        old_conditions
            .iter()
            .find(|c| {
                c.get("type").and_then(Value::as_str) == Some(t)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now))
    };
    let mut stored: Vec<String> = old
        .map(|o| str_list(o, "/status/storedVersions"))
        .unwrap_or_default();
    if !stored.iter().any(|v| v == storage_version) {
        stored.push(storage_version.to_string());
    }
    let mut accepted = serde_json::Map::new();
    for k in [
        "plural",
        "singular",
        "shortNames",
        "kind",
        "listKind",
        "categories",
    ] {
        if let Some(v) = names.get(k) {
            accepted.insert(k.into(), v.clone());
        }
    }
    crd["status"] = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": since("NamesAccepted"), "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": since("Established"), "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "acceptedNames": Value::Object(accepted),
        "storedVersions": stored,
    });
}

/// Adds the Terminating condition a CRD shows while its objects are being removed.
pub fn mark_terminating(crd: &mut Value, now: &str) {
    let cond = json!({
        "type": "Terminating",
        "status": "True",
        "lastTransitionTime": now,
        "reason": "InstanceDeletionInProgress",
        "message": "CustomResource deletion is in progress",
    });
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    match crd["status"]
        .get_mut("conditions")
        .and_then(Value::as_array_mut)
    {
        Some(conds) => {
            conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("Terminating"));
            conds.push(cond);
        }
        None => crd["status"]["conditions"] = json!([cond]),
    }
}

/// Serves what a stored CRD describes, replacing what it served before.
pub fn register(state: &mut State, served: Served, previous: Option<&GroupResource>) {
    let Some(first) = served.resources.first() else {
        if let Some(prev) = previous {
            state.registry.remove_resource(prev);
        }
        return;
    };
    let gr = first.group_resource_key();
    if let Some(prev) = previous
        && prev != &gr
    {
        state.registry.remove_resource(prev);
        state.drop_store(prev);
    }
    state.registry.remove_resource(&gr);
    for info in served.resources {
        let storage = info.version == served.storage_version;
        state.registry.insert(info, storage);
    }
    state.ensure_store(&gr);
}

/// The group/resource a CRD object serves.
pub fn served_resource(crd: &Value) -> Option<GroupResource> {
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    (!group.is_empty() && !plural.is_empty()).then(|| GroupResource::new(group, plural))
}

/// Stops serving a removed CRD and drops its objects.
pub fn unregister(state: &mut State, crd: &Value) {
    if let Some(gr) = served_resource(crd) {
        state.registry.remove_resource(&gr);
        state.drop_store(&gr);
    }
}

/// The CRD object that serves `gr`, if `gr` is a custom resource.
pub fn crd_for(state: &State, gr: &GroupResource) -> Option<Arc<Value>> {
    state.get(
        &crd_resource(),
        &crate::store::ObjectKey::new("", format!("{}.{}", gr.resource, gr.group)),
    )
}

fn str_at(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn str_list(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn non_empty_or(s: String, default: String) -> String {
    if s.is_empty() { default } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                     "schema": {"openAPIV3Schema": {"type": "object"}},
                     "additionalPrinterColumns": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}]},
                    {"name": "v1beta1", "served": false, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}}
                ]
            }
        })
    }

    #[test]
    fn prepares_served_versions_and_status() {
        let mut c = crd();
        let served = prepare(&mut c, None, "2024-01-01T00:00:00Z").unwrap();
        assert_eq!(served.resources.len(), 1);
        let info = &served.resources[0];
        assert!(info.status_subresource && info.namespaced);
        assert_eq!(info.singular, "widget");
        assert_eq!(info.list_kind, "WidgetList");
        assert_eq!(info.printer_columns[0].name, "Phase");
        assert_eq!(c["status"]["conditions"][1]["type"], "Established");
        assert_eq!(c["status"]["acceptedNames"]["kind"], "Widget");
        assert_eq!(c["status"]["storedVersions"], json!(["v1"]));
        assert_eq!(c["spec"]["conversion"]["strategy"], "None");
    }

    #[test]
    fn rejects_bad_name_and_storage() {
        let mut c = crd();
        c["metadata"]["name"] = json!("wrong.example.com");
        let err = prepare(&mut c, None, "now").unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message
                .contains("must be spec.names.plural+\".\"+spec.group"),
            "{}",
            err.message
        );
        let mut c = crd();
        c["spec"]["versions"][1]["storage"] = json!(true);
        assert!(
            prepare(&mut c, None, "now")
                .unwrap_err()
                .message
                .contains("exactly one version")
        );
        let mut c = crd();
        c["spec"]["versions"][0]["schema"] = json!({});
        let err = prepare(&mut c, None, "now").unwrap_err();
        assert!(
            err.message
                .contains("spec.versions[0].schema.openAPIV3Schema: Required value"),
            "{}",
            err.message
        );
    }
}
