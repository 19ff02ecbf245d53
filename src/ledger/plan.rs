//! The pure planner of a DataSystem's erasure-ledger replay.
//!
//! Setting (or changing) `spec.restoredFromBackup.backupTakenAt` asks for one replay of the
//! ledger after that time. The replay is a Job named after the system, the backup time and
//! the attempt, so planning again never starts a second one; a failed attempt is retried with
//! a doubling backoff up to [`MAX_ATTEMPTS`]. `status.replay` shows the phase, the number of
//! erasures to replay (counted when the replay starts), how many were replayed and the rows
//! erased; the `Replaying` condition is True while it runs. A replay that finished (either
//! way) for the current backup time is not started again.

use jiff::{SignedDuration, Timestamp};

use crate::api::{
    DataSystemStatus,
    conditions::{HasConditions, Status},
    datasystem::{ReplayPhase, ReplayStatus, RestoredFromBackup},
};
use crate::plan::{
    JobStep,
    consent::policy::RunState,
    job_name,
    timeline::{floor, time, until},
};

use super::replay::ReplayReport;

/// Attempts of one replay before it is given up as Failed.
pub const MAX_ATTEMPTS: u32 = 3;
/// Backoff after the first failed attempt; doubles after each further one.
pub const RETRY_BACKOFF: SignedDuration = SignedDuration::from_secs(30);
/// The condition type on the DataSystem.
pub const REPLAYING: &str = "Replaying";

/// One owned replay Job.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayJob {
    pub name: String,
    /// The backup time the Job replays after (from its annotation).
    pub backup_taken_at: Timestamp,
    pub attempt: u32,
    pub state: RunState,
    /// The worker's report, once the Job finished.
    pub report: Option<ReplayReport>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct ReplayInput {
    pub system: String,
    pub generation: Option<i64>,
    pub restored: Option<RestoredFromBackup>,
    pub status: DataSystemStatus,
    pub jobs: Vec<ReplayJob>,
    /// Why a replay cannot run here at all (no ledger configured, not a PostgreSQL system).
    pub blocked: Option<(&'static str, String)>,
    /// Erasures of this system in the ledger after the backup time, when counted (the
    /// controller counts them before the first attempt).
    pub ledger_total: Option<i64>,
}

/// An effect of the replay planner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayAction {
    CreateReplay {
        name: String,
        attempt: u32,
        backup_taken_at: Timestamp,
    },
}

#[derive(Clone, Debug)]
pub struct ReplayPlan {
    pub status: DataSystemStatus,
    pub status_changed: bool,
    pub actions: Vec<ReplayAction>,
    pub requeue_after: Option<std::time::Duration>,
}

/// The Job of `attempt` of the replay after `backup` on `system`.
pub fn replay_job_name(system: &str, backup: Timestamp, attempt: u32) -> String {
    job_name(
        system,
        &backup.as_second().to_string(),
        JobStep::LedgerReplay,
        attempt,
    )
}

fn retry_at(failed_attempt: u32, failed_at: Timestamp) -> Timestamp {
    let wait = RETRY_BACKOFF
        .checked_mul(1 << failed_attempt.saturating_sub(1).min(10))
        .unwrap_or(RETRY_BACKOFF);
    floor(failed_at).checked_add(wait).unwrap_or(Timestamp::MAX)
}

