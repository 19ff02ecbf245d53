//! The erasure timeline over simulated weeks.

use std::time::Duration as StdDuration;

use jiff::SignedDuration;

use crate::api::{
    conditions::types,
    request::{RequestPhase, Step, SystemPhase},
};

use super::super::{
    Action, JobStep,
    conditions::{DELETION_DEFERRED, THIRD_PARTIES_OVERDUE},
};
use super::*;

const T0: &str = "2024-03-01T10:00:00Z";

fn erasure() -> Sim {
    Sim::new(
        "Erasure",
        "GDPR",
        vec![
            first_party("crm"),
            first_party("recordings"),
            third_party("mailer", true),
        ],
        T0,
    )
}

/// t0: soft deletes on first-party systems, the purge request to the third party; then the
/// soft deletes succeed.
fn soft_deleted() -> Sim {
    let mut sim = erasure();
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![
            ("crm".to_string(), JobStep::SoftDelete, 1),
            ("recordings".to_string(), JobStep::SoftDelete, 1),
            ("mailer".to_string(), JobStep::ThirdPartyPurge, 1),
        ]
    );
    sim.advance(SignedDuration::from_secs(20));
    sim.succeed("crm", JobStep::SoftDelete);
    sim.succeed("recordings", JobStep::SoftDelete);
    sim.step();
    sim
}

fn requeue(p: &Plan) -> SignedDuration {
    SignedDuration::try_from(p.requeue_after.expect("a requeue")).unwrap()
}

#[test]
fn erasure_timeline_over_weeks() {
    let mut sim = soft_deleted();
    let t0 = ts(T0);
    assert_eq!(sim.time(&sim.status().restore_until), t0 + days(14));
    assert_eq!(sim.time(&sim.status().purge_after), t0 + days(14));
    assert_eq!(sim.time(&sim.status().third_party_deadline), t0 + days(30));
    assert!(sim.is_true(types::SOFT_DELETED));
    assert_eq!(sim.phase(), Some(RequestPhase::RestoreWindow));
    assert_eq!(
        sim.cond(types::PURGED),
        Some(("False".into(), "Scheduled".into()))
    );
    assert_eq!(
        sim.cond(types::THIRD_PARTIES_PURGED),
        Some(("False".into(), "AwaitingConfirmation".into()))
    );
    assert!(sim.event_reasons().contains(&"SoftDeleted"));
    // The next deadline is the end of the restore window, to the second.
    let p = sim.last.clone().unwrap();
    assert_eq!(requeue(&p), days(14) - SignedDuration::from_secs(20));

    // Day 3: the processor confirms.
    sim.advance(days(3));
    sim.succeed("mailer", JobStep::ThirdPartyPurge);
    sim.step();
    assert!(sim.is_true(types::THIRD_PARTIES_PURGED));
    assert!(!sim.is_true(types::READY));

    // Nothing happens until restoreUntil; the timer goes straight there.
    let passes = sim.run_until(t0 + days(14) - SignedDuration::from_secs(1));
    assert_eq!(passes, 1);
    assert!(sim.jobs_of(JobStep::Purge).is_empty());
    sim.now = t0 + days(14);
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![
            ("crm".to_string(), JobStep::Purge, 1),
            ("recordings".to_string(), JobStep::Purge, 1)
        ]
    );
    assert_eq!(
        sim.cond(types::PURGED),
        Some(("False".into(), "Purging".into()))
    );
    assert_eq!(sim.phase(), Some(RequestPhase::InProgress));

    sim.advance(SignedDuration::from_mins(5));
    sim.succeed("crm", JobStep::Purge);
    sim.succeed("recordings", JobStep::Purge);
    let p = sim.step();
    assert!(sim.is_true(types::PURGED));
    assert!(sim.is_true(types::READY));
    assert_eq!(sim.phase(), Some(RequestPhase::Completed));
    let purged_at = t0 + days(14) + SignedDuration::from_mins(5);
    assert_eq!(sim.time(&sim.status().completed_at), purged_at);
    assert_eq!(
        sim.time(&sim.status().backups_age_out_at),
        purged_at + days(90)
    );
    assert_eq!(p.requeue_after, None);
    assert!(!sim.is_true(types::OVERDUE));
    assert!(
        sim.status()
            .systems
            .iter()
            .all(|s| s.phase == SystemPhase::Succeeded)
    );
    assert!(
        sim.status()
            .systems
            .iter()
            .all(|s| s.step == Some(Step::Purge))
    );
    let reasons = sim.event_reasons();
    for r in [
        "Accepted",
        "SoftDeleted",
        "ThirdPartiesPurged",
        "Purged",
        "Erased",
    ] {
        assert!(reasons.contains(&r), "{r} missing from {reasons:?}");
    }
}

