//! Deadlines: receipt and statutory due date, the one extension, Overdue, legal holds, and the
//! arithmetic that turns policy durations into instants.
//!
//! All instants written to status are whole seconds (metav1.Time keeps no fraction), so a
//! status reads back exactly as planned and the next pass sees no change.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};

use crate::api::{
    Duration,
    conditions::{Status, types},
    request::Extension,
};

use super::{conditions::EXTENDED, model::EventType, planner::Planner};

/// Longest requeue asked for. The controller's timer wheel refuses delays beyond about two
/// years; a deadline further away is reached by requeueing again on the way.
pub const MAX_REQUEUE: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// `t` without its fraction of a second.
pub fn floor(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// `at + d` on the UTC calendar, whole seconds. A duration too long to represent means
/// "never": it saturates at the end of time rather than failing the pass.
pub fn add(d: &Duration, at: Timestamp) -> Timestamp {
    floor(d.after(at).unwrap_or(Timestamp::MAX))
}

/// RFC 3339 with whole seconds, as status shows it.
pub fn fmt(t: Timestamp) -> String {
    jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", floor(t)).unwrap_or_else(|_| t.to_string())
}

pub fn time(t: Timestamp) -> Time {
    Time(floor(t))
}

/// The time from `now` until `at`, bounded by [`MAX_REQUEUE`].
pub fn until(now: Timestamp, at: Timestamp) -> std::time::Duration {
    let d = at.duration_since(now).max(SignedDuration::ZERO);
    std::time::Duration::try_from(d)
        .unwrap_or(MAX_REQUEUE)
        .min(MAX_REQUEUE)
}

/// Sets receivedAt (once) and dueAt. dueAt follows the policy until the request's scope is
/// fixed (it was accepted), so a policy that appears late still applies; after that it only
/// moves by the one extension.
pub(crate) fn received_and_due(p: &mut Planner) {
    let received = match &p.status.received_at {
        Some(t) => t.0,
        None => floor(
            p.spec()
                .received_at
                .as_ref()
                .map(|t| t.0)
                .or(p.input.request.created_at)
                .unwrap_or(p.now),
        ),
    };
    p.status.received_at = Some(Time(received));
    let frozen = !p.status.systems.is_empty() || p.status.extended_due_at.is_some();
    if !frozen || p.status.due_at.is_none() {
        let deadline = p.policy().deadline(p.spec().regulation);
        p.status.due_at = Some(Time(add(&deadline, received)));
    }
}

/// A short fingerprint of an extension, recorded in the Extended condition so that a
/// different extension appearing later is recognised (and refused) even though status keeps
/// no copy of its text.
fn fingerprint(ext: &Extension) -> String {
    let mut h = Sha256::new();
    h.update(ext.reason.as_bytes());
    h.update([0]);
    h.update(ext.approved_by.as_deref().unwrap_or("").as_bytes());
    hex::encode(&h.finalize()[..4])
}

fn recorded_ref(message: &str) -> Option<&str> {
    let start = message.find("(ref ")? + "(ref ".len();
    message.get(start..start + 8)
}

/// Applies spec.extension once the request is accepted: dueAt moves by the extension the law
/// (or the policy) allows, once. A different extension later is refused and the deadline
/// stays where the first one put it.
pub(crate) fn extension(p: &mut Planner) {
    let Some(ext) = &p.spec().extension else {
        return;
    };
    if p.status.systems.is_empty() {
        return;
    }
    let regulation = p.spec().regulation;
    let fp = fingerprint(ext);
    if let Some(extended) = p.status.extended_due_at.as_ref().map(|t| t.0) {
        let recorded = p
            .old
            .conditions
            .iter()
            .find(|c| c.type_ == EXTENDED)
            .and_then(|c| recorded_ref(&c.message).map(str::to_string));
        match recorded {
            Some(r) if r != fp => {
                let change = p.set(
                    EXTENDED,
                    Status::True,
                    "SecondExtensionRefused",
                    &format!(
                        "the deadline was already extended once, to {}; {} allows one extension, so the changed spec.extension is ignored (ref {r})",
                        fmt(extended),
                        regulation.as_str()
                    ),
                );
                if change.reason_changed {
                    p.event(
                        EventType::Warning,
                        "SecondExtensionRefused",
                        format!(
                            "the deadline was already extended once, to {}; a second extension is not allowed",
                            fmt(extended)
                        ),
                    );
                }
            }
            Some(_) => {}
            None => {
                p.set(
                    EXTENDED,
                    Status::True,
                    "Extended",
                    &format!("deadline extended to {} (ref {fp})", fmt(extended)),
                );
            }
        }
        return;
    }
    let Some(due) = p.status.due_at.as_ref().map(|t| t.0) else {
        return;
    };
    match p.policy().extension(regulation) {
        None => {
            let msg = format!(
                "{} allows no extension of the deadline; the request stays due by {}",
                regulation.as_str(),
                fmt(due)
            );
            if p.set(EXTENDED, Status::False, "ExtensionNotAllowed", &msg)
                .reason_changed
            {
                p.event(EventType::Warning, "ExtensionNotAllowed", msg);
            }
        }
        Some(by) => {
            let new_due = add(&by, due);
            p.status.extended_due_at = Some(Time(new_due));
            p.status.due_at = Some(Time(new_due));
            p.set(
                EXTENDED,
                Status::True,
                "Extended",
                &format!(
                    "deadline extended once by {by}, from {} to {} (ref {fp}); tell the subject about the extension and its reason",
                    fmt(due),
                    fmt(new_due)
                ),
            );
            p.event(
                EventType::Normal,
                "Extended",
                format!(
                    "deadline extended once by {by}, from {} to {}",
                    fmt(due),
                    fmt(new_due)
                ),
            );
        }
    }
}

/// Overdue=True (and a Warning Event) once now is past dueAt and the request was not complete
/// by then. It stays True afterwards: a late answer remains late.
pub(crate) fn overdue(p: &mut Planner, complete: bool) {
    let Some(due) = p.status.due_at.as_ref().map(|t| t.0) else {
        return;
    };
    if p.was_true(types::OVERDUE) {
        return;
    }
    // A request completing in this pass after dueAt completed late, even when no pass ran
    // at dueAt itself (controller down).
    if p.now > due {
        let msg = format!(
            "the {} deadline {} passed before the request completed; finish it, or extend it once with spec.extension if the law allows",
            p.spec().regulation.as_str(),
            fmt(due)
        );
        p.set(types::OVERDUE, Status::True, "DeadlinePassed", &msg);
        p.event(EventType::Warning, "Overdue", msg);
    } else if complete {
    } else if p.now == due {
        // Overdue means strictly after dueAt: look again the instant after.
        p.wake_at(due + SignedDuration::from_nanos(1));
    } else {
        p.wake_at(due);
    }
}

/// A legal hold that covers a system of this request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Hold {
    /// `spec.legalHold` or the policy hold's name.
    pub name: String,
    /// When the hold ends by itself; `None` until released.
    pub until: Option<Timestamp>,
}

