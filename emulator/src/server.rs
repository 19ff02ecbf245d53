//! The hyper service: URL parsing and routing, content negotiation (JSON, Table,
//! PartialObjectMetadata, aggregated discovery), request bodies (JSON, YAML, protobuf),
//! fault injection, the request log, and metav1.Status errors.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::builtin;
use crate::discovery;
use crate::faults::Faults;
use crate::lifecycle::{DeleteOptions, Propagation};
use crate::ops::{Core, FieldValidation, ListQuery, PatchType, Subresource, WriteParams};
use crate::resource::{PatchKind, ResourceInfo};
use crate::schema::{self, IncludeObject};
use crate::selectors::LabelSelector;
use crate::status::ApiError;
use crate::watch::{self as watches, Render, WatchContext, WatchRequest};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// kube-apiserver's default request body limit.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// One handled request, as tests see it (to count writes or derive RBAC verbs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection;
    /// empty for non-resource URLs (discovery, health).
    pub verb: String,
    pub user_agent: String,
    pub content_type: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// HTTP status of the reply (200 for watches that started).
    pub status: u16,
}

impl RequestRecord {
    pub fn is_write(&self) -> bool {
        crate::faults::is_write(&self.verb)
    }
}

/// A bounded log of handled requests (oldest dropped first).
#[derive(Debug)]
pub struct RequestLog {
    entries: Mutex<VecDeque<RequestRecord>>,
    capacity: usize,
    total: AtomicU64,
}

impl RequestLog {
    pub fn new(capacity: usize) -> Self {
        RequestLog {
            entries: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            total: AtomicU64::new(0),
        }
    }

    fn push(&self, r: RequestRecord) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= self.capacity {
            e.pop_front();
        }
        e.push_back(r);
    }

    /// The kept records, oldest first.
    pub fn entries(&self) -> Vec<RequestRecord> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Requests handled since start (including ones no longer kept).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Kept write requests (create/update/patch/delete/deletecollection).
    pub fn writes(&self) -> Vec<RequestRecord> {
        self.entries()
            .into_iter()
            .filter(RequestRecord::is_write)
            .collect()
    }
}

/// State shared by every connection.
pub(crate) struct Shared {
    pub core: Arc<Core>,
    pub faults: Arc<Faults>,
    pub log: Arc<RequestLog>,
    pub shutdown: watch::Receiver<bool>,
    pub bookmark_interval: Duration,
    pub addr: SocketAddr,
}

/// Accepts connections until shutdown, then ends watches and drains connections.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(shared, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = fut.await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    // Watch tasks end on the same shutdown signal, so in-flight responses finish quickly.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

struct Ctx {
    method: Method,
    query: HashMap<String, String>,
    accept: String,
    content_type: String,
    user_agent: String,
    warnings: Vec<String>,
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let mut ctx = Ctx {
        method: req.method().clone(),
        query: url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        accept: header("accept"),
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        warnings: Vec::new(),
    };
    let mut record = RequestRecord {
        method: ctx.method.to_string(),
        path: path.clone(),
        query: raw_query,
        user_agent: ctx.user_agent.clone(),
        content_type: ctx.content_type.clone(),
        ..Default::default()
    };
    let body = req.into_body();
    let mut resp = match route(&shared, &mut ctx, &path, body, &mut record).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    record.status = resp.status().as_u16();
    shared.log.push(record);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert(HeaderName::from_static("audit-id"), v);
    }
    headers.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    for w in &ctx.warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            headers.append(hyper::header::WARNING, v);
        }
    }
    resp
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn respond(code: u16, content_type: &str, bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(bytes));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    respond(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(secs) = e.retry_after_seconds()
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    r
}

fn text(code: u16, s: &str) -> Response<Body> {
    respond(code, "text/plain; charset=utf-8", s.as_bytes().to_vec())
}

/// One media range of an Accept header: its type and parameters.
struct MediaRange {
    mime: String,
    params: HashMap<String, String>,
}

fn parse_accept(accept: &str) -> Vec<MediaRange> {
    accept
        .split(',')
        .map(|part| {
            let mut it = part.split(';');
            let mime = it.next().unwrap_or_default().trim().to_ascii_lowercase();
            let params = it
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                .collect();
            MediaRange { mime, params }
        })
        .filter(|m| !m.mime.is_empty())
        .collect()
}

