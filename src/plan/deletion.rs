//! Deleting a request. The finalizer gives the operator the last word: owned Jobs and task
//! Secrets are deleted explicitly (so no task holding identifiers outlives the request), and
//! an erasure that has started is not abandoned halfway.

use crate::api::{RequestType, conditions::Status};

use super::{
    conditions::DELETION_DEFERRED,
    erasure,
    model::{Action, EventType},
    planner::Planner,
    timeline::fmt,
};

/// An erasure that has started must reach its end (purged, or restored after a cancel)
/// before the request may go: deleting it must not leave data hidden but never purged.
pub(crate) fn must_continue(p: &Planner) -> bool {
    p.spec().type_ == RequestType::Erasure && erasure::started(p)
}

/// Delete every owned Job and task Secret, then let the request go.
pub(crate) fn cleanup(p: &mut Planner) {
    for j in &p.input.children.jobs {
        if !j.deleting {
            p.actions.push(Action::DeleteJob {
                name: j.name.clone(),
            });
        }
    }
    for s in &p.input.children.secrets {
        p.actions.push(Action::DeleteSecret { name: s.clone() });
    }
    p.actions.push(Action::RemoveFinalizer);
}

/// Says (once) that the deletion waits for the erasure.
pub(crate) fn defer(p: &mut Planner) {
    let until = p
        .status
        .restore_until
        .as_ref()
        .map(|t| fmt(t.0))
        .unwrap_or_default();
    let msg = format!(
        "deleted during an erasure: it goes on to the purge (restore window ends {until}) and the third-party confirmations, then the request is removed; set spec.cancel: true before {until} to restore instead"
    );
    if p.set(DELETION_DEFERRED, Status::True, "ErasureInProgress", &msg)
        .transitioned
    {
        p.event(EventType::Normal, "DeletionDeferred", msg);
    }
}
