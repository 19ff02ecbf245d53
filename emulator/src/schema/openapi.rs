//! OpenAPI v3 discovery documents (`/openapi/v3`, `/openapi/v3/apis/<g>/<v>`), shaped like
//! kube-apiserver's: schemas named `dev.privacy-operator.v1alpha1.DataSubjectRequest` or
//! `io.k8s.api.core.v1.Secret` carrying `x-kubernetes-group-version-kind`, and operations with
//! their query parameters. kubectl relies on them: `explain` reads the schemas, and `apply`
//! skips client-side validation when PATCH declares `fieldValidation`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::builtin_schemas;
use crate::resource::{PatchKind, ResourceInfo};

const OBJECT_META_REF: &str =
    "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META_REF: &str = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const STATUS_REF: &str = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS_REF: &str =
    "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH_REF: &str = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

const API_VERSION_DESC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DESC: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_METADATA_DESC: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// The index path of a group-version: `api/v1` or `apis/<group>/<version>`.
/// Paths already in that form (`api/v1`, `apis/g/v`) are kept.
pub fn gv_path(group_version: &str) -> String {
    let gv = group_version.trim_start_matches('/');
    if gv.starts_with("api/") || gv.starts_with("apis/") {
        gv.to_string()
    } else if gv.contains('/') {
        format!("apis/{gv}")
    } else {
        format!("api/{gv}")
    }
}

/// `GET /openapi/v3` for group-versions (`v1`, `batch/v1`, ...) whose documents are not at
/// hand: the hash only depends on the name. Prefer [`index_for`], whose hashes change with the
/// documents (kubectl caches documents by URL, hash included).
pub fn index(group_versions: &[String]) -> Value {
    let entries: Vec<(String, String)> = group_versions
        .iter()
        .map(|gv| (gv.clone(), hash_of(gv)))
        .collect();
    index_with_hashes(&entries)
}

