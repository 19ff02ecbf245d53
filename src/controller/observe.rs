//! Feeds the request and Job metric families of [`crate::runtime::metrics`] from what the
//! controller sees, without any extra API traffic.
//!
//! - Requests by type and phase, and overdue requests, are gauges recomputed from the
//!   controller's request cache on a short period: a gauge derived from the cache is right
//!   after a restart and after a leader change, where counting transitions would drift.
//! - Job outcomes are counted when a Job this process saw running (or created) is seen
//!   finished, so a restarted controller does not count the finished Jobs it finds again.
//! - Time to completion is observed when a reconcile writes the transition to Completed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::reflector::Store;

use crate::api::conditions::types;
use crate::api::{DataSubjectRequest, DataSubjectRequestStatus, request::RequestPhase};
use crate::plan::{self, JobInfo, JobState};
use crate::runtime::metrics::{self, JobLabels, RequestLabels};

/// How often the request gauges are recomputed.
pub const GAUGE_PERIOD: Duration = Duration::from_secs(5);

/// Every phase, so a phase that empties goes back to 0 instead of keeping its last value.
const PHASES: [RequestPhase; 10] = [
    RequestPhase::Pending,
    RequestPhase::AwaitingVerification,
    RequestPhase::InProgress,
    RequestPhase::RestoreWindow,
    RequestPhase::OnHold,
    RequestPhase::Completed,
    RequestPhase::Restored,
    RequestPhase::Cancelled,
    RequestPhase::Duplicate,
    RequestPhase::Failed,
];

fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Requests per (type, phase) and the number overdue, from a snapshot of the cache.
pub fn count(
    requests: &[std::sync::Arc<DataSubjectRequest>],
) -> (HashMap<RequestLabels, i64>, i64) {
    let mut by_phase = HashMap::new();
    let mut overdue = 0;
    for r in requests {
        let status = r.status.as_ref();
        let phase = status
            .and_then(|s| s.phase)
            .unwrap_or(RequestPhase::Pending);
        *by_phase
            .entry(RequestLabels {
                r#type: label(&r.spec.type_),
                phase: label(&phase),
            })
            .or_insert(0) += 1;
        let is_overdue = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == types::OVERDUE && c.status == "True")
        });
        if is_overdue && !plan::conditions::is_terminal(Some(phase)) {
            overdue += 1;
        }
    }
    (by_phase, overdue)
}

/// Sets the request gauges from the cache.
pub fn publish(store: &Store<DataSubjectRequest>) {
    let (by_phase, overdue) = count(&store.state());
    let m = metrics::global();
    let types: HashSet<String> = by_phase
        .keys()
        .map(|l| l.r#type.clone())
        .chain(metrics::REQUEST_TYPES.iter().map(|t| (*t).to_owned()))
        .collect();
    for t in types {
        for phase in PHASES {
            let labels = RequestLabels {
                r#type: t.clone(),
                phase: label(&phase),
            };
            let n = by_phase.get(&labels).copied().unwrap_or(0);
            // Only series that ever had a request, plus the Pending zeros registered at start.
            if n != 0 || m.requests.get(&labels).is_some() {
                m.requests.get_or_create(&labels).set(n);
            }
        }
    }
    m.overdue_requests.set(overdue);
}

/// Completes once the store has its initial list (false if its writer is gone).
///
/// `Store::wait_until_ready` keeps one waker only (a oneshot inside kube-runtime's
/// DelayedInit): with the controller's own runner also waiting, one of the waiters is never
/// woken. Polling again on a short period re-registers the waker; once the store is ready the
/// value is memoised and the next poll returns at once.
pub async fn synced(store: &Store<DataSubjectRequest>) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(ready) => return ready.is_ok(),
            Err(_elapsed) => continue,
        }
    }
}

/// Recomputes the gauges every [`GAUGE_PERIOD`] until the task is dropped.
pub fn spawn_gauges(store: Store<DataSubjectRequest>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        synced(&store).await;
        let mut tick = tokio::time::interval(GAUGE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            publish(&store);
        }
    })
}

/// Jobs this process saw running or created, by namespace/name, awaiting their outcome.
#[derive(Default)]
pub struct JobOutcomes {
    running: Mutex<HashSet<String>>,
}

impl JobOutcomes {
    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A Job this process created.
    pub fn created(&self, namespace: &str, name: &str) {
        self.running().insert(format!("{namespace}/{name}"));
    }