#[test]
fn the_third_party_deadline_passes_unconfirmed() {
    let mut sim = soft_deleted();
    let t0 = ts(T0);
    sim.run_until(t0 + days(14));
    sim.succeed("crm", JobStep::Purge);
    sim.succeed("recordings", JobStep::Purge);
    let p = sim.step();
    assert!(sim.is_true(types::PURGED));
    assert_eq!(sim.phase(), Some(RequestPhase::InProgress));
    // Next: the third-party deadline (dueAt, 1 April, comes later than 31 March).
    assert_eq!(sim.now + requeue(&p), t0 + days(30));

    sim.now = t0 + days(30);
    sim.step();
    assert!(
        !sim.is_true(THIRD_PARTIES_OVERDUE),
        "exactly at the deadline is not late"
    );
    sim.now = t0 + days(30) + SignedDuration::from_secs(1);
    sim.step();
    assert!(sim.is_true(THIRD_PARTIES_OVERDUE));
    assert!(sim.event_reasons().contains(&"ThirdPartiesOverdue"));

    // Late confirmation completes the request; the warning stays visible.
    sim.advance(days(1));
    sim.succeed("mailer", JobStep::ThirdPartyPurge);
    sim.step();
    assert!(sim.is_true(types::READY));
    assert!(sim.is_true(THIRD_PARTIES_OVERDUE));
    // GDPR due 1 April 10:00, completed 31 March + 1 day: Overdue too.
    assert!(sim.is_true(types::OVERDUE));
}

#[test]
fn cancel_at_the_last_second_restores() {
    let mut sim = soft_deleted();
    let t0 = ts(T0);
    sim.now = t0 + days(14) - SignedDuration::from_secs(1);
    sim.edit(|s| s.cancel = true);
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![
            ("crm".to_string(), JobStep::Restore, 1),
            ("recordings".to_string(), JobStep::Restore, 1)
        ]
    );
    assert_eq!(
        sim.cond(types::RESTORED),
        Some(("False".into(), "Restoring".into()))
    );
    assert_eq!(sim.status().purge_after, None);

    // The window closes while the restores run: the decision holds.
    sim.advance(SignedDuration::from_mins(2));
    let p = sim.step();
    assert!(p.is_noop(), "{:#?}", p.actions);
    assert!(sim.jobs_of(JobStep::Purge).is_empty());
    sim.succeed("crm", JobStep::Restore);
    sim.succeed("recordings", JobStep::Restore);
    sim.step();
    assert!(sim.is_true(types::RESTORED) && sim.is_true(types::READY));
    assert_eq!(sim.phase(), Some(RequestPhase::Restored));
    assert_eq!(
        sim.cond(types::SOFT_DELETED),
        Some(("False".into(), "Restored".into()))
    );
    let msg = &sim
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == types::RESTORED)
        .unwrap()
        .message;
    assert!(msg.contains("cannot be recalled"), "{msg}");
    // Never purged, even weeks later.
    sim.advance(days(30));
    assert!(sim.step().is_noop());
    assert!(sim.jobs_of(JobStep::Purge).is_empty());
}