/// Plans one reconcile of a DataSystem's replay at `now`. Pure.
pub fn plan(input: &ReplayInput, now: Timestamp) -> ReplayPlan {
    let stamp = floor(now);
    let mut status = input.status.clone();
    let mut actions = Vec::new();
    let mut wake = None;
    let generation = input.generation;

    let Some(restored) = &input.restored else {
        // Nothing asked; a past replay's result stays visible.
        return done(input, status, actions, None);
    };
    let backup = restored.backup_taken_at.0;
    let previous = status
        .replay
        .clone()
        .filter(|r| r.backup_taken_at.as_ref().map(|t| t.0) == Some(backup));
    let finished = previous.as_ref().is_some_and(|r| {
        matches!(
            r.phase,
            Some(ReplayPhase::Succeeded) | Some(ReplayPhase::Failed)
        )
    });
    let mut replay = previous.unwrap_or_else(|| ReplayStatus {
        backup_taken_at: Some(time(backup)),
        phase: Some(ReplayPhase::Pending),
        ..Default::default()
    });

    let latest = input
        .jobs
        .iter()
        .filter(|j| j.backup_taken_at == backup)
        .max_by_key(|j| j.attempt);
    if finished && latest.is_none_or(|j| j.state != RunState::Active) {
        return done(input, status, actions, None);
    }
    if let Some((reason, message)) = &input.blocked {
        replay.phase = Some(ReplayPhase::Failed);
        replay.message = Some(message.clone());
        status.replay = Some(replay);
        status.set_condition(REPLAYING, Status::False, reason, message, generation, stamp);
        return done(input, status, actions, None);
    }

    let start = |attempt: u32, replay: &mut ReplayStatus, actions: &mut Vec<ReplayAction>| {
        actions.push(ReplayAction::CreateReplay {
            name: replay_job_name(&input.system, backup, attempt),
            attempt,
            backup_taken_at: backup,
        });
        replay.phase = Some(ReplayPhase::Running);
        if replay.started_at.is_none() {
            replay.started_at = Some(time(stamp));
        }
        if let Some(total) = input.ledger_total {
            replay.total = total;
        }
        replay.message = Some(format!(
            "replaying {} erasure(s) recorded after the backup (attempt {attempt} of {MAX_ATTEMPTS})",
            replay.total
        ));
    };
    match latest {
        None => start(1, &mut replay, &mut actions),
        Some(job) => match (&job.state, &job.report) {
            (RunState::Active, _) => {
                replay.phase = Some(ReplayPhase::Running);
            }
            (RunState::Succeeded { completed_at }, Some(r)) if r.succeeded => {
                replay.phase = Some(ReplayPhase::Succeeded);
                replay.total = r.total;
                replay.replayed = r.replayed;
                replay.rows_erased = r.rows_erased;
                replay.completed_at = Some(time(*completed_at));
                replay.message = Some(r.message.clone());
            }
            (state, report) => {
                let failed_at = match state {
                    RunState::Succeeded { completed_at } => *completed_at,
                    RunState::Failed { failed_at, .. } => *failed_at,
                    RunState::Active => stamp,
                };
                let why = match (report, state) {
                    (Some(r), _) => {
                        format!("{}: {}", r.reason.as_deref().unwrap_or("Failed"), r.message)
                    }
                    (None, RunState::Failed { reason, .. }) => format!(
                        "the replay Job failed ({}); see its Pod's log",
                        crate::plan::jobs::sanitise_reason(reason)
                    ),
                    (None, _) => "the replay finished without a report in object storage".into(),
                };
                if job.attempt >= MAX_ATTEMPTS {
                    replay.phase = Some(ReplayPhase::Failed);
                    replay.completed_at = Some(time(failed_at));
                    replay.message = Some(format!(
                        "gave up after {} attempts: {why}; set spec.restoredFromBackup.backupTakenAt again to retry",
                        job.attempt
                    ));
                } else {
                    let at = retry_at(job.attempt, failed_at);
                    if now >= at {
                        start(job.attempt + 1, &mut replay, &mut actions);
                    } else {
                        replay.phase = Some(ReplayPhase::Running);
                        replay.message = Some(format!(
                            "attempt {} failed ({why}); retrying at {}",
                            job.attempt,
                            crate::plan::timeline::fmt(at)
                        ));
                        wake = Some(at);
                    }
                }
            }
        },
    }
    let (cstatus, reason) = match replay.phase {
        Some(ReplayPhase::Succeeded) => (Status::False, "ReplaySucceeded"),
        Some(ReplayPhase::Failed) => (Status::False, "ReplayFailed"),
        _ => (Status::True, "Replaying"),
    };
    let message = replay.message.clone().unwrap_or_default();
    status.replay = Some(replay);
    status.set_condition(REPLAYING, cstatus, reason, &message, generation, stamp);
    done(input, status, actions, wake.map(|w| until(now, w)))
}

