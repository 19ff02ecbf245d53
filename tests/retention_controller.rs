//! The RetentionPolicy controller against the emulator and a real PostgreSQL CRM: the test
//! moves a fake clock to the rule's scheduled time and plays the Job controller by running
//! the run's task (read from its task Secret) in-process with the worker.

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "support/postgres.rs"]
mod pg_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use emulator::EmulatorHandle;
use emulator::ops::{PatchType, Subresource, WriteParams};
use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::api::{Api, ListParams};
use pg_support::{Postgres, shared};
use privacy_operator::api::RetentionPolicy;
use privacy_operator::api::retention::{RuleStatus, RunPhase};
use privacy_operator::controller::{self, Config, FakeClock, SaltSource, WorkerSettings};
use privacy_operator::plan::retention::names::labels;
use privacy_operator::worker::retention::{RetentionTask, run_and_write};
use serde_json::{Value, json};

const NS: &str = "default";
const TEMPLATE: &str = "crm_retention_ctl_template";
const DEADLINE: Duration = Duration::from_secs(30);

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

struct Bench {
    emu: EmulatorHandle,
    client: kube::Client,
    clock: Arc<FakeClock>,
    out: tempfile::TempDir,
    config: Config,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

impl Bench {
    /// An emulator with the CRDs, the CRM database `db` behind DataSystem `crm`, and the
    /// controller on a fake clock starting at `now`. Reports go through the operator's
    /// object storage (a `file://` store) when `storage`, else to the local output root.
    async fn start(db: &str, now: &str, storage: bool) -> (Bench, &'static Postgres) {
        let pg = cluster();
        let url = pg.database_from(TEMPLATE, db);
        let emu = common::start().await;
        for crd in privacy_operator::api::crds() {
            emu.create_or_replace(serde_json::to_value(&crd).unwrap())
                .expect("CRD installs");
        }
        let client = common::client(&emu);
        let out = tempfile::tempdir().unwrap();
        let mut config = Config::new(
            WorkerSettings {
                image: "privacy-operator:test".into(),
                image_pull_policy: None,
                service_account: None,
                output_root: out.path().display().to_string(),
            },
            SaltSource::Inline(b"retention-controller-test-salt".to_vec()),
        );
        config.namespace = Some(NS.into());
        config.error_backoff = Duration::from_millis(20);
        config.max_error_backoff = Duration::from_secs(1);
        if storage {
            let root = out.path().join("bucket");
            std::fs::create_dir_all(&root).unwrap();
            config.storage = Some(privacy_operator::storage::StorageTarget::new(format!(
                "file://{}",
                root.display()
            )));
        }
        let clock = FakeClock::new(now.parse().unwrap());
        let controller = spawn_controller(&client, &config, &clock);
        let bench = Bench {
            emu,
            client,
            clock,
            out,
            config,
            controller,
        };
        bench.put(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "crm-db"},
            "stringData": {"url": url},
        }));
        let yaml = std::fs::read_to_string(fixtures().join("datasystem.yaml")).unwrap();
        let spec: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        bench.put(json!({
            "apiVersion": "privacy-operator.dev/v1alpha1", "kind": "DataSystem",
            "metadata": {"name": "crm", "labels": {"tier": "first-party"}},
            "spec": spec,
        }));
        (bench, pg)
    }

    /// Stops the controller abruptly (like a crash) and starts a new one.
    async fn restart_controller(&mut self) {
        self.controller.abort();
        let _ = (&mut self.controller).await;
        self.controller = spawn_controller(&self.client, &self.config, &self.clock);
    }

    fn put(&self, mut obj: Value) -> Value {
        obj["metadata"]["namespace"] = json!(NS);
        self.emu.create_or_replace(obj).expect("object stored")
    }

    fn policies(&self) -> Api<RetentionPolicy> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Waits until rule 0 of `policy` satisfies `check`.
    async fn wait_rule(
        &self,
        policy: &str,
        what: &str,
        check: impl Fn(&RuleStatus) -> bool,
    ) -> RetentionPolicy {
        let api = self.policies();
        common::wait_for(&format!("{policy}: {what}"), DEADLINE, || {
            let api = api.clone();
            let check = &check;
            async move {
                let p = api.get(policy).await.ok()?;
                let ok = p.status.as_ref()?.rules.first().is_some_and(check);
                ok.then_some(p)
            }
        })
        .await
    }

    /// Reconciles of policies so far: each one LISTs the policy's Jobs once.
    fn reconcile_count(&self) -> usize {
        self.emu
            .request_log()
            .entries()
            .iter()
            .filter(|r| {
                r.resource == "jobs"
                    && r.verb == "list"
                    && r.query.contains("retention-policy")
                    && !r.query.contains("watch")
            })
            .count()
    }

    /// Forces reconciles (clock ticks) and checks that they write nothing: one round
    /// settles what was in flight, two more are checked.
    async fn assert_quiet_resync(&self) {
        for (rounds, check) in [(1, false), (2, true)] {
            self.emu.request_log().clear();
            for round in 1..=rounds {
                self.clock.tick();
                common::wait_for("a resync reconcile", DEADLINE, || async move {
                    (self.reconcile_count() >= round).then_some(())
                })
                .await;
            }
            if check {
                let writes = self.emu.request_log().writes();
                assert!(writes.is_empty(), "a no-op reconcile wrote: {writes:#?}");
            }
        }
    }

    async fn run_jobs(&self, policy: &str) -> Vec<Job> {
        Api::<Job>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default().labels(&format!("{}={policy}", labels::POLICY)))
            .await
            .unwrap()
            .items
    }

    /// Plays the Job controller: runs the task of `job` with the worker (in-process, like
    /// `dev` mode) once its Secret exists, then marks the Job complete.
    async fn run_job(&self, job: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        let secret = common::wait_for(&format!("task Secret of {job}"), DEADLINE, || async {
            secrets.get_opt(job).await.ok().flatten()
        })
        .await;
        let bytes = &secret.data.unwrap()["task.json"].0;
        let task = RetentionTask::from_json(bytes).unwrap();
        run_and_write(&task).await.unwrap();
        let info = self.emu.core().lookup("batch", "v1", "jobs").unwrap();
        let at = privacy_operator::plan::timeline::fmt(controller::Clock::now(&*self.clock));
        let status = json!({"status": {
            "startTime": at, "completionTime": at, "succeeded": 1, "active": 0,
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": at}]
        }});
        self.emu
            .core()
            .patch(
                &info,
                Some(NS),
                job,
                PatchType::Merge,
                status.to_string().as_bytes(),
                &WriteParams::default(),
                Subresource::Status,
                false,
            )
            .unwrap();
    }
}

