//! The replay worker: erases again, in a PostgreSQL system restored from a backup, every
//! subject the ledger says was purged from it after the backup was taken.
//!
//! 1. Read the entries recorded after `backupTakenAt` that name this system.
//! 2. Scan every identity column of the data map once, hashing each distinct value in its
//!    normal form (`lower()` for e-mail, digits and `+` for phone, as the connector matches):
//!    in SQL with pgcrypto's `hmac()` when the extension is installed (only matching hashes
//!    come back), otherwise streaming the values and hashing them here. The key then goes to
//!    the database as a bound parameter; a server that logs statement parameters would log
//!    it, so restrict parameter logging on such systems or do not install pgcrypto there.
//! 3. For each entry whose hashes matched, rebuild the matched identifiers (from the restored
//!    rows themselves) and run the connector's ordinary purge with them: same relations,
//!    same strategy (delete or anonymise), same verification, one transaction per subject.
//!
//! The report (counts only) goes to object storage for the controller.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use futures::{StreamExt, pin_mut};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::{Client, types::Type};

use super::{Ledger, LedgerEntry, LedgerKey};
use crate::api::{DataSystemSpec, IdentifierKind, IdentifierSet, datamap::DataMap};
use crate::plan::jobs::JobStep;
use crate::storage::{StorageTarget, Store};
use crate::worker::{
    WorkerError,
    postgres::{Options, connect, db_error},
    run_task,
    sql::{quote_ident, quote_table},
    task::{Manifest, Outcome, TableCount, Task},
};

/// Version of the replay task format.
pub const REPLAY_VERSION: &str = "privacy-operator.dev/ledger-replay/v1";

/// One replay run on one system.
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ReplayTask {
    /// [`REPLAY_VERSION`].
    pub version: String,
    pub namespace: String,
    pub system: String,
    pub job: String,
    pub spec: DataSystemSpec,
    /// Connection URL (a credential: never logged).
    pub connection: String,
    /// Entries recorded after this are replayed.
    pub backup_taken_at: Timestamp,
    /// The ledger key, hex (a credential: never logged).
    pub ledger_key: String,
    /// Salt of the Hash anonymisation strategy, as the original purge used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_salt: Option<String>,
    /// The operator's object storage (holds the ledger).
    pub storage: StorageTarget,
    /// Key of the report below `storage`.
    pub report: String,
}

impl fmt::Debug for ReplayTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayTask")
            .field("namespace", &self.namespace)
            .field("system", &self.system)
            .field("job", &self.job)
            .field("backup_taken_at", &self.backup_taken_at)
            .field("storage", &self.storage)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// What a replay reports. Counts only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    pub succeeded: bool,
    /// Ledger entries naming this system recorded after the backup.
    pub total: i64,
    /// Entries replayed (subjects looked for and, where found, erased).
    pub replayed: i64,
    /// Entries whose subject was found again in the restored data.
    pub found: i64,
    /// Rows erased (deleted or anonymised).
    pub rows_erased: i64,
    /// Where the identity values were hashed: `database` (pgcrypto) or `worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashed_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub message: String,
}

/// The key of a replay's report: `replays/<ns>/<system>/<job>/report.json`.
pub fn report_key(namespace: &str, system: &str, job: &str) -> String {
    format!("replays/{namespace}/{system}/{job}/report.json")
}

/// The SQL expression of a column's value in the normal form of `kind`, as the connector
/// matches identifiers (see `worker::sql`).
fn normal_form(kind: &IdentifierKind, column: &str) -> String {
    match kind {
        IdentifierKind::Email => format!("lower(t.{column}::text)"),
        IdentifierKind::Phone => format!("regexp_replace(t.{column}::text, '[^0-9+]', '', 'g')"),
        _ => format!("t.{column}::text"),
    }
}

/// Values found in the restored data, by their keyed hash.
type Found = BTreeMap<String, String>;

