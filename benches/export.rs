//! Export throughput of the PostgreSQL connector into object storage (a real S3 server,
//! s3s-fs, checking signatures) against `psql \copy` of the same rows to a file, side by side
//! in one run (absolute times drift on these machines; the ratio is the figure).
//! Run with `cargo bench --bench export` (needs PostgreSQL 15 and s3s-fs:
//! `scripts/setup/postgres.sh`, `scripts/setup/s3.sh`).

#[path = "../tests/support/postgres.rs"]
mod pg_support;
#[path = "../tests/support/s3.rs"]
mod s3;

use std::path::Path;
use std::time::{Duration, Instant};

use privacy_operator::api::DataSystemSpec;
use privacy_operator::api::subject::IdentifierSet;
use privacy_operator::plan::jobs::JobStep;
use privacy_operator::worker::postgres::Options;
use privacy_operator::worker::run_task;
use privacy_operator::worker::task::{CONTRACT_VERSION, Outcome, RequestRef, SystemRef, Task};

const ROWS: u64 = 100_000;
/// Timed rounds of each variant.
const ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(export_of_100k_related_rows_against_psql_copy());
}

async fn export_of_100k_related_rows_against_psql_copy() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm");
    let pg = pg_support::shared();
    pg.psql("postgres", "CREATE DATABASE bench");
    pg.psql_file("bench", &fixtures.join("schema.sql"));
    pg.psql_file("bench", &fixtures.join("data.sql"));
    pg.psql(
        "bench",
        &format!(
            "INSERT INTO crm.notes (id, contact_id, body, created_at) \
             SELECT 100000 + i, 7, 'Bulk note ' || i || repeat(' lorem ipsum', 8), now() \
             FROM generate_series(1, {ROWS}) AS i; ANALYZE"
        ),
    );
    // An identical copy for the hand-written erasure the purge is compared with.
    pg.psql("postgres", "CREATE DATABASE bench_ref TEMPLATE bench");
    let yaml = std::fs::read_to_string(fixtures.join("datasystem.yaml")).unwrap();
    let spec: DataSystemSpec = serde_yaml_ng::from_str(&yaml).unwrap();
    let ids = IdentifierSet {
        email: Some("contact7@example.com".into()),
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let task = Task {
        version: CONTRACT_VERSION.into(),
        request: RequestRef {
            namespace: "bench".into(),
            name: "bench".into(),
            digest: ids.digest(b"bench"),
            uid: None,
        },
        step: JobStep::Export,
        system: SystemRef {
            name: "crm".into(),
            spec,
        },
        connection: Some(pg.url("bench")),
        identifiers: ids,
        changes: vec![],
        purposes: vec![],
        hash_salt: None,
        webhook: None,
        quarantine: None,
        quarantine_key: None,
        credentials: Default::default(),
        storage: s3::shared().target("bench"),
        output: "exports/bench/bench/crm".into(),
        recipient: None,
    };

    let local = Task {
        storage: privacy_operator::storage::StorageTarget::new(format!(
            "file://{}",
            out.path().join("store").display()
        )),
        ..task.clone()
    };
    let signed = Task {
        storage: s3::shared()
            .target("bench")
            .with_option("aws_unsigned_payload", "true"),
        output: "exports/bench/bench-signed/crm".into(),
        ..task.clone()
    };
    let encrypted = Task {
        output: "exports/bench/bench-age/crm".into(),
        recipient: Some(age::x25519::Identity::generate().to_public().to_string()),
        ..task.clone()
    };
    let copy_file = out.path().join("copy.ndjson");
    let copy = || {
        let start = Instant::now();
        pg.psql(
            "bench",
            &format!(
                "\\copy (SELECT row_to_json(t) FROM crm.notes t WHERE contact_id = 7 ORDER BY id) TO '{}'",
                copy_file.display()
            ),
        );
        start.elapsed()
    };
    async fn timed(task: &Task) -> (Duration, u64) {
        let start = Instant::now();
        let m = run_task(task, &Options::default()).await;
        let took = start.elapsed();
        assert_eq!(m.outcome, Outcome::Succeeded, "{m:?}");
        assert!(m.tables["crm.notes"].rows > ROWS);
        (took, m.total_rows())
    }

    let rss_before = peak_rss_kib();
    // One untimed round warms the caches and connections of both sides; then rounds
    // alternate the variants so drift hits them alike, and medians are compared.
    timed(&task).await;
    copy();
    let (mut ours, mut psql, mut disk, mut sig, mut age) = (vec![], vec![], vec![], vec![], vec![]);
    let mut rows = 0;
    for _ in 0..ROUNDS {
        let (t, n) = timed(&task).await;
        ours.push(t);
        rows = n;
        psql.push(copy());
        disk.push(timed(&local).await.0);
        sig.push(timed(&signed).await.0);
        age.push(timed(&encrypted).await.0);
    }
    let psql = median(psql);
    let ratio = |d: Duration| psql.as_secs_f64() / d.as_secs_f64();
    let ours = median(ours);
    println!(
        "export of {rows} rows (median of {ROUNDS}): psql \\copy to a file {psql:?}; \
         worker into S3 (s3s-fs) {ours:?}, ratio {:.2} (>= 0.7 wanted); \
         peak RSS of the bench process {} MiB (was {} MiB before)",
        ratio(ours),
        peak_rss_kib() / 1024,
        rss_before / 1024,
    );
    for (what, d) in [
        ("into a local-filesystem store", median(disk)),
        (
            "into S3, payload not hashed into the signature",
            median(sig),
        ),
        ("into S3, age-encrypted", median(age)),
    ] {
        println!("  worker {what}: {d:?}, ratio {:.2}", ratio(d));
    }

    // Erasure of the same subject: the purge (with its verification scans) against the
    // plain statements a DBA would type, in one transaction.
    let purge = Task {
        step: JobStep::Purge,
        ..task.clone()
    };
    let start = Instant::now();
    let m = run_task(&purge, &Options::default()).await;
    let ours = start.elapsed();
    assert_eq!(m.outcome, Outcome::Succeeded, "{m:?}");
    let start = Instant::now();
    pg.psql(
        "bench_ref",
        "BEGIN; \
         UPDATE crm.deals SET contact_id = NULL WHERE contact_id = 7; \
         DELETE FROM crm.call_recordings WHERE call_id IN (SELECT id FROM crm.calls WHERE contact_id = 7); \
         DELETE FROM crm.calls WHERE contact_id = 7; DELETE FROM crm.notes WHERE contact_id = 7; \
         DELETE FROM crm.sms WHERE contact_id = 7; DELETE FROM crm.tasks WHERE contact_id = 7; \
         DELETE FROM crm.consents WHERE contact_id = 7; DELETE FROM crm.contacts WHERE id = 7; \
         UPDATE crm.tickets SET requester_email = NULL, requester_name = NULL, body = NULL \
           WHERE lower(requester_email) = 'contact7@example.com'; \
         COMMIT",
    );
    let plain = start.elapsed();
    println!(
        "purge of {} rows: worker {:?} (with verification), plain SQL via psql {:?}, ratio {:.2}",
        m.total_rows(),
        ours,
        plain,
        plain.as_secs_f64() / ours.as_secs_f64(),
    );
}
