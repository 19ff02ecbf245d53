//! The DataSubjectRequest controller against the emulator: the test plays the Job
//! controller and moves a fake clock across the erasure timeline.

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "controller_support/mod.rs"]
mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use privacy_operator::api::request::RequestPhase;
use support::{Bench, condition, data_system, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_request_reaches_ready_with_one_export_job_per_system() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(data_system("files", false));
    bench.put(data_system("mailer", true));
    bench.put(request("access-1", "Access"));

    // One export Job per exportable system; the third party is integration data.
    let jobs = bench.wait_jobs("access-1", "export", 2).await;
    assert_eq!(jobs, ["access-1-crm-export-1", "access-1-files-export-1"]);
    let dsr = bench.requests().get("access-1").await.unwrap();
    let owner_uid = dsr.uid().unwrap();
    for job in bench.jobs("access-1").await {
        let owners = job.owner_references();
        assert!(
            owners
                .iter()
                .any(|o| o.uid == owner_uid && o.controller == Some(true))
        );
        // The task Secret exists, is owned by the Job, and is mounted read-only.
        let name = job.name_any();
        let secret: Secret = common::wait_for("task Secret", support::DEADLINE, || {
            let api = bench.secrets_api();
            let name = name.clone();
            async move { api.get(&name).await.ok() }
        })
        .await;
        let job_uid = job.uid().unwrap();
        assert!(
            secret
                .owner_references()
                .iter()
                .any(|o| o.uid == job_uid && o.kind == "Job")
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_deref().unwrap(),
            [
                "worker",
                "--task",
                "/var/run/privacy-operator/task/task.json"
            ]
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
    }

    let running = bench.requests().get("access-1").await.unwrap();
    assert_eq!(
        running.status.as_ref().unwrap().phase,
        Some(RequestPhase::InProgress)
    );

    for j in &jobs {
        bench.finish_job(j, true);
    }
    let done = bench.wait_condition("access-1", "Ready", "True").await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Completed));
    assert!(status.export.is_some());
    assert_eq!(
        condition(&done_again(&bench, "access-1").await, "Exported").map(|c| c.0),
        Some("True".into())
    );
    // Still exactly one Job per system.
    assert_eq!(bench.job_names("access-1").await.len(), 2);
}

async fn done_again(bench: &Bench, name: &str) -> privacy_operator::api::DataSubjectRequest {
    bench.requests().get(name).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_soft_deletes_then_purges_after_the_restore_window() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(data_system("mailer", true));
    bench.put(request("erase-1", "Erasure"));

    // t0: soft delete on the first party, purge request to the third party.
    let soft = bench.wait_jobs("erase-1", "soft-delete", 1).await;
    let third = bench.wait_jobs("erase-1", "third-party-purge", 1).await;
    assert_eq!(soft, ["erase-1-crm-softdel-1"]);
    assert_eq!(third, ["erase-1-mailer-tppurge-1"]);
    bench.finish_job(&soft[0], true);
    bench.finish_job(&third[0], true);
    let r = bench.wait_condition("erase-1", "SoftDeleted", "True").await;
    let status = r.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::RestoreWindow));
    let restore_until = status.restore_until.as_ref().unwrap().0;
    assert!(restore_until > bench.clock_now());
    bench
        .wait_condition("erase-1", "ThirdPartiesPurged", "True")
        .await;
    // No purge before the window closes.
    assert!(
        !bench
            .job_names("erase-1")
            .await
            .iter()
            .any(|n| n.contains("-purge-"))
    );

    // Past restoreUntil: the purge runs.
    bench.advance_days(15);
    let purge = bench.wait_jobs("erase-1", "purge", 1).await;
    assert_eq!(purge, ["erase-1-crm-purge-1"]);
    bench.finish_job(&purge[0], true);
    let r = bench.wait_condition("erase-1", "Purged", "True").await;
    let status = r.status.as_ref().unwrap();
    assert!(status.backups_age_out_at.is_some());
    let r = bench.wait_condition("erase-1", "Ready", "True").await;
    assert_eq!(r.status.unwrap().phase, Some(RequestPhase::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_inside_the_window_restores() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(request("erase-2", "Erasure"));
    let soft = bench.wait_jobs("erase-2", "soft-delete", 1).await;
    bench.finish_job(&soft[0], true);
    bench.wait_condition("erase-2", "SoftDeleted", "True").await;

    bench.advance_days(3);
    bench
        .requests()
        .patch(
            "erase-2",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"cancel": true}})),
        )
        .await
        .unwrap();
    let restore = bench.wait_jobs("erase-2", "restore", 1).await;
    assert_eq!(restore, ["erase-2-crm-restore-1"]);
    bench.finish_job(&restore[0], true);
    let r = bench.wait_condition("erase-2", "Restored", "True").await;
    assert_eq!(r.status.unwrap().phase, Some(RequestPhase::Restored));
    // The window passing afterwards purges nothing.
    bench.advance_days(30);
    bench.resync_rounds(2).await;
    let names = bench.job_names("erase-2").await;
    assert!(!names.iter().any(|n| n.contains("-purge-")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_data_system_blocks_until_it_is_created() {
    let bench = Bench::start().await;
    let mut req = request("access-2", "Access");
    req["spec"]["systems"] = serde_json::json!({"matchLabels": {"tier": "first-party"}});
    bench.put(req);
    let r = bench.wait_condition("access-2", "Accepted", "False").await;
    let (_, reason) = condition(&r, "Accepted").unwrap();
    assert_eq!(reason, "NoDataSystems");
    assert!(bench.job_names("access-2").await.is_empty());

    // A third-party system does not match the selector; the first-party one does. Only the
    // watch on DataSystems can wake the request in time (the resync is minutes away).
    bench.put(data_system("mailer", true));
    bench.put(data_system("crm", false));
    let jobs = bench.wait_jobs("access-2", "export", 1).await;
    assert_eq!(jobs, ["access-2-crm-export-1"]);
    bench.wait_condition("access-2", "Accepted", "True").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_for_ready_returns_when_the_request_completes() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(request("access-3", "Access"));
    let jobs = bench.wait_jobs("access-3", "export", 1).await;

    let kubectl = common::Kubectl::new(&bench.emu, std::path::Path::new("/usr/bin/kubectl"));
    let waiting = tokio::spawn(async move {
        let out = kubectl
            .run(&[
                "wait",
                "--for=condition=Ready",
                "dsr/access-3",
                "--timeout=30s",
            ])
            .await;
        (out, kubectl)
    });
    bench.finish_job(&jobs[0], true);
    let (out, _kubectl) = waiting.await.unwrap();
    assert!(
        out.success,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert!(out.stdout.contains("condition met"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_that_changes_nothing_writes_nothing() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(data_system("files", false));
    bench.put(request("access-4", "Access"));
    let jobs = bench.wait_jobs("access-4", "export", 2).await;
    // Let the dispatching reconcile finish (its status write lands after the Jobs).
    bench
        .wait_status_phase("access-4", RequestPhase::InProgress)
        .await;

    // Mid-flight (Jobs running) and when complete: forced resyncs write nothing.
    bench.assert_quiet_resync().await;
    for j in &jobs {
        bench.finish_job(j, true);
    }
    bench.wait_condition("access-4", "Ready", "True").await;
    bench.assert_quiet_resync().await;
}
