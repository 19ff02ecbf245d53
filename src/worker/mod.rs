//! Worker mode: `privacy-operator worker --task PATH` runs one step of one request on one
//! system, started by the operator's Jobs.
//!
//! # The contract (also for custom connector images)
//!
//! **In:** a JSON task file ([`task::Task`]), mounted from the per-Job Secret. The path comes
//! from `--task` (custom images: the `PRIVACY_OPERATOR_TASK` environment variable). It is the
//! only place the subject's identifiers appear:
//!
//! ```json
//! {
//!   "version": "privacy-operator.dev/worker/v1",
//!   "request": {"namespace": "shop", "name": "erase-42", "digest": "sha256:…"},
//!   "step": "Purge",
//!   "system": {"name": "crm", "spec": { …the DataSystem spec… }},
//!   "connection": "postgres://privacy:…@crm-db:5432/crm",
//!   "identifiers": {"email": "jane@example.com", "userId": "u-42"},
//!   "changes": [{"field": "phone", "value": "+4915112345678"}],
//!   "purposes": ["marketing-email"],
//!   "hashSalt": "…",
//!   "output": "/var/run/privacy-operator/out/erase-42/crm"
//! }
//! ```
//!
//! `step` is one of Export, SoftDelete, Restore, Purge, ThirdPartyPurge, Rectify, Restrict.
//! `changes` is for Rectify, `purposes` for Restrict (`all` matches every restrict action).
//!
//! **Out:** files under `output`, then `manifest.json` ([`task::Manifest`]) written last (to
//! a temporary name, then renamed), so a manifest always describes complete files:
//!
//! ```json
//! {
//!   "version": "privacy-operator.dev/worker/v1",
//!   "system": "crm", "step": "Purge", "outcome": "Succeeded",
//!   "tables": {"contacts": {"rows": 1}, "deals": {"rows": 0, "detached": 2}},
//!   "files": [],
//!   "verification": {"scannedAt": "…", "remaining": {"contacts": 0}, "passed": true},
//!   "message": "purged 21 rows; verification found no rows left"
//! }
//! ```
//!
//! An Export writes one NDJSON file per table (`<table>.ndjson`, one `row_to_json` object per
//! line, in primary-key order) and lists each with its record count, size and SHA-256.
//! On failure the outcome is Failed with a CamelCase `reason` (DatabaseUnreachable, TlsFailed,
//! AuthenticationFailed, DatabaseNotFound, MissingTable, MissingColumn, CyclicDataMap,
//! InvalidTask, Unsupported, PermissionDenied, Conflict, VerificationFailed, Aborted,
//! DatabaseError, OutputError) and nothing in the system was changed: all work for one
//! subject in one system is one transaction. The process exits non-zero on failure.
//!
//! Neither the manifest nor the logs ever hold identifiers or row values; a subject appears
//! only as the request's salted digest.
//!
//! # Semantics of the SQL connector
//!
//! A row belongs to the subject when an identity column equals one of its identifiers
//! (e-mail compared lower-cased, phone compared by digits), or when it hangs off such a row
//! through relations. Export follows every relation; erasure, restriction and rectification
//! follow Cascade relations only (Detach children are kept and, on purge, unlinked).
//! SoftDelete/Restore set/clear the table's DeletedAt column (Quarantine is not supported by
//! the PostgreSQL connector yet). A soft delete leaves rows that were already deleted alone
//! (their timestamp is kept, so reruns are idempotent); a restore clears the column on every
//! row of the subject, including rows the application had deleted before the request.
//!
//! Export streams each table with `COPY (SELECT row_to_json(t) …) TO STDOUT` in one
//! read-only repeatable-read transaction (one snapshot across tables); the identifiers reach
//! the query as bound parameters stored in transaction-local settings, never as SQL text.
//! Changing steps run one statement per table in one transaction with a 30s lock timeout
//! (a blocked run fails as Conflict and is retried). The connection URL may set `sslmode`
//! (`prefer` by default; certificates are always verified, against the system roots plus
//! libpq's `sslrootcert=<path>` when given). Purge deletes, or anonymises the declared fields (and
//! NULLs identity columns not declared as fields), then re-scans.

pub mod output;
pub mod postgres;
pub mod sql;
pub mod task;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::api::datasystem::{ConnectorType, SqlDriver};
use crate::plan::jobs::JobStep;
use sql::FinderError;
use task::{Manifest, Outcome, Task};

