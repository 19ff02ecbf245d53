//! Object operations shared by the HTTP server and the in-process handle: get, list, create,
//! update, patch, delete. This is where kube-apiserver's generic registry rules live
//! (resourceVersion preconditions, generation, status subresource split, managedFields,
//! dry-run, field validation, the CRD schema pipeline).

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::apply::{self, ApplyContext};
use crate::builtin::{self, crd_resource, namespaces_resource};
use crate::crds;
use crate::lifecycle::{self, DeleteOptions, Deleted};
use crate::meta::{self, finalizers, is_deleting, metadata_mut, now_rfc3339};
use crate::patch;
use crate::resource::{GroupResource, PatchKind, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, Cause};
use crate::store::{ObjectKey, State, Store, meta_str};

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    /// The server default.
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Ignore" => Ok(FieldValidation::Ignore),
            "Warn" | "" => Ok(FieldValidation::Warn),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Options of a write request.
#[derive(Debug, Clone, Default)]
pub struct WriteParams {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub user_agent: String,
}

impl WriteParams {
    /// The explicit field manager, else the user agent's product name like the apiserver.
    fn manager(&self) -> String {
        if let Some(m) = self.field_manager.as_ref().filter(|m| !m.is_empty()) {
            return m.clone();
        }
        let ua = self.user_agent.split('/').next().unwrap_or_default();
        let ua: String = ua.chars().take(128).collect();
        if ua.is_empty() {
            "unknown".to_string()
        } else {
            ua
        }
    }
}

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
    /// `namespaces/<name>/finalize`: only `spec.finalizers` changes.
    Finalize,
}

