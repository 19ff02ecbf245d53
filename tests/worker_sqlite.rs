//! The SQLite connector against the CRM fixture in SQLite form (tests/fixtures/crm/sqlite.sql,
//! the same rows as the PostgreSQL fixture): exact exports, soft delete and restore, purge with
//! verification, anonymisation, restriction, rectification, rollback of an interrupted run,
//! and the errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use privacy_operator::api::DataSystemSpec;
use privacy_operator::api::subject::IdentifierSet;
use privacy_operator::plan::jobs::JobStep;
use privacy_operator::worker::postgres::{MASK, Options};
use privacy_operator::worker::run_task;
use privacy_operator::worker::task::{CONTRACT_VERSION, FieldChange, Manifest, Outcome, Task};
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

/// Contact 7's e-mail is stored as `Contact7@Example.COM`; requests spell it differently.
const JANE: &str = "contact7@example.com";
/// Tables owned by contact 7 and the condition selecting its rows.
const OWNED: [(&str, &str); 7] = [
    ("contacts", "id = 7"),
    ("notes", "contact_id = 7"),
    ("calls", "contact_id = 7"),
    ("call_recordings", "call_id IN (19, 20, 21)"),
    ("sms", "contact_id = 7"),
    ("tasks", "contact_id = 7"),
    ("consents", "contact_id = 7"),
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

/// The CRM loaded once into a template file; each test copies it.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.db");
        let conn = Connection::open(&path).unwrap();
        let sql = std::fs::read_to_string(fixtures().join("sqlite.sql")).unwrap();
        conn.execute_batch(&sql).unwrap();
        (dir, path)
    });
    path
}

/// A fresh copy of the CRM: its directory (kept alive by the caller) and URL.
fn crm() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crm.db");
    std::fs::copy(template(), &path).unwrap();
    let url = format!("sqlite://{}", path.display());
    (dir, path, url)
}

/// The PostgreSQL fixture's DataSystem with unqualified table names and the sqlite driver.
fn spec() -> DataSystemSpec {
    let yaml = std::fs::read_to_string(fixtures().join("datasystem.yaml"))
        .unwrap()
        .replace("crm.", "")
        .replace("driver: postgres", "driver: sqlite");
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn email(e: &str) -> IdentifierSet {
    IdentifierSet {
        email: Some(e.into()),
        ..Default::default()
    }
}

/// Built from JSON, as the worker reads it, so optional fields take their defaults.
fn task(url: &str, step: JobStep, ids: IdentifierSet, out: &Path) -> Task {
    let digest = ids.digest(b"test");
    serde_json::from_value(serde_json::json!({
        "version": CONTRACT_VERSION,
        "request": {"namespace": "shop", "name": "req-1", "digest": digest},
        "step": step,
        "system": {"name": "crm", "spec": spec()},
        "connection": url,
        "identifiers": ids,
        "hashSalt": "pepper",
        "output": out.display().to_string(),
    }))
    .unwrap()
}

async fn run(t: &Task) -> Manifest {
    run_task(t, &Options::default()).await
}

fn ok(m: &Manifest) {
    assert_eq!(m.outcome, Outcome::Succeeded, "{m:#?}");
}

fn json_value(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => f.into(),
        ValueRef::Text(t) => String::from_utf8(t.to_vec()).unwrap().into(),
        ValueRef::Blob(b) => hex::encode_upper(b).into(),
    }
}

/// Rows of `table` matching `cond`, in id order, as JSON objects read column by column.
fn rows(db: &Path, table: &str, cond: &str) -> Vec<serde_json::Value> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} WHERE {cond} ORDER BY id"))
        .unwrap();
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    let mut q = stmt.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let mut obj = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            obj.insert(n.clone(), json_value(r.get_ref(i).unwrap()));
        }
        out.push(serde_json::Value::Object(obj));
    }
    out
}

