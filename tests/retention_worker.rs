//! Retention runs against a real PostgreSQL server and the CRM fixture (tests/fixtures/crm):
//! exactly the expired rows go (with their Cascade children; Detach children are unlinked),
//! in batches, and nothing else changes; a dry run changes nothing and counts; subjects under
//! a legal hold by digest are left alone; Anonymise keeps rows.

#[path = "support/postgres.rs"]
mod pg_support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pg_support::{Postgres, shared};
use privacy_operator::api::DataSystemSpec;
use privacy_operator::api::retention::RetentionAction;
use privacy_operator::api::subject::IdentifierSet;
use privacy_operator::plan::jobs::JobStep;
use privacy_operator::worker::retention::{
    PolicyRef, RetentionReport, RetentionTask, RunSpec, run, run_and_write,
};
use privacy_operator::worker::task::{CONTRACT_VERSION, Outcome, SystemRef};

const TEMPLATE: &str = "crm_retention_template";
const SALT: &[u8] = b"retention-test-salt-0123456789";
/// Contacts are created at 2024-01-01T00:00Z + n hours: contacts 1..=100 are older.
const CUTOFF: &str = "2024-01-05T04:30:00Z";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm")
}

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

fn crm(name: &str) -> (&'static Postgres, String) {
    let pg = cluster();
    let url = pg.database_from(TEMPLATE, name);
    (pg, url)
}

fn spec() -> DataSystemSpec {
    let yaml = std::fs::read_to_string(fixtures().join("datasystem.yaml")).unwrap();
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn task(url: &str, table: &str, age: &str, cutoff: &str, out: &Path) -> RetentionTask {
    RetentionTask {
        version: CONTRACT_VERSION.into(),
        step: JobStep::RetentionRun,
        policy: PolicyRef {
            namespace: "shop".into(),
            name: "default".into(),
            rule: "old".into(),
        },
        system: SystemRef {
            name: "crm".into(),
            spec: spec(),
        },
        connection: Some(url.into()),
        run: RunSpec {
            table: table.into(),
            age_column: age.into(),
            cutoff: cutoff.parse().unwrap(),
            action: RetentionAction::Purge,
            dry_run: false,
            batch_size: 7,
            scheduled: "2026-01-01T03:00:00Z".parse().unwrap(),
        },
        held_digests: vec![],
        hash_salt: Some(hex::encode(SALT)),
        storage: Default::default(),
        output: out.display().to_string(),
    }
}

fn ok(r: &RetentionReport) {
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:#?}");
}

fn count(pg: &Postgres, db: &str, sql: &str) -> u64 {
    pg.psql(db, sql).parse().unwrap()
}

/// A digest of every row of the tables the runs must not touch beyond their scope.
fn rows(pg: &Postgres, db: &str, table: &str, filter: &str) -> String {
    pg.psql(
        db,
        &format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(row_to_json(x)::text, '|' ORDER BY id)), '') FROM {table} x WHERE {filter}"
        ),
    )
}

const OWNED: [(&str, &str); 6] = [
    ("crm.notes", "contact_id"),
    ("crm.calls", "contact_id"),
    ("crm.sms", "contact_id"),
    ("crm.tasks", "contact_id"),
    ("crm.consents", "contact_id"),
    ("crm.deals", "contact_id"),
];

