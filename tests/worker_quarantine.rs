//! Quarantine soft delete on the CRM fixtures, against SQLite and a real PostgreSQL server,
//! with restore archives in a real S3 server (s3s-fs, signatures checked) or a local
//! directory: archive first, then delete; restore brings every row and link back exactly and
//! skips rows already present; purge destroys the archives; an interrupted run changes
//! nothing and leaves no archive.

#[path = "support/postgres.rs"]
mod pg_support;
#[path = "support/s3.rs"]
mod s3_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use age::secrecy::ExposeSecret;
use privacy_operator::api::DataSystemSpec;
use privacy_operator::api::subject::IdentifierSet;
use privacy_operator::plan::jobs::JobStep;
use privacy_operator::storage::{StorageTarget, Store};
use privacy_operator::worker::postgres::Options;
use privacy_operator::worker::run_task;
use privacy_operator::worker::task::{CONTRACT_VERSION, Manifest, Outcome, Task};
use rusqlite::Connection;

const JANE: &str = "contact7@example.com";
/// Tables that move to the quarantine in these tests: contacts and everything hanging off
/// them by a NOT NULL foreign key (deals are Detach children; tickets keep DeletedAt).
const QUARANTINED: [&str; 7] = [
    "contacts",
    "notes",
    "calls",
    "call_recordings",
    "sms",
    "tasks",
    "consents",
];
const ALL_TABLES: [&str; 10] = [
    "companies",
    "contacts",
    "deals",
    "notes",
    "calls",
    "call_recordings",
    "sms",
    "tasks",
    "tickets",
    "consents",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm")
}

/// The fixture's DataSystem with the QUARANTINED tables on Quarantine; `schema` is the table
/// name prefix (`crm.` for PostgreSQL, empty for SQLite).
fn spec(driver: &str, schema: &str) -> DataSystemSpec {
    let yaml = std::fs::read_to_string(fixtures().join("datasystem.yaml"))
        .unwrap()
        .replace("driver: postgres", &format!("driver: {driver}"));
    let mut spec: DataSystemSpec = serde_yaml_ng::from_str(&yaml).unwrap();
    for t in &mut spec.data_map.as_mut().unwrap().tables {
        let bare = t.name.trim_start_matches("crm.").to_string();
        if QUARANTINED.contains(&bare.as_str()) {
            t.soft_delete = Some(serde_json::from_str(r#"{"strategy": "Quarantine"}"#).unwrap());
        }
        t.name = format!("{schema}{bare}");
        for r in &mut t.relations {
            r.table = format!("{schema}{}", r.table.trim_start_matches("crm."));
        }
    }
    spec
}

/// Where the archives go: the S3 server, or a local directory.
enum Storage {
    S3,
    Local(tempfile::TempDir),
}

impl Storage {
    fn target(&self) -> StorageTarget {
        match self {
            Storage::S3 => s3_support::shared().target(""),
            Storage::Local(dir) => StorageTarget::new(format!("file://{}", dir.path().display())),
        }
    }
}

struct Case {
    spec: DataSystemSpec,
    url: String,
    storage: StorageTarget,
    /// Unique per test: tests share the S3 bucket.
    quarantine: String,
    key: String,
}

impl Case {
    fn new(spec: DataSystemSpec, url: String, storage: &Storage, name: &str) -> Case {
        Case {
            spec,
            url,
            storage: storage.target(),
            quarantine: format!("quarantine/shop/{name}/crm"),
            key: age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
                .to_string(),
        }
    }

    fn task(&self, step: JobStep, email: &str) -> Task {
        let ids = IdentifierSet {
            email: Some(email.into()),
            ..Default::default()
        };
        let digest = ids.digest(b"test");
        serde_json::from_value(serde_json::json!({
            "version": CONTRACT_VERSION,
            "request": {"namespace": "shop", "name": "req-1", "digest": digest},
            "step": step,
            "system": {"name": "crm", "spec": self.spec},
            "connection": self.url,
            "identifiers": ids,
            "hashSalt": "pepper",
            "storage": self.storage,
            "output": "exports/shop/req-1/crm",
            "quarantine": self.quarantine,
            "quarantineKey": self.key,
        }))
        .unwrap()
    }

    fn store(&self) -> Store {
        Store::open(&self.storage).unwrap().child(&self.quarantine)
    }

    async fn archives(&self) -> Vec<String> {
        self.store()
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    async fn run(&self, step: JobStep) -> Manifest {
        run_task(&self.task(step, JANE), &Options::default()).await
    }
}

fn ok(m: &Manifest) {
    assert_eq!(m.outcome, Outcome::Succeeded, "{m:#?}");
}

// ---------------------------------------------------------------------------------------
// SQLite

fn sqlite_template() -> &'static Path {
    static TEMPLATE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&std::fs::read_to_string(fixtures().join("sqlite.sql")).unwrap())
            .unwrap();
        (dir, path)
    });
    path
}

