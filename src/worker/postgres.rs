//! The PostgreSQL connector: runs one task's step against one database, in one transaction.
//!
//! Statements come from [`super::sql::Finder`]; this module checks the data map against the
//! catalog, orders the tables (parents first for export, children first for erasure), runs
//! one statement per table and turns driver errors into [`WorkerError`]s that say what to fix
//! without repeating any stored value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, IsolationLevel, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::WorkerError;
use super::output::Output;
use super::quarantine::{Archive, LineSink, Quarantine, VERIFICATION_KEY};
use super::sql::{
    Finder, Hide, Reach, Sql, anonymise_sets, quote_ident, quote_table, rectify_plan,
    referenced_columns, restrict_values, soft_delete_plan,
};
use super::task::{Manifest, TableCount, Task};
use crate::api::datamap::{AnonymiseStrategy, DataMap, PurgeMode, Table};
use crate::plan::jobs::JobStep;

/// What a Mask anonymisation writes.
pub const MASK: &str = "********";
/// How long one statement may wait for a row lock held by someone else.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '30s'";
/// How long to wait for the database to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Knobs for tests and operators.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Stop with [`WorkerError`] `Aborted` after this many data-changing statements, before
    /// commit, as if the worker had been killed there. For tests of the rollback guarantee.
    pub abort_after_statements: Option<usize>,
}

/// Runs `task` (an SQL task for a PostgreSQL system) and fills `manifest`.
pub async fn run(
    task: &Task,
    map: &DataMap,
    output: &Output,
    options: &Options,
    manifest: &mut Manifest,
) -> Result<(), WorkerError> {
    let finder = Finder::new(map, &task.identifiers).map_err(WorkerError::finder)?;
    let url = task.connection.as_deref().ok_or_else(|| {
        WorkerError::invalid("the task has no connection URL for the PostgreSQL system")
    })?;
    let mut client = connect(url).await?;
    check_catalog(&client, map).await?;
    let mut run = Run {
        finder: &finder,
        options,
        statements: 0,
        manifest,
    };
    match task.step {
        JobStep::Export => run.export(&mut client, output).await,
        JobStep::SoftDelete => run.soft_delete(&mut client, task).await,
        JobStep::Restore => run.restore(&mut client, task).await,
        JobStep::Purge => run.purge(&mut client, task).await,
        JobStep::Restrict => run.restrict(&mut client, &task.purposes).await,
        JobStep::Rectify => run.rectify(&mut client, task).await,
        JobStep::ThirdPartyPurge => Err(WorkerError::unsupported(
            "a third-party purge is done by the HTTP connector, not by an SQL system",
        )),
        JobStep::ConsentSweep | JobStep::LedgerReplay => Err(WorkerError::invalid(
            "a consent sweep or ledger replay comes as its own task (see worker::consent, ledger::replay), not a request task",
        )),
        JobStep::RetentionRun => Err(WorkerError::invalid(
            "a retention run comes as a retention task (see worker::retention), not a request task",
        )),
    }
}

/// Connects, classifying failures (unreachable, wrong credentials, unknown database).
pub(crate) async fn connect(url: &str) -> Result<Client, WorkerError> {
    let (url, root_cert) = split_root_cert(url);
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        WorkerError::invalid(format!(
            "the connection URL is not a valid PostgreSQL URL: {e}"
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("privacy-operator-worker");
    let (client, connection) = config
        .connect(tls(root_cert.as_deref())?)
        .await
        .map_err(connect_error)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed with an error");
        }
    });
    Ok(client)
}

/// Takes libpq's `sslrootcert=<path>` (a CA bundle, e.g. mounted from a Secret) out of a URL's
/// query, since tokio-postgres does not know the option.
fn split_root_cert(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut root = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("sslrootcert=") {
            Some(path) => {
                root = Some(path.to_string());
                false
            }
            None => true,
        })
        .collect();
    if kept.is_empty() {
        (base.to_string(), root)
    } else {
        (format!("{base}?{}", kept.join("&")), root)
    }
}

