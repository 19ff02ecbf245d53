//! How a step on one system moves through attempts: the first Job, retries with backoff
//! within the policy's budget, and re-creation of a Job lost from the cluster.
//!
//! A step's state is read from the Jobs that exist (the truth) and, when a Job is gone or not
//! yet visible in the controller's cache, from the system's entry in status (the record).

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::request::{Step, SystemPhase, SystemProgress};

use super::{
    jobs::{JobStep, job_name, retry_at, sanitise_reason},
    model::{Action, EventType, JobInfo, JobState},
    planner::Planner,
    timeline::{self, floor, fmt},
};

/// A Job created by a previous pass but not yet in the controller's cache is trusted to
/// exist for this long; after that it is taken as lost (deleted by someone) and created again
/// under the same name.
pub const LOST_JOB_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// When a worker ended awaiting confirmation without saying when to look again, the step is
/// run again this long after.
pub const DEFAULT_RECHECK: SignedDuration = SignedDuration::from_hours(1);
/// A recheck never comes sooner than this after the previous run, whatever the worker asked.
pub const MIN_RECHECK: SignedDuration = SignedDuration::from_secs(60);

/// Where a step on one system stands.
#[derive(Clone, Debug, PartialEq)]
enum Derived {
    NotStarted,
    Running {
        job: String,
        attempt: u32,
        /// Seen in the cache (false: only recorded in status).
        observed: bool,
        since: Option<Timestamp>,
    },
    RetryAt {
        job: String,
        failed_attempt: u32,
        /// Failures counted against the budget (since the last confirmation check).
        failures: u32,
        at: Timestamp,
        reason: String,
    },
    /// The system accepted the work and has not confirmed it; run the step again at
    /// `recheck` (a status check, thanks to the idempotency key).
    Awaiting {
        job: String,
        attempt: u32,
        checked_at: Timestamp,
        recheck: Timestamp,
    },
    Succeeded {
        at: Timestamp,
        attempt: u32,
        job: Option<String>,
        records: Option<i64>,
    },
    Exhausted {
        job: String,
        /// Failures counted against the budget.
        attempts: u32,
        reason: String,
    },
    /// Only the status entry knows the outcome (the Jobs are gone): keep the entry as is.
    Recorded(SystemPhase),
}

fn derive(p: &Planner, system: &str, step: JobStep, later: &[Step]) -> Derived {
    let record = p.old_entry(system);
    let latest: Option<&JobInfo> = p
        .input
        .children
        .jobs
        .iter()
        .filter(|j| j.system == system && j.step == step)
        .max_by_key(|j| j.attempt);
    let record_here = record.filter(|r| r.step == Some(step.status_step()));
    let recorded_attempt = record_here.map_or(0, |r| r.attempts.max(0) as u32);
    if let Some(job) = latest.filter(|j| j.attempt >= recorded_attempt) {
        let max = p.policy().retry.max_attempts.max(1) as u32;
        // Runs that ended awaiting confirmation are not failures: the budget counts the
        // failures since the last of them.
        let failures = job.attempt.saturating_sub(boundary(p, system, step));
        return match &job.state {
            JobState::Active => Derived::Running {
                job: job.name.clone(),
                attempt: job.attempt,
                observed: true,
                since: None,
            },
            JobState::Succeeded {
                completed_at,
                records,
            } => Derived::Succeeded {
                at: *completed_at,
                attempt: job.attempt,
                job: Some(job.name.clone()),
                records: *records,
            },
            JobState::Failed { reason, .. } if failures >= max => Derived::Exhausted {
                job: job.name.clone(),
                attempts: failures,
                reason: sanitise_reason(reason),
            },
            JobState::Failed { reason, failed_at } => Derived::RetryAt {
                job: job.name.clone(),
                failed_attempt: job.attempt,
                failures,
                at: retry_at(&p.policy().retry, failures.max(1), *failed_at),
                reason: sanitise_reason(reason),
            },
            JobState::AwaitingConfirmation {
                checked_at,
                recheck_at,
            } => {
                let earliest = *checked_at + MIN_RECHECK;
                let recheck = recheck_at
                    .unwrap_or(*checked_at + DEFAULT_RECHECK)
                    .max(earliest);
                Derived::Awaiting {
                    job: job.name.clone(),
                    attempt: job.attempt,
                    checked_at: *checked_at,
                    recheck: floor(recheck),
                }
            }
        };
    }
    if let Some(r) = record_here {
        return match r.phase {
            SystemPhase::Running => Derived::Running {
                job: r.job_name.clone().unwrap_or_else(|| {
                    job_name(&p.input.request.name, system, step, recorded_attempt)
                }),
                attempt: recorded_attempt.max(1),
                observed: false,
                since: r.last_transition_time.as_ref().map(|t| t.0),
            },
            SystemPhase::Waiting | SystemPhase::Succeeded | SystemPhase::Failed
                if recorded_attempt > 0 =>
            {
                Derived::Recorded(r.phase)
            }
            _ => Derived::NotStarted,
        };
    }
    if let Some(r) = record.filter(|r| r.step.is_some_and(|s| later.contains(&s))) {
        // A later step of the chain is recorded, so this one succeeded even though its Jobs
        // are gone.
        return Derived::Succeeded {
            at: r.last_transition_time.as_ref().map_or(p.now, |t| t.0),
            attempt: 0,
            job: None,
            records: None,
        };
    }
    Derived::NotStarted
}

