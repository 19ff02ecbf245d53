//! Decoding Kubernetes protobuf request bodies (`k8s\0` + runtime.Unknown) of built-in kinds.

use serde_json::Value;

use crate::status::ApiError;

pub fn decode(_body: &[u8]) -> Result<Value, ApiError> {
    Err(ApiError::unsupported_media_type("application/vnd.kubernetes.protobuf"))
}
