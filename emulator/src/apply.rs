//! Server-side apply: field ownership in `metadata.managedFields`, conflicts and `force`.

use serde_json::Value;

use crate::status::ApiError;

/// What an apply request says besides its body.
pub struct ApplyContext<'a> {
    pub manager: &'a str,
    pub force: bool,
    /// `status` when applying to the status subresource.
    pub subresource: Option<&'a str>,
    /// RFC 3339 time to stamp on managedFields entries.
    pub now: &'a str,
    /// `x-kubernetes-list-map-keys` at a path, from the schema (or built-in knowledge).
    pub list_map_keys: &'a dyn Fn(&[String]) -> Option<Vec<String>>,
}

pub fn apply(live: Option<&Value>, config: &Value, _ctx: &ApplyContext) -> Result<Value, ApiError> {
    let mut out = live.cloned().unwrap_or(Value::Null);
    json_patch::merge(&mut out, config);
    Ok(out)
}

pub fn record_update(_old: Option<&Value>, _new: &mut Value, _manager: &str, _subresource: Option<&str>, _now: &str) {}