/// The attempt of the latest earlier run of `step` on `system` that did not fail (0: none).
///
/// An earlier run only leads to a newer attempt by failing or by ending awaiting
/// confirmation, so one that did not fail ended awaiting confirmation (the controller reads
/// only the latest run's manifest, so such a run shows as Succeeded, its Job having exited
/// 0). Failures before it were followed by a confirmation check and no longer count.
fn boundary(p: &Planner, system: &str, step: JobStep) -> u32 {
    let jobs = || {
        p.input
            .children
            .jobs
            .iter()
            .filter(|j| j.system == system && j.step == step)
    };
    // Jobs this pass decided to create count as the latest too.
    let planned = p.actions.iter().filter_map(|a| match a {
        Action::CreateJob(j) if j.system == system && j.step == step => Some(j.attempt),
        _ => None,
    });
    let Some(latest) = jobs().map(|j| j.attempt).chain(planned).max() else {
        return 0;
    };
    jobs()
        .filter(|j| j.attempt < latest)
        .filter(|j| !matches!(j.state, JobState::Failed { .. } | JobState::Active))
        .map(|j| j.attempt)
        .max()
        .unwrap_or(0)
}

/// Deletes the runs of `step` on `system` older than the [`boundary`]: a processor that
/// takes weeks to confirm would otherwise leave a Job per check behind. The boundary run
/// stays, so the retry budget can still be counted from it.
fn prune(p: &mut Planner, system: &str, step: JobStep) {
    let keep_from = boundary(p, system, step);
    let stale: Vec<String> = p
        .input
        .children
        .jobs
        .iter()
        .filter(|j| j.system == system && j.step == step && !j.deleting)
        .filter(|j| j.attempt < keep_from)
        .map(|j| j.name.clone())
        .collect();
    for name in stale {
        p.actions.push(Action::DeleteJob { name });
    }
}

/// Outcome of driving a step on one system.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Progress {
    /// Nothing dispatched: starting was not allowed, or no Job slot is free.
    NotStarted,
    /// A Job runs, or was created by this pass.
    Running,
    /// The last attempt failed; the next one waits for its backoff (or was not allowed).
    Retrying,
    /// Succeeded at `at`.
    Done { at: Timestamp },
    /// The retry budget is spent; a message is in `Planner::failures`.
    Failed,
}

/// Moves `step` on `system` forward: creates the first Job when `start` allows, the next
/// attempt when a backoff has passed (and `start` allows), re-creates a Job lost from the
/// cluster, and writes the system's entry in status. `later` lists status steps that follow
/// this one in the system's chain (their presence proves this step succeeded).
pub(crate) fn drive(
    p: &mut Planner,
    system: &str,
    third_party: bool,
    step: JobStep,
    start: bool,
    later: &[Step],
) -> Progress {
    let progress = drive_step(p, system, third_party, step, start, later);
    prune(p, system, step);
    progress
}