async fn has_pgcrypto(client: &Client) -> Result<bool, WorkerError> {
    let row = client
        .query_one(
            "SELECT to_regprocedure('hmac(bytea,bytea,text)') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| db_error("looking for pgcrypto", e))?;
    Ok(row.get(0))
}

/// Hashes every distinct value of one identity column and keeps those in `wanted`.
async fn scan_column(
    client: &Client,
    key: &LedgerKey,
    (table, column, kind): (&str, &str, &IdentifierKind),
    wanted: &BTreeSet<&str>,
    in_database: bool,
    found: &mut Found,
) -> Result<(), WorkerError> {
    let name = quote_table(table).map_err(|e| WorkerError::invalid(e.to_string()))?;
    let col = quote_ident(column).map_err(|e| WorkerError::invalid(e.to_string()))?;
    let expr = normal_form(kind, &col);
    let what = format!("scanning {table}.{column}");
    if in_database {
        let sql = format!(
            "SELECT x.h, x.v FROM (SELECT DISTINCT encode(hmac(convert_to($1 || {expr}, 'UTF8'), decode($2, 'hex'), 'sha256'), 'hex') AS h, {expr} AS v \
             FROM {name} AS t WHERE t.{col} IS NOT NULL) AS x WHERE x.h = ANY(string_to_array($3, ','))"
        );
        let stmt = client
            .prepare_typed(&sql, &[Type::TEXT, Type::TEXT, Type::TEXT])
            .await
            .map_err(|e| db_error(&what, e))?;
        let prefix = format!("{kind}:");
        let key_hex = hex::encode(key.bytes());
        let list = wanted.iter().copied().collect::<Vec<_>>().join(",");
        for row in client
            .query(&stmt, &[&prefix, &key_hex, &list])
            .await
            .map_err(|e| db_error(&what, e))?
        {
            found.insert(row.get(0), row.get(1));
        }
        return Ok(());
    }
    // Streamed: memory holds one row at a time plus the matches.
    let sql = format!("SELECT DISTINCT {expr} FROM {name} AS t WHERE t.{col} IS NOT NULL");
    let stmt = client.prepare(&sql).await.map_err(|e| db_error(&what, e))?;
    let rows = client
        .query_raw(&stmt, std::iter::empty::<&str>())
        .await
        .map_err(|e| db_error(&what, e))?;
    pin_mut!(rows);
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| db_error(&what, e))?;
        let value: String = row.get(0);
        let h = key.hash_normalised(kind, &value);
        if wanted.contains(h.as_str()) {
            found.insert(h, value);
        }
    }
    Ok(())
}

/// Runs the replay and returns its report; failures are a report with `succeeded: false`.
pub async fn run(task: &ReplayTask) -> ReplayReport {
    let mut report = ReplayReport::default();
    match replay(task, &mut report).await {
        Ok(()) => report.succeeded = true,
        Err(e) => {
            report.succeeded = false;
            report.reason = Some(e.reason.to_string());
            report.message = e.message;
        }
    }
    tracing::info!(
        system = %format!("{}/{}", task.namespace, task.system),
        job = %task.job,
        succeeded = report.succeeded,
        total = report.total,
        found = report.found,
        rows = report.rows_erased,
        "erasure-ledger replay finished"
    );
    report
}

async fn replay(task: &ReplayTask, report: &mut ReplayReport) -> Result<(), WorkerError> {
    if task.version != REPLAY_VERSION {
        return Err(WorkerError::invalid(format!(
            "replay task version {:?} is not supported: this worker speaks {REPLAY_VERSION}",
            task.version
        )));
    }
    let map = task
        .spec
        .data_map
        .as_ref()
        .ok_or_else(|| WorkerError::invalid("a replay needs the system's dataMap"))?;
    let key = hex::decode(&task.ledger_key)
        .map_err(|_| WorkerError::invalid("the ledger key in the task is not hex"))
        .and_then(|k| LedgerKey::new(k).map_err(WorkerError::invalid))?;
    let store = Store::open(&task.storage)
        .map_err(|e| WorkerError::new("StorageUnreachable", e.to_string()))?;
    let entries = Ledger::new(store)
        .entries_for(&task.system, task.backup_taken_at)
        .await
        .map_err(|e| WorkerError::new("LedgerUnreadable", e.to_string()))?;
    report.total = entries.len() as i64;
    if let Some(e) = entries.iter().find(|e| e.key_id != key.id()) {
        return Err(WorkerError::new(
            "LedgerKeyMismatch",
            format!(
                "ledger entry {} was hashed with key {} but the operator's ledger key is {}; restore the key the entry was written with",
                e.key(),
                e.key_id,
                key.id()
            ),
        ));
    }
    if entries.is_empty() {
        report.message = format!(
            "no erasure of {} recorded after the backup; nothing to replay",
            task.system
        );
        return Ok(());
    }
    let client = connect(&task.connection).await?;
    let in_database = has_pgcrypto(&client).await?;
    report.hashed_in = Some(if in_database { "database" } else { "worker" }.into());
    let found = scan(&client, map, &key, &entries, &task.system, in_database).await?;
    drop(client);

    for entry in &entries {
        let mut subject = IdentifierSet::default();
        if let Some(part) = entry.system(&task.system) {
            for id in &part.identities {
                if let Some(value) = found.get(&id.hmac) {
                    subject.insert(id.kind.clone(), value.clone());
                }
            }
        }
        if !subject.is_empty() {
            report.found += 1;
            report.rows_erased += purge(task, entry, subject).await? as i64;
        }
        report.replayed += 1;
    }
    report.message = format!(
        "replayed {} erasure(s) recorded after the backup: {} subject(s) found again, {} row(s) erased",
        report.replayed, report.found, report.rows_erased
    );
    Ok(())
}

