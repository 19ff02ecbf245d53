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
//!   "storage": {"url": "s3://privacy/root", "options": {"aws_region": "eu-west-1", …}},
//!   "output": "results/shop/erase-42/crm/purge",
//!   "recipient": "age1…"
//! }
//! ```
//!
//! `step` is one of Export, SoftDelete, Restore, Purge, ThirdPartyPurge, Rectify, Restrict.
//! `changes` is for Rectify, `purposes` for Restrict (`all` matches every restrict action).
//! `storage` is the operator's object storage ([`crate::storage::StorageTarget`]: URL and
//! object_store options, credentials included) and `output` the key prefix below it where
//! this task writes (`exports/<ns>/<request>/<system>` for an export); without `storage`,
//! `output` is a local directory. `recipient` (Export only) is the age X25519 key every
//! export file is encrypted to (stored as `<file>.age`). See docs/storage.md.
//!
//! **Out:** files under `output`, then `manifest.json` ([`task::Manifest`]) written last (one
//! PUT: whole or absent), so a manifest always describes complete files. Files are uploaded
//! as they stream and appear under their key only once complete:
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
//! DatabaseError, OutputError, QuarantineUnreadable, and the storage reasons) and nothing in the system was changed: all work for one
//! subject in one system is one transaction. The process exits non-zero on failure.
//!
//! An HTTP processor's run may end `Pending`: the processor accepted the work and has not
//! confirmed it within the short wait a run allows. The manifest then carries `retryAfter`
//! and the evidence so far (`confirmation`), and the controller runs the step again at that
//! time with the same idempotency key, spending no retry budget. The process exits 0 for
//! Succeeded and Pending (once the manifest is written), non-zero otherwise. The HTTP and the
//! custom-image contracts are in `docs/connectors/`.
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
//! SoftDelete/Restore set/clear the table's DeletedAt column, or, for Quarantine tables (the
//! default), move the rows into an encrypted restore archive and back ([`quarantine`]). A
//! soft delete leaves rows that were already deleted alone (their timestamp is kept, so
//! reruns are idempotent); a restore clears the column on every row of the subject,
//! including rows the application had deleted before the request.
//!
//! Quarantine needs two task fields: `quarantine`, the archive location (a key prefix below
//! `storage`, `quarantine/<ns>/<request>/<system>`, set by the operator for SoftDelete,
//! Restore and Purge), and the operator's age X25519 identity that archives are encrypted to
//! and read with: `quarantineKey` (`AGE-SECRET-KEY-1…`) when set, otherwise derived from
//! `hashSalt`, the operator's subject salt ([`quarantine::identity_from_salt`]). SoftDelete stores the archive before it deletes, in the same transaction;
//! Restore re-inserts parents first, skipping rows whose primary key is present, relinks
//! Detach children, commits, then deletes the archives; Purge deletes them and reports
//! what is left as `remaining.quarantine`. Reasons: QuarantineUnreadable (an archive the
//! key cannot decrypt or parse), plus the storage reasons (StorageUnreachable, AccessDenied,
//! NoSuchBucket, InvalidStorageTarget).
//!
//! The SQL connector has two drivers with the same semantics and statements
//! ([`sql::Finder`], one dialect seam): PostgreSQL ([`postgres`]) and SQLite ([`sqlite`],
//! connection `sqlite:///abs/path.db`, for single-machine use).
//!
//! Export streams each table with `COPY (SELECT row_to_json(t) …) TO STDOUT` in one
//! read-only repeatable-read transaction (one snapshot across tables); the identifiers reach
//! the query as bound parameters stored in transaction-local settings, never as SQL text.
//! Changing steps run one statement per table in one transaction with a 30s lock timeout
//! (a blocked run fails as Conflict and is retried). The connection URL may set `sslmode`
//! (`prefer` by default; certificates are always verified, against the system roots plus
//! libpq's `sslrootcert=<path>` when given). Purge deletes, or anonymises the declared fields (and
//! NULLs identity columns not declared as fields), then re-scans.
//!
//! # Semantics of the object-storage connector
//!
//! A subject's objects are those below `objectStorage.prefix` rendered with its identifiers
//! (`users/{userId}/`; a missing identifier or a value with `/`, `\`, `..` is InvalidTask).
//! The store is `objectStorage.url` with the task's `credentials` (the credentials Secret's
//! keys, named as environment variables: `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, …). Export
//! copies them to `objects/<key>` in the output; SoftDelete moves them, encrypted, into the
//! quarantine; Restore moves them back; Purge deletes both and verifies (`remaining` has
//! `objects` and `quarantine`). See [`objects`].

pub mod consent;
pub mod http;
pub mod objects;
pub mod output;
pub mod postgres;
pub mod quarantine;
pub mod retention;
pub mod sql;
pub mod sqlite;
pub mod task;

