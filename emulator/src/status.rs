//! `ApiError`: every failure the server reports, rendered as a metav1.Status like kube-apiserver.

use serde_json::{Value, json};

/// One field-level cause inside a `422 Invalid` or `409 Conflict` Status.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldManagerConflict`, ...
    pub reason: String,
    pub message: String,
    /// Dotted field path, e.g. `spec.subject.email`.
    pub field: String,
}

/// An error reply. `code` is the HTTP status; `reason` the metav1.StatusReason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status: name, group, kind, causes, retryAfterSeconds.
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `resource` is the plural with group, e.g. `datasubjectrequests.privacy-operator.dev`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let res = qualified(group, plural);
        Self::new(404, "NotFound", format!("{res} \"{name}\" not found"))
            .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let res = qualified(group, plural);
        Self::new(
            409,
            "AlreadyExists",
            format!("{res} \"{name}\" already exists"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let res = qualified(group, plural);
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {res} \"{name}\": {why}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 422 with the apiserver's message shape: `Kind.group "name" is invalid: [a, b]`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let gk = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        // Causes carry the body alone; the message names the field, as `field.Error.Error()`.
        let causes: Vec<Cause> = causes
            .into_iter()
            .map(|mut c| {
                if let Some(body) = c.message.strip_prefix(&format!("{}: ", c.field)) {
                    c.message = body.to_string();
                }
                c
            })
            .collect();
        let msgs: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = if msgs.len() == 1 {
            msgs[0].clone()
        } else {
            format!("[{}]", msgs.join(", "))
        };
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{gk} \"{name}\" is invalid: {joined}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes_json}))
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type})"
            ),
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(429, "TooManyRequests", message).with_details(json!({"retryAfterSeconds": 1}))
    }

    /// The metav1.Status body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl ApiError {
    /// 403 Forbidden, e.g. creating content in a terminating namespace.
    pub fn forbidden(group: &str, plural: &str, name: &str, message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
            .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 404 for a URL that names no served resource (message as the apiserver's mux).
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 405 for a verb the resource does not support.
    pub fn verb_not_supported(verb: &str, group_resource: &str) -> Self {
        Self::method_not_allowed(format!(
            "{verb} is not supported on resources of kind \"{group_resource}\""
        ))
    }

    /// 422 built from schema validation errors, messages as apimachinery's `field.Error`.
    pub fn from_field_errors(
        group: &str,
        kind: &str,
        name: &str,
        errors: &[crate::schema::FieldError],
    ) -> Self {
        let causes = errors.iter().map(cause_from_field_error).collect();
        Self::invalid(group, kind, name, causes)
    }

    /// 429 with an explicit `Retry-After`.
    pub fn too_many_requests_after(message: impl Into<String>, retry_after_seconds: u64) -> Self {
        Self::new(429, "TooManyRequests", message)
            .with_details(json!({"retryAfterSeconds": retry_after_seconds}))
    }

    /// 504 Timeout (e.g. a watch or list that cannot be served in time).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// `Retry-After` seconds carried in the details, if any.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.details.as_ref()?.get("retryAfterSeconds")?.as_u64()
    }
}

/// Maps a schema field error to a Status cause. Like apimachinery's `NewInvalid`, a cause holds
/// only the body (kubectl prints `* field: body`), while the Status message joins full errors.
pub fn cause_from_field_error(e: &crate::schema::FieldError) -> Cause {
    Cause {
        reason: e.reason().to_string(),
        message: e.body(),
        field: e.field.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FieldError, FieldErrorKind};

    #[test]
    fn field_error_messages_match_apimachinery() {
        let e = FieldError {
            field: "spec.type".into(),
            kind: FieldErrorKind::NotSupported,
            bad_value: Some(json!("Foo")),
            detail: "supported values: \"Access\", \"Erasure\"".into(),
        };
        assert_eq!(
            cause_from_field_error(&e).message,
            "Unsupported value: \"Foo\": supported values: \"Access\", \"Erasure\""
        );
        let e = FieldError {
            field: "spec.subject".into(),
            kind: FieldErrorKind::Required,
            bad_value: None,
            detail: String::new(),
        };
        assert_eq!(cause_from_field_error(&e).message, "Required value");
        let e = FieldError {
            field: "spec.x".into(),
            kind: FieldErrorKind::Invalid,
            bad_value: Some(json!("y")),
            detail: "detail".into(),
        };
        let c = cause_from_field_error(&e);
        assert_eq!(c.message, "Invalid value: \"y\": detail");
        assert_eq!(c.reason, "FieldValueInvalid");
        let err =
            ApiError::from_field_errors("privacy-operator.dev", "DataSubjectRequest", "x", &[e]);
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "DataSubjectRequest.privacy-operator.dev \"x\" is invalid: spec.x: Invalid value: \"y\": detail"
        );
    }
}
