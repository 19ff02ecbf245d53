//! Retention runs: "rows of table T whose age column is older than the cutoff: purge or
//! anonymise", on SQL systems (PostgreSQL), in bounded batches.
//!
//! # The task
//!
//! A retention run has no subject, so it is its own task document (same contract version,
//! `step: RetentionRun`), delivered like request tasks in the per-Job Secret:
//!
//! ```json
//! {
//!   "version": "privacy-operator.dev/worker/v1",
//!   "step": "RetentionRun",
//!   "policy": {"namespace": "shop", "name": "default", "rule": "old-calls"},
//!   "system": {"name": "crm", "spec": { …the DataSystem spec… }},
//!   "connection": "postgres://…",
//!   "run": {"table": "crm.calls", "ageColumn": "started_at", "cutoff": "2022-03-31T01:30:00Z",
//!           "action": "Purge", "dryRun": false, "batchSize": 1000,
//!           "scheduled": "2024-03-31T01:30:00Z"},
//!   "heldDigests": ["sha256:…"],
//!   "hashSalt": "…hex…",
//!   "storage": {"url": "s3://…"}, "output": "retention/shop/default/old-calls/<job>"
//! }
//! ```
//!
//! The report ([`RetentionReport`]) is written as `manifest.json` in the output location.
//!
//! # What a run does
//!
//! Rows of `table` whose `ageColumn` is before `cutoff` (compared as `timestamptz`; the
//! session runs in UTC) are processed `batchSize` at a time, **each batch one statement, hence
//! one short transaction**, so no lock is held long:
//!
//! - **By key** (the general case): the batch is the next `batchSize` expired rows in
//!   primary-key order after the last key of the previous batch (keyset pagination, so rows
//!   kept by a hold or by anonymisation are never scanned twice). One data-modifying `WITH`
//!   deletes (or anonymises, per each table's `purge` mode) the batch's related rows through
//!   the data map's Cascade relations, unlinks Detach children (foreign key set to NULL), and
//!   deletes the batch's rows (their age checked again on the row). Foreign keys declared NO
//!   ACTION are checked at the end of that statement, so the order within it is free.
//! - **By page range** (a purge that deletes, with no subject-digest hold, on PostgreSQL 14+,
//!   when a page holds fewer rows than a batch): the batch is the expired rows of the next
//!   run of whole pages (as many as hold about `batchSize` rows, by the table's statistics),
//!   found by a TID range scan, so the run reads the table once, like one `DELETE` would,
//!   instead of once per batch through an index. The batch size is then approximate (whole
//!   pages). A table nothing hangs off gets a plain `DELETE` per range; otherwise the same
//!   `WITH` as above, keyed by the deleted rows' keys.
//!
//! `action: Anonymise` applies each table's anonymise strategy (fields' strategies; identity
//! columns not declared as fields become NULL) to the batch and its Cascade descendants,
//! deleting nothing (a Hash field of a row anonymised by an earlier run is hashed again). A
//! dry run runs the key batches with `SELECT` in place of `DELETE`/`UPDATE`: it changes
//! nothing and reports what would change. The session's `lock_timeout` is 10s: a batch
//! blocked longer fails the run as Conflict (batches already committed stay; the next run
//! continues where the data is).
//!
//! # Legal holds by subject digest
//!
//! A held subject's rows are left alone and counted as `held`. A row is matched without any
//! identifier in clear: the worker reads the row's identity columns (those of its own table
//! and, for a table without them, those of its Cascade parent chain, joined upwards) and
//! computes the salted digest exactly as [`IdentifierSet::digest`] does for a request, over
//! **every non-empty subset** of the identifiers found on the row (a request may have named
//! only some of them, e.g. only the e-mail). The row is held when any of those digests is a
//! held one. So a hold covers the rows whose identity columns carry every identifier the
//! request named; a request that named an identifier the table does not hold (e.g. a phone
//! number for a table with only e-mail) does not match there. Descendants of a held row are
//! never touched, since only the batch's kept rows lead to them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use super::WorkerError;
use super::output::storage_error;
use super::postgres::{MASK, connect, db_error};
use super::sql::{anonymise_sets, quote_ident, quote_table};
use super::task::{CONTRACT_VERSION, Outcome, SystemRef};
use crate::api::datamap::{AnonymiseStrategy, DataMap, OnErase, PurgeMode, Table};
use crate::api::datasystem::{ConnectorType, SqlDriver};
use crate::api::retention::RetentionAction;
use crate::api::subject::{IdentifierKind, IdentifierSet, SubjectDigest};
use crate::plan::jobs::JobStep;
use crate::storage::{StorageTarget, Store};

/// Name of the report in the output location.
pub const REPORT_FILE: &str = super::MANIFEST_FILE;
/// How long one batch may wait for a lock held by the application.
const LOCK_TIMEOUT: &str = "SET lock_timeout = '10s'";
/// Most identity columns considered per row (subsets grow as 2^n).
const MAX_IDENTITY: usize = 8;
/// Longest Cascade parent chain followed to find a row's identity.
const MAX_CHAIN: usize = 8;

/// One retention run on one system.
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct RetentionTask {
    pub version: String,
    /// Always [`JobStep::RetentionRun`].
    pub step: JobStep,
    pub policy: PolicyRef,
    pub system: SystemRef,
    /// Connection URL of the system; holds a credential, never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    pub run: RunSpec,
    /// Subjects under a legal hold, whose rows are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_digests: Vec<SubjectDigest>,
    /// The operator's salt, hex: the Hash anonymisation's salt (as for request purges) and
    /// the salt of subject digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_salt: Option<String>,
    /// The operator's object storage; unset for a local `output` directory.
    #[serde(default)]
    pub storage: StorageTarget,
    /// Key prefix of the report below `storage` (or an absolute directory without storage).
    pub output: String,
}

