//! The local job runner of `dev` against the emulator, with `/bin/sh` as the "image"
//! entrypoint: each Job's args are a shell script, so a test can make the Pod succeed, fail,
//! hang, or report what it saw (its mounted Secret, its environment, its pid).

#[path = "../emulator/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use privacy_operator::dev::jobs::{self, RUNS_ANNOTATION, RunnerConfig};
use serde_json::{Value, json};

const NS: &str = "default";
const IMAGE: &str = "privacy-operator:test";
const DEADLINE: Duration = Duration::from_secs(30);

struct Bench {
    emu: emulator::EmulatorHandle,
    client: kube::Client,
    dir: tempfile::TempDir,
    runner: Option<tokio::task::JoinHandle<()>>,
}

impl Bench {
    async fn start() -> Self {
        let emu = common::start().await;
        let client = common::client(&emu);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bench = Bench {
            emu,
            client,
            dir,
            runner: None,
        };
        bench.start_runner(2);
        bench
    }

    fn config(&self, concurrency: usize) -> RunnerConfig {
        let mut c = RunnerConfig::new(PathBuf::from("/bin/sh"), IMAGE.into(), self.dir.path());
        c.namespace = Some(NS.into());
        c.concurrency = concurrency;
        c.backoff_base = Duration::from_millis(50);
        c.backoff_cap = Duration::from_millis(200);
        c
    }

    fn start_runner(&mut self, concurrency: usize) {
        let (client, config) = (self.client.clone(), self.config(concurrency));
        self.runner = Some(tokio::spawn(async move {
            jobs::run_until(client, config, std::future::pending())
                .await
                .expect("runner runs");
        }));
    }

    /// Stops the runner abruptly, like a killed `dev`.
    async fn kill_runner(&mut self) {
        if let Some(t) = self.runner.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates a Job running `script` in `/bin/sh -c`, with a task Secret mounted at
    /// /var/run/task and an emptyDir at /tmp.
    async fn job(&self, name: &str, script: &str, spec: Value) -> Job {
        let mut job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "worker",
                        "image": IMAGE,
                        "args": ["-c", script, "sh", "/var/run/task/task.json"],
                        "env": [{"name": "TASK_FILE", "value": "/var/run/task/task.json"}],
                        "volumeMounts": [
                            {"name": "task", "mountPath": "/var/run/task", "readOnly": true},
                            {"name": "tmp", "mountPath": "/tmp"}
                        ]
                    }],
                    "volumes": [
                        {"name": "task", "secret": {"secretName": name, "defaultMode": 0o440}},
                        {"name": "tmp", "emptyDir": {}}
                    ]
                }}
            }
        });
        merge(&mut job["spec"], spec);
        let job: Job = serde_json::from_value(job).expect("a Job");
        self.jobs()
            .create(&PostParams::default(), &job)
            .await
            .expect("Job created")
    }

    async fn secret(&self, name: &str, task: &str) {
        let secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS},
            "stringData": {"task.json": task},
        }))
        .expect("a Secret");
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("Secret created");
    }

    /// Waits for a condition of `type_` True on the Job; returns the Job.
    async fn wait_condition(&self, name: &str, type_: &str) -> Job {
        let api = self.jobs();
        common::wait_for(&format!("{name}: {type_}=True"), DEADLINE, || {
            let api = api.clone();
            async move {
                let j = api.get(name).await.ok()?;
                let hit = j
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == "True");
                hit.then_some(j)
            }
        })
        .await
    }

    async fn wait_file(&self, path: &Path) -> String {
        common::wait_for(&format!("{}", path.display()), DEADLINE, || async {
            std::fs::read_to_string(path)
                .ok()
                .filter(|s| s.ends_with('\n'))
        })
        .await
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn condition(job: &Job, type_: &str) -> Option<(String, String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// Reasons of the Events recorded about Job `name`, waiting until `reason` is among them.
async fn wait_event(b: &Bench, name: &str, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(b.client.clone(), NS);
    common::wait_for(&format!("Event {reason} on {name}"), DEADLINE, || {
        let api = api.clone();
        async move {
            let events = api.list(&Default::default()).await.ok()?.items;
            let reasons: Vec<String> = events
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
                .filter_map(|e| e.reason)
                .collect();
            reasons.iter().any(|r| r == reason).then_some(reasons)
        }
    })
    .await
}

fn pid_alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{}", pid.trim())).exists()
}

#[tokio::test]
async fn a_job_runs_with_its_secret_mounted_privately_and_completes_like_the_job_controller() {
    let b = Bench::start().await;
    let report = b.out("report");
    // The Pod sees its task at the remapped mount path, only the env the Job gives it, a
    // private directory, and TMPDIR on its emptyDir.
    let script = format!(
        "set -e; f=\"$1\"; d=$(dirname \"$f\"); \
         {{ cat \"$f\"; echo; echo \"env=$TASK_FILE\"; stat -c %a \"$d/..\"; \
            echo \"tmp=$TMPDIR\"; env | cut -d= -f1 | sort | tr '\\n' ' '; echo; }} > {}",
        report.display()
    );
    // The Job first, then its Secret: the Pod waits for the mount like the kubelet does.
    b.job("ok", &script, json!({})).await;
    b.secret("ok", r#"{"hello":"task"}"#).await;
    let job = b.wait_condition("ok", "Complete").await;
    let text = std::fs::read_to_string(&report).expect("the Pod wrote its report");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], r#"{"hello":"task"}"#);
    let env_path = lines[1].strip_prefix("env=").unwrap();
    assert!(
        env_path.starts_with(&b.dir.path().join("run").display().to_string())
            && env_path.ends_with("/task.json"),
        "env not remapped: {env_path}"
    );
    assert_eq!(lines[2], "700", "the run directory is private");
    assert!(lines[3].starts_with("tmp=/"), "{}", lines[3]);
    let vars: Vec<&str> = lines[4].split_whitespace().collect();
    for v in &vars {
        assert!(
            [
                "TASK_FILE",
                "TMPDIR",
                "PATH",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD",
                "NO_COLOR"
            ]
            .contains(v)
                || v.starts_with("RUST_")
                || v.starts_with("PRIVACY_OPERATOR_LOG")
                || v.starts_with("SSL_CERT"),
            "the parent's environment leaked into the Pod: {v}"
        );
    }

    let s = job.status.as_ref().unwrap();
    assert_eq!((s.succeeded, s.active), (Some(1), Some(0)));
    assert!(s.start_time.is_some() && s.completion_time.is_some());
    let (status, reason, _) = condition(&job, "SuccessCriteriaMet").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "CompletionsReached")
    );
    let (_, reason, _) = condition(&job, "Complete").unwrap();
    assert_eq!(reason, "CompletionsReached");
    // The run directory (with the task file) is gone once the process ended.
    common::wait_for("run dir emptied", DEADLINE, || async {
        let left = std::fs::read_dir(b.dir.path().join("run")).ok()?.count();
        (left == 0).then_some(())
    })
    .await;
    wait_event(&b, "ok", "Completed").await;
    // The Pod's output went to its log file.
    let log = b.dir.path().join("logs").join(NS).join("ok.log");
    assert!(std::fs::read_to_string(log).unwrap().contains("--- run 1"));
}

