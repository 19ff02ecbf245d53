//! Access and Portability.

use std::time::Duration as StdDuration;

use crate::api::{
    conditions::types,
    request::{RequestPhase, SystemPhase},
};

use super::super::{Action, IntegrationData, JobStep, SLOT_RETRY, job_name};
use super::*;

fn access() -> Sim {
    Sim::new(
        "Access",
        "GDPR",
        vec![
            first_party("crm"),
            first_party("tickets"),
            third_party("mailer", false),
        ],
        "2024-01-31T09:00:00Z",
    )
}

#[test]
fn access_exports_each_system_then_assembles_and_is_ready() {
    let mut sim = access();
    let p = sim.step();
    assert_eq!(p.actions[0], Action::AddFinalizer);
    assert_eq!(
        Sim::created_in(&p),
        vec![
            ("crm".to_string(), JobStep::Export, 1),
            ("tickets".to_string(), JobStep::Export, 1)
        ]
    );
    assert!(sim.is_true(types::ACCEPTED) && sim.is_true(types::VERIFIED));
    assert_eq!(sim.cond(types::RECONCILING).unwrap().0, "True");
    assert_eq!(sim.phase(), Some(RequestPhase::InProgress));
    assert_eq!(
        sim.time(&sim.status().due_at),
        ts("2024-02-29T09:00:00Z"),
        "GDPR: one calendar month, clamped to the end of February"
    );
    let mailer = sim
        .status()
        .systems
        .iter()
        .find(|s| s.name == "mailer")
        .unwrap();
    assert_eq!(mailer.phase, SystemPhase::Unsupported);
    assert!(
        mailer
            .message
            .as_deref()
            .unwrap()
            .contains("Acme Mailer Ltd")
    );

    // One of two exports done: nothing worth a write yet.
    sim.advance(days(0) + jiff::SignedDuration::from_secs(3));
    sim.succeed("crm", JobStep::Export);
    let p = sim.step();
    assert!(p.is_noop(), "{:#?}", p.actions);

    sim.advance(jiff::SignedDuration::from_secs(2));
    sim.succeed("tickets", JobStep::Export);
    let p = sim.step();
    assert_eq!(
        sim.assembled,
        vec![Action::AssembleExport {
            systems: vec!["crm".into(), "tickets".into()],
            integrations: vec![IntegrationData {
                system: "mailer".into(),
                vendor: Some("Acme Mailer Ltd".into()),
                contact: Some("privacy@acme-mailer.example".into()),
            }],
        }]
    );
    assert!(sim.is_true(types::EXPORTED) && sim.is_true(types::READY));
    assert_eq!(sim.cond(types::RECONCILING), None);
    assert_eq!(sim.phase(), Some(RequestPhase::Completed));
    assert_eq!(p.requeue_after, None);
    let export = sim.status().export.clone().unwrap();
    assert!(export.location.is_some());
    assert_eq!(
        export.expires_at.unwrap().0,
        ts("2024-01-31T09:00:05Z") + days(7)
    );
    assert!(
        sim.status()
            .systems
            .iter()
            .all(|s| s.phase != SystemPhase::Running)
    );
    assert_eq!(
        sim.time(&sim.status().completed_at),
        ts("2024-01-31T09:00:05Z")
    );
    // Two status writes for the whole request (plus 2 Jobs and the finalizer: 2N + 3).
    assert_eq!(sim.writes, 2);
    assert_eq!(sim.event_reasons(), vec!["Accepted", "Exported"]);

    // Complete means complete: nothing more happens until the bundle expires (exportExpiry,
    // 7 days by default), when it is deleted from object storage, once, and status says so.
    let expires = sim.time(&sim.status().export.as_ref().unwrap().expires_at);
    assert_eq!(expires, ts("2024-02-07T09:00:05Z"));
    let wait = sim.peek().requeue_after.expect("wakes at the expiry");
    assert_eq!(wait, std::time::Duration::from_secs(7 * 86_400));
    sim.advance(days(6));
    assert!(sim.step().is_noop());
    sim.advance(days(1));
    let p = sim.step();
    assert_eq!(sim.exports_deleted, 1);
    assert!(p.status_changed);
    let export = sim.status().export.clone().unwrap();
    assert_eq!(sim.time(&export.deleted_at), ts("2024-02-07T09:00:05Z"));
    assert!(export.download_url.is_none());
    assert_eq!(sim.event_reasons().last(), Some(&"ExportExpired"));
    sim.advance(days(40));
    assert!(sim.step().is_noop());
    assert_eq!(sim.exports_deleted, 1);
}