fn count(db: &Path, table: &str, cond: &str) -> u64 {
    let conn = Connection::open(db).unwrap();
    conn.query_row(
        &format!("SELECT count(*) FROM {table} WHERE {cond}"),
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as u64
}

fn query(db: &Path, sql: &str) -> String {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let mut q = stmt.query([]).unwrap();
    let mut lines = Vec::new();
    while let Some(r) = q.next().unwrap() {
        let cols: Vec<String> = (0..r.as_ref().column_count())
            .map(|i| match json_value(r.get_ref(i).unwrap()) {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
        lines.push(cols.join("|"));
    }
    lines.join("\n")
}

/// Every row of every table except contact `except`'s (and its tickets and deal), to prove
/// nothing else changed.
fn fingerprint(db: &Path, except: Option<u32>) -> BTreeMap<&'static str, Vec<serde_json::Value>> {
    ALL_TABLES
        .iter()
        .map(|t| {
            let cond = match except {
                None => "true".to_string(),
                Some(id) => format!("NOT ({})", exclusion(t, id)),
            };
            (*t, rows(db, t, &cond))
        })
        .collect()
}

fn exclusion(table: &str, id: u32) -> String {
    match table {
        "contacts" | "deals" => format!("id = {id}"),
        "call_recordings" => {
            format!("call_id IN (SELECT c.id FROM calls c WHERE c.contact_id = {id})")
        }
        // Contact n's tickets are 2n-1 and 2n: by id, as a purge hashes the e-mail.
        "tickets" => format!("id IN (2 * {id} - 1, 2 * {id})"),
        "companies" => "false".into(),
        _ => format!("contact_id = {id}"),
    }
}

#[tokio::test]
async fn export_is_exact_for_one_subject() {
    let (_dir, db, url) = crm();
    let out = tempfile::tempdir().unwrap();
    let m = run(&task(
        &url,
        JobStep::Export,
        email("  CONTACT7@example.com"),
        out.path(),
    ))
    .await;
    ok(&m);
    let expect: BTreeMap<&str, u64> = [
        ("companies", 0),
        ("contacts", 1),
        ("deals", 1),
        ("notes", 4),
        ("calls", 3),
        ("call_recordings", 3),
        ("sms", 4),
        ("tasks", 2),
        ("tickets", 2),
        ("consents", 2),
    ]
    .into();
    let got: BTreeMap<&str, u64> = m.tables.iter().map(|(k, v)| (k.as_str(), v.rows)).collect();
    assert_eq!(got, expect);
    assert_eq!(m.files.len(), 9, "one file per table with rows");
    for (table, cond) in OWNED.iter().chain(&[
        ("deals", "contact_id = 7"),
        ("tickets", "lower(requester_email) = 'contact7@example.com'"),
    ]) {
        let file = m.files.iter().find(|f| f.table == *table).unwrap();
        let bytes = std::fs::read(out.path().join(&file.path)).unwrap();
        assert_eq!(file.size, bytes.len() as u64);
        assert_eq!(file.sha256, hex::encode(Sha256::digest(&bytes)));
        let text = String::from_utf8(bytes).unwrap();
        let exported: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(exported, rows(&db, table, cond), "{table}");
        assert_eq!(file.records, exported.len() as u64);
    }
    // Columns in table order, as row_to_json writes them.
    let contact = std::fs::read_to_string(out.path().join("contacts.ndjson")).unwrap();
    assert!(
        contact.starts_with(r#"{"id":7,"company_id":7,"email":"Contact7@Example.COM","#),
        "{contact}"
    );
    assert!(!out.path().join("companies.ndjson").exists());
    assert!(m.message.contains("exported 22 rows"), "{}", m.message);
}

#[tokio::test]
async fn export_keeps_awkward_text_and_blobs_exact() {
    let (_dir, db, url) = crm();
    let body = "O'Brien back\\slash \"quoted\", comma; tab\t newline\n CR\r ünïcødé 🎉 \u{1}";
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute(
            "INSERT INTO notes (id, contact_id, body, created_at) VALUES (9999, 7, ?1, 'now')",
            [body],
        )
        .unwrap();
        conn.execute_batch("ALTER TABLE tasks ADD COLUMN attachment BLOB; UPDATE tasks SET attachment = x'00ff10' WHERE id = 13")
            .unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let m = run(&task(&url, JobStep::Export, email(JANE), out.path())).await;
    ok(&m);
    assert_eq!(m.tables["notes"].rows, 5);
    let notes = std::fs::read_to_string(out.path().join("notes.ndjson")).unwrap();
    let last: serde_json::Value = serde_json::from_str(notes.lines().last().unwrap()).unwrap();
    assert_eq!(last["id"], 9999);
    assert_eq!(last["body"], body);
    let tasks = std::fs::read_to_string(out.path().join("tasks.ndjson")).unwrap();
    let first: serde_json::Value = serde_json::from_str(tasks.lines().next().unwrap()).unwrap();
    assert_eq!(first["attachment"], "00FF10");
}

#[tokio::test]
async fn company_subject_exports_its_contacts_and_their_records() {
    let (_dir, _db, url) = crm();
    let out = tempfile::tempdir().unwrap();
    let ids = IdentifierSet {
        customer_id: Some("C-00003".into()),
        ..Default::default()
    };
    let m = run(&task(&url, JobStep::Export, ids, out.path())).await;
    ok(&m);
    assert_eq!(m.tables["companies"].rows, 1);
    assert_eq!(m.tables["contacts"].rows, 10);
    assert_eq!(m.tables["notes"].rows, 40);
    assert_eq!(m.tables["call_recordings"].rows, 30);
    assert_eq!(m.tables["deals"].rows, 2);
    assert_eq!(m.tables["tickets"].rows, 0);
}

#[tokio::test]
async fn soft_delete_hides_rows_and_restore_brings_them_back() {
    let (_dir, db, url) = crm();
    let others = fingerprint(&db, Some(7));
    let full_before = fingerprint(&db, None);
    let out = tempfile::tempdir().unwrap();
    let m = run(&task(&url, JobStep::SoftDelete, email(JANE), out.path())).await;
    ok(&m);
    for (table, cond) in OWNED {
        let hidden = count(&db, table, &format!("{cond} AND deleted_at IS NOT NULL"));
        let all = count(&db, table, cond);
        assert!(all > 0 && hidden == all, "{table}: {hidden}/{all} hidden");
        assert_eq!(m.tables[table].rows, all, "{table}");
    }
    assert_eq!(count(&db, "tickets", "deleted_at IS NOT NULL"), 2);
    assert_eq!(count(&db, "deals", "deleted_at IS NOT NULL"), 0);
    let stamp = query(&db, "SELECT deleted_at FROM contacts WHERE id = 7");
    assert!(
        jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.fZ", &stamp).is_ok()
            || stamp.parse::<jiff::Timestamp>().is_ok(),
        "{stamp}"
    );
    assert_eq!(
        fingerprint(&db, Some(7)),
        others,
        "other subjects untouched"
    );

    // Running it again changes nothing and keeps the first timestamps.
    let again = run(&task(&url, JobStep::SoftDelete, email(JANE), out.path())).await;
    ok(&again);
    assert_eq!(again.total_rows(), 0);
    assert_eq!(
        query(&db, "SELECT deleted_at FROM contacts WHERE id = 7"),
        stamp
    );

    let r = run(&task(&url, JobStep::Restore, email(JANE), out.path())).await;
    ok(&r);
    assert_eq!(r.total_rows(), m.total_rows());
    assert_eq!(
        fingerprint(&db, None),
        full_before,
        "every row back as it was"
    );
}

#[tokio::test]
async fn purge_deletes_anonymises_detaches_and_verifies() {
    let (_dir, db, url) = crm();
    let others = fingerprint(&db, Some(7));
    let out = tempfile::tempdir().unwrap();
    let m = run(&task(&url, JobStep::Purge, email(JANE), out.path())).await;
    ok(&m);
    for (table, cond) in OWNED {
        assert_eq!(count(&db, table, cond), 0, "{table}");
    }
    assert_eq!(m.tables["notes"].rows, 4);
    assert_eq!(m.tables["call_recordings"].rows, 3);
    assert_eq!(m.tables["deals"].detached, 1);
    assert_eq!(
        m.tables["tickets"].rows, 2,
        "tickets anonymised, not deleted"
    );
    assert_eq!(
        query(
            &db,
            "SELECT coalesce(contact_id, 'null') FROM deals WHERE id = 7"
        ),
        "null"
    );
    let hash = |v: &str| hex::encode(Sha256::digest(format!("pepper{v}").as_bytes()));
    assert_eq!(
        query(
            &db,
            "SELECT requester_email, requester_name, coalesce(body, 'null'), subject FROM tickets WHERE id IN (13, 14) ORDER BY id"
        ),
        format!(
            "{}|{MASK}|null|Ticket 1 from 7\n{}|{MASK}|null|Ticket 2 from 7",
            hash("contact7@example.com"),
            hash("CONTACT7@EXAMPLE.COM")
        ),
        "the same hashes as the PostgreSQL connector writes"
    );
    let v = m.verification.as_ref().unwrap();
    assert!(v.passed);
    assert_eq!(v.remaining.len(), ALL_TABLES.len());
    assert!(v.remaining.values().all(|n| *n == 0), "{v:?}");
    assert_eq!(
        fingerprint(&db, Some(7)),
        others,
        "other subjects untouched"
    );

    let again = run(&task(&url, JobStep::Purge, email(JANE), out.path())).await;
    ok(&again);
    assert_eq!(again.total_rows(), 0);
    assert!(again.verification.unwrap().passed);
}

#[tokio::test]
async fn purge_by_user_id_and_phone_finds_the_same_contact() {
    let (_dir, db, url) = crm();
    let out = tempfile::tempdir().unwrap();
    let ids = IdentifierSet {
        user_id: Some("u-8".into()),
        ..Default::default()
    };
    ok(&run(&task(&url, JobStep::Purge, ids, out.path())).await);
    assert_eq!(count(&db, "contacts", "id = 8"), 0);
    assert_eq!(count(&db, "notes", "contact_id = 8"), 0);
    assert_eq!(
        count(&db, "tickets", "requester_email = 'contact8@example.com'"),
        1,
        "no e-mail given: tickets are not found"
    );
    let phone = IdentifierSet {
        phone: Some("+44 (20) 7946-0009".into()),
        ..Default::default()
    };
    ok(&run(&task(&url, JobStep::Purge, phone, out.path())).await);
    assert_eq!(count(&db, "contacts", "id = 9"), 0);
    assert_eq!(count(&db, "contacts", "true"), 498);
}

#[tokio::test]
async fn company_purge_cascades_through_its_contacts() {
    let (_dir, db, url) = crm();
    let out = tempfile::tempdir().unwrap();
    let ids = IdentifierSet {
        customer_id: Some("C-00003".into()),
        ..Default::default()
    };
    let m = run(&task(&url, JobStep::Purge, ids, out.path())).await;
    ok(&m);
    assert_eq!(count(&db, "companies", "true"), 49);
    assert_eq!(count(&db, "contacts", "true"), 490);
    assert_eq!(count(&db, "deals", "true"), 98);
    assert_eq!(count(&db, "notes", "true"), 2000 - 40);
    assert_eq!(count(&db, "call_recordings", "true"), 1500 - 30);
    assert_eq!(m.tables["contacts"].rows, 10);
    assert!(m.verification.unwrap().passed);
}

#[tokio::test]
async fn killed_mid_purge_changes_nothing() {
    let (_dir, db, url) = crm();
    let before = fingerprint(&db, None);
    let out = tempfile::tempdir().unwrap();
    let t = task(&url, JobStep::Purge, email(JANE), out.path());
    for after in [1, 3, 6] {
        let m = run_task(
            &t,
            &Options {
                abort_after_statements: Some(after),
            },
        )
        .await;
        assert_eq!(m.reason.as_deref(), Some("Aborted"), "{m:#?}");
        assert!(m.tables.is_empty() && m.verification.is_none());
        assert_eq!(fingerprint(&db, None), before, "rolled back after {after}");
    }
    ok(&run(&t).await);
    assert_eq!(count(&db, "contacts", "id = 7"), 0);
}

#[tokio::test]
async fn restrict_sets_the_purpose_columns() {
    let (_dir, db, url) = crm();
    let out = tempfile::tempdir().unwrap();
    let mut t = task(&url, JobStep::Restrict, email(JANE), out.path());
    t.purposes = vec!["marketing-email".into()];
    let m = run(&t).await;
    ok(&m);
    assert_eq!(m.tables["contacts"].rows, 1);
    assert_eq!(
        query(
            &db,
            "SELECT marketing_opt_in, do_not_contact FROM contacts WHERE id = 7"
        ),
        "0|1",
        "booleans stored as integers, as the application does"
    );
    let mut t = task(
        &url,
        JobStep::Restrict,
        email("contact8@example.com"),
        out.path(),
    );
    t.purposes = vec!["profiling".into()];
    ok(&run(&t).await);
    assert_eq!(
        query(
            &db,
            "SELECT marketing_opt_in, do_not_contact FROM contacts WHERE id = 8"
        ),
        "1|1"
    );
    assert_eq!(
        count(&db, "contacts", "NOT marketing_opt_in OR do_not_contact"),
        2,
        "other contacts untouched"
    );
    ok(&run(&t).await);
    assert_eq!(count(&db, "contacts", "do_not_contact"), 2);
}

#[tokio::test]
async fn rectify_updates_declared_fields_only() {
    let (_dir, db, url) = crm();
    let others = fingerprint(&db, Some(7));
    let out = tempfile::tempdir().unwrap();
    let mut t = task(&url, JobStep::Rectify, email(JANE), out.path());
    t.changes = vec![
        FieldChange {
            field: "phone".into(),
            table: None,
            value: "+49 151 1234567".into(),
        },
        FieldChange {
            field: "last_name".into(),
            table: Some("contacts".into()),
            value: "O'Brien; DROP TABLE notes".into(),
        },
    ];
    let m = run(&t).await;
    ok(&m);
    assert_eq!(m.tables["contacts"].rows, 1);
    assert_eq!(
        query(
            &db,
            "SELECT phone || '|' || last_name FROM contacts WHERE id = 7"
        ),
        "+49 151 1234567|O'Brien; DROP TABLE notes"
    );
    assert_eq!(
        query(&db, "SELECT phone FROM sms WHERE id = 25"),
        "+44 20 7946 0007",
        "sms.phone is not rectifiable"
    );
    assert_eq!(fingerprint(&db, Some(7)), others);

    t.changes = vec![FieldChange {
        field: "phone".into(),
        table: None,
        value: "call me maybe".into(),
    }];
    let m = run(&t).await;
    assert_eq!(m.reason.as_deref(), Some("InvalidTask"));
    assert!(
        m.message.contains("pattern") && !m.message.contains("call me"),
        "{}",
        m.message
    );
    t.changes = vec![FieldChange {
        field: "email".into(),
        table: None,
        value: "x@y.z".into(),
    }];
    let m = run(&t).await;
    assert!(
        m.message.contains("not declared rectifiable"),
        "{}",
        m.message
    );
}

#[tokio::test]
async fn subject_without_data_is_a_valid_empty_outcome() {
    let (_dir, _db, url) = crm();
    let out = tempfile::tempdir().unwrap();
    for step in [JobStep::Export, JobStep::SoftDelete, JobStep::Purge] {
        let m = run(&task(&url, step, email("nobody@example.com"), out.path())).await;
        ok(&m);
        assert_eq!(m.total_rows(), 0, "{step:?}");
        assert!(m.files.is_empty());
    }
}

#[tokio::test]
async fn data_map_errors_are_reported_by_name() {
    let (_dir, _db, url) = crm();
    let out = tempfile::tempdir().unwrap();

    let mut t = task(&url, JobStep::Export, email(JANE), out.path());
    let map = t.system.spec.data_map.as_mut().unwrap();
    map.tables[3].name = "notez".into();
    map.tables[1].relations[0].table = "notez".into();
    let m = run(&t).await;
    assert_eq!(m.reason.as_deref(), Some("MissingTable"), "{}", m.message);
    assert!(m.message.contains("notez"), "{}", m.message);

    let mut t = task(&url, JobStep::Export, email(JANE), out.path());
    t.system.spec.data_map.as_mut().unwrap().tables[1].identity[0].column = "emial".into();
    let m = run(&t).await;
    assert_eq!(m.reason.as_deref(), Some("MissingColumn"));
    assert!(
        m.message.contains("emial") && m.message.contains("contacts"),
        "{}",
        m.message
    );

    let mut t = task(&url, JobStep::Export, email(JANE), out.path());
    let map = t.system.spec.data_map.as_mut().unwrap();
    let back = map.tables[1].relations[0].clone();
    map.tables[5]
        .relations
        .push(privacy_operator::api::datamap::Relation {
            table: "contacts".into(),
            ..back
        });
    let m = run(&t).await;
    assert_eq!(m.reason.as_deref(), Some("CyclicDataMap"));
    assert!(m.message.contains("call_recordings"), "{}", m.message);
}

#[tokio::test]
async fn missing_files_and_bad_urls_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = dir.path().join("nope.db");
    let m = run(&task(
        &format!("sqlite://{}", missing.display()),
        JobStep::Purge,
        email(JANE),
        &out,
    ))
    .await;
    assert_eq!(
        m.reason.as_deref(),
        Some("DatabaseNotFound"),
        "{}",
        m.message
    );
    assert!(m.message.contains("nope.db"), "{}", m.message);
    assert!(!missing.exists(), "no empty database is created");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    let m = run(&task(
        &format!("sqlite://{}", garbage.display()),
        JobStep::Export,
        email(JANE),
        &out,
    ))
    .await;
    assert_eq!(m.outcome, Outcome::Failed);
    assert!(m.message.contains("not a database"), "{}", m.message);

    let m = run(&task("postgres://h/db", JobStep::Export, email(JANE), &out)).await;
    assert_eq!(m.reason.as_deref(), Some("InvalidTask"));
    assert!(m.message.contains("sqlite://"), "{}", m.message);
}

#[tokio::test]
async fn foreign_keys_outside_the_map_block_the_purge_clearly() {
    let (_dir, db, url) = crm();
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, contact_id INTEGER REFERENCES contacts (id)); \
             INSERT INTO invoices VALUES (1, 7)",
        )
        .unwrap();
    let before = fingerprint(&db, None);
    let out = tempfile::tempdir().unwrap();
    let m = run(&task(&url, JobStep::Purge, email(JANE), out.path())).await;
    assert_eq!(m.outcome, Outcome::Failed);
    assert!(
        m.message.contains("FOREIGN KEY") && m.message.contains("data map"),
        "{}",
        m.message
    );
    assert_eq!(fingerprint(&db, None), before, "nothing purged");
}

