//! One rule's pass: validate it against the DataSystems, record the last run's result, prune
//! history, and start the run that is due (or record it as missed or blocked).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp, tz::TimeZone};

use crate::api::{
    SubjectDigest,
    retention::{ConcurrencyPolicy, RetentionRule, RuleMode, RuleStatus, RunPhase, RunResult},
};
use crate::plan::jobs::sanitise_reason;
use crate::plan::model::{Event, EventType};
use crate::plan::timeline::{self, fmt};

use super::{
    Effect, RetentionInput, RunJob, RunRequest, RunState, SystemView, cron::Cron, run_name,
};

/// Most missed times counted for a message.
const MISSED_CAP: usize = 100;

pub(super) struct RuleContext<'a> {
    pub input: &'a RetentionInput,
    pub rule: &'a RetentionRule,
    pub now: Timestamp,
    /// False when the policy itself is invalid: nothing new starts.
    pub runnable: bool,
}

/// What all rules decided, collected across the pass.
#[derive(Default)]
pub(super) struct Outcome {
    pub before: Vec<Effect>,
    pub after: Vec<Effect>,
    pub events: Vec<Event>,
    pub wakeups: Vec<Timestamp>,
}

pub(super) struct RuleResult {
    pub status: RuleStatus,
    pub problems: Vec<String>,
}

pub(super) fn plan_rule(ctx: &RuleContext, out: &mut Outcome) -> RuleResult {
    let rule = ctx.rule;
    let now = ctx.now;
    let policy = &ctx.input.policy;
    let old = policy.status.rules.iter().find(|r| r.name == rule.name);
    let mut st = old.cloned().unwrap_or_else(|| RuleStatus {
        name: rule.name.clone(),
        ..Default::default()
    });
    let jobs: Vec<&RunJob> = ctx
        .input
        .jobs
        .iter()
        .filter(|j| j.rule == rule.name)
        .collect();
    let mut active: Vec<&RunJob> = jobs
        .iter()
        .filter(|j| j.state == RunState::Active && !j.deleting)
        .copied()
        .collect();
    active.sort_by(|a, b| a.name.cmp(&b.name));
    st.active = active.iter().map(|j| j.name.clone()).collect();

    let mut problems = Vec::new();
    let targets = targets(ctx, &mut problems);
    let schedule = Cron::parse(&rule.schedule)
        .and_then(|c| rule.time_zone.resolve().map(|tz| (c, tz)))
        .map_err(|e| problems.push(e))
        .ok();

    record_result(ctx, &mut st, &jobs, out);
    prune(ctx, old, &jobs, out);

    let Some((cron, tz)) = schedule else {
        st.next_run = None;
        return RuleResult {
            status: st,
            problems,
        };
    };
    let same_generation = policy.status.observed_generation == policy.generation;
    let anchor = match (old.and_then(|o| o.next_run.as_ref()), st.last_run.as_ref()) {
        (Some(next), _) if same_generation => Some(next.0),
        (_, Some(last)) => cron.next(last.0, &tz),
        _ => cron.next(now, &tz),
    };
    let Some(anchor) = anchor else {
        problems.push(format!(
            "schedule {:?} never fires (e.g. 30 February); fix the day and month fields",
            rule.schedule.as_str()
        ));
        st.next_run = None;
        return RuleResult {
            status: st,
            problems,
        };
    };
    if !problems.is_empty() || !ctx.runnable || rule.suspend || targets.is_empty() {
        st.next_run = None;
        return RuleResult {
            status: st,
            problems,
        };
    }
    if anchor > now {
        st.next_run = Some(timeline::time(anchor));
        out.wake(anchor, now);
        return RuleResult {
            status: st,
            problems,
        };
    }

    // A run is due: the most recent scheduled time; earlier ones since the anchor are missed.
    let scheduled = cron
        .prev(now, &tz)
        .filter(|s| *s >= anchor)
        .unwrap_or(anchor);
    let deadline = rule
        .starting_deadline
        .as_ref()
        .map(|d| timeline::add(d, scheduled));
    if let Some(limit) = deadline
        && now > limit
    {
        missed(ctx, &mut st, scheduled, &cron, &tz, out);
        return RuleResult {
            status: st,
            problems,
        };
    }
    if !active.is_empty() {
        match rule.concurrency_policy {
            ConcurrencyPolicy::Forbid => {
                // Waits for the running Job; its end wakes the policy.
                st.next_run = Some(timeline::time(scheduled));
                if let Some(limit) = deadline {
                    out.wake(limit + SignedDuration::from_secs(1), now);
                }
                return RuleResult {
                    status: st,
                    problems,
                };
            }
            ConcurrencyPolicy::Replace => {
                for j in &active {
                    out.before.push(Effect::StopJob {
                        name: j.name.clone(),
                    });
                }
                out.events.push(Event {
                    type_: EventType::Normal,
                    reason: "RetentionRunReplaced".into(),
                    message: format!(
                        "rule {}: stopped {} to start the run scheduled at {} (concurrencyPolicy Replace)",
                        rule.name,
                        st.active.join(", "),
                        fmt(scheduled)
                    ),
                });
                st.active.clear();
            }
            ConcurrencyPolicy::Allow => {}
        }
    }

    let earlier = cron.count(anchor, scheduled, &tz, MISSED_CAP);
    if earlier > 0 {
        out.events.push(Event {
            type_: EventType::Warning,
            reason: "MissedSchedule".into(),
            message: format!(
                "rule {}: {}{} scheduled run(s) before {} were missed (operator down or suspended); only the most recent runs",
                rule.name,
                if earlier >= MISSED_CAP { "at least " } else { "" },
                earlier,
                fmt(scheduled)
            ),
        });
    }
    start(ctx, &mut st, &targets, &jobs, scheduled, out);
    match cron.next(now, &tz) {
        Some(next) => {
            st.next_run = Some(timeline::time(next));
            out.wake(next, now);
        }
        None => st.next_run = None,
    }
    RuleResult {
        status: st,
        problems,
    }
}