/// The aggregated-discovery version the client asked for first, if any.
fn wants_aggregated(accept: &str) -> Option<String> {
    for m in parse_accept(accept) {
        let is_json = m.mime == "application/json" || m.mime == "*/*" || m.mime == "application/*";
        if !is_json {
            continue;
        }
        match (
            m.params.get("as").map(String::as_str),
            m.params.get("g").map(String::as_str),
            m.params.get("v").map(String::as_str),
        ) {
            (
                Some("APIGroupDiscoveryList"),
                Some("apidiscovery.k8s.io"),
                Some(v @ ("v2" | "v2beta1")),
            ) => return Some(v.to_string()),
            (None, _, _) => return None,
            _ => continue,
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rendering {
    Object,
    Table,
    Metadata,
}

fn negotiate(accept: &str) -> Rendering {
    for m in parse_accept(accept) {
        if !matches!(
            m.mime.as_str(),
            "application/json"
                | "*/*"
                | "application/*"
                | "application/vnd.kubernetes.protobuf"
                | "application/yaml"
        ) {
            continue;
        }
        let g = m.params.get("g").map(String::as_str);
        match m.params.get("as").map(String::as_str) {
            Some("Table") if g == Some("meta.k8s.io") => return Rendering::Table,
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if g == Some("meta.k8s.io") =>
            {
                return Rendering::Metadata;
            }
            Some(_) => continue,
            None => return Rendering::Object,
        }
    }
    Rendering::Object
}

async fn route(
    shared: &Arc<Shared>,
    ctx: &mut Ctx,
    path: &str,
    body: Incoming,
    record: &mut RequestRecord,
) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get_only = |ctx: &Ctx| {
        if ctx.method == Method::GET || ctx.method == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ))
        }
    };
    match segs.as_slice() {
        [] => {
            get_only(ctx)?;
            let mut paths = vec![
                "/api".to_string(),
                "/api/v1".to_string(),
                "/apis".to_string(),
                "/healthz".into(),
                "/livez".into(),
                "/readyz".into(),
                "/openapi/v3".into(),
                "/version".into(),
            ];
            let registry = shared.core.store.lock().registry.clone();
            for (g, vs) in registry.groups() {
                paths.push(format!("/apis/{g}"));
                for v in vs {
                    paths.push(format!("/apis/{g}/{v}"));
                }
            }
            Ok(json_response(200, &json!({"paths": paths})))
        }
        ["version"] => {
            get_only(ctx)?;
            Ok(json_response(200, &discovery::version()))
        }
        ["healthz" | "livez" | "readyz", ..] => {
            get_only(ctx)?;
            Ok(text(200, "ok"))
        }
        ["openapi", "v3"] => {
            let resources = shared.core.store.lock().registry.all();
            Ok(json_response(200, &schema::openapi::index_for(&resources)))
        }
        ["openapi", "v2"] => {
            let resources = shared.core.store.lock().registry.all();
            if parse_accept(&ctx.accept)
                .iter()
                .any(|m| m.mime == schema::openapi_v2::PROTOBUF_MIME)
            {
                return Ok(respond(
                    200,
                    schema::openapi_v2::PROTOBUF_RESPONSE_MIME,
                    schema::openapi_v2::protobuf(&resources),
                ));
            }
            Ok(json_response(
                200,
                &schema::openapi_v2::document(&resources),
            ))
        }
        ["openapi", "v3", "api", "v1"] => {
            let resources = shared.core.store.lock().registry.resources_in("", "v1");
            Ok(json_response(
                200,
                &schema::openapi::group_version_document(&resources),
            ))
        }
        ["openapi", "v3", "apis", g, v] => {
            let resources = shared.core.store.lock().registry.resources_in(g, v);
            if resources.is_empty() {
                return Err(ApiError::path_not_found());
            }
            Ok(json_response(
                200,
                &schema::openapi::group_version_document(&resources),
            ))
        }
        ["api"] => {
            get_only(ctx)?;
            if let Some(v) = wants_aggregated(&ctx.accept) {
                let doc = discovery::aggregated(&shared.core.store.lock().registry, true, &v);
                return Ok(respond(
                    200,
                    &format!(
                        "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                    ),
                    serde_json::to_vec(&doc).unwrap_or_default(),
                ));
            }
            Ok(json_response(
                200,
                &discovery::core_versions(&shared.addr.to_string()),
            ))
        }
        ["apis"] => {
            get_only(ctx)?;
            let registry = shared.core.store.lock().registry.clone();
            if let Some(v) = wants_aggregated(&ctx.accept) {
                let doc = discovery::aggregated(&registry, false, &v);
                return Ok(respond(
                    200,
                    &format!(
                        "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                    ),
                    serde_json::to_vec(&doc).unwrap_or_default(),
                ));
            }
            Ok(json_response(200, &discovery::group_list(&registry)))
        }
        ["api", "v1"] => {
            get_only(ctx)?;
            let resources = shared.core.store.lock().registry.resources_in("", "v1");
            Ok(json_response(
                200,
                &discovery::resource_list("", "v1", &resources),
            ))
        }
        ["apis", g] => {
            get_only(ctx)?;
            let doc = discovery::group(&shared.core.store.lock().registry, g)
                .ok_or_else(ApiError::path_not_found)?;
            Ok(json_response(200, &doc))
        }
        ["apis", g, v] => {
            get_only(ctx)?;
            let resources = shared.core.store.lock().registry.resources_in(g, v);
            if resources.is_empty() {
                return Err(ApiError::path_not_found());
            }
            Ok(json_response(
                200,
                &discovery::resource_list(g, v, &resources),
            ))
        }
        ["api", "v1", rest @ ..] => {
            resource_request(shared, ctx, "", "v1", rest, body, record).await
        }
        ["apis", g, v, rest @ ..] => {
            let (g, v) = (g.to_string(), v.to_string());
            resource_request(shared, ctx, &g, &v, rest, body, record).await
        }
        _ => Err(ApiError::path_not_found()),
    }
}

/// A resource URL taken apart.
#[derive(Debug, Default, PartialEq)]
struct Target<'a> {
    watch_prefix: bool,
    namespace: Option<&'a str>,
    plural: &'a str,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn parse_target<'a>(
    rest: &[&'a str],
    is_namespaced_plural: impl Fn(&str) -> bool,
) -> Option<Target<'a>> {
    let mut t = Target::default();
    let mut rest = rest;
    if rest.first() == Some(&"watch") {
        t.watch_prefix = true;
        rest = &rest[1..];
    }
    if rest.len() >= 3 && rest[0] == "namespaces" && is_namespaced_plural(rest[2]) {
        t.namespace = Some(rest[1]);
        rest = &rest[2..];
    }
    match rest {
        [plural] => t.plural = plural,
        [plural, name] => {
            t.plural = plural;
            t.name = Some(name);
        }
        [plural, name, sub] => {
            t.plural = plural;
            t.name = Some(name);
            t.subresource = Some(sub);
        }
        _ => return None,
    }
    Some(t)
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    "the request is too large",
                ))
            } else {
                Err(ApiError::bad_request(format!(
                    "error reading the request body: {e}"
                )))
            }
        }
    }
}

