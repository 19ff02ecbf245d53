//! The erasure ledger, end to end: an erasure run by the controller against the emulator and
//! the PostgreSQL worker against a real CRM appends one ledger entry when its purge completes
//! (keyed hashes, no identifier in clear); after a restore from a backup brings the rows
//! back, setting `restoredFromBackup` on the DataSystem runs a replay that erases them again,
//! with the keyed hashes computed in SQL (pgcrypto) or in the worker.

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "consent_support/mod.rs"]
mod consent_support;
#[path = "support/postgres.rs"]
mod pg_support;
#[path = "controller_support/mod.rs"]
mod support;

use consent_support::{
    DEADLINE, JANE, LEDGER_KEY, connection_secret, crm, crm_spec, restart_with_ledger,
    run_request_job, table_digest, wait_job,
};
use jiff::SignedDuration;
use kube::api::Api;
use pg_support::Postgres;
use privacy_operator::api::{
    DataSystem, IdentifierKind, datasystem::ReplayPhase, request::RequestPhase,
};
use privacy_operator::controller::Clock;
use privacy_operator::ledger::{LedgerEntry, LedgerKey};
use privacy_operator::plan::timeline::fmt;
use serde_json::{Value, json};
use support::{Bench, NS, condition};

/// Contact 7's rows, table by table (parents first), as the fixture lays them out.
const OWNED: [(&str, &str); 7] = [
    ("contacts", "id = 7"),
    ("notes", "contact_id = 7"),
    ("calls", "contact_id = 7"),
    ("call_recordings", "call_id IN (19, 20, 21)"),
    ("sms", "contact_id = 7"),
    ("tasks", "contact_id = 7"),
    ("consents", "contact_id = 7"),
];

/// The CRM DataSystem under `name`: every test names its own, since the tests of this binary
/// share one ledger (as systems of one operator do).
fn crm_system(name: &str, extra: Value) -> Value {
    let mut spec = crm_spec();
    spec["connector"]["sql"]["connectionSecretRef"]["name"] = json!("crm-db");
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1", "kind": "DataSystem",
        "metadata": {"name": name}, "spec": spec,
    })
}

fn erasure(name: &str) -> Value {
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": name},
        "spec": {
            "type": "Erasure",
            "regulation": "GDPR",
            "subject": {"identifiers": {"email": JANE}},
            "verification": {"method": "Email", "verifiedBy": "support-desk",
                             "verifiedAt": "2024-01-01T00:00:00Z"}
        }
    })
}

/// Copies contact 7's rows (and what points at them) into schema `backup`: the backup.
fn take_backup(pg: &Postgres, db: &str) {
    let mut sql = String::from("CREATE SCHEMA backup;");
    for (table, pred) in OWNED {
        sql.push_str(&format!(
            "CREATE TABLE backup.{table} AS SELECT * FROM crm.{table} WHERE {pred};"
        ));
    }
    sql.push_str(
        "CREATE TABLE backup.tickets AS SELECT * FROM crm.tickets WHERE lower(requester_email) = 'contact7@example.com';\
         CREATE TABLE backup.deals AS SELECT * FROM crm.deals WHERE contact_id = 7;",
    );
    pg.psql(db, &sql);
}

/// Restores the backup: the rows come back as they were.
fn restore_backup(pg: &Postgres, db: &str) {
    let mut sql = String::new();
    for (table, _) in OWNED {
        sql.push_str(&format!(
            "INSERT INTO crm.{table} SELECT * FROM backup.{table};"
        ));
    }
    sql.push_str(
        "UPDATE crm.tickets t SET requester_email = b.requester_email, requester_name = b.requester_name, body = b.body FROM backup.tickets b WHERE t.id = b.id;\
         UPDATE crm.deals d SET contact_id = b.contact_id FROM backup.deals b WHERE d.id = b.id;",
    );
    pg.psql(db, &sql);
}

/// Rows that identify contact 7 across the owned tables and tickets.
fn subject_rows(pg: &Postgres, db: &str) -> i64 {
    let mut total = 0;
    for (table, pred) in OWNED {
        total += pg
            .psql(
                db,
                &format!("SELECT count(*) FROM crm.{table} WHERE {pred}"),
            )
            .parse::<i64>()
            .unwrap();
    }
    total
        + pg.psql(
            db,
            "SELECT count(*) FROM crm.tickets WHERE lower(requester_email) = 'contact7@example.com'",
        )
        .parse::<i64>()
        .unwrap()
}