/// The systems the rule runs on, with problems for those it cannot.
fn targets<'a>(ctx: &RuleContext<'a>, problems: &mut Vec<String>) -> Vec<&'a SystemView> {
    let rule = ctx.rule;
    let Some(table) = rule.table.as_deref() else {
        problems.push(
            "prefix rules (object storage) are not supported yet; use a table rule on an SQL system"
                .into(),
        );
        return Vec::new();
    };
    let explicit = rule.systems.as_ref().is_some_and(|s| !s.is_empty());
    let selected: Vec<&SystemView> = ctx
        .input
        .systems
        .iter()
        .filter(|s| {
            rule.systems
                .as_ref()
                .is_none_or(|sel| sel.matches(&s.labels))
        })
        .collect();
    let mut out = Vec::new();
    for s in &selected {
        let ok = s.sql && s.tables.iter().any(|t| t == table);
        if ok {
            out.push(*s);
        } else if explicit {
            problems.push(if s.sql {
                format!(
                    "table {table} is not in the data map of DataSystem {}; add it there or fix the rule's table",
                    s.name
                )
            } else {
                format!(
                    "DataSystem {} is not an SQL system; table rules only run on SQL systems, narrow spec.rules[].systems",
                    s.name
                )
            });
        }
    }
    if selected.is_empty() {
        problems.push(
            "no DataSystem in this namespace matches the rule's systems selector; create one or fix the selector"
                .into(),
        );
    } else if out.is_empty() && !explicit {
        problems.push(format!(
            "no SQL DataSystem in this namespace has table {table} in its data map; add it to a data map or fix the rule's table"
        ));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// Holds in force on `system` for this rule: (blocking holds with their end, digests to skip).
fn holds(
    ctx: &RuleContext,
    system: &str,
) -> (Vec<(String, Option<Timestamp>)>, Vec<SubjectDigest>) {
    let mut blocking = Vec::new();
    let mut digests = Vec::new();
    let table = ctx.rule.table.as_deref().unwrap_or_default();
    for h in &ctx.input.policy.spec.legal_holds {
        let until = h.until.as_ref().map(|t| t.0);
        if until.is_some_and(|u| u <= ctx.now) {
            continue;
        }
        if !h.systems.is_empty() && !h.systems.iter().any(|s| s == system) {
            continue;
        }
        if !h.tables.is_empty() && !h.tables.iter().any(|t| t == table) {
            continue;
        }
        if h.subject_digests.is_empty() {
            blocking.push((h.name.clone(), until));
        } else {
            digests.extend(h.subject_digests.iter().cloned());
        }
    }
    digests.sort();
    digests.dedup();
    (blocking, digests)
}

fn describe_holds(holds: &[(String, Option<Timestamp>)]) -> String {
    holds
        .iter()
        .map(|(name, until)| match until {
            Some(u) => format!("{name} (until {})", fmt(*u)),
            None => format!("{name} (until removed)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Job request of the run of this rule on `system` scheduled at `scheduled` (also used
/// to re-create the task Secret of a running Job that lost it).
pub(super) fn request(ctx: &RuleContext, system: &str, scheduled: Timestamp) -> RunRequest {
    let rule = ctx.rule;
    let (_, held_digests) = holds(ctx, system);
    RunRequest {
        name: run_name(&ctx.input.policy.name, &rule.name, system, scheduled),
        rule: rule.name.clone(),
        system: system.to_string(),
        scheduled,
        cutoff: cutoff(rule, scheduled),
        dry_run: rule.mode == RuleMode::DryRun,
        held_digests,
    }
}

/// Rows older than this expire in the run scheduled at `scheduled`: a function of the
/// scheduled time, not of when the Job happens to start.
fn cutoff(rule: &RetentionRule, scheduled: Timestamp) -> Timestamp {
    timeline::floor(rule.older_than.before(scheduled).unwrap_or(Timestamp::MIN))
}

/// Starts the run scheduled at `scheduled` on every target not blocked by a hold.
fn start(
    ctx: &RuleContext,
    st: &mut RuleStatus,
    targets: &[&SystemView],
    jobs: &[&RunJob],
    scheduled: Timestamp,
    out: &mut Outcome,
) {
    let rule = ctx.rule;
    let policy = &ctx.input.policy.name;
    let cutoff = cutoff(rule, scheduled);
    let dry_run = rule.mode == RuleMode::DryRun;
    let mut blocked = Vec::new();
    let mut started = Vec::new();
    for s in targets {
        let (blocking, held_digests) = holds(ctx, &s.name);
        if !blocking.is_empty() {
            for (_, until) in &blocking {
                if let Some(u) = until {
                    out.wake(*u, ctx.now);
                }
            }
            blocked.push(format!("{} by {}", s.name, describe_holds(&blocking)));
            continue;
        }
        let name = run_name(policy, &rule.name, &s.name, scheduled);
        if !jobs.iter().any(|j| j.name == name) {
            out.before.push(Effect::CreateRun(RunRequest {
                name: name.clone(),
                rule: rule.name.clone(),
                system: s.name.clone(),
                scheduled,
                cutoff,
                dry_run,
                held_digests,
            }));
        }
        if !st.active.contains(&name) {
            st.active.push(name.clone());
        }
        started.push(format!("{} ({name})", s.name));
    }
    st.active.sort();
    st.last_run = Some(timeline::time(scheduled));
    if started.is_empty() {
        let message = format!(
            "not run: legal hold(s) cover the data: {}",
            blocked.join("; ")
        );
        st.last_result = Some(RunResult {
            job_name: None,
            phase: RunPhase::Blocked,
            dry_run,
            matched: 0,
            affected: 0,
            held: 0,
            started_at: None,
            completed_at: Some(timeline::time(ctx.now)),
            message: Some(message.clone()),
        });
        out.events.push(Event {
            type_: EventType::Warning,
            reason: "RetentionBlocked".into(),
            message: format!(
                "rule {} (run scheduled at {}) {message}",
                rule.name,
                fmt(scheduled)
            ),
        });
        return;
    }
    let mut message = format!(
        "rule {}: run scheduled at {} started on {} (rows older than {}{})",
        rule.name,
        fmt(scheduled),
        started.join(", "),
        fmt(cutoff),
        if dry_run { "; dry run" } else { "" }
    );
    if !blocked.is_empty() {
        message.push_str(&format!("; blocked on {}", blocked.join("; ")));
    }
    out.events.push(Event {
        type_: EventType::Normal,
        reason: "RetentionRunStarted".into(),
        message,
    });
}

/// Records a due run that can no longer start within its startingDeadline.
fn missed(
    ctx: &RuleContext,
    st: &mut RuleStatus,
    scheduled: Timestamp,
    cron: &Cron,
    tz: &TimeZone,
    out: &mut Outcome,
) {
    let rule = ctx.rule;
    let message = format!(
        "missed: the run scheduled at {} could not start within startingDeadline {} (operator down, suspended, or the previous run still running); the rule waits for its next time",
        fmt(scheduled),
        rule.starting_deadline
            .as_ref()
            .map_or_else(String::new, |d| d.to_string())
    );
    st.last_result = Some(RunResult {
        job_name: None,
        phase: RunPhase::Failed,
        dry_run: rule.mode == RuleMode::DryRun,
        matched: 0,
        affected: 0,
        held: 0,
        started_at: None,
        completed_at: Some(timeline::time(ctx.now)),
        message: Some(message.clone()),
    });
    out.events.push(Event {
        type_: EventType::Warning,
        reason: "MissedSchedule".into(),
        message: format!("rule {}: {message}", rule.name),
    });
    match cron.next(ctx.now, tz) {
        Some(next) => {
            st.next_run = Some(timeline::time(next));
            out.wake(next, ctx.now);
        }
        None => st.next_run = None,
    }
}

/// Once every Job of the last run has finished, its result (counts summed over systems).
fn record_result(ctx: &RuleContext, st: &mut RuleStatus, jobs: &[&RunJob], out: &mut Outcome) {
    let Some(last) = st.last_run.as_ref().map(|t| t.0) else {
        return;
    };
    let mut run: Vec<&RunJob> = jobs
        .iter()
        .filter(|j| j.scheduled == last && !j.deleting)
        .copied()
        .collect();
    if run.is_empty() || run.iter().any(|j| j.state == RunState::Active) {
        return;
    }
    run.sort_by(|a, b| a.name.cmp(&b.name));
    if st
        .last_result
        .as_ref()
        .is_some_and(|r| r.job_name.as_ref() == Some(&run[0].name) && r.completed_at.is_some())
    {
        // Recorded already; its Jobs' reports need not be read again.
        return;
    }
    let mut result = RunResult {
        job_name: Some(run[0].name.clone()),
        phase: RunPhase::Succeeded,
        dry_run: ctx.rule.mode == RuleMode::DryRun,
        matched: 0,
        affected: 0,
        held: 0,
        started_at: run.iter().map(|j| j.created_at).min().map(timeline::time),
        completed_at: None,
        message: None,
    };
    let mut parts = Vec::new();
    let mut completed = Timestamp::MIN;
    for j in &run {
        match &j.state {
            RunState::Succeeded { completed_at } => {
                completed = completed.max(*completed_at);
                match &j.report {
                    Some(r) => {
                        result.matched += r.matched;
                        result.affected += r.affected;
                        result.held += r.held;
                        parts.push(format!("{}: {}", j.system, r.message));
                    }
                    None => parts.push(format!(
                        "{}: succeeded; counts unavailable (the worker's report could not be read)",
                        j.system
                    )),
                }
            }
            RunState::Failed { reason, failed_at } => {
                completed = completed.max(*failed_at);
                result.phase = RunPhase::Failed;
                let detail = j
                    .report
                    .as_ref()
                    .map(|r| format!(": {}", r.message))
                    .unwrap_or_default();
                parts.push(format!(
                    "{}: failed ({}){detail}",
                    j.system,
                    sanitise_reason(reason)
                ));
            }
            RunState::Active => {}
        }
    }
    if run.len() > 1 {
        parts.push(format!("{} Jobs", run.len()));
    }
    result.completed_at = Some(timeline::time(completed));
    result.message = Some(parts.join("; "));
    if st.last_result.as_ref() == Some(&result) {
        return;
    }
    if result.phase == RunPhase::Succeeded {
        st.last_successful_run = result.completed_at.clone();
    }
    let (type_, reason) = match result.phase {
        RunPhase::Failed => (EventType::Warning, "RetentionRunFailed"),
        _ => (EventType::Normal, "RetentionRunSucceeded"),
    };
    out.events.push(Event {
        type_,
        reason: reason.into(),
        message: format!(
            "rule {}: run scheduled at {}: matched {}, {} {}, held {}{}",
            ctx.rule.name,
            fmt(last),
            result.matched,
            if result.dry_run {
                "would change"
            } else {
                "changed"
            },
            result.affected,
            result.held,
            if result.phase == RunPhase::Failed {
                format!(" ({})", result.message.as_deref().unwrap_or_default())
            } else {
                String::new()
            }
        ),
    });
    st.last_result = Some(result);
}

/// Deletes finished Jobs beyond the history limits, oldest first, once status holds their
/// result (the status the pass started from).
fn prune(ctx: &RuleContext, old: Option<&RuleStatus>, jobs: &[&RunJob], out: &mut Outcome) {
    let recorded_until = old.and_then(|o| {
        let last = o.last_run.as_ref()?.0;
        let done = o
            .last_result
            .as_ref()
            .is_some_and(|r| r.completed_at.is_some())
            && o.active.is_empty();
        Some((last, done))
    });
    let recorded = |j: &RunJob| match recorded_until {
        Some((last, done)) => j.scheduled < last || (j.scheduled == last && done),
        None => false,
    };
    let mut by_outcome: BTreeMap<bool, Vec<&RunJob>> = BTreeMap::new();
    for j in jobs.iter().filter(|j| !j.deleting) {
        match j.state {
            RunState::Succeeded { .. } => by_outcome.entry(true).or_default().push(j),
            RunState::Failed { .. } => by_outcome.entry(false).or_default().push(j),
            RunState::Active => {}
        }
    }
    for (succeeded, mut list) in by_outcome {
        let limit = if succeeded {
            ctx.rule.successful_runs_history_limit
        } else {
            ctx.rule.failed_runs_history_limit
        };
        let keep = usize::try_from(limit).unwrap_or(0);
        list.sort_by(|a, b| b.scheduled.cmp(&a.scheduled).then(b.name.cmp(&a.name)));
        for j in list.into_iter().skip(keep) {
            if recorded(j) {
                out.after.push(Effect::PruneJob {
                    name: j.name.clone(),
                });
            }
        }
    }
}
