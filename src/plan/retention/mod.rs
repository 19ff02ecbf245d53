//! The pure planner of RetentionPolicies: scheduled retention rules, like CronJobs for data.
//!
//! [`plan`] takes the policy (spec and status), the DataSystems of its namespace, the run Jobs
//! it owns and an injected `now`, and returns the desired status, the effects ([`Effect`]) and
//! when to look again (the earliest next run, a legal hold's end). No I/O, no clock.
//!
//! # Scheduling (Kubernetes CronJob semantics)
//!
//! - A rule's times come from its cron schedule in its time zone ([`cron`], which documents
//!   the daylight-saving rule). `status.rules[].nextRun` is the next time a run is due.
//! - A new rule first runs at its next scheduled time: times before the rule existed are not
//!   "missed".
//! - **Missed runs** (operator down, policy suspended): of all the times missed, only the most
//!   recent runs, once, and only if now is within `startingDeadline` of it; otherwise it is
//!   recorded as missed (lastResult Failed, reason in the message, a Warning Event) and the rule
//!   waits for its next time. Never a burst of catch-up runs.
//! - When the schedule or time zone changes, the next run is computed from `lastRun` under the
//!   new schedule (as the CronJob controller does from `lastScheduleTime`).
//! - **concurrencyPolicy:** Forbid leaves a due run waiting while the previous one runs (it
//!   starts when that one ends, if still within `startingDeadline`; meanwhile `nextRun` shows
//!   the waiting run's time, in the past); Replace deletes the running Jobs and starts the new
//!   run; Allow starts it alongside.
//! - **suspend:** no new runs (running Jobs finish); `nextRun` is cleared. On resume the
//!   missed-run rule applies.
//! - **History:** finished Jobs beyond `successfulRunsHistoryLimit` / `failedRunsHistoryLimit`
//!   are deleted, oldest first, once their result is in status.
//!
//! One run is one Job per DataSystem the rule selects, named after (policy, rule, system,
//! scheduled time) ([`names::run_name`]). Its cutoff is the scheduled time minus `olderThan`,
//! so a Job planned again after a crash deletes exactly what the first would have.
//!
//! # Legal holds
//!
//! A hold in force (no `until`, or `until` in the future) that names no subject digests blocks a
//! rule on every system and table it covers (empty `systems`/`tables` cover all): no Job is
//! created for a blocked system; when every system of a run is blocked, the run's result is
//! Blocked with the holds named, and the planner wakes at the holds' end. Holds naming subject
//! digests do not block a rule: their digests travel to the worker, which leaves those subjects'
//! rows alone and counts them as `held` (see `worker::retention` for how rows are matched).
//!
//! # Conditions
//!
//! - `Accepted`: False with reason `InvalidPolicy` when the spec has impossible combinations
//!   (`RetentionPolicySpec::problems`; then no rule runs), `InvalidRule` when some rules cannot
//!   run (bad schedule or time zone, no DataSystem selected, a table not in the system's data
//!   map, a system that is not SQL); valid rules still run. True/`Valid` otherwise.
//! - `Ready`: True/`Scheduled` when every rule is valid and no last run failed; else False with
//!   `InvalidPolicy`, `InvalidRule` or `RunFailed`.

pub mod cron;
pub mod names;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::api::{
    RetentionPolicy, RetentionPolicySpec, RetentionPolicyStatus, SubjectDigest,
    conditions::{HasConditions, Status, types},
};

use super::model::{Event, EventType};
use super::timeline;

pub use names::run_name;

/// Everything the planner may look at.
#[derive(Clone, Debug)]
pub struct RetentionInput {
    pub policy: PolicyState,
    /// Every DataSystem in the policy's namespace.
    pub systems: Vec<SystemView>,
    /// The run Jobs the policy owns.
    pub jobs: Vec<RunJob>,
}

/// The policy as last read.
#[derive(Clone, Debug)]
pub struct PolicyState {
    pub name: String,
    pub generation: Option<i64>,
    pub spec: RetentionPolicySpec,
    pub status: RetentionPolicyStatus,
}

impl PolicyState {
    pub fn from_resource(p: &RetentionPolicy) -> Self {
        PolicyState {
            name: p.metadata.name.clone().unwrap_or_default(),
            generation: p.metadata.generation,
            spec: p.spec.clone(),
            status: p.status.clone().unwrap_or_default(),
        }
    }
}