/// TLS with the system's trusted roots (plus the URL's `sslrootcert`), on aws-lc-rs. The URL's `sslmode` decides whether it
/// is used: `prefer` (the default) falls back to plain text when the server offers no TLS,
/// `require` insists on it, `disable` never tries. Certificates are always verified.
fn tls(root_cert: Option<&str>) -> Result<MakeRustlsConnect, WorkerError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = root_cert {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                WorkerError::new(
                    "TlsFailed",
                    format!("sslrootcert {path}: cannot read PEM certificates: {e}"),
                )
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(WorkerError::new(
                "TlsFailed",
                format!("sslrootcert {path} holds no usable CA certificate"),
            ));
        }
    }
    // A missing or partly unreadable store is not fatal: a server that needs TLS then fails
    // verification with a message naming the certificate problem.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WorkerError::new("TlsFailed", format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn connect_error(e: tokio_postgres::Error) -> WorkerError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return match code {
            "28P01" | "28000" => WorkerError::new(
                "AuthenticationFailed",
                format!(
                    "PostgreSQL refused the credentials in the connection Secret ({code}): {}",
                    db.message()
                ),
            ),
            "3D000" => {
                WorkerError::new("DatabaseNotFound", format!("PostgreSQL: {}", db.message()))
            }
            _ => WorkerError::new(
                "DatabaseUnreachable",
                format!(
                    "PostgreSQL refused the connection ({code}): {}",
                    db.message()
                ),
            ),
        };
    }
    let text = e.to_string();
    if text.contains("TLS") || text.contains("certificate") {
        return WorkerError::new(
            "TlsFailed",
            format!(
                "TLS with PostgreSQL failed: {text}; check sslmode in the connection URL and the server's certificate"
            ),
        );
    }
    WorkerError::new(
        "DatabaseUnreachable",
        format!(
            "cannot reach PostgreSQL: {text}; check the host and port in the connection Secret and that the database is up"
        ),
    )
}

/// Errors of statements: the SQLSTATE and the server's message, except for data errors
/// whose messages quote the offending value (personal data), which are summarised.
pub(crate) fn db_error(context: &str, e: tokio_postgres::Error) -> WorkerError {
    let Some(db) = e.as_db_error() else {
        return WorkerError::new(
            "DatabaseUnreachable",
            format!("{context}: the connection to PostgreSQL failed: {e}"),
        );
    };
    let code = db.code().code();
    let message = if code == "23503" {
        // Another table still points at the rows: usually one the data map does not list.
        format!(
            "rows are still referenced through foreign key {} (SQLSTATE {code}); add the referencing table to the data map as a relation, or make the constraint ON DELETE CASCADE / SET NULL",
            db.constraint().unwrap_or("(unnamed)")
        )
    } else if code.starts_with("22") || code.starts_with("23") {
        let mut m = format!("a value was rejected by the database (SQLSTATE {code})");
        if let Some(c) = db.column() {
            m.push_str(&format!(" in column {c}"));
        }
        if let Some(c) = db.constraint() {
            m.push_str(&format!(" by constraint {c}"));
        }
        m
    } else {
        format!("{} (SQLSTATE {code})", db.message())
    };
    let reason = match code {
        "42501" => "PermissionDenied",
        "42P01" => "MissingTable",
        "42703" => "MissingColumn",
        "55P03" | "40P01" | "40001" => "Conflict",
        _ => "DatabaseError",
    };
    WorkerError::new(reason, format!("{context}: {message}"))
}

