//! The pure planner of a ConsentPolicy: its status (purposes in force, the systems each one
//! reaches, the last sweep, Accepted/Ready) and the scheduled stale-consent sweep.
//!
//! The sweep runs like a CronJob with `concurrencyPolicy: Forbid`: one Job per scheduled
//! time (its name derives from the time, so a plan made again after a crash asks for the same
//! Job), never two at once, and after downtime only the latest missed run is made up. Each run
//! marks consent older than its purpose's `reconsentAfter` as expired in every consent-record
//! table, counted from the scheduled time (not the wall clock), and reports the counts. The
//! last [`HISTORY`] sweep Jobs are kept, older ones deleted.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::{
    ConsentPolicySpec, ConsentPolicyStatus,
    conditions::{HasConditions, Status, types},
    consent::{LawfulBasis, PurposeStatus, SweepResult},
    datamap::{ConsentColumns, DataMap},
    datasystem::{ConnectorType, SqlDriver},
    retention::RuleMode,
};
use crate::plan::{
    jobs::{MAX_NAME, label_value},
    retention::cron::Cron,
    timeline::{floor, fmt, time, until},
};

/// Sweep Jobs kept (successful or failed) before older ones are deleted.
pub const HISTORY: usize = 3;

/// A DataSystem of the namespace, as far as the policy cares.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySystem {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub connector: ConnectorType,
    /// The SQL driver, for SQL connectors.
    pub driver: Option<SqlDriver>,
    pub data_map: Option<DataMap>,
}

/// Where a Job of scheduled work (a sweep, a replay) stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    Active,
    Succeeded {
        completed_at: Timestamp,
    },
    Failed {
        failed_at: Timestamp,
        reason: String,
    },
}

impl RunState {
    /// Reads a Job's terminal conditions (Complete or Failed); anything else is still active.
    pub fn of(job: &k8s_openapi::api::batch::v1::Job, now: Timestamp) -> RunState {
        let status = job.status.as_ref();
        let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
        let terminal = |type_: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == "True")
        };
        if let Some(c) = terminal("Complete") {
            let at = status
                .and_then(|s| s.completion_time.as_ref())
                .or(c.last_transition_time.as_ref())
                .map_or(now, |t| t.0);
            return RunState::Succeeded { completed_at: at };
        }
        if let Some(c) = terminal("Failed") {
            return RunState::Failed {
                failed_at: c.last_transition_time.as_ref().map_or(now, |t| t.0),
                reason: c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
            };
        }
        RunState::Active
    }
}

/// One owned sweep Job.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepJob {
    pub name: String,
    /// The scheduled time the Job runs for (from its annotation).
    pub scheduled_at: Timestamp,
    pub state: RunState,
    /// The worker's report, read from object storage once the Job finished.
    pub report: Option<SweepReport>,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct PolicyInput {
    pub name: String,
    pub generation: Option<i64>,
    pub created_at: Option<Timestamp>,
    pub spec: ConsentPolicySpec,
    pub status: ConsentPolicyStatus,
    /// Every DataSystem of the namespace.
    pub systems: Vec<PolicySystem>,
    pub jobs: Vec<SweepJob>,
    /// Object storage is configured (sweep reports travel through it).
    pub storage: bool,
}

/// A consent-record table to sweep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SweepLocation {
    pub system: String,
    pub table: String,
    pub primary_key: String,
    pub columns: ConsentColumns,
}

/// A purpose as the sweep treats it: consent given before `cutoff` is stale.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SweepPurpose {
    pub name: String,
    /// `None`: consent for the purpose does not expire; only counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<Timestamp>,
}

/// A sweep Job to create.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRequest {
    pub name: String,
    pub scheduled_at: Timestamp,
    pub dry_run: bool,
    pub locations: Vec<SweepLocation>,
    pub purposes: Vec<SweepPurpose>,
}

/// What a sweep worker reports (JSON in object storage). No personal data: counts only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub succeeded: bool,
    pub dry_run: bool,
    /// Consent records expired (or that would be, in a dry run), per purpose, all tables.
    pub expired: BTreeMap<String, i64>,
    /// Consent records in force after the sweep, per purpose, all tables.
    pub active: BTreeMap<String, i64>,
    /// A CamelCase reason on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub message: String,
}

/// An effect of the policy planner.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyAction {
    CreateSweep(SweepRequest),
    DeleteJob { name: String },
}

/// The planner's decision.
#[derive(Clone, Debug)]
pub struct PolicyPlan {
    pub status: ConsentPolicyStatus,
    pub status_changed: bool,
    pub actions: Vec<PolicyAction>,
    pub requeue_after: Option<std::time::Duration>,
}