fn drive_step(
    p: &mut Planner,
    system: &str,
    third_party: bool,
    step: JobStep,
    start: bool,
    later: &[Step],
) -> Progress {
    let max = p.policy().retry.max_attempts.max(1);
    let base = SystemProgress {
        name: system.to_string(),
        third_party,
        step: Some(step.status_step()),
        phase: SystemPhase::Pending,
        job_name: None,
        attempts: 0,
        next_attempt_at: None,
        records: None,
        message: None,
        last_transition_time: None,
    };
    match derive(p, system, step, later) {
        Derived::NotStarted => {
            if !start {
                return Progress::NotStarted;
            }
            match p.dispatch(system, step, 1) {
                Some(job) => {
                    let now = p.now;
                    p.put_entry(
                        SystemProgress {
                            phase: SystemPhase::Running,
                            job_name: Some(job),
                            attempts: 1,
                            ..base
                        },
                        now,
                    );
                    Progress::Running
                }
                None => {
                    let now = p.now;
                    let msg = slot_message(p, system);
                    p.put_entry(
                        SystemProgress {
                            message: Some(msg),
                            ..base
                        },
                        now,
                    );
                    Progress::NotStarted
                }
            }
        }
        Derived::Running {
            job,
            attempt,
            observed,
            since,
        } => {
            let mut lost = false;
            if !observed {
                let since = since.unwrap_or(p.now);
                let deadline = since + LOST_JOB_GRACE;
                if p.now >= deadline {
                    lost = p.dispatch(system, step, attempt).is_some();
                } else {
                    p.wake_at(deadline);
                }
            }
            let now = p.now;
            p.put_entry(
                SystemProgress {
                    phase: SystemPhase::Running,
                    job_name: Some(job),
                    attempts: attempt as i32,
                    ..base
                },
                now,
            );
            if lost {
                // Restart the grace period from the re-creation.
                let stamp = p.stamp;
                if let Some(e) = p.status.systems.iter_mut().find(|e| e.name == system) {
                    e.last_transition_time = Some(Time(stamp));
                }
            }
            Progress::Running
        }
        Derived::Awaiting {
            job,
            attempt,
            checked_at,
            recheck,
        } => {
            // Checking on work already handed over starts nothing new, so it goes on even
            // when new work may not start (a cancel, a legal hold): the confirmation is still
            // wanted.
            if p.now >= recheck {
                if let Some(new_job) = p.dispatch(system, step, attempt + 1) {
                    let now = p.now;
                    p.put_entry(
                        SystemProgress {
                            phase: SystemPhase::Running,
                            job_name: Some(new_job),
                            attempts: attempt as i32 + 1,
                            ..base
                        },
                        now,
                    );
                    return Progress::Running;
                }
            } else {
                p.wake_at(recheck);
            }
            let msg = format!(
                "{system} accepted the {} but has not confirmed it yet (last checked {}); checking again at {}",
                step.describe(),
                fmt(floor(checked_at)),
                fmt(recheck)
            );
            let now = p.now;
            p.put_entry(
                SystemProgress {
                    phase: SystemPhase::Waiting,
                    job_name: Some(job),
                    attempts: attempt as i32,
                    next_attempt_at: Some(timeline::time(recheck)),
                    message: Some(msg),
                    ..base
                },
                now,
            );
            Progress::Running
        }
        Derived::RetryAt {
            job,
            failed_attempt,
            failures,
            at,
            reason,
        } => {
            if start && p.now >= at {
                if let Some(new_job) = p.dispatch(system, step, failed_attempt + 1) {
                    let now = p.now;
                    p.put_entry(
                        SystemProgress {
                            phase: SystemPhase::Running,
                            job_name: Some(new_job),
                            attempts: failed_attempt as i32 + 1,
                            ..base
                        },
                        now,
                    );
                    return Progress::Running;
                }
            } else if start {
                p.wake_at(at);
            }
            let msg = format!(
                "attempt {failures} of {max} failed ({reason}{}); next attempt at {}",
                worker_says(p, &job),
                fmt(at)
            );
            let first_seen = p.old_entry(system).is_none_or(|o| {
                o.phase != SystemPhase::Waiting
                    || o.attempts != failed_attempt as i32
                    || o.step != base.step
            });
            if first_seen {
                p.event(
                    EventType::Warning,
                    "JobFailed",
                    format!(
                        "{} on {system} failed ({reason}), attempt {failures} of {max}; retrying at {}",
                        step.describe(),
                        fmt(at)
                    ),
                );
            }
            let now = p.now;
            p.put_entry(
                SystemProgress {
                    phase: SystemPhase::Waiting,
                    job_name: Some(job),
                    attempts: failed_attempt as i32,
                    next_attempt_at: Some(timeline::time(at)),
                    message: Some(msg),
                    ..base
                },
                now,
            );
            Progress::Retrying
        }
        Derived::Succeeded {
            at,
            attempt,
            job,
            records,
        } => {
            let old = p.old_entry(system).filter(|o| o.step == base.step).cloned();
            let entry = SystemProgress {
                phase: SystemPhase::Succeeded,
                job_name: job.or_else(|| old.as_ref().and_then(|o| o.job_name.clone())),
                attempts: if attempt > 0 {
                    attempt as i32
                } else {
                    old.as_ref().map_or(0, |o| o.attempts)
                },
                records: records.or_else(|| old.as_ref().and_then(|o| o.records)),
                ..base
            };
            if attempt > 0 || old.is_none() {
                p.put_entry(entry, at);
            }
            Progress::Done { at: floor(at) }
        }
        Derived::Exhausted {
            job,
            attempts,
            reason,
        } => {
            let reason = format!("{reason}{}", worker_says(p, &job));
            let msg = exhausted_message(system, step, attempts, &reason, &job);
            let first_seen = p
                .old_entry(system)
                .is_none_or(|o| o.phase != SystemPhase::Failed || o.step != base.step);
            if first_seen {
                p.event(EventType::Warning, "RetriesExhausted", msg.clone());
            }
            p.failures.push(msg.clone());
            let now = p.now;
            p.put_entry(
                SystemProgress {
                    phase: SystemPhase::Failed,
                    job_name: Some(job),
                    attempts: attempts as i32,
                    message: Some(msg),
                    ..base
                },
                now,
            );
            Progress::Failed
        }
        Derived::Recorded(phase) => {
            // Keep the recorded entry; its Jobs are gone, so nothing newer is known.
            let Some(old) = p.old_entry(system).cloned() else {
                return Progress::NotStarted;
            };
            let at = old.last_transition_time.as_ref().map_or(p.now, |t| t.0);
            match phase {
                SystemPhase::Succeeded => {
                    p.put_entry(old, at);
                    Progress::Done { at }
                }
                SystemPhase::Failed => {
                    p.failures.push(
                        old.message
                            .clone()
                            .unwrap_or_else(|| format!("{} on {system} failed", step.describe())),
                    );
                    p.put_entry(old, at);
                    Progress::Failed
                }
                _ => {
                    // A retry was scheduled but its failed Job is gone: the record has the
                    // attempt count and the time, which is all a retry needs.
                    let attempt = old.attempts.max(1) as u32;
                    let next = old.next_attempt_at.as_ref().map_or(p.now, |t| t.0);
                    if start && p.now >= next {
                        if let Some(new_job) = p.dispatch(system, step, attempt + 1) {
                            let now = p.now;
                            p.put_entry(
                                SystemProgress {
                                    phase: SystemPhase::Running,
                                    job_name: Some(new_job),
                                    attempts: attempt as i32 + 1,
                                    ..base
                                },
                                now,
                            );
                            return Progress::Running;
                        }
                    } else if start {
                        p.wake_at(next);
                    }
                    p.put_entry(old, at);
                    Progress::Retrying
                }
            }
        }
    }
}