/// A create/update body as JSON, whatever it was sent as.
fn decode_object(content_type: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    let base = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!("error decoding request body as JSON: {e}"))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml_ng::from_slice(bytes)
            .map_err(|e| {
                ApiError::bad_request(format!("error decoding request body as YAML: {e}"))
            }),
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(bytes),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn bool_param(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

fn write_params(ctx: &Ctx) -> Result<WriteParams, ApiError> {
    let dry_run = match ctx.query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}; supported values: \"All\""
            )));
        }
    };
    Ok(WriteParams {
        dry_run,
        field_manager: ctx.query.get("fieldManager").cloned(),
        field_validation: FieldValidation::parse(
            ctx.query
                .get("fieldValidation")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        user_agent: ctx.user_agent.clone(),
    })
}

fn list_query(ctx: &Ctx, info: &ResourceInfo) -> Result<ListQuery, ApiError> {
    let limit = match ctx.query.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
        ),
        None => None,
    };
    Ok(ListQuery {
        labels: LabelSelector::parse(
            ctx.query
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields: builtin::field_selector(
            info,
            ctx.query
                .get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        limit,
        continue_token: ctx.query.get("continue").cloned(),
        resource_version: ctx.query.get("resourceVersion").cloned(),
        resource_version_match: ctx.query.get("resourceVersionMatch").cloned(),
    })
}

fn include_object(ctx: &Ctx) -> IncludeObject {
    match ctx.query.get("includeObject").map(String::as_str) {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

/// A Table of objects with the resource's columns.
fn table_of(info: &ResourceInfo, objects: &[&Value], include: IncludeObject) -> Value {
    if info.patch_kind == PatchKind::Custom {
        let owned: Vec<Value> = objects.iter().map(|o| (*o).clone()).collect();
        schema::to_table(&info.printer_columns, &owned, include)
    } else {
        builtin::table(info, objects, include, jiff::Timestamp::now())
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The reply for one object in the negotiated rendering.
fn object_response(
    code: u16,
    info: &ResourceInfo,
    obj: &Value,
    rendering: Rendering,
    include: IncludeObject,
) -> Response<Body> {
    match rendering {
        Rendering::Object => respond(
            code,
            "application/json",
            serde_json::to_vec(obj).unwrap_or_default(),
        ),
        Rendering::Metadata => json_response(code, &partial_metadata(obj)),
        Rendering::Table => {
            let mut t = table_of(info, &[obj], include);
            if let Some(rv) = obj.pointer("/metadata/resourceVersion") {
                t["metadata"]["resourceVersion"] = rv.clone();
            }
            json_response(code, &t)
        }
    }
}

fn list_metadata(rv: u64, continue_token: Option<&str>, remaining: Option<u64>) -> Value {
    let mut m = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = continue_token {
        m["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        m["remainingItemCount"] = json!(r);
    }
    m
}

/// A list written item by item, without copying the stored objects.
fn list_response(info: &ResourceInfo, items: &[Arc<Value>], metadata: &Value) -> Response<Body> {
    let mut out = Vec::with_capacity(128 + items.len() * 512);
    out.extend_from_slice(b"{\"kind\":");
    let _ = serde_json::to_writer(&mut out, &info.list_kind);
    out.extend_from_slice(b",\"apiVersion\":");
    let _ = serde_json::to_writer(&mut out, &info.api_version());
    out.extend_from_slice(b",\"metadata\":");
    let _ = serde_json::to_writer(&mut out, metadata);
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &**item);
    }
    out.extend_from_slice(b"]}");
    respond(200, "application/json", out)
}

#[allow(clippy::too_many_arguments)]
async fn resource_request(
    shared: &Arc<Shared>,
    ctx: &mut Ctx,
    group: &str,
    version: &str,
    rest: &[&str],
    body: Incoming,
    record: &mut RequestRecord,
) -> Result<Response<Body>, ApiError> {
    let resources = shared
        .core
        .store
        .lock()
        .registry
        .resources_in(group, version);
    if resources.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let target = parse_target(rest, |p| {
        resources.iter().any(|r| r.plural == p && r.namespaced)
    })
    .ok_or_else(ApiError::path_not_found)?;
    let info = resources
        .iter()
        .find(|r| r.plural == target.plural)
        .cloned()
        .ok_or_else(ApiError::path_not_found)?;
    if target.namespace.is_some() && !info.namespaced {
        return Err(ApiError::path_not_found());
    }
    let sub = match target.subresource {
        None => Subresource::Main,
        Some("status") if info.status_subresource => Subresource::Status,
        Some("finalize") if info.group.is_empty() && info.plural == "namespaces" => {
            Subresource::Finalize
        }
        Some(_) => return Err(ApiError::path_not_found()),
    };
    let verb = match (&ctx.method, target.name) {
        (&Method::GET | &Method::HEAD, None)
            if target.watch_prefix || bool_param(&ctx.query, "watch") =>
        {
            "watch"
        }
        (&Method::GET | &Method::HEAD, None) => "list",
        (&Method::GET | &Method::HEAD, Some(_)) if target.watch_prefix => "watch",
        (&Method::GET | &Method::HEAD, Some(_)) => "get",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    let sub_verb_ok = match sub {
        Subresource::Main => info.verbs.iter().any(|v| v == verb),
        Subresource::Status => matches!(verb, "get" | "update" | "patch"),
        Subresource::Finalize => verb == "update",
    };
    if !sub_verb_ok {
        return Err(ApiError::verb_not_supported(verb, &info.group_resource()));
    }
    *record = RequestRecord {
        verb: verb.to_string(),
        group: info.group.clone(),
        resource: info.plural.clone(),
        subresource: target.subresource.unwrap_or_default().to_string(),
        namespace: target.namespace.unwrap_or_default().to_string(),
        name: target.name.unwrap_or_default().to_string(),
        ..std::mem::take(record)
    };

    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(err) = shared.faults.check(
        verb,
        &info.group,
        &info.plural,
        target.name.unwrap_or_default(),
    ) {
        return Err(err);
    }

    let ns = target.namespace;
    let rendering = negotiate(&ctx.accept);
    let include = include_object(ctx);
    match verb {
        "get" => {
            let obj = shared.core.get(
                &info,
                ns.unwrap_or_default(),
                target.name.unwrap_or_default(),
            )?;
            Ok(object_response(200, &info, &obj, rendering, include))
        }
        "list" => {
            if info.namespaced.then_some(()).is_none() && ns.is_some() {
                return Err(ApiError::path_not_found());
            }
            let q = list_query(ctx, &info)?;
            let page = shared.core.list(&info, ns, &q)?;
            let meta = list_metadata(
                page.resource_version,
                page.continue_token.as_deref(),
                page.remaining_item_count,
            );
            match rendering {
                Rendering::Object => Ok(list_response(&info, &page.items, &meta)),
                Rendering::Metadata => {
                    let items: Vec<Value> =
                        page.items.iter().map(|o| partial_metadata(o)).collect();
                    Ok(json_response(
                        200,
                        &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
                    ))
                }
                Rendering::Table => {
                    let refs: Vec<&Value> = page.items.iter().map(|o| &**o).collect();
                    let mut t = table_of(&info, &refs, include);
                    t["metadata"] = meta;
                    Ok(json_response(200, &t))
                }
            }
        }
        "watch" => watch_response(shared, ctx, info, ns, target.name, rendering, include),
        "create" => {
            if info.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed(
                    "create is not supported on a cluster-wide URL of a namespaced resource",
                ));
            }
            let p = write_params(ctx)?;
            let bytes = read_body(body).await?;
            let obj = decode_object(&ctx.content_type, &bytes)?;
            let reply = shared.core.create(&info, ns, obj, &p)?;
            ctx.warnings.extend(reply.warnings);
            Ok(object_response(
                reply.code,
                &info,
                &reply.object,
                rendering,
                include,
            ))
        }
        "update" => {
            let p = write_params(ctx)?;
            let bytes = read_body(body).await?;
            let obj = decode_object(&ctx.content_type, &bytes)?;
            let reply =
                shared
                    .core
                    .update(&info, ns, target.name.unwrap_or_default(), obj, &p, sub)?;
            ctx.warnings.extend(reply.warnings);
            Ok(object_response(
                reply.code,
                &info,
                &reply.object,
                rendering,
                include,
            ))
        }
        "patch" => {
            let patch_type = PatchType::from_content_type(&ctx.content_type).ok_or_else(|| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {})", ctx.content_type),
                )
            })?;
            let p = write_params(ctx)?;
            let force = bool_param(&ctx.query, "force");
            if force && patch_type != PatchType::Apply {
                return Err(ApiError::bad_request(
                    "force: Forbidden: may not be specified for non-apply patch",
                ));
            }
            let bytes = read_body(body).await?;
            let reply = shared.core.patch(
                &info,
                ns,
                target.name.unwrap_or_default(),
                patch_type,
                &bytes,
                &p,
                sub,
                force,
            )?;
            ctx.warnings.extend(reply.warnings);
            Ok(object_response(
                reply.code,
                &info,
                &reply.object,
                rendering,
                include,
            ))
        }
        "delete" => {
            let opts = delete_options(ctx, body).await?;
            let name = target.name.unwrap_or_default();
            let d = shared.core.delete(&info, ns, name, &opts)?;
            ctx.warnings.extend(d.warnings);
            if d.removed && !builtin::delete_returns_object(&info) {
                let status = json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "group": info.group, "kind": info.plural, "uid": d.object.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)},
                });
                return Ok(json_response(200, &status));
            }
            let code = if !d.removed && opts.orphan_dependents == Some(false) {
                202
            } else {
                200
            };
            Ok(object_response(code, &info, &d.object, rendering, include))
        }
        "deletecollection" => {
            let opts = delete_options(ctx, body).await?;
            let q = list_query(ctx, &info)?;
            let (items, warnings) = shared.core.delete_collection(&info, ns, &q, &opts)?;
            ctx.warnings.extend(warnings);
            let rv = shared.core.store.lock().current_rv();
            Ok(list_response(&info, &items, &list_metadata(rv, None, None)))
        }
        _ => Err(ApiError::method_not_allowed("unsupported verb")),
    }
}