/// A DataSystem as far as rules care.
#[derive(Clone, Debug)]
pub struct SystemView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The connector is SQL (table rules run there).
    pub sql: bool,
    /// Tables of its data map.
    pub tables: Vec<String>,
}

/// One run Job, read from its labels, status and result.
#[derive(Clone, Debug)]
pub struct RunJob {
    pub name: String,
    pub rule: String,
    pub system: String,
    pub scheduled: Timestamp,
    pub created_at: Timestamp,
    pub state: RunState,
    pub deleting: bool,
    /// The worker's report, when the Job finished and its report could be read.
    pub report: Option<RunReport>,
}

/// Where a run Job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    Active,
    Succeeded {
        completed_at: Timestamp,
    },
    Failed {
        /// CamelCase reason (Job condition or worker result code); sanitised before use.
        reason: String,
        failed_at: Timestamp,
    },
}

/// What a finished run reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    pub matched: i64,
    pub affected: i64,
    pub held: i64,
    /// What happened, in words (no row values).
    pub message: String,
}

/// The planner's decision.
#[derive(Clone, Debug, Serialize)]
pub struct RetentionPlan {
    pub status: RetentionPolicyStatus,
    /// False when `status` equals the current one: write nothing.
    pub status_changed: bool,
    /// Effects in order: Job deletions and creations, then (after the status write) history
    /// clean-up and Events; see [`RetentionPlan::split`].
    pub effects: Vec<Effect>,
    /// Look again after this long (next run, hold end); `None` for only on change.
    pub requeue_after: Option<std::time::Duration>,
}

impl RetentionPlan {
    /// Effects before the status write (runs to start or replace) and after it (history
    /// clean-up, whose results are then safely recorded, and Events).
    pub fn split(&self) -> (&[Effect], &[Effect]) {
        let at = self
            .effects
            .iter()
            .position(|e| matches!(e, Effect::PruneJob { .. } | Effect::RecordEvent(_)))
            .unwrap_or(self.effects.len());
        self.effects.split_at(at)
    }

    pub fn is_noop(&self) -> bool {
        !self.status_changed && self.effects.is_empty()
    }
}

/// One effect; each is idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Effect {
    /// Create the run Job and its task Secret (`AlreadyExists` of ours counts as created).
    CreateRun(RunRequest),
    /// Delete a running Job (concurrencyPolicy Replace).
    StopJob {
        name: String,
    },
    /// Delete a finished Job beyond the history limits.
    PruneJob {
        name: String,
    },
    RecordEvent(Event),
}

/// A run Job to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunRequest {
    pub name: String,
    pub rule: String,
    pub system: String,
    pub scheduled: Timestamp,
    /// Rows whose age column is before this instant expire.
    pub cutoff: Timestamp,
    pub dry_run: bool,
    /// Subjects the worker must leave alone (legal holds by digest).
    pub held_digests: Vec<SubjectDigest>,
}

/// The request of an existing run Job, e.g. to re-create its task Secret when the operator
/// stopped between creating the Job and the Secret. `None` when its rule is gone.
pub fn run_request(input: &RetentionInput, job: &RunJob, now: Timestamp) -> Option<RunRequest> {
    let rule = input
        .policy
        .spec
        .rules
        .iter()
        .find(|r| r.name == job.rule)?;
    let ctx = rules::RuleContext {
        input,
        rule,
        now,
        runnable: true,
    };
    Some(rules::request(&ctx, &job.system, job.scheduled))
}