fn sqlite_crm() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crm.db");
    std::fs::copy(sqlite_template(), &path).unwrap();
    let url = format!("sqlite://{}", path.display());
    (dir, path, url)
}

fn sq(db: &Path, sql: &str) -> String {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let cols: Vec<String> = (0..n)
            .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
            .collect();
        out.push(cols.join("|"));
    }
    out.join("\n")
}

/// Every row of every table, in id order, values with their storage class.
fn sqlite_fingerprint(db: &Path) -> BTreeMap<&'static str, String> {
    ALL_TABLES
        .iter()
        .map(|t| (*t, sq(db, &format!("SELECT * FROM {t} ORDER BY id"))))
        .collect()
}

fn sqlite_count(db: &Path, table: &str, cond: &str) -> u64 {
    sq(db, &format!("SELECT count(*) FROM {table} WHERE {cond}"))
        .trim_start_matches("Integer(")
        .trim_end_matches(')')
        .parse()
        .unwrap()
}

async fn sqlite_round_trip(storage: Storage) {
    let (_dir, db, url) = sqlite_crm();
    // A BLOB column must come back as a BLOB, not as its hex text.
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "ALTER TABLE notes ADD COLUMN attachment BLOB; UPDATE notes SET attachment = x'00ff10' WHERE id = 25",
        )
        .unwrap();
    let before = sqlite_fingerprint(&db);
    let case = Case::new(spec("sqlite", ""), url, &storage, "sqlite-round-trip");

    let m = case.run(JobStep::SoftDelete).await;
    ok(&m);
    assert_eq!(sqlite_count(&db, "contacts", "id = 7"), 0);
    assert_eq!(sqlite_count(&db, "notes", "contact_id = 7"), 0);
    assert_eq!(
        sqlite_count(&db, "call_recordings", "call_id IN (19, 20, 21)"),
        0
    );
    assert_eq!(
        sqlite_count(&db, "tickets", "id IN (13, 14) AND deleted_at IS NOT NULL"),
        2,
        "DeletedAt tables keep their strategy"
    );
    assert_eq!(
        sqlite_count(&db, "deals", "id = 7 AND contact_id IS NULL"),
        1
    );
    assert_eq!(m.tables["contacts"].rows, 1);
    assert_eq!(m.tables["notes"].rows, 4);
    assert_eq!(m.tables["deals"].detached, 1);
    assert_eq!(m.total_rows(), 1 + 4 + 3 + 3 + 4 + 2 + 2 + 2);
    let archives = case.archives().await;
    assert_eq!(archives.len(), 1, "{archives:?}");
    let stored = case.store().get(&archives[0]).await.unwrap().unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains("Contact7"),
        "the archive is encrypted"
    );

    // A rerun finds nothing left and writes no (empty) archive.
    let again = case.run(JobStep::SoftDelete).await;
    ok(&again);
    assert_eq!(again.total_rows(), 0);
    assert_eq!(case.archives().await, archives);

    let r = case.run(JobStep::Restore).await;
    ok(&r);
    assert_eq!(r.tables["contacts"].rows, 1);
    assert_eq!(r.tables["deals"].detached, 1, "the deal is linked again");
    assert_eq!(sqlite_fingerprint(&db), before, "every row back as it was");
    assert!(
        case.archives().await.is_empty(),
        "the archive is gone after restore"
    );

    let again = case.run(JobStep::Restore).await;
    ok(&again);
    assert_eq!(again.total_rows(), 0);
    assert_eq!(sqlite_fingerprint(&db), before);

    // Soft delete again, then purge: rows and archive both gone.
    ok(&case.run(JobStep::SoftDelete).await);
    let p = case.run(JobStep::Purge).await;
    ok(&p);
    let v = p.verification.unwrap();
    assert!(v.passed);
    assert_eq!(v.remaining.get("quarantine"), Some(&0));
    assert!(case.archives().await.is_empty());
    assert_eq!(
        sqlite_count(
            &db,
            "tickets",
            "id IN (13, 14) AND requester_name = 'First7 Last7'"
        ),
        0
    );
    let after = case.run(JobStep::Restore).await;
    ok(&after);
    assert_eq!(
        after.total_rows(),
        0,
        "nothing left to restore after a purge"
    );
    assert_eq!(sqlite_count(&db, "contacts", "id = 7"), 0);
}

#[tokio::test]
async fn sqlite_quarantine_round_trip_in_s3() {
    sqlite_round_trip(Storage::S3).await;
}

#[tokio::test]
async fn sqlite_quarantine_round_trip_in_a_local_directory() {
    sqlite_round_trip(Storage::Local(tempfile::tempdir().unwrap())).await;
}