#[tokio::test]
async fn a_purge_deletes_exactly_the_expired_rows_in_batches() {
    let (pg, url) = crm("ret_purge");
    let db = "ret_purge";
    // What must survive: rows of younger contacts, and everything not hanging off contacts.
    let keep: Vec<(String, String)> = OWNED
        .iter()
        .map(|(t, fk)| (t.to_string(), rows(pg, db, t, &format!("{fk} > 100"))))
        .chain([
            (
                "crm.contacts".into(),
                rows(pg, db, "crm.contacts", "id > 100"),
            ),
            (
                "crm.companies".into(),
                rows(pg, db, "crm.companies", "true"),
            ),
            ("crm.tickets".into(), rows(pg, db, "crm.tickets", "true")),
            (
                "crm.call_recordings".into(),
                rows(pg, db, "crm.call_recordings", "call_id > 300"),
            ),
        ])
        .collect();
    let deals_before = rows(pg, db, "crm.deals", "true");
    let out = tempfile::tempdir().unwrap();
    let t = task(&url, "crm.contacts", "created_at", CUTOFF, out.path());
    let report = run_and_write(&t).await.unwrap();
    ok(&report);
    let c = report.rule_counts();
    assert_eq!(
        (c.matched, c.affected, c.held),
        (100, 100, 0),
        "{report:#?}"
    );
    // 100 rows in batches of 7: 15 batches (the last one short ends the run).
    assert_eq!(report.batches, 15);
    assert_eq!(report.tables["crm.notes"].affected, 400);
    assert_eq!(report.tables["crm.call_recordings"].affected, 300);
    assert_eq!(report.tables["crm.deals"].detached, 100);
    assert!(
        report.message.contains("100 rows of crm.contacts"),
        "{}",
        report.message
    );

    assert_eq!(
        count(pg, db, "SELECT count(*) FROM crm.contacts WHERE id <= 100"),
        0
    );
    for (t, fk) in OWNED.iter().take(5) {
        assert_eq!(
            count(
                pg,
                db,
                &format!("SELECT count(*) FROM {t} WHERE {fk} <= 100")
            ),
            0,
            "{t}"
        );
    }
    assert_eq!(
        count(
            pg,
            db,
            "SELECT count(*) FROM crm.call_recordings WHERE call_id <= 300"
        ),
        0
    );
    // Deals of expired contacts are kept, unlinked.
    assert_eq!(count(pg, db, "SELECT count(*) FROM crm.deals"), 100);
    assert_eq!(
        count(
            pg,
            db,
            "SELECT count(*) FROM crm.deals WHERE contact_id IS NULL"
        ),
        100
    );
    assert_ne!(deals_before, rows(pg, db, "crm.deals", "true"));
    for (t, before) in keep {
        let filter = match t.as_str() {
            "crm.contacts" => "id > 100",
            "crm.companies" | "crm.tickets" => "true",
            "crm.call_recordings" => "call_id > 300",
            _ => "contact_id > 100",
        };
        assert_eq!(
            rows(pg, db, &t, filter),
            before,
            "{t} changed beyond the expired rows"
        );
    }
    // The report is in the output location.
    let written: RetentionReport =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(written, report);

    // A second run finds nothing left to do.
    let again = run(&t).await;
    ok(&again);
    assert_eq!(again.rule_counts().matched, 0);
}