fn done(
    input: &ReplayInput,
    status: DataSystemStatus,
    actions: Vec<ReplayAction>,
    requeue_after: Option<std::time::Duration>,
) -> ReplayPlan {
    let status_changed = status != input.status;
    ReplayPlan {
        status,
        status_changed,
        actions,
        requeue_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const BACKUP: &str = "2024-05-01T00:00:00Z";

    fn input() -> ReplayInput {
        ReplayInput {
            system: "crm".into(),
            generation: Some(2),
            restored: Some(RestoredFromBackup {
                backup_taken_at: Time(ts(BACKUP)),
                note: None,
            }),
            status: DataSystemStatus::default(),
            jobs: vec![],
            blocked: None,
            ledger_total: Some(4),
        }
    }

    fn job(attempt: u32, state: RunState, report: Option<ReplayReport>) -> ReplayJob {
        ReplayJob {
            name: replay_job_name("crm", ts(BACKUP), attempt),
            backup_taken_at: ts(BACKUP),
            attempt,
            state,
            report,
        }
    }

    /// Applies a plan like the controller: status written, Jobs created (active).
    fn apply(input: &mut ReplayInput, plan: &ReplayPlan) {
        input.status = serde_json::from_value(serde_json::to_value(&plan.status).unwrap()).unwrap();
        for a in &plan.actions {
            let ReplayAction::CreateReplay { attempt, .. } = a;
            input.jobs.push(job(*attempt, RunState::Active, None));
        }
    }

    #[test]
    fn a_restore_starts_one_replay_and_reports_its_result() {
        let now = ts("2024-06-01T12:00:00Z");
        let mut i = input();
        let p = plan(&i, now);
        assert_eq!(
            p.actions,
            [ReplayAction::CreateReplay {
                name: "crm-1714521600-replay-1".into(),
                attempt: 1,
                backup_taken_at: ts(BACKUP)
            }]
        );
        let r = p.status.replay.clone().unwrap();
        assert_eq!((r.phase, r.total), (Some(ReplayPhase::Running), 4));
        assert!(p.status.is_true(REPLAYING));
        apply(&mut i, &p);
        let again = plan(&i, now);
        assert!(
            again.actions.is_empty() && !again.status_changed,
            "{again:?}"
        );

        i.jobs[0].state = RunState::Succeeded {
            completed_at: ts("2024-06-01T12:05:00Z"),
        };
        i.jobs[0].report = Some(ReplayReport {
            succeeded: true,
            total: 4,
            replayed: 4,
            found: 1,
            rows_erased: 21,
            hashed_in: Some("database".into()),
            reason: None,
            message: "replayed 4".into(),
        });
        let p = plan(&i, ts("2024-06-01T12:05:01Z"));
        let r = p.status.replay.clone().unwrap();
        assert_eq!(r.phase, Some(ReplayPhase::Succeeded));
        assert_eq!((r.replayed, r.rows_erased), (4, 21));
        assert!(!p.status.is_true(REPLAYING));
        apply(&mut i, &p);
        // Finished: nothing more, even when the Job is cleaned up.
        i.jobs.clear();
        let p = plan(&i, ts("2024-06-02T00:00:00Z"));
        assert!(p.actions.is_empty() && !p.status_changed);
    }

    #[test]
    fn failures_retry_with_backoff_then_give_up() {
        let mut i = input();
        let t0 = ts("2024-06-01T12:00:00Z");
        let p = plan(&i, t0);
        apply(&mut i, &p);
        i.jobs[0].state = RunState::Failed {
            failed_at: t0,
            reason: "BackoffLimitExceeded".into(),
        };
        let p = plan(&i, t0);
        assert!(p.actions.is_empty());
        assert_eq!(p.requeue_after, Some(std::time::Duration::from_secs(30)));
        let p = plan(&i, ts("2024-06-01T12:00:30Z"));
        assert_eq!(p.actions.len(), 1);
        apply(&mut i, &p);
        i.jobs[1].state = RunState::Failed {
            failed_at: t0,
            reason: "BackoffLimitExceeded".into(),
        };
        let p = plan(&i, ts("2024-06-01T13:00:00Z"));
        apply(&mut i, &p);
        i.jobs[2].state = RunState::Failed {
            failed_at: t0,
            reason: "BackoffLimitExceeded".into(),
        };
        let p = plan(&i, ts("2024-06-01T14:00:00Z"));
        assert!(p.actions.is_empty());
        let r = p.status.replay.unwrap();
        assert_eq!(r.phase, Some(ReplayPhase::Failed));
        assert!(r.message.unwrap().contains("gave up after 3"));
    }

    #[test]
    fn a_new_backup_time_starts_a_new_replay_and_blocked_systems_say_why() {
        let mut i = input();
        let now = ts("2024-06-01T12:00:00Z");
        let p = plan(&i, now);
        apply(&mut i, &p);
        i.restored = Some(RestoredFromBackup {
            backup_taken_at: Time(ts("2024-05-20T00:00:00Z")),
            note: None,
        });
        let p = plan(&i, now);
        assert_eq!(p.actions.len(), 1);
        assert_eq!(
            p.status.replay.unwrap().backup_taken_at.unwrap().0,
            ts("2024-05-20T00:00:00Z")
        );

        let mut b = input();
        b.blocked = Some(("LedgerNotConfigured", "no ledger key".into()));
        let p = plan(&b, now);
        assert!(p.actions.is_empty());
        assert_eq!(
            p.status.replay.as_ref().unwrap().phase,
            Some(ReplayPhase::Failed)
        );
        assert_eq!(
            p.status.condition(REPLAYING).map(|c| c.reason.as_str()),
            Some("LedgerNotConfigured")
        );
    }
}
