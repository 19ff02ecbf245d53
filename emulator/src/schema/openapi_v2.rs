//! `/openapi/v2`: the Swagger 2.0 document in gnostic's protobuf encoding
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), which kubectl 1.27 and 1.28
//! load before `explain` and for their client-side fallbacks. Built from the same schemas as
//! the v3 documents: definitions (with `x-kubernetes-group-version-kind`) and the PATCH
//! operations with their query parameters.

use std::sync::Arc;

use prost::Message;
use serde_json::{Map, Value, json};

use super::openapi::{by_group_version, group_version_document};
use crate::resource::ResourceInfo;

/// The MIME type kubectl asks for.
pub const PROTOBUF_MIME: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The Content-Type the apiserver answers with: Go's `mime` parser rejects the `@` of the
/// requested type, so kube-openapi replies with a dot instead.
pub const PROTOBUF_RESPONSE_MIME: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The Swagger 2.0 document (JSON) for every served resource.
pub fn document(resources: &[Arc<ResourceInfo>]) -> Value {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    for (_, rs) in by_group_version(resources) {
        let v3 = group_version_document(&rs);
        if let Some(Value::Object(schemas)) = v3.pointer("/components/schemas") {
            for (name, s) in schemas {
                definitions.insert(name.clone(), v3_to_v2_schema(s));
            }
        }
        if let Some(Value::Object(ps)) = v3.get("paths") {
            for (p, item) in ps {
                paths.insert(p.clone(), v3_to_v2_path(item));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
    })
}

/// The document encoded as gnostic's `openapi.v2.Document`.
pub fn protobuf(resources: &[Arc<ResourceInfo>]) -> Vec<u8> {
    encode(&document(resources))
}

fn rewrite_refs(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => {
                            Value::String(r.replace("#/components/schemas/", "#/definitions/"))
                        }
                        _ => rewrite_refs(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(rewrite_refs).collect()),
        other => other.clone(),
    }
}

fn v3_to_v2_schema(s: &Value) -> Value {
    rewrite_refs(s)
}

fn v3_to_v2_path(item: &Value) -> Value {
    let mut out = Map::new();
    if let Value::Object(m) = item {
        for (k, v) in m {
            match k.as_str() {
                "parameters" => {
                    out.insert(k.clone(), v2_params(v));
                }
                "get" | "put" | "post" | "delete" | "patch" => {
                    let mut op = Map::new();
                    for f in [
                        "tags",
                        "description",
                        "operationId",
                        "x-kubernetes-action",
                        "x-kubernetes-group-version-kind",
                    ] {
                        if let Some(x) = v.get(f) {
                            op.insert(f.to_string(), x.clone());
                        }
                    }
                    op.insert(
                        "parameters".into(),
                        v2_params(v.get("parameters").unwrap_or(&Value::Null)),
                    );
                    out.insert(k.clone(), Value::Object(op));
                }
                _ => {}
            }
        }
    }
    Value::Object(out)
}

fn v2_params(v: &Value) -> Value {
    let params = v.as_array().cloned().unwrap_or_default();
    Value::Array(
        params
            .iter()
            .map(|p| {
                json!({
                    "name": p.get("name").cloned().unwrap_or(Value::Null),
                    "in": p.get("in").cloned().unwrap_or(Value::Null),
                    "description": p.get("description").cloned().unwrap_or(Value::Null),
                    "required": p.get("required").cloned().unwrap_or(Value::Bool(false)),
                    "type": p.pointer("/schema/type").cloned().unwrap_or(json!("string")),
                    "uniqueItems": true,
                })
            })
            .collect(),
    )
}

// --- gnostic openapi.v2 messages (the subset we emit), field numbers from OpenAPIv2.proto ---

#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Paths {
    #[prost(message, repeated, tag = "2")]
    path: Vec<NamedPathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedPathItem {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<PathItem>,
}

#[derive(Clone, PartialEq, Message)]
struct PathItem {
    #[prost(message, optional, tag = "2")]
    get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    parameters: Vec<ParametersItem>,
}

