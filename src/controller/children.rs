//! Reading the operator's worker Jobs back into the planner's terms ([`JobInfo`]), and the
//! per-system counts of Jobs still running (the DataSystems' concurrency limits).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;

use crate::plan::{JobInfo, JobState, JobStep, labels};

/// The planner's view of one of our Jobs; `None` when its labels do not say what it is
/// (not created by this operator, or edited by hand), so it is left alone. The worker's
/// result (records, failure reason) is added from its manifest by [`super::results`].
pub fn job_info(job: &Job, now: Timestamp) -> Option<JobInfo> {
    let meta = &job.metadata;
    let l = meta.labels.as_ref()?;
    let system = l.get(labels::SYSTEM)?.clone();
    let step = JobStep::from_label(l.get(labels::STEP)?)?;
    let attempt: u32 = l.get(labels::ATTEMPT)?.parse().ok().filter(|a| *a > 0)?;
    Some(JobInfo {
        name: meta.name.clone()?,
        system,
        step,
        attempt,
        created_at: meta.creation_timestamp.as_ref().map_or(now, |t| t.0),
        state: job_state(job, now),
        deleting: meta.deletion_timestamp.is_some(),
        result: None,
    })
}

/// Active until the Job controller sets a terminal condition (Complete or Failed). The
/// interim conditions of Kubernetes 1.31+ (SuccessCriteriaMet, FailureTarget) still count as
/// running: the Pods may not have finished.
pub fn job_state(job: &Job, now: Timestamp) -> JobState {
    let status = job.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let terminal = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if let Some(c) = terminal("Complete") {
        let completed_at = status
            .and_then(|s| s.completion_time.as_ref())
            .or(c.last_transition_time.as_ref())
            .map_or(now, |t| t.0);
        // Records come from the worker's manifest (super::results), not from the Job.
        return JobState::Succeeded {
            completed_at,
            records: None,
        };
    }
    if let Some(c) = terminal("Failed") {
        return JobState::Failed {
            // The planner sanitises reasons: free text never reaches status.
            reason: c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
            failed_at: c.last_transition_time.as_ref().map_or(now, |t| t.0),
        };
    }
    JobState::Active
}

/// Jobs of this operator still running, per DataSystem name (labels), across every request.
pub fn running_per_system<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for job in jobs {
        if job.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(system) = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::SYSTEM))
        else {
            continue;
        };
        if job_state(job, Timestamp::UNIX_EPOCH) == JobState::Active {
            *out.entry(system.clone()).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {
                "name": "r-crm-export-1",
                "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": {
                    labels::REQUEST: "r",
                    labels::SYSTEM: "crm",
                    labels::STEP: "export",
                    labels::ATTEMPT: "1",
                },
            },
            "status": status,
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        "2024-01-02T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn running_job() {
        let info = job_info(&job(json!({"active": 1})), now()).unwrap();
        assert_eq!(info.system, "crm");
        assert_eq!(info.step, JobStep::Export);
        assert_eq!(info.attempt, 1);
        assert_eq!(info.state, JobState::Active);
        assert_eq!(info.created_at, "2024-01-01T00:00:00Z".parse().unwrap());
    }

    #[test]
    fn complete_job_uses_completion_time() {
        let j = job(json!({
            "completionTime": "2024-01-01T00:05:00Z",
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True", "lastTransitionTime": "2024-01-01T00:06:00Z"}
            ]
        }));
        assert_eq!(
            job_state(&j, now()),
            JobState::Succeeded {
                completed_at: "2024-01-01T00:05:00Z".parse().unwrap(),
                records: None
            }
        );
    }

    #[test]
    fn failed_job_keeps_its_reason() {
        let j = job(json!({"conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "lastTransitionTime": "2024-01-01T00:06:00Z"}
        ]}));
        assert_eq!(
            job_state(&j, now()),
            JobState::Failed {
                reason: "BackoffLimitExceeded".into(),
                failed_at: "2024-01-01T00:06:00Z".parse().unwrap()
            }
        );
    }

    #[test]
    fn interim_conditions_are_still_running() {
        let j = job(json!({"conditions": [{"type": "FailureTarget", "status": "True"}]}));
        assert_eq!(job_state(&j, now()), JobState::Active);
    }

    #[test]
    fn jobs_without_our_labels_are_ignored() {
        let mut j = job(json!({}));
        j.metadata.labels.as_mut().unwrap().remove(labels::STEP);
        assert!(job_info(&j, now()).is_none());
        let mut j = job(json!({}));
        j.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(labels::ATTEMPT.into(), "0".into());
        assert!(job_info(&j, now()).is_none());
    }

    #[test]
    fn running_counts_skip_finished_and_deleting_jobs() {
        let active = job(json!({"active": 1}));
        let done = job(json!({"conditions": [{"type": "Complete", "status": "True"}]}));
        let mut deleting = job(json!({"active": 1}));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        let counts = running_per_system([&active, &done, &deleting, &active]);
        assert_eq!(counts.get("crm"), Some(&2));
    }
}
