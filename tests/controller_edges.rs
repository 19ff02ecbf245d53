//! The controller's less travelled paths against the emulator: failed Jobs retried after
//! the planner's backoff, duplicates, deletion of a request, and the write budget.

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "controller_support/mod.rs"]
mod support;

use jiff::SignedDuration;
use kube::api::DeleteParams;
use privacy_operator::api::request::{RequestPhase, SystemPhase};
use support::{Bench, condition, data_system, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_retried_after_the_backoff() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(request("access-f", "Access"));
    let jobs = bench.wait_jobs("access-f", "export", 1).await;
    bench.finish_job(&jobs[0], false);

    // The failure shows per system with its reason; no second Job before the backoff.
    let r = common::wait_for("failure recorded", support::DEADLINE, || async {
        let r = bench.requests().get("access-f").await.ok()?;
        let e = r.status.as_ref()?.systems.first()?.clone();
        (e.phase == SystemPhase::Waiting).then_some(e)
    })
    .await;
    assert!(
        r.message
            .as_deref()
            .unwrap_or_default()
            .contains("BackoffLimitExceeded"),
        "{:?}",
        r.message
    );
    assert_eq!(bench.job_names("access-f").await, jobs);

    // The default policy waits 30s after the first failure.
    bench.clock.advance(SignedDuration::from_secs(31));
    let all = bench.wait_jobs("access-f", "export", 2).await;
    assert_eq!(all, ["access-f-crm-export-1", "access-f-crm-export-2"]);
    bench.finish_job("access-f-crm-export-2", true);
    bench.wait_condition("access-f", "Ready", "True").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_request_for_the_same_subject_is_a_duplicate() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(request("first", "Access"));
    bench.wait_jobs("first", "export", 1).await;
    bench.put(request("second", "Access"));
    let r = bench.wait_condition("second", "Duplicate", "True").await;
    let status = r.status.unwrap();
    assert_eq!(status.duplicate_of.as_deref(), Some("first"));
    assert_eq!(status.phase, Some(RequestPhase::Duplicate));
    assert!(bench.job_names("second").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_request_cleans_up_its_jobs_and_lets_it_go() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(request("access-d", "Access"));
    let jobs = bench.wait_jobs("access-d", "export", 1).await;
    let r = bench.requests().get("access-d").await.unwrap();
    assert!(
        r.metadata
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|f| f == privacy_operator::plan::FINALIZER)
    );
    bench
        .requests()
        .delete("access-d", &DeleteParams::default())
        .await
        .unwrap();
    common::wait_for("request gone", support::DEADLINE, || async {
        bench
            .requests()
            .get_opt("access-d")
            .await
            .ok()
            .and_then(|r| r.is_none().then_some(()))
    })
    .await;
    common::wait_for("Job and Secret gone", support::DEADLINE, || async {
        let job = bench.jobs_api().get_opt(&jobs[0]).await.ok()?;
        let secret = bench.secrets_api().get_opt(&jobs[0]).await.ok()?;
        (job.is_none() && secret.is_none()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_request_over_n_systems_stays_within_the_write_budget() {
    let bench = Bench::start().await;
    let n = 3;
    for i in 0..n {
        bench.put(data_system(&format!("sys{i}"), false));
    }
    bench.emu.request_log().clear();
    bench.put(request("access-w", "Access"));
    let jobs = bench.wait_jobs("access-w", "export", n).await;
    for j in &jobs {
        bench.finish_job(j, true);
    }
    let r = bench.wait_condition("access-w", "Ready", "True").await;
    assert_eq!(condition(&r, "Exported").unwrap().0, "True");
    bench.assert_quiet_resync_keeping_log().await;
    // The request's writes: the DataSystems' own Ready conditions are not part of its budget.
    let writes: Vec<_> = bench
        .writes()
        .into_iter()
        .filter(|w| w.resource != "datasystems")
        .collect();
    let (events, api): (Vec<_>, Vec<_>) = writes.iter().partition(|w| w.resource == "events");
    eprintln!("writes: {} API + {} Events", api.len(), events.len());
    assert!(
        api.len() <= 2 * n + 3,
        "{} writes (excluding {} Events) for {n} systems: {api:#?}",
        api.len(),
        events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_request_says_so_with_a_warning_event() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(request("access-o", "Access"));
    bench.wait_jobs("access-o", "export", 1).await;
    // GDPR: one calendar month. The Job never finishes.
    bench.advance_days(32);
    let r = bench.wait_condition("access-o", "Overdue", "True").await;
    assert_eq!(condition(&r, "Overdue").unwrap().1, "DeadlinePassed");
    let events: Vec<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(bench.client.clone(), support::NS)
            .list(&Default::default())
            .await
            .unwrap()
            .items;
    let overdue = common::wait_for("Overdue Event", support::DEADLINE, || async {
        let events: Vec<k8s_openapi::api::events::v1::Event> =
            kube::Api::namespaced(bench.client.clone(), support::NS)
                .list(&Default::default())
                .await
                .ok()?
                .items;
        events
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Overdue"))
    })
    .await;
    assert!(!events.is_empty());
    assert_eq!(overdue.type_.as_deref(), Some("Warning"));
    assert_eq!(
        overdue.reporting_controller.as_deref(),
        Some("privacy-operator")
    );
    assert_eq!(
        overdue.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("access-o")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_complete_through_failing_writes_and_dropped_watches() {
    use emulator::{FaultKind, FaultRule};
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(data_system("files", false));
    bench.put(data_system("mailer", true));

    let faults = bench.emu.faults();
    faults.set_seed(11);
    faults.add_rule(
        FaultRule::new(FaultKind::InternalError)
            .probability(0.2)
            .writes_only(),
    );
    faults.add_rule(
        FaultRule::new(FaultKind::Conflict)
            .probability(0.15)
            .writes_only()
            .resource("datasubjectrequests"),
    );
    faults.drop_watches_after(Some(5));

    bench.put(request("access-x", "Access"));
    bench.put(request("erase-x", "Erasure"));
    let exports = bench.wait_jobs("access-x", "export", 2).await;
    for j in &exports {
        bench.run_job(j, true).await;
    }
    for j in bench.wait_jobs("erase-x", "soft-delete", 2).await {
        bench.run_job(&j, true).await;
    }
    for j in bench.wait_jobs("erase-x", "third-party-purge", 1).await {
        bench.run_job(&j, true).await;
    }
    bench.wait_condition("access-x", "Ready", "True").await;
    bench.wait_condition("erase-x", "SoftDeleted", "True").await;
    bench.advance_days(15);
    for j in bench.wait_jobs("erase-x", "purge", 2).await {
        bench.run_job(&j, true).await;
    }
    bench.wait_condition("erase-x", "Ready", "True").await;
    assert!(faults.injected() > 0, "faults were injected");

    // Every Job exactly once, first attempt only (each ran with its task Secret).
    let mut names = bench.job_names("access-x").await;
    names.extend(bench.job_names("erase-x").await);
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with("-1")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restriction_runs_restrict_jobs_with_the_purposes_in_the_task() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    let mut req = request("restrict-1", "Restriction");
    req["spec"]["restrictedPurposes"] = serde_json::json!(["marketing-email"]);
    bench.put(req);
    let jobs = bench.wait_jobs("restrict-1", "restrict", 1).await;
    bench.run_job(&jobs[0], true).await;
    let secret = bench.secrets_api().get(&jobs[0]).await.unwrap();
    let task =
        privacy_operator::worker::task::Task::from_json(&secret.data.unwrap()["task.json"].0)
            .expect("the worker accepts the task");
    assert_eq!(task.purposes, ["marketing-email"]);
    assert_eq!(task.request.name, "restrict-1");
    bench.wait_condition("restrict-1", "Ready", "True").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legal_hold_pauses_the_purge_until_released() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    let mut req = request("erase-h", "Erasure");
    req["spec"]["legalHold"] = serde_json::json!(true);
    bench.put(req);
    let soft = bench.wait_jobs("erase-h", "soft-delete", 1).await;
    bench.run_job(&soft[0], true).await;
    bench.wait_condition("erase-h", "SoftDeleted", "True").await;
    bench.advance_days(15);
    bench.wait_condition("erase-h", "OnHold", "True").await;
    bench.resync_rounds(2).await;
    assert!(
        !bench
            .job_names("erase-h")
            .await
            .iter()
            .any(|n| n.contains("-purge-"))
    );
    bench
        .requests()
        .patch(
            "erase-h",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"legalHold": false}})),
        )
        .await
        .unwrap();
    let purge = bench.wait_jobs("erase-h", "purge", 1).await;
    bench.run_job(&purge[0], true).await;
    bench.wait_condition("erase-h", "Purged", "True").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_erasure_in_its_window_still_purges_before_it_goes() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(request("erase-del", "Erasure"));
    let soft = bench.wait_jobs("erase-del", "soft-delete", 1).await;
    bench.run_job(&soft[0], true).await;
    bench
        .wait_condition("erase-del", "SoftDeleted", "True")
        .await;
    bench
        .requests()
        .delete("erase-del", &DeleteParams::default())
        .await
        .unwrap();
    bench
        .wait_condition("erase-del", "DeletionDeferred", "True")
        .await;
    bench.advance_days(15);
    let purge = bench.wait_jobs("erase-del", "purge", 1).await;
    bench.run_job(&purge[0], true).await;
    common::wait_for(
        "request gone after the purge",
        support::DEADLINE,
        || async {
            bench
                .requests()
                .get_opt("erase-del")
                .await
                .ok()
                .and_then(|r| r.is_none().then_some(()))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rectification_carries_resolved_values_only_in_the_task_secret() {
    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "new-values"},
        "stringData": {"phone": "+447700900123"}
    }));
    let mut req = request("rectify-1", "Rectification");
    req["spec"]["rectification"] = serde_json::json!({"changes": [
        {"field": "last_name", "value": "Doe-Smith"},
        {"field": "phone", "system": "crm", "table": "contacts",
         "valueFrom": {"name": "new-values", "key": "phone"}},
    ]});
    bench.put(req);
    let jobs = bench.wait_jobs("rectify-1", "rectify", 1).await;
    let job = bench.jobs_api().get(&jobs[0]).await.unwrap();
    let spec = serde_json::to_string(&job.spec).unwrap();
    assert!(
        !spec.contains("Doe-Smith") && !spec.contains("7700900123"),
        "{spec}"
    );
    // The Job's task Secret is created right after the Job: running the Job waits for it.
    bench.run_job(&jobs[0], true).await;
    let secret = bench.secrets_api().get(&jobs[0]).await.unwrap();
    let task =
        privacy_operator::worker::task::Task::from_json(&secret.data.unwrap()["task.json"].0)
            .expect("the worker accepts the task");
    let mut changes: Vec<(String, Option<String>, String)> = task
        .changes
        .iter()
        .map(|c| (c.field.clone(), c.table.clone(), c.value.clone()))
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            ("last_name".to_string(), None, "Doe-Smith".to_string()),
            (
                "phone".to_string(),
                Some("contacts".to_string()),
                "+447700900123".to_string()
            ),
        ]
    );
    bench.wait_condition("rectify-1", "Ready", "True").await;
    let r = bench.requests().get("rectify-1").await.unwrap();
    let status = serde_json::to_string(&r.status).unwrap();
    assert!(
        !status.contains("Doe-Smith") && !status.contains("7700900123"),
        "{status}"
    );
}