impl fmt::Debug for RetentionTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetentionTask")
            .field("policy", &self.policy)
            .field("system", &self.system.name)
            .field(
                "connection",
                &self.connection.as_ref().map(|_| "<redacted>"),
            )
            .field("run", &self.run)
            .field("held_digests", &self.held_digests.len())
            .field("hash_salt", &self.hash_salt.as_ref().map(|_| "<redacted>"))
            .field("output", &self.output)
            .finish()
    }
}

/// The policy and rule a run belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
    pub rule: String,
}

/// What the rule asks of this run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    pub table: String,
    pub age_column: String,
    /// Rows older than this (age column before it) expire.
    pub cutoff: Timestamp,
    pub action: RetentionAction,
    #[serde(default)]
    pub dry_run: bool,
    pub batch_size: u32,
    /// The scheduled time of the run (for the report).
    pub scheduled: Timestamp,
}

/// Rows of one table.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionCount {
    /// Rows that matched (the rule's table: expired rows; related tables: rows hanging off
    /// the expired rows that were, or in a dry run would be, changed).
    pub matched: u64,
    /// Rows deleted or anonymised (0 in a dry run).
    pub affected: u64,
    /// Expired rows left alone because a legal hold covers their subject.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held: u64,
    /// Rows whose foreign key was set to NULL (Detach relations).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub detached: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The result of a run, written as `manifest.json`. No row values, no identifiers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionReport {
    pub version: String,
    pub system: String,
    pub step: JobStep,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub table: String,
    pub dry_run: bool,
    /// Per table; the rule's table holds the matched/affected/held of the rule.
    pub tables: BTreeMap<String, RetentionCount>,
    pub batches: u64,
    /// Longest batch (one statement, one transaction), milliseconds.
    pub longest_batch_ms: u64,
    pub message: String,
}

impl RetentionReport {
    fn new(task: &RetentionTask) -> Self {
        RetentionReport {
            version: CONTRACT_VERSION.into(),
            system: task.system.name.clone(),
            step: JobStep::RetentionRun,
            outcome: Outcome::Succeeded,
            reason: None,
            table: task.run.table.clone(),
            dry_run: task.run.dry_run,
            tables: BTreeMap::new(),
            batches: 0,
            longest_batch_ms: 0,
            message: String::new(),
        }
    }

    /// Counts of the rule's table.
    pub fn rule_counts(&self) -> RetentionCount {
        self.tables.get(&self.table).copied().unwrap_or_default()
    }
}

/// Is this task document a retention task? (Peeks at `step` only.)
pub fn is_retention_task(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Peek {
        step: Option<String>,
    }
    serde_json::from_slice::<Peek>(bytes)
        .ok()
        .and_then(|p| p.step)
        .is_some_and(|s| s == "RetentionRun")
}

impl RetentionTask {
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let task: RetentionTask = serde_json::from_slice(bytes)
            .map_err(|e| format!("task file is not a valid retention task: {e}"))?;
        task.validate()?;
        Ok(task)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.version != CONTRACT_VERSION {
            return Err(format!(
                "task version {:?} is not supported: this worker speaks {CONTRACT_VERSION}",
                self.version
            ));
        }
        if self.step != JobStep::RetentionRun {
            return Err("a retention task has step RetentionRun".into());
        }
        if self.run.batch_size == 0 {
            return Err("run.batchSize must be at least 1".into());
        }
        if self.output.is_empty() {
            return Err("task output location is empty".into());
        }
        Ok(())
    }

    fn store(&self) -> Result<Store, WorkerError> {
        if !self.storage.is_unset() {
            return Ok(Store::open(&self.storage)
                .map_err(storage_error)?
                .child(&self.output));
        }
        let url = if self.output.contains("://") {
            self.output.clone()
        } else {
            format!("file://{}", self.output)
        };
        Store::open(&StorageTarget::new(url)).map_err(storage_error)
    }

    fn salt(&self) -> Result<Vec<u8>, WorkerError> {
        let hex_salt = self.hash_salt.as_deref().unwrap_or_default();
        hex::decode(hex_salt).map_err(|_| {
            WorkerError::invalid(
                "hashSalt must be the operator's salt in hex to match legal holds by subject digest",
            )
        })
    }
}

/// Runs a retention task; failures are a Failed report, never a panic.
pub async fn run(task: &RetentionTask) -> RetentionReport {
    let mut report = RetentionReport::new(task);
    let started = Instant::now();
    if let Err(e) = execute(task, &mut report).await {
        report.outcome = Outcome::Failed;
        report.reason = Some(e.reason.to_string());
        // Earlier batches are committed: their counts stay, and the message says so.
        let done = report.rule_counts().affected;
        report.message = if done > 0 {
            format!(
                "{} (after {done} rows in {} batches were committed)",
                e.message, report.batches
            )
        } else {
            e.message
        };
    }
    tracing::info!(
        policy = %format!("{}/{}", task.policy.namespace, task.policy.name),
        rule = %task.policy.rule,
        system = %task.system.name,
        outcome = ?report.outcome,
        matched = report.rule_counts().matched,
        affected = report.rule_counts().affected,
        held = report.rule_counts().held,
        batches = report.batches,
        longest_batch_ms = report.longest_batch_ms,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "retention run finished"
    );
    report
}

/// Runs the task and writes its report: what a run Job does.
pub async fn run_and_write(task: &RetentionTask) -> Result<RetentionReport, WorkerError> {
    let report = run(task).await;
    let bytes = serde_json::to_vec_pretty(&report)
        .map_err(|e| WorkerError::new("OutputError", e.to_string()))?;
    task.store()?
        .put(REPORT_FILE, Bytes::from(bytes))
        .await
        .map_err(storage_error)?;
    Ok(report)
}