/// Scans the identity columns of the kinds the entries hold.
async fn scan(
    client: &Client,
    map: &DataMap,
    key: &LedgerKey,
    entries: &[LedgerEntry],
    system: &str,
    in_database: bool,
) -> Result<Found, WorkerError> {
    let mut wanted: BTreeMap<&IdentifierKind, BTreeSet<&str>> = BTreeMap::new();
    for e in entries {
        for id in e
            .system(system)
            .map(|s| s.identities.as_slice())
            .unwrap_or(&[])
        {
            wanted.entry(&id.kind).or_default().insert(id.hmac.as_str());
        }
    }
    let mut found = Found::new();
    for table in &map.tables {
        for column in &table.identity {
            let Some(hashes) = wanted.get(&column.identifier) else {
                continue;
            };
            scan_column(
                client,
                key,
                (&table.name, &column.column, &column.identifier),
                hashes,
                in_database,
                &mut found,
            )
            .await?;
        }
    }
    Ok(found)
}

/// Purges one subject with the connector's ordinary purge; returns the rows erased.
async fn purge(
    task: &ReplayTask,
    entry: &LedgerEntry,
    subject: IdentifierSet,
) -> Result<u64, WorkerError> {
    // Built from JSON so that task fields added later keep their defaults.
    let purge: Task = serde_json::from_value(json!({
        "version": crate::worker::task::CONTRACT_VERSION,
        "request": {
            "namespace": entry.namespace,
            "name": entry.request,
            "digest": entry.subject,
        },
        "step": JobStep::Purge,
        "system": {"name": task.system, "spec": task.spec},
        "connection": task.connection,
        "identifiers": subject,
        "hashSalt": task.hash_salt,
        "storage": task.storage,
        "output": format!("replays/{}/{}/{}/purge", task.namespace, task.system, task.job),
    }))
    .map_err(|e| WorkerError::invalid(format!("building the purge task: {e}")))?;
    let manifest = run_task(&purge, &Options::default()).await;
    match manifest.outcome {
        Outcome::Succeeded => Ok(manifest.total_rows()),
        _ => Err(WorkerError::new(
            "PurgeFailed",
            format!(
                "erasing again the subject of {}: {}",
                entry.key(),
                manifest.message
            ),
        )),
    }
}

/// Runs the replay and writes its report to object storage.
pub async fn run_and_report(task: &ReplayTask) -> Result<ReplayReport, WorkerError> {
    let report = run(task).await;
    let store = Store::open(&task.storage)
        .map_err(|e| WorkerError::new("OutputError", format!("object storage: {e}")))?;
    let bytes = serde_json::to_vec_pretty(&report)
        .map_err(|e| WorkerError::new("OutputError", e.to_string()))?;
    store
        .put(&task.report, Bytes::from(bytes))
        .await
        .map_err(|e| WorkerError::new("OutputError", format!("writing the replay report: {e}")))?;
    Ok(report)
}

/// The `worker` subcommand for a replay task file.
pub async fn run_bytes(bytes: &[u8]) -> Result<Manifest, WorkerError> {
    let task: ReplayTask = serde_json::from_slice(bytes)
        .map_err(|e| WorkerError::invalid(format!("task file is not a valid replay task: {e}")))?;
    let report = run_and_report(&task).await?;
    let mut manifest = Manifest::new(&task.system, JobStep::LedgerReplay);
    manifest.tables.insert(
        "erased".into(),
        TableCount {
            rows: report.rows_erased.max(0) as u64,
            ..Default::default()
        },
    );
    manifest.message = report.message.clone();
    if report.succeeded {
        Ok(manifest)
    } else {
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

    #[test]
    fn normal_forms_match_the_connector() {
        assert_eq!(
            normal_form(&IdentifierKind::Email, "\"email\""),
            "lower(t.\"email\"::text)"
        );
        assert!(normal_form(&IdentifierKind::Phone, "\"p\"").contains("[^0-9+]"));
        assert_eq!(
            normal_form(&IdentifierKind::UserId, "\"u\""),
            "t.\"u\"::text"
        );
        assert_eq!(report_key("ns", "crm", "j"), "replays/ns/crm/j/report.json");
    }
}