/// Checks that every table and column the data map names exists, in one round trip, so a
/// typo is reported by name before anything runs.
async fn check_catalog(client: &Client, map: &DataMap) -> Result<(), WorkerError> {
    let names: Vec<String> = map
        .tables
        .iter()
        .map(|t| quote_table(&t.name).map_err(|e| WorkerError::invalid(format!("data map: {e}"))))
        .collect::<Result<_, _>>()?;
    let rows = client
        .query(
            "SELECT u.i::int4, a.attname::text \
             FROM unnest($1::text[]) WITH ORDINALITY AS u(n, i) \
             LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(u.n) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&names],
        )
        .await
        .map_err(|e| db_error("reading the catalog", e))?;
    let mut columns: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        let i: i32 = row.get(0);
        let set = columns.entry(i as usize - 1).or_default();
        if let Some(col) = row.get::<_, Option<String>>(1) {
            set.insert(col);
        }
    }
    for (i, table) in map.tables.iter().enumerate() {
        let have = columns.get(&i).cloned().unwrap_or_default();
        if have.is_empty() {
            return Err(WorkerError::new(
                "MissingTable",
                format!(
                    "table {} in the data map does not exist in the database (or the connection's role cannot see it)",
                    table.name
                ),
            ));
        }
        for (col, used_by) in referenced_columns(map, table) {
            if !have.contains(col) {
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
    Ok(())
}

struct Run<'a, 'm> {
    finder: &'a Finder<'a>,
    options: &'a Options,
    /// Data-changing statements run so far (for `abort_after_statements`).
    statements: usize,
    manifest: &'m mut Manifest,
}

impl Run<'_, '_> {
    async fn begin<'c>(
        client: &'c mut Client,
        read_only: bool,
    ) -> Result<Transaction<'c>, WorkerError> {
        let mut b = client.build_transaction();
        if read_only {
            // One snapshot for every table, so an export is consistent across relations.
            b = b
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true);
        }
        let tx = b
            .start()
            .await
            .map_err(|e| db_error("starting the transaction", e))?;
        if !read_only {
            // Waiting on an application's row locks fails as Conflict (retried by the Job's
            // backoff) instead of hanging until the Job's deadline.
            tx.batch_execute(LOCK_TIMEOUT)
                .await
                .map_err(|e| db_error("setting the lock timeout", e))?;
        }
        Ok(tx)
    }

    async fn execute(
        &mut self,
        tx: &Transaction<'_>,
        what: &str,
        sql: &Sql,
    ) -> Result<u64, WorkerError> {
        if let Some(max) = self.options.abort_after_statements
            && self.statements >= max
        {
            return Err(WorkerError::new(
                "Aborted",
                format!(
                    "aborted before {what} after {max} statements; the transaction was rolled back"
                ),
            ));
        }
        let stmt = prepare(tx, what, sql).await?;
        let n = tx
            .execute_raw(&stmt, params(sql))
            .await
            .map_err(|e| db_error(what, e))?;
        self.statements += 1;
        Ok(n)
    }

    async fn export(&mut self, client: &mut Client, output: &Output) -> Result<(), WorkerError> {
        let tx = Self::begin(client, true).await?;
        for table in self.finder.order() {
            if !self.finder.reachable(table, Reach::All) {
                self.manifest
                    .tables
                    .insert(table.name.clone(), TableCount::default());
                continue;
            }
            let sql = self.finder.export(table);
            let what = format!("exporting {}", table.name);
            let mut file = output.ndjson(&format!("{}.ndjson", table.name)).await?;
            if let Err(e) = copy_table(&tx, &what, &sql, &mut file).await {
                // A half-written file is never published.
                file.abort().await;
                return Err(e);
            }
            file.publish_into(self.manifest, &table.name).await?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("ending the export transaction", e))?;
        self.manifest.message = format!(
            "exported {} rows from {} tables",
            self.manifest.total_rows(),
            self.manifest.files.len()
        );
        Ok(())
    }

    /// The DeletedAt statement of a soft delete (`hide`) or restore.
    fn deleted_at(&self, table: &Table, column: &str, hide: bool) -> Result<Sql, WorkerError> {
        let col = quote_ident(column).map_err(|e| WorkerError::invalid(e.to_string()))?;
        let name = quoted(&table.name);
        Ok(self.finder.statement(table, Reach::Owned, |_, pred| {
            if hide {
                // Keeps the first timestamp when a soft delete runs again.
                format!("UPDATE {name} AS t SET {col} = now() WHERE {pred} AND t.{col} IS NULL")
            } else {
                format!("UPDATE {name} AS t SET {col} = NULL WHERE {pred} AND t.{col} IS NOT NULL")
            }
        }))
    }

    /// SoftDelete: DeletedAt tables get their timestamp; Quarantine tables are archived (see
    /// [`super::quarantine`]) and, once the archive is stored, unlinked from their Detach
    /// children and deleted, all in one transaction.
    async fn soft_delete(&mut self, client: &mut Client, task: &Task) -> Result<(), WorkerError> {
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
        let tx = Self::begin(client, false).await?;
        let mut archived = None;
        let result = async {
            if let Some(q) = &quarantine {
                archived = self.archive(&tx, q, &quarantined).await?;
            }
            for (table, how) in &plan {
                match how {
                    Hide::DeletedAt(column) => {
                        let sql = self.deleted_at(table, column, true)?;
                        let n = self
                            .execute(&tx, &format!("soft-deleting {}", table.name), &sql)
                            .await?;
                        self.count(&table.name, n);
                    }
                    Hide::Quarantine => {
                        for (child, sql) in self.finder.detach(table) {
                            let n = self
                                .execute(
                                    &tx,
                                    &format!("unlinking {child} from {}", table.name),
                                    &sql,
                                )
                                .await?;
                            self.manifest.tables.entry(child).or_default().detached += n;
                        }
                        let name = quoted(&table.name);
                        let sql = self.finder.statement(table, Reach::Owned, |_, pred| {
                            format!("DELETE FROM {name} AS t WHERE {pred}")
                        });
                        let n = self
                            .execute(&tx, &format!("quarantining {}", table.name), &sql)
                            .await?;
                        self.count(&table.name, n);
                    }
                }
            }
            tx.commit().await.map_err(|e| db_error("committing", e))
        }
        .await;
        if let Err(e) = result {
            if let (Some(q), Some(key)) = (&quarantine, archived) {
                // Nothing was deleted: the archive would only be a stray copy.
                if let Err(e) = q.remove(&[key]).await {
                    tracing::warn!(error = %e, "could not remove the restore archive of a failed soft delete");
                }
            }
            return Err(e);
        }
        self.manifest.message = format!("soft-deleted {} rows", self.manifest.total_rows());
        if !quarantined.is_empty() {
            self.manifest
                .message
                .push_str(" (Quarantine tables into an encrypted restore archive)");
        }
        Ok(())
    }

    /// Streams the subject's rows of `tables` and the links of their Detach children into a
    /// new archive; returns its key once stored, or None when there was nothing to archive.
    async fn archive(
        &self,
        tx: &Transaction<'_>,
        q: &Quarantine,
        tables: &[&Table],
    ) -> Result<Option<String>, WorkerError> {
        let map = self.finder.map();
        let mut statements = Vec::new();
        for table in tables {
            let name = quoted(&table.name);
            let pk = &table.primary_key;
            statements.push((
                format!("archiving {}", table.name),
                self.finder.statement(table, Reach::Owned, |sql, pred| {
                    let t = sql.bind(table.name.clone());
                    format!(
                        "SELECT json_build_object('table', {t}::text, 'row', row_to_json(t))::text FROM {name} AS t WHERE {pred} ORDER BY t.\"{pk}\""
                    )
                }),
            ));
            for (child, sql) in self.finder.detached(table, |sql, r, child, keys| {
                let child_pk = map
                    .table(&r.table)
                    .map_or("id", |t| t.primary_key.as_str());
                let fk = &r.foreign_key;
                let t = sql.bind(r.table.clone());
                let c = sql.bind(fk.clone());
                let p = sql.bind(child_pk);
                format!(
                    "SELECT json_build_object('table', {t}::text, 'column', {c}::text, 'link', json_build_object({p}::text, t.\"{child_pk}\", {c}::text, t.\"{fk}\"))::text FROM {child} AS t WHERE t.\"{fk}\" IN ({keys}) ORDER BY t.\"{child_pk}\""
                )
            }) {
                statements.push((format!("archiving links of {child}"), sql));
            }
        }
        let mut writer = q.writer().await?;
        for (what, sql) in statements {
            if let Err(e) = copy_table(tx, &what, &sql, &mut writer).await {
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

    /// Restore: rows from the restore archives go back (parents first, rows already present
    /// skipped), then the Detach links, then DeletedAt columns are cleared; one transaction.
    /// The archives are deleted after the commit.
    async fn restore(&mut self, client: &mut Client, task: &Task) -> Result<(), WorkerError> {
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
        let tx = Self::begin(client, false).await?;
        for table in self.finder.order() {
            let Some(rows) = archive.rows.get(&table.name) else {
                continue;
            };
            let name = quoted(&table.name);
            let pk =
                quote_ident(&table.primary_key).map_err(|e| WorkerError::invalid(e.to_string()))?;
            let json =
                serde_json::to_string(rows).map_err(|e| WorkerError::invalid(e.to_string()))?;
            let mut sql = Sql::default();
            let p = sql.bind(json);
            sql.text = format!(
                "INSERT INTO {name} SELECT r.* FROM json_populate_recordset(NULL::{name}, {p}::text::json) AS r WHERE NOT EXISTS (SELECT 1 FROM {name} AS x WHERE x.{pk} = r.{pk})"
            );
            let n = self
                .execute(
                    &tx,
                    &format!("restoring {} from quarantine", table.name),
                    &sql,
                )
                .await?;
            self.count(&table.name, n);
        }
        for ((child, column), links) in &archive.links {
            let Some(table) = self.finder.map().table(child) else {
                continue;
            };
            let name = quoted(&table.name);
            let bad = |e: super::sql::BadIdentifier| WorkerError::invalid(e.to_string());
            let pk = quote_ident(&table.primary_key).map_err(bad)?;
            let fk = quote_ident(column).map_err(bad)?;
            let json =
                serde_json::to_string(links).map_err(|e| WorkerError::invalid(e.to_string()))?;
            let mut sql = Sql::default();
            let p = sql.bind(json);
            sql.text = format!(
                "UPDATE {name} AS t SET {fk} = r.{fk} FROM json_populate_recordset(NULL::{name}, {p}::text::json) AS r WHERE t.{pk} = r.{pk} AND t.{fk} IS NULL"
            );
            let n = self
                .execute(&tx, &format!("relinking {child}"), &sql)
                .await?;
            self.manifest
                .tables
                .entry(child.clone())
                .or_default()
                .detached += n;
        }
        for (table, how) in &plan {
            if let Hide::DeletedAt(column) = how {
                let sql = self.deleted_at(table, column, false)?;
                let n = self
                    .execute(&tx, &format!("restoring {}", table.name), &sql)
                    .await?;
                self.count(&table.name, n);
            }
        }
        tx.commit().await.map_err(|e| db_error("committing", e))?;
        if let Some(q) = &quarantine {
            q.remove(&archive.keys).await?;
        }
        self.manifest.message = format!("restored {} rows", self.manifest.total_rows());
        Ok(())
    }

    async fn purge(&mut self, client: &mut Client, task: &Task) -> Result<(), WorkerError> {
        let salt = task.hash_salt.as_deref().unwrap_or_default();
        let uses_quarantine = soft_delete_plan(self.finder)?
            .iter()
            .any(|(_, how)| *how == Hide::Quarantine);
        let quarantine = if uses_quarantine || task.quarantine.is_some() {
            Some(Quarantine::from_task(task, false)?)
        } else {
            None
        };
        let tx = Self::begin(client, false).await?;
        let mut remaining = BTreeMap::new();
        for table in self.finder.reverse_order() {
            // Detach children lose their link before the parent rows go.
            for (child, sql) in self.finder.detach(table) {
                let n = self
                    .execute(&tx, &format!("detaching {child} from {}", table.name), &sql)
                    .await?;
                self.manifest.tables.entry(child).or_default().detached += n;
            }
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
                                AnonymiseStrategy::Mask => {
                                    format!("{col} = {}", sql.bind(MASK))
                                }
                                AnonymiseStrategy::Hash => format!(
                                    "{col} = encode(sha256(convert_to({} || t.{col}::text, 'UTF8')), 'hex')",
                                    sql.bind(salt)
                                ),
                            })
                            .collect();
                        format!("UPDATE {name} AS t SET {} WHERE {pred}", sets.join(", "))
                    })
                }
            };
            let n = self
                .execute(&tx, &format!("purging {}", table.name), &sql)
                .await?;
            self.count(&table.name, n);
            // Checked now, while the parents that lead to this table still exist: after
            // they are gone a re-scan could not reach these rows any more.
            let left = self.verify(&tx, table).await?;
            remaining.insert(table.name.clone(), left);
            if left > 0 {
                return Err(WorkerError::new(
                    "VerificationFailed",
                    format!(
                        "{left} rows of {} still identify the subject after the purge statement; rolled back",
                        table.name
                    ),
                ));
            }
        }
        tx.commit().await.map_err(|e| db_error("committing", e))?;
        // And once more after commit, in a fresh snapshot: the evidence for the request.
        let tx = Self::begin(client, true).await?;
        for table in self.finder.order() {
            let left = self.verify(&tx, table).await?;
            let entry = remaining.entry(table.name.clone()).or_insert(0);
            *entry = (*entry).max(left);
        }
        tx.commit()
            .await
            .map_err(|e| db_error("ending the verification", e))?;
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

    /// Rows of `table` that still identify the subject: any row for a deleted table; for an
    /// anonymised table, rows still matching the subject's identifiers in clear.
    async fn verify(&self, tx: &Transaction<'_>, table: &Table) -> Result<u64, WorkerError> {
        let sql = self.finder.remaining(table).map_err(WorkerError::finder)?;
        let what = format!("verifying {}", table.name);
        let stmt = prepare(tx, &what, &sql).await?;
        let row = tx
            .query_one(&stmt, &params_ref(&sql))
            .await
            .map_err(|e| db_error(&what, e))?;
        let n: i64 = row.get(0);
        Ok(n.max(0) as u64)
    }

    async fn restrict(
        &mut self,
        client: &mut Client,
        purposes: &[String],
    ) -> Result<(), WorkerError> {
        let tx = Self::begin(client, false).await?;
        for table in self.finder.order() {
            let set = restrict_values(table, purposes);
            if set.is_empty() || !self.finder.reachable(table, Reach::Owned) {
                continue;
            }
            let sql = self.update_from_json(table, &set)?;
            let n = self
                .execute(&tx, &format!("restricting {}", table.name), &sql)
                .await?;
            self.count(&table.name, n);
        }
        tx.commit().await.map_err(|e| db_error("committing", e))?;
        self.manifest.message = format!(
            "restricted {} rows for purposes {}",
            self.manifest.total_rows(),
            purposes.join(", ")
        );
        Ok(())
    }

    async fn rectify(&mut self, client: &mut Client, task: &Task) -> Result<(), WorkerError> {
        let per_table = rectify_plan(self.finder, &task.changes)?;
        let tx = Self::begin(client, false).await?;
        // Children first: a change to a parent's identity column must not hide its children.
        for table in self.finder.reverse_order() {
            let Some(values) = per_table.get(table.name.as_str()) else {
                continue;
            };
            if !self.finder.reachable(table, Reach::Owned) {
                continue;
            }
            let sql = self.update_from_json(table, values)?;
            let n = self
                .execute(&tx, &format!("rectifying {}", table.name), &sql)
                .await?;
            self.count(&table.name, n);
        }
        tx.commit().await.map_err(|e| db_error("committing", e))?;
        self.manifest.message = format!("rectified {} rows", self.manifest.total_rows());
        Ok(())
    }

    /// `UPDATE … SET (a, b) = (SELECT r.a, r.b FROM json_populate_record(NULL::table, $n))`:
    /// the values travel as one JSON parameter and PostgreSQL converts each to its column's
    /// type, so the data map's string values work for booleans, timestamps and numbers alike.
    fn update_from_json(
        &self,
        table: &Table,
        values: &BTreeMap<&str, &str>,
    ) -> Result<Sql, WorkerError> {
        let cols: Vec<String> = values
            .keys()
            .map(|c| {
                quote_ident(c)
                    .map_err(|e| WorkerError::invalid(format!("table {}: {e}", table.name)))
            })
            .collect::<Result<_, _>>()?;
        let json =
            serde_json::to_string(values).map_err(|e| WorkerError::invalid(e.to_string()))?;
        let name = quoted(&table.name);
        Ok(self.finder.statement(table, Reach::Owned, |sql, pred| {
            let p = sql.bind(json);
            let targets = cols.join(", ");
            let sources: Vec<String> = cols.iter().map(|c| format!("r.{c}")).collect();
            format!(
                "UPDATE {name} AS t SET ({targets}) = (SELECT {} FROM json_populate_record(NULL::{name}, {p}::text::json) AS r) WHERE {pred}",
                sources.join(", ")
            )
        }))
    }

    fn count(&mut self, table: &str, n: u64) {
        self.manifest
            .tables
            .entry(table.to_string())
            .or_default()
            .rows += n;
    }
}

