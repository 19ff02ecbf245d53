//! What an erasure pass reports: purgeAfter, the conditions (SoftDeleted, Purged,
//! ThirdPartiesPurged, ThirdPartiesOverdue, OnHold, DeadlineAtRisk, Restored) with their
//! Events, and the outcome.

use jiff::{SignedDuration, Timestamp};

use crate::api::{
    conditions::{Status, types},
    request::RequestPhase,
};

use super::{
    super::{
        conditions::{Outcome, THIRD_PARTIES_OVERDUE},
        model::EventType,
        planner::Planner,
        timeline::{add, fmt, holds_end, time},
    },
    Timeline,
    systems::{FirstParty, Stage, Third, ThirdParty, hold_names, merged},
};

/// True when `now` is past `deadline`; otherwise asks to be woken the instant it is.
fn past(p: &mut Planner, deadline: Timestamp) -> bool {
    if p.now > deadline {
        return true;
    }
    p.wake_at(if p.now == deadline {
        deadline + SignedDuration::from_nanos(1)
    } else {
        deadline
    });
    false
}

/// purgeAfter: restoreUntil; later while a hold on a first-party system pauses the purge
/// (absent while the hold has no end); fixed once the purge started. Returns it.
pub(super) fn purge_after(p: &mut Planner, tl: &Timeline, first: &FirstParty) -> Option<Timestamp> {
    let waiting = first.any(|s| matches!(s, Stage::Windowed | Stage::Held));
    let at = if tl.purge_started {
        Some(p.old.purge_after.as_ref().map_or(tl.restore_until, |t| t.0))
    } else if waiting && !first.holds.is_empty() {
        holds_end(&first.holds).map(|end| end.max(tl.restore_until))
    } else if tl.window_open {
        Some(tl.restore_until)
    } else {
        // Released after the window closed: the purge runs now. Keep a time recorded by an
        // earlier pass so that passes do not move it.
        Some(
            p.old
                .purge_after
                .as_ref()
                .map(|t| t.0)
                .filter(|t| *t <= p.now && *t >= tl.restore_until)
                .unwrap_or(p.stamp),
        )
    };
    p.status.purge_after = at.map(time);
    if let Some(end) = holds_end(&first.holds) {
        p.wake_at(end);
    }
    at
}

pub(super) fn soft_deleted(p: &mut Planner, tl: &Timeline, first: &FirstParty) {
    let n = first.stages.len();
    if n == 0 {
        p.set(
            types::SOFT_DELETED,
            Status::True,
            "NoFirstPartySystems",
            "no first-party system in scope",
        );
    } else if first.all(Stage::soft_deleted) {
        let msg = format!(
            "hidden in {n} system(s), restorable until {} (set spec.cancel: true before then to restore)",
            fmt(tl.restore_until)
        );
        if p.set(types::SOFT_DELETED, Status::True, "SoftDeleted", &msg)
            .transitioned
        {
            p.event(EventType::Normal, "SoftDeleted", msg);
        }
    } else if first.any(|s| s == Stage::SoftFailed) && !first.any(|s| s == Stage::SoftPending) {
        p.set(
            types::SOFT_DELETED,
            Status::False,
            "SoftDeleteFailed",
            "the soft delete failed on some systems; see status.systems",
        );
    } else {
        p.set(
            types::SOFT_DELETED,
            Status::False,
            "SoftDeleting",
            &format!("soft delete running on {n} first-party system(s)"),
        );
    }
}