fn slot_message(p: &Planner, system: &str) -> String {
    let limit = p.system(system).map_or(0, |s| s.concurrency);
    format!("waiting for a free Job slot on {system} (at most {limit} Jobs at once)")
}

/// The worker's own words on a failed Job (its manifest's message: by contract never
/// identifiers or row values), shortened, as `: …` to follow the reason.
fn worker_says(p: &Planner, job: &str) -> String {
    const MAX: usize = 300;
    let Some(message) = p
        .input
        .children
        .jobs
        .iter()
        .find(|j| j.name == job)
        .and_then(|j| j.result.as_ref())
        .map(|m| m.message.trim())
        .filter(|m| !m.is_empty())
    else {
        return String::new();
    };
    let mut cut = message.len().min(MAX);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let ellipsis = if cut < message.len() { "…" } else { "" };
    format!(": {}{ellipsis}", &message[..cut])
}

fn exhausted_message(
    system: &str,
    step: JobStep,
    attempts: u32,
    reason: &str,
    job: &str,
) -> String {
    let check = match step {
        JobStep::ThirdPartyPurge => {
            "check the processor's API endpoint and credentials in the DataSystem"
        }
        _ => "check the DataSystem's connection and data map",
    };
    format!(
        "{} on {system} failed {attempts} times (last: {reason}); {check} and the logs of Job {job}, then create a new request to try again",
        step.describe()
    )
}
