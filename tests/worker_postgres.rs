//! The PostgreSQL connector against a real PostgreSQL server and the CRM fixture
//! (tests/fixtures/crm): exact exports, soft delete and restore, purge with verification,
//! anonymisation, restriction, rectification, rollback of an interrupted run, and the errors.

#[path = "support/postgres.rs"]
mod pg_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pg_support::{Postgres, shared};
use privacy_operator::api::DataSystemSpec;
use privacy_operator::api::subject::IdentifierSet;
use privacy_operator::plan::jobs::JobStep;
use privacy_operator::storage::StorageTarget;
use privacy_operator::worker::postgres::{MASK, Options};
use privacy_operator::worker::task::{
    CONTRACT_VERSION, FieldChange, Manifest, Outcome, RequestRef, SystemRef, Task,
};
use privacy_operator::worker::{self, run_task};
use sha2::{Digest, Sha256};

const TEMPLATE: &str = "crm_template";
/// Contact 7's e-mail is stored as `Contact7@Example.COM`; requests spell it differently.
const JANE: &str = "contact7@example.com";
/// Tables owned by contact 7 and their ids, from tests/fixtures/crm/data.sql.
const OWNED: [(&str, &str); 7] = [
    ("crm.contacts", "id = 7"),
    ("crm.notes", "contact_id = 7"),
    ("crm.calls", "contact_id = 7"),
    ("crm.call_recordings", "call_id IN (19, 20, 21)"),
    ("crm.sms", "contact_id = 7"),
    ("crm.tasks", "contact_id = 7"),
    ("crm.consents", "contact_id = 7"),
];
const ALL_TABLES: [&str; 10] = [
    "crm.companies",
    "crm.contacts",
    "crm.deals",
    "crm.notes",
    "crm.calls",
    "crm.call_recordings",
    "crm.sms",
    "crm.tasks",
    "crm.tickets",
    "crm.consents",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm")
}

/// The cluster with the CRM template database loaded once.
fn cluster() -> &'static Postgres {
    static LOADED: OnceLock<()> = OnceLock::new();
    let pg = shared();
    LOADED.get_or_init(|| {
        pg.psql("postgres", &format!("CREATE DATABASE {TEMPLATE}"));
        pg.psql_file(TEMPLATE, &fixtures().join("schema.sql"));
        pg.psql_file(TEMPLATE, &fixtures().join("data.sql"));
    });
    pg
}

/// A fresh copy of the CRM for one test.
fn crm(name: &str) -> (&'static Postgres, String) {
    let pg = cluster();
    let url = pg.database_from(TEMPLATE, name);
    (pg, url)
}

fn spec() -> DataSystemSpec {
    let yaml = std::fs::read_to_string(fixtures().join("datasystem.yaml")).unwrap();
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn email(e: &str) -> IdentifierSet {
    IdentifierSet {
        email: Some(e.into()),
        ..Default::default()
    }
}

fn task(url: &str, step: JobStep, ids: IdentifierSet, out: &Path) -> Task {
    Task {
        version: CONTRACT_VERSION.into(),
        request: RequestRef {
            namespace: "shop".into(),
            name: "req-1".into(),
            digest: ids.digest(b"test"),
            uid: None,
        },
        step,
        system: SystemRef {
            name: "crm".into(),
            spec: spec(),
        },
        connection: Some(url.into()),
        identifiers: ids,
        changes: vec![],
        purposes: vec![],
        hash_salt: Some("pepper".into()),
        webhook: None,
        quarantine: None,
        quarantine_key: None,
        credentials: Default::default(),
        // The output is the root of a local object store in `out`.
        storage: StorageTarget::new(format!("file://{}", out.display())),
        output: String::new(),
        recipient: None,
    }
}

async fn run(t: &Task) -> Manifest {
    run_task(t, &Options::default()).await
}

fn ok(m: &Manifest) {
    assert_eq!(m.outcome, Outcome::Succeeded, "{m:#?}");
}

/// A digest of every row of every table, to prove nothing else changed.
fn fingerprint(pg: &Postgres, db: &str, except: &str) -> BTreeMap<&'static str, String> {
    ALL_TABLES
        .iter()
        .map(|t| {
            let q = format!(
                "SELECT count(*) || ':' || coalesce(md5(string_agg(row_to_json(x)::text, '|' ORDER BY id)), '') \
                 FROM {t} AS x WHERE NOT ({})",
                if except.is_empty() { "false".to_string() } else { exclusion(t, except) }
            );
            (*t, pg.psql(db, &q))
        })
        .collect()
}