#[tokio::test]
async fn failures_are_retried_up_to_the_backoff_limit() {
    let b = Bench::start().await;
    let count = b.out("count");
    let script = format!("echo x >> {}; exit 3", count.display());
    b.job("flaky", &script, json!({"backoffLimit": 2})).await;
    b.secret("flaky", "{}").await;
    let job = b.wait_condition("flaky", "Failed").await;
    let s = job.status.as_ref().unwrap();
    assert_eq!(s.failed, Some(3), "backoffLimit 2: three Pods fail");
    assert_eq!(s.active, Some(0));
    assert!(s.completion_time.is_none());
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
    let (_, reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(message, "Job has reached the specified backoff limit");
    assert_eq!(
        condition(&job, "FailureTarget").unwrap().1,
        "BackoffLimitExceeded"
    );
    wait_event(&b, "flaky", "BackoffLimitExceeded").await;
}

#[tokio::test]
async fn the_active_deadline_kills_the_process() {
    let b = Bench::start().await;
    let pid = b.out("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid.display());
    b.job("slow", &script, json!({"activeDeadlineSeconds": 2}))
        .await;
    b.secret("slow", "{}").await;
    let pid = b.wait_file(&pid).await;
    let job = b.wait_condition("slow", "Failed").await;
    let (_, reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(message, "Job was active longer than specified deadline");
    common::wait_for("the process killed", DEADLINE, || async {
        (!pid_alive(&pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_job_kills_its_process_and_suspend_pauses_it() {
    let b = Bench::start().await;
    let pid_file = b.out("pid-del");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    b.job("doomed", &script, json!({})).await;
    b.secret("doomed", "{}").await;
    let pid = b.wait_file(&pid_file).await;
    assert!(pid_alive(&pid));
    b.jobs()
        .delete("doomed", &DeleteParams::background())
        .await
        .expect("Job deleted");
    common::wait_for("the process of a deleted Job killed", DEADLINE, || async {
        (!pid_alive(&pid)).then_some(())
    })
    .await;

    // Suspend: the process is killed, the Job says Suspended; resume runs it again.
    let runs = b.out("runs");
    let script = format!("echo $$ >> {}; exec sleep 60", runs.display());
    b.job("pausable", &script, json!({})).await;
    b.secret("pausable", "{}").await;
    let first = b.wait_file(&runs).await;
    let patch = |suspend: bool| json!({"spec": {"suspend": suspend}});
    b.jobs()
        .patch(
            "pausable",
            &PatchParams::default(),
            &Patch::Merge(&patch(true)),
        )
        .await
        .expect("suspended");
    let job = b.wait_condition("pausable", "Suspended").await;
    assert_eq!(job.status.as_ref().unwrap().active, Some(0));
    assert!(job.status.as_ref().unwrap().start_time.is_none());
    assert_eq!(condition(&job, "Suspended").unwrap().1, "JobSuspended");
    common::wait_for("the suspended Job's process killed", DEADLINE, || async {
        (!pid_alive(first.trim())).then_some(())
    })
    .await;
    b.jobs()
        .patch(
            "pausable",
            &PatchParams::default(),
            &Patch::Merge(&patch(false)),
        )
        .await
        .expect("resumed");
    common::wait_for("a second run after resume", DEADLINE, || async {
        let text = std::fs::read_to_string(&runs).ok()?;
        (text.lines().count() == 2).then_some(())
    })
    .await;
    let job = b.jobs().get("pausable").await.unwrap();
    let (status, reason, _) = condition(&job, "Suspended").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "JobResumed"));
    assert!(job.status.as_ref().unwrap().start_time.is_some());
}

#[tokio::test]
async fn custom_images_fail_with_a_clear_reason() {
    let b = Bench::start().await;
    b.job(
        "custom",
        "exit 0",
        json!({"template": {"spec": {"containers": [{
            "name": "connector", "image": "registry.example.com/erp-connector:2"
        }]}}}),
    )
    .await;
    let job = b.wait_condition("custom", "Failed").await;
    let (_, reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(reason, "CustomImageNotSupported");
    assert!(
        message.contains("registry.example.com/erp-connector:2"),
        "{message}"
    );
    assert_eq!(job.status.as_ref().unwrap().failed, None, "no Pod ever ran");
}

#[tokio::test]
async fn after_a_restart_finished_jobs_stay_finished_and_active_ones_run_again() {
    let mut b = Bench::start().await;
    b.kill_runner().await;
    // A Job the previous runner completed, and one it was running when it died.
    let done_marker = b.out("done-ran");
    b.job(
        "done",
        &format!("touch {}", done_marker.display()),
        json!({}),
    )
    .await;
    b.secret("done", "{}").await;
    let at = "2024-01-01T00:00:00Z";
    let finished = json!({"status": {"startTime": at, "completionTime": at, "succeeded": 1, "active": 0,
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached"},
                       {"type": "Complete", "status": "True", "reason": "CompletionsReached"}]}});
    b.jobs()
        .patch_status("done", &PatchParams::default(), &Patch::Merge(&finished))
        .await
        .unwrap();
    let again = b.out("again");
    b.job(
        "interrupted",
        &format!("echo ran >> {}", again.display()),
        json!({}),
    )
    .await;
    b.secret("interrupted", "{}").await;
    let active = json!({"status": {"startTime": at, "active": 1}});
    b.jobs()
        .patch_status(
            "interrupted",
            &PatchParams::default(),
            &Patch::Merge(&active),
        )
        .await
        .unwrap();
    // Leftovers of the killed runner's private directory are removed at start.
    let stale = b.dir.path().join("run").join("stale-1");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("task.json"), "identifiers").unwrap();

    b.start_runner(2);
    let job = b.wait_condition("interrupted", "Complete").await;
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()[RUNS_ANNOTATION],
        "1",
        "the rerun is counted"
    );
    // The start time of the interrupted run is kept (activeDeadlineSeconds counts from it).
    assert_eq!(
        job.status.as_ref().unwrap().start_time.as_ref().unwrap().0,
        at.parse().unwrap()
    );
    assert_eq!(std::fs::read_to_string(&again).unwrap(), "ran\n");
    // The finished Job was listed first and never started again.
    assert!(!done_marker.exists(), "a Complete Job ran again");
    assert!(!stale.exists(), "a stale task file survived the restart");
    let done = b.jobs().get("done").await.unwrap();
    assert!(
        done.metadata
            .annotations
            .is_none_or(|a| !a.contains_key(RUNS_ANNOTATION))
    );
    drop(b.emu);
}

#[tokio::test]
async fn at_most_concurrency_processes_run_at_once() {
    let mut b = Bench::start().await;
    b.kill_runner().await;
    b.start_runner(1);
    let log = b.out("overlap");
    // Each Pod records start and end; with one slot they never interleave.
    let script = format!(
        "echo start >> {l}; sleep 0.2; echo end >> {l}",
        l = log.display()
    );
    for i in 0..3 {
        let name = format!("c{i}");
        b.job(&name, &script, json!({})).await;
        b.secret(&name, "{}").await;
    }
    for i in 0..3 {
        b.wait_condition(&format!("c{i}"), "Complete").await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["start", "end", "start", "end", "start", "end"]
    );
}

#[tokio::test]
async fn a_job_waiting_for_its_secret_does_not_hold_a_slot() {
    let mut b = Bench::start().await;
    b.kill_runner().await;
    b.start_runner(1);
    b.job("waiting", "exit 0", json!({})).await;
    b.job("ready", "exit 0", json!({})).await;
    b.secret("ready", "{}").await;
    b.wait_condition("ready", "Complete").await;
    // The first Job's Pod starts once its Secret appears, as the kubelet retries the mount.
    b.secret("waiting", "{}").await;
    b.wait_condition("waiting", "Complete").await;
}
