//! JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch for built-ins.

use serde_json::Value;

use crate::resource::ResourceInfo;
use crate::status::ApiError;

pub fn json_patch(doc: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let p: json_patch::Patch =
        serde_json::from_slice(patch).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &p).map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
    Ok(out)
}

pub fn merge_patch(doc: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let p: Value = serde_json::from_slice(patch).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut out = doc.clone();
    json_patch::merge(&mut out, &p);
    Ok(out)
}

pub fn strategic_merge_patch(doc: &Value, patch: &[u8], _info: &ResourceInfo) -> Result<Value, ApiError> {
    merge_patch(doc, patch)
}