#[derive(Clone, PartialEq, Message)]
struct Operation {
    #[prost(string, repeated, tag = "1")]
    tags: Vec<String>,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(string, tag = "5")]
    operation_id: String,
    #[prost(message, repeated, tag = "8")]
    parameters: Vec<ParametersItem>,
    #[prost(message, repeated, tag = "13")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    parameter: Option<Parameter>,
}

#[derive(Clone, PartialEq, Message)]
struct Parameter {
    #[prost(message, optional, tag = "2")]
    non_body_parameter: Option<NonBodyParameter>,
}

#[derive(Clone, PartialEq, Message)]
struct NonBodyParameter {
    #[prost(message, optional, tag = "3")]
    query_parameter_sub_schema: Option<SimpleParam>,
    #[prost(message, optional, tag = "4")]
    path_parameter_sub_schema: Option<PathParam>,
}

/// `QueryParameterSubSchema`.
#[derive(Clone, PartialEq, Message)]
struct SimpleParam {
    #[prost(bool, tag = "1")]
    required: bool,
    #[prost(string, tag = "2")]
    in_: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "6")]
    type_: String,
    #[prost(bool, tag = "20")]
    unique_items: bool,
}

/// `PathParameterSubSchema`.
#[derive(Clone, PartialEq, Message)]
struct PathParam {
    #[prost(bool, tag = "1")]
    required: bool,
    #[prost(string, tag = "2")]
    in_: String,
    #[prost(string, tag = "3")]
    description: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "5")]
    type_: String,
    #[prost(bool, tag = "19")]
    unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "2")]
    yaml: String,
}

#[derive(Clone, PartialEq, Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Any>,
}

#[derive(Clone, PartialEq, Message)]
struct AdditionalPropertiesItem {
    #[prost(message, optional, boxed, tag = "1")]
    schema: Option<Box<Schema>>,
    #[prost(bool, optional, tag = "2")]
    boolean: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Properties {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct Schema {
    #[prost(string, tag = "1")]
    ref_: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "3")]
    title: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(message, optional, tag = "5")]
    default: Option<Any>,
    #[prost(double, tag = "6")]
    multiple_of: f64,
    #[prost(double, tag = "7")]
    maximum: f64,
    #[prost(bool, tag = "8")]
    exclusive_maximum: bool,
    #[prost(double, tag = "9")]
    minimum: f64,
    #[prost(bool, tag = "10")]
    exclusive_minimum: bool,
    #[prost(int64, tag = "11")]
    max_length: i64,
    #[prost(int64, tag = "12")]
    min_length: i64,
    #[prost(string, tag = "13")]
    pattern: String,
    #[prost(int64, tag = "14")]
    max_items: i64,
    #[prost(int64, tag = "15")]
    min_items: i64,
    #[prost(int64, tag = "17")]
    max_properties: i64,
    #[prost(int64, tag = "18")]
    min_properties: i64,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    enum_: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    type_: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

/// JSON is YAML: gnostic keeps extension values as YAML text.
fn any(v: &Value) -> Any {
    Any {
        yaml: v.to_string(),
    }
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn schema(v: &Value) -> Schema {
    let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let i = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let schemas = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(schema).collect())
            .unwrap_or_default()
    };
    Schema {
        ref_: s(v, "$ref"),
        format: s(v, "format"),
        title: s(v, "title"),
        description: s(v, "description"),
        default: v.get("default").map(any),
        multiple_of: f("multipleOf"),
        maximum: f("maximum"),
        exclusive_maximum: b("exclusiveMaximum"),
        minimum: f("minimum"),
        exclusive_minimum: b("exclusiveMinimum"),
        max_length: i("maxLength"),
        min_length: i("minLength"),
        pattern: s(v, "pattern"),
        max_items: i("maxItems"),
        min_items: i("minItems"),
        max_properties: i("maxProperties"),
        min_properties: i("minProperties"),
        required: v
            .get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        enum_: v
            .get("enum")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(any).collect())
            .unwrap_or_default(),
        additional_properties: match v.get("additionalProperties") {
            Some(Value::Bool(x)) => Some(Box::new(AdditionalPropertiesItem {
                schema: None,
                boolean: Some(*x),
            })),
            Some(o @ Value::Object(_)) => Some(Box::new(AdditionalPropertiesItem {
                schema: Some(Box::new(schema(o))),
                boolean: None,
            })),
            _ => None,
        },
        type_: v.get("type").and_then(Value::as_str).map(|t| TypeItem {
            value: vec![t.to_string()],
        }),
        items: v.get("items").filter(|i| i.is_object()).map(|i| ItemsItem {
            schema: vec![schema(i)],
        }),
        all_of: schemas("allOf"),
        properties: v
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| Properties {
                additional_properties: props
                    .iter()
                    .map(|(name, p)| NamedSchema {
                        name: name.clone(),
                        value: Some(schema(p)),
                    })
                    .collect(),
            }),
        vendor_extension: extensions(v),
    }
}