#[test]
fn cancel_exactly_at_restore_until_is_too_late() {
    let mut sim = soft_deleted();
    sim.now = ts(T0) + days(14);
    sim.edit(|s| s.cancel = true);
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![
            ("crm".to_string(), JobStep::Purge, 1),
            ("recordings".to_string(), JobStep::Purge, 1)
        ]
    );
    assert_eq!(
        sim.cond(types::RESTORED),
        Some(("False".into(), "WindowClosed".into()))
    );
    assert!(sim.event_reasons().contains(&"CancelTooLate"));
    assert!(sim.jobs_of(JobStep::Restore).is_empty());
}

#[test]
fn cancel_before_the_soft_delete_ran_has_nothing_to_restore() {
    let mut sim = erasure();
    sim.input.context.systems[0].concurrency = 1;
    sim.input.context.systems[0].running_jobs = 1; // crm busy
    sim.step();
    assert_eq!(sim.jobs_of(JobStep::SoftDelete).len(), 1);
    sim.edit(|s| s.cancel = true);
    sim.advance(SignedDuration::from_secs(1));
    sim.step();
    // recordings' soft delete still runs: wait for it, then restore it only.
    sim.advance(SignedDuration::from_secs(5));
    sim.succeed("recordings", JobStep::SoftDelete);
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("recordings".to_string(), JobStep::Restore, 1)]
    );
    let crm = sim
        .status()
        .systems
        .iter()
        .find(|s| s.name == "crm")
        .unwrap();
    assert_eq!(crm.phase, SystemPhase::Skipped);
    sim.succeed("recordings", JobStep::Restore);
    sim.step();
    assert_eq!(sim.phase(), Some(RequestPhase::Restored));
}

#[test]
fn cancel_before_anything_started_ends_cancelled() {
    let mut sim = erasure();
    sim.input.request.spec.verification = None;
    sim.step();
    assert_eq!(sim.phase(), Some(RequestPhase::AwaitingVerification));
    sim.edit(|s| s.cancel = true);
    let p = sim.step();
    assert!(Sim::created_in(&p).is_empty());
    assert_eq!(sim.phase(), Some(RequestPhase::Cancelled));
    assert!(sim.is_true(types::READY));
}

#[test]
fn legal_hold_across_the_purge_time_then_released() {
    let mut sim = soft_deleted();
    let t0 = ts(T0);
    sim.advance(days(10));
    sim.edit(|s| s.legal_hold = true);
    sim.step();
    assert!(sim.is_true(types::ON_HOLD));
    assert_eq!(sim.status().purge_after, None);
    assert!(
        sim.is_true(types::DEADLINE_AT_RISK),
        "no end to the hold: completion unknown"
    );

    // The restore window ends under the hold: no purge, the timeline is kept.
    sim.run_until(t0 + days(20));
    assert!(sim.jobs_of(JobStep::Purge).is_empty());
    assert_eq!(sim.phase(), Some(RequestPhase::OnHold));
    assert_eq!(sim.time(&sim.status().restore_until), t0 + days(14));
    assert_eq!(sim.time(&sim.status().third_party_deadline), t0 + days(30));
    let crm = sim
        .status()
        .systems
        .iter()
        .find(|s| s.name == "crm")
        .unwrap();
    assert!(
        crm.message.as_deref().unwrap().contains("legal hold"),
        "{crm:?}"
    );
    assert_eq!(
        sim.cond(types::PURGED),
        Some(("False".into(), "OnHold".into()))
    );

    // Released on day 20: purge now, purgeAfter records when it could run.
    sim.edit(|s| s.legal_hold = false);
    let p = sim.step();
    assert_eq!(Sim::created_in(&p).len(), 2);
    assert_eq!(sim.time(&sim.status().purge_after), t0 + days(20));
    assert_eq!(
        sim.cond(types::ON_HOLD),
        Some(("False".into(), "Released".into()))
    );
    assert!(sim.event_reasons().contains(&"HoldReleased"));
    sim.succeed("crm", JobStep::Purge);
    sim.succeed("recordings", JobStep::Purge);
    sim.succeed("mailer", JobStep::ThirdPartyPurge);
    sim.step();
    assert_eq!(sim.phase(), Some(RequestPhase::Completed));
    assert_eq!(sim.cond(types::DEADLINE_AT_RISK).unwrap().0, "False");
}