/// Digests of every row not belonging to contact 7 (to prove nothing else changes).
fn others(pg: &Postgres, db: &str) -> Vec<String> {
    let mut out: Vec<String> = OWNED
        .iter()
        .map(|(table, pred)| {
            pg.psql(
                db,
                &format!(
                    "SELECT count(*) || ':' || md5(string_agg(row_to_json(x)::text, '|' ORDER BY id)) FROM crm.{table} x WHERE NOT ({pred})"
                ),
            )
        })
        .collect();
    out.push(table_digest(pg, db, "crm.companies", &[]));
    out.push(pg.psql(
        db,
        "SELECT md5(string_agg(row_to_json(x)::text, '|' ORDER BY id)) FROM crm.tickets x WHERE id NOT IN (13, 14)",
    ));
    out
}

/// Runs an erasure of contact 7 through soft delete and purge; returns the request name's
/// ledger entry.
async fn erase_contact7(bench: &Bench, request: &str) -> LedgerEntry {
    bench.put(erasure(request));
    let soft = bench.wait_jobs(request, "soft-delete", 1).await;
    let m = run_request_job(bench, &soft[0]).await;
    assert!(m.total_rows() >= 20, "{m:#?}");
    bench.wait_condition(request, "SoftDeleted", "True").await;
    // The restore window passes; the purge runs.
    bench.clock.advance(SignedDuration::from_hours(24 * 14 + 1));
    let purge = bench.wait_jobs(request, "purge", 1).await;
    let m = run_request_job(bench, &purge[0]).await;
    assert!(m.verification.as_ref().is_some_and(|v| v.passed), "{m:#?}");
    let dsr = bench.wait_condition(request, "Purged", "True").await;
    assert_eq!(condition(&dsr, "Purged").unwrap().0, "True");

    let entries = ledger_files(request);
    assert_eq!(entries.len(), 1, "one entry for {request}: {entries:?}");
    let text = std::fs::read_to_string(&entries[0]).unwrap();
    let entry: LedgerEntry = serde_json::from_str(&text).unwrap();
    assert_eq!(
        Some(&entry.subject),
        dsr.status.as_ref().unwrap().subject_digest.as_ref()
    );
    entry
}

