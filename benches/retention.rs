//! A retention sweep of 1,000,000 expired rows (keyset batches, one statement and one short
//! transaction each) against one `DELETE` of the same rows, side by side on identical copies
//! of the table in one run (absolute times drift on these machines; the ratio is the figure).
//! Prints the speed ratio (target ≥ 0.8) and the longest batch (target ≤ 100 ms: no batch
//! holds row locks longer).
//! Run with `cargo bench --bench retention` (needs PostgreSQL: `scripts/setup/postgres.sh`).

#[path = "../tests/support/postgres.rs"]
mod pg_support;

use std::time::{Duration, Instant};

use privacy_operator::api::DataSystemSpec;
use privacy_operator::api::retention::RetentionAction;
use privacy_operator::plan::jobs::JobStep;
use privacy_operator::worker::retention::{PolicyRef, RetentionTask, RunSpec, run};
use privacy_operator::worker::task::{CONTRACT_VERSION, Outcome, SystemRef};
use serde_json::json;

const EXPIRED: u64 = 1_000_000;
const YOUNG: u64 = 100_000;
/// Rows per batch; `RETENTION_BENCH_BATCH` overrides it.
const BATCH: u32 = 10_000;
const CUTOFF: &str = "2024-01-01T00:00:00Z";
const ROUNDS: usize = 2;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(sweep_of_a_million_rows_against_one_delete());
}

async fn sweep_of_a_million_rows_against_one_delete() {
    let pg = pg_support::shared();
    pg.psql("postgres", "CREATE DATABASE ret_bench");
    pg.psql(
        "ret_bench",
        &format!(
            "CREATE SCHEMA audit; \
             CREATE TABLE audit.events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, \
               actor_email text, payload text); \
             INSERT INTO audit.events \
             SELECT i, timestamptz '2023-01-01 00:00:00+00' + (i % 300) * interval '1 day', \
                    'user' || (i % 5000) || '@example.com', 'event ' || i || repeat(' x', 20) \
             FROM generate_series(1, {EXPIRED}) AS i; \
             INSERT INTO audit.events \
             SELECT {EXPIRED} + i, timestamptz '2024-06-01 00:00:00+00', 'young@example.com', 'event' \
             FROM generate_series(1, {YOUNG}) AS i; \
             CREATE INDEX events_created ON audit.events (created_at)"
        ),
    );
    pg.psql("ret_bench", "VACUUM ANALYZE audit.events");
    let spec: DataSystemSpec = serde_json::from_value(json!({
        "connector": {"type": "SQL", "sql": {"driver": "postgres",
            "connectionSecretRef": {"name": "db", "key": "url"}}},
        "dataMap": {"tables": [{
            "name": "audit.events",
            "identity": [{"column": "actor_email", "identifier": "email"}]
        }]}
    }))
    .expect("spec");

    let batch: u32 = std::env::var("RETENTION_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BATCH);
    let mut best_ref = Duration::MAX;
    let mut best_sweep = Duration::MAX;
    let mut longest_batch = 0u64;
    let mut batches = 0u64;
    for round in 0..ROUNDS {
        let ref_db = format!("ret_bench_ref_{round}");
        let sweep_db = format!("ret_bench_sweep_{round}");
        let _ = pg.database_from("ret_bench", &ref_db);
        let url = pg.database_from("ret_bench", &sweep_db);
        // Warm both copies' caches alike.
        for db in [&ref_db, &sweep_db] {
            pg.psql(db, "SELECT count(*) FROM audit.events");
        }

        let started = Instant::now();
        pg.psql(
            &ref_db,
            &format!("DELETE FROM audit.events WHERE created_at < '{CUTOFF}'"),
        );
        best_ref = best_ref.min(started.elapsed());

        let task = RetentionTask {
            version: CONTRACT_VERSION.into(),
            step: JobStep::RetentionRun,
            policy: PolicyRef {
                namespace: "bench".into(),
                name: "default".into(),
                rule: "old-events".into(),
            },
            system: SystemRef {
                name: "audit".into(),
                spec: spec.clone(),
            },
            connection: Some(url),
            run: RunSpec {
                table: "audit.events".into(),
                age_column: "created_at".into(),
                cutoff: CUTOFF.parse().expect("cutoff"),
                action: RetentionAction::Purge,
                dry_run: false,
                batch_size: batch,
                scheduled: "2025-01-01T00:00:00Z".parse().expect("time"),
            },
            held_digests: vec![],
            hash_salt: None,
            storage: Default::default(),
            output: "/tmp/retention-bench".into(),
        };
        let started = Instant::now();
        let report = run(&task).await;
        best_sweep = best_sweep.min(started.elapsed());
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
        assert_eq!(report.rule_counts().affected, EXPIRED, "{report:#?}");
        assert_eq!(
            pg.psql(&sweep_db, "SELECT count(*) FROM audit.events"),
            YOUNG.to_string()
        );
        longest_batch = longest_batch.max(report.longest_batch_ms);
        batches = report.batches;
        for db in [&ref_db, &sweep_db] {
            pg.psql("postgres", &format!("DROP DATABASE \"{db}\""));
        }
    }
    let ratio = best_ref.as_secs_f64() / best_sweep.as_secs_f64();
    println!(
        "retention sweep of {EXPIRED} rows ({YOUNG} kept): one DELETE {:.2}s, sweep {:.2}s in {batches} batches of about {batch} rows",
        best_ref.as_secs_f64(),
        best_sweep.as_secs_f64()
    );
    println!(
        "speed ratio (DELETE time / sweep time): {ratio:.2}x (target >= 0.8x); longest batch {longest_batch} ms (target <= 100 ms)"
    );
}