impl Subresource {
    fn name(self) -> Option<&'static str> {
        match self {
            Subresource::Main => None,
            Subresource::Status => Some("status"),
            Subresource::Finalize => Some("finalize"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    /// From the request's Content-Type; `None` for anything else (415).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml"
            | "application/apply-patch+json"
            | "application/apply-patch+cbor" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// A successful write.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub object: Arc<Value>,
    pub warnings: Vec<String>,
}

/// List request options.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining_item_count: Option<u64>,
}

/// The object store plus the API rules on top of it.
pub struct Core {
    pub store: Store,
}

impl Core {
    /// A store with the built-in resources and the namespaces every cluster has.
    pub fn new(history_capacity: usize) -> Self {
        let core = Core {
            store: Store::new(history_capacity),
        };
        {
            let mut state = core.store.lock();
            for info in builtin::resources() {
                let gr = info.group_resource_key();
                state.registry.insert(info, true);
                state.ensure_store(&gr);
            }
            let now = now_rfc3339();
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj = json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": ns,
                        "uid": meta::new_uid(),
                        "creationTimestamp": now,
                        "labels": {"kubernetes.io/metadata.name": ns},
                    },
                    "spec": {"finalizers": [lifecycle::NAMESPACE_FINALIZER]},
                    "status": {"phase": "Active"},
                });
                state.put(&namespaces_resource(), obj);
            }
        }
        core
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.store.lock().registry.get(group, version, plural)
    }

    pub fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let state = self.store.lock();
        let obj = state
            .get(&info.group_resource_key(), &ObjectKey::new(ns, name))
            .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        Ok(for_version(info, obj))
    }

    pub fn list(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        q: &ListQuery,
    ) -> Result<ListPage, ApiError> {
        let state = self.store.lock();
        list_locked(&state, info, ns, q)
    }

    pub fn create(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        body: Value,
        p: &WriteParams,
    ) -> Result<Reply, ApiError> {
        let mut state = self.store.lock();
        create_locked(&mut state, info, ns, body, p, false)
    }

    pub fn update(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        mut body: Value,
        p: &WriteParams,
        sub: Subresource,
    ) -> Result<Reply, ApiError> {
        check_type_meta(info, &mut body)?;
        check_name_and_namespace(info, ns, Some(name), &mut body)?;
        let mut state = self.store.lock();
        let key = ObjectKey::new(ns.unwrap_or_default(), name);
        match state.get(&info.group_resource_key(), &key) {
            Some(old) => update_locked(&mut state, info, old, body, p, sub, UpdateKind::Put),
            None if sub == Subresource::Main
                && builtin::allow_create_on_update(&info.group_resource_key()) =>
            {
                if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                create_locked(&mut state, info, ns, body, p, false)
            }
            None => Err(ApiError::not_found(&info.group, &info.plural, name)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        p: &WriteParams,
        sub: Subresource,
        force: bool,
    ) -> Result<Reply, ApiError> {
        let mut state = self.store.lock();
        let key = ObjectKey::new(ns.unwrap_or_default(), name);
        let old = state.get(&info.group_resource_key(), &key);
        let now = now_rfc3339();
        match patch_type {
            PatchType::Apply => {
                let manager = p.field_manager.clone().filter(|m| !m.is_empty()).ok_or_else(|| {
                    ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
                })?;
                let mut config: Value = serde_yaml_ng::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                if !config.is_object() {
                    return Err(ApiError::bad_request(
                        "apply patch must be a YAML or JSON object",
                    ));
                }
                check_type_meta(info, &mut config)?;
                check_name_and_namespace(info, ns, Some(name), &mut config)?;
                let keys = list_map_keys_fn(info);
                let ctx = ApplyContext {
                    manager: &manager,
                    force,
                    subresource: sub.name(),
                    status_subresource: info.status_subresource,
                    now: &now,
                    list_map_keys: &*keys,
                };
                match old {
                    None if sub == Subresource::Main => {
                        let created = apply::apply(None, &config, &ctx)?;
                        let mut reply = create_locked(&mut state, info, ns, created, p, true)?;
                        reply.code = 201;
                        Ok(reply)
                    }
                    None => Err(ApiError::not_found(&info.group, &info.plural, name)),
                    Some(old) => {
                        let live = for_version(info, old.clone());
                        let applied = apply::apply(Some(&live), &config, &ctx)?;
                        update_locked(&mut state, info, old, applied, p, sub, UpdateKind::Apply)
                    }
                }
            }
            other => {
                let old =
                    old.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
                let live = for_version(info, old.clone());
                let patched = match other {
                    PatchType::Json => patch::json_patch(&live, body)?,
                    PatchType::Merge => patch::merge_patch(&live, body)?,
                    _ if info.patch_kind == PatchKind::Custom => {
                        return Err(ApiError::new(
                            415,
                            "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                        ));
                    }
                    _ => patch::strategic_merge_patch(&live, body, info)?,
                };
                let mut patched = patched;
                check_type_meta(info, &mut patched)?;
                if meta_str(&patched, "name") != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        meta_str(&patched, "name")
                    )));
                }
                update_locked(&mut state, info, old, patched, p, sub, UpdateKind::Patch)
            }
        }
    }

    pub fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let mut state = self.store.lock();
        let now = now_rfc3339();
        let mut d = lifecycle::delete(
            &mut state,
            info,
            &ObjectKey::new(ns.unwrap_or_default(), name),
            opts,
            &now,
        )?;
        d.object = for_version(info, d.object);
        Ok(d)
    }

    /// DELETE on a collection: every object matching the selectors.
    pub fn delete_collection(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        q: &ListQuery,
        opts: &DeleteOptions,
    ) -> Result<(Vec<Arc<Value>>, Vec<String>), ApiError> {
        let mut state = self.store.lock();
        let now = now_rfc3339();
        let gr = info.group_resource_key();
        let targets: Vec<Arc<Value>> = state
            .list(&gr, ns, None)
            .into_iter()
            .filter(|o| q.labels.matches(o) && q.fields.matches(o))
            .collect();
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for t in targets {
            match lifecycle::delete(&mut state, info, &ObjectKey::of(&t), opts, &now) {
                Ok(d) => {
                    for w in d.warnings {
                        if !warnings.contains(&w) {
                            warnings.push(w);
                        }
                    }
                    out.push(for_version(info, d.object));
                }
                // Already removed by garbage collection of an earlier item.
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((out, warnings))
    }

    /// Creates the object, or replaces the stored one whatever its resourceVersion. For
    /// in-process setup (CRDs, fixtures); faults never apply.
    pub fn create_or_replace(&self, mut obj: Value) -> Result<Value, ApiError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let info = {
            let state = self.store.lock();
            state
                .registry
                .all()
                .into_iter()
                .find(|i| i.group == group && i.version == version && i.kind == kind)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("no resource serves {api_version}, Kind={kind}"))
                })?
        };
        let ns = meta_str(&obj, "namespace").to_string();
        let ns = if info.namespaced {
            Some(if ns.is_empty() {
                "default".to_string()
            } else {
                ns
            })
        } else {
            None
        };
        let name = meta_str(&obj, "name").to_string();
        let p = WriteParams {
            field_manager: Some("emulator".into()),
            ..Default::default()
        };
        let mut state = self.store.lock();
        let key = ObjectKey::new(ns.clone().unwrap_or_default(), name.clone());
        let reply = match state.get(&info.group_resource_key(), &key) {
            Some(old) => {
                metadata_mut(&mut obj).insert(
                    "resourceVersion".into(),
                    json!(meta_str(&old, "resourceVersion")),
                );
                check_type_meta(&info, &mut obj)?;
                check_name_and_namespace(&info, ns.as_deref(), Some(&name), &mut obj)?;
                update_locked(
                    &mut state,
                    &info,
                    old,
                    obj,
                    &p,
                    Subresource::Main,
                    UpdateKind::Put,
                )?
            }
            None => {
                metadata_mut(&mut obj).remove("resourceVersion");
                create_locked(&mut state, &info, ns.as_deref(), obj, &p, false)?
            }
        };
        Ok((*reply.object).clone())
    }
}