async fn delete_options(ctx: &Ctx, body: Incoming) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::default();
    if let Some(p) = ctx.query.get("propagationPolicy").filter(|p| !p.is_empty()) {
        opts.propagation = Some(Propagation::parse(p)?);
    }
    if let Some(o) = ctx.query.get("orphanDependents") {
        opts.orphan_dependents = Some(o == "true");
    }
    if let Some(g) = ctx.query.get("gracePeriodSeconds") {
        opts.grace_period_seconds = g.parse().ok();
    }
    opts.dry_run = ctx.query.get("dryRun").is_some_and(|d| d == "All");
    let bytes = read_body(body).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let v = decode_object(&ctx.content_type, &bytes)?;
        opts.merge_body(&v)?;
    }
    Ok(opts)
}

fn watch_response(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    info: Arc<ResourceInfo>,
    ns: Option<&str>,
    name: Option<&str>,
    rendering: Rendering,
    include: IncludeObject,
) -> Result<Response<Body>, ApiError> {
    let mut fields = builtin::field_selector(
        &info,
        ctx.query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    if let Some(n) = name {
        fields
            .requirements
            .push(crate::selectors::FieldRequirement {
                field: "metadata.name".into(),
                value: n.into(),
                negate: false,
            });
    }
    let timeout = match ctx.query.get("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(t) => Some(Duration::from_secs(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}"))
        })?)),
        None => None,
    };
    let send_initial_events = match ctx.query.get("sendInitialEvents").map(String::as_str) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    let render: Option<Render> = match rendering {
        Rendering::Object => None,
        Rendering::Metadata => Some(Arc::new(|o: &Value, _first: bool| partial_metadata(o))),
        Rendering::Table => {
            let info = info.clone();
            Some(Arc::new(move |o: &Value, first: bool| {
                let mut t = table_of(&info, &[o], include);
                if !first {
                    t["columnDefinitions"] = json!([]);
                }
                if let Some(rv) = o.pointer("/metadata/resourceVersion") {
                    t["metadata"]["resourceVersion"] = rv.clone();
                }
                t
            }))
        }
    };
    let req = WatchRequest {
        namespace: ns.map(str::to_string),
        resource_version: ctx.query.get("resourceVersion").cloned(),
        send_initial_events,
        allow_bookmarks: bool_param(&ctx.query, "allowWatchBookmarks"),
        timeout,
        labels: LabelSelector::parse(
            ctx.query
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields,
        render,
    };
    let wctx = WatchContext {
        core: shared.core.clone(),
        faults: shared.faults.clone(),
        shutdown: shared.shutdown.clone(),
        bookmark_interval: shared.bookmark_interval,
    };
    let rx = watches::start(wctx, info, req)?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let body = StreamBody::new(stream).boxed_unsync();
    let mut r = Response::new(body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // No explicit Transfer-Encoding: hyper chunks unsized HTTP/1.1 bodies itself, and the
    // header is illegal in HTTP/2.
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let ns = |p: &str| p == "secrets";
        let t = parse_target(&["namespaces", "a", "secrets", "x"], ns).unwrap();
        assert_eq!(
            (t.namespace, t.plural, t.name),
            (Some("a"), "secrets", Some("x"))
        );
        let t = parse_target(&["namespaces", "a", "status"], ns).unwrap();
        assert_eq!(
            (t.namespace, t.plural, t.name, t.subresource),
            (None, "namespaces", Some("a"), Some("status"))
        );
        let t = parse_target(&["watch", "namespaces", "a", "secrets"], ns).unwrap();
        assert!(t.watch_prefix);
        assert_eq!(t.namespace, Some("a"));
        assert!(parse_target(&["a", "b", "c", "d"], ns).is_none());
    }

    #[test]
    fn negotiates_accept() {
        assert_eq!(
            negotiate(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            ),
            Rendering::Table
        );
        assert_eq!(negotiate("application/json"), Rendering::Object);
        assert_eq!(negotiate(""), Rendering::Object);
        assert_eq!(
            negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
            Rendering::Metadata
        );
        assert_eq!(
            wants_aggregated(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
            ),
            Some("v2".into())
        );
        assert_eq!(wants_aggregated("application/json, */*"), None);
    }
}