async fn execute(task: &RetentionTask, report: &mut RetentionReport) -> Result<(), WorkerError> {
    task.validate().map_err(WorkerError::invalid)?;
    let spec = &task.system.spec;
    let sql = match (&spec.connector.type_, &spec.connector.sql) {
        (ConnectorType::Sql, Some(sql)) => sql,
        _ => {
            return Err(WorkerError::unsupported(format!(
                "system {} is not an SQL system; retention rules on tables run on SQL systems",
                task.system.name
            )));
        }
    };
    if sql.driver != SqlDriver::Postgres {
        return Err(WorkerError::unsupported(
            "retention runs are implemented for PostgreSQL only so far",
        ));
    }
    let map = spec
        .data_map
        .as_ref()
        .ok_or_else(|| WorkerError::invalid("an SQL system needs a dataMap"))?;
    let url = task.connection.as_deref().ok_or_else(|| {
        WorkerError::invalid("the task has no connection URL for the PostgreSQL system")
    })?;
    let salt_hex = task.hash_salt.clone().unwrap_or_default();
    let holds: BTreeSet<SubjectDigest> = task.held_digests.iter().cloned().collect();
    let salt = if holds.is_empty() {
        Vec::new()
    } else {
        task.salt()?
    };
    let sweep = Sweep::new(map, &task.run)?;
    let client = connect(url).await?;
    client
        .batch_execute(&format!("{LOCK_TIMEOUT}; SET TimeZone = 'UTC'"))
        .await
        .map_err(|e| db_error("setting up the session", e))?;
    let key_type = sweep.check_catalog(&client).await?;
    let statements = sweep.statements(&key_type);
    let cutoff = task.run.cutoff.to_string();
    if holds.is_empty()
        && !task.run.dry_run
        && sweep.root_op == Op::Delete
        && let Some(pages) = page_ranges(&client, sweep.root, task.run.batch_size).await?
    {
        for (from, to) in pages {
            let batch_started = Instant::now();
            let params = [
                Param::Text(cutoff.clone()),
                Param::Text(format!("({from},0)")),
                Param::Text(format!("({to},0)")),
            ];
            let counts = if sweep.ops.is_empty() {
                plain_range_delete(&client, &sweep, task.run.cutoff, from, to).await?
            } else {
                query_counts(&client, &statements.ranged, &params, &salt_hex).await?
            };
            report.batches += 1;
            let ms = batch_started.elapsed().as_millis() as u64;
            report.longest_batch_ms = report.longest_batch_ms.max(ms);
            sweep.add(report, &counts, 0);
        }
        report.message = summary(task, &sweep, report);
        return Ok(());
    }
    let mut last: Option<String> = None;
    loop {
        let batch_started = Instant::now();
        let (counts, next_last, held) = if holds.is_empty() {
            let (stmt, params) = match &last {
                None => (&statements.first, vec![Param::Text(cutoff.clone())]),
                Some(k) => (
                    &statements.next,
                    vec![Param::Text(cutoff.clone()), Param::Text(k.clone())],
                ),
            };
            let row = query_counts(&client, stmt, &params, &salt_hex).await?;
            let last_key = row.last_key.clone();
            (row, last_key, 0)
        } else {
            let scan = match &last {
                None => (&statements.scan_first, vec![Param::Text(cutoff.clone())]),
                Some(k) => (
                    &statements.scan_next,
                    vec![Param::Text(cutoff.clone()), Param::Text(k.clone())],
                ),
            };
            let prepared = scan
                .0
                .prepare(&client, &vec![Type::TEXT; scan.1.len()])
                .await?;
            let rows = client
                .query(prepared, &params_of(&scan.1))
                .await
                .map_err(|e| db_error(&scan.0.what, e))?;
            let Some(last_row) = rows.last() else {
                break;
            };
            let last_key: Option<String> = last_row.get(0);
            let mut keep = Vec::new();
            let mut held = 0u64;
            for row in &rows {
                let key: Option<String> = row.get(0);
                let values: Vec<Option<String>> = (1..row.len())
                    .map(|i| row.get::<_, Option<String>>(i))
                    .collect();
                if is_held(&sweep.identity, &values, &salt, &holds) {
                    held += 1;
                } else if let Some(k) = key {
                    keep.push(k);
                }
            }
            let mut counts = if keep.is_empty() {
                Counts::default()
            } else {
                query_counts(
                    &client,
                    &statements.keys,
                    &[Param::Text(cutoff.clone()), Param::Array(keep)],
                    &salt_hex,
                )
                .await?
            };
            counts.scanned = rows.len() as u64;
            (counts, last_key, held)
        };
        let scanned = counts.scanned.max(counts.batch);
        if scanned == 0 {
            break;
        }
        report.batches += 1;
        let ms = batch_started.elapsed().as_millis() as u64;
        report.longest_batch_ms = report.longest_batch_ms.max(ms);
        sweep.add(report, &counts, held);
        last = next_last;
        if last.is_none() || scanned < u64::from(task.run.batch_size) {
            break;
        }
    }
    report.message = summary(task, &sweep, report);
    Ok(())
}

/// The report's message: what matched and what was done, in words.
fn summary(task: &RetentionTask, sweep: &Sweep, report: &RetentionReport) -> String {
    let c = report.rule_counts();
    let related: u64 = report
        .tables
        .iter()
        .filter(|(t, _)| **t != sweep.root.name)
        .map(|(_, c)| {
            if task.run.dry_run {
                c.matched
            } else {
                c.affected
            }
        })
        .sum();
    let verb = match (task.run.dry_run, sweep.root_op) {
        (true, Op::Delete) => "would delete",
        (true, _) => "would anonymise",
        (false, Op::Delete) => "deleted",
        (false, _) => "anonymised",
    };
    format!(
        "{} rows of {} older than {} matched; {verb} {} (and {related} related rows); {} held by legal holds; {} batches, longest {} ms",
        c.matched,
        sweep.root.name,
        task.run.cutoff,
        if task.run.dry_run {
            c.matched - c.held
        } else {
            c.affected
        },
        c.held,
        report.batches,
        report.longest_batch_ms
    )
}

