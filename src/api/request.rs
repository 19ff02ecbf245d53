//! `DataSubjectRequest`: one data subject's request (access, portability, rectification,
//! erasure, restriction, objection, consent withdrawal) and its progress.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    cel,
    conditions::{HasConditions, conditions_schema},
    refs::{LocalObjectReference, SecretKeyReference, Selector},
    regulation::Regulation,
    subject::{Subject, SubjectDigest},
};

/// Spec fields that may change after creation; everything else is immutable.
pub const MUTABLE_FIELDS: [&str; 2] = ["cancel", "legalHold"];
/// Spec fields that may be added once after creation, then never changed or removed.
pub const WRITE_ONCE_FIELDS: [&str; 2] = ["extension", "verification"];

/// What a data subject asks for, under which law, and where to look.
// Each printcolumn(...) repeats `type_ = ...`; clippy mistakes them for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "privacy-operator.dev",
    version = "v1alpha1",
    kind = "DataSubjectRequest",
    plural = "datasubjectrequests",
    shortname = "dsr",
    category = "privacy",
    namespaced,
    status = "DataSubjectRequestStatus",
    derive = "PartialEq",
    doc = "A data subject's request under a privacy law (GDPR, UK GDPR, CCPA/CPRA, LGPD): access, portability, rectification, erasure, restriction, objection or consent withdrawal. The operator finds the subject in every DataSystem in scope, does the work with grace periods, tracks the statutory deadline and reports every step in status. The spec cannot be changed once created, except cancel, legalHold, and adding extension or verification once.",
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.type",
        description = "What the subject asked for"
    ),
    printcolumn(
        name = "Regulation",
        type_ = "string",
        json_path = ".spec.regulation",
        priority = 1,
        description = "The law the request is made under"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the request stands"
    ),
    printcolumn(
        name = "Due",
        type_ = "string",
        json_path = ".status.dueAt",
        description = "Statutory deadline (after any extension)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "True once the request is complete"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = request_spec_rules)]
pub struct DataSubjectRequestSpec {
    /// What the subject asks for:
    /// Access (what is stored about them and why),
    /// Portability (a machine-readable copy, ready to import elsewhere),
    /// Rectification (correct or complete fields; needs `rectification`),
    /// Erasure (delete everywhere, restorable during the restore window, then purged),
    /// Restriction (keep the data but stop processing it for `restrictedPurposes`),
    /// Objection (stop direct marketing, profiling or automated decisions),
    /// ConsentWithdrawal (withdraw consent for purposes, in every system and at third parties).
    #[serde(rename = "type")]
    pub type_: RequestType,

    /// The law the request is made under; it sets the statutory deadline: GDPR and UKGDPR one
    /// calendar month (extendable by two), CCPA 45 days (extendable by 45), LGPD 15 days.
    pub regulation: Regulation,

    /// Who the request is about: inline identifiers or a Secret holding them.
    pub subject: Subject,

    /// When the organisation received the request, if earlier than the creation of this
    /// resource (e.g. an e-mail that arrived last week). The statutory deadline counts from
    /// here. RFC 3339, e.g. 2024-05-01T09:30:00Z.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Time>,

    /// Your own reference for the request (ticket number, case id) for the audit trail.
    /// Must not contain personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reference: Option<String>,

    /// Which DataSystems in this namespace are in scope, by label. Omit to include every
    /// DataSystem in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systems: Option<Selector>,

    /// RetentionPolicy that sets grace periods, deadlines and retries for this request. Omit to
    /// use the policy named `default` in this namespace, or built-in defaults (restore window
    /// 14d, third-party purge within 30d, exports expire after 7d) when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy_ref: Option<LocalObjectReference>,

    /// ConsentPolicy that says what restriction, objection or withdrawal does per purpose and
    /// system. Used by Restriction, Objection and ConsentWithdrawal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_policy_ref: Option<LocalObjectReference>,

    /// Purposes to stop processing for (Restriction, Objection, ConsentWithdrawal only): purpose
    /// names or purpose groups from the ConsentPolicy (e.g. `marketing-email`, or `marketing`
    /// for every marketing purpose), or `all`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = 32),
        inner(length(min = 1, max = 63), regex(pattern = PURPOSE_NAME)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub restricted_purposes: Vec<String>,

    /// The corrections to make (type Rectification only, and required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rectification: Option<Rectification>,

    /// How to deliver the data (Access and Portability only). Defaults to JSON, unencrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSpec>,

    /// How the subject's identity was verified. The request does nothing until it is verified,
    /// either here or by a RetentionPolicy with `preVerified: true`. May be added after
    /// creation, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,

    /// Extends the statutory deadline once, as the law allows (GDPR/UK GDPR by two months, CCPA
    /// by 45 days; LGPD allows none). Tell the subject about the extension and its reason.
    /// May be added after creation, once; it cannot be changed or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,

    /// Pauses every purge (erasure, restore-archive destruction) while true, for litigation or
    /// a regulator's order, without losing the timeline. May be changed at any time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legal_hold: bool,

    /// Erasure only: set to true during the restore window to undo the erasure; soft-deleted
    /// data is restored and the request ends Restored. After the window it has no effect.
    /// May be changed at any time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

/// Purpose names: lower-case words joined by `-`.
pub const PURPOSE_NAME: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// What the subject asks for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RequestType {
    Access,
    Portability,
    Rectification,
    Erasure,
    Restriction,
    Objection,
    ConsentWithdrawal,
}

impl RequestType {
    /// Restriction, Objection and ConsentWithdrawal stop processing for purposes.
    pub fn restricts(self) -> bool {
        matches!(
            self,
            RequestType::Restriction | RequestType::Objection | RequestType::ConsentWithdrawal
        )
    }

    /// Access and Portability produce an export bundle.
    pub fn exports(self) -> bool {
        matches!(self, RequestType::Access | RequestType::Portability)
    }
}

/// Corrections to the subject's data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Rectification {
    /// One entry per field to correct or add. Fields must be declared `rectifiable` in the
    /// DataSystems' data maps; identifiers used as keys (e.g. a primary e-mail) usually are not.
    #[schemars(length(min = 1, max = 64))]
    pub changes: Vec<RectificationChange>,
}

/// One corrected field. Give exactly one of `value` or `valueFrom`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.value) != has(self.valueFrom)",
        "message": "give exactly one of value (inline) or valueFrom (a Secret key, to keep personal data out of Git)"
    }
]))]
pub struct RectificationChange {
    /// The field to correct, as named in the data maps' `fields` (e.g. `phone`, `last_name`).
    #[schemars(length(min = 1, max = 63), regex(pattern = super::datamap::SQL_IDENTIFIER))]
    pub field: String,
    /// Only correct the field in this DataSystem; omit for every system in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = super::refs::DNS_SUBDOMAIN))]
    pub system: Option<String>,
    /// Only correct the field in this table; omit for every table that has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 127), regex(pattern = super::datamap::TABLE_NAME))]
    pub table: Option<String>,
    /// The correct value. It is personal data: prefer `valueFrom` when requests live in Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// The correct value, read from a Secret key in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<SecretKeyReference>,
}

