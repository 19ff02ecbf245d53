//! Structural schemas of CRDs: pruning, defaulting, validation (including CEL rules),
//! Table output and OpenAPI v3 documents.

pub mod openapi;
pub mod table;

pub use table::{IncludeObject, PrinterColumn, to_table};

use serde_json::Value;

/// The kind of a field error, named as apimachinery's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    TooLong,
    TooMany,
    Duplicate,
    Forbidden,
    TypeInvalid,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.subject.email` or `spec.systems[0].name`.
    pub field: String,
    pub kind: FieldErrorKind,
    pub bad_value: Option<Value>,
    pub detail: String,
}

/// A compiled openAPIV3Schema.
#[derive(Debug, Clone)]
pub struct StructuralSchema {
    raw: Value,
}

impl StructuralSchema {
    pub fn compile(openapi_v3_schema: &Value) -> Result<Self, String> {
        Ok(StructuralSchema { raw: openapi_v3_schema.clone() })
    }

    pub fn raw(&self) -> &Value {
        &self.raw
    }

    pub fn apply_defaults(&self, _obj: &mut Value) {}

    pub fn prune(&self, _obj: &mut Value) -> Vec<String> {
        Vec::new()
    }

    pub fn validate(&self, _obj: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        Vec::new()
    }

    pub fn list_map_keys(&self, _path: &[String]) -> Option<Vec<String>> {
        None
    }
}
