//! Decoding Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) of
//! built-in kinds to the JSON the rest of the server works on.
//!
//! The body is the magic `k8s\0` followed by a `runtime.Unknown` envelope whose `typeMeta` names
//! the kind and whose `raw` holds the kind's message (see k8s.io/apimachinery/pkg/runtime/
//! serializer/protobuf). kubectl ≥ 1.32 sends `create namespace|secret|configmap|job|deployment|
//! cronjob|serviceaccount|service` this way.

use prost::Message;
use serde_json::{Map, Value};

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::events::v1 as events;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::apimachinery::pkg::apis::meta::v1::DeleteOptions;
use k8s_pb::apimachinery::pkg::runtime::Unknown;

use crate::protobuf_json::ToJson;

/// One line per message; formatting it one field per line would bury the table.
#[rustfmt::skip]
mod types;
use crate::status::ApiError;

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

type Render = fn(&[u8]) -> Result<Value, prost::DecodeError>;

fn render<T: Message + Default + ToJson>(raw: &[u8]) -> Result<Value, prost::DecodeError> {
    Ok(T::decode(raw)?.to_json())
}

/// (apiVersion, kind) we can decode.
const KINDS: &[(&str, &str, Render)] = &[
    ("v1", "Namespace", render::<core::Namespace>),
    ("v1", "Secret", render::<core::Secret>),
    ("v1", "ConfigMap", render::<core::ConfigMap>),
    ("v1", "ServiceAccount", render::<core::ServiceAccount>),
    ("v1", "Service", render::<core::Service>),
    ("v1", "Pod", render::<core::Pod>),
    ("v1", "PodTemplate", render::<core::PodTemplate>),
    ("v1", "Event", render::<core::Event>),
    ("events.k8s.io/v1", "Event", render::<events::Event>),
    ("batch/v1", "Job", render::<batch::Job>),
    ("batch/v1", "CronJob", render::<batch::CronJob>),
    ("apps/v1", "Deployment", render::<apps::Deployment>),
    ("apps/v1", "StatefulSet", render::<apps::StatefulSet>),
    ("apps/v1", "DaemonSet", render::<apps::DaemonSet>),
    ("apps/v1", "ReplicaSet", render::<apps::ReplicaSet>),
    (
        "coordination.k8s.io/v1",
        "Lease",
        render::<coordination::Lease>,
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        render::<policy::PodDisruptionBudget>,
    ),
];

/// Decodes a protobuf request body into the object's JSON (with `apiVersion` and `kind`).
/// A kind we do not know is `415 UnsupportedMediaType`; a malformed body is `400 BadRequest`.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::bad_request(
            "the protobuf body does not start with the Kubernetes magic prefix \"k8s\\x00\"",
        )
    })?;
    let unknown = Unknown::decode(envelope).map_err(|e| {
        ApiError::bad_request(format!("failed to decode the protobuf envelope: {e}"))
    })?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if let Some(enc) = unknown
        .content_encoding
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("unsupported protobuf content encoding {enc:?}"),
        ));
    }
    // metav1.DeleteOptions is registered in every group-version, so client-go (e.g. Helm
    // purging its release Secrets) sends it under the request's own apiVersion.
    let render: Render = if kind == "DeleteOptions" {
        render::<DeleteOptions>
    } else {
        match KINDS
            .iter()
            .find(|(v, k, _)| *v == api_version && *k == kind)
        {
            Some((_, _, render)) => *render,
            None => return Err(unsupported_kind(&api_version, &kind)),
        }
    };
    let raw = unknown.raw.unwrap_or_default();
    let body = render(&raw).map_err(|e| {
        ApiError::bad_request(format!(
            "failed to decode {api_version} {kind} from protobuf: {e}"
        ))
    })?;
    let mut obj = Map::new();
    obj.insert("kind".into(), Value::String(kind));
    obj.insert("apiVersion".into(), Value::String(api_version));
    if let Value::Object(fields) = body {
        obj.extend(fields);
    }
    Ok(Value::Object(obj))
}

/// Whether `decode` understands this kind.
pub fn supports(api_version: &str, kind: &str) -> bool {
    KINDS
        .iter()
        .any(|(v, k, _)| *v == api_version && *k == kind)
}

fn unsupported_kind(api_version: &str, kind: &str) -> ApiError {
    let known: Vec<String> = KINDS.iter().map(|(v, k, _)| format!("{v} {k}")).collect();
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml \
             (application/vnd.kubernetes.protobuf is accepted for {}; got {api_version:?} {kind:?})",
            known.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests;
