//! What a processor answers, read defensively: the answer comes from outside, so nothing of it
//! reaches the manifest unless it is short, well-formed and free of the subject's identifiers.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::api::subject::IdentifierSet;

/// The JSON body of a processor's answer (to the first call or a status poll).
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// `completed`, `pending` or `failed`. Absent: taken from the HTTP status (200 completed,
    /// 202 pending).
    #[serde(default)]
    pub status: Option<String>,
    /// The processor's id of the request.
    #[serde(default)]
    pub reference: Option<String>,
    /// Where to poll while pending (absolute, or relative to the base URL).
    #[serde(default)]
    pub status_url: Option<String>,
    #[serde(default)]
    pub confirmation: Option<ConfirmationBody>,
    /// Records found or changed per table or category.
    #[serde(default)]
    pub records: BTreeMap<String, u64>,
    /// Export: records inline, per table, each an array of JSON objects.
    #[serde(default)]
    pub data: BTreeMap<String, Vec<serde_json::Value>>,
    /// Export: files to download.
    #[serde(default)]
    pub files: Vec<Download>,
    /// Failed: why.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationBody {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default)]
    pub evidence: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Download {
    /// Table or category name; the file is written as `<name>.ndjson`.
    pub name: String,
    pub url: String,
    /// Only `ndjson` is accepted.
    #[serde(default = "ndjson")]
    pub format: String,
    /// Hex SHA-256 of the file, checked after download when given.
    #[serde(default)]
    pub sha256: Option<String>,
}

fn ndjson() -> String {
    "ndjson".into()
}

#[derive(Deserialize, Debug, Default)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
}

/// The state an answer reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Completed,
    Pending,
    Failed,
}

impl Answer {
    /// Parses a body; an empty body is an answer with nothing but its HTTP status.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Answer::default());
        }
        // serde_json's messages give positions and field names, never values.
        serde_json::from_slice(body).map_err(|e| format!("the answer is not valid JSON: {e}"))
    }

    /// The state, from `status` or else the HTTP status code (202 pending, else completed).
    pub fn state(&self, accepted: bool) -> Result<State, String> {
        match self.status.as_deref() {
            Some("completed") => Ok(State::Completed),
            Some("pending") => Ok(State::Pending),
            Some("failed") => Ok(State::Failed),
            Some(other) => Err(format!(
                "unknown status {:?}: expected completed, pending or failed",
                clip(other)
            )),
            None if accepted => Ok(State::Pending),
            None => Ok(State::Completed),
        }
    }
}

/// Keeps what a processor said about the subject out of the manifest: true when `text`
/// contains any of the subject's identifiers (case-insensitive; phone numbers also by digits).
pub fn mentions_subject(text: &str, ids: &IdentifierSet) -> bool {
    let lower = text.to_lowercase();
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    ids.iter().any(|(kind, value)| {
        let v = value.trim().to_lowercase();
        if v.len() < 3 {
            // Too short to tell apart from ordinary text; such identifiers are not used.
            return false;
        }
        if lower.contains(&v) {
            return true;
        }
        let phone_digits: String = v.chars().filter(char::is_ascii_digit).collect();
        matches!(kind, crate::api::subject::IdentifierKind::Phone)
            && phone_digits.len() >= 6
            && digits.contains(&phone_digits)
    })
}

/// A short token from the processor (an id, a code, a time) fit for the manifest: at most
/// 200 printable ASCII characters, not mentioning the subject.
pub fn token(value: Option<&str>, ids: &IdentifierSet) -> Option<String> {
    let v = value?.trim();
    let ok = !v.is_empty()
        && v.len() <= 200
        && v.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !mentions_subject(v, ids);
    ok.then(|| v.to_string())
}

/// A processor's error code for the manifest's message: CamelCase-ish word characters only.
pub fn error_code(value: Option<&str>, ids: &IdentifierSet) -> Option<String> {
    let v = token(value, ids)?;
    (v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    .then_some(v)
}

/// Evidence fields fit for the manifest: at most 32, each at most 1 KiB of JSON, none
/// mentioning the subject. Returns the kept fields and how many were dropped.
pub fn evidence(
    fields: &BTreeMap<String, serde_json::Value>,
    ids: &IdentifierSet,
) -> (BTreeMap<String, serde_json::Value>, usize) {
    let mut kept = BTreeMap::new();
    let mut dropped = 0;
    for (k, v) in fields {
        let text = v.to_string();
        let ok = kept.len() < 32
            && k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && text.len() <= 1024
            && !mentions_subject(&text, ids)
            && !mentions_subject(k, ids);
        if ok {
            kept.insert(k.clone(), v.clone());
        } else {
            dropped += 1;
        }
    }
    (kept, dropped)
}

/// A table name usable as a file name: letters, digits, `_`, `-`, `.`, not starting with `.`.
pub fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The first characters of a value for a message about its shape.
fn clip(s: &str) -> String {
    s.chars().take(20).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids() -> IdentifierSet {
        IdentifierSet {
            email: Some("Jane.Doe@example.com".into()),
            phone: Some("+49 151 12345678".into()),
            user_id: Some("u-42".into()),
            ..Default::default()
        }
    }

    #[test]
    fn states_from_body_or_status_code() {
        let a = Answer::parse(b"").unwrap();
        assert_eq!(a.state(true), Ok(State::Pending));
        assert_eq!(a.state(false), Ok(State::Completed));
        let a = Answer::parse(br#"{"status":"failed","error":{"code":"Locked"}}"#).unwrap();
        assert_eq!(a.state(false), Ok(State::Failed));
        assert!(
            Answer::parse(br#"{"status":"done"}"#)
                .unwrap()
                .state(false)
                .is_err()
        );
        assert!(Answer::parse(b"<html>").is_err());
    }

    #[test]
    fn nothing_about_the_subject_gets_through() {
        let ids = ids();
        assert!(mentions_subject("deleted jane.doe@EXAMPLE.com", &ids));
        assert!(mentions_subject("phone 4915112345678 gone", &ids));
        assert!(mentions_subject("user u-42", &ids));
        assert!(!mentions_subject("del_8842", &ids));
        assert_eq!(token(Some("del_8842"), &ids), Some("del_8842".into()));
        assert_eq!(token(Some("jane.doe@example.com"), &ids), None);
        assert_eq!(token(Some("x\ny"), &ids), None);
        assert_eq!(
            error_code(Some("SubjectLocked"), &ids),
            Some("SubjectLocked".into())
        );
        assert_eq!(error_code(Some("locked since monday"), &ids), None);
        let fields = BTreeMap::from([
            ("systems".to_string(), json!(["mail", "analytics"])),
            ("note".to_string(), json!("removed Jane.Doe@example.com")),
            ("bad key!".to_string(), json!(1)),
        ]);
        let (kept, dropped) = evidence(&fields, &ids);
        assert_eq!(kept.keys().collect::<Vec<_>>(), vec!["systems"]);
        assert_eq!(dropped, 2);
    }

    #[test]
    fn table_names_are_safe_file_names() {
        assert!(valid_table_name("events"));
        assert!(valid_table_name("mail.events_2024"));
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(!valid_table_name(bad), "{bad}");
        }
    }
}