/// A stored object as seen through one served version (conversion strategy None: only
/// `apiVersion` differs).
pub fn for_version(info: &ResourceInfo, obj: Arc<Value>) -> Arc<Value> {
    let want = info.api_version();
    if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
        return obj;
    }
    if let Some(converted) = builtin::from_storage(info, &obj) {
        return Arc::new(converted);
    }
    let mut o = (*obj).clone();
    o["apiVersion"] = Value::String(want);
    Arc::new(o)
}

fn storage_api_version(state: &State, info: &ResourceInfo) -> String {
    match state.registry.storage_version(&info.group_resource_key()) {
        Some(v) if info.group.is_empty() => v.to_string(),
        Some(v) => format!("{}/{v}", info.group),
        None => info.api_version(),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, last: &ObjectKey) -> String {
    let start = format!("{}/{}\u{0}", last.namespace, last.name);
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start,
    };
    let raw = serde_json::to_vec(&token).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE.encode(raw)
}

fn decode_continue(token: &str) -> Result<(u64, ObjectKey), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token))
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = t.start.trim_end_matches('\u{0}');
    let (ns, name) = start.split_once('/').ok_or_else(bad)?;
    Ok((t.rv, ObjectKey::new(ns, name)))
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

pub(crate) fn list_locked(
    state: &State,
    info: &ResourceInfo,
    ns: Option<&str>,
    q: &ListQuery,
) -> Result<ListPage, ApiError> {
    let gr = info.group_resource_key();
    let current = state.current_rv();
    let mut list_rv = current;
    let mut after = None;
    if let Some(token) = q.continue_token.as_deref().filter(|t| !t.is_empty()) {
        let (rv, key) = decode_continue(token)?;
        if state.check_resumable(&gr, rv).is_err() {
            let err = ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            );
            return Err(err.with_details(json!({"continue": encode_continue(current, &key)})));
        }
        list_rv = rv;
        after = Some(key);
    } else if let Some(rv) = q
        .resource_version
        .as_deref()
        .filter(|r| !r.is_empty() && *r != "0")
    {
        let rv = parse_rv(rv)?;
        if rv > current {
            return Err(ApiError::timeout(format!("Too large resource version: {rv}, current: {current}"))
                .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})));
        }
        // Exact reads are served from the current state (the emulator keeps no snapshots)
        // unless the history no longer reaches back to them.
        if q.resource_version_match.as_deref() == Some("Exact")
            && rv != current
            && let Err(e) = state.check_resumable(&gr, rv)
        {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                e.oldest
            )));
        }
    }
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = 0u64;
    let limit = q.limit.filter(|l| *l > 0);
    for obj in state.list(&gr, ns, after.as_ref()) {
        if !q.labels.matches(&obj) || !q.fields.matches(&obj) {
            continue;
        }
        if let Some(l) = limit
            && items.len() >= l
        {
            more += 1;
            continue;
        }
        last_key = Some(ObjectKey::of(&obj));
        items.push(for_version(info, obj));
    }
    let continue_token = match (more > 0, &last_key) {
        (true, Some(k)) => Some(encode_continue(list_rv, k)),
        _ => None,
    };
    let remaining_item_count =
        (more > 0 && q.labels.is_empty() && q.fields.is_empty()).then_some(more);
    Ok(ListPage {
        items,
        resource_version: list_rv,
        continue_token,
        remaining_item_count,
    })
}

