//! Job status as the Kubernetes Job controller writes it (pure: unit-tested without a cluster).
//!
//! The shapes follow `pkg/controller/job` of Kubernetes 1.31+: a finished Job first gets the
//! interim condition (`SuccessCriteriaMet` or `FailureTarget`) and then the terminal one
//! (`Complete` or `Failed`) with the same reason; `completionTime` is set only on success;
//! suspending a Job sets `Suspended=True` and clears `startTime`, resuming flips it to
//! `False` and starts the clock of `activeDeadlineSeconds` again.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value};

/// Reason and message of the conditions of a Job that succeeded.
pub const COMPLETIONS_REACHED: (&str, &str) = (
    "CompletionsReached",
    "Reached expected number of succeeded pods",
);
/// A Job whose Pods failed more often than `backoffLimit` allows.
pub const BACKOFF_LIMIT_EXCEEDED: (&str, &str) = (
    "BackoffLimitExceeded",
    "Job has reached the specified backoff limit",
);
/// A Job that ran longer than `activeDeadlineSeconds`.
pub const DEADLINE_EXCEEDED: (&str, &str) = (
    "DeadlineExceeded",
    "Job was active longer than specified deadline",
);
const SUSPENDED: (&str, &str) = ("JobSuspended", "Job suspended");
const RESUMED: (&str, &str) = ("JobResumed", "Job resumed");

/// Where a Job stands, as far as running it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Complete or Failed: never run again.
    Finished,
    /// Being deleted: stop whatever runs.
    Deleting,
    /// `spec.suspend: true`: nothing may run.
    Suspended,
    /// Should be running.
    Runnable,
}

/// What the runner should do with `job`.
pub fn disposition(job: &Job) -> Disposition {
    if is_finished(job.status.as_ref()) {
        Disposition::Finished
    } else if job.metadata.deletion_timestamp.is_some() {
        Disposition::Deleting
    } else if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        Disposition::Suspended
    } else {
        Disposition::Runnable
    }
}

/// Has the Job a terminal condition (Complete or Failed) set to True?
pub fn is_finished(status: Option<&JobStatus>) -> bool {
    has_condition(status, "Complete") || has_condition(status, "Failed")
}

