//! The SQLite connector, for single-machine use: the same data-map semantics as the
//! PostgreSQL connector, on a database file.
//!
//! Statements come from the same [`Finder`] as PostgreSQL's, in its SQLite dialect: one
//! statement per table, the subject's rows found inside the database through `WITH` clauses,
//! identifier values bound as parameters (SQLite reads the `$n` placeholders as named
//! parameters). Everything for one subject runs in one transaction (`BEGIN IMMEDIATE` for
//! changing steps, so the write lock is taken up front; a deferred read transaction for an
//! export, one snapshot across tables). rusqlite is blocking, so every call runs on tokio's
//! blocking pool and the connection travels between calls (`Db::call`).
//!
//! # Connection URL
//!
//! `sqlite:///abs/path/app.db` names an absolute path; `sqlite://relative/app.db` a path
//! relative to the worker's working directory. The file must exist (a missing file fails
//! as DatabaseNotFound instead of silently creating an empty database); no query options.
//!
//! # Differences from PostgreSQL
//!
//! - Export rows are `json_object(…)` of every column in table order (SQLite has no
//!   `row_to_json`); BLOB values are exported as upper-case hex strings.
//! - Foreign keys are enforced during the run (`PRAGMA foreign_keys = ON`), so a table outside
//!   the data map that references the subject's rows blocks a purge, as in PostgreSQL.
//! - Values from the data map (restrict, rectify) are bound as text and take the column's
//!   affinity; `true`/`false` become 1/0 in columns declared BOOLEAN.
//! - DeletedAt timestamps are written as RFC 3339 UTC text with milliseconds.
//! - A lock held by someone else is waited for up to 30s, then fails as Conflict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::WorkerError;
use super::output::Output;
use super::postgres::{MASK, Options};
use super::quarantine::{Archive, LineSink, Quarantine, VERIFICATION_KEY};
use super::sql::{
    Dialect, Finder, Hide, Reach, SQLITE_PHONE_FN, Sql, anonymise_sets, quote_ident, quote_table,
    rectify_plan, referenced_columns, restrict_values, soft_delete_plan,
};
use super::task::{Manifest, TableCount, Task};
use crate::api::datamap::{AnonymiseStrategy, DataMap, PurgeMode, Table};
use crate::plan::jobs::JobStep;

/// The scheme of a SQLite connection URL.
pub const SCHEME: &str = "sqlite://";
/// SQLite function (registered on each connection) returning the lower-case hex SHA-256 of
/// its text argument, for the Hash anonymisation.
const SHA256_FN: &str = "privacy_operator_sha256";
/// How long a statement waits for another connection's lock before failing as Conflict.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Export bytes handed from the database thread to the file writer at a time.
const CHUNK: usize = 64 * 1024;

/// The database file a connection URL names.
pub fn database_path(url: &str) -> Result<PathBuf, WorkerError> {
    let rest = url.strip_prefix(SCHEME).ok_or_else(|| {
        WorkerError::invalid(
            "a SQLite connection URL starts with sqlite:// (sqlite:///abs/path.db or sqlite://relative/path.db)",
        )
    })?;
    if rest.contains('?') {
        return Err(WorkerError::invalid(
            "SQLite connection URLs take no query options: use sqlite:///abs/path.db",
        ));
    }
    if rest.is_empty() || rest.ends_with('/') {
        return Err(WorkerError::invalid(
            "the SQLite connection URL names no database file: use sqlite:///abs/path.db",
        ));
    }
    Ok(PathBuf::from(rest))
}

/// Runs `task` (an SQL task for a SQLite system) and fills `manifest`.
pub async fn run(
    task: &Task,
    map: &DataMap,
    output: &Output,
    options: &Options,
    manifest: &mut Manifest,
) -> Result<(), WorkerError> {
    let finder = Finder::with_dialect(map, &task.identifiers, Dialect::Sqlite)
        .map_err(WorkerError::finder)?;
    let url = task.connection.as_deref().ok_or_else(|| {
        WorkerError::invalid(
            "the task has no connection URL (sqlite:///path.db) for the SQLite system",
        )
    })?;
    let path = database_path(url)?;
    let read_only = task.step == JobStep::Export;
    let mut db = Db::open(path, read_only).await?;
    let catalog = db.catalog(map).await?;
    let mut run = Run {
        finder: &finder,
        catalog: &catalog,
        options,
        manifest,
    };
    match task.step {
        JobStep::Export => run.export(&mut db, output).await,
        JobStep::SoftDelete => run.soft_delete(&mut db, task).await,
        JobStep::Restore => run.restore(&mut db, task).await,
        JobStep::Purge => run.purge(&mut db, task).await,
        JobStep::Restrict => run.restrict(&mut db, &task.purposes).await,
        JobStep::Rectify => run.rectify(&mut db, task).await,
        JobStep::ThirdPartyPurge => Err(WorkerError::unsupported(
            "a third-party purge is done by the HTTP connector, not by an SQL system",
        )),
        JobStep::RetentionRun => Err(WorkerError::invalid(
            "a retention run comes as a retention task (see worker::retention), not a request task",
        )),
        JobStep::ConsentSweep | JobStep::LedgerReplay => Err(WorkerError::unsupported(
            "the consent sweep and the ledger replay support PostgreSQL systems only",
        )),
    }
}

