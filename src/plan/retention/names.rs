//! Deterministic names and labels of retention run Jobs.
//!
//! A run is identified by (policy, rule, system, scheduled time), like a CronJob's Jobs by
//! (CronJob, scheduled minute): a plan made again after a crash asks for the same name and
//! never starts a second Job for the same run.

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::plan::jobs::{MAX_NAME, label_value};

/// Labels on retention run Jobs and their task Secrets. Distinct from the request labels, so
/// the request controller never mistakes a run for one of its Jobs.
pub mod labels {
    /// Name of the RetentionPolicy (shortened when long).
    pub const POLICY: &str = "privacy-operator.dev/retention-policy";
    /// Name of the rule.
    pub const RULE: &str = "privacy-operator.dev/retention-rule";
    /// The DataSystem the run works on (shared with request Jobs).
    pub const SYSTEM: &str = crate::plan::jobs::labels::SYSTEM;
    /// The step, `retention-run` (shared with request Jobs).
    pub const STEP: &str = crate::plan::jobs::labels::STEP;
    /// The scheduled time, Unix seconds.
    pub const SCHEDULED: &str = "privacy-operator.dev/scheduled";
}

/// The Job (and task Secret) name of a run: `<policy>-<rule>-<system>-<minutes>` where
/// `<minutes>` is the scheduled time in minutes since the Unix epoch (as CronJob names its
/// Jobs); shortened with a hash of the three names when too long or not a DNS label.
pub fn run_name(policy: &str, rule: &str, system: &str, scheduled: Timestamp) -> String {
    let suffix = format!("-{}", scheduled.as_second().div_euclid(60));
    let joined = format!("{policy}-{rule}-{system}");
    let clean: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean == joined && clean.len() + suffix.len() <= MAX_NAME {
        return clean + &suffix;
    }
    // `/` cannot occur in any of the names, so the hash input is unambiguous.
    let hash = hex::encode(&Sha256::digest(format!("{policy}/{rule}/{system}").as_bytes())[..4]);
    let room = MAX_NAME.saturating_sub(suffix.len() + hash.len() + 1);
    let head = clean[..clean.len().min(room)].trim_end_matches('-');
    if head.is_empty() {
        format!("r{hash}{suffix}")
    } else {
        format!("{head}-{hash}{suffix}")
    }
}

/// The policy label value of a policy name.
pub fn policy_label(policy: &str) -> String {
    label_value(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_bounded() {
        let t: Timestamp = "2024-01-02T03:00:00Z".parse().unwrap();
        assert_eq!(
            run_name("default", "old-calls", "crm", t),
            "default-old-calls-crm-28402740"
        );
        let long = run_name(&"p".repeat(200), "rule", "crm.eu", t);
        assert!(long.len() <= MAX_NAME, "{long}");
        assert!(long.ends_with("-28402740"));
        assert_eq!(long, run_name(&"p".repeat(200), "rule", "crm.eu", t));
        assert_ne!(
            run_name("p", "r", "crm.eu", t),
            run_name("p", "r", "crm-eu", t)
        );
    }
}