#[tokio::test]
async fn a_held_write_lock_is_waited_for_not_overridden() {
    let (_dir, db, url) = crm();
    // Another writer holds the database; the purge waits on its lock, then proceeds once it
    // commits, so the application's write and the purge are serialised.
    let holder = Connection::open(&db).unwrap();
    holder
        .execute_batch("BEGIN IMMEDIATE; UPDATE contacts SET first_name = 'Busy' WHERE id = 8")
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let t = task(&url, JobStep::Purge, email(JANE), out.path());
    let purge = tokio::spawn(async move { run(&t).await });
    // The purge cannot finish while the lock is held.
    tokio::task::yield_now().await;
    assert!(!purge.is_finished());
    holder.execute_batch("COMMIT").unwrap();
    let m = purge.await.unwrap();
    ok(&m);
    assert_eq!(count(&db, "contacts", "id = 7"), 0);
    assert_eq!(
        query(&db, "SELECT first_name FROM contacts WHERE id = 8"),
        "Busy"
    );
}

#[tokio::test]
async fn cli_worker_runs_a_sqlite_task_and_keeps_identifiers_out_of_its_logs() {
    let (_dir, db, url) = crm();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let t = task(&url, JobStep::Purge, email(JANE), &out);
    let task_file = dir.path().join("task.json");
    std::fs::write(&task_file, serde_json::to_vec(&t).unwrap()).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-operator"))
        .args(["worker", "--task"])
        .arg(&task_file)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let logs = String::from_utf8_lossy(&status.stdout).to_string()
        + &String::from_utf8_lossy(&status.stderr);
    assert!(
        !logs.to_lowercase().contains("contact7@example.com"),
        "{logs}"
    );
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(out.join(privacy_operator::worker::MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    ok(&manifest);
    assert!(manifest.verification.unwrap().passed);
    assert_eq!(count(&db, "contacts", "id = 7"), 0);
}
