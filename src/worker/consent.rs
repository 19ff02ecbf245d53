//! The stale-consent sweep worker (PostgreSQL): marks consent records older than their
//! purpose's re-consent interval as expired, and counts the consent still in force.
//!
//! The task ([`SweepTask`]) comes from a ConsentPolicy's sweep Job, in its task Secret (it
//! holds connection URLs). For every consent-record table and every purpose with a cut-off,
//! rows whose purpose column names the purpose, given before the cut-off and neither withdrawn
//! nor expired, get `expiredAt = now()`, in batches of `batchSize` rows, each batch its own
//! short transaction that skips rows locked by the application (they are picked up by the
//! next sweep), so no lock is held long. A dry run only counts. The report
//! ([`SweepReport`], counts only) goes to object storage for the controller.
//!
//! Batches already committed stay committed when a later one fails: expiring consent again is
//! harmless, and the next sweep finishes the work.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, types::Type};

use super::WorkerError;
use super::postgres::{connect, db_error};
use super::sql::{quote_ident, quote_table};
use super::task::{Manifest, Outcome, TableCount};
use crate::plan::consent::policy::{SweepLocation, SweepPurpose, SweepReport};
use crate::plan::jobs::JobStep;
use crate::storage::{StorageTarget, Store};

/// Version of the sweep task format.
pub const SWEEP_VERSION: &str = "privacy-operator.dev/consent-sweep/v1";

/// One sweep run.
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SweepTask {
    /// [`SWEEP_VERSION`].
    pub version: String,
    pub namespace: String,
    pub policy: String,
    /// The Job's name (the report is keyed by it).
    pub job: String,
    pub scheduled_at: Timestamp,
    pub dry_run: bool,
    pub purposes: Vec<SweepPurpose>,
    pub targets: Vec<SweepTarget>,
    /// Rows per batch, unless a target says otherwise.
    pub batch_size: i64,
    /// The operator's object storage.
    pub storage: StorageTarget,
    /// Key of the report below `storage`.
    pub report: String,
}

/// A consent-record table and how to reach its database.
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SweepTarget {
    #[serde(flatten)]
    pub location: SweepLocation,
    /// Connection URL (a credential: never logged).
    pub connection: String,
    /// Rows per batch (the system's `sql.batchSize`); the task's `batchSize` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
}

impl fmt::Debug for SweepTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SweepTask")
            .field("namespace", &self.namespace)
            .field("policy", &self.policy)
            .field("job", &self.job)
            .field("scheduled_at", &self.scheduled_at)
            .field("dry_run", &self.dry_run)
            .field("purposes", &self.purposes)
            .field(
                "targets",
                &self
                    .targets
                    .iter()
                    .map(|t| format!("{}/{}", t.location.system, t.location.table))
                    .collect::<Vec<_>>(),
            )
            .field("storage", &self.storage)
            .field("report", &self.report)
            .finish()
    }
}

/// The `version` of a task file, to tell scheduled work's task formats from request tasks.
pub fn task_version(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Versioned {
        version: String,
    }
    serde_json::from_slice::<Versioned>(bytes)
        .ok()
        .map(|v| v.version)
}

/// The key of a sweep's report: `consent/<ns>/<policy>/<job>/report.json`.
pub fn report_key(namespace: &str, policy: &str, job: &str) -> String {
    format!("consent/{namespace}/{policy}/{job}/report.json")
}

/// The predicate of stale consent for one purpose: `$1` the purpose, `$2` the cut-off.
fn stale_predicate(loc: &SweepLocation) -> Result<String, WorkerError> {
    let c = &loc.columns;
    let q = |name: &str| {
        quote_ident(name).map_err(|e| WorkerError::invalid(format!("table {}: {e}", loc.table)))
    };
    let mut pred = format!(
        "t.{}::text = $1 AND t.{} < $2::text::timestamptz",
        q(&c.purpose_column)?,
        q(&c.given_at_column)?
    );
    if let Some(w) = &c.withdrawn_at_column {
        pred.push_str(&format!(" AND t.{} IS NULL", q(w)?));
    }
    if let Some(x) = &c.expired_at_column {
        pred.push_str(&format!(" AND t.{} IS NULL", q(x)?));
    }
    Ok(pred)
}