fn extensions(v: &Value) -> Vec<NamedAny> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("x-"))
                .map(|(k, x)| NamedAny {
                    name: k.clone(),
                    value: Some(any(x)),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn param(p: &Value) -> ParametersItem {
    let nb = if s(p, "in") == "path" {
        NonBodyParameter {
            query_parameter_sub_schema: None,
            path_parameter_sub_schema: Some(PathParam {
                required: true,
                in_: "path".into(),
                description: s(p, "description"),
                name: s(p, "name"),
                type_: s(p, "type"),
                unique_items: true,
            }),
        }
    } else {
        NonBodyParameter {
            query_parameter_sub_schema: Some(SimpleParam {
                required: false,
                in_: s(p, "in"),
                description: s(p, "description"),
                name: s(p, "name"),
                type_: s(p, "type"),
                unique_items: true,
            }),
            path_parameter_sub_schema: None,
        }
    };
    ParametersItem {
        parameter: Some(Parameter {
            non_body_parameter: Some(nb),
        }),
    }
}

fn params(v: Option<&Value>) -> Vec<ParametersItem> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(param).collect())
        .unwrap_or_default()
}

fn operation(v: Option<&Value>) -> Option<Operation> {
    let v = v?;
    Some(Operation {
        tags: v
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        description: s(v, "description"),
        operation_id: s(v, "operationId"),
        parameters: params(v.get("parameters")),
        vendor_extension: extensions(v),
    })
}

fn encode(doc: &Value) -> Vec<u8> {
    let paths = doc.get("paths").and_then(Value::as_object).map(|ps| Paths {
        path: ps
            .iter()
            .map(|(name, item)| NamedPathItem {
                name: name.clone(),
                value: Some(PathItem {
                    get: operation(item.get("get")),
                    put: operation(item.get("put")),
                    post: operation(item.get("post")),
                    delete: operation(item.get("delete")),
                    patch: operation(item.get("patch")),
                    parameters: params(item.get("parameters")),
                }),
            })
            .collect(),
    });
    let definitions = doc
        .get("definitions")
        .and_then(Value::as_object)
        .map(|defs| Definitions {
            additional_properties: defs
                .iter()
                .map(|(name, d)| NamedSchema {
                    name: name.clone(),
                    value: Some(schema(d)),
                })
                .collect(),
        });
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Kubernetes".into(),
            version: "v1.33.0".into(),
        }),
        paths,
        definitions,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::PatchKind;

    #[test]
    fn v2_document_has_definitions_and_patch_params() {
        let r = Arc::new(ResourceInfo {
            group: String::new(),
            version: "v1".into(),
            kind: "Secret".into(),
            list_kind: "SecretList".into(),
            plural: "secrets".into(),
            singular: "secret".into(),
            namespaced: true,
            short_names: vec![],
            categories: vec![],
            verbs: ["get", "list", "patch"].map(String::from).to_vec(),
            status_subresource: false,
            schema: None,
            openapi_schema: None,
            printer_columns: vec![],
            patch_kind: PatchKind::Builtin,
        });
        let doc = document(std::slice::from_ref(&r));
        let secret = &doc["definitions"]["io.k8s.api.core.v1.Secret"];
        assert_eq!(
            secret["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"];
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let bytes = protobuf(&[r]);
        let decoded = Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.swagger, "2.0");
        assert!(
            decoded
                .definitions
                .unwrap()
                .additional_properties
                .iter()
                .any(|d| d.name == "io.k8s.api.core.v1.Secret")
        );
    }
}
