//! A test bench for the DataSubjectRequest controller: an emulator with the CRDs, the
//! controller on a fake clock, and the test playing the Job controller (marking Jobs
//! succeeded or failed in-process, so those writes are not in the request log).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use emulator::EmulatorHandle;
use emulator::ops::{PatchType, Subresource, WriteParams};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::api::{Api, ListParams};
use privacy_operator::api::{DataSubjectRequest, request::RequestPhase};
use privacy_operator::controller::{
    self, Clock, Config, FakeClock, SaltSource, WorkerSettings, worker::OUTPUT_ROOT,
};
use privacy_operator::plan::labels;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::common;

pub const NS: &str = "default";
/// The subject's e-mail: must never appear outside the task Secrets.
pub const EMAIL: &str = "jane.doe@example.com";
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Bench {
    pub emu: EmulatorHandle,
    pub client: kube::Client,
    pub clock: Arc<FakeClock>,
    controller: Option<JoinHandle<()>>,
    config: Config,
}

pub fn config() -> Config {
    let mut c = Config::new(
        WorkerSettings {
            image: "privacy-operator:test".into(),
            image_pull_policy: Some("IfNotPresent".into()),
            service_account: None,
            output_root: OUTPUT_ROOT.into(),
        },
        SaltSource::Inline(b"controller-test-salt-0123456789".to_vec()),
    );
    c.namespace = Some(NS.into());
    c.error_backoff = Duration::from_millis(20);
    c.max_error_backoff = Duration::from_secs(1);
    c.instance = Some("test".into());
    c.storage = Some(storage_target());
    c
}

/// The bench's object storage: a directory per test binary (the controller reads workers'
/// manifests and writes export bundles there).
pub fn storage_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

pub fn storage_target() -> privacy_operator::storage::StorageTarget {
    privacy_operator::storage::StorageTarget::new(format!("file://{}", storage_dir().display()))
}

impl Bench {
    /// An emulator with the CRDs and a running controller whose clock starts at the real
    /// now (so timestamps the emulator stamps agree with the planner's).
    pub async fn start() -> Self {
        Self::start_with(config()).await
    }