#[tokio::test]
async fn sqlite_interrupted_soft_delete_changes_nothing_and_leaves_no_archive() {
    let (_dir, db, url) = sqlite_crm();
    let before = sqlite_fingerprint(&db);
    let case = Case::new(spec("sqlite", ""), url, &Storage::S3, "sqlite-abort");
    for after in [0, 2, 5] {
        let m = run_task(
            &case.task(JobStep::SoftDelete, JANE),
            &Options {
                abort_after_statements: Some(after),
            },
        )
        .await;
        assert_eq!(m.reason.as_deref(), Some("Aborted"), "{m:#?}");
        assert_eq!(sqlite_fingerprint(&db), before, "rolled back after {after}");
        assert!(
            case.archives().await.is_empty(),
            "archive removed after {after}"
        );
    }
    ok(&case.run(JobStep::SoftDelete).await);
    assert_eq!(sqlite_count(&db, "contacts", "id = 7"), 0);
}

#[tokio::test]
async fn restore_skips_rows_already_present() {
    let (_dir, db, url) = sqlite_crm();
    let before = sqlite_fingerprint(&db);
    let case = Case::new(spec("sqlite", ""), url, &Storage::S3, "sqlite-present");
    ok(&case.run(JobStep::SoftDelete).await);
    // The application re-created the contact meanwhile, with other values.
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "INSERT INTO contacts (id, company_id, email, created_at) VALUES (7, 7, 'new7@example.com', 'x')",
        )
        .unwrap();
    let r = case.run(JobStep::Restore).await;
    ok(&r);
    assert_eq!(r.tables["contacts"].rows, 0, "the present row is kept");
    assert_eq!(r.tables["notes"].rows, 4);
    let email: String = Connection::open(&db)
        .unwrap()
        .query_row("SELECT email FROM contacts WHERE id = 7", [], |r| r.get(0))
        .unwrap();
    assert_eq!(email, "new7@example.com");
    let now = sqlite_fingerprint(&db);
    for t in ALL_TABLES.iter().filter(|t| **t != "contacts") {
        assert_eq!(now[t], before[t], "{t}");
    }
}

#[tokio::test]
async fn quarantine_needs_its_location_and_key() {
    let (_dir, db, url) = sqlite_crm();
    let before = sqlite_fingerprint(&db);
    let case = Case::new(spec("sqlite", ""), url, &Storage::S3, "sqlite-no-key");
    let mut t = case.task(JobStep::SoftDelete, JANE);
    t.quarantine_key = None;
    t.hash_salt = None;
    let m = run_task(&t, &Options::default()).await;
    assert_eq!(m.reason.as_deref(), Some("InvalidTask"));
    assert!(m.message.contains("quarantineKey"), "{}", m.message);
    let mut t = case.task(JobStep::SoftDelete, JANE);
    t.quarantine = None;
    let m = run_task(&t, &Options::default()).await;
    assert_eq!(m.reason.as_deref(), Some("InvalidTask"));
    let mut t = case.task(JobStep::SoftDelete, JANE);
    t.quarantine_key = Some("not-a-key".into());
    let m = run_task(&t, &Options::default()).await;
    assert!(!m.message.contains("not-a-key"), "{}", m.message);
    assert_eq!(sqlite_fingerprint(&db), before);

    // An archive the operator's key cannot open fails the restore and keeps the rows
    // in quarantine.
    ok(&case.run(JobStep::SoftDelete).await);
    let mut t = case.task(JobStep::Restore, JANE);
    t.quarantine_key = Some(
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret()
            .to_string(),
    );
    let m = run_task(&t, &Options::default()).await;
    assert_eq!(m.reason.as_deref(), Some("QuarantineUnreadable"), "{m:#?}");
    assert_eq!(case.archives().await.len(), 1);
    ok(&case.run(JobStep::Restore).await);
    assert_eq!(sqlite_fingerprint(&db), before);
}