use std::fmt;
use std::path::Path;

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
        discard_files(task, std::mem::take(&mut manifest.files)).await;
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
    let output = output(task)?;
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
        ConnectorType::Http => {
            let connector = spec.connector.http.as_ref().ok_or_else(|| {
                WorkerError::invalid("connector type HTTP without connector.http")
            })?;
            return http::run(
                task,
                connector,
                &output,
                &http::Options::default(),
                manifest,
            )
            .await;
        }
        ConnectorType::ObjectStorage => {
            let connector = spec.connector.object_storage.as_ref().ok_or_else(|| {
                WorkerError::invalid("type ObjectStorage without connector.objectStorage")
            })?;
            return objects::run(task, connector, &output, manifest).await;
        }
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
    let map = spec
        .data_map
        .as_ref()
        .ok_or_else(|| WorkerError::invalid("an SQL system needs a dataMap"))?;
    match sql.driver {
        SqlDriver::Postgres => postgres::run(task, map, &output, options, manifest).await,
        SqlDriver::Sqlite => sqlite::run(task, map, &output, options, manifest).await,
    }
}

/// Records a purge's re-scan (`remaining` per table, archive or prefix) as the manifest's
/// verification; anything left fails the task as VerificationFailed with `found_again`.
pub(crate) fn record_verification(
    manifest: &mut Manifest,
    remaining: std::collections::BTreeMap<String, u64>,
    found_again: &str,
) -> Result<(), WorkerError> {
    let passed = remaining.values().all(|n| *n == 0);
    manifest.verification = Some(task::Verification {
        scanned_at: jiff::Timestamp::now().to_string(),
        remaining,
        passed,
    });
    if passed {
        Ok(())
    } else {
        Err(WorkerError::new(
            "VerificationFailed",
            format!("{found_again}; run the purge again"),
        ))
    }
}

/// The output location of `task`: `task.output` below `task.storage`, encrypting export
/// files to `task.recipient` when set.
pub fn output(task: &Task) -> Result<output::Output, WorkerError> {
    let store = task.output_store().map_err(output::storage_error)?;
    let recipient = match task.step {
        JobStep::Export => task.recipient.clone(),
        _ => None,
    };
    Ok(output::Output::new(store, recipient))
}

/// Export files of a failed run are removed (best effort): only a manifest that says
/// Succeeded vouches for files, and a rerun writes them again.
async fn discard_files(task: &Task, files: Vec<task::FileEntry>) {
    if files.is_empty() {
        return;
    }
    let Ok(out) = output(task) else { return };
    for f in files {
        if let Err(e) = out.store().delete(&f.path).await {
            tracing::debug!(file = %f.path, error = %e, "could not remove a file of a failed export");
        }
    }
}

/// Writes `manifest.json` into the task's output location (one PUT: whole or absent) and
/// returns its URL. Call it after the task ran: the manifest is the last thing written.
pub async fn write_manifest(task: &Task, manifest: &Manifest) -> Result<String, WorkerError> {
    output(task)?.write_manifest(manifest).await
}

/// Runs `task` and writes its manifest: what a worker Job does, for in-process runners.
/// The error is only about writing the manifest; the task's own failure is in the manifest.
pub async fn run_and_write(
    task: &Task,
    options: &postgres::Options,
) -> Result<Manifest, WorkerError> {
    let manifest = run_task(task, options).await;
    write_manifest(task, &manifest).await?;
    Ok(manifest)
}

/// The `worker` subcommand: read the task file, run it, write the manifest. Fails (non-zero
/// exit) when the task failed, with the manifest still written when the output is known;
/// succeeds when the task succeeded or is awaiting confirmation (Pending), and only once its
/// manifest is written, so a Job that completed always has one.
pub async fn run_file(path: &Path) -> Result<Manifest, WorkerError> {
    let bytes = tokio::fs::read(path).await.map_err(|e| {
        WorkerError::invalid(format!("cannot read the task file {}: {e}", path.display()))
    })?;
    // Scheduled work (not of a request) comes in its own task format.
    match consent::task_version(&bytes).as_deref() {
        Some(consent::SWEEP_VERSION) => return consent::run_bytes(&bytes).await,
        Some(crate::ledger::replay::REPLAY_VERSION) => {
            return crate::ledger::replay::run_bytes(&bytes).await;
        }
        _ => {}
    }
    if retention::is_retention_task(&bytes) {
        return run_retention(&bytes).await;
    }
    let task = Task::from_json(&bytes).map_err(WorkerError::invalid)?;
    let manifest = run_task(&task, &postgres::Options::default()).await;
    // Without a usable output location there is nowhere to report to: the Job fails and
    // its Pod's log says why.
    write_manifest(&task, &manifest).await?;
    match manifest.outcome {
        // Pending is not a failure: the Job completes (no failed-Job alerts while a processor
        // takes days), and the manifest, written above, tells the controller to check again.
        Outcome::Succeeded | Outcome::Pending => Ok(manifest),
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

/// A retention task (no subject; see [`retention`]): runs it, writes its report, and
/// summarises the report as a manifest for the caller.
async fn run_retention(bytes: &[u8]) -> Result<Manifest, WorkerError> {
    let task = retention::RetentionTask::from_json(bytes).map_err(WorkerError::invalid)?;
    let report = retention::run_and_write(&task).await?;
    let mut manifest = Manifest::new(&report.system, JobStep::RetentionRun);
    manifest.message = report.message.clone();
    for (table, c) in &report.tables {
        manifest.tables.insert(
            table.clone(),
            task::TableCount {
                rows: c.affected,
                detached: c.detached,
            },
        );
    }
    match report.outcome {
        Outcome::Failed => Err(WorkerError::new(
            "Failed",
            format!(
                "{}: {}",
                report.reason.as_deref().unwrap_or("Failed"),
                report.message
            ),
        )),
        _ => Ok(manifest),
    }
}