fn has_condition(status: Option<&JobStatus>, type_: &str) -> bool {
    status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[])
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn condition(
    type_: &str,
    status: bool,
    (reason, message): (&str, &str),
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition the way the Job controller does: a new type is appended; an existing one
/// is updated (and its transition time moved) only when its status changes.
fn ensure_condition(conditions: &mut Vec<JobCondition>, new: JobCondition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) if c.status == new.status => {}
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

/// The status of a Job the runner picked up: one Pod's worth of work is active. The clock of
/// `activeDeadlineSeconds` starts now unless it already runs (a rerun after a restart keeps
/// it); a previously suspended Job is marked resumed.
pub fn started(old: Option<&JobStatus>, now: Timestamp) -> JobStatus {
    let mut s = old.cloned().unwrap_or_default();
    if s.start_time.is_none() {
        s.start_time = Some(Time(now));
    }
    s.active = Some(1);
    s.ready = Some(0);
    s.terminating = Some(0);
    let mut conditions = s.conditions.take().unwrap_or_default();
    if conditions.iter().any(|c| c.type_ == "Suspended") {
        ensure_condition(&mut conditions, condition("Suspended", false, RESUMED, now));
    }
    s.conditions = (!conditions.is_empty()).then_some(conditions);
    s
}

/// The status after the Pod succeeded: the Job is complete.
pub fn succeeded(old: Option<&JobStatus>, now: Timestamp) -> JobStatus {
    let mut s = old.cloned().unwrap_or_default();
    s.active = Some(0);
    s.ready = Some(0);
    s.terminating = Some(0);
    s.succeeded = Some(s.succeeded.unwrap_or(0) + 1);
    s.completion_time = Some(Time(now));
    s.start_time.get_or_insert(Time(now));
    let mut conditions = s.conditions.take().unwrap_or_default();
    ensure_condition(
        &mut conditions,
        condition("SuccessCriteriaMet", true, COMPLETIONS_REACHED, now),
    );
    ensure_condition(
        &mut conditions,
        condition("Complete", true, COMPLETIONS_REACHED, now),
    );
    s.conditions = Some(conditions);
    s
}

/// The status after one failed Pod that will be retried: the failure is counted, nothing is
/// active while the backoff runs.
pub fn pod_failed(old: Option<&JobStatus>) -> JobStatus {
    let mut s = old.cloned().unwrap_or_default();
    s.active = Some(0);
    s.ready = Some(0);
    s.failed = Some(s.failed.unwrap_or(0) + 1);
    s
}

/// The status of a Job that failed for good with `why` (reason, message); `pod_failed`
/// says whether a failed Pod is counted (not when the Job never got to run one).
pub fn failed(
    old: Option<&JobStatus>,
    why: (&str, &str),
    pod_failed: bool,
    now: Timestamp,
) -> JobStatus {
    let mut s = old.cloned().unwrap_or_default();
    s.active = Some(0);
    s.ready = Some(0);
    s.terminating = Some(0);
    if pod_failed {
        s.failed = Some(s.failed.unwrap_or(0) + 1);
    }
    s.start_time.get_or_insert(Time(now));
    let mut conditions = s.conditions.take().unwrap_or_default();
    ensure_condition(&mut conditions, condition("FailureTarget", true, why, now));
    ensure_condition(&mut conditions, condition("Failed", true, why, now));
    s.conditions = Some(conditions);
    s
}

/// The status of a suspended Job: no Pod, no start time, `Suspended=True`.
pub fn suspended(old: Option<&JobStatus>, now: Timestamp) -> JobStatus {
    let mut s = old.cloned().unwrap_or_default();
    s.active = Some(0);
    s.ready = Some(0);
    s.start_time = None;
    let mut conditions = s.conditions.take().unwrap_or_default();
    ensure_condition(
        &mut conditions,
        condition("Suspended", true, SUSPENDED, now),
    );
    s.conditions = Some(conditions);
    s
}

/// Is `status` already what [`suspended`] would write (so no write is needed)?
pub fn is_suspended(status: Option<&JobStatus>) -> bool {
    has_condition(status, "Suspended") && status.and_then(|s| s.active).unwrap_or(0) == 0
}

/// A JSON merge patch of the status subresource turning `old` into `new`: fields that
/// disappear are sent as `null` (a merge patch keeps what it does not mention).
pub fn merge_patch(old: Option<&JobStatus>, new: &JobStatus) -> Result<Value, serde_json::Error> {
    let mut new_v = match serde_json::to_value(new)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(Value::Object(old_v)) = old.map(serde_json::to_value).transpose()? {
        for key in old_v.keys() {
            new_v.entry(key.clone()).or_insert(Value::Null);
        }
    }
    Ok(serde_json::json!({ "status": new_v }))
}

/// Delay before the Pod after `failures` failed ones: the Job controller's exponential
/// backoff (10s doubling to 6m in a cluster), with a base and cap chosen by the runner.
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << exp.min(31)).min(cap)
}