pub(super) fn purged(p: &mut Planner, tl: &Timeline, first: &FirstParty) {
    let n = first.stages.len();
    if n == 0 {
        return;
    }
    let purged_at = first.purged_at();
    if purged_at.len() == n {
        let last = purged_at.iter().max().copied().unwrap_or(p.stamp);
        let age_out = add(&p.policy().erasure.backup_retention, last);
        p.status.backups_age_out_at = Some(time(age_out));
        let msg = format!(
            "permanently deleted from {n} system(s); backups holding the data age out by {}",
            fmt(age_out)
        );
        if p.set(types::PURGED, Status::True, "Purged", &msg)
            .transitioned
        {
            p.event(EventType::Normal, "Purged", msg);
        }
    } else if first.any(|s| s == Stage::PurgeFailed) {
        p.set(
            types::PURGED,
            Status::False,
            "PurgeFailed",
            "the purge failed on some systems; see status.systems",
        );
    } else if first.any(|s| s == Stage::Held) {
        p.set(
            types::PURGED,
            Status::False,
            "OnHold",
            &format!("purge paused by legal hold ({})", hold_names(&first.holds)),
        );
    } else if tl.window_open || !first.all(Stage::soft_deleted) {
        p.set(
            types::PURGED,
            Status::False,
            "Scheduled",
            &format!(
                "purge scheduled for {}, when the restore window closes",
                fmt(tl.restore_until)
            ),
        );
    } else {
        p.set(
            types::PURGED,
            Status::False,
            "Purging",
            &format!("purge running on {n} first-party system(s)"),
        );
    }
}

pub(super) fn third_parties(p: &mut Planner, tl: &Timeline, third: &ThirdParty) {
    let Some(deadline) = tl.third_party_deadline else {
        return;
    };
    let n = third.states.len();
    if third.all_confirmed() {
        let msg = format!("all {n} third-party processor(s) confirmed the purge");
        if p.set(types::THIRD_PARTIES_PURGED, Status::True, "Confirmed", &msg)
            .transitioned
        {
            p.event(EventType::Normal, "ThirdPartiesPurged", msg);
        }
        return;
    }
    let (reason, msg) = if third.states.contains(&Third::Failed) {
        (
            "PurgeFailed",
            "a third-party purge failed; see status.systems".to_string(),
        )
    } else if third.states.contains(&Third::Held) {
        (
            "OnHold",
            format!(
                "purge requests paused by legal hold ({})",
                hold_names(&third.holds)
            ),
        )
    } else {
        (
            "AwaitingConfirmation",
            format!(
                "waiting for {n} third-party processor(s) to confirm the purge by {}",
                fmt(deadline)
            ),
        )
    };
    p.set(types::THIRD_PARTIES_PURGED, Status::False, reason, &msg);
    if !p.was_true(THIRD_PARTIES_OVERDUE) && past(p, deadline) {
        let msg = format!(
            "{} of {n} third-party processor(s) had not confirmed the purge by {}; contact their privacy desks (see status.systems)",
            n - third.confirmed(),
            fmt(deadline)
        );
        p.set(THIRD_PARTIES_OVERDUE, Status::True, "DeadlinePassed", &msg);
        p.event(EventType::Warning, "ThirdPartiesOverdue", msg);
    }
}

pub(super) fn hold(p: &mut Planner, first: &FirstParty, third: &ThirdParty) {
    let holds = merged(&first.holds, &third.holds);
    if !holds.is_empty() {
        let msg = format!(
            "purges paused by legal hold ({}); restoreUntil and thirdPartyDeadline are kept and the purge runs once released",
            hold_names(&holds)
        );
        if p.set(types::ON_HOLD, Status::True, "LegalHold", &msg)
            .transitioned
        {
            p.event(EventType::Normal, "OnHold", msg);
        }
    } else if p.was_true(types::ON_HOLD) {
        let msg = "legal hold released; purges resume";
        p.set(types::ON_HOLD, Status::False, "Released", msg);
        p.event(EventType::Normal, "HoldReleased", msg);
    }
}

/// DeadlineAtRisk: the purge (restore window, or a hold) would end the erasure after dueAt.
pub(super) fn deadline_at_risk(
    p: &mut Planner,
    purge_after: Option<Timestamp>,
    first: &FirstParty,
    third: &ThirdParty,
) {
    let Some(due) = p.status.due_at.as_ref().map(|t| t.0) else {
        return;
    };
    if first.all_purged() && third.all_confirmed() {
        return;
    }
    if purge_after.is_none_or(|t| t > due) {
        let when = purge_after.map_or("only after the legal hold is released".to_string(), |t| {
            format!("at {}", fmt(t))
        });
        let msg = format!(
            "the purge can run {when}, after the deadline {}; shorten the restore window or extend the deadline",
            fmt(due)
        );
        if p.set(types::DEADLINE_AT_RISK, Status::True, "PurgeAfterDue", &msg)
            .transitioned
        {
            p.event(EventType::Warning, "DeadlineAtRisk", msg);
        }
    } else if p
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == types::DEADLINE_AT_RISK)
    {
        p.set(
            types::DEADLINE_AT_RISK,
            Status::False,
            "WithinDeadline",
            "the purge can run before the deadline",
        );
    }
}