    /// [`Bench::start`] with the controller running `config` (and restarted with it).
    pub async fn start_with(config: Config) -> Self {
        let emu = common::start().await;
        for crd in privacy_operator::api::crds() {
            emu.create_or_replace(serde_json::to_value(&crd).unwrap())
                .expect("CRD installs");
        }
        // The HMAC key of the third-party processor of `data_system(_, true)`.
        emu.create_or_replace(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "mailer-api", "namespace": NS},
            "stringData": {"hmac": "test-hmac-key-0123456789"}
        }))
        .expect("webhook Secret created");
        let client = common::client(&emu);
        let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
        let mut bench = Bench {
            emu,
            client,
            clock: FakeClock::new(now),
            controller: None,
            config,
        };
        bench.start_controller();
        bench
    }

    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "controller already running");
        let (client, clock) = (self.client.clone(), self.clock.clone());
        let config = self.config.clone();
        self.controller = Some(tokio::spawn(async move {
            controller::run(client, config, clock)
                .await
                .expect("controller runs");
        }));
    }

    /// Stops the controller abruptly (like a crash: no graceful shutdown).
    pub async fn stop_controller(&mut self) {
        if let Some(task) = self.controller.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Creates or replaces an object in-process (not through HTTP: not in the request log).
    pub fn put(&self, mut obj: Value) -> Value {
        if obj["metadata"]["namespace"].is_null() && obj["kind"] != "Namespace" {
            obj["metadata"]["namespace"] = json!(NS);
        }
        self.emu.create_or_replace(obj).expect("object stored")
    }

    pub fn requests(&self) -> Api<DataSubjectRequest> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn jobs_api(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn secrets_api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// The Jobs of a request, sorted by name.
    pub async fn jobs(&self, request: &str) -> Vec<Job> {
        let mut jobs = self
            .jobs_api()
            .list(&ListParams::default().labels(&format!("{}={request}", labels::REQUEST)))
            .await
            .expect("jobs list")
            .items;
        jobs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        jobs
    }

    pub async fn job_names(&self, request: &str) -> Vec<String> {
        self.jobs(request)
            .await
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect()
    }

    /// Waits until the request has a condition of `type_` with `status`.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
    ) -> DataSubjectRequest {
        let api = self.requests();
        common::wait_for(&format!("{name}: {type_}={status}"), DEADLINE, || {
            let api = api.clone();
            async move {
                let r = api.get(name).await.ok()?;
                let ok = r.status.as_ref()?.conditions.iter().any(|c| {
                    c.type_ == type_
                        && c.status == status
                        && c.observed_generation == r.metadata.generation
                });
                ok.then_some(r)
            }
        })
        .await
    }

    /// Waits until the request's Jobs whose step label is `step` number `n`; returns them.
    pub async fn wait_jobs(&self, request: &str, step: &str, n: usize) -> Vec<String> {
        common::wait_for(
            &format!("{n} {step} Job(s) of {request}"),
            DEADLINE,
            || async move {
                let names: Vec<String> = self
                    .jobs(request)
                    .await
                    .into_iter()
                    .filter(|j| {
                        j.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(labels::STEP))
                            .is_some_and(|s| s == step)
                    })
                    .filter_map(|j| j.metadata.name)
                    .collect();
                (names.len() == n).then_some(names)
            },
        )
        .await
    }

    /// Plays the Job controller: marks the Job finished at the fake clock's now. A
    /// successful Job's worker leaves a Succeeded manifest with no files, as a real one
    /// does for a subject without data; a failed one leaves none (as if it was killed).
    pub fn finish_job(&self, name: &str, success: bool) {
        if success {
            self.write_manifest(name);
        }
        self.mark_job(name, success);
    }

    /// Sets the Job's terminal status only (for tests that ran the real worker, which
    /// wrote its own manifest).
    pub fn mark_job(&self, name: &str, success: bool) {
        let info = self
            .emu
            .core()
            .lookup("batch", "v1", "jobs")
            .expect("jobs served");
        let at = privacy_operator::plan::timeline::fmt(self.clock.now());
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
                    {"type": "Failed", "status": "True", "lastTransitionTime": at, "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit"}
                ]
            }})
        };
        self.emu
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

    fn write_manifest(&self, name: &str) {
        let info = self
            .emu
            .core()
            .lookup("batch", "v1", "jobs")
            .expect("jobs served");
        let job = self.emu.core().get(&info, NS, name).expect("job exists");
        let label = |k: &str| {
            job["metadata"]["labels"][k]
                .as_str()
                .expect("job label")
                .to_string()
        };
        let step = privacy_operator::plan::JobStep::from_label(&label(labels::STEP))
            .expect("a known step");
        let (request, system) = (label(labels::REQUEST), label(labels::SYSTEM));
        let mut manifest = privacy_operator::worker::task::Manifest::new(&system, step);
        manifest.message = "played by the test bench".into();
        let dir = storage_dir().join(controller::worker::result_prefix(
            NS, &request, &system, step,
        ));
        std::fs::create_dir_all(&dir).expect("manifest dir");
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec(&manifest).expect("manifest json"),
        )
        .expect("manifest written");
    }

    /// Plays the Job controller faithfully: the Pod cannot start before its task Secret
    /// exists, so the Job finishes only after the Secret appears.
    pub async fn run_job(&self, name: &str, success: bool) {
        common::wait_for(&format!("task Secret of {name}"), DEADLINE, || async {
            self.secrets_api().get_opt(name).await.ok().flatten()
        })
        .await;
        self.finish_job(name, success);
    }

    /// Moves the fake clock forward (every request is reconciled at the new time).
    pub fn advance_days(&self, days: i64) {
        self.clock.advance(SignedDuration::from_hours(24 * days));
    }

    pub fn clock_now(&self) -> Timestamp {
        self.clock.now()
    }

    pub async fn wait_status_phase(&self, name: &str, phase: RequestPhase) -> DataSubjectRequest {
        let api = self.requests();
        common::wait_for(&format!("{name} in phase {phase:?}"), DEADLINE, || {
            let api = api.clone();
            async move {
                let r = api.get(name).await.ok()?;
                (r.status.as_ref()?.phase == Some(phase)).then_some(r)
            }
        })
        .await
    }

    /// Jobs LISTs by the controller so far: each reconcile makes exactly one.
    fn reconcile_count(&self) -> usize {
        self.emu
            .request_log()
            .entries()
            .iter()
            .filter(|r| r.resource == "jobs" && r.verb == "list")
            .count()
    }

    /// Forces resyncs and checks the controller wrote nothing. A reconcile of a request
    /// starts only after the previous one ended, so a reconcile seen starting after the log
    /// was cleared proves every earlier one (and its writes) finished: one round settles
    /// what was in flight, two more are checked.
    pub async fn assert_quiet_resync(&self) {
        self.resync_rounds(1).await;
        self.resync_rounds(2).await;
        let writes = self.writes();
        assert!(writes.is_empty(), "a no-op reconcile wrote: {writes:#?}");
    }

    pub async fn resync_rounds(&self, rounds: usize) {
        self.emu.request_log().clear();
        self.resync_rounds_keeping_log(rounds).await;
    }

    /// Waits for every reconcile under way to end (one forced resync), keeping the log.
    pub async fn assert_quiet_resync_keeping_log(&self) {
        self.resync_rounds_keeping_log(2).await;
    }

    async fn resync_rounds_keeping_log(&self, rounds: usize) {
        let base = self.reconcile_count();
        for round in 1..=rounds {
            self.clock.tick();
            common::wait_for("a resync reconcile", DEADLINE, || async move {
                (self.reconcile_count() >= base + round).then_some(())
            })
            .await;
        }
    }

    /// Writes by the controller (the test's own writes are in-process and not logged).
    pub fn writes(&self) -> Vec<emulator::RequestRecord> {
        self.emu.request_log().writes()
    }
}

/// An ObjectStorage DataSystem (first party), or an HTTP third-party processor.
pub fn data_system(name: &str, third_party: bool) -> Value {
    let spec = if third_party {
        json!({
            "thirdParty": true,
            "vendor": {"name": "Acme Mailer Ltd", "contact": "privacy@acme-mailer.example"},
            "exportable": false,
            "connector": {"type": "HTTP", "http": {
                "baseURL": "https://api.acme-mailer.example/privacy/v1",
                "hmacSecretRef": {"name": "mailer-api", "key": "hmac"}
            }}
        })
    } else {
        json!({"connector": {"type": "ObjectStorage", "objectStorage": {
            "url": "s3://acme-user-files", "prefix": "users/{email}/"
        }}})
    };
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSystem",
        "metadata": {"name": name, "labels": {"tier": if third_party { "third-party" } else { "first-party" }}},
        "spec": spec,
    })
}

/// A verified request for the subject [`EMAIL`].
pub fn request(name: &str, type_: &str) -> Value {
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": name},
        "spec": {
            "type": type_,
            "regulation": "GDPR",
            "subject": {"identifiers": {"email": EMAIL, "userId": "user-88123"}},
            "verification": {
                "method": "Email",
                "verifiedBy": "support-desk",
                "verifiedAt": "2024-01-01T00:00:00Z"
            }
        }
    })
}

/// The condition of `type_` on a request, as (status, reason).
pub fn condition(r: &DataSubjectRequest, type_: &str) -> Option<(String, String)> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}
