//! The pure planner of the DataSubjectRequest lifecycle.
//!
//! [`plan`] takes everything a reconcile knows ([`PlanInput`]: the request, what its
//! references resolved to, the Jobs it owns) and an injected clock, and returns the desired
//! status, the effects to carry out ([`Action`]) and when to look again. It does no I/O and
//! reads no clock, so the whole lifecycle (weeks of restore windows, third-party deadlines,
//! statutory due dates) is unit-tested by moving a timestamp.
//!
//! # Lifecycle
//!
//! 1. **Accept**: references must resolve (`Accepted=False` with a specific reason while
//!    they do not; the request waits, `Stalled=True`). `receivedAt` is `spec.receivedAt` or the
//!    creation time; `dueAt` adds the regulation's deadline (GDPR/UK GDPR one calendar month,
//!    so 31 January is due 28/29 February; CCPA 45 days; LGPD 15 days) or the policy's override.
//!    Accepting fixes the scope in `status.systems`.
//! 2. **Duplicate**: a request of the same type for the same subject digest created after
//!    another still in flight is marked `Duplicate` (naming the original) and does nothing.
//! 3. **Verify**: nothing runs until `spec.verification` is set or the policy is
//!    `preVerified` (`Verified=False`, phase AwaitingVerification).
//! 4. **Work** by type: exports then the bundle (`export.rs`); the erasure timeline
//!    (`erasure/`); rectify or restrict Jobs (`modify.rs`). Jobs have deterministic names
//!    ([`jobs::job_name`]), retry with backoff within the policy's budget, and respect each
//!    DataSystem's concurrency limit.
//! 5. **Deadlines**: `Overdue=True` and a Warning Event once now is past `dueAt` before the
//!    request completes; `spec.extension` moves `dueAt` once; the restore window ending after
//!    `dueAt` raises `DeadlineAtRisk`.
//!
//! # Deleting a request
//!
//! Requests carry the [`FINALIZER`]. Deleting a request deletes its Jobs and task Secrets and
//! lets it go, except for an erasure that has started (something was soft-deleted or sent to a
//! processor): that one is **not** abandoned and **not** hurried. It keeps its timeline and
//! goes on to the purge at `restoreUntil` (later under a legal hold) and the third-party
//! confirmations; only then does the finalizer come off. A deletion never shortens the restore
//! window, and until `restoreUntil` the terminating request can still be cancelled with
//! `spec.cancel: true`, which restores the data instead. Data is therefore never left hidden
//! but unpurged, nor purged earlier than promised.
//!
//! # Writes
//!
//! A pass that changes nothing returns `status_changed: false` and no actions. Jobs of one
//! step that succeed while siblings still run are recorded together with the next change
//! worth writing (usually the last sibling's success), so an access request over N systems
//! writes its status twice, not N times.

mod accept;
pub mod conditions;
pub mod consent;
mod deletion;
mod erasure;
mod export;
pub mod jobs;
mod model;
mod modify;
mod planner;
pub mod retention;
mod step;
pub mod timeline;

#[cfg(test)]
mod tests;

use jiff::Timestamp;

use crate::api::{DataSubjectRequestStatus, RequestType, request::SystemPhase};

pub use jobs::{JobStep, job_name, label_value, labels};
pub use model::{
    Action, Children, Context, Event, EventType, FINALIZER, InFlightRequest, IntegrationData,
    JobInfo, JobRequest, JobState, Plan, PlanInput, ReferenceProblem, RequestState, SystemInfo,
};
pub use planner::SLOT_RETRY;
pub use step::LOST_JOB_GRACE;

use accept::Gate;
use conditions::Outcome;
use planner::Planner;

/// Plans one reconcile of a DataSubjectRequest at `now`. Pure: the same input and `now`
/// always give the same plan.
pub fn plan(input: &PlanInput, now: Timestamp) -> Plan {
    let req = &input.request;
    let mut p = Planner::new(input, now);
    if req.deleting && !req.has_finalizer {
        // Going away without us; nothing to do.
        return finish(p, false);
    }
    if conditions::is_terminal(req.status.phase) {
        export::expire(&mut p);
        if req.deleting {
            deletion::cleanup(&mut p);
        }
        return finish(p, true);
    }
    if req.deleting && !deletion::must_continue(&p) {
        deletion::cleanup(&mut p);
        // The request is going away: its status is not worth a write.
        return finish(p, false);
    }
    if !req.deleting && !req.has_finalizer {
        p.actions.push(Action::AddFinalizer);
    }

    timeline::received_and_due(&mut p);
    let gate = accept::gate(&mut p);
    timeline::extension(&mut p);
    let outcome = match gate {
        Gate::Closed(outcome) => outcome,
        Gate::Open => match req.spec.type_ {
            RequestType::Access | RequestType::Portability => export::run(&mut p),
            RequestType::Erasure => erasure::run(&mut p),
            RequestType::Rectification
            | RequestType::Restriction
            | RequestType::Objection
            | RequestType::ConsentWithdrawal => modify::run(&mut p),
        },
    };
    if !matches!(outcome, Outcome::Duplicate { .. }) {
        timeline::overdue(&mut p, matches!(outcome, Outcome::Done { .. }));
    }
    conditions::summarise(&mut p, &outcome);
    if req.deleting {
        if outcome.is_final() {
            deletion::cleanup(&mut p);
        } else {
            deletion::defer(&mut p);
        }
    }
    finish(p, true)
}

/// Assembles the plan: stamps observedGeneration, decides whether the status is worth a
/// write, orders the actions (Events last) and computes the requeue.
fn finish(mut p: Planner, write_status: bool) -> Plan {
    let requeue_after = p.next_wakeup().map(|at| timeline::until(p.now, at));
    let mut status = if write_status {
        let generation = p.generation();
        let mut s = std::mem::take(&mut p.status);
        s.observed_generation = generation;
        for c in &mut s.conditions {
            c.observed_generation = generation;
        }
        s
    } else {
        p.old.clone()
    };
    let status_changed = !coalesce(p.old, &mut status);
    let mut actions = std::mem::take(&mut p.actions);
    actions.extend(p.events.drain(..).map(Action::RecordEvent));
    Plan {
        status,
        status_changed,
        actions,
        requeue_after,
        waiting_for_slots: p.waiting_for_slots.into_iter().collect(),
    }
}

/// Returns true (and puts `old` back into `new`) when `new` differs from `old` only by
/// systems that went from Running to Succeeded while others of the request still run: those
/// successes are written together with the next change worth a write.
fn coalesce(old: &DataSubjectRequestStatus, new: &mut DataSubjectRequestStatus) -> bool {
    if new == old {
        return true;
    }
    if !new.systems.iter().any(|e| e.phase == SystemPhase::Running) {
        return false;
    }
    let mut candidate = new.clone();
    for e in &mut candidate.systems {
        if e.phase != SystemPhase::Succeeded {
            continue;
        }
        if let Some(o) = old.systems.iter().find(|o| o.name == e.name)
            && o.phase == SystemPhase::Running
            && o.step == e.step
        {
            *e = o.clone();
        }
    }
    if candidate == *old {
        *new = old.clone();
        return true;
    }
    false
}