impl std::fmt::Debug for RectificationChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RectificationChange")
            .field("field", &self.field)
            .field("system", &self.system)
            .field("table", &self.table)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("value_from", &self.value_from)
            .finish()
    }
}

/// How exported data is delivered.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ExportSpec {
    /// File format of the exported records: JSON (one document per system, related records
    /// nested), NDJSON (one record per line, for large tables) or CSV (one file per table).
    #[serde(default)]
    pub format: ExportFormat,
    /// An age public key (`age1...`). When set, the bundle is encrypted to it and only the
    /// holder of the matching private key can read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = AGE_RECIPIENT))]
    pub recipient: Option<String>,
}

/// An age X25519 recipient: `age1` and 58 bech32 characters.
pub const AGE_RECIPIENT: &str = "^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$";

/// File format of an export.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExportFormat {
    #[default]
    #[serde(rename = "JSON")]
    Json,
    #[serde(rename = "NDJSON")]
    Ndjson,
    #[serde(rename = "CSV")]
    Csv,
}

/// The record of how the subject's identity was checked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// How identity was checked: Email (a link sent to the address on file), AccountLogin
    /// (the request came from a logged-in session), IdentityDocument, KnowledgeBased
    /// (questions only the subject can answer), InPerson, or Other (explain in `note`).
    pub method: VerificationMethod,
    /// Who verified (staff member or system), for the audit trail.
    #[schemars(length(min = 1, max = 256))]
    pub verified_by: String,
    /// When verification happened, RFC 3339.
    pub verified_at: Time,
    /// Anything an auditor should know (no personal data of the subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub note: Option<String>,
}