/// Streams the result of an export query into `file` through COPY.
async fn copy_table(
    tx: &Transaction<'_>,
    what: &str,
    sql: &Sql,
    file: &mut impl LineSink,
) -> Result<(), WorkerError> {
    // COPY cannot take bind parameters, so the values are bound to transaction-local
    // settings first and the query reads them with current_setting(): the identifiers still
    // never become SQL text. COPY streams with backpressure, so memory stays bounded however
    // many rows the subject has.
    let (set, copy) = copy_statement(sql);
    if !set.params.is_empty() {
        let stmt = prepare(tx, what, &set).await?;
        tx.query_one(&stmt, &params_ref(&set))
            .await
            .map_err(|e| db_error(what, e))?;
    }
    let stream = tx
        .copy_out(copy.as_str())
        .await
        .map_err(|e| db_error(what, e))?;
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| db_error(what, e))?;
        file.write_chunk(&chunk).await?;
    }
    Ok(())
}

/// Namespace of the transaction-local settings that carry an export's parameters.
const SETTING_PREFIX: &str = "privacy_operator.p";

/// Splits a parameterised query into a statement that binds each parameter to a
/// transaction-local setting, and a `COPY (query) TO STDOUT` that reads them back. The output
/// is CSV with a quote and delimiter that JSON text never contains, so each line is the JSON
/// exactly as `row_to_json` wrote it (text format would escape backslashes).
fn copy_statement(sql: &Sql) -> (Sql, String) {
    let mut set = Sql::default();
    let mut calls = Vec::new();
    let mut text = sql.text.clone();
    // Highest first, so that replacing $1 does not touch $10.
    for (i, value) in sql.params.iter().enumerate().rev() {
        let n = i + 1;
        text = text.replace(
            &format!("${n}"),
            &format!("current_setting('{SETTING_PREFIX}{n}')"),
        );
        calls.push((n, value));
    }
    calls.reverse();
    let sets: Vec<String> = calls
        .into_iter()
        .map(|(n, value)| {
            let p = set.bind(value.clone());
            format!("set_config('{SETTING_PREFIX}{n}', {p}, true)")
        })
        .collect();
    set.text = format!("SELECT {}", sets.join(", "));
    let copy =
        format!("COPY ({text}) TO STDOUT WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')");
    (set, copy)
}