/// The block ranges of a block-range run: whole pages, as many per batch as hold about
/// `batch_size` rows (by the planner's statistics). `None` when the server has no TID range
/// scans (before PostgreSQL 14) or a page holds more rows than a batch may: then batches go
/// by key.
async fn page_ranges(
    client: &Client,
    table: &Table,
    batch_size: u32,
) -> Result<Option<Vec<(i64, i64)>>, WorkerError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, \
                    (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::int8, \
                    c.reltuples::float8, c.relpages::int8 \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&quoted(&table.name)],
        )
        .await
        .map_err(|e| db_error("reading the table's size", e))?;
    let (version, pages, tuples, stat_pages): (i32, i64, f64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if version < 140_000 {
        return Ok(None);
    }
    // Never analysed (reltuples -1 or 0): assume small rows; the check below then falls
    // back to key batches for small batch sizes.
    let per_page = if tuples > 0.0 && stat_pages > 0 {
        (tuples / stat_pages as f64).ceil().max(1.0)
    } else {
        100.0
    };
    let pages_per_batch = (f64::from(batch_size) / per_page).floor() as i64;
    if pages_per_batch < 1 {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut from = 0;
    while from < pages {
        let to = (from + pages_per_batch).min(pages);
        out.push((from, to));
        from = to;
    }
    Ok(Some(out))
}

enum Param {
    Text(String),
    Array(Vec<String>),
}

fn params_of(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(s) => s as &(dyn ToSql + Sync),
            Param::Array(a) => a as &(dyn ToSql + Sync),
        })
        .collect()
}

/// What one batch statement returned.
#[derive(Default, Debug)]
struct Counts {
    /// Rows in the batch (kept rows in digest mode).
    batch: u64,
    /// Rows scanned (digest mode: kept and held).
    scanned: u64,
    last_key: Option<String>,
    /// Per sub-statement, in [`Sweep::ops`] order.
    ops: Vec<u64>,
}

/// A block-range DELETE of a table nothing hangs off, counted by its command tag. The
/// bounds are literals (a timestamp and page numbers this worker formats, never input text):
/// each batch is then planned with constants, like the one big `DELETE` it competes with,
/// instead of converting a text parameter for every row.
async fn plain_range_delete(
    client: &Client,
    sweep: &Sweep<'_>,
    cutoff: Timestamp,
    from: i64,
    to: i64,
) -> Result<Counts, WorkerError> {
    let sql = format!(
        "DELETE FROM {} AS t WHERE t.ctid >= '({from},0)'::tid AND t.ctid < '({to},0)'::tid AND t.\"{}\" < '{}'::timestamptz",
        quoted(&sweep.root.name),
        sweep.run.age_column,
        cutoff
    );
    // The simple protocol: one round trip per batch.
    let n = client
        .simple_query(&sql)
        .await
        .map_err(|e| db_error(&format!("deleting rows of {}", sweep.root.name), e))?
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0);
    Ok(Counts {
        batch: n,
        scanned: n,
        last_key: None,
        ops: vec![n],
    })
}

async fn query_counts(
    client: &Client,
    stmt: &Statement,
    params: &[Param],
    salt: &str,
) -> Result<Counts, WorkerError> {
    // $1 the cutoff, $2 the last key (or the kept keys, or the first page), $3 the mask, $4
    // the hash salt, $5 the page after the range; bound even when a statement does not use
    // them (typed, so that is allowed).
    let none = None::<String>;
    let mask = MASK.to_string();
    let salt = salt.to_string();
    let given = params_of(params);
    let slot = |i: usize| given.get(i).copied().unwrap_or(&none);
    let all: Vec<&(dyn ToSql + Sync)> = vec![slot(0), slot(1), &mask, &salt, slot(2)];
    let second = match params.get(1) {
        Some(Param::Array(_)) => Type::TEXT_ARRAY,
        _ => Type::TEXT,
    };
    let types = [Type::TEXT, second, Type::TEXT, Type::TEXT, Type::TEXT];
    let prepared = stmt.prepare(client, &types).await?;
    let row = client
        .query_one(prepared, &all)
        .await
        .map_err(|e| db_error(&stmt.what, e))?;
    let n = |i: usize| -> u64 { row.get::<_, i64>(i).max(0) as u64 };
    Ok(Counts {
        batch: n(0),
        scanned: 0,
        last_key: row.get(1),
        ops: (2..row.len()).map(n).collect(),
    })
}

/// Is the row (identity values in [`Sweep::identity`] order) a held subject's?
fn is_held(
    identity: &[(IdentifierKind, String)],
    values: &[Option<String>],
    salt: &[u8],
    holds: &BTreeSet<SubjectDigest>,
) -> bool {
    let mut found: Vec<(IdentifierKind, String)> = Vec::new();
    for ((kind, _), v) in identity.iter().zip(values) {
        let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
            continue;
        };
        if !found.iter().any(|(k, _)| k == kind) {
            found.push((kind.clone(), v.to_string()));
        }
    }
    let n = found.len().min(MAX_IDENTITY);
    for mask in 1u32..(1 << n) {
        let mut set = IdentifierSet::default();
        for (i, (k, v)) in found.iter().take(n).enumerate() {
            if mask & (1 << i) != 0 {
                set.insert(k.clone(), v.clone());
            }
        }
        if holds.contains(&set.digest(salt)) {
            return true;
        }
    }
    false
}

/// What a sub-statement does to its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Delete,
    Anonymise,
    /// Set a Detach child's foreign key ([`SubOp::set_null`]) to NULL.
    Detach,
}

/// One sub-statement of a batch.
struct SubOp<'a> {
    table: &'a Table,
    op: Op,
    /// The condition on alias `t` selecting the batch's rows of `table`.
    cond: String,
    /// Detach: the foreign key set to NULL.
    set_null: Option<String>,
}

