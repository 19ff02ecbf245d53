//! The worker contract: the task a Job's worker reads and the result manifest it writes.
//!
//! Both are JSON. The task holds personal data (the identifiers, rectified values), so it only
//! ever travels in the per-Job Secret and is never logged; its `Debug` output redacts values.
//! The manifest holds no personal data: counts, file names, checksums and a message.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::api::DataSystemSpec;
use crate::api::subject::{IdentifierSet, SubjectDigest};
use crate::plan::jobs::JobStep;
use crate::storage::{StorageTarget, Store};

/// Version of the task and manifest format; bumped on incompatible changes.
pub const CONTRACT_VERSION: &str = "privacy-operator.dev/worker/v1";

/// One unit of work: one step of one request on one system.
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// [`CONTRACT_VERSION`]; a worker refuses a task of another version.
    pub version: String,
    /// The request this task belongs to.
    pub request: RequestRef,
    /// What to do.
    pub step: JobStep,
    /// The system to do it on, with a copy of its spec as the Job was planned.
    pub system: SystemRef,
    /// Connection URL of the system (from the DataSystem's connection Secret), e.g.
    /// `postgres://user:password@host:5432/crm`. Holds a credential: never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The subject's identifiers: the only place a worker learns them.
    pub identifiers: IdentifierSet,
    /// Rectify: the corrected values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Restrict: the purposes to stop processing for (`all` matches every restrict action).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    /// Salt for the Hash anonymisation strategy (the operator's salt, so hashes of the same
    /// value stay joinable across systems without being reversible by a dictionary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_salt: Option<String>,
    /// HTTP connector only: the shared secret that signs calls and the bearer token, read
    /// from the DataSystem's `hmacSecretRef` and `authSecretRef`. Credentials: never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSecrets>,
    /// The operator's object storage (URL and options, credentials included: never
    /// logged). Absent in tasks that name a local directory as `output` (single-machine use
    /// and tasks of older operators).
    #[serde(default, skip_serializing_if = "StorageTarget::is_unset")]
    pub storage: StorageTarget,
    /// Where to write export files and the manifest: a key prefix below `storage`, e.g.
    /// `exports/shop/erase-42/crm`. Without `storage`, a local directory (path or
    /// `file://` URL).
    pub output: String,
    /// Export only: the age X25519 recipient (`age1…`) every export file is encrypted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// SoftDelete, Restore, Purge: where the restore archives of Quarantine tables (and the
    /// quarantined objects of an object-storage system) live, a key prefix below `storage`
    /// (`quarantine/<ns>/<request>/<system>`); without `storage`, a local directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// SoftDelete, Restore: the operator's age X25519 identity (`AGE-SECRET-KEY-1…`) that
    /// restore archives are encrypted to and decrypted with. When absent, workers derive it
    /// from `hashSalt` (the operator's subject salt). A credential: never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_key: Option<String>,
    /// ObjectStorage connector: the data of the connector's `credentialsSecretRef` Secret,
    /// named as environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ENDPOINT`, `AWS_REGION`; `GOOGLE_*`, `AZURE_*`). Credentials: never logged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, String>,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("version", &self.version)
            .field("request", &self.request)
            .field("step", &self.step)
            .field("system", &self.system.name)
            .field(
                "connection",
                &self.connection.as_ref().map(|_| "<redacted>"),
            )
            .field("identifiers", &self.identifiers)
            .field("changes", &self.changes)
            .field("purposes", &self.purposes)
            .field("hash_salt", &self.hash_salt.as_ref().map(|_| "<redacted>"))
            .field("webhook", &self.webhook)
            .field("storage", &self.storage)
            .field("output", &self.output)
            .field("recipient", &self.recipient)
            .field("quarantine", &self.quarantine)
            .field(
                "quarantine_key",
                &self.quarantine_key.as_ref().map(|_| "<redacted>"),
            )
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The request a task belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRef {
    pub namespace: String,
    pub name: String,
    /// The subject's salted digest: how the subject appears in logs and the manifest.
    pub digest: SubjectDigest,
    /// metadata.uid of the request: tells apart two requests that reused a name (the HTTP
    /// connector derives its idempotency keys from it). Absent in tasks of older operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The secrets of an HTTP connector, resolved from their Secrets.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecrets {
    /// Key of the HMAC-SHA256 signature on every call.
    pub hmac_secret: String,
    /// Sent as `Authorization: Bearer …` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
}

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("hmac_secret", &"<redacted>")
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The system a task works on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SystemRef {
    pub name: String,
    pub spec: DataSystemSpec,
}

