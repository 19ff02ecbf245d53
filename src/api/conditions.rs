//! Status conditions in the `metav1.Condition` shape, and the helpers every controller uses to
//! set them the way API conventions require: `lastTransitionTime` moves only when `status`
//! changes, `observedGeneration` records which spec the condition describes, and setting a
//! condition to what it already is reports "no change" so that a reconcile that changes nothing
//! writes nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{Schema, SchemaGenerator};

/// Condition types used across the privacy-operator resources.
pub mod types {
    /// Summary: the resource reached its goal (a request is complete, a policy is in force).
    pub const READY: &str = "Ready";
    /// The request passed validation and its references resolve.
    pub const ACCEPTED: &str = "Accepted";
    /// The subject's identity has been verified (spec.verification or a pre-verified policy).
    pub const VERIFIED: &str = "Verified";
    /// The export bundle is complete and recorded in status.export.
    pub const EXPORTED: &str = "Exported";
    /// Rectification was applied in every system.
    pub const RECTIFIED: &str = "Rectified";
    /// Processing for the named purposes is restricted in every system.
    pub const RESTRICTED: &str = "Restricted";
    /// First-party data is hidden and restorable until status.restoreUntil.
    pub const SOFT_DELETED: &str = "SoftDeleted";
    /// First-party data and restore archives are permanently deleted.
    pub const PURGED: &str = "Purged";
    /// Every third-party processor confirmed the purge.
    pub const THIRD_PARTIES_PURGED: &str = "ThirdPartiesPurged";
    /// Soft-deleted data was brought back after a cancel.
    pub const RESTORED: &str = "Restored";
    /// The statutory deadline (status.dueAt) passed before completion.
    pub const OVERDUE: &str = "Overdue";
    /// The request could not finish; the message says what to do.
    pub const FAILED: &str = "Failed";
    /// Another request of the same type for the same subject is in flight (see status.duplicateOf).
    pub const DUPLICATE: &str = "Duplicate";
    /// A legal hold pauses purges.
    pub const ON_HOLD: &str = "OnHold";
    /// kstatus / Flux: the controller is working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus / Flux: progress is blocked until someone acts.
    pub const STALLED: &str = "Stalled";
    /// Completion is expected after the statutory deadline (e.g. the restore window is longer).
    pub const DEADLINE_AT_RISK: &str = "DeadlineAtRisk";
}

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b { Status::True } else { Status::False }
    }
}

/// Access to a status's conditions and observedGeneration, implemented by every status type.
pub trait HasConditions {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;

    /// The condition of this type, if present.
    fn condition(&self, type_: &str) -> Option<&Condition> {
        find(self.conditions(), type_)
    }

    /// True when the condition is present with status True.
    fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// Sets a condition (see [`set`]); returns true when anything changed.
    fn set_condition(
        &mut self,
        type_: &str,
        status: Status,
        reason: &str,
        message: &str,
        generation: Option<i64>,
        now: Timestamp,
    ) -> bool {
        set(
            self.conditions_mut(),
            type_,
            status,
            reason,
            message,
            generation,
            now,
        )
    }

    /// Removes a condition; returns true when it was present.
    fn remove_condition(&mut self, type_: &str) -> bool {
        remove(self.conditions_mut(), type_)
    }
}

/// The condition of this type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sets (adds or updates) the condition of type `type_`.
///
/// `lastTransitionTime` is set to `now` only when the condition is new or its status changes;
/// a change of reason, message or observedGeneration alone keeps the old transition time.
/// Returns true when anything changed, so callers can skip a write otherwise.
///
/// `reason` must be CamelCase (API conventions); an empty reason is replaced by the status so
/// the condition stays valid for tools that require one.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let reason = if reason.is_empty() {
        status.as_str()
    } else {
        reason
    };
    let message = truncate(message, MAX_MESSAGE);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let mut changed = false;
            if c.status != status.as_str() {
                c.status = status.as_str().to_string();
                c.last_transition_time = Time(now);
                changed = true;
            }
            if c.reason != reason {
                c.reason = reason.to_string();
                changed = true;
            }
            if c.message != message {
                c.message = message.to_string();
                changed = true;
            }
            if c.observed_generation != generation {
                c.observed_generation = generation;
                changed = true;
            }
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.as_str().to_string(),
                reason: reason.to_string(),
                message: message.to_string(),
                observed_generation: generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// Removes the condition of type `type_`; returns true when it was present.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

/// metav1.Condition allows 32768 bytes of message.
pub const MAX_MESSAGE: usize = 32768;

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Schema for a `conditions` field: the metav1.Condition list, as a list-type map keyed by
/// `type` so server-side apply merges conditions per type (as built-in resources do).
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-list-type".into(), "map".into());
        obj.insert(
            "x-kubernetes-list-map-keys".into(),
            serde_json::json!(["type"]),
        );
        obj.insert("maxItems".into(), 32.into());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut cs = Vec::new();
        let t0 = t("2024-01-01T00:00:00Z");
        let t1 = t("2024-01-02T00:00:00Z");
        let t2 = t("2024-01-03T00:00:00Z");
        assert!(set(
            &mut cs,
            "Ready",
            Status::False,
            "Pending",
            "waiting",
            Some(1),
            t0
        ));
        assert!(!set(
            &mut cs,
            "Ready",
            Status::False,
            "Pending",
            "waiting",
            Some(1),
            t1
        ));
        assert!(set(
            &mut cs,
            "Ready",
            Status::False,
            "Exporting",
            "2 of 3 systems",
            Some(2),
            t1
        ));
        assert_eq!(cs[0].last_transition_time.0, t0);
        assert_eq!(cs[0].observed_generation, Some(2));
        assert!(set(
            &mut cs,
            "Ready",
            Status::True,
            "Complete",
            "done",
            Some(2),
            t2
        ));
        assert_eq!(cs[0].last_transition_time.0, t2);
        assert_eq!(cs.len(), 1);
        assert!(remove(&mut cs, "Ready"));
        assert!(!remove(&mut cs, "Ready"));
    }

    #[test]
    fn empty_reason_and_huge_message_stay_valid() {
        let mut cs = Vec::new();
        let msg = "é".repeat(MAX_MESSAGE);
        set(
            &mut cs,
            "Failed",
            Status::True,
            "",
            &msg,
            None,
            t("2024-01-01T00:00:00Z"),
        );
        assert_eq!(cs[0].reason, "True");
        assert!(cs[0].message.len() <= MAX_MESSAGE);
    }
}