#[tokio::test]
async fn large_batches_go_by_page_ranges_with_the_same_result() {
    let (pg, url) = crm("ret_pages");
    let db = "ret_pages";
    pg.psql(db, "ANALYZE");
    let untouched = rows(pg, db, "crm.notes", "contact_id > 100");
    let out = tempfile::tempdir().unwrap();
    let mut t = task(&url, "crm.contacts", "created_at", CUTOFF, out.path());
    t.run.batch_size = 200;
    let report = run(&t).await;
    ok(&report);
    let c = report.rule_counts();
    assert_eq!((c.matched, c.affected), (100, 100), "{report:#?}");
    assert!(report.batches >= 2, "{report:#?}");
    assert_eq!(report.tables["crm.call_recordings"].affected, 300);
    assert_eq!(report.tables["crm.deals"].detached, 100);
    assert_eq!(count(pg, db, "SELECT count(*) FROM crm.contacts"), 400);
    assert_eq!(
        count(pg, db, "SELECT count(*) FROM crm.contacts WHERE id <= 100"),
        0
    );
    assert_eq!(count(pg, db, "SELECT count(*) FROM crm.notes"), 1600);
    assert_eq!(rows(pg, db, "crm.notes", "contact_id > 100"), untouched);
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_counts() {
    let (pg, url) = crm("ret_dry");
    let db = "ret_dry";
    let before: Vec<String> = [
        "crm.contacts",
        "crm.notes",
        "crm.deals",
        "crm.call_recordings",
    ]
    .iter()
    .map(|t| rows(pg, db, t, "true"))
    .collect();
    let out = tempfile::tempdir().unwrap();
    let mut t = task(&url, "crm.contacts", "created_at", CUTOFF, out.path());
    t.run.dry_run = true;
    let report = run(&t).await;
    ok(&report);
    let c = report.rule_counts();
    assert_eq!((c.matched, c.affected), (100, 0));
    assert_eq!(report.tables["crm.notes"].matched, 400);
    assert_eq!(report.tables["crm.notes"].affected, 0);
    assert!(
        report.message.contains("would delete 100"),
        "{}",
        report.message
    );
    let after: Vec<String> = [
        "crm.contacts",
        "crm.notes",
        "crm.deals",
        "crm.call_recordings",
    ]
    .iter()
    .map(|t| rows(pg, db, t, "true"))
    .collect();
    assert_eq!(before, after);
}

#[tokio::test]
async fn held_subjects_are_left_alone_and_counted() {
    let (pg, url) = crm("ret_hold");
    let db = "ret_hold";
    let out = tempfile::tempdir().unwrap();
    let mut t = task(&url, "crm.contacts", "created_at", CUTOFF, out.path());
    // Contact 7 (stored as Contact7@Example.COM), held by a request that named the e-mail
    // only; contact 8, by a request that named e-mail and user id.
    let seven = IdentifierSet {
        email: Some("contact7@example.com".into()),
        ..Default::default()
    };
    let eight = IdentifierSet {
        email: Some("contact8@example.com".into()),
        user_id: Some("u-8".into()),
        ..Default::default()
    };
    t.held_digests = vec![seven.digest(SALT), eight.digest(SALT)];
    let report = run(&t).await;
    ok(&report);
    let c = report.rule_counts();
    assert_eq!((c.matched, c.affected, c.held), (100, 98, 2), "{report:#?}");
    assert_eq!(
        pg.psql(
            db,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM crm.contacts WHERE id <= 100"
        ),
        "7,8"
    );
    assert_eq!(
        count(
            pg,
            db,
            "SELECT count(*) FROM crm.notes WHERE contact_id IN (7, 8)"
        ),
        8
    );

    // A rule on a child table finds the subject through the parent chain: contact 7's calls
    // (ids 19..21) stay.
    let mut calls = task(
        &url,
        "crm.calls",
        "started_at",
        "2024-03-01T02:00:00Z",
        out.path(),
    );
    calls.held_digests = vec![seven.digest(SALT)];
    let report = run(&calls).await;
    ok(&report);
    // Calls 1..=23 started before the cutoff; 1..=18 belonged to deleted contacts already.
    let c = report.rule_counts();
    assert_eq!((c.matched, c.held), (5, 3), "{report:#?}");
    assert_eq!(
        pg.psql(
            db,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM crm.calls WHERE id <= 23"
        ),
        "19,20,21"
    );
}

#[tokio::test]
async fn anonymise_keeps_rows_and_applies_the_strategies() {
    let (pg, url) = crm("ret_anon");
    let db = "ret_anon";
    // The fixture's tickets have no timestamp: add one for this test.
    pg.psql(
        db,
        "ALTER TABLE crm.tickets ADD COLUMN created_at timestamptz; \
         UPDATE crm.tickets SET created_at = timestamptz '2020-01-01 00:00:00+00' + id * interval '1 day'",
    );
    let untouched = rows(pg, db, "crm.tickets", "id > 50");
    let out = tempfile::tempdir().unwrap();
    let mut t = task(
        &url,
        "crm.tickets",
        "created_at",
        "2020-02-20T12:00:00Z",
        out.path(),
    );
    t.run.action = RetentionAction::Anonymise;
    let report = run(&t).await;
    ok(&report);
    assert_eq!(report.rule_counts().affected, 50, "{report:#?}");
    assert_eq!(count(pg, db, "SELECT count(*) FROM crm.tickets"), 1000);
    assert_eq!(
        count(
            pg,
            db,
            "SELECT count(*) FROM crm.tickets WHERE id <= 50 AND requester_name = '********' AND body IS NULL AND requester_email ~ '^[0-9a-f]{64}$'"
        ),
        50
    );
    assert_eq!(rows(pg, db, "crm.tickets", "id > 50"), untouched);
}

#[tokio::test]
async fn a_missing_age_column_is_reported_by_name() {
    let (_pg, url) = crm("ret_missing");
    let out = tempfile::tempdir().unwrap();
    let t = task(&url, "crm.contacts", "closed_at", CUTOFF, out.path());
    let report = run(&t).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(report.reason.as_deref(), Some("MissingColumn"));
    assert!(report.message.contains("closed_at"), "{}", report.message);
}