#[test]
fn a_policy_hold_with_an_end_moves_purge_after_and_the_requeue() {
    let mut sim = erasure();
    let t0 = ts(T0);
    let until = t0 + days(21);
    sim.input.context.policy.legal_holds = serde_json::from_value(serde_json::json!([{
        "name": "case-2024-117",
        "reason": "litigation",
        "systems": ["crm"],
        "until": super::super::timeline::fmt(until),
    }]))
    .unwrap();
    let p = sim.step();
    // The hold names crm only: the third party gets its purge request at t0.
    assert_eq!(Sim::created_in(&p).len(), 3);
    sim.succeed("crm", JobStep::SoftDelete);
    sim.succeed("recordings", JobStep::SoftDelete);
    sim.step();
    assert_eq!(sim.time(&sim.status().purge_after), until);
    sim.run_until(t0 + days(14));
    let purges: Vec<_> = sim
        .jobs_of(JobStep::Purge)
        .iter()
        .map(|j| j.system.clone())
        .collect();
    assert_eq!(purges, vec!["recordings".to_string()]);
    sim.succeed("recordings", JobStep::Purge);
    let p = sim.step();
    assert_eq!(
        sim.now + requeue(&p),
        until,
        "wake exactly when the hold ends"
    );
    sim.now = until;
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("crm".to_string(), JobStep::Purge, 1)]
    );
}

#[test]
fn a_hold_for_another_subject_does_not_apply() {
    let mut sim = erasure();
    sim.input.context.policy.legal_holds = serde_json::from_value(serde_json::json!([{
        "name": "other",
        "reason": "litigation",
        "subjectDigests": ["sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"],
    }]))
    .unwrap();
    sim.step();
    assert!(!sim.is_true(types::ON_HOLD));
    assert_eq!(sim.jobs_of(JobStep::ThirdPartyPurge).len(), 1);
}

#[test]
fn a_restore_window_past_the_due_date_warns() {
    let mut sim = Sim::new("Erasure", "LGPD", vec![first_party("crm")], T0);
    // LGPD: 15 days; a 20-day window cannot finish in time.
    sim.input.context.policy.erasure.restore_window = crate::api::Duration::days(20);
    sim.step();
    assert!(sim.is_true(types::DEADLINE_AT_RISK));
    assert!(sim.event_reasons().contains(&"DeadlineAtRisk"));
    // The due date still comes first, and makes it Overdue.
    let p = sim.last.clone().unwrap();
    assert_eq!(sim.now + requeue(&p), ts(T0) + days(15));
    sim.succeed("crm", JobStep::SoftDelete);
    sim.run_until(ts(T0) + days(16));
    assert!(sim.is_true(types::OVERDUE));
    assert!(sim.event_reasons().contains(&"Overdue"));
}

#[test]
fn soft_delete_retries_then_purges_only_what_was_hidden() {
    let mut sim = erasure();
    sim.input.context.policy.retry.max_attempts = 2;
    sim.step();
    sim.fail("crm", JobStep::SoftDelete, "BackoffLimitExceeded");
    sim.succeed("recordings", JobStep::SoftDelete);
    sim.succeed("mailer", JobStep::ThirdPartyPurge);
    sim.step();
    sim.advance(SignedDuration::from_secs(30));
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("crm".to_string(), JobStep::SoftDelete, 2)]
    );
    sim.fail("crm", JobStep::SoftDelete, "BackoffLimitExceeded");
    sim.step();
    // Failed is visible at once, but the timeline goes on for the others.
    assert!(sim.is_true(types::FAILED));
    assert_ne!(sim.phase(), Some(RequestPhase::Failed));
    sim.run_until(ts(T0) + days(14));
    let purges: Vec<_> = sim
        .jobs_of(JobStep::Purge)
        .iter()
        .map(|j| j.system.clone())
        .collect();
    assert_eq!(purges, vec!["recordings".to_string()]);
    sim.succeed("recordings", JobStep::Purge);
    sim.step();
    assert_eq!(sim.phase(), Some(RequestPhase::Failed));
    assert!(sim.is_true(types::STALLED));
}

