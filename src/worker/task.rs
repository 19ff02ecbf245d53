//! The worker contract: the task a Job's worker reads and the result manifest it writes.
//!
//! Both are JSON. The task holds personal data (the identifiers, rectified values), so it only
//! ever travels in the per-Job Secret and is never logged; its `Debug` output redacts values.
//! The manifest holds no personal data: counts, file names, checksums and a message.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::DataSystemSpec;
use crate::api::subject::{IdentifierSet, SubjectDigest};
use crate::plan::jobs::JobStep;

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
    /// Where to write export files and the manifest. A local directory path for now; object
    /// storage URLs (`s3://…`) come with the object-store abstraction.
    pub output: String,
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
            .field("output", &self.output)
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
        if self.output.is_empty() {
            return Err("task output location is empty".into());
        }
        Ok(())
    }

    /// The output directory (local filesystem output only, for now).
    pub fn output_dir(&self) -> Result<PathBuf, String> {
        let path = self.output.strip_prefix("file://").unwrap_or(&self.output);
        if path.contains("://") {
            return Err(format!(
                "output {:?} is not supported yet: only local directories (path or file://) are",
                self.output
            ));
        }
        Ok(PathBuf::from(path))
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
        assert_eq!(task.output_dir().unwrap(), PathBuf::from("/tmp/out"));
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
    fn object_store_output_is_refused_clearly() {
        let mut task = Task::from_json(task_json("Export", "").as_bytes()).unwrap();
        task.output = "s3://bucket/x".into();
        assert!(task.output_dir().unwrap_err().contains("not supported"));
    }
}
