//! Worker Jobs: the steps they run, their deterministic names and labels, the retry backoff,
//! and the failure reasons status may show.
//!
//! Names are a function of (request, system, step, attempt), so a plan made again after a
//! crash asks for the same names and never starts a second Job for the same attempt.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{request::Step, retention::RetryPolicy};

use super::timeline::{add, floor};

/// Longest Job name: the Job controller copies it into the `job-name` label of its Pods,
/// and label values are at most 63 characters.
pub const MAX_NAME: usize = 63;

/// Labels on every worker Job (and its task Secret), so the controller can find a request's
/// Jobs and tell the planner what each one is.
pub mod labels {
    /// Name of the DataSubjectRequest (shortened by [`super::label_value`] when long).
    pub const REQUEST: &str = "privacy-operator.dev/request";
    /// Name of the DataSystem the Job works on.
    pub const SYSTEM: &str = "privacy-operator.dev/system";
    /// [`super::JobStep::as_str`].
    pub const STEP: &str = "privacy-operator.dev/step";
    /// Attempt number, from 1.
    pub const ATTEMPT: &str = "privacy-operator.dev/attempt";
}

/// What a worker Job does on one system.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStep {
    /// Copy the subject's records into object storage.
    Export,
    /// Hide the subject's records, restorably (erasure t0, first-party systems).
    SoftDelete,
    /// Bring soft-deleted records back (erasure cancelled in the restore window).
    Restore,
    /// Delete the subject's records and restore archives permanently.
    Purge,
    /// Tell a third-party processor to purge, and wait for its confirmation.
    ThirdPartyPurge,
    /// Correct fields.
    Rectify,
    /// Stop processing for the named purposes.
    Restrict,
    /// A scheduled retention rule's run on one system (owned by a RetentionPolicy, not a
    /// request): purge or anonymise the rows older than the rule's age, in batches.
    RetentionRun,
    /// A ConsentPolicy's stale-consent sweep (owned by the policy, not a request): mark
    /// consent older than each purpose's reconsentAfter as expired.
    ConsentSweep,
    /// An erasure-ledger replay on a DataSystem restored from backup (owned by the
    /// DataSystem): erase again every subject erased after the backup was taken.
    LedgerReplay,
}

impl JobStep {
    pub const ALL: [JobStep; 10] = [
        JobStep::Export,
        JobStep::SoftDelete,
        JobStep::Restore,
        JobStep::Purge,
        JobStep::ThirdPartyPurge,
        JobStep::Rectify,
        JobStep::Restrict,
        JobStep::RetentionRun,
        JobStep::ConsentSweep,
        JobStep::LedgerReplay,
    ];

    /// The label value and the worker's task name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStep::Export => "export",
            JobStep::SoftDelete => "soft-delete",
            JobStep::Restore => "restore",
            JobStep::Purge => "purge",
            JobStep::ThirdPartyPurge => "third-party-purge",
            JobStep::Rectify => "rectify",
            JobStep::Restrict => "restrict",
            JobStep::RetentionRun => "retention-run",
            JobStep::ConsentSweep => "consent-sweep",
            JobStep::LedgerReplay => "ledger-replay",
        }
    }

    /// Parses a label value written by [`Self::as_str`].
    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s2| s2.as_str() == s)
    }

    /// The part of a Job name that names the step (short: names are bounded).
    fn name_part(self) -> &'static str {
        match self {
            JobStep::Export => "export",
            JobStep::SoftDelete => "softdel",
            JobStep::Restore => "restore",
            JobStep::Purge => "purge",
            JobStep::ThirdPartyPurge => "tppurge",
            JobStep::Rectify => "rectify",
            JobStep::Restrict => "restrict",
            JobStep::RetentionRun => "retention",
            JobStep::ConsentSweep => "sweep",
            JobStep::LedgerReplay => "replay",
        }
    }

    /// The step as status.systems[].step shows it (a third-party purge is a Purge on a
    /// third-party system).
    pub fn status_step(self) -> Step {
        match self {
            JobStep::Export => Step::Export,
            JobStep::SoftDelete => Step::SoftDelete,
            JobStep::Restore => Step::Restore,
            JobStep::Purge | JobStep::ThirdPartyPurge => Step::Purge,
            JobStep::Rectify => Step::Rectify,
            JobStep::Restrict => Step::Restrict,
            // Never part of a request; the closest request step for completeness.
            JobStep::RetentionRun | JobStep::LedgerReplay => Step::Purge,
            JobStep::ConsentSweep => Step::Restrict,
        }
    }

    /// Words for messages.
    pub fn describe(self) -> &'static str {
        match self {
            JobStep::Export => "export",
            JobStep::SoftDelete => "soft delete",
            JobStep::Restore => "restore",
            JobStep::Purge => "purge",
            JobStep::ThirdPartyPurge => "third-party purge",
            JobStep::Rectify => "rectification",
            JobStep::Restrict => "restriction",
            JobStep::RetentionRun => "retention run",
            JobStep::ConsentSweep => "stale-consent sweep",
            JobStep::LedgerReplay => "erasure-ledger replay",
        }
    }
}

fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..4])
}

/// Lower-case letters, digits and `-`; anything else (a `.` of a DNS subdomain) becomes `-`.
/// Returns whether anything was replaced, because then two names could map to one.
fn dns_label_chars(s: &str) -> (String, bool) {
    let mut replaced = false;
    let out = s
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                replaced = true;
                '-'
            }
        })
        .collect();
    (out, replaced)
}

