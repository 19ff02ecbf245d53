//! Structural schemas of CRDs: pruning, defaulting, validation (including CEL rules),
//! Table output and OpenAPI v3 documents.
//!
//! Behaviour follows apiextensions-apiserver; messages are built like apimachinery's
//! `field.Error` so that clients see the same 422 texts as from a real cluster.

pub mod builtin_schemas;
mod cel;
mod defaults;
pub mod errors;
pub mod formats;
pub mod jsonpath;
mod node;
pub mod openapi;
pub mod openapi_v2;
mod prune;
pub mod table;
mod validate;

pub use errors::{FieldError, FieldErrorKind};
pub use prune::OBJECT_META_FIELDS;
pub use table::{IncludeObject, PrinterColumn, columns_from_crd_version, to_table};

use serde_json::Value;

use node::{Additional, Node};

/// A compiled openAPIV3Schema: regexes and CEL programs are compiled once, here.
#[derive(Debug, Clone)]
pub struct StructuralSchema {
    raw: Value,
    root: Node,
}

impl StructuralSchema {
    /// Compiles a CRD version's `openAPIV3Schema`. The error lists every problem, each as
    /// `openAPIV3Schema.<path>: <apimachinery message>`; see [`StructuralSchema::compile_at`]
    /// for them as field errors.
    pub fn compile(openapi_v3_schema: &Value) -> Result<Self, String> {
        Self::compile_at(openapi_v3_schema, "openAPIV3Schema").map_err(|errs| {
            errs.iter()
                .map(FieldError::message)
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// Like [`StructuralSchema::compile`], reporting problems as field errors under `path`
    /// (e.g. `spec.versions[0].schema.openAPIV3Schema`), as the CRD's 422 causes.
    pub fn compile_at(openapi_v3_schema: &Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut errs = Vec::new();
        let root = Node::compile(openapi_v3_schema, path, &mut errs);
        if root.type_.as_deref() != Some("object") && !root.int_or_string {
            errs.push(FieldError::invalid(
                format!("{path}.type"),
                Value::String(root.type_.clone().unwrap_or_default()),
                "must be object at the root",
            ));
        }
        if errs.is_empty() {
            Ok(StructuralSchema {
                raw: openapi_v3_schema.clone(),
                root,
            })
        } else {
            Err(errs)
        }
    }

    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Sets defaults of absent fields (and non-nullable nulls) everywhere in `obj`, then
    /// drops non-nullable nulls without a default, as the apiserver does after pruning.
    pub fn apply_defaults(&self, obj: &mut Value) {
        defaults::apply(&self.root, obj);
    }

    /// Removes fields the schema does not know (keeping `apiVersion`, `kind` and ObjectMeta's
    /// fields of `metadata` at the root and in embedded resources), and returns their paths,
    /// e.g. `spec.foo` or `spec.items[0].bar`, sorted: what `fieldValidation=Strict` reports
    /// as `unknown field "spec.foo"`.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        prune::prune_object(&self.root, obj)
    }

    /// Validates a whole custom resource: `metadata.name`, the schema (spec, status, ...),
    /// embedded resources, list-type sets and maps, and CEL rules (transition rules only when
    /// `old`, the stored object of an update, has a value at the rule's path).
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        validate::validate_object(&self.root, obj, old)
    }

    /// `x-kubernetes-list-map-keys` of the list at `path` (field names from the object root;
    /// list indexes are not part of the path), for server-side apply merging.
    pub fn list_map_keys(&self, path: &[String]) -> Option<Vec<String>> {
        let node = self.node_at(path)?;
        (node.list_type.as_deref() == Some("map") && !node.list_map_keys.is_empty())
            .then(|| node.list_map_keys.clone())
    }

    /// `x-kubernetes-list-type` of the list at `path` (`atomic`, `set` or `map`), for
    /// server-side apply; `None` when unset (atomic) or not a list.
    pub fn list_type(&self, path: &[String]) -> Option<String> {
        self.node_at(path)?.list_type.clone()
    }

    /// `x-kubernetes-map-type` of the object at `path` (`granular` or `atomic`).
    pub fn map_type(&self, path: &[String]) -> Option<String> {
        self.node_at(path)?.map_type.clone()
    }

    fn node_at(&self, path: &[String]) -> Option<&Node> {
        let mut node = &self.root;
        for seg in path {
            // List items are addressed through the list itself: descend into `items` first.
            while node.type_.as_deref() == Some("array") {
                node = node.items.as_deref()?;
            }
            node = match node.properties.get(seg) {
                Some(p) => p,
                None => match &node.additional {
                    Some(Additional::Schema(s)) => s,
                    _ => return None,
                },
            };
        }
        Some(node)
    }
}

#[cfg(test)]
mod tests;