/// A problem with the policy, as a condition reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// The sweep Job for the run scheduled at `at`: `<policy>-sweep-<unix minutes>`, shortened
/// with a hash when the policy's name is long.
pub fn sweep_job_name(policy: &str, at: Timestamp) -> String {
    let suffix = format!("-sweep-{}", at.as_second() / 60);
    let base = label_value(policy);
    if base.len() + suffix.len() <= MAX_NAME && base == policy {
        return format!("{policy}{suffix}");
    }
    let room = MAX_NAME - suffix.len();
    let head = &base[..base.len().min(room)];
    format!("{}{suffix}", head.trim_end_matches(['-', '.']))
}

/// The systems each purpose's actions reach (name, selector, or every system when neither),
/// and problems for actions naming systems that do not exist.
fn coverage(input: &PolicyInput, problems: &mut Vec<Problem>) -> Vec<PurposeStatus> {
    let all: BTreeSet<&str> = input.systems.iter().map(|s| s.name.as_str()).collect();
    input
        .spec
        .purposes
        .iter()
        .map(|purpose| {
            let mut reached = BTreeSet::new();
            if purpose.actions.is_empty() {
                reached.extend(all.iter().map(|s| s.to_string()));
            }
            for action in &purpose.actions {
                match (&action.system, &action.systems) {
                    (Some(name), _) if all.contains(name.as_str()) => {
                        reached.insert(name.clone());
                    }
                    (Some(name), _) => problems.push(Problem {
                        reason: "ConsentActionSystemNotFound",
                        message: format!(
                            "purpose {} has a {:?} action on DataSystem {name}, which does not exist in this namespace",
                            purpose.name, action.action
                        ),
                    }),
                    (None, Some(sel)) => reached.extend(
                        input
                            .systems
                            .iter()
                            .filter(|s| sel.matches(&s.labels))
                            .map(|s| s.name.clone()),
                    ),
                    (None, None) => reached.extend(all.iter().map(|s| s.to_string())),
                }
            }
            let active = input
                .status
                .purposes
                .iter()
                .find(|p| p.name == purpose.name)
                .and_then(|p| p.active_consents);
            PurposeStatus {
                name: purpose.name.clone(),
                systems: reached.into_iter().collect(),
                active_consents: active,
            }
        })
        .collect()
}

/// The consent-record tables: the listed ones, or every table whose data map declares
/// consent columns. Each must be a PostgreSQL table with consent columns, and with an
/// expiredAtColumn when the sweep enforces.
fn locations(
    input: &PolicyInput,
    enforce: bool,
    problems: &mut Vec<Problem>,
) -> Vec<SweepLocation> {
    let mut out = Vec::new();
    let listed = &input.spec.consent_records;
    let wanted: Vec<(String, String)> = if listed.is_empty() {
        input
            .systems
            .iter()
            .flat_map(|s| {
                s.data_map
                    .iter()
                    .flat_map(|m| m.tables.iter())
                    .filter(|t| t.consent.is_some())
                    .map(|t| (s.name.clone(), t.name.clone()))
            })
            .collect()
    } else {
        listed
            .iter()
            .map(|l| (l.system.clone(), l.table.clone()))
            .collect()
    };
    for (system, table) in wanted {
        let mut bad = |message: String| {
            problems.push(Problem {
                reason: "ConsentRecordsInvalid",
                message,
            })
        };
        let Some(s) = input.systems.iter().find(|s| s.name == system) else {
            bad(format!(
                "consentRecords names DataSystem {system}, which does not exist in this namespace"
            ));
            continue;
        };
        let Some(t) = s.data_map.as_ref().and_then(|m| m.table(&table)) else {
            bad(format!(
                "consentRecords names table {table}, which DataSystem {system}'s data map does not declare"
            ));
            continue;
        };
        let Some(columns) = &t.consent else {
            bad(format!(
                "table {table} of DataSystem {system} declares no consent columns (dataMap.tables[].consent)"
            ));
            continue;
        };
        if s.connector != ConnectorType::Sql || s.driver != Some(SqlDriver::Postgres) {
            bad(format!(
                "table {table} of DataSystem {system}: the stale-consent sweep supports PostgreSQL systems only"
            ));
            continue;
        }
        if enforce && columns.expired_at_column.is_none() {
            bad(format!(
                "table {table} of DataSystem {system} has no consent.expiredAtColumn: the sweep needs one to mark consent expired (or set the sweep's mode to DryRun)"
            ));
            continue;
        }
        out.push(SweepLocation {
            system,
            table,
            primary_key: t.primary_key.clone(),
            columns: columns.clone(),
        });
    }
    out
}

