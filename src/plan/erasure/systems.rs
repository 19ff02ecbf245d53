//! Moving each system of an erasure along its chain: first-party systems go soft delete →
//! purge (or → restore after a cancel); third-party systems get one purge request.

use jiff::Timestamp;

use crate::api::request::{Step, SystemPhase, SystemProgress};

use super::{
    super::{
        jobs::JobStep,
        planner::Planner,
        step::{Progress, drive},
        timeline::{Hold, fmt, holds},
    },
    Timeline,
};

/// Where one first-party system stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Stage {
    SoftPending,
    SoftFailed,
    /// Soft-deleted; the restore window is open.
    Windowed,
    /// Soft-deleted; the purge is paused by a legal hold.
    Held,
    PurgePending,
    Purged(Timestamp),
    PurgeFailed,
    RestorePending,
    Restored,
    RestoreFailed,
    /// Cancelled before anything was done here.
    Skipped,
}

impl Stage {
    pub fn soft_deleted(self) -> bool {
        matches!(
            self,
            Stage::Windowed
                | Stage::Held
                | Stage::PurgePending
                | Stage::Purged(_)
                | Stage::PurgeFailed
        )
    }

    /// Work remains (running, scheduled, or waiting for a hold).
    pub fn pending(self) -> bool {
        matches!(
            self,
            Stage::SoftPending | Stage::Windowed | Stage::Held | Stage::PurgePending
        )
    }
}

/// Where one third-party system stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Third {
    Pending,
    Held,
    Confirmed,
    Failed,
    /// Cancelled before the purge request was sent.
    Skipped,
}

pub(super) struct FirstParty {
    pub stages: Vec<Stage>,
    /// Holds covering first-party systems (pausing their purge, now or at restoreUntil).
    pub holds: Vec<Hold>,
}

impl FirstParty {
    pub fn any(&self, f: impl Fn(Stage) -> bool) -> bool {
        self.stages.iter().any(|s| f(*s))
    }

    pub fn all(&self, f: impl Fn(Stage) -> bool) -> bool {
        self.stages.iter().all(|s| f(*s))
    }

    pub fn purged_at(&self) -> Vec<Timestamp> {
        self.stages
            .iter()
            .filter_map(|s| match s {
                Stage::Purged(at) => Some(*at),
                _ => None,
            })
            .collect()
    }

    pub fn all_purged(&self) -> bool {
        self.all(|s| matches!(s, Stage::Purged(_)))
    }
}

pub(super) struct ThirdParty {
    pub states: Vec<Third>,
    pub holds: Vec<Hold>,
}

impl ThirdParty {
    pub fn confirmed(&self) -> usize {
        self.states
            .iter()
            .filter(|t| **t == Third::Confirmed)
            .count()
    }

    pub fn all_confirmed(&self) -> bool {
        self.confirmed() == self.states.len()
    }
}

/// All holds, each name once.
pub(super) fn merged(a: &[Hold], b: &[Hold]) -> Vec<Hold> {
    let mut out: Vec<Hold> = Vec::new();
    for h in a.iter().chain(b) {
        if !out.iter().any(|o| o.name == h.name) {
            out.push(h.clone());
        }
    }
    out
}

