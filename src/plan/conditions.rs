//! The summary conditions every pass ends with (Ready, Reconciling, Stalled, Failed,
//! Duplicate), the human `phase`, and the Events of their transitions.
//!
//! kstatus reads Reconciling/Stalled (abnormal-true: present and True only while they apply)
//! and Ready as the summary; Argo CD and Flux then show Progressing, Healthy or Degraded.

use crate::api::{
    conditions::{Status, types},
    request::RequestPhase,
};

use super::{model::EventType, planner::Planner};

/// spec.extension was applied (True), refused (reason SecondExtensionRefused) or is not
/// allowed by the law (False).
pub const EXTENDED: &str = "Extended";
/// A third-party processor had not confirmed its purge by status.thirdPartyDeadline. Stays
/// True once set, like Overdue.
pub const THIRD_PARTIES_OVERDUE: &str = "ThirdPartiesOverdue";
/// The request was deleted while its erasure had to go on; it goes away once the erasure ends.
pub const DELETION_DEFERRED: &str = "DeletionDeferred";

/// How a pass ends.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Work is in flight or scheduled.
    Progressing {
        phase: RequestPhase,
        reason: &'static str,
        message: String,
    },
    /// Waiting for someone to fix a reference.
    Blocked { reason: String, message: String },
    /// Finished as asked.
    Done {
        phase: RequestPhase,
        reason: &'static str,
        message: String,
    },
    /// Nothing more can happen and some step's retry budget is spent.
    Failed,
    /// Another request of the same type for the same subject does the work.
    Duplicate { original: String },
}

impl Outcome {
    /// The request will do nothing more by itself.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Outcome::Done { .. } | Outcome::Failed | Outcome::Duplicate { .. }
        )
    }
}

/// Phases after which a request does nothing more.
pub(crate) fn is_terminal(phase: Option<RequestPhase>) -> bool {
    matches!(
        phase,
        Some(
            RequestPhase::Completed
                | RequestPhase::Restored
                | RequestPhase::Cancelled
                | RequestPhase::Duplicate
                | RequestPhase::Failed
        )
    )
}

fn failure_summary(p: &Planner) -> String {
    p.failures.join("; ")
}

pub(crate) fn summarise(p: &mut Planner, outcome: &Outcome) {
    if !p.failures.is_empty() {
        let msg = failure_summary(p);
        p.set(types::FAILED, Status::True, "RetriesExhausted", &msg);
    }
    match outcome {
        Outcome::Progressing {
            phase,
            reason,
            message,
        } => {
            p.set(types::READY, Status::False, reason, message);
            p.set(types::RECONCILING, Status::True, reason, message);
            p.remove(types::STALLED);
            p.status.phase = Some(*phase);
        }
        Outcome::Blocked { reason, message } => {
            p.set(types::READY, Status::False, reason, message);
            p.set(types::STALLED, Status::True, reason, message);
            p.remove(types::RECONCILING);
            p.status.phase = Some(RequestPhase::Pending);
        }
        Outcome::Done {
            phase,
            reason,
            message,
        } => {
            let change = p.set(types::READY, Status::True, reason, message);
            p.remove(types::RECONCILING);
            p.remove(types::STALLED);
            p.status.phase = Some(*phase);
            if p.status.completed_at.is_none() {
                p.status.completed_at = Some(super::timeline::time(p.stamp));
            }
            if change.transitioned {
                p.event(EventType::Normal, reason, message.clone());
            }
        }
        Outcome::Failed => {
            let msg = failure_summary(p);
            p.set(types::READY, Status::False, "Failed", &msg);
            p.set(types::STALLED, Status::True, "Failed", &msg);
            p.remove(types::RECONCILING);
            let was = p.old.phase;
            p.status.phase = Some(RequestPhase::Failed);
            if p.status.completed_at.is_none() {
                p.status.completed_at = Some(super::timeline::time(p.stamp));
            }
            if was != Some(RequestPhase::Failed) {
                p.event(EventType::Warning, "Failed", msg);
            }
        }
        Outcome::Duplicate { original } => {
            let msg = format!(
                "request {original} of the same type for the same subject is in flight; this request does no work. Follow {original}, and delete this one"
            );
            let change = p.set(types::DUPLICATE, Status::True, "InFlight", &msg);
            p.set(types::READY, Status::False, "Duplicate", &msg);
            p.set(types::STALLED, Status::True, "Duplicate", &msg);
            p.remove(types::RECONCILING);
            p.status.phase = Some(RequestPhase::Duplicate);
            p.status.duplicate_of = Some(original.clone());
            if change.transitioned {
                p.event(EventType::Warning, "Duplicate", msg);
            }
        }
    }
}