/// `GET /openapi/v3` from `(group-version, document hash)` pairs.
pub fn index_with_hashes(entries: &[(String, String)]) -> Value {
    let mut paths = Map::new();
    for (gv, hash) in entries {
        let p = gv_path(gv);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3` for every served resource, hashing each group-version's document.
pub fn index_for(resources: &[Arc<ResourceInfo>]) -> Value {
    let entries: Vec<(String, String)> = by_group_version(resources)
        .into_iter()
        .map(|(gv, rs)| {
            let doc = group_version_document(&rs);
            (gv, document_hash(&doc))
        })
        .collect();
    index_with_hashes(&entries)
}

/// Groups resources by `apiVersion`, sorted.
pub fn by_group_version(
    resources: &[Arc<ResourceInfo>],
) -> BTreeMap<String, Vec<Arc<ResourceInfo>>> {
    let mut out: BTreeMap<String, Vec<Arc<ResourceInfo>>> = BTreeMap::new();
    for r in resources {
        out.entry(r.api_version()).or_default().push(r.clone());
    }
    out
}

/// A stable digest of a document, uppercase hex like the apiserver's.
pub fn document_hash(doc: &Value) -> String {
    hash_of(&doc.to_string())
}

fn hash_of(s: &str) -> String {
    let mut h1 = std::hash::DefaultHasher::new();
    s.hash(&mut h1);
    let mut h2 = std::hash::DefaultHasher::new();
    (s, 0x5eed_u32).hash(&mut h2);
    format!("{:016X}{:016X}", h1.finish(), h2.finish())
}

/// The definition name of a kind: `io.k8s.api.core.v1.Secret` for built-ins (as k8s-openapi
/// names them), reversed group for custom resources: `dev.privacy-operator.v1alpha1.Kind`.
pub fn definition_name(group: &str, version: &str, kind: &str) -> String {
    if group.is_empty() {
        return format!("io.k8s.api.core.{version}.{kind}");
    }
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// `GET /openapi/v3/apis/<g>/<v>`: schemas and operations of the resources of one
/// group-version.
pub fn group_version_document(resources: &[Arc<ResourceInfo>]) -> Value {
    let mut generator = builtin_schemas::generator();
    builtin_schemas::add_common(&mut generator);
    let mut extra: Map<String, Value> = Map::new();
    let mut tags: Vec<(String, Value)> = Vec::new();
    let mut paths = Map::new();
    let mut custom = false;

    for r in resources {
        let gvk = json!({"group": r.group, "kind": r.kind, "version": r.version});
        let builtin_name = if r.openapi_schema.is_none() {
            builtin_schemas::add_builtin_kind(&mut generator, &r.group, &r.version, &r.kind)
        } else {
            None
        };
        let kind_name = match builtin_name {
            Some(n) => n,
            None => {
                custom |= r.openapi_schema.is_some();
                let name = definition_name(&r.group, &r.version, &r.kind);
                extra.insert(name.clone(), published_schema(r.openapi_schema.as_ref()));
                name
            }
        };
        let list_name = format!("{kind_name}List");
        extra.insert(list_name.clone(), list_schema(r, &kind_name));
        add_operations(&mut paths, r, &kind_name, &list_name, &gvk);
        // Tagged after generation: built-in kinds come from the generator.
        tags.push((kind_name, gvk));
    }

    let mut schemas = builtin_schemas::take_definitions(&mut generator);
    schemas.extend(extra);
    for (name, gvk) in tags {
        if let Some(Value::Object(def)) = schemas.get_mut(&name) {
            def.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
    }

    let title = if custom {
        "Kubernetes CRD Swagger"
    } else {
        "Kubernetes"
    };
    json!({
        "openapi": "3.0.0",
        "info": {"title": title, "version": if custom { "v0.1.0" } else { "v1.33.0" }},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// A CRD's schema as the apiserver publishes it: `apiVersion`, `kind` and a `metadata`
/// reference to ObjectMeta added at the root.
fn published_schema(raw: Option<&Value>) -> Value {
    let mut s = raw
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Value::Object(obj) = &mut s {
        obj.entry("type").or_insert_with(|| json!("object"));
        let props = obj.entry("properties").or_insert_with(|| json!({}));
        if let Value::Object(props) = props {
            props.insert(
                "apiVersion".into(),
                json!({"description": API_VERSION_DESC, "type": "string"}),
            );
            props.insert(
                "kind".into(),
                json!({"description": KIND_DESC, "type": "string"}),
            );
            props.insert(
                "metadata".into(),
                json!({"allOf": [{"$ref": OBJECT_META_REF}], "description": METADATA_DESC}),
            );
        }
    }
    s
}

fn list_schema(r: &ResourceInfo, kind_name: &str) -> Value {
    json!({
        "description": format!("{} is a list of {}", r.list_kind, r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": API_VERSION_DESC, "type": "string"},
            "items": {
                "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", r.plural),
                "type": "array",
                "items": {"$ref": format!("#/components/schemas/{kind_name}")},
            },
            "kind": {"description": KIND_DESC, "type": "string"},
            "metadata": {"allOf": [{"$ref": LIST_META_REF}], "description": LIST_METADATA_DESC},
        },
        "x-kubernetes-group-version-kind": [{"group": r.group, "kind": r.list_kind, "version": r.version}],
    })
}

fn query_param(name: &str, description: &str, type_: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": type_, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn pretty() -> Value {
    query_param(
        "pretty",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
        "string",
    )
}

fn dry_run() -> Value {
    query_param(
        "dryRun",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
        "string",
    )
}

fn field_manager() -> Value {
    query_param(
        "fieldManager",
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
        "string",
    )
}

fn field_validation() -> Value {
    query_param(
        "fieldValidation",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
        "string",
    )
}

fn list_params() -> Vec<Value> {
    vec![
        query_param(
            "allowWatchBookmarks",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion.",
            "boolean",
        ),
        query_param(
            "continue",
            "The continue option should be set when retrieving more results from the server.",
            "string",
        ),
        query_param(
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
            "string",
        ),
        query_param(
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
            "string",
        ),
        query_param(
            "limit",
            "limit is a maximum number of responses to return for a list call.",
            "integer",
        ),
        query_param(
            "resourceVersion",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
            "string",
        ),
        query_param(
            "resourceVersionMatch",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
            "string",
        ),
        query_param(
            "sendInitialEvents",
            "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection.",
            "boolean",
        ),
        query_param(
            "timeoutSeconds",
            "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
            "integer",
        ),
        query_param(
            "watch",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
            "boolean",
        ),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query_param(
            "gracePeriodSeconds",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately.",
            "integer",
        ),
        query_param(
            "orphanDependents",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned.",
            "boolean",
        ),
        query_param(
            "propagationPolicy",
            "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. Acceptable values are: 'Orphan', 'Background', 'Foreground'.",
            "string",
        ),
    ]
}

fn content(schema_ref: &str) -> Value {
    let s = json!({"schema": {"$ref": schema_ref}});
    json!({"application/json": s, "application/yaml": s, "application/vnd.kubernetes.protobuf": s})
}

fn responses(codes: &[&str], schema_ref: &str) -> Value {
    let mut m = Map::new();
    for c in codes {
        let desc = match *c {
            "200" => "OK",
            "201" => "Created",
            _ => "Accepted",
        };
        m.insert(
            (*c).to_string(),
            json!({"description": desc, "content": content(schema_ref)}),
        );
    }
    m.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(m)
}

fn camel(s: &str) -> String {
    s.split(['.', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn add_operations(
    paths: &mut Map<String, Value>,
    r: &ResourceInfo,
    kind_ref: &str,
    list_ref: &str,
    gvk: &Value,
) {
    let kind_ref = format!("#/components/schemas/{kind_ref}");
    let list_ref = format!("#/components/schemas/{list_ref}");
    let group_label = if r.group.is_empty() {
        "Core".to_string()
    } else {
        camel(r.group.trim_end_matches(".k8s.io"))
    };
    let gv_camel = format!("{group_label}{}", camel(&r.version));
    let tag = format!(
        "{}_{}",
        {
            let mut g = group_label.clone();
            if let Some(f) = g.get_mut(0..1) {
                f.make_ascii_lowercase();
            }
            g
        },
        r.version
    );
    let prefix = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let can = |v: &str| r.verbs.iter().any(|x| x == v);
    let op = |verb: &str,
              action: &str,
              what: &str,
              desc: String,
              params: Vec<Value>,
              body: Option<Value>,
              resp: Value| {
        let mut o = json!({
            "tags": [tag],
            "description": desc,
            "operationId": format!("{verb}{gv_camel}{what}"),
            "parameters": params,
            "responses": resp,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        });
        if let Some(b) = body {
            o["requestBody"] = b;
        }
        o
    };
    let body = |reference: &str| json!({"content": {"*/*": {"schema": {"$ref": reference}}}, "required": true});
    // Custom resources take no strategic merge patch: kubectl reads this list to choose
    // between a strategic and a JSON merge patch for client-side apply.
    let mut patch_types = vec![
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
    ];
    if r.patch_kind == PatchKind::Builtin {
        patch_types.push("application/strategic-merge-patch+json");
    }
    let patch_content: Map<String, Value> = patch_types
        .into_iter()
        .map(|t| (t.to_string(), json!({"schema": {"$ref": PATCH_REF}})))
        .collect();
    let patch_body = json!({"content": patch_content, "required": true});
    let name_param = path_param("name", &format!("name of the {}", r.kind));
    let ns_param = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let scope_params = |with_name: bool| {
        let mut v = Vec::new();
        if with_name {
            v.push(name_param.clone());
        }
        if r.namespaced {
            v.push(ns_param.clone());
        }
        v.push(pretty());
        v
    };
    let collection = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let kind = &r.kind;

    let mut coll = Map::new();
    if can("list") {
        coll.insert(
            "get".into(),
            op(
                "list",
                "list",
                &format!("{ns}{kind}"),
                format!("list or watch objects of kind {kind}"),
                list_params(),
                None,
                responses(&["200"], &list_ref),
            ),
        );
    }
    if can("create") {
        coll.insert(
            "post".into(),
            op(
                "create",
                "post",
                &format!("{ns}{kind}"),
                format!("create a {kind}"),
                vec![dry_run(), field_manager(), field_validation()],
                Some(body(&kind_ref)),
                responses(&["200", "201", "202"], &kind_ref),
            ),
        );
    }
    if can("deletecollection") {
        let mut params = delete_params();
        params.extend(list_params());
        coll.insert(
            "delete".into(),
            op(
                "deletecollection",
                "deletecollection",
                &format!("{ns}{kind}"),
                format!("delete collection of {kind}"),
                params,
                Some(body(DELETE_OPTIONS_REF)),
                responses(&["200"], STATUS_REF),
            ),
        );
    }
    if !coll.is_empty() {
        coll.insert("parameters".into(), Value::Array(scope_params(false)));
        paths.insert(collection.clone(), Value::Object(coll));
    }

    let item = format!("{collection}/{{name}}");
    let mut one = Map::new();
    if can("get") {
        one.insert(
            "get".into(),
            op(
                "read",
                "get",
                &format!("{ns}{kind}"),
                format!("read the specified {kind}"),
                vec![],
                None,
                responses(&["200"], &kind_ref),
            ),
        );
    }
    if can("update") {
        one.insert(
            "put".into(),
            op(
                "replace",
                "put",
                &format!("{ns}{kind}"),
                format!("replace the specified {kind}"),
                vec![dry_run(), field_manager(), field_validation()],
                Some(body(&kind_ref)),
                responses(&["200", "201"], &kind_ref),
            ),
        );
    }
    if can("patch") {
        let force = query_param(
            "force",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
            "boolean",
        );
        one.insert(
            "patch".into(),
            op(
                "patch",
                "patch",
                &format!("{ns}{kind}"),
                format!("partially update the specified {kind}"),
                vec![dry_run(), field_manager(), field_validation(), force],
                Some(patch_body.clone()),
                responses(&["200", "201"], &kind_ref),
            ),
        );
    }
    if can("delete") {
        one.insert(
            "delete".into(),
            op(
                "delete",
                "delete",
                &format!("{ns}{kind}"),
                format!("delete a {kind}"),
                delete_params(),
                Some(body(DELETE_OPTIONS_REF)),
                responses(&["200", "202"], &kind_ref),
            ),
        );
    }
    if !one.is_empty() {
        one.insert("parameters".into(), Value::Array(scope_params(true)));
        paths.insert(item.clone(), Value::Object(one));
    }

    if r.status_subresource {
        let mut st = Map::new();
        st.insert(
            "get".into(),
            op(
                "read",
                "get",
                &format!("{ns}{kind}Status"),
                format!("read status of the specified {kind}"),
                vec![],
                None,
                responses(&["200"], &kind_ref),
            ),
        );
        st.insert(
            "put".into(),
            op(
                "replace",
                "put",
                &format!("{ns}{kind}Status"),
                format!("replace status of the specified {kind}"),
                vec![dry_run(), field_manager(), field_validation()],
                Some(body(&kind_ref)),
                responses(&["200", "201"], &kind_ref),
            ),
        );
        let force = query_param(
            "force",
            "Force is going to \"force\" Apply requests.",
            "boolean",
        );
        st.insert(
            "patch".into(),
            op(
                "patch",
                "patch",
                &format!("{ns}{kind}Status"),
                format!("partially update status of the specified {kind}"),
                vec![dry_run(), field_manager(), field_validation(), force],
                Some(patch_body),
                responses(&["200", "201"], &kind_ref),
            ),
        );
        st.insert("parameters".into(), Value::Array(scope_params(true)));
        paths.insert(format!("{item}/status"), Value::Object(st));
    }

    if r.namespaced && can("list") {
        paths.insert(
            format!("{prefix}/{}", r.plural),
            json!({
                "get": op("list", "list", &format!("{kind}ForAllNamespaces"), format!("list or watch objects of kind {kind}"), list_params(), None, responses(&["200"], &list_ref)),
                "parameters": [pretty()],
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsr() -> Arc<ResourceInfo> {
        Arc::new(ResourceInfo {
            group: "privacy-operator.dev".into(),
            version: "v1alpha1".into(),
            kind: "DataSubjectRequest".into(),
            list_kind: "DataSubjectRequestList".into(),
            plural: "datasubjectrequests".into(),
            singular: "datasubjectrequest".into(),
            namespaced: true,
            short_names: vec!["dsr".into()],
            categories: vec![],
            verbs: [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
            .map(String::from)
            .to_vec(),
            status_subresource: true,
            schema: None,
            openapi_schema: Some(
                json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"type": {"type": "string"}}}}}),
            ),
            printer_columns: vec![],
            patch_kind: PatchKind::Custom,
        })
    }

    fn secret() -> Arc<ResourceInfo> {
        Arc::new(ResourceInfo {
            group: String::new(),
            version: "v1".into(),
            kind: "Secret".into(),
            list_kind: "SecretList".into(),
            plural: "secrets".into(),
            singular: "secret".into(),
            namespaced: true,
            short_names: vec![],
            categories: vec![],
            verbs: [
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
            .map(String::from)
            .to_vec(),
            status_subresource: false,
            schema: None,
            openapi_schema: None,
            printer_columns: vec![],
            patch_kind: PatchKind::Builtin,
        })
    }

    #[test]
    fn crd_document() {
        let doc = group_version_document(&[dsr()]);
        let name = "dev.privacy-operator.v1alpha1.DataSubjectRequest";
        let s = &doc["components"]["schemas"][name];
        assert_eq!(
            s["x-kubernetes-group-version-kind"],
            json!([{"group": "privacy-operator.dev", "kind": "DataSubjectRequest", "version": "v1alpha1"}])
        );
        assert_eq!(
            s["properties"]["metadata"]["allOf"][0]["$ref"],
            OBJECT_META_REF
        );
        assert!(
            doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
                .is_object()
        );
        assert!(doc["components"]["schemas"][format!("{name}List")].is_object());
        let patch = &doc["paths"]["/apis/privacy-operator.dev/v1alpha1/namespaces/{namespace}/datasubjectrequests/{name}"]
            ["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "DataSubjectRequest"
        );
        assert_eq!(
            patch["operationId"],
            "patchPrivacyOperatorDevV1alpha1NamespacedDataSubjectRequest"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        assert!(
            doc["paths"]["/apis/privacy-operator.dev/v1alpha1/datasubjectrequests"]["get"]
                .is_object()
        );
        assert!(doc["paths"]["/apis/privacy-operator.dev/v1alpha1/namespaces/{namespace}/datasubjectrequests/{name}/status"]["patch"].is_object());
    }

    #[test]
    fn builtin_document_and_index() {
        let doc = group_version_document(&[secret()]);
        let s = &doc["components"]["schemas"]["io.k8s.api.core.v1.Secret"];
        assert_eq!(s["x-kubernetes-group-version-kind"][0]["kind"], "Secret");
        assert_eq!(s["properties"]["type"]["type"], "string");
        assert_eq!(
            doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"]["operationId"],
            "patchCoreV1NamespacedSecret"
        );
        let idx = index_for(&[secret(), dsr()]);
        let url = idx["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="));
        assert!(idx["paths"]["apis/privacy-operator.dev/v1alpha1"].is_object());
        assert_eq!(
            index(&["batch/v1".to_string()])["paths"]["apis/batch/v1"]["serverRelativeURL"]
                .as_str()
                .map(|s| s.starts_with("/openapi/v3/apis/batch/v1?hash=")),
            Some(true)
        );
    }
}