#[test]
fn a_system_that_cannot_export_alone_still_gives_a_bundle() {
    let mut sim = Sim::new(
        "Portability",
        "UKGDPR",
        vec![third_party("mailer", false)],
        "2024-03-01T00:00:00Z",
    );
    sim.step();
    assert_eq!(sim.assembled.len(), 1);
    assert!(sim.is_true(types::READY));
}

#[test]
fn nothing_runs_until_verified() {
    let mut sim = access();
    sim.input.request.spec.verification = None;
    let p = sim.step();
    assert!(Sim::created_in(&p).is_empty());
    assert_eq!(sim.phase(), Some(RequestPhase::AwaitingVerification));
    assert_eq!(
        sim.cond(types::VERIFIED),
        Some(("False".into(), "AwaitingVerification".into()))
    );
    assert_eq!(sim.cond(types::RECONCILING).unwrap().0, "True");
    // Only the statutory deadline wakes it: the spec change does the rest.
    assert_eq!(
        p.requeue_after,
        Some(StdDuration::try_from(ts("2024-02-29T09:00:00Z").duration_since(sim.now)).unwrap())
    );

    sim.advance(days(2));
    sim.edit(|s| s.verification = super::spec("Access", "GDPR").verification);
    let p = sim.step();
    assert_eq!(Sim::created_in(&p).len(), 2);
    assert!(sim.is_true(types::VERIFIED));
    let generation = sim.status().observed_generation;
    assert_eq!(generation, Some(2));
    assert!(
        sim.status()
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
}

#[test]
fn a_pre_verified_policy_opens_the_gate() {
    let mut sim = access();
    sim.input.request.spec.verification = None;
    sim.input.context.policy.pre_verified = true;
    sim.input.context.policy_name = Some("portal".into());
    let p = sim.step();
    assert_eq!(Sim::created_in(&p).len(), 2);
    assert_eq!(
        sim.cond(types::VERIFIED),
        Some(("True".into(), "PreVerified".into()))
    );
}

#[test]
fn concurrency_limits_are_honoured() {
    let mut sim = access();
    // Another request's Job holds the only slot on crm.
    sim.input.context.systems[0].concurrency = 1;
    sim.input.context.systems[0].running_jobs = 1;
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("tickets".to_string(), JobStep::Export, 1)]
    );
    assert_eq!(p.waiting_for_slots, vec!["crm".to_string()]);
    assert_eq!(p.requeue_after, Some(SLOT_RETRY));
    let crm = sim
        .status()
        .systems
        .iter()
        .find(|s| s.name == "crm")
        .unwrap();
    assert_eq!(crm.phase, SystemPhase::Pending);
    assert!(crm.message.as_deref().unwrap().contains("free Job slot"));

    // Still busy: no change, no write.
    sim.advance(jiff::SignedDuration::from_secs(5));
    assert!(sim.step().is_noop());

    sim.input.context.systems[0].running_jobs = 0;
    sim.advance(jiff::SignedDuration::from_secs(5));
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("crm".to_string(), JobStep::Export, 1)]
    );
    assert!(p.waiting_for_slots.is_empty());
}