/// Columns of every table in the data map, in table order, with their declared types.
type Catalog = BTreeMap<String, Vec<(String, String)>>;

/// A connection that moves to the blocking pool for each call. A call that fails (or whose
/// future is dropped) may lose it; dropping a connection rolls back its open transaction.
struct Db {
    conn: Option<Connection>,
}

impl Db {
    async fn open(path: PathBuf, read_only: bool) -> Result<Db, WorkerError> {
        let conn = tokio::task::spawn_blocking(move || open(&path, read_only))
            .await
            .map_err(join_error)??;
        Ok(Db { conn: Some(conn) })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<R, F>(&mut self, f: F) -> Result<R, WorkerError>
    where
        F: FnOnce(&mut Connection) -> Result<R, WorkerError> + Send + 'static,
        R: Send + 'static,
    {
        let mut conn = self.take()?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&mut conn);
            (conn, r)
        })
        .await
        .map_err(join_error)?;
        self.conn = Some(conn);
        result
    }

    fn take(&mut self) -> Result<Connection, WorkerError> {
        self.conn.take().ok_or_else(|| {
            WorkerError::new(
                "DatabaseError",
                "the SQLite connection was lost after an earlier failure",
            )
        })
    }

    /// Reads the columns of every mapped table and checks that each table and column the
    /// data map names exists, so a typo is reported by name before anything runs.
    async fn catalog(&mut self, map: &DataMap) -> Result<Catalog, WorkerError> {
        let names: Vec<String> = map.tables.iter().map(|t| t.name.clone()).collect();
        let catalog = self
            .call(move |conn| {
                let mut out = Catalog::new();
                let mut stmt = conn
                    .prepare("SELECT name, type FROM pragma_table_info($1, $2) ORDER BY cid")
                    .map_err(|e| db_error("reading the catalog", e))?;
                for name in names {
                    let (schema, table) = match name.split_once('.') {
                        Some((s, t)) => (s.to_string(), t.to_string()),
                        None => ("main".to_string(), name.clone()),
                    };
                    let cols = stmt
                        .query_map([&table, &schema], |r| Ok((r.get(0)?, r.get(1)?)))
                        .and_then(|rows| rows.collect::<Result<Vec<(String, String)>, _>>())
                        .map_err(|e| db_error("reading the catalog", e))?;
                    out.insert(name, cols);
                }
                Ok(out)
            })
            .await?;
        for table in &map.tables {
            let have = catalog
                .get(&table.name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if have.is_empty() {
                return Err(WorkerError::new(
                    "MissingTable",
                    format!(
                        "table {} in the data map does not exist in the SQLite database",
                        table.name
                    ),
                ));
            }
            for (col, used_by) in referenced_columns(map, table) {
                // SQLite names are case-insensitive, quoted or not.
                if !have.iter().any(|(c, _)| c.eq_ignore_ascii_case(col)) {
                    return Err(WorkerError::new(
                        "MissingColumn",
                        format!(
                            "table {} has no column {col:?} (named by the data map's {used_by})",
                            table.name
                        ),
                    ));
                }
            }
        }
        Ok(catalog)
    }
}

fn open(path: &Path, read_only: bool) -> Result<Connection, WorkerError> {
    // Checked first: SQLite would otherwise report only "unable to open database file".
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(WorkerError::new(
                "DatabaseNotFound",
                format!("{} is not a SQLite database file", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(WorkerError::new(
                "DatabaseNotFound",
                format!(
                    "the SQLite database {} does not exist; check the path in the connection Secret (sqlite:///abs/path.db) and the volume it lives on",
                    path.display()
                ),
            ));
        }
        Err(e) => {
            return Err(WorkerError::new(
                "PermissionDenied",
                format!("cannot access the SQLite database {}: {e}", path.display()),
            ));
        }
    }
    let mode = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| db_error(&format!("opening {}", path.display()), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db_error("setting the busy timeout", e))?;
    // Not a database (or encrypted): the first read says so.
    conn.execute_batch("PRAGMA foreign_keys = ON; SELECT count(*) FROM sqlite_schema;")
        .map_err(|e| db_error(&format!("opening {}", path.display()), e))?;
    register_functions(&conn).map_err(|e| db_error("registering functions", e))?;
    Ok(conn)
}

/// The functions the SQLite dialect of the statements calls.
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function(SQLITE_PHONE_FN, 1, flags, |ctx| {
        let v: Option<String> = ctx.get(0)?;
        Ok(v.map(|s| {
            s.chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect::<String>()
        }))
    })?;
    conn.create_scalar_function(SHA256_FN, 1, flags, |ctx| {
        let v: Option<String> = ctx.get(0)?;
        Ok(v.map(|s| hex::encode(Sha256::digest(s.as_bytes()))))
    })
}