/// Plans one reconcile of a RetentionPolicy at `now`. Pure.
pub fn plan(input: &RetentionInput, now: Timestamp) -> RetentionPlan {
    let old = &input.policy.status;
    let generation = input.policy.generation;
    let stamp = timeline::floor(now);
    let spec = &input.policy.spec;
    let mut out = rules::Outcome::default();

    let policy_problems = spec.problems();
    let mut rule_problems = Vec::new();
    let mut statuses = Vec::new();
    for rule in &spec.rules {
        let ctx = rules::RuleContext {
            input,
            rule,
            now,
            runnable: policy_problems.is_empty(),
        };
        let r = rules::plan_rule(&ctx, &mut out);
        rule_problems.extend(
            r.problems
                .iter()
                .map(|p| format!("rule {}: {p}", rule.name)),
        );
        statuses.push(r.status);
    }

    // Finished Jobs of rules that were removed from the spec go; running ones finish first.
    for j in &input.jobs {
        if !j.deleting
            && j.state != RunState::Active
            && !spec.rules.iter().any(|r| r.name == j.rule)
        {
            out.after.push(Effect::PruneJob {
                name: j.name.clone(),
            });
        }
    }

    let mut status = old.clone();
    status.rules = statuses;
    status.observed_generation = generation;
    status.rule_count = Some(spec.rules.len() as i32);
    status.active_holds = spec
        .legal_holds
        .iter()
        .filter(|h| h.until.as_ref().is_none_or(|u| u.0 > now))
        .map(|h| h.name.clone())
        .collect();
    status.active_hold_count = Some(status.active_holds.len() as i32);
    for h in &spec.legal_holds {
        if let Some(u) = &h.until
            && u.0 > now
        {
            out.wake(u.0, now);
        }
    }

    let (accepted, accepted_reason, accepted_msg) = if !policy_problems.is_empty() {
        (
            Status::False,
            "InvalidPolicy",
            format!(
                "{}; no retention rule runs until this is fixed",
                policy_problems.join("; ")
            ),
        )
    } else if !rule_problems.is_empty() {
        (
            Status::False,
            "InvalidRule",
            format!(
                "{}; the other rules run on schedule",
                rule_problems.join("; ")
            ),
        )
    } else {
        (
            Status::True,
            "Valid",
            "the policy and its rules are valid".to_string(),
        )
    };
    status.set_condition(
        types::ACCEPTED,
        accepted,
        accepted_reason,
        &accepted_msg,
        generation,
        stamp,
    );

    let failed: Vec<String> = status
        .rules
        .iter()
        .filter(|r| {
            r.last_result
                .as_ref()
                .is_some_and(|l| l.phase == crate::api::retention::RunPhase::Failed)
        })
        .map(|r| r.name.clone())
        .collect();
    let blocked: Vec<String> = status
        .rules
        .iter()
        .filter(|r| {
            r.last_result
                .as_ref()
                .is_some_and(|l| l.phase == crate::api::retention::RunPhase::Blocked)
        })
        .map(|r| r.name.clone())
        .collect();
    let (ready, ready_reason, ready_msg) = if accepted == Status::False {
        (Status::False, accepted_reason, accepted_msg.clone())
    } else if !failed.is_empty() {
        (
            Status::False,
            "RunFailed",
            format!(
                "the last run of rule(s) {} failed; see status.rules[].lastResult",
                failed.join(", ")
            ),
        )
    } else {
        let mut m = format!("{} rule(s) scheduled", spec.rules.len());
        if !blocked.is_empty() {
            m.push_str(&format!(
                "; rule(s) {} blocked by legal holds (see status.rules[].lastResult)",
                blocked.join(", ")
            ));
        }
        (Status::True, "Scheduled", m)
    };
    status.set_condition(
        types::READY,
        ready,
        ready_reason,
        &ready_msg,
        generation,
        stamp,
    );
    for c in &mut status.conditions {
        c.observed_generation = generation;
    }

    if accepted == Status::False
        && old
            .condition(types::ACCEPTED)
            .is_none_or(|c| c.status != "False" || c.reason != accepted_reason)
    {
        out.event(EventType::Warning, accepted_reason, accepted_msg.clone());
    }

    let status_changed = status != *old;
    let mut effects = out.before;
    effects.extend(out.after);
    effects.extend(out.events.into_iter().map(Effect::RecordEvent));
    RetentionPlan {
        status,
        status_changed,
        effects,
        requeue_after: out.wakeups.iter().min().map(|at| timeline::until(now, *at)),
    }
}

impl rules::Outcome {
    fn event(&mut self, type_: EventType, reason: &str, message: String) {
        self.events.push(Event {
            type_,
            reason: reason.to_string(),
            message,
        });
    }

    fn wake(&mut self, at: Timestamp, now: Timestamp) {
        if at > now {
            self.wakeups.push(at);
        }
    }
}