/// Environment variable naming the task file, for custom images.
pub const TASK_ENV: &str = "PRIVACY_OPERATOR_TASK";
/// Name of the result manifest in the output location.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Why a task failed: a CamelCase reason for status and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerError {
    pub reason: &'static str,
    pub message: String,
}

impl WorkerError {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        WorkerError {
            reason,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidTask", message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new("Unsupported", message)
    }

    pub fn output(path: &Path, e: std::io::Error) -> Self {
        Self::new("OutputError", format!("{}: {e}", path.display()))
    }

    pub fn finder(e: FinderError) -> Self {
        match e {
            FinderError::Cycle(_) => Self::new("CyclicDataMap", e.to_string()),
            _ => Self::invalid(e.to_string()),
        }
    }
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for WorkerError {}

/// Runs a task and returns its manifest; failures are a Failed manifest, never a panic.
pub async fn run_task(task: &Task, options: &postgres::Options) -> Manifest {
    let mut manifest = Manifest::new(&task.system.name, task.step);
    let result = dispatch(task, options, &mut manifest).await;
    if let Err(e) = result {
        manifest.outcome = Outcome::Failed;
        manifest.reason = Some(e.reason.to_string());
        manifest.message = e.message;
        // Counts of a rolled-back transaction would mislead; files are not published.
        manifest.tables.clear();
        manifest.files.clear();
    }
    tracing::info!(
        request = %task.request.name,
        subject = %task.request.digest.short(),
        system = %task.system.name,
        step = task.step.as_str(),
        outcome = ?manifest.outcome,
        rows = manifest.total_rows(),
        "worker task finished"
    );
    manifest
}

async fn dispatch(
    task: &Task,
    options: &postgres::Options,
    manifest: &mut Manifest,
) -> Result<(), WorkerError> {
    task.validate().map_err(WorkerError::invalid)?;
    let output = task.output_dir().map_err(WorkerError::unsupported)?;
    let spec = &task.system.spec;
    if task.step == JobStep::Export && !spec.exportable {
        // The controller lists such systems and their vendor instead of exporting them.
        return Err(WorkerError::invalid(format!(
            "system {} is marked exportable: false; its data is held by {} and cannot be exported by the operator",
            task.system.name,
            spec.vendor
                .as_ref()
                .map_or("its vendor", |v| v.name.as_str())
        )));
    }
    match spec.connector.type_ {
        ConnectorType::Sql => {}
        other => {
            return Err(WorkerError::unsupported(format!(
                "connector {other:?} is not implemented by this worker yet"
            )));
        }
    }
    let sql = spec
        .connector
        .sql
        .as_ref()
        .ok_or_else(|| WorkerError::invalid("connector type SQL without connector.sql"))?;
    if sql.driver != SqlDriver::Postgres {
        return Err(WorkerError::unsupported(
            "only the postgres SQL driver is implemented so far",
        ));
    }
    let map = spec
        .data_map
        .as_ref()
        .ok_or_else(|| WorkerError::invalid("an SQL system needs a dataMap"))?;
    postgres::run(task, map, &output, options, manifest).await
}

/// Writes the manifest atomically (temporary file, then rename) into `dir`.
pub async fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<PathBuf, WorkerError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| WorkerError::output(dir, e))?;
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!("{MANIFEST_FILE}.partial"));
    let bytes = serde_json::to_vec_pretty(manifest)
        .map_err(|e| WorkerError::new("OutputError", e.to_string()))?;
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| WorkerError::output(&tmp, e))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| WorkerError::output(&path, e))?;
    Ok(path)
}

/// The `worker` subcommand: read the task file, run it, write the manifest. Fails (non-zero
/// exit) when the task failed, with the manifest still written when the output is known.
pub async fn run_file(path: &Path) -> Result<Manifest, WorkerError> {
    let bytes = tokio::fs::read(path).await.map_err(|e| {
        WorkerError::invalid(format!("cannot read the task file {}: {e}", path.display()))
    })?;
    let task = Task::from_json(&bytes).map_err(WorkerError::invalid)?;
    let manifest = run_task(&task, &postgres::Options::default()).await;
    if let Ok(dir) = task.output_dir() {
        write_manifest(&dir, &manifest).await?;
    }
    match manifest.outcome {
        Outcome::Succeeded => Ok(manifest),
        Outcome::Failed => Err(WorkerError::new(
            "Failed",
            format!(
                "{}: {}",
                manifest.reason.as_deref().unwrap_or("Failed"),
                manifest.message
            ),
        )),
    }
}