pub(super) fn hold_names(holds: &[Hold]) -> String {
    holds
        .iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn put(p: &mut Planner, name: &str, third_party: bool, phase: SystemPhase, msg: String) {
    let step = if third_party {
        Step::Purge
    } else {
        Step::SoftDelete
    };
    let old = p.old_entry(name).filter(|o| o.step == Some(step)).cloned();
    let entry = SystemProgress {
        name: name.to_string(),
        third_party,
        step: Some(step),
        phase,
        job_name: old.as_ref().and_then(|o| o.job_name.clone()),
        attempts: old.as_ref().map_or(0, |o| o.attempts),
        next_attempt_at: None,
        records: old.as_ref().and_then(|o| o.records),
        message: Some(msg),
        last_transition_time: None,
    };
    let now = p.now;
    p.put_entry(entry, now);
}

fn names(p: &Planner, third_party: bool) -> Vec<String> {
    p.status
        .systems
        .iter()
        .filter(|e| e.third_party == third_party)
        .map(|e| e.name.clone())
        .collect()
}

pub(super) fn first_party(p: &mut Planner, tl: &Timeline) -> FirstParty {
    let mut out = FirstParty {
        stages: Vec::new(),
        holds: Vec::new(),
    };
    for name in names(p, false) {
        let failures_before = p.failures.len();
        let soft = drive(
            p,
            &name,
            false,
            JobStep::SoftDelete,
            !tl.cancelled,
            &[Step::Purge, Step::Restore],
        );
        let stage = if tl.cancelled {
            // The cancel supersedes the soft delete's own failure: a failed soft delete may
            // have hidden part of the data, so it is restored too.
            p.failures.truncate(failures_before);
            match soft {
                // Let the running soft delete finish, then restore.
                Progress::Running => Stage::RestorePending,
                Progress::NotStarted => {
                    put(
                        p,
                        &name,
                        false,
                        SystemPhase::Skipped,
                        "cancelled before the soft delete started; nothing to restore".into(),
                    );
                    Stage::Skipped
                }
                Progress::Retrying | Progress::Done { .. } | Progress::Failed => {
                    match drive(p, &name, false, JobStep::Restore, true, &[]) {
                        Progress::Done { .. } => Stage::Restored,
                        Progress::Failed => Stage::RestoreFailed,
                        _ => Stage::RestorePending,
                    }
                }
            }
        } else {
            match soft {
                Progress::Done { .. } if tl.window_open => {
                    // Holds matter already: they decide purgeAfter.
                    out.holds = merged(&out.holds, &holds(p, &name));
                    Stage::Windowed
                }
                Progress::Done { .. } => {
                    let h = holds(p, &name);
                    let purge = drive(p, &name, false, JobStep::Purge, h.is_empty(), &[]);
                    match purge {
                        Progress::Done { at } => Stage::Purged(at),
                        Progress::Failed => Stage::PurgeFailed,
                        Progress::NotStarted | Progress::Retrying if !h.is_empty() => {
                            if purge == Progress::NotStarted {
                                let msg = format!(
                                    "soft-deleted; purge paused by legal hold ({}) since the restore window closed at {}",
                                    hold_names(&h),
                                    fmt(tl.restore_until)
                                );
                                p.set_entry_message(&name, Some(msg));
                            }
                            out.holds = merged(&out.holds, &h);
                            Stage::Held
                        }
                        _ => Stage::PurgePending,
                    }
                }
                Progress::Failed => Stage::SoftFailed,
                Progress::NotStarted | Progress::Running | Progress::Retrying => Stage::SoftPending,
            }
        };
        out.stages.push(stage);
    }
    out
}

pub(super) fn third_party(p: &mut Planner, tl: &Timeline) -> ThirdParty {
    let mut out = ThirdParty {
        states: Vec::new(),
        holds: Vec::new(),
    };
    for name in names(p, true) {
        let h = holds(p, &name);
        let start = !tl.cancelled && h.is_empty();
        let progress = drive(p, &name, true, JobStep::ThirdPartyPurge, start, &[]);
        let state = match progress {
            Progress::Done { .. } => Third::Confirmed,
            Progress::Failed => Third::Failed,
            Progress::NotStarted if tl.cancelled => {
                put(
                    p,
                    &name,
                    true,
                    SystemPhase::Skipped,
                    "cancelled before the purge request was sent".into(),
                );
                Third::Skipped
            }
            Progress::NotStarted | Progress::Retrying if !h.is_empty() => {
                if progress == Progress::NotStarted {
                    put(
                        p,
                        &name,
                        true,
                        SystemPhase::Pending,
                        format!("purge request paused by legal hold ({})", hold_names(&h)),
                    );
                }
                out.holds = merged(&out.holds, &h);
                Third::Held
            }
            Progress::NotStarted | Progress::Running | Progress::Retrying => Third::Pending,
        };
        out.states.push(state);
    }
    out
}