/// Consent still in force (not withdrawn, not expired), per purpose.
async fn active(
    client: &Client,
    loc: &SweepLocation,
) -> Result<BTreeMap<String, i64>, WorkerError> {
    let c = &loc.columns;
    let table = quote_table(&loc.table).map_err(|e| WorkerError::invalid(e.to_string()))?;
    let purpose =
        quote_ident(&c.purpose_column).map_err(|e| WorkerError::invalid(e.to_string()))?;
    let mut filters = Vec::new();
    for col in [&c.withdrawn_at_column, &c.expired_at_column]
        .into_iter()
        .flatten()
    {
        let col = quote_ident(col).map_err(|e| WorkerError::invalid(e.to_string()))?;
        filters.push(format!("t.{col} IS NULL"));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let sql = format!("SELECT t.{purpose}::text, count(*) FROM {table} AS t{filter} GROUP BY 1");
    let what = format!("counting consent in force in {}", loc.table);
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| db_error(&what, e))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1))))
        .collect())
}

/// Expires (or, dry, counts) the stale consent of one purpose in one table.
async fn sweep_purpose(
    client: &Client,
    loc: &SweepLocation,
    purpose: &str,
    cutoff: Timestamp,
    dry_run: bool,
    batch: i64,
) -> Result<i64, WorkerError> {
    let table = quote_table(&loc.table).map_err(|e| WorkerError::invalid(e.to_string()))?;
    let pred = stale_predicate(loc)?;
    let cutoff = cutoff.to_string();
    let what = format!("sweeping {} for {purpose}", loc.table);
    if dry_run {
        let sql = format!("SELECT count(*) FROM {table} AS t WHERE {pred}");
        let stmt = client
            .prepare_typed(&sql, &[Type::TEXT, Type::TEXT])
            .await
            .map_err(|e| db_error(&what, e))?;
        let row = client
            .query_one(&stmt, &[&purpose, &cutoff])
            .await
            .map_err(|e| db_error(&what, e))?;
        return Ok(row.get(0));
    }
    let expired = loc.columns.expired_at_column.as_deref().ok_or_else(|| {
        WorkerError::invalid(format!(
            "table {} has no consent.expiredAtColumn to mark expiry in",
            loc.table
        ))
    })?;
    let expired = quote_ident(expired).map_err(|e| WorkerError::invalid(e.to_string()))?;
    let pk = quote_ident(&loc.primary_key).map_err(|e| WorkerError::invalid(e.to_string()))?;
    // SKIP LOCKED: a row the application holds is left for the next sweep rather than waited
    // for; each batch commits on its own, so locks last one batch.
    let sql = format!(
        "UPDATE {table} AS u SET {expired} = now() WHERE u.{pk} IN \
         (SELECT t.{pk} FROM {table} AS t WHERE {pred} LIMIT {batch} FOR UPDATE SKIP LOCKED)"
    );
    let stmt = client
        .prepare_typed(&sql, &[Type::TEXT, Type::TEXT])
        .await
        .map_err(|e| db_error(&what, e))?;
    let mut total = 0i64;
    loop {
        let n = client
            .execute(&stmt, &[&purpose, &cutoff])
            .await
            .map_err(|e| db_error(&what, e))?;
        total += n as i64;
        if (n as i64) < batch {
            return Ok(total);
        }
    }
}

/// Runs the sweep and returns its report; failures are a report with `succeeded: false`.
pub async fn run(task: &SweepTask) -> SweepReport {
    let mut report = SweepReport {
        succeeded: true,
        dry_run: task.dry_run,
        ..Default::default()
    };
    if let Err(e) = sweep(task, &mut report).await {
        report.succeeded = false;
        report.reason = Some(e.reason.to_string());
        report.message = e.message;
    }
    tracing::info!(
        policy = %format!("{}/{}", task.namespace, task.policy),
        job = %task.job,
        succeeded = report.succeeded,
        expired = report.expired.values().sum::<i64>(),
        "consent sweep finished"
    );
    report
}