fn join_error(e: tokio::task::JoinError) -> WorkerError {
    WorkerError::new(
        "DatabaseError",
        format!("the SQLite call did not finish: {e}"),
    )
}

/// Turns a rusqlite error into a reason and a message. SQLite's messages name tables,
/// columns and constraints, never stored values, so they are kept.
fn db_error(context: &str, e: rusqlite::Error) -> WorkerError {
    let text = e.to_string();
    let code = e.sqlite_error_code();
    let reason = match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => "Conflict",
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => "PermissionDenied",
        Some(ErrorCode::CannotOpen) => "DatabaseNotFound",
        Some(ErrorCode::NotADatabase) => "DatabaseError",
        _ if text.starts_with("no such table") => "MissingTable",
        _ if text.starts_with("no such column") => "MissingColumn",
        _ => "DatabaseError",
    };
    let message = if text.contains("FOREIGN KEY constraint failed") {
        // SQLite does not name the constraint; the fix is the same as for PostgreSQL.
        "rows are still referenced through a foreign key (FOREIGN KEY constraint failed); add the referencing table to the data map as a relation, or make the constraint ON DELETE CASCADE / SET NULL".to_string()
    } else if code == Some(ErrorCode::NotADatabase) {
        format!("{text}: the connection URL does not name a SQLite database")
    } else {
        text
    };
    WorkerError::new(reason, format!("{context}: {message}"))
}

/// Prepares `sql` and binds its `$n` parameters by name (SQLite numbers named parameters
/// in order of appearance, which is not the order they were bound in).
fn prepare<'c>(
    conn: &'c Connection,
    what: &str,
    sql: &Sql,
) -> Result<rusqlite::Statement<'c>, WorkerError> {
    let mut stmt = conn.prepare(&sql.text).map_err(|e| db_error(what, e))?;
    for (i, value) in sql.params.iter().enumerate() {
        let name = format!("${}", i + 1);
        if let Some(idx) = stmt.parameter_index(&name).map_err(|e| db_error(what, e))? {
            stmt.raw_bind_parameter(idx, value)
                .map_err(|e| db_error(what, e))?;
        }
    }
    Ok(stmt)
}

fn execute(conn: &Connection, what: &str, sql: &Sql) -> Result<u64, WorkerError> {
    let mut stmt = prepare(conn, what, sql)?;
    let n = stmt.raw_execute().map_err(|e| db_error(what, e))?;
    Ok(n as u64)
}

fn count(conn: &Connection, what: &str, sql: &Sql) -> Result<u64, WorkerError> {
    let mut stmt = prepare(conn, what, sql)?;
    let mut rows = stmt.raw_query();
    let n: i64 = match rows.next().map_err(|e| db_error(what, e))? {
        Some(row) => row.get(0).map_err(|e| db_error(what, e))?,
        None => 0,
    };
    Ok(n.max(0) as u64)
}

fn begin(conn: &Connection, write: bool) -> Result<(), WorkerError> {
    let sql = if write { "BEGIN IMMEDIATE" } else { "BEGIN" };
    conn.execute_batch(sql)
        .map_err(|e| db_error("starting the transaction", e))
}