/// The Job (and task Secret) name for `attempt` of `step` on `system`:
/// `<request>-<system>-<step>-<attempt>`, or, when that is longer than 63 characters or a
/// name had to be altered, a shortened `<request>-<system>` with 8 hex digits of a hash of
/// both names before the step and attempt. The same inputs always give the same name.
pub fn job_name(request: &str, system: &str, step: JobStep, attempt: u32) -> String {
    let suffix = format!("-{}-{attempt}", step.name_part());
    let (base, replaced) = dns_label_chars(&format!("{request}-{system}"));
    if !replaced && base.len() + suffix.len() <= MAX_NAME {
        return base + &suffix;
    }
    // `/` cannot occur in either name, so the hash input is unambiguous.
    let hash = short_hash(&format!("{request}/{system}"));
    let room = MAX_NAME.saturating_sub(suffix.len() + hash.len() + 1);
    let head = base[..base.len().min(room)].trim_end_matches('-');
    if head.is_empty() {
        format!("j{hash}{suffix}")
    } else {
        format!("{head}-{hash}{suffix}")
    }
}

/// A label value for a name that may be longer than 63 characters (request names may have
/// 253): the name itself when it fits, else a shortened name with a hash.
pub fn label_value(name: &str) -> String {
    if name.len() <= MAX_NAME {
        return name.to_string();
    }
    let hash = short_hash(name);
    let head = name[..MAX_NAME - hash.len() - 1].trim_end_matches(['-', '.']);
    format!("{head}-{hash}")
}

/// When the attempt after failed attempt `failed_attempt` may start: the initial backoff
/// after the first failure, doubling after each further one, at most the maximum.
pub fn retry_at(policy: &RetryPolicy, failed_attempt: u32, failed_at: Timestamp) -> Timestamp {
    let at = floor(failed_at);
    let length = |d| add(d, at).duration_since(at).max(SignedDuration::ZERO);
    let max = length(&policy.max_backoff);
    let mut wait = length(&policy.initial_backoff);
    for _ in 1..failed_attempt {
        wait = wait.checked_mul(2).unwrap_or(max);
        if wait >= max {
            break;
        }
    }
    at.checked_add(wait.min(max)).unwrap_or(Timestamp::MAX)
}

/// A Job's failure reason as status may show it: a CamelCase word of letters and digits
/// (BackoffLimitExceeded, DeadlineExceeded, a worker result code). Anything else, such as
/// free text a worker might have written, becomes `JobFailed` and never reaches status.
pub fn sanitise_reason(reason: &str) -> String {
    let ok = !reason.is_empty()
        && reason.len() <= 64
        && reason.starts_with(|c: char| c.is_ascii_uppercase())
        && reason.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        reason.to_string()
    } else {
        "JobFailed".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_deterministic_and_readable() {
        assert_eq!(
            job_name("erase-42", "crm", JobStep::SoftDelete, 1),
            "erase-42-crm-softdel-1"
        );
        assert_eq!(
            job_name("erase-42", "crm", JobStep::SoftDelete, 1),
            job_name("erase-42", "crm", JobStep::SoftDelete, 1)
        );
        assert_ne!(
            job_name("erase-42", "crm", JobStep::SoftDelete, 1),
            job_name("erase-42", "crm", JobStep::SoftDelete, 2)
        );
    }

    #[test]
    fn long_names_are_bounded_and_still_distinct() {
        let req = "a".repeat(200);
        let mut seen = std::collections::BTreeSet::new();
        for sys in ["billing-database-primary", "billing-database-secondary"] {
            for step in JobStep::ALL {
                for attempt in [1, 2, 100] {
                    let n = job_name(&req, sys, step, attempt);
                    assert!(n.len() <= MAX_NAME, "{n}");
                    assert!(n.ends_with(&format!("-{attempt}")), "{n}");
                    assert!(
                        n.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    );
                    assert!(seen.insert(n));
                }
            }
        }
    }

    #[test]
    fn dotted_names_are_hashed_so_they_cannot_collide() {
        let dotted = job_name("r", "crm.eu", JobStep::Export, 1);
        let dashed = job_name("r", "crm-eu", JobStep::Export, 1);
        assert_ne!(dotted, dashed);
        assert!(!dotted.contains('.'));
        assert_eq!(dashed, "r-crm-eu-export-1");
    }

    #[test]
    fn label_values_fit() {
        assert_eq!(label_value("short"), "short");
        let long = "x".repeat(253);
        let v = label_value(&long);
        assert!(v.len() <= MAX_NAME);
        assert_eq!(v, label_value(&long));
    }

    #[test]
    fn steps_round_trip_through_labels() {
        for s in JobStep::ALL {
            assert_eq!(JobStep::from_label(s.as_str()), Some(s));
        }
        assert_eq!(JobStep::from_label("nope"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = RetryPolicy::default(); // 30s doubling, at most 1h
        let t = ts("2024-01-01T00:00:00Z");
        assert_eq!(retry_at(&policy, 1, t), ts("2024-01-01T00:00:30Z"));
        assert_eq!(retry_at(&policy, 2, t), ts("2024-01-01T00:01:00Z"));
        assert_eq!(retry_at(&policy, 3, t), ts("2024-01-01T00:02:00Z"));
        assert_eq!(retry_at(&policy, 8, t), ts("2024-01-01T01:00:00Z"));
        assert_eq!(retry_at(&policy, 100, t), ts("2024-01-01T01:00:00Z"));
    }

    #[test]
    fn reasons_are_sanitised() {
        assert_eq!(
            sanitise_reason("BackoffLimitExceeded"),
            "BackoffLimitExceeded"
        );
        assert_eq!(sanitise_reason("jane@example.com failed"), "JobFailed");
        assert_eq!(sanitise_reason("connection refused"), "JobFailed");
        assert_eq!(sanitise_reason(""), "JobFailed");
    }
}