/// The condition selecting contact `id`'s rows (and its tickets) in `table`.
fn exclusion(table: &str, id: &str) -> String {
    match table {
        "crm.contacts" => format!("x.id = {id}"),
        "crm.call_recordings" => {
            format!("x.call_id IN (SELECT c.id FROM crm.calls c WHERE c.contact_id = {id})")
        }
        // Contact n's tickets are 2n-1 and 2n (data.sql): by id, as a purge hashes the e-mail.
        "crm.tickets" => format!("x.id IN (2 * {id} - 1, 2 * {id})"),
        // Contacts 1..=100 each have the deal with their own id (data.sql); matched by id so
        // that a purge unlinking the deal still excludes it.
        "crm.deals" => format!("x.id = {id}"),
        "crm.companies" => "false".into(),
        _ => format!("x.contact_id = {id}"),
    }
}

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

fn count(pg: &Postgres, db: &str, table: &str, cond: &str) -> u64 {
    pg.psql(db, &format!("SELECT count(*) FROM {table} WHERE {cond}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn export_is_exact_for_one_subject() {
    let (pg, url) = crm("export_exact");
    let db = db_name(&url);
    let out = tempfile::tempdir().unwrap();
    // Spelt differently from the stored Contact7@Example.COM.
    let m = run(&task(
        &url,
        JobStep::Export,
        email("  CONTACT7@example.com"),
        out.path(),
    ))
    .await;
    ok(&m);
    let expect: BTreeMap<&str, u64> = [
        ("crm.companies", 0),
        ("crm.contacts", 1),
        ("crm.deals", 1),
        ("crm.notes", 4),
        ("crm.calls", 3),
        ("crm.call_recordings", 3),
        ("crm.sms", 4),
        ("crm.tasks", 2),
        ("crm.tickets", 2),
        ("crm.consents", 2),
    ]
    .into();
    let got: BTreeMap<&str, u64> = m.tables.iter().map(|(k, v)| (k.as_str(), v.rows)).collect();
    assert_eq!(got, expect);
    assert_eq!(m.files.len(), 9, "one file per table with rows");
    for (table, cond) in OWNED.iter().chain(&[
        ("crm.deals", "contact_id = 7"),
        (
            "crm.tickets",
            "lower(requester_email) = 'contact7@example.com'",
        ),
    ]) {
        let file = m.files.iter().find(|f| f.table == *table).unwrap();
        let bytes = std::fs::read(out.path().join(&file.path)).unwrap();
        assert_eq!(file.size, bytes.len() as u64);
        assert_eq!(file.sha256, hex::encode(Sha256::digest(&bytes)));
        let want = pg.psql(
            db,
            &format!("SELECT row_to_json(t)::text FROM {table} t WHERE {cond} ORDER BY id"),
        );
        assert_eq!(
            String::from_utf8(bytes).unwrap().trim_end(),
            want,
            "{table}"
        );
        assert_eq!(file.records, want.lines().count() as u64);
    }
    assert!(!out.path().join("crm.companies.ndjson").exists());
    assert!(m.message.contains("exported 22 rows"), "{}", m.message);
}

#[tokio::test]
async fn export_keeps_awkward_text_exact() {
    let (pg, url) = crm("export_awkward");
    let db = db_name(&url);
    let body =
        "O'Brien back\\slash \"quoted\", comma; tab\t newline\n CR\r ünïcødé 🎉 \u{1} NUL-free";
    let escaped = body.replace('\'', "''");
    pg.psql(
        db,
        &format!(
            "INSERT INTO crm.notes (id, contact_id, body, created_at) VALUES (9999, 7, E'{}', now())",
            escaped
                .replace('\\', "\\\\")
                .replace('\t', "\\t")
                .replace('\n', "\\n")
                .replace('\r', "\\r")
                .replace('\u{1}', "\\x01")
        ),
    );
    let out = tempfile::tempdir().unwrap();
    let m = run(&task(&url, JobStep::Export, email(JANE), out.path())).await;
    ok(&m);
    assert_eq!(m.tables["crm.notes"].rows, 5);
    let notes = std::fs::read_to_string(out.path().join("crm.notes.ndjson")).unwrap();
    let last: serde_json::Value = serde_json::from_str(notes.lines().last().unwrap()).unwrap();
    assert_eq!(last["id"], 9999);
    assert_eq!(last["body"], body);
}

#[tokio::test]
async fn company_subject_exports_its_contacts_and_their_records() {
    let (_pg, url) = crm("export_company");
    let out = tempfile::tempdir().unwrap();
    let ids = IdentifierSet {
        customer_id: Some("C-00003".into()),
        ..Default::default()
    };
    let m = run(&task(&url, JobStep::Export, ids, out.path())).await;
    ok(&m);
    // Company 3 has contacts 3, 53, …, 453 (10) and deals 3 and 53.
    assert_eq!(m.tables["crm.companies"].rows, 1);
    assert_eq!(m.tables["crm.contacts"].rows, 10);
    assert_eq!(m.tables["crm.notes"].rows, 40);
    assert_eq!(m.tables["crm.call_recordings"].rows, 30);
    assert_eq!(m.tables["crm.deals"].rows, 2);
    assert_eq!(
        m.tables["crm.tickets"].rows, 0,
        "tickets are found by e-mail only"
    );
}

#[tokio::test]
async fn soft_delete_hides_rows_and_restore_brings_them_back() {
    let (pg, url) = crm("soft_delete");
    let db = db_name(&url);
    let before = fingerprint(pg, db, "7");
    let full_before = fingerprint(pg, db, "");
    let out = tempfile::tempdir().unwrap();
    let m = run(&task(&url, JobStep::SoftDelete, email(JANE), out.path())).await;
    ok(&m);
    for (table, cond) in OWNED {
        let hidden = count(pg, db, table, &format!("{cond} AND deleted_at IS NOT NULL"));
        let all = count(pg, db, table, cond);
        assert!(all > 0 && hidden == all, "{table}: {hidden}/{all} hidden");
        assert_eq!(m.tables[table].rows, all, "{table}");
    }
    assert_eq!(
        count(pg, db, "crm.tickets", "deleted_at IS NOT NULL"),
        2,
        "tickets found by e-mail are hidden too"
    );
    assert_eq!(
        count(pg, db, "crm.deals", "deleted_at IS NOT NULL"),
        0,
        "detached deals belong to the company"
    );
    assert_eq!(fingerprint(pg, db, "7"), before, "other subjects untouched");

    // Running it again changes nothing and keeps the first timestamps.
    let stamp = pg.psql(db, "SELECT deleted_at FROM crm.contacts WHERE id = 7");
    let again = run(&task(&url, JobStep::SoftDelete, email(JANE), out.path())).await;
    ok(&again);
    assert_eq!(again.total_rows(), 0);
    assert_eq!(
        pg.psql(db, "SELECT deleted_at FROM crm.contacts WHERE id = 7"),
        stamp
    );

    let r = run(&task(&url, JobStep::Restore, email(JANE), out.path())).await;
    ok(&r);
    assert_eq!(r.total_rows(), m.total_rows());
    assert_eq!(
        fingerprint(pg, db, ""),
        full_before,
        "every row back as it was"
    );
}

#[tokio::test]
async fn purge_deletes_anonymises_detaches_and_verifies() {
    let (pg, url) = crm("purge");
    let db = db_name(&url);
    let before = fingerprint(pg, db, "7");
    let out = tempfile::tempdir().unwrap();
    let m = run(&task(&url, JobStep::Purge, email(JANE), out.path())).await;
    ok(&m);
    for (table, cond) in OWNED {
        assert_eq!(count(pg, db, table, cond), 0, "{table}");
    }
    assert_eq!(m.tables["crm.notes"].rows, 4);
    assert_eq!(m.tables["crm.call_recordings"].rows, 3);
    assert_eq!(m.tables["crm.deals"].detached, 1);
    assert_eq!(
        m.tables["crm.tickets"].rows, 2,
        "tickets anonymised, not deleted"
    );
    // Deal 7 stays with its company, unlinked from the contact.
    assert_eq!(
        pg.psql(
            db,
            "SELECT coalesce(contact_id::text, 'null') FROM crm.deals WHERE id = 7"
        ),
        "null"
    );
    // Tickets: e-mail hashed with the salt, name masked, body nulled, the rest kept.
    let tickets = pg.psql(
        db,
        "SELECT requester_email, requester_name, coalesce(body, 'null'), subject FROM crm.tickets WHERE id IN (13, 14) ORDER BY id",
    );
    let hash = |v: &str| hex::encode(Sha256::digest(format!("pepper{v}").as_bytes()));
    assert_eq!(
        tickets,
        format!(
            "{}|{MASK}|null|Ticket 1 from 7\n{}|{MASK}|null|Ticket 2 from 7",
            hash("contact7@example.com"),
            hash("CONTACT7@EXAMPLE.COM")
        )
    );
    let v = m.verification.as_ref().unwrap();
    assert!(v.passed);
    assert_eq!(v.remaining.len(), ALL_TABLES.len());
    assert!(v.remaining.values().all(|n| *n == 0), "{v:?}");
    assert_eq!(fingerprint(pg, db, "7"), before, "other subjects untouched");

    // A rerun (e.g. after a lost manifest) finds nothing and still verifies.
    let again = run(&task(&url, JobStep::Purge, email(JANE), out.path())).await;
    ok(&again);
    assert_eq!(again.total_rows(), 0);
    assert!(again.verification.unwrap().passed);
}

#[tokio::test]
async fn purge_by_user_id_and_phone_finds_the_same_contact() {
    let (pg, url) = crm("purge_other_ids");
    let db = db_name(&url);
    let out = tempfile::tempdir().unwrap();
    let ids = IdentifierSet {
        user_id: Some("u-8".into()),
        ..Default::default()
    };
    ok(&run(&task(&url, JobStep::Purge, ids, out.path())).await);
    assert_eq!(count(pg, db, "crm.contacts", "id = 8"), 0);
    assert_eq!(count(pg, db, "crm.notes", "contact_id = 8"), 0);
    assert_eq!(
        count(
            pg,
            db,
            "crm.tickets",
            "requester_email = 'contact8@example.com'"
        ),
        1,
        "no e-mail given: tickets are not found"
    );

    let phone = IdentifierSet {
        phone: Some("+44 (20) 7946-0009".into()),
        ..Default::default()
    };
    ok(&run(&task(&url, JobStep::Purge, phone, out.path())).await);
    assert_eq!(count(pg, db, "crm.contacts", "id = 9"), 0);
    assert_eq!(count(pg, db, "crm.contacts", "true"), 498);
}

#[tokio::test]
async fn killed_mid_purge_changes_nothing() {
    let (pg, url) = crm("purge_abort");
    let db = db_name(&url);
    let before = fingerprint(pg, db, "");
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
        assert_eq!(m.outcome, Outcome::Failed);
        assert_eq!(m.reason.as_deref(), Some("Aborted"));
        assert!(m.tables.is_empty() && m.verification.is_none());
        assert_eq!(
            fingerprint(pg, db, ""),
            before,
            "rolled back after {after} statements"
        );
    }
    // And the rerun completes.
    ok(&run(&t).await);
    assert_eq!(count(pg, db, "crm.contacts", "id = 7"), 0);
}

#[tokio::test]
async fn killed_mid_soft_delete_changes_nothing() {
    let (pg, url) = crm("softdel_abort");
    let db = db_name(&url);
    let before = fingerprint(pg, db, "");
    let out = tempfile::tempdir().unwrap();
    let t = task(&url, JobStep::SoftDelete, email(JANE), out.path());
    let m = run_task(
        &t,
        &Options {
            abort_after_statements: Some(4),
        },
    )
    .await;
    assert_eq!(m.reason.as_deref(), Some("Aborted"));
    assert_eq!(fingerprint(pg, db, ""), before);
}

#[tokio::test]
async fn restrict_sets_the_purpose_columns() {
    let (pg, url) = crm("restrict");
    let db = db_name(&url);
    let out = tempfile::tempdir().unwrap();
    let mut t = task(&url, JobStep::Restrict, email(JANE), out.path());
    t.purposes = vec!["marketing-email".into()];
    let m = run(&t).await;
    ok(&m);
    assert_eq!(m.tables["crm.contacts"].rows, 1);
    assert_eq!(
        pg.psql(
            db,
            "SELECT marketing_opt_in, do_not_contact FROM crm.contacts WHERE id = 7"
        ),
        "f|t",
        "the purpose's columns, and the `all` action that applies to every restriction"
    );
    let mut t = task(
        &url,
        JobStep::Restrict,
        email("contact8@example.com"),
        out.path(),
    );
    t.purposes = vec!["profiling".into()];
    let m = run(&t).await;
    ok(&m);
    assert_eq!(
        pg.psql(
            db,
            "SELECT marketing_opt_in, do_not_contact FROM crm.contacts WHERE id = 8"
        ),
        "t|t",
        "another purpose leaves marketing_opt_in alone"
    );
    assert_eq!(
        count(
            pg,
            db,
            "crm.contacts",
            "NOT marketing_opt_in OR do_not_contact"
        ),
        2,
        "other contacts untouched"
    );
    // Idempotent: restricting again touches the same row and changes nothing.
    ok(&run(&t).await);
    assert_eq!(count(pg, db, "crm.contacts", "do_not_contact"), 2);
}

#[tokio::test]
async fn rectify_updates_declared_fields_only() {
    let (pg, url) = crm("rectify");
    let db = db_name(&url);
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
            table: Some("crm.contacts".into()),
            value: "O'Brien; DROP TABLE crm.notes".into(),
        },
    ];
    let m = run(&t).await;
    ok(&m);
    assert_eq!(m.tables["crm.contacts"].rows, 1);
    assert_eq!(
        pg.psql(
            db,
            "SELECT phone || '|' || last_name FROM crm.contacts WHERE id = 7"
        ),
        "+49 151 1234567|O'Brien; DROP TABLE crm.notes"
    );
    assert_eq!(
        pg.psql(db, "SELECT phone FROM crm.sms WHERE id = 25"),
        "+44 20 7946 0007",
        "sms.phone is not rectifiable"
    );

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
    assert_eq!(m.reason.as_deref(), Some("InvalidTask"));
    assert!(
        m.message.contains("not declared rectifiable"),
        "{}",
        m.message
    );
}