/// How identity was checked.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VerificationMethod {
    Email,
    AccountLogin,
    IdentityDocument,
    KnowledgeBased,
    InPerson,
    Other,
}

/// The one extension of the statutory deadline the law allows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    /// Why more time is needed (complexity, number of requests); told to the subject.
    #[schemars(length(min = 10, max = 1024))]
    pub reason: String,
    /// Who decided the extension, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub approved_by: Option<String>,
}

fn request_spec_rules(schema: &mut Schema) {
    let mut rules = vec![
        json!({
            "rule": "!has(self.rectification) || self.type == 'Rectification'",
            "message": "rectification is only allowed with type: Rectification; remove it or change the type",
            "fieldPath": ".rectification",
            "reason": "FieldValueForbidden",
        }),
        json!({
            "rule": "self.type != 'Rectification' || has(self.rectification)",
            "message": "type Rectification needs rectification.changes listing each field to correct and its new value",
            "fieldPath": ".rectification",
            "reason": "FieldValueRequired",
        }),
        json!({
            "rule": "!has(self.restrictedPurposes) || self.type in ['Restriction', 'Objection', 'ConsentWithdrawal']",
            "message": "restrictedPurposes is only allowed with type Restriction, Objection or ConsentWithdrawal; remove it or change the type",
            "fieldPath": ".restrictedPurposes",
            "reason": "FieldValueForbidden",
        }),
        json!({
            "rule": "!(self.type in ['Restriction', 'Objection', 'ConsentWithdrawal']) || has(self.restrictedPurposes) || has(self.consentPolicyRef)",
            "message": "this type needs restrictedPurposes (e.g. [marketing-email], or [all]) or a consentPolicyRef that says which processing to stop",
            "fieldPath": ".restrictedPurposes",
            "reason": "FieldValueRequired",
        }),
        json!({
            "rule": "!has(self.cancel) || !self.cancel || self.type == 'Erasure'",
            "message": "cancel only applies to type Erasure (it restores erased data during the restore window); remove it, or delete this request to abandon it",
            "fieldPath": ".cancel",
            "reason": "FieldValueForbidden",
        }),
        json!({
            "rule": "!has(self.export) || self.type in ['Access', 'Portability']",
            "message": "export is only allowed with type Access or Portability; remove it or change the type",
            "fieldPath": ".export",
            "reason": "FieldValueForbidden",
        }),
    ];
    for (name, required) in cel::properties(schema) {
        if MUTABLE_FIELDS.contains(&name.as_str()) {
            continue;
        }
        if WRITE_ONCE_FIELDS.contains(&name.as_str()) {
            rules.push(cel::write_once_property(
                &name,
                &format!("{name} can be set only once and cannot be changed or removed afterwards"),
            ));
        } else {
            rules.push(cel::immutable_property(
                &name,
                required,
                &format!(
                    "{name} cannot be changed after the request is created (only cancel, legalHold, and adding extension or verification once, are allowed); delete the request and create a new one instead"
                ),
            ));
        }
    }
    cel::add_rules(schema, rules);
}

/// Observed state of a request. Never holds the subject's identifiers, only their digest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSubjectRequestStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where the request stands, for humans; use conditions for automation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RequestPhase>,

    /// Detailed state: Accepted, Verified, Exported, Rectified, Restricted, SoftDeleted,
    /// Purged, ThirdPartiesPurged, Restored, Overdue, Duplicate, OnHold, Failed, Reconciling,
    /// Stalled, and Ready as the summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Salted SHA-256 of the subject's normalised identifiers: how the subject appears in
    /// status, events, logs and the erasure ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_digest: Option<SubjectDigest>,

    /// When the request was received: spec.receivedAt, or when the operator accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Time>,
    /// Statutory deadline, from receivedAt and the regulation (or the policy's override).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Time>,
    /// The deadline after spec.extension, once applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_due_at: Option<Time>,
    /// Erasure: until when a cancel restores the data (soft delete + restore window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_until: Option<Time>,
    /// Erasure: when the permanent purge runs (restoreUntil, later while on legal hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<Time>,
    /// Erasure: by when every third-party processor must confirm the purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub third_party_deadline: Option<Time>,
    /// Erasure: when the last backup holding the data ages out (purge + backup retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups_age_out_at: Option<Time>,
    /// When the request reached its final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// Progress per DataSystem in scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub systems: Vec<SystemProgress>,

    /// Access and Portability: the export bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStatus>,

    /// The tamper-evident receipt of everything done for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,

    /// Name of the in-flight request of the same type for the same subject, when this one is
    /// a duplicate and does no work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
}