    /// Counts the Jobs of one request that finished since they were last seen.
    pub fn observe(&self, namespace: &str, jobs: &[JobInfo]) {
        let mut running = self.running();
        for job in jobs {
            let key = format!("{namespace}/{}", job.name);
            let outcome = match &job.state {
                JobState::Active => {
                    running.insert(key);
                    continue;
                }
                JobState::Succeeded { .. } => "succeeded",
                JobState::Failed { .. } => "failed",
                JobState::AwaitingConfirmation { .. } => "awaiting_confirmation",
            };
            if running.remove(&key) {
                metrics::global()
                    .jobs
                    .get_or_create(&JobLabels {
                        outcome: outcome.into(),
                    })
                    .inc();
            }
        }
    }

    /// Forgets the Jobs of a request that is gone.
    pub fn forget(&self, namespace: &str, jobs: &[JobInfo]) {
        let mut running = self.running();
        for job in jobs {
            running.remove(&format!("{namespace}/{}", job.name));
        }
    }
}

/// Observes time to completion when `new` is the first status of a request to say Completed.
pub fn completion(old: Option<&DataSubjectRequestStatus>, new: &DataSubjectRequestStatus) {
    let was = old.and_then(|s| s.phase);
    if was == Some(RequestPhase::Completed) || new.phase != Some(RequestPhase::Completed) {
        return;
    }
    let (Some(received), Some(completed)) = (&new.received_at, &new.completed_at) else {
        return;
    };
    let seconds = completed.0.duration_since(received.0).as_secs_f64();
    if seconds >= 0.0 {
        metrics::global().completion_time.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DataSubjectRequestSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use std::sync::Arc;

    fn request(type_: &str, phase: Option<RequestPhase>, overdue: bool) -> Arc<DataSubjectRequest> {
        let spec: DataSubjectRequestSpec = serde_json::from_value(serde_json::json!({
            "type": type_, "regulation": "GDPR",
            "subject": {"identifiers": {"email": "x@example.com"}}
        }))
        .unwrap();
        let mut r = DataSubjectRequest::new("r", spec);
        let mut status = DataSubjectRequestStatus {
            phase,
            ..Default::default()
        };
        if overdue {
            status.conditions.push(Condition {
                type_: types::OVERDUE.into(),
                status: "True".into(),
                reason: "PastDue".into(),
                message: String::new(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            });
        }
        r.status = Some(status);
        Arc::new(r)
    }

    #[test]
    fn counts_by_type_and_phase_and_overdue_only_while_unfinished() {
        let reqs = vec![
            request("Access", Some(RequestPhase::InProgress), true),
            request("Access", Some(RequestPhase::InProgress), false),
            request("Erasure", None, false),
            request("Erasure", Some(RequestPhase::Completed), true),
        ];
        let (by_phase, overdue) = count(&reqs);
        let get = |t: &str, p: &str| {
            by_phase
                .get(&RequestLabels {
                    r#type: t.into(),
                    phase: p.into(),
                })
                .copied()
        };
        assert_eq!(get("Access", "InProgress"), Some(2));
        assert_eq!(get("Erasure", "Pending"), Some(1));
        assert_eq!(get("Erasure", "Completed"), Some(1));
        assert_eq!(overdue, 1);
    }

    #[test]
    fn a_job_counts_once_and_only_if_seen_running() {
        let outcomes = JobOutcomes::default();
        let job = |state| plan::JobInfo {
            name: "j".into(),
            system: "crm".into(),
            step: plan::jobs::JobStep::Export,
            attempt: 1,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            state,
            deleting: false,
            result: None,
        };
        let done = || JobState::Succeeded {
            completed_at: jiff::Timestamp::UNIX_EPOCH,
            records: None,
        };
        let before = metrics::global()
            .jobs
            .get_or_create(&JobLabels {
                outcome: "succeeded".into(),
            })
            .get();
        // Found finished after a restart: not counted.
        outcomes.observe("ns", &[job(done())]);
        outcomes.observe("ns", &[job(JobState::Active)]);
        outcomes.observe("ns", &[job(done())]);
        outcomes.observe("ns", &[job(done())]);
        let after = metrics::global()
            .jobs
            .get_or_create(&JobLabels {
                outcome: "succeeded".into(),
            })
            .get();
        assert_eq!(after - before, 1);
    }
}