#[test]
fn deleting_in_the_restore_window_goes_on_to_purge() {
    let mut sim = soft_deleted();
    let t0 = ts(T0);
    sim.advance(days(2));
    sim.input.request.deleting = true;
    let p = sim.step();
    assert!(!p.actions.contains(&Action::RemoveFinalizer));
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::DeleteJob { .. }))
    );
    assert!(sim.is_true(DELETION_DEFERRED));
    assert!(sim.event_reasons().contains(&"DeletionDeferred"));
    assert_eq!(sim.now + requeue(&p), t0 + days(14));

    sim.run_until(t0 + days(14));
    assert_eq!(sim.jobs_of(JobStep::Purge).len(), 2);
    sim.succeed("crm", JobStep::Purge);
    sim.succeed("recordings", JobStep::Purge);
    sim.succeed("mailer", JobStep::ThirdPartyPurge);
    let p = sim.step();
    assert!(sim.gone, "{:#?}", p.actions);
    assert_eq!(sim.phase(), Some(RequestPhase::Completed));
    let deleted = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::DeleteJob { .. }))
        .count();
    assert_eq!(deleted, 5);
    let secrets = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::DeleteSecret { .. }))
        .count();
    assert_eq!(secrets, 5);
    assert_eq!(
        p.actions.last(),
        Some(&Action::RecordEvent(sim.events.last().unwrap().clone()))
    );
}

#[test]
fn deleting_in_the_window_can_still_be_cancelled() {
    let mut sim = soft_deleted();
    sim.input.request.deleting = true;
    sim.step();
    sim.advance(days(1));
    sim.edit(|s| s.cancel = true);
    sim.step();
    sim.succeed("crm", JobStep::Restore);
    sim.succeed("recordings", JobStep::Restore);
    sim.step();
    assert!(sim.gone);
    assert_eq!(sim.phase(), Some(RequestPhase::Restored));
}

#[test]
fn requeue_is_exact_at_every_deadline() {
    let mut sim = erasure();
    let t0 = ts(T0);
    let p = sim.step();
    // Jobs just created: the earliest deadline is restoreUntil.
    assert_eq!(
        p.requeue_after,
        Some(StdDuration::from_secs(14 * 24 * 3600))
    );
    sim.succeed("crm", JobStep::SoftDelete);
    sim.succeed("recordings", JobStep::SoftDelete);
    sim.now = t0 + days(14) + SignedDuration::from_millis(250);
    let p = sim.step();
    assert_eq!(Sim::created_in(&p).len(), 2);
    // Then the third-party deadline, to the nanosecond.
    assert_eq!(
        p.requeue_after,
        Some(
            StdDuration::try_from(t0.checked_add(days(30)).unwrap().duration_since(sim.now))
                .unwrap()
        )
    );
}

#[test]
fn a_hold_from_the_start_keeps_the_purge_request_to_third_parties() {
    let mut sim = erasure();
    sim.input.request.spec.legal_hold = true;
    let p = sim.step();
    // Soft deletes are restorable, so they run; the purge request is a purge: it waits.
    assert_eq!(
        Sim::created_in(&p),
        vec![
            ("crm".to_string(), JobStep::SoftDelete, 1),
            ("recordings".to_string(), JobStep::SoftDelete, 1)
        ]
    );
    assert_eq!(
        sim.cond(types::THIRD_PARTIES_PURGED),
        Some(("False".into(), "OnHold".into()))
    );
    let mailer = sim
        .status()
        .systems
        .iter()
        .find(|s| s.name == "mailer")
        .unwrap();
    assert!(
        mailer
            .message
            .as_deref()
            .unwrap()
            .contains("spec.legalHold")
    );
    sim.advance(days(5));
    sim.edit(|s| s.legal_hold = false);
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("mailer".to_string(), JobStep::ThirdPartyPurge, 1)]
    );
    // The deadline still counts from t0.
    assert_eq!(
        sim.time(&sim.status().third_party_deadline),
        ts(T0) + days(30)
    );
}