/// A prepared-to-be statement with what it does, for error messages.
#[derive(Clone, Debug)]
struct Statement {
    text: String,
    what: String,
    /// Prepared once per run, on first use.
    prepared: tokio::sync::OnceCell<tokio_postgres::Statement>,
}

impl Statement {
    fn new(text: String, what: String) -> Self {
        Statement {
            text,
            what,
            prepared: tokio::sync::OnceCell::new(),
        }
    }

    async fn prepare(
        &self,
        client: &Client,
        types: &[Type],
    ) -> Result<&tokio_postgres::Statement, WorkerError> {
        self.prepared
            .get_or_try_init(|| async {
                client
                    .prepare_typed(&self.text, types)
                    .await
                    .map_err(|e| db_error(&self.what, e))
            })
            .await
    }
}

/// The statements of a run, for each batch shape.
struct Statements {
    /// First batch (no keyset condition).
    first: Statement,
    /// Later batches: keys after `$2`.
    next: Statement,
    /// Digest mode: the kept keys of a batch (`$2`, a text array).
    keys: Statement,
    /// Digest mode: the batch's keys and identity values.
    scan_first: Statement,
    scan_next: Statement,
    /// Block-range mode: the rows in pages `[$2, $5)`.
    ranged: Statement,
}

/// The shape of a run over the data map: the rule's table, what happens to it and to each
/// related table.
struct Sweep<'a> {
    map: &'a DataMap,
    root: &'a Table,
    run: &'a RunSpec,
    root_op: Op,
    /// Sub-statements on related tables, children first.
    ops: Vec<SubOp<'a>>,
    /// Identity columns of the row (own, then up the Cascade parent chain): kind and the
    /// SQL expression reading it in the scan.
    identity: Vec<(IdentifierKind, String)>,
    /// LEFT JOINs of the scan.
    joins: String,
}

impl<'a> Sweep<'a> {
    fn new(map: &'a DataMap, run: &'a RunSpec) -> Result<Self, WorkerError> {
        let root = map.table(&run.table).ok_or_else(|| {
            WorkerError::invalid(format!(
                "table {} is not in the system's data map",
                run.table
            ))
        })?;
        let order = map.topological_order().map_err(|cycle| {
            WorkerError::new(
                "CyclicDataMap",
                format!(
                    "the data map's relations form a cycle through {}",
                    cycle.join(", ")
                ),
            )
        })?;
        let bad = |e: super::sql::BadIdentifier| WorkerError::invalid(format!("data map: {e}"));
        for t in &map.tables {
            quote_table(&t.name).map_err(bad)?;
            quote_ident(&t.primary_key).map_err(bad)?;
            for r in &t.relations {
                quote_ident(&r.foreign_key).map_err(bad)?;
                if let Some(k) = &r.parent_key {
                    quote_ident(k).map_err(bad)?;
                }
                if map.table(&r.table).is_none() {
                    return Err(WorkerError::invalid(format!(
                        "table {} has a relation to {}, which is not in the data map",
                        t.name, r.table
                    )));
                }
            }
            for i in &t.identity {
                quote_ident(&i.column).map_err(bad)?;
            }
        }
        quote_ident(&run.age_column).map_err(bad)?;

        // Cascade descendants of the root are in scope.
        let mut scope: BTreeSet<&str> = BTreeSet::from([root.name.as_str()]);
        let mut stack = vec![root];
        while let Some(t) = stack.pop() {
            for r in t
                .relations
                .iter()
                .filter(|r| r.on_erase == OnErase::Cascade)
            {
                if let Some(child) = map.table(&r.table)
                    && scope.insert(child.name.as_str())
                {
                    stack.push(child);
                }
            }
        }
        let op_of = |t: &Table| -> Option<Op> {
            let anonymise =
                run.action == RetentionAction::Anonymise || t.purge == PurgeMode::Anonymise;
            if anonymise {
                // A table with nothing to anonymise is left as it is.
                let has = !t.identity.is_empty() || !t.fields.is_empty();
                has.then_some(Op::Anonymise)
            } else {
                Some(Op::Delete)
            }
        };
        let root_op = op_of(root).ok_or_else(|| {
            WorkerError::invalid(format!(
                "table {} has no fields or identity columns to anonymise; use action Purge or declare its fields",
                root.name
            ))
        })?;
        let mut sweep = Sweep {
            map,
            root,
            run,
            root_op,
            ops: Vec::new(),
            identity: Vec::new(),
            joins: String::new(),
        };
        let mut ops = Vec::new();
        for t in order
            .iter()
            .rev()
            .filter(|t| scope.contains(t.name.as_str()))
        {
            let Some(op) = op_of(t) else { continue };
            if op == Op::Delete {
                // Detach children outside the scope lose their link first.
                for r in t.relations.iter().filter(|r| r.on_erase == OnErase::Detach) {
                    if scope.contains(r.table.as_str()) {
                        continue;
                    }
                    if let Some(child) = map.table(&r.table) {
                        let key = r.parent_key.as_deref().unwrap_or(&t.primary_key);
                        let cond = format!(
                            "t.\"{}\" IN ({})",
                            r.foreign_key,
                            sweep.keys_of(t, key, &mut 0, &scope)
                        );
                        ops.push(SubOp {
                            table: child,
                            op: Op::Detach,
                            cond,
                            set_null: Some(r.foreign_key.clone()),
                        });
                    }
                }
            }
            if t.name != root.name {
                let cond = sweep.membership(t, "t", &mut 0, &scope);
                ops.push(SubOp {
                    table: t,
                    op,
                    cond,
                    set_null: None,
                });
            }
        }
        sweep.ops = ops;
        sweep.identity_chain();
        Ok(sweep)
    }