/// Checks `apiVersion`/`kind` of a body against the URL's resource, filling them in when
/// absent (the apiserver decodes with the endpoint's defaults).
fn check_type_meta(info: &ResourceInfo, body: &mut Value) -> Result<(), ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    };
    let want_av = info.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            obj.insert("kind".into(), json!(info.kind));
        }
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
        _ => {}
    }
    Ok(())
}

/// Name and namespace of a body against the URL.
fn check_name_and_namespace(
    info: &ResourceInfo,
    ns: Option<&str>,
    url_name: Option<&str>,
    body: &mut Value,
) -> Result<(), ApiError> {
    let meta = metadata_mut(body);
    if let Some(url_name) = url_name {
        match meta.get("name").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("name".into(), json!(url_name));
            }
            Some(n) if n != url_name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({url_name})"
                )));
            }
            _ => {}
        }
    }
    if info.namespaced {
        let url_ns = ns.unwrap_or_default();
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), json!(url_ns));
            }
            Some(n) if n != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

/// Refuses new objects in missing or terminating namespaces.
fn check_namespace_open(
    state: &State,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    if !info.namespaced {
        return Ok(());
    }
    match state.get(&namespaces_resource(), &ObjectKey::new("", ns)) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if is_deleting(&n) => Err(ApiError::forbidden(
            &info.group,
            &info.plural,
            name,
            format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", info.group_resource()),
        )
        .with_details(json!({
            "name": name, "group": info.group, "kind": info.plural,
            "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]
        }))),
        Some(_) => Ok(()),
    }
}

/// Server-owned metadata that clients cannot set on create.
const SYSTEM_META: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
];

type ListMapKeysFn<'a> = Box<dyn Fn(&[String]) -> Option<Vec<String>> + 'a>;

fn list_map_keys_fn(info: &ResourceInfo) -> ListMapKeysFn<'_> {
    match &info.schema {
        Some(schema) => Box::new(move |path: &[String]| schema.list_map_keys(path)),
        None => Box::new(builtin::list_map_keys),
    }
}