/// One corrected field, resolved to its value (Secret references already read).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub field: String,
    /// Only in this table; omit for every table that declares the field rectifiable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub value: String,
}

impl fmt::Debug for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldChange")
            .field("field", &self.field)
            .field("table", &self.table)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// How a task ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for a subject with no data this is still Succeeded, with zero counts.
    Succeeded,
    /// Nothing was changed (the transaction rolled back); `reason` and `message` say why.
    Failed,
    /// The system accepted the work but has not confirmed it yet (an HTTP processor that
    /// completes asynchronously and did not finish while the worker waited). `retryAfter`
    /// says when to run the same task again; the rerun carries the same idempotency key, so
    /// it asks for the status of the work already requested instead of repeating it. Not a
    /// failure: it spends no retry budget.
    Pending,
}

/// The result a worker writes as `manifest.json` in the output location, last, after every
/// data file is complete: its presence means the files it lists are whole.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: String,
    /// Name of the system.
    pub system: String,
    pub step: JobStep,
    pub outcome: Outcome,
    /// A CamelCase reason on failure (DatabaseUnreachable, AuthenticationFailed, MissingTable, TlsFailed,
    /// MissingColumn, CyclicDataMap, InvalidTask, Unsupported, DatabaseError, Aborted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rows exported or changed, per table.
    pub tables: BTreeMap<String, TableCount>,
    /// Export files, relative to the output location.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    /// Purge only: the re-scan after commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// What happened, in words; never contains identifiers or row values.
    pub message: String,
    /// Pending only: when to run the task again (RFC 3339), from the processor's Retry-After
    /// or the connector's pollInterval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// HTTP connector: what the processor answered, kept as evidence (its confirmation id and
    /// time for a deletion). Present for Pending too, with what is known so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<Confirmation>,
}

/// A processor's answer to a webhook call, as evidence. Holds no personal data: values that
/// contain one of the subject's identifiers are dropped before they get here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Confirmation {
    /// The `Idempotency-Key` the calls carried (the same for every rerun of the step).
    pub idempotency_key: String,
    /// `completed` or `pending`, as last answered.
    pub status: String,
    /// The processor's id of the request it is working on, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The processor's confirmation id (completed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_id: Option<String>,
    /// When the processor says it completed the work (RFC 3339, as it reported it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// When the worker received the answer (RFC 3339, the worker's clock).
    pub received_at: String,
    /// HTTP calls this run made (first call, retries and status polls).
    pub calls: u32,
    /// Further evidence fields the processor returned (e.g. systems purged, backup expiry).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, serde_json::Value>,
}

/// Rows touched in one table.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TableCount {
    /// Rows exported, soft-deleted, restored, deleted, anonymised, restricted or rectified.
    pub rows: u64,
    /// Purge only: rows whose foreign key was set to NULL by a Detach relation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub detached: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One written file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Path relative to the output location, e.g. `crm/contacts.ndjson`.
    pub path: String,
    pub table: String,
    pub format: String,
    pub records: u64,
    pub size: u64,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// The evidence that a purge left nothing behind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// RFC 3339 time of the re-scan.
    pub scanned_at: String,
    /// Rows still found per table (all zero when `passed`).
    pub remaining: BTreeMap<String, u64>,
    pub passed: bool,
}