async fn sweep(task: &SweepTask, report: &mut SweepReport) -> Result<(), WorkerError> {
    if task.version != SWEEP_VERSION {
        return Err(WorkerError::invalid(format!(
            "sweep task version {:?} is not supported: this worker speaks {SWEEP_VERSION}",
            task.version
        )));
    }
    let mut clients: BTreeMap<&str, Client> = BTreeMap::new();
    for target in &task.targets {
        if !clients.contains_key(target.connection.as_str()) {
            clients.insert(&target.connection, connect(&target.connection).await?);
        }
        let client = &clients[target.connection.as_str()];
        let loc = &target.location;
        let batch = target
            .batch_size
            .unwrap_or(task.batch_size)
            .clamp(1, 100_000);
        for purpose in &task.purposes {
            let Some(cutoff) = purpose.cutoff else {
                continue;
            };
            let n = sweep_purpose(client, loc, &purpose.name, cutoff, task.dry_run, batch).await?;
            *report.expired.entry(purpose.name.clone()).or_default() += n;
        }
        for (purpose, n) in active(client, loc).await? {
            if task.purposes.iter().any(|p| p.name == purpose) {
                *report.active.entry(purpose).or_default() += n;
            }
        }
    }
    let total: i64 = report.expired.values().sum();
    report.message = format!(
        "{} {total} stale consent record(s) in {} table(s)",
        if task.dry_run { "found" } else { "expired" },
        task.targets.len()
    );
    Ok(())
}

/// Runs the sweep and writes its report to object storage (the report is what the
/// controller reads; without it the run counts as failed).
pub async fn run_and_report(task: &SweepTask) -> Result<SweepReport, WorkerError> {
    let report = run(task).await;
    let store = Store::open(&task.storage)
        .map_err(|e| WorkerError::new("OutputError", format!("object storage: {e}")))?;
    let bytes = serde_json::to_vec_pretty(&report)
        .map_err(|e| WorkerError::new("OutputError", e.to_string()))?;
    store
        .put(&task.report, Bytes::from(bytes))
        .await
        .map_err(|e| WorkerError::new("OutputError", format!("writing the sweep report: {e}")))?;
    Ok(report)
}

/// The `worker` subcommand for a sweep task file.
pub async fn run_bytes(bytes: &[u8]) -> Result<Manifest, WorkerError> {
    let task: SweepTask = serde_json::from_slice(bytes)
        .map_err(|e| WorkerError::invalid(format!("task file is not a valid sweep task: {e}")))?;
    let report = run_and_report(&task).await?;
    let mut manifest = Manifest::new(&task.policy, JobStep::ConsentSweep);
    for (purpose, n) in &report.expired {
        manifest.tables.insert(
            purpose.clone(),
            TableCount {
                rows: (*n).max(0) as u64,
                ..Default::default()
            },
        );
    }
    manifest.message = report.message.clone();
    if report.succeeded {
        Ok(manifest)
    } else {
        manifest.outcome = Outcome::Failed;
        Err(WorkerError::new(
            "Failed",
            format!(
                "{}: {}",
                report.reason.as_deref().unwrap_or("Failed"),
                report.message
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::datamap::ConsentColumns;

    fn loc(expired: Option<&str>) -> SweepLocation {
        SweepLocation {
            system: "crm".into(),
            table: "crm.consents".into(),
            primary_key: "id".into(),
            columns: ConsentColumns {
                purpose_column: "purpose".into(),
                given_at_column: "given_at".into(),
                withdrawn_at_column: Some("withdrawn_at".into()),
                method_column: None,
                source_column: None,
                expired_at_column: expired.map(String::from),
            },
        }
    }

    #[test]
    fn stale_means_older_and_still_in_force() {
        assert_eq!(
            stale_predicate(&loc(Some("expired_at"))).unwrap(),
            "t.\"purpose\"::text = $1 AND t.\"given_at\" < $2::text::timestamptz AND t.\"withdrawn_at\" IS NULL AND t.\"expired_at\" IS NULL"
        );
        let mut bad = loc(None);
        bad.columns.purpose_column = "purpose; DROP TABLE x".into();
        assert!(stale_predicate(&bad).is_err());
    }

    #[test]
    fn debug_hides_connections() {
        let task = SweepTask {
            version: SWEEP_VERSION.into(),
            namespace: "ns".into(),
            policy: "consent".into(),
            job: "consent-sweep-1".into(),
            scheduled_at: Timestamp::UNIX_EPOCH,
            dry_run: false,
            purposes: vec![],
            targets: vec![SweepTarget {
                location: loc(None),
                connection: "postgres://u:secretpw@h/db".into(),
                batch_size: None,
            }],
            batch_size: 100,
            storage: StorageTarget::new("file:///tmp/x"),
            report: report_key("ns", "consent", "consent-sweep-1"),
        };
        let out = format!("{task:?}");
        assert!(
            !out.contains("secretpw") && out.contains("crm/crm.consents"),
            "{out}"
        );
        assert_eq!(
            task.report,
            "consent/ns/consent/consent-sweep-1/report.json"
        );
    }
}
