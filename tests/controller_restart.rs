//! Restart safety: the controller is killed at several points of an erasure's timeline and
//! a new one carries on, without a duplicate Job or a lost step.

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "controller_support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use privacy_operator::api::request::RequestPhase;
use support::{Bench, data_system, request};

/// Job name to uid: a Job deleted and created again would show a new uid.
async fn job_uids(bench: &Bench, request: &str) -> BTreeMap<String, String> {
    bench
        .jobs(request)
        .await
        .into_iter()
        .filter_map(|j| Some((j.metadata.name?, j.metadata.uid?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_continues_without_duplicate_jobs() {
    let mut bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(data_system("files", false));
    bench.put(data_system("mailer", true));
    bench.put(request("erase-r", "Erasure"));

    let soft = bench.wait_jobs("erase-r", "soft-delete", 2).await;
    bench.wait_jobs("erase-r", "third-party-purge", 1).await;
    let first_uids = job_uids(&bench, "erase-r").await;

    // Crash while the soft deletes run; a new controller must not dispatch them again.
    bench.stop_controller().await;
    bench.start_controller();
    bench.resync_rounds(2).await;
    assert_eq!(bench.job_names("erase-r").await.len(), 3);

    // Jobs finish while no controller runs; the next one picks the results up.
    bench.stop_controller().await;
    for j in &soft {
        bench.finish_job(j, true);
    }
    bench.finish_job("erase-r-mailer-tppurge-1", true);
    bench.start_controller();
    let r = bench.wait_condition("erase-r", "SoftDeleted", "True").await;
    let restore_until = r.status.as_ref().unwrap().restore_until.clone();

    // The restore window ends while the controller is down.
    bench.stop_controller().await;
    bench.advance_days(15);
    bench.start_controller();
    let purge = bench.wait_jobs("erase-r", "purge", 2).await;
    // And once more during the purge.
    bench.stop_controller().await;
    bench.start_controller();
    bench.resync_rounds(2).await;
    for j in &purge {
        bench.finish_job(j, true);
    }
    let r = bench.wait_condition("erase-r", "Ready", "True").await;
    let status = r.status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Completed));
    // The timeline survived the restarts unchanged.
    assert_eq!(status.restore_until, restore_until);

    let names = bench.job_names("erase-r").await;
    assert_eq!(
        names,
        [
            "erase-r-crm-purge-1",
            "erase-r-crm-softdel-1",
            "erase-r-files-purge-1",
            "erase-r-files-softdel-1",
            "erase-r-mailer-tppurge-1",
        ]
    );
    let uids = job_uids(&bench, "erase-r").await;
    for (name, uid) in &first_uids {
        assert_eq!(uids.get(name), Some(uid), "{name} was created again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_without_its_task_secret_gets_one() {
    // The controller stopped between creating a Job and its Secret: simulate by deleting
    // the Secret while no controller runs.
    let mut bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(request("access-r", "Access"));
    let jobs = bench.wait_jobs("access-r", "export", 1).await;
    common::wait_for("task Secret", support::DEADLINE, || {
        let api = bench.secrets_api();
        let name = jobs[0].clone();
        async move { api.get(&name).await.ok() }
    })
    .await;
    bench.stop_controller().await;
    bench
        .secrets_api()
        .delete(&jobs[0], &Default::default())
        .await
        .unwrap();
    bench.start_controller();
    bench.clock.tick();
    let secret = common::wait_for("task Secret re-created", support::DEADLINE, || {
        let api = bench.secrets_api();
        let name = jobs[0].clone();
        async move { api.get(&name).await.ok() }
    })
    .await;
    assert!(
        secret
            .metadata
            .owner_references
            .unwrap()
            .iter()
            .any(|o| o.kind == "Job" && o.name == jobs[0])
    );
    assert_eq!(bench.job_names("access-r").await, jobs);
}