/// Ledger entry files of a request in the bench's storage.
fn ledger_files(request: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![support::storage_dir().join("ledger")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&format!("-{NS}-{request}.json")))
            {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_appends_one_ledger_entry_without_identifiers() {
    let (pg, db, url) = crm("ledger_append");
    let mut bench = Bench::start().await;
    let controller = restart_with_ledger(&mut bench).await;
    bench.put(connection_secret("crm-db", &url));
    bench.put(crm_system("crm-append", json!({})));
    let entry = erase_contact7(&bench, "erase-append").await;
    assert_eq!(subject_rows(pg, &db), 0);

    let text = serde_json::to_string(&entry).unwrap().to_lowercase();
    for secret in ["contact7", "example.com", "u-7", "7946"] {
        assert!(!text.contains(secret), "{secret} in the ledger: {text}");
    }
    assert_eq!(entry.systems.len(), 1);
    assert_eq!(entry.systems[0].name, "crm-append");
    let key = LedgerKey::new(LEDGER_KEY.to_vec()).unwrap();
    assert_eq!(entry.key_id, key.id());
    assert_eq!(
        entry.systems[0].identities,
        [privacy_operator::ledger::IdentityHash {
            kind: IdentifierKind::Email,
            hmac: key.hash(&IdentifierKind::Email, JANE),
        }]
    );
    // Nothing more is appended by later passes.
    bench.clock.tick();
    bench
        .wait_status_phase("erase-append", RequestPhase::Completed)
        .await;
    assert_eq!(ledger_files("erase-append").len(), 1);
    controller.abort();
}

async fn replay_erases_the_restored_rows(db_name: &str, system: &str, pgcrypto: bool) {
    let (pg, db, url) = crm(db_name);
    if pgcrypto {
        pg.psql(&db, "CREATE EXTENSION pgcrypto");
    }
    let mut bench = Bench::start().await;
    let controller = restart_with_ledger(&mut bench).await;
    let backup_at = bench.clock.now() - SignedDuration::from_hours(1);
    take_backup(pg, &db);
    let untouched = others(pg, &db);
    bench.put(connection_secret("crm-db", &url));
    bench.put(crm_system(system, json!({})));
    let request = format!("erase-{db_name}").replace('_', "-");
    erase_contact7(&bench, &request).await;
    assert_eq!(subject_rows(pg, &db), 0);

    // The database is restored from the backup: contact 7 is back.
    restore_backup(pg, &db);
    let restored = subject_rows(pg, &db);
    assert_eq!(restored, 19 + 2, "19 owned rows and 2 tickets");
    bench.put(crm_system(
        system,
        json!({
            "restoredFromBackup": {"backupTakenAt": fmt(backup_at), "note": "disk failure"}
        }),
    ));

    let selector = format!("privacy-operator.dev/replay-of={system}");
    let job = wait_job(&bench, &selector).await;
    let api: Api<DataSystem> = Api::namespaced(bench.client.clone(), NS);
    // The status is written after the Job is created.
    let replay = common::wait_for("the replay Running in status", DEADLINE, || {
        let api = api.clone();
        async move {
            let r = api.get(system).await.ok()?.status?.replay?;
            (r.phase == Some(ReplayPhase::Running)).then_some(r)
        }
    })
    .await;
    assert_eq!(replay.total, 1);
    if !pgcrypto {
        // A task Secret lost while the Job runs (the controller stopped between the two
        // writes) is created again.
        let secrets = bench.secrets_api();
        consent_support::task_bytes(&bench, &job).await;
        secrets
            .delete(&job, &Default::default())
            .await
            .expect("secret deleted");
        bench.clock.tick();
        consent_support::task_bytes(&bench, &job).await;
    }
    let task: privacy_operator::ledger::replay::ReplayTask =
        serde_json::from_slice(&consent_support::task_bytes(&bench, &job).await).unwrap();
    let report = privacy_operator::ledger::replay::run_and_report(&task)
        .await
        .unwrap();
    assert!(report.succeeded, "{report:?}");
    consent_support::mark_job(&bench, &job, true);
    let hashed_in = report.hashed_in.clone();
    assert_eq!(
        hashed_in.as_deref(),
        Some(if pgcrypto { "database" } else { "worker" })
    );

    let system = common::wait_for("the replay's result", DEADLINE, || {
        let api = api.clone();
        async move {
            let s = api.get(system).await.ok()?;
            let r = s.status.as_ref()?.replay.as_ref()?;
            (r.phase == Some(ReplayPhase::Succeeded)).then_some(s)
        }
    })
    .await;
    let status = system.status.unwrap();
    let replay = status.replay.unwrap();
    assert_eq!((replay.total, replay.replayed), (1, 1));
    assert!(replay.rows_erased >= restored, "{replay:?}");
    assert!(
        status.conditions.iter().any(|c| c.type_ == "Replaying"
            && c.status == "False"
            && c.reason == "ReplaySucceeded")
    );
    let name = system.metadata.name.clone().unwrap();
    consent_support::wait_event(&bench, &name, "ReplayStarted").await;
    let note = consent_support::wait_event(&bench, &name, "ReplaySucceeded").await;
    assert!(note.contains("1 subject(s) found again"), "{note}");
    // Erased again, and everything else is as it was before the erasure.
    assert_eq!(subject_rows(pg, &db), 0);
    assert_eq!(others(pg, &db), untouched);
    // A finished replay is not run again.
    bench.resync_rounds(2).await;
    assert_eq!(
        bench
            .jobs_api()
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_system_is_erased_again_by_the_replay_hashing_in_sql() {
    replay_erases_the_restored_rows("ledger_replay_sql", "crm-sql", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_system_is_erased_again_by_the_replay_hashing_in_the_worker() {
    replay_erases_the_restored_rows("ledger_replay_worker", "crm-worker", false).await;
}