fn commit(conn: &Connection) -> Result<(), WorkerError> {
    conn.execute_batch("COMMIT")
        .map_err(|e| db_error("committing", e))
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Runs `f` in a transaction: committed when it succeeds, rolled back when it fails.
fn in_transaction<R>(
    conn: &Connection,
    write: bool,
    f: impl FnOnce(&Connection) -> Result<R, WorkerError>,
) -> Result<R, WorkerError> {
    begin(conn, write)?;
    match f(conn) {
        Ok(r) => {
            if let Err(e) = commit(conn) {
                rollback(conn);
                return Err(e);
            }
            Ok(r)
        }
        Err(e) => {
            rollback(conn);
            Err(e)
        }
    }
}

/// One step of a changing run, prepared on the async side and run in one transaction.
enum Op {
    /// A data-changing statement; its row count is added to `table` (as detached rows when
    /// `detached`).
    Exec {
        what: String,
        sql: Sql,
        table: String,
        detached: bool,
    },
    /// A count of rows still identifying the subject, which must be zero (purge).
    Verify { sql: Sql, table: String },
}

/// Row counts of a run of [`Op`]s.
#[derive(Default)]
struct Counts {
    tables: BTreeMap<String, TableCount>,
    remaining: BTreeMap<String, u64>,
}

/// Runs `ops` in order on an open transaction, stopping as if killed after
/// `abort_after` data-changing statements.
fn run_ops(
    conn: &Connection,
    ops: &[Op],
    abort_after: Option<usize>,
) -> Result<Counts, WorkerError> {
    let mut counts = Counts::default();
    let mut statements = 0;
    for op in ops {
        match op {
            Op::Exec {
                what,
                sql,
                table,
                detached,
            } => {
                if let Some(max) = abort_after
                    && statements >= max
                {
                    return Err(WorkerError::new(
                        "Aborted",
                        format!(
                            "aborted before {what} after {max} statements; the transaction was rolled back"
                        ),
                    ));
                }
                let n = execute(conn, what, sql)?;
                statements += 1;
                let entry = counts.tables.entry(table.clone()).or_default();
                if *detached {
                    entry.detached += n;
                } else {
                    entry.rows += n;
                }
            }
            Op::Verify { sql, table } => {
                let left = count(conn, &format!("verifying {table}"), sql)?;
                counts.remaining.insert(table.clone(), left);
                if left > 0 {
                    return Err(WorkerError::new(
                        "VerificationFailed",
                        format!(
                            "{left} rows of {table} still identify the subject after the purge statement; rolled back"
                        ),
                    ));
                }
            }
        }
    }
    Ok(counts)
}

struct Run<'a, 'm> {
    finder: &'a Finder<'a>,
    catalog: &'a Catalog,
    options: &'a Options,
    manifest: &'m mut Manifest,
}

impl Run<'_, '_> {
    fn merge(&mut self, counts: Counts) {
        for (table, c) in counts.tables {
            let entry = self.manifest.tables.entry(table).or_default();
            entry.rows += c.rows;
            entry.detached += c.detached;
        }
    }

    /// Runs `ops` in one write transaction and records their counts.
    async fn apply(&mut self, db: &mut Db, ops: Vec<Op>) -> Result<Counts, WorkerError> {
        let abort = self.options.abort_after_statements;
        let mut counts = db
            .call(move |conn| in_transaction(conn, true, |c| run_ops(c, &ops, abort)))
            .await?;
        let remaining = std::mem::take(&mut counts.remaining);
        self.merge(counts);
        Ok(Counts {
            remaining,
            ..Counts::default()
        })
    }

    async fn export(&mut self, db: &mut Db, output: &Output) -> Result<(), WorkerError> {
        db.call(|conn| begin(conn, false)).await?;
        let result = self.export_tables(db, output).await;
        match result {
            Ok(()) => db.call(|conn| commit(conn)).await?,
            Err(e) => {
                let _ = db
                    .call(|conn| {
                        rollback(conn);
                        Ok(())
                    })
                    .await;
                return Err(e);
            }
        }
        self.manifest.message = format!(
            "exported {} rows from {} tables",
            self.manifest.total_rows(),
            self.manifest.files.len()
        );
        Ok(())
    }

    async fn export_tables(&mut self, db: &mut Db, output: &Output) -> Result<(), WorkerError> {
        for table in self.finder.order() {
            if !self.finder.reachable(table, Reach::All) {
                self.manifest
                    .tables
                    .insert(table.name.clone(), TableCount::default());
                continue;
            }
            let columns = self
                .catalog
                .get(&table.name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let sql = export_statement(self.finder, table, columns);
            let what = format!("exporting {}", table.name);
            let mut file = output.ndjson(&format!("{}.ndjson", table.name)).await?;
            if let Err(e) = stream_lines(db, what, sql, &mut file).await {
                // A half-written file is never published.
                file.abort().await;
                return Err(e);
            }
            file.publish_into(self.manifest, &table.name).await?;
        }
        Ok(())
    }

    /// The DeletedAt statement of a soft delete (`hide`) or restore.
    fn deleted_at(&self, table: &Table, column: &str, hide: bool) -> Result<Op, WorkerError> {
        let col = quote_ident(column).map_err(|e| WorkerError::invalid(e.to_string()))?;
        let name = quoted(&table.name);
        let sql = self.finder.statement(table, Reach::Owned, |_, pred| {
            if hide {
                // Keeps the first timestamp when a soft delete runs again.
                format!(
                    "UPDATE {name} AS t SET {col} = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE {pred} AND t.{col} IS NULL"
                )
            } else {
                format!("UPDATE {name} AS t SET {col} = NULL WHERE {pred} AND t.{col} IS NOT NULL")
            }
        });
        let verb = if hide { "soft-deleting" } else { "restoring" };
        Ok(Op::Exec {
            what: format!("{verb} {}", table.name),
            sql,
            table: table.name.clone(),
            detached: false,
        })
    }

    /// SoftDelete: DeletedAt tables get their timestamp; Quarantine tables are archived
    /// (rows, and the links of their Detach children), and only once the archive is stored
    /// are the children unlinked and the rows deleted, all in one transaction.
    async fn soft_delete(&mut self, db: &mut Db, task: &Task) -> Result<(), WorkerError> {
        let plan = soft_delete_plan(self.finder)?;
        let quarantined: Vec<&Table> = plan
            .iter()
            .filter(|(_, how)| *how == Hide::Quarantine)
            .map(|(t, _)| *t)
            .collect();
        let quarantine = if quarantined.is_empty() {
            None
        } else {
            Some(Quarantine::from_task(task, true)?)
        };
        let mut ops = Vec::new();
        for (table, how) in &plan {
            match how {
                Hide::DeletedAt(column) => ops.push(self.deleted_at(table, column, true)?),
                Hide::Quarantine => {
                    for (child, sql) in self.finder.detach(table) {
                        ops.push(Op::Exec {
                            what: format!("unlinking {child} from {}", table.name),
                            sql,
                            table: child,
                            detached: true,
                        });
                    }
                    let name = quoted(&table.name);
                    ops.push(Op::Exec {
                        what: format!("quarantining {}", table.name),
                        sql: self.finder.statement(table, Reach::Owned, |_, pred| {
                            format!("DELETE FROM {name} AS t WHERE {pred}")
                        }),
                        table: table.name.clone(),
                        detached: false,
                    });
                }
            }
        }
        db.call(|conn| begin(conn, true)).await?;
        let mut archived = None;
        let result = async {
            if let Some(q) = &quarantine {
                archived = self.archive(db, q, &quarantined).await?;
            }
            let abort = self.options.abort_after_statements;
            let counts = db.call(move |conn| run_ops(conn, &ops, abort)).await?;
            db.call(|conn| commit(conn)).await?;
            Ok::<_, WorkerError>(counts)
        }
        .await;
        let counts = match result {
            Ok(counts) => counts,
            Err(e) => {
                let _ = db
                    .call(|conn| {
                        rollback(conn);
                        Ok(())
                    })
                    .await;
                if let (Some(q), Some(key)) = (&quarantine, archived) {
                    // Nothing was deleted: the archive would only be a stray copy.
                    if let Err(e) = q.remove(&[key]).await {
                        tracing::warn!(error = %e, "could not remove the restore archive of a failed soft delete");
                    }
                }
                return Err(e);
            }
        };
        self.merge(counts);
        self.manifest.message = format!("soft-deleted {} rows", self.manifest.total_rows());
        if !quarantined.is_empty() {
            self.manifest
                .message
                .push_str(" (Quarantine tables into an encrypted restore archive)");
        }
        Ok(())
    }

    /// Streams the subject's rows of the `tables` and the links of their Detach children
    /// into a new archive; returns its key once stored, or None when there was nothing.
    async fn archive(
        &self,
        db: &mut Db,
        q: &Quarantine,
        tables: &[&Table],
    ) -> Result<Option<String>, WorkerError> {
        let mut writer = q.writer().await?;
        let mut statements = Vec::new();
        for table in tables {
            let columns = self
                .catalog
                .get(&table.name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let row = row_object(columns, true);
            let name = quoted(&table.name);
            let pk = &table.primary_key;
            statements.push((
                format!("archiving {}", table.name),
                self.finder.statement(table, Reach::Owned, |sql, pred| {
                    let t = sql.bind(table.name.clone());
                    format!(
                        "SELECT json_object('table', {t}, 'row', {row}) FROM {name} AS t WHERE {pred} ORDER BY t.\"{pk}\""
                    )
                }),
            ));
            for (child, sql) in self.links(table) {
                statements.push((format!("archiving links of {child}"), sql));
            }
        }
        for (what, sql) in statements {
            if let Err(e) = stream_lines(db, what, sql, &mut writer).await {
                writer.abort().await;
                return Err(e);
            }
        }
        if writer.lines() == 0 {
            writer.abort().await;
            return Ok(None);
        }
        Ok(Some(writer.finish().await?))
    }

    /// Archive lines of the Detach children of `table` that point at the subject's rows.
    fn links(&self, table: &Table) -> Vec<(String, Sql)> {
        let map = self.finder.map();
        self.finder.detached(table, |sql, r, child, keys| {
            let child_pk = map
                .table(&r.table)
                .map_or("id", |t| t.primary_key.as_str());
            let fk = &r.foreign_key;
            let t = sql.bind(r.table.clone());
            let c = sql.bind(fk.clone());
            let p = sql.bind(child_pk);
            format!(
                "SELECT json_object('table', {t}, 'column', {c}, 'link', json_object({p}, t.\"{child_pk}\", {c}, t.\"{fk}\")) FROM {child} AS t WHERE t.\"{fk}\" IN ({keys}) ORDER BY t.\"{child_pk}\""
            )
        })
    }

    /// Restore: rows from the restore archives go back (parents first, rows already present
    /// skipped), then the Detach links, then DeletedAt columns are cleared; one transaction.
    /// The archives are deleted after the commit.
    async fn restore(&mut self, db: &mut Db, task: &Task) -> Result<(), WorkerError> {
        let plan = soft_delete_plan(self.finder)?;
        let uses_quarantine = plan.iter().any(|(_, how)| *how == Hide::Quarantine);
        let quarantine = if uses_quarantine || task.quarantine.is_some() {
            Some(Quarantine::from_task(task, uses_quarantine)?)
        } else {
            None
        };
        let archive = match &quarantine {
            Some(q) if uses_quarantine || task.quarantine_key.is_some() => {
                q.read(self.finder.map()).await?
            }
            _ => Archive::default(),
        };
        let mut ops = Vec::new();
        for table in self.finder.order() {
            let Some(rows) = archive.rows.get(&table.name) else {
                continue;
            };
            ops.push(Op::Exec {
                what: format!("restoring {} from quarantine", table.name),
                sql: self.insert_rows(table, rows)?,
                table: table.name.clone(),
                detached: false,
            });
        }
        for ((child, column), links) in &archive.links {
            let Some(table) = self.finder.map().table(child) else {
                continue;
            };
            ops.push(Op::Exec {
                what: format!("relinking {child}"),
                sql: relink(table, column, links)?,
                table: child.clone(),
                detached: true,
            });
        }
        for (table, how) in &plan {
            if let Hide::DeletedAt(column) = how {
                ops.push(self.deleted_at(table, column, false)?);
            }
        }
        self.apply(db, ops).await?;
        if let Some(q) = &quarantine {
            q.remove(&archive.keys).await?;
        }
        self.manifest.message = format!("restored {} rows", self.manifest.total_rows());
        Ok(())
    }

    /// `INSERT … SELECT` of archived rows (one JSON parameter) that are not present.
    fn insert_rows(&self, table: &Table, rows: &[serde_json::Value]) -> Result<Sql, WorkerError> {
        let columns = self
            .catalog
            .get(&table.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut names = Vec::new();
        let mut values = Vec::new();
        for (c, _) in columns {
            if c.contains(['"', '\'', '\\', '.']) {
                return Err(WorkerError::unsupported(format!(
                    "table {} has a column named {c:?}, which a quarantine restore cannot address",
                    table.name
                )));
            }
            names.push(format!("\"{c}\""));
            values.push(format!(
                "CASE json_type(r.value, '$.\"{c}\"') WHEN 'object' THEN unhex(json_extract(r.value, '$.\"{c}\".\"$hex\"')) ELSE json_extract(r.value, '$.\"{c}\"') END"
            ));
        }
        let json = serde_json::to_string(rows).map_err(|e| WorkerError::invalid(e.to_string()))?;
        let name = quoted(&table.name);
        let pk = &table.primary_key;
        let mut sql = Sql::default();
        let p = sql.bind(json);
        sql.text = format!(
            "INSERT INTO {name} ({}) SELECT {} FROM json_each({p}) AS r WHERE NOT EXISTS (SELECT 1 FROM {name} AS x WHERE x.\"{pk}\" = json_extract(r.value, '$.\"{pk}\"'))",
            names.join(", "),
            values.join(", ")
        );
        Ok(sql)
    }
    async fn purge(&mut self, db: &mut Db, task: &Task) -> Result<(), WorkerError> {
        let salt = task.hash_salt.as_deref().unwrap_or_default();
        let uses_quarantine = soft_delete_plan(self.finder)?
            .iter()
            .any(|(_, how)| *how == Hide::Quarantine);
        let quarantine = if uses_quarantine || task.quarantine.is_some() {
            Some(Quarantine::from_task(task, false)?)
        } else {
            None
        };
        let mut ops = Vec::new();
        let mut remaining = BTreeMap::new();
        let mut verify = Vec::new();
        for table in self.finder.reverse_order() {
            // Detach children lose their link before the parent rows go.
            for (child, sql) in self.finder.detach(table) {
                ops.push(Op::Exec {
                    what: format!("detaching {child} from {}", table.name),
                    sql,
                    table: child,
                    detached: true,
                });
            }
            let check = self.finder.remaining(table).map_err(WorkerError::finder)?;
            verify.push((table.name.clone(), check.clone()));
            if !self.finder.reachable(table, Reach::Owned) {
                self.manifest.tables.entry(table.name.clone()).or_default();
                remaining.insert(table.name.clone(), 0);
                continue;
            }
            let name = quoted(&table.name);
            let sql = match table.purge {
                PurgeMode::Delete => self.finder.statement(table, Reach::Owned, |_, pred| {
                    format!("DELETE FROM {name} AS t WHERE {pred}")
                }),
                PurgeMode::Anonymise => {
                    let sets = anonymise_sets(table)?;
                    self.finder.statement(table, Reach::Owned, |sql, pred| {
                        let sets: Vec<String> = sets
                            .iter()
                            .map(|(col, strategy)| match strategy {
                                AnonymiseStrategy::Null => format!("{col} = NULL"),
                                AnonymiseStrategy::Mask => format!("{col} = {}", sql.bind(MASK)),
                                AnonymiseStrategy::Hash => {
                                    format!("{col} = {SHA256_FN}({} || t.{col})", sql.bind(salt))
                                }
                            })
                            .collect();
                        format!("UPDATE {name} AS t SET {} WHERE {pred}", sets.join(", "))
                    })
                }
            };
            ops.push(Op::Exec {
                what: format!("purging {}", table.name),
                sql,
                table: table.name.clone(),
                detached: false,
            });
            // Checked now, while the parents that lead to this table still exist: after
            // they are gone a re-scan could not reach these rows any more.
            ops.push(Op::Verify {
                sql: check,
                table: table.name.clone(),
            });
        }
        let counts = self.apply(db, ops).await?;
        remaining.extend(counts.remaining);
        // And once more after commit, in a fresh read transaction: the evidence.
        let after = db
            .call(move |conn| {
                in_transaction(conn, false, |c| {
                    verify
                        .iter()
                        .map(|(table, sql)| {
                            Ok((table.clone(), count(c, &format!("verifying {table}"), sql)?))
                        })
                        .collect::<Result<Vec<_>, WorkerError>>()
                })
            })
            .await?;
        for (table, left) in after {
            let entry = remaining.entry(table).or_insert(0);
            *entry = (*entry).max(left);
        }
        if let Some(q) = quarantine {
            // The restore window is over: the archives go too, and must be gone.
            remaining.insert(VERIFICATION_KEY.to_string(), q.destroy().await?);
        }
        super::record_verification(
            self.manifest,
            remaining,
            "rows for the subject were found again after the purge committed (written concurrently?)",
        )?;
        self.manifest.message = format!(
            "purged {} rows; verification found no rows left",
            self.manifest.total_rows()
        );
        Ok(())
    }

    async fn restrict(&mut self, db: &mut Db, purposes: &[String]) -> Result<(), WorkerError> {
        let mut ops = Vec::new();
        for table in self.finder.order() {
            let set = restrict_values(table, purposes);
            if set.is_empty() || !self.finder.reachable(table, Reach::Owned) {
                continue;
            }
            ops.push(Op::Exec {
                what: format!("restricting {}", table.name),
                sql: self.update(table, &set)?,
                table: table.name.clone(),
                detached: false,
            });
        }
        self.apply(db, ops).await?;
        self.manifest.message = format!(
            "restricted {} rows for purposes {}",
            self.manifest.total_rows(),
            purposes.join(", ")
        );
        Ok(())
    }

    async fn rectify(&mut self, db: &mut Db, task: &Task) -> Result<(), WorkerError> {
        let per_table = rectify_plan(self.finder, &task.changes)?;
        let mut ops = Vec::new();
        // Children first: a change to a parent's identity column must not hide its children.
        for table in self.finder.reverse_order() {
            let Some(values) = per_table.get(table.name.as_str()) else {
                continue;
            };
            if !self.finder.reachable(table, Reach::Owned) {
                continue;
            }
            ops.push(Op::Exec {
                what: format!("rectifying {}", table.name),
                sql: self.update(table, values)?,
                table: table.name.clone(),
                detached: false,
            });
        }
        self.apply(db, ops).await?;
        self.manifest.message = format!("rectified {} rows", self.manifest.total_rows());
        Ok(())
    }

    /// `UPDATE … SET a = $n, … WHERE <subject>`, each value bound as text (booleans as 1/0
    /// in BOOLEAN columns; other text takes the column's affinity).
    fn update(&self, table: &Table, values: &BTreeMap<&str, &str>) -> Result<Sql, WorkerError> {
        let columns = self
            .catalog
            .get(&table.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut sets = Vec::new();
        for (col, value) in values {
            let q = quote_ident(col)
                .map_err(|e| WorkerError::invalid(format!("table {}: {e}", table.name)))?;
            let declared = columns
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(col))
                .map(|(_, t)| t.as_str())
                .unwrap_or_default();
            sets.push((q, sqlite_value(declared, value)));
        }
        let name = quoted(&table.name);
        Ok(self.finder.statement(table, Reach::Owned, |sql, pred| {
            let sets: Vec<String> = sets
                .into_iter()
                .map(|(q, v)| format!("{q} = {}", sql.bind(v)))
                .collect();
            format!("UPDATE {name} AS t SET {} WHERE {pred}", sets.join(", "))
        }))
    }
}

/// A data-map value for a column of the declared type: SQLite has no boolean type, and
/// applications store booleans as 1/0 in columns declared BOOLEAN.
fn sqlite_value(declared: &str, value: &str) -> String {
    if declared.to_ascii_uppercase().contains("BOOL") {
        if value.eq_ignore_ascii_case("true") {
            return "1".into();
        }
        if value.eq_ignore_ascii_case("false") {
            return "0".into();
        }
    }
    value.to_string()
}

/// The subject's rows of `table` as one JSON object per row, in primary-key order, with the
/// columns in table order (as PostgreSQL's `row_to_json`).
fn export_statement(finder: &Finder<'_>, table: &Table, columns: &[(String, String)]) -> Sql {
    let row = row_object(columns, false);
    let name = quoted(&table.name);
    let pk = &table.primary_key;
    finder.statement(table, Reach::All, |_, pred| {
        format!("SELECT {row} FROM {name} AS t WHERE {pred} ORDER BY t.\"{pk}\"")
    })
}

/// `json_object(…)` of every column of the row `t`, in table order. BLOBs become hex text in
/// an export, and `{"$hex": …}` in a restore archive (so that a restore can tell them from
/// text).
fn row_object(columns: &[(String, String)], archive: bool) -> String {
    let pairs: Vec<String> = columns
        .iter()
        .map(|(c, _)| {
            // Names from the database's own catalog: escaped rather than validated.
            let lit = c.replace('\'', "''");
            let id = format!("t.\"{}\"", c.replace('"', "\"\""));
            let blob = if archive {
                format!("json_object('$hex', hex({id}))")
            } else {
                format!("hex({id})")
            };
            format!("'{lit}', CASE WHEN typeof({id}) = 'blob' THEN {blob} ELSE {id} END")
        })
        .collect();
    format!("json_object({})", pairs.join(", "))
}

/// Puts archived Detach links back where the foreign key is still NULL (one statement).
fn relink(table: &Table, column: &str, links: &[serde_json::Value]) -> Result<Sql, WorkerError> {
    let fk = quote_ident(column).map_err(|e| WorkerError::invalid(e.to_string()))?;
    let pk = quote_ident(&table.primary_key).map_err(|e| WorkerError::invalid(e.to_string()))?;
    let json = serde_json::to_string(links).map_err(|e| WorkerError::invalid(e.to_string()))?;
    let name = quoted(&table.name);
    let mut sql = Sql::default();
    let p = sql.bind(json);
    // Validated names: no quote can end the JSON path early.
    sql.text = format!(
        "UPDATE {name} AS t SET {fk} = json_extract(r.value, '$.{fk}') FROM json_each({p}) AS r WHERE t.{pk} = json_extract(r.value, '$.{pk}') AND t.{fk} IS NULL"
    );
    Ok(sql)
}

/// Streams the rows of a one-column text query into `file`, one line each: the database
/// thread hands over bounded chunks, so memory stays bounded however many rows there are.
async fn stream_lines(
    db: &mut Db,
    what: String,
    sql: Sql,
    file: &mut impl LineSink,
) -> Result<(), WorkerError> {
    let (sender, mut receiver) = mpsc::channel::<Vec<u8>>(4);
    let conn = db.take()?;
    let reader = tokio::task::spawn_blocking(move || {
        let result = read_lines(&conn, &what, &sql, &sender);
        (conn, result)
    });
    let mut write_error = None;
    while let Some(chunk) = receiver.recv().await {
        if let Err(e) = file.write_chunk(&chunk).await {
            write_error = Some(e);
            break;
        }
    }
    // The reader stops at its next send once the receiver is gone.
    drop(receiver);
    let (conn, result) = reader.await.map_err(join_error)?;
    db.conn = Some(conn);
    result?;
    write_error.map_or(Ok(()), Err)
}

fn read_lines(
    conn: &Connection,
    what: &str,
    sql: &Sql,
    sender: &mpsc::Sender<Vec<u8>>,
) -> Result<(), WorkerError> {
    let mut stmt = prepare(conn, what, sql)?;
    let mut rows = stmt.raw_query();
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    while let Some(row) = rows.next().map_err(|e| db_error(what, e))? {
        let line = row
            .get_ref(0)
            .map_err(|e| db_error(what, e))?
            .as_str()
            .map_err(|e| WorkerError::new("DatabaseError", format!("{what}: {e}")))?;
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if buf.len() >= CHUNK {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096));
            if sender.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if !buf.is_empty() {
        let _ = sender.blocking_send(buf);
    }
    Ok(())
}

fn quoted(name: &str) -> String {
    quote_table(name).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_absolute_or_relative_files() {
        assert_eq!(
            database_path("sqlite:///var/data/app.db").unwrap(),
            PathBuf::from("/var/data/app.db")
        );
        assert_eq!(
            database_path("sqlite://data/app.db").unwrap(),
            PathBuf::from("data/app.db")
        );
        for bad in [
            "postgres://h/db",
            "sqlite://",
            "sqlite:///tmp/",
            "sqlite:///a.db?mode=ro",
        ] {
            let e = database_path(bad).unwrap_err();
            assert_eq!(e.reason, "InvalidTask", "{bad}");
        }
    }

    #[test]
    fn booleans_become_integers_only_in_boolean_columns() {
        assert_eq!(sqlite_value("boolean", "TRUE"), "1");
        assert_eq!(sqlite_value("BOOL", "false"), "0");
        assert_eq!(sqlite_value("text", "true"), "true");
        assert_eq!(sqlite_value("boolean", "maybe"), "maybe");
    }

    #[test]
    fn functions_normalise_phones_and_hash() {
        let conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        let (phone, hash, null): (String, String, Option<String>) = conn
            .query_row(
                &format!(
                    "SELECT {SQLITE_PHONE_FN}('+44 (20) 7946-0009'), {SHA256_FN}('ab'), {SHA256_FN}(NULL)"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(phone, "+442079460009");
        assert_eq!(hash, hex::encode(Sha256::digest(b"ab")));
        assert_eq!(null, None);
    }

    #[test]
    fn named_parameters_bind_whatever_their_order_in_the_text() {
        let conn = Connection::open_in_memory().unwrap();
        let sql = Sql {
            text: "SELECT $2 || '-' || $1 || '-' || $2".into(),
            params: vec!["a".into(), "b".into()],
        };
        let mut stmt = prepare(&conn, "test", &sql).unwrap();
        let mut rows = stmt.raw_query();
        let row = rows.next().unwrap().unwrap();
        assert_eq!(row.get::<_, String>(0).unwrap(), "b-a-b");
    }
}