impl Task {
    /// Reads and checks a task file.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let task: Task = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's messages name fields and positions, never values.
            format!("task file is not a valid task: {e}")
        })?;
        task.validate()?;
        Ok(task)
    }

    /// Checks what the type system cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != CONTRACT_VERSION {
            return Err(format!(
                "task version {:?} is not supported: this worker speaks {CONTRACT_VERSION}",
                self.version
            ));
        }
        if self.identifiers.is_empty() {
            return Err("task has no identifiers: nothing identifies the subject".into());
        }
        if self.step == JobStep::Rectify && self.changes.is_empty() {
            return Err("a rectify task needs at least one change".into());
        }
        if self.step == JobStep::Restrict && self.purposes.is_empty() {
            return Err("a restrict task needs at least one purpose".into());
        }
        // Empty is the storage root itself; without storage it names no directory.
        if self.output.is_empty() && self.storage.is_unset() {
            return Err("task output location is empty".into());
        }
        Ok(())
    }

    /// The store rooted at the output location: `output` below `storage`, or, without
    /// `storage`, the local directory `output` names.
    pub fn output_store(&self) -> Result<Store, crate::storage::StorageError> {
        if !self.storage.is_unset() {
            // The worker's own environment completes what the operator handed over (its
            // workload identity, when the operator's was not portable).
            let target = self.storage.with_env_defaults();
            return Ok(Store::open(&target)?.child(&self.output));
        }
        let url = if self.output.contains("://") {
            self.output.clone()
        } else {
            let path = std::path::Path::new(&self.output);
            if !path.is_absolute() {
                return Err(crate::storage::StorageError::invalid_target(format!(
                    "output {:?} must be an absolute directory when the task has no storage",
                    self.output
                )));
            }
            format!("file://{}", self.output)
        };
        Store::open(&crate::storage::StorageTarget::new(url))
    }
}

impl Manifest {
    /// An empty manifest for a task, to be filled in.
    pub fn new(system: &str, step: JobStep) -> Self {
        Manifest {
            version: CONTRACT_VERSION.to_string(),
            system: system.to_string(),
            step,
            outcome: Outcome::Succeeded,
            reason: None,
            tables: BTreeMap::new(),
            files: Vec::new(),
            verification: None,
            message: String::new(),
            retry_after: None,
            confirmation: None,
        }
    }

    /// Total rows over all tables.
    pub fn total_rows(&self) -> u64 {
        self.tables.values().map(|c| c.rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_json(step: &str, extra: &str) -> String {
        format!(
            r#"{{
              "version": "{CONTRACT_VERSION}",
              "request": {{"namespace": "ns", "name": "r1", "digest": "sha256:{}"}},
              "step": "{step}",
              "system": {{"name": "crm", "spec": {{
                 "connector": {{"type": "SQL", "sql": {{"driver": "postgres",
                   "connectionSecretRef": {{"name": "crm-db", "key": "url"}}}}}},
                 "dataMap": {{"tables": [{{"name": "contacts",
                   "identity": [{{"column": "email", "identifier": "email"}}]}}]}}
              }}}},
              "connection": "postgres://u:secretpw@h/db",
              "identifiers": {{"email": "jane@example.com"}},
              "output": "/tmp/out"
              {extra}
            }}"#,
            "0".repeat(64)
        )
    }

    #[test]
    fn parses_and_redacts() {
        let task = Task::from_json(task_json("Export", "").as_bytes()).unwrap();
        assert_eq!(task.step, JobStep::Export);
        let debug = format!("{task:?}");
        assert!(
            !debug.contains("jane") && !debug.contains("secretpw"),
            "{debug}"
        );
        assert_eq!(task.output_store().unwrap().url(""), "file:///tmp/out");
    }

    #[test]
    fn rejects_incomplete_tasks() {
        let err = Task::from_json(task_json("Restrict", "").as_bytes()).unwrap_err();
        assert!(err.contains("purpose"), "{err}");
        let err = Task::from_json(task_json("Rectify", "").as_bytes()).unwrap_err();
        assert!(err.contains("change"), "{err}");
        let ok = Task::from_json(task_json("Restrict", r#","purposes":["marketing"]"#).as_bytes());
        assert!(ok.is_ok());
        let bad = task_json("Export", "").replace(CONTRACT_VERSION, "v0");
        assert!(
            Task::from_json(bad.as_bytes())
                .unwrap_err()
                .contains("version")
        );
    }

    #[test]
    fn output_is_a_prefix_below_the_storage_and_credentials_are_redacted() {
        let extra = r#","storage": {"url": "s3://bucket/root", "options": {"aws_access_key_id": "AKIA", "aws_secret_access_key": "s3cr3t"}},
                       "recipient": "age1zz""#;
        let mut task = Task::from_json(task_json("Export", extra).as_bytes()).unwrap();
        task.output = "exports/ns/r1/crm".into();
        assert_eq!(
            task.output_store().unwrap().url("manifest.json"),
            "s3://bucket/root/exports/ns/r1/crm/manifest.json"
        );
        assert_eq!(task.recipient.as_deref(), Some("age1zz"));
        let debug = format!("{task:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        task.storage = StorageTarget::default();
        task.output = "relative/dir".into();
        assert!(task.output_store().is_err());
    }
}