#[tokio::test]
async fn without_a_dedicated_key_the_salt_derived_key_is_used() {
    let (_dir, db, url) = sqlite_crm();
    let before = sqlite_fingerprint(&db);
    let case = Case::new(spec("sqlite", ""), url, &Storage::S3, "sqlite-salt-key");
    let task = |step| {
        let mut t = case.task(step, JANE);
        t.quarantine_key = None;
        t
    };
    ok(&run_task(&task(JobStep::SoftDelete), &Options::default()).await);
    assert_eq!(sqlite_count(&db, "contacts", "id = 7"), 0);
    // Another salt cannot read the archive.
    let mut other = task(JobStep::Restore);
    other.hash_salt = Some("another-salt".into());
    let m = run_task(&other, &Options::default()).await;
    assert_eq!(m.reason.as_deref(), Some("QuarantineUnreadable"), "{m:#?}");
    ok(&run_task(&task(JobStep::Restore), &Options::default()).await);
    assert_eq!(sqlite_fingerprint(&db), before);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

const PG_TEMPLATE: &str = "crm_quarantine_template";

fn pg_crm(name: &str) -> (&'static pg_support::Postgres, String) {
    static LOADED: OnceLock<()> = OnceLock::new();
    let pg = pg_support::shared();
    LOADED.get_or_init(|| {
        pg.psql("postgres", &format!("CREATE DATABASE {PG_TEMPLATE}"));
        pg.psql_file(PG_TEMPLATE, &fixtures().join("schema.sql"));
        pg.psql_file(PG_TEMPLATE, &fixtures().join("data.sql"));
        pg.psql(
            PG_TEMPLATE,
            "ALTER TABLE crm.notes ADD COLUMN attachment bytea; \
             UPDATE crm.notes SET attachment = '\\x00ff10' WHERE id = 25",
        );
    });
    let url = pg.database_from(PG_TEMPLATE, name);
    (pg, url)
}

fn pg_fingerprint(pg: &pg_support::Postgres, db: &str) -> BTreeMap<&'static str, String> {
    ALL_TABLES
        .iter()
        .map(|t| {
            let q = format!(
                "SELECT count(*) || ':' || coalesce(md5(string_agg(row_to_json(x)::text, '|' ORDER BY id)), '') FROM crm.{t} AS x"
            );
            (*t, pg.psql(db, &q))
        })
        .collect()
}

fn pg_count(pg: &pg_support::Postgres, db: &str, table: &str, cond: &str) -> u64 {
    pg.psql(
        db,
        &format!("SELECT count(*) FROM crm.{table} WHERE {cond}"),
    )
    .parse()
    .unwrap()
}

#[tokio::test]
async fn postgres_quarantine_round_trip_in_s3() {
    let (pg, url) = pg_crm("quarantine_round_trip");
    let db = url.rsplit('/').next().unwrap().to_string();
    let before = pg_fingerprint(pg, &db);
    let case = Case::new(spec("postgres", "crm."), url, &Storage::S3, "pg-round-trip");

    let m = case.run(JobStep::SoftDelete).await;
    ok(&m);
    assert_eq!(pg_count(pg, &db, "contacts", "id = 7"), 0);
    assert_eq!(pg_count(pg, &db, "notes", "contact_id = 7"), 0);
    assert_eq!(
        pg_count(pg, &db, "deals", "id = 7 AND contact_id IS NULL"),
        1
    );
    assert_eq!(
        pg_count(
            pg,
            &db,
            "tickets",
            "id IN (13, 14) AND deleted_at IS NOT NULL"
        ),
        2
    );
    assert_eq!(m.tables["crm.notes"].rows, 4);
    assert_eq!(m.tables["crm.deals"].detached, 1);
    assert_eq!(case.archives().await.len(), 1);

    let again = case.run(JobStep::SoftDelete).await;
    ok(&again);
    assert_eq!(again.total_rows(), 0);
    assert_eq!(case.archives().await.len(), 1);

    let r = case.run(JobStep::Restore).await;
    ok(&r);
    assert_eq!(
        pg_fingerprint(pg, &db),
        before,
        "every row back exactly (timestamps, numerics, bytea)"
    );
    assert!(case.archives().await.is_empty());

    ok(&case.run(JobStep::SoftDelete).await);
    let p = case.run(JobStep::Purge).await;
    ok(&p);
    let v = p.verification.unwrap();
    assert!(
        v.passed && v.remaining.get("quarantine") == Some(&0),
        "{v:?}"
    );
    assert!(case.archives().await.is_empty());
    assert_eq!(pg_count(pg, &db, "contacts", "id = 7"), 0);
    assert_eq!(pg_count(pg, &db, "contacts", "true"), 499);
}

#[tokio::test]
async fn postgres_interrupted_soft_delete_changes_nothing_and_leaves_no_archive() {
    let (pg, url) = pg_crm("quarantine_abort");
    let db = url.rsplit('/').next().unwrap().to_string();
    let before = pg_fingerprint(pg, &db);
    let case = Case::new(spec("postgres", "crm."), url, &Storage::S3, "pg-abort");
    for after in [0, 3] {
        let m = run_task(
            &case.task(JobStep::SoftDelete, JANE),
            &Options {
                abort_after_statements: Some(after),
            },
        )
        .await;
        assert_eq!(m.reason.as_deref(), Some("Aborted"), "{m:#?}");
        assert_eq!(pg_fingerprint(pg, &db), before);
        assert!(case.archives().await.is_empty());
    }
}