/// Consent-based purposes with their cutoffs for a run at `at`.
fn sweep_purposes(spec: &ConsentPolicySpec, at: Timestamp) -> Vec<SweepPurpose> {
    spec.purposes
        .iter()
        .filter(|p| p.lawful_basis == LawfulBasis::Consent)
        .map(|p| SweepPurpose {
            name: p.name.clone(),
            cutoff: p
                .reconsent_after
                .as_ref()
                .map(|d| floor(d.before(at).unwrap_or(Timestamp::MIN))),
        })
        .collect()
}

/// The result of a finished Job, as status shows it.
fn result_of(job: &SweepJob, dry_run: bool) -> Option<SweepResult> {
    let (completed_at, succeeded, message, expired) = match (&job.state, &job.report) {
        (RunState::Active, _) => return None,
        (RunState::Succeeded { completed_at }, Some(r)) => (
            *completed_at,
            r.succeeded,
            r.message.clone(),
            r.expired.values().sum(),
        ),
        (RunState::Succeeded { completed_at }, None) => (
            *completed_at,
            false,
            "the sweep finished but its report is missing from object storage".to_string(),
            0,
        ),
        (RunState::Failed { failed_at, reason }, report) => (
            *failed_at,
            false,
            report.as_ref().map_or_else(
                || {
                    format!(
                        "the sweep Job failed ({}); see its Pod's log",
                        crate::plan::jobs::sanitise_reason(reason)
                    )
                },
                |r| r.message.clone(),
            ),
            0,
        ),
    };
    Some(SweepResult {
        job_name: Some(job.name.clone()),
        started_at: Some(time(job.scheduled_at)),
        completed_at: Some(time(completed_at)),
        dry_run: job.report.as_ref().map_or(dry_run, |r| r.dry_run),
        expired,
        succeeded,
        message: Some(message),
    })
}

/// The request for the sweep Job `name` scheduled at `at`, as [`plan`] made it: to give a
/// Job whose task Secret was lost (the controller stopped between the two writes) its task
/// again. `None` when the policy no longer has a valid sweep.
pub fn sweep_request(input: &PolicyInput, name: &str, at: Timestamp) -> Option<SweepRequest> {
    let sweep = input.spec.stale_consent_sweep.as_ref()?;
    let enforce = sweep.mode == RuleMode::Enforce;
    let mut problems = Vec::new();
    let locations = locations(input, enforce, &mut problems);
    if !problems.is_empty() || locations.is_empty() {
        return None;
    }
    Some(SweepRequest {
        name: name.to_string(),
        scheduled_at: at,
        dry_run: !enforce,
        locations,
        purposes: sweep_purposes(&input.spec, at),
    })
}