fn quoted(name: &str) -> String {
    quote_table(name).unwrap_or_else(|_| "\"\"".to_string())
}

async fn prepare(
    tx: &Transaction<'_>,
    what: &str,
    sql: &Sql,
) -> Result<tokio_postgres::Statement, WorkerError> {
    // Every parameter is text: identifiers, masks, salts and JSON values alike.
    let types = vec![Type::TEXT; sql.params.len()];
    tx.prepare_typed(&sql.text, &types)
        .await
        .map_err(|e| db_error(what, e))
}

fn params(sql: &Sql) -> impl ExactSizeIterator<Item = &(dyn ToSql + Sync)> {
    sql.params.iter().map(|p| p as &(dyn ToSql + Sync))
}

fn params_ref(sql: &Sql) -> Vec<&(dyn ToSql + Sync)> {
    params(sql).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out_of_the_url() {
        assert_eq!(
            split_root_cert("postgres://u:p@h/db?sslmode=require&sslrootcert=/etc/ca.pem"),
            (
                "postgres://u:p@h/db?sslmode=require".to_string(),
                Some("/etc/ca.pem".to_string())
            )
        );
        assert_eq!(
            split_root_cert("postgres://h/db?sslrootcert=/ca.pem"),
            ("postgres://h/db".to_string(), Some("/ca.pem".to_string()))
        );
        assert_eq!(
            split_root_cert("postgres://h/db"),
            ("postgres://h/db".to_string(), None)
        );
    }

    #[test]
    fn copy_reads_parameters_from_settings_not_sql_text() {
        let sql = Sql {
            text: "SELECT x FROM t WHERE a = $1 OR b = $10 OR c = $2".into(),
            params: (1..=10).map(|i| format!("secret{i}")).collect(),
        };
        let (set, copy) = copy_statement(&sql);
        assert!(!copy.contains('$') && !copy.contains("secret"), "{copy}");
        assert!(copy.contains("a = current_setting('privacy_operator.p1')"));
        assert!(copy.contains("b = current_setting('privacy_operator.p10')"));
        assert!(copy.starts_with("COPY (SELECT x FROM t"));
        assert_eq!(set.params, sql.params);
        assert!(
            set.text
                .starts_with("SELECT set_config('privacy_operator.p1', $1, true), ")
        );
        assert!(!set.text.contains("secret"));
    }

    #[test]
    fn anonymise_nulls_identity_columns_not_declared_as_fields() {
        let table: Table = serde_json::from_value(serde_json::json!({
            "name": "tickets",
            "identity": [{"column": "email", "identifier": "email"},
                         {"column": "uid", "identifier": "userId"}],
            "fields": [{"name": "email", "anonymise": "Hash"}, {"name": "name", "anonymise": "Mask"}],
            "purge": "Anonymise"
        }))
        .unwrap();
        let sets = anonymise_sets(&table).unwrap();
        assert_eq!(
            sets,
            vec![
                ("\"email\"".to_string(), AnonymiseStrategy::Hash),
                ("\"name\"".to_string(), AnonymiseStrategy::Mask),
                ("\"uid\"".to_string(), AnonymiseStrategy::Null),
            ]
        );
    }
}