#[tokio::test]
async fn subject_without_data_is_a_valid_empty_outcome() {
    let (_pg, url) = crm("no_data");
    let out = tempfile::tempdir().unwrap();
    for step in [JobStep::Export, JobStep::SoftDelete, JobStep::Purge] {
        let m = run(&task(&url, step, email("nobody@example.com"), out.path())).await;
        ok(&m);
        assert_eq!(m.total_rows(), 0, "{step:?}");
        assert!(m.files.is_empty());
    }
}

#[tokio::test]
async fn systems_that_are_not_exportable_are_refused_by_name() {
    let (_pg, url) = crm("not_exportable");
    let out = tempfile::tempdir().unwrap();
    let mut t = task(&url, JobStep::Export, email(JANE), out.path());
    t.system.spec.exportable = false;
    t.system.spec.vendor = Some(
        serde_json::from_str(r#"{"name": "Acme Dialer", "contact": "privacy@acme.example"}"#)
            .unwrap(),
    );
    let m = run(&t).await;
    assert_eq!(m.reason.as_deref(), Some("InvalidTask"));
    assert!(m.message.contains("Acme Dialer"), "{}", m.message);
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn connection_errors_are_classified() {
    let (pg, url) = crm("conn_errors");
    let out = tempfile::tempdir().unwrap();

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let m = run(&task(
        &format!("postgres://postgres:x@127.0.0.1:{closed}/crm?connect_timeout=5"),
        JobStep::Export,
        email(JANE),
        out.path(),
    ))
    .await;
    assert_eq!(
        m.reason.as_deref(),
        Some("DatabaseUnreachable"),
        "{}",
        m.message
    );

    let wrong = url.replace(pg_support::PASSWORD, "wrong-password");
    let m = run(&task(&wrong, JobStep::Export, email(JANE), out.path())).await;
    assert_eq!(
        m.reason.as_deref(),
        Some("AuthenticationFailed"),
        "{}",
        m.message
    );
    assert!(!m.message.contains("wrong-password"));

    // The test server offers no TLS: sslmode=require must refuse plain text, clearly.
    let m = run(&task(
        &format!("{url}?sslmode=require"),
        JobStep::Export,
        email(JANE),
        out.path(),
    ))
    .await;
    assert_eq!(m.reason.as_deref(), Some("TlsFailed"), "{}", m.message);

    let m = run(&task(
        &pg.url("no_such_db"),
        JobStep::Export,
        email(JANE),
        out.path(),
    ))
    .await;
    assert_eq!(
        m.reason.as_deref(),
        Some("DatabaseNotFound"),
        "{}",
        m.message
    );
}

#[tokio::test]
async fn data_map_errors_are_reported_by_name() {
    let (_pg, url) = crm("map_errors");
    let out = tempfile::tempdir().unwrap();

    let mut t = task(&url, JobStep::Export, email(JANE), out.path());
    let map = t.system.spec.data_map.as_mut().unwrap();
    map.tables[3].name = "crm.notez".into();
    map.tables[1].relations[0].table = "crm.notez".into();
    let m = run(&t).await;
    assert_eq!(m.reason.as_deref(), Some("MissingTable"));
    assert!(m.message.contains("crm.notez"), "{}", m.message);

    let mut t = task(&url, JobStep::Export, email(JANE), out.path());
    t.system.spec.data_map.as_mut().unwrap().tables[1].identity[0].column = "emial".into();
    let m = run(&t).await;
    assert_eq!(m.reason.as_deref(), Some("MissingColumn"));
    assert!(
        m.message.contains("emial") && m.message.contains("crm.contacts"),
        "{}",
        m.message
    );

    let mut t = task(&url, JobStep::Export, email(JANE), out.path());
    // call_recordings -> contacts closes contacts -> calls -> call_recordings.
    let map = t.system.spec.data_map.as_mut().unwrap();
    let back = map.tables[1].relations[0].clone();
    map.tables[5]
        .relations
        .push(privacy_operator::api::datamap::Relation {
            table: "crm.contacts".into(),
            ..back
        });
    let m = run(&t).await;
    assert_eq!(m.reason.as_deref(), Some("CyclicDataMap"));
    assert!(m.message.contains("crm.call_recordings"), "{}", m.message);
}

#[tokio::test]
async fn cli_worker_runs_a_task_file_and_writes_the_manifest() {
    let (pg, url) = crm("cli");
    let db = db_name(&url);
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
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out.join(worker::MANIFEST_FILE)).unwrap()).unwrap();
    ok(&manifest);
    assert!(manifest.verification.unwrap().passed);
    assert_eq!(count(pg, db, "crm.contacts", "id = 7"), 0);

    // A failing task exits non-zero and still leaves a Failed manifest.
    let mut bad = t.clone();
    bad.connection = Some(url.replace(pg_support::PASSWORD, "nope"));
    std::fs::write(&task_file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-operator"))
        .args(["worker", "--task"])
        .arg(&task_file)
        .output()
        .unwrap();
    assert!(!status.status.success());
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out.join(worker::MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest.reason.as_deref(), Some("AuthenticationFailed"));
}

#[tokio::test]
async fn rejected_values_and_foreign_keys_are_explained_without_the_value() {
    let (pg, url) = crm("rejected");
    let db = db_name(&url);
    let out = tempfile::tempdir().unwrap();
    let mut t = task(&url, JobStep::Rectify, email(JANE), out.path());
    // calls.duration_s is an integer column.
    let calls = t.system.spec.data_map.as_mut().unwrap().tables[4].clone();
    assert_eq!(calls.name, "crm.calls");
    t.system.spec.data_map.as_mut().unwrap().tables[4]
        .fields
        .push(serde_json::from_str(r#"{"name": "duration_s", "rectifiable": true}"#).unwrap());
    t.changes = vec![FieldChange {
        field: "duration_s".into(),
        table: None,
        value: "secret-value-42".into(),
    }];
    let m = run(&t).await;
    assert_eq!(m.reason.as_deref(), Some("DatabaseError"), "{}", m.message);
    assert!(
        m.message.contains("22P02") && !m.message.contains("secret-value"),
        "{}",
        m.message
    );

    // A table outside the data map that references contacts blocks the purge, clearly.
    pg.psql(
        db,
        "CREATE TABLE crm.invoices (id bigint PRIMARY KEY, contact_id bigint REFERENCES crm.contacts (id)); \
         INSERT INTO crm.invoices VALUES (1, 7)",
    );
    let before = fingerprint(pg, db, "");
    let m = run(&task(&url, JobStep::Purge, email(JANE), out.path())).await;
    assert_eq!(m.outcome, Outcome::Failed);
    assert!(
        m.message.contains("invoices_contact_id_fkey") && m.message.contains("data map"),
        "{}",
        m.message
    );
    assert_eq!(fingerprint(pg, db, ""), before, "nothing purged");
}

#[tokio::test]
async fn company_purge_cascades_through_its_contacts() {
    let (pg, url) = crm("purge_company");
    let db = db_name(&url);
    let out = tempfile::tempdir().unwrap();
    let ids = IdentifierSet {
        customer_id: Some("C-00003".into()),
        ..Default::default()
    };
    let m = run(&task(&url, JobStep::Purge, ids, out.path())).await;
    ok(&m);
    // Company 3 owns contacts 3, 53, …, 453 and deals 3 and 53.
    assert_eq!(count(pg, db, "crm.companies", "true"), 49);
    assert_eq!(count(pg, db, "crm.contacts", "company_id = 3"), 0);
    assert_eq!(count(pg, db, "crm.contacts", "true"), 490);
    assert_eq!(count(pg, db, "crm.deals", "true"), 98);
    assert_eq!(count(pg, db, "crm.notes", "true"), 2000 - 40);
    assert_eq!(count(pg, db, "crm.call_recordings", "true"), 1500 - 30);
    assert_eq!(m.tables["crm.contacts"].rows, 10);
    assert_eq!(m.tables["crm.deals"].rows, 2);
    assert!(m.verification.unwrap().passed);
}

#[tokio::test]
async fn worker_process_killed_mid_purge_leaves_everything_in_place() {
    use std::io::Write;
    let (pg, url) = crm("purge_killed");
    let db = db_name(&url);
    let before = fingerprint(pg, db, "");
    let dir = tempfile::tempdir().unwrap();
    let t = task(&url, JobStep::Purge, email(JANE), &dir.path().join("out"));
    let task_file = dir.path().join("task.json");
    std::fs::write(&task_file, serde_json::to_vec(&t).unwrap()).unwrap();

    // Another session holds contact 7's row: the purge deletes the children, then waits on
    // the contact, in the middle of its transaction.
    let mut locker = pg.psql_session(db);
    let stdin = locker.stdin.as_mut().unwrap();
    writeln!(
        stdin,
        "BEGIN; SELECT 1 FROM crm.contacts WHERE id = 7 FOR UPDATE;"
    )
    .unwrap();
    stdin.flush().unwrap();
    pg.wait_for(
        db,
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = current_database() AND a.application_name = 'psql' AND l.locktype = 'transactionid' AND l.granted",
        "1",
    );
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_privacy-operator"))
        .args(["worker", "--task"])
        .arg(&task_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    pg.wait_for(
        db,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'privacy-operator-worker' AND wait_event_type = 'Lock'",
        "1",
    );
    worker.kill().unwrap(); // SIGKILL: no cleanup, no rollback sent
    worker.wait().unwrap();

    // The lock goes; the orphaned backend finishes its statement, finds its client gone and
    // aborts the transaction it never committed.
    writeln!(locker.stdin.as_mut().unwrap(), "ROLLBACK;").unwrap();
    drop(locker.stdin.take());
    locker.wait().unwrap();
    pg.wait_for(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'privacy-operator-worker'",
        "0",
    );
    assert_eq!(
        fingerprint(pg, db, ""),
        before,
        "nothing purged by the killed worker"
    );

    // The Job's next attempt completes.
    ok(&run(&t).await);
    assert_eq!(count(pg, db, "crm.contacts", "id = 7"), 0);
}

#[path = "support/s3.rs"]
mod s3;

/// A task writing into the shared S3 server below `prefix`.
fn s3_task(url: &str, ids: IdentifierSet, prefix: &str) -> Task {
    let mut t = task(url, JobStep::Export, ids, Path::new("/unused"));
    t.storage = s3::shared().target("root");
    t.output = prefix.into();
    t
}

#[tokio::test]
async fn export_streams_into_s3_with_the_manifest_last_and_encrypts_to_the_recipient() {
    use std::io::Read;
    let (_pg, url) = crm("export_s3");
    let plain = s3_task(&url, email(JANE), "exports/shop/req-1/crm");
    let m = worker::run_and_write(&plain, &Options::default())
        .await
        .unwrap();
    ok(&m);
    let store = privacy_operator::storage::Store::open(&plain.storage)
        .unwrap()
        .child(&plain.output);
    let stored: Manifest =
        serde_json::from_slice(&store.get("manifest.json").await.unwrap().unwrap()).unwrap();
    assert_eq!(stored, m);
    for f in &m.files {
        let bytes = store.get(&f.path).await.unwrap().unwrap();
        assert_eq!(f.sha256, hex::encode(Sha256::digest(&bytes)), "{}", f.path);
    }

    let identity = age::x25519::Identity::generate();
    let mut sealed = s3_task(&url, email(JANE), "exports/shop/req-2/crm");
    sealed.recipient = Some(identity.to_public().to_string());
    let e = worker::run_and_write(&sealed, &Options::default())
        .await
        .unwrap();
    ok(&e);
    let sealed_store = privacy_operator::storage::Store::open(&sealed.storage)
        .unwrap()
        .child(&sealed.output);
    assert_eq!(e.files.len(), m.files.len());
    for (f, p) in e.files.iter().zip(&m.files) {
        assert_eq!(f.path, format!("{}.age", p.path));
        assert_eq!(f.records, p.records);
        let bytes = sealed_store.get(&f.path).await.unwrap().unwrap();
        assert_eq!(f.sha256, hex::encode(Sha256::digest(&bytes)));
        let mut clear = Vec::new();
        age::Decryptor::new(&bytes[..])
            .unwrap()
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut clear)
            .unwrap();
        assert_eq!(clear, store.get(&p.path).await.unwrap().unwrap());
    }
}

#[tokio::test]
async fn storage_down_fails_the_export_and_publishes_nothing() {
    let (_pg, url) = crm("export_s3_down");
    let mut server = s3::S3::start();
    let mut t = task(&url, JobStep::Export, email(JANE), Path::new("/unused"));
    t.storage = server.target("root").with_option("max_retries", "0");
    t.output = "exports/shop/req-1/crm".into();
    server.stop();
    let m = run_task(&t, &Options::default()).await;
    assert_eq!(m.outcome, Outcome::Failed);
    assert_eq!(
        m.reason.as_deref(),
        Some("StorageUnreachable"),
        "{}",
        m.message
    );
    assert!(m.files.is_empty());
    let e = worker::write_manifest(&t, &m).await.unwrap_err();
    assert_eq!(e.reason, "StorageUnreachable");
}