fn spawn_controller(
    client: &kube::Client,
    config: &Config,
    clock: &Arc<FakeClock>,
) -> tokio::task::JoinHandle<()> {
    let (c, config, k) = (client.clone(), config.clone(), clock.clone());
    tokio::spawn(async move {
        controller::run(c, config, k)
            .await
            .expect("controller runs");
    })
}

/// A policy whose rule purges contacts created more than a day before 04:30 UTC: on
/// 2024-01-06 that is contacts 1..=100 (created 2024-01-01 + n hours).
fn policy(name: &str, extra: Value) -> Value {
    let mut p = json!({
        "apiVersion": "privacy-operator.dev/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": name},
        "spec": {"rules": [{
            "name": "old-contacts",
            "systems": {"matchLabels": {"tier": "first-party"}},
            "table": "crm.contacts", "ageColumn": "created_at", "olderThan": "1d",
            "action": "Purge", "schedule": "30 4 * * *", "timeZone": "UTC",
            "batchSize": 10
        }]}
    });
    if let (Some(spec), Some(e)) = (p["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            spec.insert(k.clone(), v.clone());
        }
    }
    p
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_rule_deletes_exactly_the_expired_rows_and_reports_them() {
    let (bench, pg) = Bench::start("ret_ctl_purge", "2024-01-06T04:00:00Z", false).await;
    let db = "ret_ctl_purge";
    bench.put(policy("retention", json!({})));
    let p = bench
        .wait_rule("retention", "nextRun", |r| r.next_run.is_some())
        .await;
    let rule = &p.status.as_ref().unwrap().rules[0];
    assert_eq!(
        rule.next_run.as_ref().unwrap().0,
        ts("2024-01-06T04:30:00Z")
    );
    assert!(bench.run_jobs("retention").await.is_empty());
    let ready = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Scheduled")
    );

    bench.clock.set(ts("2024-01-06T04:30:00Z"));
    let p = bench
        .wait_rule("retention", "an active run", |r| !r.active.is_empty())
        .await;
    let job = p.status.unwrap().rules[0].active[0].clone();
    assert_eq!(job, "retention-old-contacts-crm-28408590");
    // Nothing ran yet.
    assert_eq!(pg.psql(db, "SELECT count(*) FROM crm.contacts"), "500");

    bench.run_job(&job).await;
    let p = bench
        .wait_rule("retention", "a result", |r| r.last_result.is_some())
        .await;
    let rule = &p.status.as_ref().unwrap().rules[0];
    let last = rule.last_result.as_ref().unwrap();
    assert_eq!(last.phase, RunPhase::Succeeded, "{last:?}");
    assert_eq!((last.matched, last.affected, last.held), (100, 100, 0));
    assert!(!last.dry_run);
    assert!(rule.active.is_empty());
    assert_eq!(
        rule.next_run.as_ref().unwrap().0,
        ts("2024-01-07T04:30:00Z")
    );
    assert!(
        last.message.as_deref().unwrap().contains("10 batches"),
        "{last:?}"
    );
    assert_eq!(pg.psql(db, "SELECT count(*) FROM crm.contacts"), "400");
    assert_eq!(pg.psql(db, "SELECT min(id) FROM crm.contacts"), "101");
    assert_eq!(
        pg.psql(db, "SELECT count(*) FROM crm.notes WHERE contact_id <= 100"),
        "0"
    );
    assert_eq!(pg.psql(db, "SELECT count(*) FROM crm.notes"), "1600");
    assert_eq!(pg.psql(db, "SELECT count(*) FROM crm.tickets"), "1000");
    // Status is written only when it changes.
    bench.assert_quiet_resync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_rule_deletes_nothing_and_reports_the_count() {
    let (bench, pg) = Bench::start("ret_ctl_dry", "2024-01-06T04:00:00Z", true).await;
    let db = "ret_ctl_dry";
    let mut p = policy("dry", json!({}));
    p["spec"]["rules"][0]["mode"] = json!("DryRun");
    bench.put(p);
    bench
        .wait_rule("dry", "nextRun", |r| r.next_run.is_some())
        .await;
    bench.clock.set(ts("2024-01-06T04:30:00Z"));
    let p = bench
        .wait_rule("dry", "an active run", |r| !r.active.is_empty())
        .await;
    let job = p.status.unwrap().rules[0].active[0].clone();
    bench.run_job(&job).await;
    let p = bench
        .wait_rule("dry", "a result", |r| r.last_result.is_some())
        .await;
    let last = p.status.unwrap().rules[0].last_result.clone().unwrap();
    assert_eq!(last.phase, RunPhase::Succeeded);
    assert!(last.dry_run);
    assert_eq!((last.matched, last.affected), (100, 0));
    assert!(last.message.unwrap().contains("would delete 100"));
    // The report went through the object store, below retention/<ns>/<policy>/<rule>/<job>.
    let report = bench.out.path().join(format!(
        "bucket/retention/{NS}/dry/old-contacts/{job}/manifest.json"
    ));
    assert!(report.exists(), "{}", report.display());
    assert_eq!(pg.psql(db, "SELECT count(*) FROM crm.contacts"), "500");
    assert_eq!(pg.psql(db, "SELECT count(*) FROM crm.notes"), "2000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_table_is_not_touched_and_status_says_why() {
    let (bench, pg) = Bench::start("ret_ctl_hold", "2024-01-06T04:00:00Z", false).await;
    let db = "ret_ctl_hold";
    bench.put(policy(
        "held",
        json!({"legalHolds": [{
            "name": "case-2024-117", "reason": "litigation hold ordered by legal",
            "systems": ["crm"], "tables": ["crm.contacts"]
        }]}),
    ));
    bench
        .wait_rule("held", "nextRun", |r| r.next_run.is_some())
        .await;
    bench.clock.set(ts("2024-01-06T04:30:00Z"));
    let p = bench
        .wait_rule("held", "a blocked result", |r| {
            r.last_result
                .as_ref()
                .is_some_and(|l| l.phase == RunPhase::Blocked)
        })
        .await;
    let status = p.status.unwrap();
    let last = status.rules[0].last_result.clone().unwrap();
    let msg = last.message.unwrap();
    assert!(msg.contains("case-2024-117 (until removed)"), "{msg}");
    assert_eq!(status.active_holds, vec!["case-2024-117"]);
    assert_eq!(status.active_hold_count, Some(1));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("blocked by legal holds"),
        "{}",
        ready.message
    );
    assert!(
        bench.run_jobs("held").await.is_empty(),
        "no Job for a held table"
    );
    assert_eq!(pg.psql(db, "SELECT count(*) FROM crm.contacts"), "500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_a_table_outside_the_data_map_is_refused_with_a_reason() {
    let (bench, _pg) = Bench::start("ret_ctl_invalid", "2024-01-06T04:00:00Z", false).await;
    let mut p = policy("invalid", json!({}));
    p["spec"]["rules"][0]["table"] = json!("crm.invoices");
    bench.put(p);
    let api = bench.policies();
    let p = common::wait_for("Accepted=False", DEADLINE, || {
        let api = api.clone();
        async move {
            let p = api.get("invalid").await.ok()?;
            let c = p
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Accepted")?
                .clone();
            (c.status == "False").then_some((p, c))
        }
    })
    .await;
    assert_eq!(p.1.reason, "InvalidRule");
    assert!(
        p.1.message
            .contains("table crm.invoices is not in the data map of DataSystem crm"),
        "{}",
        p.1.message
    );
    assert_eq!(p.0.status.unwrap().rules[0].next_run, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_mid_run_neither_repeats_nor_loses_the_run() {
    let (mut bench, pg) = Bench::start("ret_ctl_restart", "2024-01-06T04:00:00Z", false).await;
    let db = "ret_ctl_restart";
    bench.put(policy("restart", json!({})));
    bench
        .wait_rule("restart", "nextRun", |r| r.next_run.is_some())
        .await;
    bench.clock.set(ts("2024-01-06T04:30:00Z"));
    let p = bench
        .wait_rule("restart", "an active run", |r| !r.active.is_empty())
        .await;
    let job = p.status.unwrap().rules[0].active[0].clone();

    // A crash while the run is under way, and a new controller a minute later.
    bench.restart_controller().await;
    bench.clock.set(ts("2024-01-06T04:31:00Z"));
    bench.run_job(&job).await;
    let p = bench
        .wait_rule("restart", "a result", |r| r.last_result.is_some())
        .await;
    let last = p.status.unwrap().rules[0].last_result.clone().unwrap();
    assert_eq!(last.phase, RunPhase::Succeeded, "{last:?}");
    assert_eq!(last.affected, 100);
    let jobs = bench.run_jobs("restart").await;
    assert_eq!(jobs.len(), 1, "one Job for the one scheduled run");
    assert_eq!(pg.psql(db, "SELECT count(*) FROM crm.contacts"), "400");
}