    /// `SELECT <key> FROM <table> WHERE <membership>`: the keys of `table`'s rows in this batch.
    fn keys_of(&self, table: &Table, key: &str, n: &mut usize, scope: &BTreeSet<&str>) -> String {
        if table.name == self.root.name && key == table.primary_key {
            return format!("SELECT b.\"{key}\" FROM b");
        }
        *n += 1;
        let alias = format!("s{n}");
        let cond = self.membership(table, &alias, n, scope);
        format!(
            "SELECT {alias}.\"{key}\" FROM {} AS {alias} WHERE {cond}",
            quoted(&table.name)
        )
    }

    /// The condition on `alias` selecting `table`'s rows that belong to the batch (through
    /// Cascade relations from tables in scope).
    fn membership(
        &self,
        table: &Table,
        alias: &str,
        n: &mut usize,
        scope: &BTreeSet<&str>,
    ) -> String {
        if table.name == self.root.name {
            return format!(
                "{alias}.\"{pk}\" IN (SELECT b.\"{pk}\" FROM b)",
                pk = table.primary_key
            );
        }
        let mut terms = Vec::new();
        for p in &self.map.tables {
            if !scope.contains(p.name.as_str()) {
                continue;
            }
            for r in p
                .relations
                .iter()
                .filter(|r| r.table == table.name && r.on_erase == OnErase::Cascade)
            {
                let key = r.parent_key.as_deref().unwrap_or(&p.primary_key);
                terms.push(format!(
                    "{alias}.\"{}\" IN ({})",
                    r.foreign_key,
                    self.keys_of(p, key, n, scope)
                ));
            }
        }
        if terms.is_empty() {
            "FALSE".into()
        } else {
            format!("({})", terms.join(" OR "))
        }
    }

    /// The row's identity: the root's identity columns, then its Cascade parents' upwards.
    fn identity_chain(&mut self) {
        let mut identity = Vec::new();
        let mut joins = String::new();
        let mut seen = BTreeSet::from([self.root.name.clone()]);
        let mut current = self.root;
        let mut alias = "t".to_string();
        for i in &current.identity {
            identity.push((i.identifier.clone(), format!("t.\"{}\"::text", i.column)));
        }
        for depth in 0..MAX_CHAIN {
            let parent = self.map.tables.iter().find_map(|p| {
                p.relations
                    .iter()
                    .find(|r| r.table == current.name && r.on_erase == OnErase::Cascade)
                    .map(|r| (p, r))
            });
            let Some((p, r)) = parent else { break };
            if !seen.insert(p.name.clone()) {
                break;
            }
            let a = format!("a{depth}");
            let key = r.parent_key.as_deref().unwrap_or(&p.primary_key);
            joins.push_str(&format!(
                " LEFT JOIN {} AS {a} ON {a}.\"{key}\" = {alias}.\"{}\"",
                quoted(&p.name),
                r.foreign_key
            ));
            for i in &p.identity {
                identity.push((i.identifier.clone(), format!("{a}.\"{}\"::text", i.column)));
            }
            current = p;
            alias = a;
        }
        identity.truncate(MAX_IDENTITY * 2);
        self.identity = identity;
        self.joins = joins;
    }

    /// Checks the tables and columns the run uses; returns the SQL type of the root's key.
    async fn check_catalog(&self, client: &Client) -> Result<String, WorkerError> {
        let mut tables: Vec<&Table> = vec![self.root];
        tables.extend(self.ops.iter().map(|o| o.table));
        for t in tables {
            let rows = client
                .query(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                     FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                    &[&quoted(&t.name)],
                )
                .await
                .map_err(|e| db_error("reading the catalog", e))?;
            let columns: BTreeMap<String, String> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            if columns.is_empty() {
                return Err(WorkerError::new(
                    "MissingTable",
                    format!(
                        "table {} in the data map does not exist in the database (or the connection's role cannot see it)",
                        t.name
                    ),
                ));
            }
            let mut needed: Vec<(&str, String)> = super::sql::referenced_columns(self.map, t);
            if t.name == self.root.name {
                needed.push((self.run.age_column.as_str(), "the rule's ageColumn".into()));
            }
            for (col, used_by) in needed {
                if !columns.contains_key(col) {
                    return Err(WorkerError::new(
                        "MissingColumn",
                        format!(
                            "table {} has no column {col:?} (named by {used_by})",
                            t.name
                        ),
                    ));
                }
            }
        }
        let rows = client
            .query(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attname = $2",
                &[&quoted(&self.root.name), &self.root.primary_key],
            )
            .await
            .map_err(|e| db_error("reading the catalog", e))?;
        rows.first().map(|r| r.get::<_, String>(0)).ok_or_else(|| {
            WorkerError::new(
                "MissingColumn",
                format!(
                    "table {} has no primary key column {:?}",
                    self.root.name, self.root.primary_key
                ),
            )
        })
    }

    /// The statements for every batch shape. `key_type` comes from the catalog
    /// (`format_type`), never from input.
    fn statements(&self, key_type: &str) -> Statements {
        let name = quoted(&self.root.name);
        let pk = &self.root.primary_key;
        let age = &self.run.age_column;
        let n = self.run.batch_size;
        let expired = format!("t.\"{age}\" < $1::timestamptz");
        let batch = |extra: &str| {
            format!(
                "SELECT t.\"{pk}\" FROM {name} AS t WHERE {expired}{extra} ORDER BY t.\"{pk}\" LIMIT {n}"
            )
        };
        let after = format!(" AND t.\"{pk}\" > $2::{key_type}");
        let keys = format!(
            "SELECT t.\"{pk}\" FROM {name} AS t WHERE t.\"{pk}\" = ANY($2::{key_type}[]) AND {expired}"
        );
        let what = format!(
            "{} rows of {}",
            if self.run.dry_run {
                "counting"
            } else {
                "processing"
            },
            self.root.name
        );
        let stmt = |b: String| Statement::new(self.with_batch(&b), what.clone());
        let idents: Vec<&str> = self.identity.iter().map(|(_, e)| e.as_str()).collect();
        let scan = |extra: &str| {
            Statement::new(
                format!(
                    "SELECT t.\"{pk}\"::text{}{} FROM {name} AS t{} WHERE {expired}{extra} ORDER BY t.\"{pk}\" LIMIT {n}",
                    if idents.is_empty() { "" } else { ", " },
                    idents.join(", "),
                    self.joins
                ),
                format!("reading expired rows of {}", self.root.name),
            )
        };
        Statements {
            ranged: Statement::new(self.with_range(), what.clone()),
            first: stmt(batch("")),
            next: stmt(batch(&after)),
            keys: stmt(keys),
            scan_first: scan(""),
            scan_next: scan(&after),
        }
    }

