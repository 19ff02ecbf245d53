//! OpenAPI v3 discovery documents (`/openapi/v3`, `/openapi/v3/apis/<g>/<v>`).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::resource::ResourceInfo;

pub fn index(_group_versions: &[String]) -> Value {
    json!({"paths": {}})
}

pub fn group_version_document(_resources: &[Arc<ResourceInfo>]) -> Value {
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}, "components": {"schemas": {}}})
}
