//! Shared by the consent and ledger integration tests: the CRM fixture in a real PostgreSQL,
//! the controller (with a ledger key) against the emulator on a fake clock, and the test
//! playing the Job controller by running each worker Job's task in-process, as the Pod would,
//! before marking the Job finished.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use emulator::ops::{PatchType, Subresource, WriteParams};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use privacy_operator::controller::{self, Clock, Config};
use privacy_operator::ledger::LedgerKeySource;
use privacy_operator::worker::{self, postgres::Options, task::Task};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::common;
use crate::pg_support::{Postgres, shared};
use crate::support::{self, Bench, NS};

pub const TEMPLATE: &str = "crm_template";
/// Contact 7's e-mail as stored is `Contact7@Example.COM`.
pub const JANE: &str = "contact7@example.com";
pub const LEDGER_KEY: &[u8] = b"ledger-test-key-0123456789abcdef";
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm")
}

/// The cluster with the CRM template loaded once.
pub fn cluster() -> &'static Postgres {
    static LOADED: OnceLock<()> = OnceLock::new();
    let pg = shared();
    LOADED.get_or_init(|| {
        pg.psql("postgres", &format!("CREATE DATABASE {TEMPLATE}"));
        pg.psql_file(TEMPLATE, &fixtures().join("schema.sql"));
        pg.psql_file(TEMPLATE, &fixtures().join("data.sql"));
    });
    pg
}

/// A fresh copy of the CRM: (cluster, database name, URL).
pub fn crm(name: &str) -> (&'static Postgres, String, String) {
    let pg = cluster();
    let url = pg.database_from(TEMPLATE, name);
    (pg, name.to_string(), url)
}

/// The fixture's DataSystem spec as JSON.
pub fn crm_spec() -> Value {
    let yaml = std::fs::read_to_string(fixtures().join("datasystem.yaml")).unwrap();
    serde_yaml_ng::from_str(&yaml).unwrap()
}

/// The controller's config for these tests: the bench's storage, plus a ledger key.
pub fn config() -> Config {
    let mut c = support::config();
    c.ledger_key = Some(LedgerKeySource::Inline(LEDGER_KEY.to_vec()));
    c
}

/// Replaces the bench's controller with one run by [`config`]; abort the handle at the end.
pub async fn restart_with_ledger(bench: &mut Bench) -> JoinHandle<()> {
    bench.stop_controller().await;
    let (client, clock) = (bench.client.clone(), bench.clock.clone());
    tokio::spawn(async move {
        controller::run(client, config(), clock)
            .await
            .expect("controller runs");
    })
}

/// A Secret holding a connection URL.
pub fn connection_secret(name: &str, url: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"url": url},
    })
}

/// Waits for the task Secret of `job` and returns the task file's bytes.
pub async fn task_bytes(bench: &Bench, job: &str) -> Vec<u8> {
    let api: Api<Secret> = bench.secrets_api();
    let secret = common::wait_for(&format!("task Secret of {job}"), DEADLINE, || {
        let api = api.clone();
        async move { api.get_opt(job).await.ok().flatten() }
    })
    .await;
    secret.data.unwrap()["task.json"].0.clone()
}

/// Plays a request's worker Job: runs its task in-process (writing its manifest to the
/// bench's storage), then marks the Job finished as the Job controller would.
pub async fn run_request_job(bench: &Bench, job: &str) -> worker::task::Manifest {
    let bytes = task_bytes(bench, job).await;
    let task = Task::from_json(&bytes).expect("a valid task");
    let manifest = worker::run_and_write(&task, &Options::default())
        .await
        .expect("manifest written");
    let ok = manifest.outcome == worker::task::Outcome::Succeeded;
    mark_job(bench, job, ok);
    manifest
}

/// Plays a scheduled Job (sweep, replay) whose task is its own format: `run` gets the bytes
/// and says whether it succeeded; then the Job is marked finished.
pub async fn run_scheduled_job<F, Fut>(bench: &Bench, job: &str, run: F)
where
    F: FnOnce(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let bytes = task_bytes(bench, job).await;
    let ok = run(bytes).await;
    mark_job(bench, job, ok);
}

/// Sets a Job's terminal status at the fake clock's now (in-process: not in the request log).
pub fn mark_job(bench: &Bench, name: &str, success: bool) {
    let info = bench
        .emu
        .core()
        .lookup("batch", "v1", "jobs")
        .expect("jobs served");
    let at = privacy_operator::plan::timeline::fmt(bench.clock.now());
    let status = if success {
        json!({"status": {
            "startTime": at, "completionTime": at, "succeeded": 1, "active": 0,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": at},
                {"type": "Complete", "status": "True", "lastTransitionTime": at}
            ]
        }})
    } else {
        json!({"status": {
            "startTime": at, "failed": 1, "active": 0,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "lastTransitionTime": at, "reason": "BackoffLimitExceeded"},
                {"type": "Failed", "status": "True", "lastTransitionTime": at, "reason": "BackoffLimitExceeded"}
            ]
        }})
    };
    bench
        .emu
        .core()
        .patch(
            &info,
            Some(NS),
            name,
            PatchType::Merge,
            status.to_string().as_bytes(),
            &WriteParams::default(),
            Subresource::Status,
            false,
        )
        .expect("job status patched");
}

/// Waits until a Job whose labels match `selector` exists; returns its name.
pub async fn wait_job(bench: &Bench, selector: &str) -> String {
    let api = bench.jobs_api();
    common::wait_for(&format!("a Job {selector}"), DEADLINE, || {
        let api = api.clone();
        async move {
            let jobs = api
                .list(&kube::api::ListParams::default().labels(selector))
                .await
                .ok()?;
            jobs.items.into_iter().find_map(|j| j.metadata.name)
        }
    })
    .await
}

/// A digest of every row of a table, in id order, with some columns left out.
pub fn table_digest(pg: &Postgres, db: &str, table: &str, except: &[&str]) -> String {
    let minus: String = except.iter().map(|c| format!(" - '{c}'")).collect();
    pg.psql(
        db,
        &format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg((to_jsonb(x){minus})::text, '|' ORDER BY id)), '') FROM {table} AS x"
        ),
    )
}

pub fn arc_clock(bench: &Bench) -> Arc<dyn Clock> {
    bench.clock.clone()
}

/// Waits for an Event with `reason` regarding the object named `name`; returns its note.
pub async fn wait_event(bench: &Bench, name: &str, reason: &str) -> String {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(bench.client.clone(), NS);
    common::wait_for(&format!("Event {reason} on {name}"), DEADLINE, || {
        let api = api.clone();
        async move {
            api.list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                })
                .map(|e| e.note.unwrap_or_default())
        }
    })
    .await
}
