//! Erasure as a timeline kept in status.
//!
//! - t0 (the pass that starts the erasure): soft-delete Jobs on every first-party system;
//!   purge Jobs on every third-party system, which must confirm by
//!   `thirdPartyDeadline = t0 + thirdPartyPurgeWithin`. `restoreUntil = t0 + restoreWindow`.
//! - Before restoreUntil, `spec.cancel: true` restores every system a soft delete touched
//!   (phase Restored). The window is half-open: a cancel first seen exactly at restoreUntil is
//!   too late. Purge requests already sent to third parties cannot be recalled.
//! - From restoreUntil: purge Jobs on first-party systems whose soft delete succeeded.
//! - A legal hold (spec.legalHold, or a policy hold covering the subject and system) pauses
//!   purges, first- and third-party, without moving restoreUntil or thirdPartyDeadline;
//!   purgeAfter shows when the purge can run (absent while a hold has no end). A Job already
//!   running when a hold arrives is not stopped.
//! - backupsAgeOutAt = the last purge's completion + the policy's backupRetention.
//! - A soft delete that spent its retry budget leaves that system out of the purge; the others
//!   go on, and the request ends Failed once nothing else is pending.

mod report;
mod systems;

use jiff::Timestamp;

use crate::api::{
    conditions::{Status, types},
    request::Step,
};

use super::{
    conditions::Outcome,
    jobs::JobStep,
    model::EventType,
    planner::Planner,
    timeline::{add, floor, fmt, time},
};

const ERASURE_STEPS: [JobStep; 4] = [
    JobStep::SoftDelete,
    JobStep::Restore,
    JobStep::Purge,
    JobStep::ThirdPartyPurge,
];

/// The erasure timeline has started (something may have been hidden or sent).
pub(crate) fn started(p: &Planner) -> bool {
    p.old.restore_until.is_some()
        || p.input
            .children
            .jobs
            .iter()
            .any(|j| ERASURE_STEPS.contains(&j.step))
}

/// The fixed points of the timeline and the decisions that follow from them.
struct Timeline {
    restore_until: Timestamp,
    third_party_deadline: Option<Timestamp>,
    /// now < restoreUntil.
    window_open: bool,
    /// Some first-party purge has been dispatched.
    purge_started: bool,
    /// The erasure is being undone (sticky once decided).
    cancelled: bool,
}

/// Sets restoreUntil and thirdPartyDeadline at t0 (once) and decides whether a cancel applies.
fn timeline(p: &mut Planner) -> Timeline {
    let grace = p.policy().erasure.clone();
    // t0: the first Job's creation if a previous pass's status write was lost, else now.
    let t0 = p
        .input
        .children
        .jobs
        .iter()
        .filter(|j| ERASURE_STEPS.contains(&j.step))
        .map(|j| j.created_at)
        .min()
        .map_or(p.stamp, floor);
    let restore_until = match &p.status.restore_until {
        Some(t) => t.0,
        None => {
            let t = add(&grace.restore_window, t0);
            p.status.restore_until = Some(time(t));
            t
        }
    };
    let third_party_deadline = if p.status.systems.iter().any(|s| s.third_party) {
        Some(match &p.status.third_party_deadline {
            Some(t) => t.0,
            None => {
                let t = add(&grace.third_party_purge_within, t0);
                p.status.third_party_deadline = Some(time(t));
                t
            }
        })
    } else {
        None
    };
    let purge_started = p
        .input
        .children
        .jobs
        .iter()
        .any(|j| j.step == JobStep::Purge)
        || p.old
            .systems
            .iter()
            .any(|e| !e.third_party && e.step == Some(Step::Purge));
    let restoring = p
        .old
        .conditions
        .iter()
        .any(|c| c.type_ == types::RESTORED && (c.status == "True" || c.reason == "Restoring"));
    let window_open = p.now < restore_until;
    let cancelled = restoring || (p.spec().cancel && window_open && !purge_started);
    if p.spec().cancel && !cancelled {
        let msg = format!(
            "spec.cancel came after the restore window closed at {}; the erasure goes on to purge",
            fmt(restore_until)
        );
        if p.set(types::RESTORED, Status::False, "WindowClosed", &msg)
            .reason_changed
        {
            p.event(EventType::Warning, "CancelTooLate", msg);
        }
    }
    Timeline {
        restore_until,
        third_party_deadline,
        window_open,
        purge_started,
        cancelled,
    }
}

pub(crate) fn run(p: &mut Planner) -> Outcome {
    let tl = timeline(p);
    let first = systems::first_party(p, &tl);
    let third = systems::third_party(p, &tl);
    if tl.cancelled {
        return report::cancelled(p, &first, &third);
    }
    let purge_after = report::purge_after(p, &tl, &first);
    if tl.window_open {
        p.wake_at(tl.restore_until);
    }
    report::soft_deleted(p, &tl, &first);
    report::purged(p, &tl, &first);
    report::third_parties(p, &tl, &third);
    report::hold(p, &first, &third);
    report::deadline_at_risk(p, purge_after, &first, &third);
    report::outcome(p, &tl, &first, &third)
}