impl HasConditions for DataSubjectRequestStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// Where a request stands, for humans.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RequestPhase {
    Pending,
    AwaitingVerification,
    InProgress,
    RestoreWindow,
    OnHold,
    Completed,
    Restored,
    Cancelled,
    Duplicate,
    Failed,
}

/// Progress of the request in one DataSystem.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemProgress {
    /// Name of the DataSystem.
    pub name: String,
    /// True for a third-party processor (purged at its own deadline).
    #[serde(default)]
    pub third_party: bool,
    /// The step under way or last done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// State of that step.
    pub phase: SystemPhase,
    /// The Job running or last run for the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Attempts made for the step (retries count against the policy's budget).
    #[serde(default)]
    pub attempts: i32,
    /// When the next attempt may start (backoff after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    /// Records found, exported or changed by the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<i64>,
    /// What happened, in words (errors say what to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// A step of work in one system.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Step {
    Export,
    Rectify,
    Restrict,
    SoftDelete,
    Restore,
    Purge,
    VerifyPurge,
}

/// State of a step in one system.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SystemPhase {
    Pending,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Skipped,
    Unsupported,
}

/// The export bundle of an Access or Portability request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportStatus {
    /// Object-storage URL of the bundle manifest (e.g. s3://bucket/exports/ns/name/manifest.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// SHA-256 of the manifest, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Total size of the bundle in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Records exported across all systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<i64>,
    /// File format of the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ExportFormat>,
    /// True when the bundle is encrypted to spec.export.recipient.
    #[serde(default)]
    pub encrypted: bool,
    /// When the bundle is deleted from object storage (policy exportExpiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the bundle was deleted, once it has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Time>,
    /// A short-lived presigned download link. Anyone holding it can download the bundle until
    /// downloadURLExpiresAt.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "downloadURL"
    )]
    pub download_url: Option<String>,
    /// When the download link stops working.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "downloadURLExpiresAt"
    )]
    pub download_url_expires_at: Option<Time>,
}

/// The receipt: a signed record of every step, for auditors.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// Object-storage URL of the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// SHA-256 of the receipt, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl DataSubjectRequest {
    /// The status, created empty if absent.
    pub fn status_mut(&mut self) -> &mut DataSubjectRequestStatus {
        self.status.get_or_insert_with(Default::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_request_never_shows_personal_data() {
        let dsr: DataSubjectRequest = serde_json::from_value(json!({
            "apiVersion": "privacy-operator.dev/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {"name": "r"},
            "spec": {
                "type": "Rectification",
                "regulation": "GDPR",
                "subject": {"identifiers": {
                    "email": "jane@example.com",
                    "externalIds": [{"name": "stripe", "value": "cus_secret"}]
                }},
                "rectification": {"changes": [{"field": "last_name", "value": "Doe-Smith"}]}
            }
        }))
        .unwrap();
        let out = format!("{dsr:?} {dsr:#?}");
        for secret in ["jane@example.com", "cus_secret", "Doe-Smith"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains("last_name") && out.contains("stripe"));
    }

    #[test]
    fn every_spec_field_is_covered_by_the_immutability_rules() {
        let crd = <DataSubjectRequest as kube::CustomResourceExt>::crd();
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap(),
        )
        .unwrap();
        let spec = &schema["properties"]["spec"];
        let rules: Vec<&str> = spec["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["rule"].as_str())
            .filter(|r| r.contains("oldSelf"))
            .collect();
        for field in spec["properties"].as_object().unwrap().keys() {
            let covered = rules
                .iter()
                .any(|r| r.contains(&format!("oldSelf.{field}")));
            assert_eq!(
                covered,
                !MUTABLE_FIELDS.contains(&field.as_str()),
                "spec.{field}"
            );
        }
    }
}