/// Plans one reconcile of a ConsentPolicy at `now`. Pure.
pub fn plan(input: &PolicyInput, now: Timestamp) -> PolicyPlan {
    let stamp = floor(now);
    let mut status = input.status.clone();
    let mut problems = Vec::new();
    let mut actions = Vec::new();
    let mut wake: Option<Timestamp> = None;

    let mut purposes = coverage(input, &mut problems);
    let sweep = input.spec.stale_consent_sweep.as_ref();
    let enforce = sweep.is_some_and(|s| s.mode == RuleMode::Enforce);
    let locations = match sweep {
        Some(_) => locations(input, enforce, &mut problems),
        None => Vec::new(),
    };
    if sweep.is_some() && locations.is_empty() && problems.is_empty() {
        problems.push(Problem {
            reason: "NoConsentRecords",
            message: "the stale-consent sweep has no table to work on: list consentRecords, or declare consent columns in a DataSystem's data map".into(),
        });
    }
    let zone = match sweep.map(|s| s.time_zone.resolve()) {
        Some(Err(e)) => {
            problems.push(Problem {
                reason: "InvalidTimeZone",
                message: e,
            });
            None
        }
        Some(Ok(z)) => Some(z),
        None => None,
    };
    if sweep.is_some() && !input.storage {
        problems.push(Problem {
            reason: "StorageNotConfigured",
            message: "the stale-consent sweep reports through object storage, which the operator is not configured with (--storage-url)".into(),
        });
    }

    // The latest finished run, recorded once.
    let mut jobs: Vec<&SweepJob> = input.jobs.iter().collect();
    jobs.sort_by_key(|j| j.scheduled_at);
    if let Some(result) = jobs
        .iter()
        .rev()
        .find_map(|j| result_of(j, !enforce).map(|r| (j, r)))
    {
        let (job, result) = result;
        let recorded = status
            .last_sweep
            .as_ref()
            .and_then(|r| r.job_name.as_deref())
            == Some(job.name.as_str());
        if !recorded || status.last_sweep.as_ref() != Some(&result) {
            status.last_sweep = Some(result);
        }
        if let Some(report) = job.report.as_ref().filter(|r| r.succeeded) {
            for p in &mut purposes {
                p.active_consents = Some(report.active.get(&p.name).copied().unwrap_or(0));
            }
        }
    }
    status.purposes = purposes;
    status.purpose_count = Some(input.spec.purposes.len() as i32);

    // Scheduling.
    status.next_sweep = None;
    if let (Some(sweep), Some(zone)) = (sweep, zone.as_ref())
        && !sweep.suspend
        && problems.is_empty()
    {
        let last = jobs.last().map(|j| j.scheduled_at);
        let since = last
            .or(status
                .last_sweep
                .as_ref()
                .and_then(|r| r.started_at.as_ref().map(|t| t.0)))
            .or(input.created_at)
            .unwrap_or(stamp);
        let running = jobs.iter().any(|j| j.state == RunState::Active);
        match Cron::parse(&sweep.schedule) {
            Err(e) => problems.push(Problem {
                reason: "InvalidSchedule",
                message: e,
            }),
            Ok(cron) => {
                // Only the latest run missed since the last one is made up.
                let due = cron.prev(now, zone).filter(|at| *at > since);
                if let Some(at) = due
                    && !running
                {
                    let name = sweep_job_name(&input.name, at);
                    if !input.jobs.iter().any(|j| j.name == name) {
                        actions.push(PolicyAction::CreateSweep(SweepRequest {
                            name,
                            scheduled_at: at,
                            dry_run: !enforce,
                            locations: locations.clone(),
                            purposes: sweep_purposes(&input.spec, at),
                        }));
                    }
                }
                // A run due while another runs waits for it (its end wakes the policy).
                match cron.next(now, zone) {
                    Some(next) => {
                        status.next_sweep = Some(time(next));
                        wake = Some(next);
                    }
                    None => problems.push(Problem {
                        reason: "InvalidSchedule",
                        message: format!("schedule {} never fires", sweep.schedule),
                    }),
                }
            }
        }
    }

    // History: keep the latest finished Jobs.
    let finished: Vec<&&SweepJob> = jobs
        .iter()
        .filter(|j| j.state != RunState::Active)
        .collect();
    if finished.len() > HISTORY {
        for j in &finished[..finished.len() - HISTORY] {
            actions.push(PolicyAction::DeleteJob {
                name: j.name.clone(),
            });
        }
    }

    // Conditions.
    let generation = input.generation;
    if let Some(first) = problems.first() {
        let message = problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        status.set_condition(
            types::ACCEPTED,
            Status::False,
            first.reason,
            &message,
            generation,
            stamp,
        );
        status.set_condition(
            types::READY,
            Status::False,
            first.reason,
            &message,
            generation,
            stamp,
        );
    } else {
        let n = input.spec.purposes.len();
        let covered: BTreeSet<&str> = status
            .purposes
            .iter()
            .flat_map(|p| p.systems.iter().map(String::as_str))
            .collect();
        status.set_condition(
            types::ACCEPTED,
            Status::True,
            "Accepted",
            &format!(
                "{n} purpose(s); actions reach {} DataSystem(s)",
                covered.len()
            ),
            generation,
            stamp,
        );
        let mut msg = format!("{n} purpose(s) in force");
        match (&status.next_sweep, sweep) {
            (Some(t), _) => msg.push_str(&format!("; next stale-consent sweep at {}", fmt(t.0))),
            (None, Some(s)) if s.suspend => msg.push_str("; the stale-consent sweep is suspended"),
            _ => {}
        }
        if let Some(last) = status.last_sweep.as_ref().filter(|l| !l.succeeded) {
            msg.push_str(&format!(
                "; the last sweep failed: {}",
                last.message.as_deref().unwrap_or("see the sweep Job")
            ));
        }
        status.set_condition(
            types::READY,
            Status::True,
            "InForce",
            &msg,
            generation,
            stamp,
        );
    }
    status.observed_generation = generation;
    for c in &mut status.conditions {
        c.observed_generation = generation;
    }
    let status_changed = status != input.status;
    PolicyPlan {
        status,
        status_changed,
        actions,
        requeue_after: wake.map(|w| until(now, w)),
    }
}
