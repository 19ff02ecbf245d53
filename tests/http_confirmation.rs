//! A processor's late confirmation through the whole controller, against the emulator: the
//! third-party purge Job completes with a Pending manifest, the request waits (no failure, no
//! retry budget spent), the controller starts a recheck Job at the manifest's retryAfter, and
//! the recheck's confirmation completes the third-party purge.

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "controller_support/mod.rs"]
mod support;

use jiff::SignedDuration;
use privacy_operator::api::request::SystemPhase;
use privacy_operator::controller::worker::result_prefix;
use privacy_operator::plan::JobStep;
use privacy_operator::worker::task::{Confirmation, Manifest, Outcome};
use serde_json::json;
use support::{Bench, NS, condition, data_system, request, storage_dir};

/// Writes the manifest a worker of the mailer's third-party purge would leave.
fn write_manifest(request: &str, manifest: &Manifest) {
    let dir = storage_dir().join(result_prefix(
        NS,
        request,
        "mailer",
        JobStep::ThirdPartyPurge,
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(manifest).unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_purge_is_rechecked_until_the_processor_confirms() {
    let bench = Bench::start().await;
    bench.put(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "mailer-api"}, "stringData": {"hmac": "whsec_1"}}));
    bench.put(data_system("crm", false));
    bench.put(data_system("mailer", true));
    bench.put(request("erase-9", "Erasure"));

    let soft = bench.wait_jobs("erase-9", "soft-delete", 1).await;
    bench.run_job(&soft[0], true).await;
    let third = bench.wait_jobs("erase-9", "third-party-purge", 1).await;
    // The worker exits 0 with a Pending manifest: accepted, not confirmed.
    let recheck_at = bench.clock_now() + SignedDuration::from_hours(2);
    let mut pending = Manifest::new("mailer", JobStep::ThirdPartyPurge);
    pending.outcome = Outcome::Pending;
    pending.reason = Some("AwaitingConfirmation".into());
    pending.retry_after = Some(recheck_at.to_string());
    pending.message = "the processor accepted the purge".into();
    write_manifest("erase-9", &pending);
    bench.mark_job(&third[0], true);

    let r = common::wait_for(
        "the mailer to wait for confirmation",
        support::DEADLINE,
        || async {
            let r = bench.requests().get("erase-9").await.ok()?;
            let waiting = r.status.as_ref().is_some_and(|s| {
                s.systems
                    .iter()
                    .any(|e| e.name == "mailer" && e.phase == SystemPhase::Waiting)
            });
            waiting.then_some(r)
        },
    )
    .await;
    let status = r.status.as_ref().unwrap();
    let entry = status.systems.iter().find(|e| e.name == "mailer").unwrap();
    assert_eq!(
        entry.next_attempt_at.as_ref().map(|t| t.0),
        Some(recheck_at.round(jiff::Unit::Second).unwrap())
    );
    assert_eq!(
        condition(&r, "ThirdPartiesPurged"),
        Some(("False".into(), "AwaitingConfirmation".into()))
    );
    assert!(condition(&r, "Failed").is_none_or(|(s, _)| s == "False"));

    // Past retryAfter: a recheck Job (the same idempotency key: a status check).
    bench.advance_days(1);
    let third = bench.wait_jobs("erase-9", "third-party-purge", 2).await;
    assert!(
        third.contains(&"erase-9-mailer-tppurge-2".to_string()),
        "{third:?}"
    );
    let mut done = Manifest::new("mailer", JobStep::ThirdPartyPurge);
    done.message = "the processor confirmed the third-party purge".into();
    done.confirmation = Some(Confirmation {
        idempotency_key: "po1-test".into(),
        status: "completed".into(),
        confirmation_id: Some("del_1".into()),
        received_at: bench.clock_now().to_string(),
        calls: 1,
        ..Default::default()
    });
    write_manifest("erase-9", &done);
    bench.mark_job("erase-9-mailer-tppurge-2", true);
    let r = bench
        .wait_condition("erase-9", "ThirdPartiesPurged", "True")
        .await;
    let entry = r
        .status
        .as_ref()
        .unwrap()
        .systems
        .iter()
        .find(|e| e.name == "mailer")
        .cloned()
        .unwrap();
    assert_eq!(entry.phase, SystemPhase::Succeeded);
    assert_eq!(entry.attempts, 2);
}