/// The holds in force now that cover `system`: spec.legalHold covers everything; a policy
/// hold covers the system unless it names other systems, and the subject unless it names
/// other digests. A hold narrowed to tables holds the whole system: a purge Job works on the
/// subject in the whole system at once.
pub(crate) fn holds(p: &Planner, system: &str) -> Vec<Hold> {
    let mut out = Vec::new();
    if p.spec().legal_hold {
        out.push(Hold {
            name: "spec.legalHold".into(),
            until: None,
        });
    }
    let digest = p.input.context.subject_digest.as_ref();
    for h in &p.policy().legal_holds {
        let until = h.until.as_ref().map(|t| t.0);
        if until.is_some_and(|u| u <= p.now) {
            continue;
        }
        if !h.systems.is_empty() && !h.systems.iter().any(|s| s == system) {
            continue;
        }
        // Without a digest we cannot tell whether the hold names this subject: hold.
        if !h.subject_digests.is_empty() && digest.is_some_and(|d| !h.subject_digests.contains(d)) {
            continue;
        }
        out.push(Hold {
            name: h.name.clone(),
            until,
        });
    }
    out
}

/// When the holds end by themselves: `None` if any lasts until released.
pub(crate) fn holds_end(holds: &[Hold]) -> Option<Timestamp> {
    holds
        .iter()
        .map(|h| h.until)
        .try_fold(Timestamp::MIN, |acc, u| u.map(|u| acc.max(u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn floor_drops_the_fraction_only() {
        assert_eq!(
            floor(ts("2024-01-31T09:00:00.999Z")),
            ts("2024-01-31T09:00:00Z")
        );
        assert_eq!(fmt(ts("2024-01-31T09:00:00.5Z")), "2024-01-31T09:00:00Z");
    }

    #[test]
    fn add_saturates_instead_of_failing() {
        let far: Duration = "9999y".parse().unwrap();
        assert_eq!(add(&far, ts("2024-01-01T00:00:00Z")), floor(Timestamp::MAX));
        assert_eq!(
            add(&Duration::months(1), ts("2023-01-31T10:00:00Z")),
            ts("2023-02-28T10:00:00Z")
        );
    }

    #[test]
    fn until_is_exact_and_bounded() {
        let now = ts("2024-01-01T00:00:00.25Z");
        assert_eq!(
            until(now, ts("2024-01-01T00:00:10Z")),
            std::time::Duration::from_millis(9750)
        );
        assert_eq!(
            until(now, ts("2000-01-01T00:00:00Z")),
            std::time::Duration::ZERO
        );
        assert_eq!(until(now, ts("2030-01-01T00:00:00Z")), MAX_REQUEUE);
    }

    #[test]
    fn holds_end_is_the_latest_or_never() {
        let a = Hold {
            name: "a".into(),
            until: Some(ts("2024-02-01T00:00:00Z")),
        };
        let b = Hold {
            name: "b".into(),
            until: Some(ts("2024-03-01T00:00:00Z")),
        };
        let c = Hold {
            name: "c".into(),
            until: None,
        };
        assert_eq!(
            holds_end(&[a.clone(), b.clone()]),
            Some(ts("2024-03-01T00:00:00Z"))
        );
        assert_eq!(holds_end(&[a, c]), None);
    }

    #[test]
    fn fingerprint_is_recoverable_from_the_message() {
        let ext = Extension {
            reason: "many systems involved".into(),
            approved_by: None,
        };
        let fp = fingerprint(&ext);
        let msg = format!("deadline extended (ref {fp}); tell the subject");
        assert_eq!(recorded_ref(&msg), Some(fp.as_str()));
        assert_eq!(recorded_ref("no ref here"), None);
    }
}
