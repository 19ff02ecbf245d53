//! ObjectMeta helpers shared by the write paths: name validation as apimachinery words it,
//! timestamps, generated names, and small accessors.

use serde_json::{Map, Value, json};

use crate::status::{ApiError, Cause};

/// RFC 3339 with whole seconds, as the apiserver stamps `creationTimestamp`.
pub fn now_rfc3339() -> String {
    format_ts(jiff::Timestamp::now())
}

pub fn format_ts(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Five random lowercase alphanumerics, the suffix `generateName` gets.
pub fn random_suffix() -> String {
    // apimachinery avoids vowels and look-alike characters so that names never spell words.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `metadata` as a mutable map, created when missing or not an object.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_finalizers(obj: &mut Value, list: &[String]) {
    let meta = metadata_mut(obj);
    if list.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(list));
    }
}

pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// Marks an object as being deleted like the registry's `markAsDeleting`: timestamp, zero
/// grace period and a generation bump (only the first time).
pub fn mark_deleting(obj: &mut Value, now: &str) {
    let meta = metadata_mut(obj);
    if meta.get("deletionTimestamp").is_none_or(Value::is_null) {
        if let Some(g) = meta.get("generation").and_then(Value::as_i64)
            && g > 0
        {
            meta.insert("generation".into(), json!(g + 1));
        }
        meta.insert("deletionTimestamp".into(), json!(now));
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
    }
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Problems with a name, as apimachinery's `IsDNS1123Subdomain` / `IsDNS1123Label` words them.
pub fn name_problems(name: &str, label_only: bool) -> Vec<String> {
    let mut out = Vec::new();
    if label_only {
        if name.len() > 63 {
            out.push("must be no more than 63 characters".to_string());
        }
        if !is_dns1123_label(name) {
            out.push(DNS1123_LABEL_MSG.to_string());
        }
    } else {
        if name.len() > 253 {
            out.push("must be no more than 253 characters".to_string());
        }
        if !name.split('.').all(is_dns1123_label) {
            out.push(DNS1123_SUBDOMAIN_MSG.to_string());
        }
    }
    out
}

/// Validates `metadata.name` of an object about to be created; 422 like the apiserver.
pub fn validate_name(
    group: &str,
    kind: &str,
    name: &str,
    label_only: bool,
) -> Result<(), ApiError> {
    let problems = name_problems(name, label_only);
    if problems.is_empty() {
        return Ok(());
    }
    let cause = Cause {
        reason: "FieldValueInvalid".into(),
        message: format!(
            "metadata.name: Invalid value: {name:?}: {}",
            problems.join(", ")
        ),
        field: "metadata.name".into(),
    };
    Err(ApiError::invalid(group, kind, name, vec![cause]))
}

/// Which resources use DNS labels rather than subdomains for names.
pub fn name_is_label(group: &str, plural: &str) -> bool {
    matches!((group, plural), ("", "namespaces") | ("", "services"))
}

/// Keys of ObjectMeta; anything else in `metadata` is an unknown field.
pub const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name_problems("a.b-c", false).is_empty());
        assert!(!name_problems("A", false).is_empty());
        assert!(!name_problems("a.b", true).is_empty());
        assert!(!name_problems("-a", false).is_empty());
        let err = validate_name("", "Secret", "Bad_name", false).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.starts_with("Secret \"Bad_name\" is invalid: metadata.name: Invalid value: \"Bad_name\": a lowercase RFC 1123 subdomain"));
    }

    #[test]
    fn generated_suffix() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn marking_deleting_bumps_generation_once() {
        let mut o = json!({"metadata": {"generation": 3}});
        mark_deleting(&mut o, "2024-01-01T00:00:00Z");
        mark_deleting(&mut o, "2024-01-01T00:00:09Z");
        assert_eq!(o["metadata"]["generation"], 4);
        assert_eq!(o["metadata"]["deletionTimestamp"], "2024-01-01T00:00:00Z");
        assert_eq!(o["metadata"]["deletionGracePeriodSeconds"], 0);
    }
}