/// When the Job must have finished (`startTime + activeDeadlineSeconds`), if it has a deadline.
pub fn deadline(job: &Job, status: &JobStatus) -> Option<Timestamp> {
    let seconds = job.spec.as_ref()?.active_deadline_seconds?;
    let start = status.start_time.as_ref()?.0;
    start
        .checked_add(jiff::SignedDuration::from_secs(seconds.max(0)))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn job(spec: Value, status: Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "ns"},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    fn types(s: &JobStatus) -> Vec<(String, String, String)> {
        s.conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn success_sets_interim_then_terminal_condition_and_completion_time() {
        let t0 = ts("2024-01-01T00:00:00Z");
        let t1 = ts("2024-01-01T00:00:05Z");
        let s = started(None, t0);
        assert_eq!(s.active, Some(1));
        assert_eq!(s.start_time, Some(Time(t0)));
        assert!(s.conditions.is_none());
        let done = succeeded(Some(&s), t1);
        assert_eq!(done.active, Some(0));
        assert_eq!(done.succeeded, Some(1));
        assert_eq!(done.completion_time, Some(Time(t1)));
        assert_eq!(done.start_time, Some(Time(t0)));
        let ty = types(&done);
        assert_eq!(
            ty[0],
            (
                "SuccessCriteriaMet".into(),
                "True".into(),
                "CompletionsReached".into()
            )
        );
        assert_eq!(
            ty[1],
            (
                "Complete".into(),
                "True".into(),
                "CompletionsReached".into()
            )
        );
        assert!(is_finished(Some(&done)));
    }

    #[test]
    fn failure_counts_pods_and_has_no_completion_time() {
        let t = ts("2024-01-01T00:00:00Z");
        let s = pod_failed(Some(&started(None, t)));
        assert_eq!((s.failed, s.active), (Some(1), Some(0)));
        assert!(!is_finished(Some(&s)));
        let f = failed(Some(&s), BACKOFF_LIMIT_EXCEEDED, true, t);
        assert_eq!(f.failed, Some(2));
        assert!(f.completion_time.is_none());
        let ty = types(&f);
        assert_eq!(ty[0].0, "FailureTarget");
        assert_eq!(
            ty[1],
            (
                "Failed".into(),
                "True".into(),
                "BackoffLimitExceeded".into()
            )
        );
        assert!(is_finished(Some(&f)));
        // A Job that never ran a Pod (an image that cannot run here) counts no failed Pod.
        let never = failed(None, DEADLINE_EXCEEDED, false, t);
        assert_eq!(never.failed, None);
    }

    #[test]
    fn suspend_and_resume() {
        let t0 = ts("2024-01-01T00:00:00Z");
        let t1 = ts("2024-01-01T00:01:00Z");
        let s = suspended(Some(&started(None, t0)), t0);
        assert!(s.start_time.is_none() && is_suspended(Some(&s)));
        let r = started(Some(&s), t1);
        assert_eq!(r.start_time, Some(Time(t1)));
        assert_eq!(
            types(&r),
            vec![("Suspended".into(), "False".into(), "JobResumed".into())]
        );
        assert!(!is_suspended(Some(&r)));
    }

    #[test]
    fn dispositions() {
        assert_eq!(
            disposition(&job(json!({}), json!({}))),
            Disposition::Runnable
        );
        assert_eq!(
            disposition(&job(json!({"suspend": true}), json!({}))),
            Disposition::Suspended
        );
        let done = json!({"conditions": [{"type": "Complete", "status": "True"}]});
        assert_eq!(
            disposition(&job(json!({"suspend": true}), done)),
            Disposition::Finished
        );
        let interim = json!({"conditions": [{"type": "FailureTarget", "status": "True"}]});
        assert_eq!(disposition(&job(json!({}), interim)), Disposition::Runnable);
        let mut deleting = job(json!({}), json!({}));
        deleting.metadata.deletion_timestamp = Some(Time(ts("2024-01-01T00:00:00Z")));
        assert_eq!(disposition(&deleting), Disposition::Deleting);
    }

    #[test]
    fn merge_patch_nulls_removed_fields() {
        let t = ts("2024-01-01T00:00:00Z");
        let old = started(None, t);
        let new = suspended(Some(&old), t);
        let p = merge_patch(Some(&old), &new).unwrap();
        assert_eq!(p["status"]["startTime"], Value::Null);
        assert!(p["status"].as_object().unwrap().contains_key("startTime"));
        assert_eq!(p["status"]["conditions"][0]["type"], "Suspended");
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let (b, c) = (Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(backoff(1, b, c), Duration::from_secs(1));
        assert_eq!(backoff(2, b, c), Duration::from_secs(2));
        assert_eq!(backoff(4, b, c), Duration::from_secs(8));
        assert_eq!(backoff(5, b, c), Duration::from_secs(10));
        assert_eq!(backoff(500, b, c), Duration::from_secs(10));
        assert_eq!(backoff(0, b, c), Duration::from_secs(1));
    }

    #[test]
    fn deadline_counts_from_start_time() {
        let t = ts("2024-01-01T00:00:00Z");
        let j = job(json!({"activeDeadlineSeconds": 30}), json!({}));
        let s = started(None, t);
        assert_eq!(deadline(&j, &s), Some(ts("2024-01-01T00:00:30Z")));
        assert_eq!(deadline(&job(json!({}), json!({})), &s), None);
    }
}