    /// `WITH b AS (<batch>), c0 AS (…), … SELECT counts`: one statement per batch.
    fn with_batch(&self, batch: &str) -> String {
        let pk = &self.root.primary_key;
        let dry = self.run.dry_run;
        let mut ctes = vec![format!("b AS ({batch})")];
        let mut counts = vec![
            "(SELECT count(*) FROM b)".to_string(),
            format!("(SELECT b.\"{pk}\"::text FROM b ORDER BY b.\"{pk}\" DESC LIMIT 1)"),
        ];
        for (i, o) in self.ops.iter().enumerate() {
            ctes.push(format!("c{i} AS ({})", self.sub_statement(o)));
            counts.push(format!("(SELECT count(*) FROM c{i})"));
        }
        let root = quoted(&self.root.name);
        let age = &self.run.age_column;
        let root_body = if dry {
            "SELECT 1 FROM b".to_string()
        } else {
            match self.root_op {
                // The age is checked again on the row itself: one updated since the batch was
                // read is left alone.
                Op::Delete => format!(
                    "DELETE FROM {root} AS t USING b WHERE t.\"{pk}\" = b.\"{pk}\" AND t.\"{age}\" < $1::timestamptz RETURNING 1"
                ),
                _ => format!(
                    "UPDATE {root} AS t SET {} FROM b WHERE t.\"{pk}\" = b.\"{pk}\" AND t.\"{age}\" < $1::timestamptz RETURNING 1",
                    anonymise_assignments(self.root)
                ),
            }
        };
        ctes.push(format!("r AS ({root_body})"));
        counts.push("(SELECT count(*) FROM r)".into());
        format!("WITH {} SELECT {}", ctes.join(", "), counts.join(", "))
    }

    /// Block-range mode (deletes only): the batch is the expired rows of a range of pages,
    /// deleted in one pass over those pages like a plain `DELETE` (a TID range scan), their
    /// keys returned for the related tables.
    fn with_range(&self) -> String {
        let pk = &self.root.primary_key;
        let age = &self.run.age_column;
        let root = quoted(&self.root.name);
        let keyed = format!(
            "DELETE FROM {root} AS t WHERE t.ctid >= $2::tid AND t.ctid < $5::tid AND t.\"{age}\" < $1::timestamptz"
        );
        if self.ops.is_empty() {
            // Nothing hangs off the rows: a plain DELETE, its row count from the command tag
            // (a data-modifying WITH costs about twice as much per row).
            return format!(
                "DELETE FROM {root} AS t WHERE t.ctid >= $2::tid AND t.ctid < $5::tid AND t.\"{age}\" < $1::timestamptz"
            );
        }
        let keyed = format!("{keyed} RETURNING t.\"{pk}\"");
        let mut ctes = vec![
            format!("r AS ({keyed})"),
            format!("b AS (SELECT r.\"{pk}\" FROM r)"),
        ];
        let mut counts = vec!["(SELECT count(*) FROM r)".to_string(), "NULL::text".into()];
        for (i, o) in self.ops.iter().enumerate() {
            ctes.push(format!("c{i} AS ({})", self.sub_statement(o)));
            counts.push(format!("(SELECT count(*) FROM c{i})"));
        }
        counts.push("(SELECT count(*) FROM r)".into());
        format!("WITH {} SELECT {}", ctes.join(", "), counts.join(", "))
    }

    /// The sub-statement of a related table (a `SELECT` in a dry run).
    fn sub_statement(&self, o: &SubOp) -> String {
        let (t, cond) = (o.table, &o.cond);
        let name = quoted(&t.name);
        if self.run.dry_run {
            return format!("SELECT 1 FROM {name} AS t WHERE {cond}");
        }
        match o.op {
            Op::Delete => format!("DELETE FROM {name} AS t WHERE {cond} RETURNING 1"),
            Op::Anonymise => format!(
                "UPDATE {name} AS t SET {} WHERE {cond} RETURNING 1",
                anonymise_assignments(t)
            ),
            Op::Detach => format!(
                "UPDATE {name} AS t SET \"{}\" = NULL WHERE {cond} RETURNING 1",
                o.set_null.as_deref().unwrap_or_default()
            ),
        }
    }

    /// Adds one batch's counts to the report.
    fn add(&self, report: &mut RetentionReport, c: &Counts, held: u64) {
        let dry = self.run.dry_run;
        let root_affected = c.ops.last().copied().unwrap_or_default();
        let e = report.tables.entry(self.root.name.clone()).or_default();
        e.matched += c.batch + held;
        e.held += held;
        if !dry {
            e.affected += root_affected;
        }
        for (o, n) in self.ops.iter().zip(&c.ops) {
            let e = report.tables.entry(o.table.name.clone()).or_default();
            match o.op {
                Op::Detach => {
                    if !dry {
                        e.detached += n;
                    }
                }
                _ => {
                    e.matched += n;
                    if !dry {
                        e.affected += n;
                    }
                }
            }
        }
    }
}

