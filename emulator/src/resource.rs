//! `ResourceInfo`: what one served resource (a group/version/plural) is.

use std::sync::Arc;

use serde_json::Value;

use crate::schema::{PrinterColumn, StructuralSchema};

/// How strategic merge patch treats the kind (built-ins only; CRs refuse it with 415).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Builtin,
    Custom,
}

#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    /// True when `/status` is a subresource (spec/status writes are split, generation tracks spec).
    pub status_subresource: bool,
    /// Compiled schema for validation, pruning and defaults; `None` accepts anything (built-ins).
    pub schema: Option<Arc<StructuralSchema>>,
    /// The raw openAPIV3Schema, published under `/openapi/v3`.
    pub openapi_schema: Option<Value>,
    pub printer_columns: Vec<PrinterColumn>,
    pub patch_kind: PatchKind,
}

impl ResourceInfo {
    /// `apiVersion` as written in objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or just `plural` for the core group), as used in messages and RBAC.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}