fn create_locked(
    state: &mut State,
    info: &ResourceInfo,
    ns: Option<&str>,
    mut body: Value,
    p: &WriteParams,
    from_apply: bool,
) -> Result<Reply, ApiError> {
    check_type_meta(info, &mut body)?;
    check_name_and_namespace(info, ns, None, &mut body)?;
    let gr = info.group_resource_key();
    let now = now_rfc3339();
    let mut warnings = Vec::new();
    let namespace = if info.namespaced {
        ns.unwrap_or_default().to_string()
    } else {
        String::new()
    };
    if info.namespaced && namespace.is_empty() {
        return Err(ApiError::bad_request(
            "the server could not find the requested resource (namespace is required)",
        ));
    }

    // Name: explicit, or generated from generateName.
    let mut name = meta_str(&body, "name").to_string();
    let generate = meta_str(&body, "generateName").to_string();
    let label_only = meta::name_is_label(&info.group, &info.plural);
    if name.is_empty() {
        if generate.is_empty() {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "metadata.name: Required value: name or generateName is required"
                        .into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        let base: String = generate.chars().take(58).collect();
        // Retry on the (unlikely) collision like the apiserver's name generator callers.
        for _ in 0..8 {
            name = format!("{base}{}", meta::random_suffix());
            if state
                .get(&gr, &ObjectKey::new(&*namespace, &*name))
                .is_none()
            {
                break;
            }
        }
        metadata_mut(&mut body).insert("name".into(), json!(name));
    }
    meta::validate_name(&info.group, &info.kind, &name, label_only)?;
    check_namespace_open(state, info, &namespace, &name)?;
    if info.patch_kind == PatchKind::Custom
        && let Some(crd) = crds::crd_for(state, &gr)
        && is_deleting(&crd)
    {
        return Err(ApiError::method_not_allowed(
            "create is not allowed while custom resource definition is terminating",
        ));
    }
    if !meta_str(&body, "resourceVersion").is_empty() {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }

    {
        let m = metadata_mut(&mut body);
        for f in SYSTEM_META {
            m.remove(*f);
        }
        m.insert("uid".into(), json!(meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(now));
        m.insert("generation".into(), json!(1));
    }
    body["apiVersion"] = json!(storage_api_version(state, info));
    builtin::to_storage(info, &mut body);

    // Kind-specific preparation (the registry strategies' PrepareForCreate).
    let mut served = None;
    if gr == crd_resource() {
        let mut fins = finalizers(&body);
        if !fins.iter().any(|f| f == crds::CLEANUP_FINALIZER) {
            fins.push(crds::CLEANUP_FINALIZER.to_string());
        }
        meta::set_finalizers(&mut body, &fins);
        served = Some(crds::prepare(&mut body, None, &now)?);
    } else if gr == namespaces_resource() {
        body["spec"] = json!({"finalizers": [lifecycle::NAMESPACE_FINALIZER]});
        body["status"] = json!({"phase": "Active"});
        let labels = metadata_mut(&mut body)
            .entry("labels")
            .or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    } else if info.status_subresource {
        if info.patch_kind == PatchKind::Custom {
            if let Some(o) = body.as_object_mut() {
                o.remove("status");
            }
        } else {
            body["status"] = json!({});
        }
    }
    if info.patch_kind == PatchKind::Custom {
        schema_pipeline(info, &mut body, None, p, &mut warnings)?;
    } else {
        builtin::apply_defaults(info, &mut body);
    }
    if !from_apply {
        apply::record_update(None, &mut body, &p.manager(), None, &now);
    }

    let key = ObjectKey::new(&*namespace, &*name);
    if state.get(&gr, &key).is_some() {
        return Err(ApiError::already_exists(&info.group, &info.plural, &name));
    }
    if p.dry_run {
        return Ok(Reply {
            code: 201,
            object: for_version(info, Arc::new(body)),
            warnings,
        });
    }
    let stored = state.put(&gr, body);
    if let Some(served) = served {
        crds::register(state, served, None);
    }
    lifecycle::after_write(state, &gr, None, &stored, &now);
    Ok(Reply {
        code: 201,
        object: for_version(info, stored),
        warnings,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpdateKind {
    Put,
    Patch,
    Apply,
}

fn update_locked(
    state: &mut State,
    info: &ResourceInfo,
    old: Arc<Value>,
    mut body: Value,
    p: &WriteParams,
    sub: Subresource,
    kind: UpdateKind,
) -> Result<Reply, ApiError> {
    let gr = info.group_resource_key();
    let name = meta_str(&old, "name").to_string();
    let now = now_rfc3339();
    let mut warnings = Vec::new();
    let old_rv = meta_str(&old, "resourceVersion").to_string();

    let body_rv = meta_str(&body, "resourceVersion").to_string();
    if !body_rv.is_empty() && body_rv != old_rv {
        return Err(ApiError::conflict(
            &info.group,
            &info.plural,
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    if body_rv.is_empty() && kind == UpdateKind::Put && info.patch_kind == PatchKind::Custom {
        return Err(ApiError::invalid(
            &info.group,
            &info.kind,
            &name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message:
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                        .into(),
                field: "metadata.resourceVersion".into(),
            }],
        ));
    }
    let body_uid = meta_str(&body, "uid").to_string();
    if !body_uid.is_empty() && body_uid != meta_str(&old, "uid") {
        return Err(ApiError::conflict(
            &info.group,
            &info.plural,
            &name,
            &format!(
                "Precondition failed: UID in precondition: {body_uid}, UID in object meta: {}",
                meta_str(&old, "uid")
            ),
        ));
    }

    // What the target (main resource, status, finalize) may change.
    let mut new = match sub {
        Subresource::Status => {
            let mut n = (*old).clone();
            match body.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            if let Some(mf) = body.pointer("/metadata/managedFields") {
                metadata_mut(&mut n).insert("managedFields".into(), mf.clone());
            }
            n
        }
        Subresource::Finalize => {
            let mut n = (*old).clone();
            n["spec"]["finalizers"] = body
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or_else(|| json!([]));
            n
        }
        Subresource::Main => {
            if info.status_subresource {
                match old.get("status") {
                    Some(s) => body["status"] = s.clone(),
                    None => {
                        if let Some(o) = body.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            if gr == namespaces_resource() {
                body["spec"] = old.get("spec").cloned().unwrap_or_else(|| json!({}));
            }
            body
        }
    };

    // Server-owned metadata always comes from the stored object.
    {
        let old_meta = old
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let had_managed = new.pointer("/metadata/managedFields").is_some();
        let m = metadata_mut(&mut new);
        for f in SYSTEM_META
            .iter()
            .chain(["namespace", "resourceVersion"].iter())
        {
            match old_meta.get(*f) {
                Some(v) => {
                    m.insert((*f).to_string(), v.clone());
                }
                None => {
                    m.remove(*f);
                }
            }
        }
        if !had_managed && let Some(mf) = old_meta.get("managedFields") {
            m.insert("managedFields".into(), mf.clone());
        }
    }
    new["apiVersion"] = json!(storage_api_version(state, info));
    builtin::to_storage(info, &mut new);

    if is_deleting(&old) {
        let old_fins = finalizers(&old);
        let added: Vec<String> = finalizers(&new)
            .into_iter()
            .filter(|f| !old_fins.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                &name,
                vec![Cause {
                    reason: "FieldValueForbidden".into(),
                    message: format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                    field: "metadata.finalizers".into(),
                }],
            ));
        }
    }

    let mut served = None;
    if gr == crd_resource() && sub == Subresource::Main {
        served = Some(crds::prepare(&mut new, Some(&old), &now)?);
    }
    if info.patch_kind == PatchKind::Custom {
        schema_pipeline(info, &mut new, Some(&old), p, &mut warnings)?;
    } else {
        builtin::apply_defaults(info, &mut new);
    }

    if spec_changed(info, &old, &new) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        metadata_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    if kind != UpdateKind::Apply {
        apply::record_update(Some(&old), &mut new, &p.manager(), sub.name(), &now);
    }

    if without_volatile(&old) == without_volatile(&new) {
        // No-op writes neither bump the resourceVersion nor emit watch events.
        return Ok(Reply {
            code: 200,
            object: for_version(info, old),
            warnings,
        });
    }
    let ns_blocking = gr == namespaces_resource()
        && new
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    if is_deleting(&new) && finalizers(&new).is_empty() && !ns_blocking {
        if p.dry_run {
            return Ok(Reply {
                code: 200,
                object: for_version(info, Arc::new(new)),
                warnings,
            });
        }
        let key = ObjectKey::of(&new);
        // Store the final state first so watchers see the last update, as the apiserver does.
        state.put(&gr, new);
        if let Some(gone) = state.remove(&gr, &key) {
            lifecycle::after_remove(state, &gr, gone.clone(), &now);
            return Ok(Reply {
                code: 200,
                object: for_version(info, gone),
                warnings,
            });
        }
        return Err(ApiError::not_found(&info.group, &info.plural, &name));
    }
    if p.dry_run {
        return Ok(Reply {
            code: 200,
            object: for_version(info, Arc::new(new)),
            warnings,
        });
    }
    let stored = state.put(&gr, new);
    if let Some(served) = served {
        let previous = crds::served_resource(&old);
        crds::register(state, served, previous.as_ref());
    }
    lifecycle::after_write(state, &gr, Some(&old), &stored, &now);
    Ok(Reply {
        code: 200,
        object: for_version(info, stored),
        warnings,
    })
}

/// Whether anything but metadata (and status, with a status subresource) changed.
fn spec_changed(info: &ResourceInfo, old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut o = v.as_object().cloned().unwrap_or_default();
        o.remove("metadata");
        o.remove("apiVersion");
        o.remove("kind");
        if info.status_subresource {
            o.remove("status");
        }
        o
    };
    strip(old) != strip(new)
}

fn without_volatile(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

/// The CR pipeline: prune unknown fields (or refuse them under Strict), default, validate.
fn schema_pipeline(
    info: &ResourceInfo,
    obj: &mut Value,
    old: Option<&Value>,
    p: &WriteParams,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let Some(schema) = &info.schema else {
        return Ok(());
    };
    let mut unknown: Vec<String> = Vec::new();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let extra: Vec<String> = m
            .keys()
            .filter(|k| !meta::OBJECT_META_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in extra {
            m.remove(&k);
            unknown.push(format!("metadata.{k}"));
        }
    }
    unknown.extend(schema.prune(obj));
    if !unknown.is_empty() {
        match p.field_validation {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|u| format!("unknown field \"{u}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", "),
                    kind = info.kind,
                    version = info.version,
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\"")))
            }
            FieldValidation::Ignore => {}
        }
    }
    schema.apply_defaults(obj);
    let errors = schema.validate(obj, old);
    if !errors.is_empty() {
        return Err(ApiError::from_field_errors(
            &info.group,
            &info.kind,
            meta_str(obj, "name"),
            &errors,
        ));
    }
    Ok(())
}

/// The group/resource key of a served resource (re-exported for the server).
pub fn gr_of(info: &ResourceInfo) -> GroupResource {
    info.group_resource_key()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(core: &Core, group: &str, plural: &str) -> Arc<ResourceInfo> {
        core.lookup(group, "v1", plural).unwrap()
    }

    fn secret(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"a": "Yg=="}})
    }

    #[test]
    fn create_update_conflict_and_generation() {
        let core = Core::new(100);
        let si = info(&core, "", "secrets");
        let p = WriteParams::default();
        let created = core.create(&si, Some("default"), secret("s"), &p).unwrap();
        assert_eq!(created.code, 201);
        assert_eq!(created.object["metadata"]["generation"], 1);
        let rv = created.object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let mut upd = (*created.object).clone();
        upd["data"]["a"] = json!("Yw==");
        let updated = core
            .update(
                &si,
                Some("default"),
                "s",
                upd.clone(),
                &p,
                Subresource::Main,
            )
            .unwrap();
        assert_eq!(updated.object["metadata"]["generation"], 2);
        assert_ne!(updated.object["metadata"]["resourceVersion"], json!(rv));
        // Stale RV: conflict.
        let err = core
            .update(&si, Some("default"), "s", upd, &p, Subresource::Main)
            .unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains("the object has been modified"));
        // Label-only change does not bump generation.
        let mut lab = (*updated.object).clone();
        lab["metadata"]["labels"] = json!({"x": "y"});
        let lab = core
            .update(&si, Some("default"), "s", lab, &p, Subresource::Main)
            .unwrap();
        assert_eq!(lab.object["metadata"]["generation"], 2);
        // No-op update keeps the resourceVersion.
        let same = core
            .update(
                &si,
                Some("default"),
                "s",
                (*lab.object).clone(),
                &p,
                Subresource::Main,
            )
            .unwrap();
        assert_eq!(
            same.object["metadata"]["resourceVersion"],
            lab.object["metadata"]["resourceVersion"]
        );
        assert_eq!(
            core.create(&si, Some("default"), secret("s"), &p)
                .unwrap_err()
                .code,
            409
        );
    }

    #[test]
    fn status_subresource_split() {
        let core = Core::new(100);
        let ji = core.lookup("batch", "v1", "jobs").unwrap();
        let p = WriteParams::default();
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {}}, "status": {"succeeded": 3}});
        let created = core.create(&ji, Some("default"), job, &p).unwrap();
        assert_eq!(created.object["status"], json!({}));
        let mut st = (*created.object).clone();
        st["status"] = json!({"active": 1});
        st["spec"]["parallelism"] = json!(5);
        let after = core
            .update(&ji, Some("default"), "j", st, &p, Subresource::Status)
            .unwrap();
        assert_eq!(after.object["status"]["active"], 1);
        assert_eq!(
            after.object["spec"]["parallelism"], 1,
            "status writes keep the spec"
        );
        assert_eq!(after.object["metadata"]["generation"], 1);
        let mut main = (*after.object).clone();
        main["status"] = json!({"active": 9});
        main["spec"]["parallelism"] = json!(5);
        let after = core
            .update(&ji, Some("default"), "j", main, &p, Subresource::Main)
            .unwrap();
        assert_eq!(after.object["status"]["active"], 1);
        assert_eq!(after.object["metadata"]["generation"], 2);
    }

    #[test]
    fn namespaces_gate_creates() {
        let core = Core::new(100);
        let si = info(&core, "", "secrets");
        let p = WriteParams::default();
        let err = core
            .create(&si, Some("missing"), secret("s"), &p)
            .unwrap_err();
        assert_eq!(err.code, 404);
        assert_eq!(err.message, "namespaces \"missing\" not found");
        let nsi = info(&core, "", "namespaces");
        core.create(&nsi, None, json!({"metadata": {"name": "t"}}), &p)
            .unwrap();
        let mut s = secret("held");
        s["metadata"]["finalizers"] = json!(["example.com/x"]);
        core.create(&si, Some("t"), s, &p).unwrap();
        let d = core
            .delete(&nsi, None, "t", &DeleteOptions::default())
            .unwrap();
        assert!(!d.removed);
        assert_eq!(d.object["status"]["phase"], "Terminating");
        let err = core.create(&si, Some("t"), secret("new"), &p).unwrap_err();
        assert_eq!(err.code, 403);
        assert!(err.message.contains("because it is being terminated"));
        // Releasing the last finalizer lets the namespace go.
        let held = core.get(&si, "t", "held").unwrap();
        let mut released = (*held).clone();
        released["metadata"]["finalizers"] = json!([]);
        core.update(&si, Some("t"), "held", released, &p, Subresource::Main)
            .unwrap();
        assert_eq!(core.get(&nsi, "", "t").unwrap_err().code, 404);
    }

    #[test]
    fn pagination_and_selectors() {
        let core = Core::new(100);
        let ci = info(&core, "", "configmaps");
        let p = WriteParams::default();
        for i in 0..5 {
            let cm = json!({"metadata": {"name": format!("c{i}"), "labels": {"i": i.to_string(), "even": (i % 2 == 0).to_string()}}});
            core.create(&ci, Some("default"), cm, &p).unwrap();
        }
        let q = ListQuery {
            limit: Some(2),
            ..Default::default()
        };
        let page = core.list(&ci, Some("default"), &q).unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.remaining_item_count, Some(3));
        let q2 = ListQuery {
            limit: Some(2),
            continue_token: page.continue_token.clone(),
            ..Default::default()
        };
        let page2 = core.list(&ci, Some("default"), &q2).unwrap();
        assert_eq!(page2.items[0]["metadata"]["name"], "c2");
        assert_eq!(page2.resource_version, page.resource_version);
        let q = ListQuery {
            labels: LabelSelector::parse("even=true").unwrap(),
            ..Default::default()
        };
        assert_eq!(core.list(&ci, None, &q).unwrap().items.len(), 3);
        core.create(
            &ci,
            Some("default"),
            json!({"metadata": {"name": "later"}}),
            &p,
        )
        .unwrap();
        core.store.lock().expire_history();
        let err = core.list(&ci, Some("default"), &q2).unwrap_err();
        assert_eq!(err.code, 410);
    }

    #[test]
    fn generate_name_and_invalid_names() {
        let core = Core::new(100);
        let ci = info(&core, "", "configmaps");
        let p = WriteParams::default();
        let r = core
            .create(
                &ci,
                Some("default"),
                json!({"metadata": {"generateName": "gen-"}}),
                &p,
            )
            .unwrap();
        let name = r.object["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("gen-") && name.len() == 9);
        let err = core
            .create(
                &ci,
                Some("default"),
                json!({"metadata": {"name": "Bad_Name"}}),
                &p,
            )
            .unwrap_err();
        assert_eq!(err.code, 422);
        let err = core
            .create(
                &ci,
                Some("default"),
                json!({"metadata": {"name": "x", "namespace": "other"}}),
                &p,
            )
            .unwrap_err();
        assert_eq!(err.code, 400);
        let err = core
            .create(
                &ci,
                Some("default"),
                json!({"apiVersion": "v2", "metadata": {"name": "x"}}),
                &p,
            )
            .unwrap_err();
        assert_eq!(err.code, 400);
        let dry = WriteParams {
            dry_run: true,
            ..Default::default()
        };
        core.create(
            &ci,
            Some("default"),
            json!({"metadata": {"name": "dry"}}),
            &dry,
        )
        .unwrap();
        assert_eq!(core.get(&ci, "default", "dry").unwrap_err().code, 404);
    }
}