/// `col = …` assignments of a table's anonymisation; `$3` is the mask, `$4` the salt.
fn anonymise_assignments(t: &Table) -> String {
    anonymise_sets(t)
        .unwrap_or_default()
        .iter()
        .map(|(col, s)| match s {
            AnonymiseStrategy::Null => format!("{col} = NULL"),
            AnonymiseStrategy::Mask => format!("{col} = $3"),
            AnonymiseStrategy::Hash => {
                format!("{col} = encode(sha256(convert_to($4 || t.{col}::text, 'UTF8')), 'hex')")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table name validated in [`Sweep::new`].
fn quoted(name: &str) -> String {
    quote_table(name).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> DataMap {
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/crm/datasystem.yaml"
        ))
        .unwrap();
        let spec: crate::api::DataSystemSpec = serde_yaml_ng::from_str(&yaml).unwrap();
        spec.data_map.unwrap()
    }

    fn run(table: &str, action: RetentionAction, dry_run: bool) -> RunSpec {
        RunSpec {
            table: table.into(),
            age_column: "created_at".into(),
            cutoff: "2024-01-01T00:00:00Z".parse().unwrap(),
            action,
            dry_run,
            batch_size: 100,
            scheduled: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn purge_cascades_children_first_and_detaches() {
        let m = map();
        let r = run("crm.contacts", RetentionAction::Purge, false);
        let s = Sweep::new(&m, &r).unwrap();
        let text = s.statements("bigint").next.text;
        assert!(text.starts_with("WITH b AS (SELECT t.\"id\" FROM \"crm\".\"contacts\" AS t WHERE t.\"created_at\" < $1::timestamptz AND t.\"id\" > $2::bigint ORDER BY t.\"id\" LIMIT 100)"), "{text}");
        // Recordings (grandchildren) go through calls; deals are unlinked, not deleted.
        assert!(text.contains("DELETE FROM \"crm\".\"call_recordings\" AS t WHERE (t.\"call_id\" IN (SELECT s1.\"id\" FROM \"crm\".\"calls\" AS s1 WHERE (s1.\"contact_id\" IN (SELECT b.\"id\" FROM b))))"), "{text}");
        assert!(text.contains("UPDATE \"crm\".\"deals\" AS t SET \"contact_id\" = NULL WHERE t.\"contact_id\" IN (SELECT b.\"id\" FROM b)"), "{text}");
        assert!(
            text.contains("DELETE FROM \"crm\".\"contacts\" AS t USING b"),
            "{text}"
        );
        assert!(!text.contains("DELETE FROM \"crm\".\"deals\""));
        let recordings = text.find("call_recordings\" AS t").unwrap();
        let calls = text.find("DELETE FROM \"crm\".\"calls\"").unwrap();
        assert!(recordings < calls, "children first");
    }

    #[test]
    fn dry_run_only_selects_and_anonymise_only_updates() {
        let m = map();
        let r = run("crm.contacts", RetentionAction::Purge, true);
        let text = Sweep::new(&m, &r).unwrap().statements("bigint").first.text;
        assert!(
            !text.contains("DELETE") && !text.contains("UPDATE"),
            "{text}"
        );
        let r = run("crm.tickets", RetentionAction::Purge, false);
        let text = Sweep::new(&m, &r).unwrap().statements("bigint").first.text;
        // Tickets purge by anonymising (their data map says so).
        assert!(text.contains("UPDATE \"crm\".\"tickets\" AS t SET \"body\" = NULL, \"requester_email\" = encode(sha256(convert_to($4 || t.\"requester_email\"::text, 'UTF8')), 'hex'), \"requester_name\" = $3 FROM b"), "{text}");
        let r = run("crm.contacts", RetentionAction::Anonymise, false);
        let text = Sweep::new(&m, &r).unwrap().statements("bigint").first.text;
        assert!(!text.contains("DELETE"), "{text}");
    }

    #[test]
    fn identity_is_read_up_the_parent_chain() {
        let m = map();
        let r = run("crm.call_recordings", RetentionAction::Purge, false);
        let s = Sweep::new(&m, &r).unwrap();
        assert_eq!(
            s.joins,
            " LEFT JOIN \"crm\".\"calls\" AS a0 ON a0.\"id\" = t.\"call_id\" LEFT JOIN \"crm\".\"contacts\" AS a1 ON a1.\"id\" = a0.\"contact_id\" LEFT JOIN \"crm\".\"companies\" AS a2 ON a2.\"id\" = a1.\"company_id\""
        );
        let kinds: Vec<String> = s.identity.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(kinds, ["email", "userId", "phone", "customerId"]);
    }

    #[test]
    fn holds_match_any_subset_of_the_row_identity() {
        let salt = b"0123456789abcdef";
        let identity = vec![
            (IdentifierKind::Email, "e".to_string()),
            (IdentifierKind::UserId, "u".to_string()),
        ];
        let row = vec![
            Some("Jane@Example.com".to_string()),
            Some("u-1".to_string()),
        ];
        let only_email = IdentifierSet {
            email: Some("jane@example.com".into()),
            ..Default::default()
        };
        let both = IdentifierSet {
            email: Some("jane@example.com".into()),
            user_id: Some("u-1".into()),
            ..Default::default()
        };
        let with_phone = IdentifierSet {
            phone: Some("+1 555".into()),
            ..both.clone()
        };
        for (set, held) in [(only_email, true), (both, true), (with_phone, false)] {
            let holds = BTreeSet::from([set.digest(salt)]);
            assert_eq!(is_held(&identity, &row, salt, &holds), held, "{set:?}");
        }
        let holds = BTreeSet::from([IdentifierSet {
            email: Some("someone@else.com".into()),
            ..Default::default()
        }
        .digest(salt)]);
        assert!(!is_held(&identity, &row, salt, &holds));
    }

    #[test]
    fn tasks_are_recognised_and_debug_redacts() {
        assert!(is_retention_task(br#"{"step":"RetentionRun"}"#));
        assert!(!is_retention_task(br#"{"step":"Purge"}"#));
        assert!(!is_retention_task(b"not json"));
    }
}