pub(super) fn outcome(
    p: &Planner,
    tl: &Timeline,
    first: &FirstParty,
    third: &ThirdParty,
) -> Outcome {
    let n_first = first.stages.len();
    let n_third = third.states.len();
    let third_pending = third
        .states
        .iter()
        .any(|t| matches!(t, Third::Pending | Third::Held));
    if !first.any(Stage::pending) && !third_pending {
        if !p.failures.is_empty() {
            return Outcome::Failed;
        }
        return Outcome::Done {
            phase: RequestPhase::Completed,
            reason: "Erased",
            message: format!(
                "erased: purged from {n_first} system(s) and confirmed by {n_third} third-party processor(s)"
            ),
        };
    }
    let holds = merged(&first.holds, &third.holds);
    let first_running = first.any(|s| matches!(s, Stage::SoftPending | Stage::PurgePending));
    let (phase, reason, message) = if !holds.is_empty() && !first_running && !tl.window_open {
        (
            RequestPhase::OnHold,
            "OnHold",
            format!("purge paused by legal hold ({})", hold_names(&holds)),
        )
    } else if !first.all(Stage::soft_deleted) {
        (
            RequestPhase::InProgress,
            "SoftDeleting",
            format!("soft delete running on {n_first} first-party system(s)"),
        )
    } else if tl.window_open {
        (
            RequestPhase::RestoreWindow,
            "RestoreWindow",
            format!(
                "soft-deleted; restorable until {}, then purged",
                fmt(tl.restore_until)
            ),
        )
    } else if first.all_purged() {
        (
            RequestPhase::InProgress,
            "AwaitingThirdParties",
            format!(
                "purged; waiting for {} third-party processor(s) to confirm",
                n_third - third.confirmed()
            ),
        )
    } else {
        (
            RequestPhase::InProgress,
            "Purging",
            format!("purge running on {n_first} first-party system(s)"),
        )
    };
    Outcome::Progressing {
        phase,
        reason,
        message,
    }
}

/// The end of a cancelled erasure: restores run, then phase Restored.
pub(super) fn cancelled(p: &mut Planner, first: &FirstParty, third: &ThirdParty) -> Outcome {
    p.status.purge_after = None;
    if p.status
        .conditions
        .iter()
        .any(|c| c.type_ == types::DEADLINE_AT_RISK)
    {
        p.set(
            types::DEADLINE_AT_RISK,
            Status::False,
            "Cancelled",
            "the erasure was cancelled; no purge will run",
        );
    }
    let sent = third
        .states
        .iter()
        .filter(|t| !matches!(t, Third::Skipped | Third::Held))
        .count();
    let note = if sent > 0 {
        format!(
            "; purge requests already sent to {sent} third-party processor(s) cannot be recalled"
        )
    } else {
        String::new()
    };
    if first.any(|s| s == Stage::RestorePending) {
        p.set(
            types::RESTORED,
            Status::False,
            "Restoring",
            &format!("cancelled: restoring soft-deleted data{note}"),
        );
        return Outcome::Progressing {
            phase: RequestPhase::InProgress,
            reason: "Restoring",
            message: "cancelled: restoring soft-deleted data".into(),
        };
    }
    if first.any(|s| s == Stage::RestoreFailed) {
        p.set(
            types::RESTORED,
            Status::False,
            "RestoreFailed",
            "the restore failed on some systems; see status.systems",
        );
        return Outcome::Failed;
    }
    let restored = first
        .stages
        .iter()
        .filter(|s| **s == Stage::Restored)
        .count();
    let msg =
        format!("cancelled within the restore window: data restored in {restored} system(s){note}");
    // The Event comes with Ready turning True.
    p.set(types::RESTORED, Status::True, "Restored", &msg);
    p.set(
        types::SOFT_DELETED,
        Status::False,
        "Restored",
        "the soft-deleted data was restored after the cancel",
    );
    Outcome::Done {
        phase: RequestPhase::Restored,
        reason: "Restored",
        message: msg,
    }
}