#[test]
fn retries_back_off_and_fail_when_the_budget_is_spent() {
    let mut sim = Sim::new(
        "Access",
        "CCPA",
        vec![first_party("crm")],
        "2024-05-01T12:00:00Z",
    );
    sim.input.context.policy.retry.max_attempts = 3;
    sim.step();
    sim.advance(jiff::SignedDuration::from_secs(10));
    sim.fail("crm", JobStep::Export, "BackoffLimitExceeded");
    let p = sim.step();
    let crm = &sim.status().systems[0];
    assert_eq!(crm.phase, SystemPhase::Waiting);
    assert_eq!(crm.attempts, 1);
    assert_eq!(
        crm.next_attempt_at.as_ref().unwrap().0,
        ts("2024-05-01T12:00:40Z")
    );
    assert_eq!(p.requeue_after, Some(StdDuration::from_secs(30)));
    assert!(sim.event_reasons().contains(&"JobFailed"));
    assert_ne!(sim.phase(), Some(RequestPhase::Failed));

    // Not before the backoff.
    sim.advance(jiff::SignedDuration::from_secs(29));
    assert!(sim.step().is_noop());
    sim.advance(jiff::SignedDuration::from_secs(1));
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("crm".to_string(), JobStep::Export, 2)]
    );
    assert_eq!(sim.created[1], job_name("req-1", "crm", JobStep::Export, 2));

    // Second failure doubles the backoff.
    sim.fail("crm", JobStep::Export, "DeadlineExceeded");
    let p = sim.step();
    assert_eq!(p.requeue_after, Some(StdDuration::from_secs(60)));
    sim.advance(jiff::SignedDuration::from_secs(60));
    sim.step();
    sim.fail("crm", JobStep::Export, "BackoffLimitExceeded");
    let p = sim.step();
    assert!(Sim::created_in(&p).is_empty());
    assert_eq!(sim.phase(), Some(RequestPhase::Failed));
    assert!(sim.is_true(types::FAILED) && sim.is_true(types::STALLED));
    assert_eq!(sim.cond(types::READY).unwrap().0, "False");
    let (_, _) = sim.cond(types::FAILED).unwrap();
    let msg = &sim
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == types::FAILED)
        .unwrap()
        .message;
    assert!(
        msg.contains("failed 3 times") && msg.contains("create a new request"),
        "{msg}"
    );
    assert!(sim.event_reasons().contains(&"RetriesExhausted"));
    assert!(sim.event_reasons().contains(&"Failed"));
    assert_eq!(sim.created.len(), 3);

    // Terminal: nothing more, even much later.
    sim.advance(days(60));
    assert!(sim.step().is_noop());
}

#[test]
fn deleting_a_finished_access_request_deletes_its_bundle_first() {
    let mut sim = access();
    sim.step();
    for j in sim
        .jobs_of(JobStep::Export)
        .iter()
        .map(|j| j.system.clone())
        .collect::<Vec<_>>()
    {
        sim.succeed(&j, JobStep::Export);
    }
    sim.step();
    assert!(sim.is_true(types::READY));
    sim.input.request.deleting = true;
    let p = sim.step();
    let delete = p
        .actions
        .iter()
        .position(|a| matches!(a, Action::DeleteExport));
    let finalizer = p
        .actions
        .iter()
        .position(|a| matches!(a, Action::RemoveFinalizer));
    assert!(delete.is_some() && delete < finalizer, "{:#?}", p.actions);
}

#[test]
fn a_failed_export_shows_the_workers_reason_and_words() {
    let mut sim = access();
    sim.step();
    let job = sim.fail("crm", JobStep::Export, "MissingTable");
    let manifest: crate::worker::task::Manifest = serde_json::from_value(serde_json::json!({
        "version": crate::worker::task::CONTRACT_VERSION,
        "system": "crm", "step": "Export", "outcome": "Failed", "reason": "MissingTable",
        "tables": {}, "message": "table crm.notes does not exist"
    }))
    .unwrap();
    for j in &mut sim.input.children.jobs {
        if j.name == job {
            j.result = Some(std::sync::Arc::new(manifest.clone()));
        }
    }
    sim.step();
    let crm = sim
        .status()
        .systems
        .iter()
        .find(|s| s.name == "crm")
        .unwrap();
    let message = crm.message.as_deref().unwrap();
    assert!(
        message.contains("(MissingTable: table crm.notes does not exist)"),
        "{message}"
    );
}
