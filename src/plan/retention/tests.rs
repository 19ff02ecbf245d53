//! Scenario tests of the retention planner with an injected clock: a small simulator applies
//! each plan (Jobs created, stopped, pruned; status written) like the controller would.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;
use crate::api::retention::{RuleStatus, RunPhase};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

struct Sim {
    input: RetentionInput,
    now: Timestamp,
    events: Vec<Event>,
    created: Vec<RunRequest>,
    stopped: Vec<String>,
    pruned: Vec<String>,
}

fn crm() -> SystemView {
    SystemView {
        name: "crm".into(),
        labels: BTreeMap::from([("tier".to_string(), "first-party".to_string())]),
        sql: true,
        tables: vec!["crm.calls".into(), "crm.contacts".into()],
    }
}

impl Sim {
    fn new(spec: Value, now: &str) -> Sim {
        Sim {
            input: RetentionInput {
                policy: PolicyState {
                    name: "default".into(),
                    generation: Some(1),
                    spec: serde_json::from_value(spec).unwrap(),
                    status: Default::default(),
                },
                systems: vec![crm()],
                jobs: vec![],
            },
            now: ts(now),
            events: vec![],
            created: vec![],
            stopped: vec![],
            pruned: vec![],
        }
    }

    /// Plans at the current time and applies the plan.
    fn step(&mut self) -> RetentionPlan {
        let plan = plan(&self.input, self.now);
        for e in &plan.effects {
            match e {
                Effect::CreateRun(r) => {
                    self.created.push(r.clone());
                    self.input.jobs.push(RunJob {
                        name: r.name.clone(),
                        rule: r.rule.clone(),
                        system: r.system.clone(),
                        scheduled: r.scheduled,
                        created_at: self.now,
                        state: RunState::Active,
                        deleting: false,
                        report: None,
                    });
                }
                Effect::StopJob { name } => {
                    self.stopped.push(name.clone());
                    self.input.jobs.retain(|j| &j.name != name);
                }
                Effect::PruneJob { name } => {
                    self.pruned.push(name.clone());
                    self.input.jobs.retain(|j| &j.name != name);
                }
                Effect::RecordEvent(ev) => self.events.push(ev.clone()),
            }
        }
        if plan.status_changed {
            self.input.policy.status = plan.status.clone();
        }
        plan
    }

    fn at(&mut self, now: &str) -> RetentionPlan {
        self.now = ts(now);
        self.step()
    }

    fn finish(&mut self, name: &str, ok: bool, matched: i64) {
        let now = self.now;
        let j = self
            .input
            .jobs
            .iter_mut()
            .find(|j| j.name == name)
            .expect("job exists");
        j.state = if ok {
            RunState::Succeeded { completed_at: now }
        } else {
            RunState::Failed {
                reason: "DatabaseUnreachable".into(),
                failed_at: now,
            }
        };
        j.report = Some(RunReport {
            matched,
            affected: if ok { matched } else { 0 },
            held: 0,
            message: format!("deleted {matched} rows"),
        });
    }

    fn rule(&self) -> &RuleStatus {
        &self.input.policy.status.rules[0]
    }

    fn condition(&self, type_: &str) -> (String, String, String) {
        let c = self.input.policy.status.condition(type_).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn active_names(&self) -> Vec<String> {
        self.input
            .jobs
            .iter()
            .filter(|j| j.state == RunState::Active)
            .map(|j| j.name.clone())
            .collect()
    }
}

fn rule(extra: Value) -> Value {
    let mut r = json!({
        "name": "old-calls",
        "table": "crm.calls",
        "ageColumn": "started_at",
        "olderThan": "730d",
        "action": "Purge",
        "schedule": "30 2 * * *",
        "timeZone": "Europe/Berlin"
    });
    if let (Some(r), Some(e)) = (r.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    r
}

#[test]
fn first_run_waits_for_the_next_scheduled_time_then_runs_once() {
    let mut sim = Sim::new(json!({"rules": [rule(json!({}))]}), "2024-03-30T12:00:00Z");
    let p = sim.step();
    assert!(
        sim.created.is_empty(),
        "no catch-up for times before the rule existed"
    );
    // 02:30 does not exist in Berlin on 2024-03-31: the run is at 03:30 CEST.
    assert_eq!(
        sim.rule().next_run.as_ref().unwrap().0,
        ts("2024-03-31T01:30:00Z")
    );
    assert_eq!(
        p.requeue_after,
        Some(std::time::Duration::from_secs(13 * 3600 + 1800))
    );
    assert_eq!(sim.condition("Ready").0, "True");

    sim.at("2024-03-31T01:30:00Z");
    assert_eq!(sim.created.len(), 1);
    let run = sim.created[0].clone();
    assert_eq!(run.name, "default-old-calls-crm-28530810");
    // 730 days before (2024 is a leap year).
    assert_eq!(run.cutoff, ts("2022-04-01T01:30:00Z"));
    assert!(!run.dry_run);
    assert_eq!(sim.rule().active, vec![run.name.clone()]);
    assert_eq!(
        sim.rule().last_run.as_ref().unwrap().0,
        ts("2024-03-31T01:30:00Z")
    );
    assert_eq!(
        sim.rule().next_run.as_ref().unwrap().0,
        ts("2024-04-01T00:30:00Z")
    );

    // Planning again at the same instant (a crash after the Job was created) starts nothing.
    let again = sim.step();
    assert_eq!(sim.created.len(), 1);
    assert!(again.is_noop(), "{again:?}");

    let name = run.name.clone();
    sim.at("2024-03-31T01:31:00Z");
    sim.finish(&name, true, 42);
    sim.step();
    let last = sim.rule().last_result.clone().unwrap();
    assert_eq!(last.phase, RunPhase::Succeeded);
    assert_eq!((last.matched, last.affected), (42, 42));
    assert_eq!(last.job_name.as_deref(), Some(name.as_str()));
    assert!(sim.rule().active.is_empty());
    assert!(
        sim.events
            .iter()
            .any(|e| e.reason == "RetentionRunSucceeded")
    );
    // Nothing changes afterwards: no writes.
    assert!(sim.step().is_noop());
}

#[test]
fn new_york_fall_back_runs_a_fixed_time_once() {
    let spec = json!({"rules": [rule(json!({
        "schedule": "30 1 * * *", "timeZone": "America/New_York"
    }))]});
    let mut sim = Sim::new(spec, "2024-11-02T12:00:00Z");
    sim.step();
    assert_eq!(
        sim.rule().next_run.as_ref().unwrap().0,
        ts("2024-11-03T05:30:00Z") // 01:30 EDT
    );
    sim.at("2024-11-03T05:30:00Z");
    let first = sim.created[0].name.clone();
    sim.finish(&first, true, 1);
    // 01:30 EST, an hour later, is the same wall-clock time: no second run.
    sim.at("2024-11-03T06:30:00Z");
    assert_eq!(sim.created.len(), 1);
    assert_eq!(
        sim.rule().next_run.as_ref().unwrap().0,
        ts("2024-11-04T06:30:00Z")
    );
}

#[test]
fn missed_runs_after_downtime_run_once_within_the_deadline() {
    let spec = json!({"rules": [rule(json!({"schedule": "0 * * * *", "timeZone": "UTC",
        "startingDeadline": "2h"}))]});
    let mut sim = Sim::new(spec, "2024-01-01T00:30:00Z");
    sim.step();
    // Operator down from 00:30 to 05:10: runs at 01..05 were missed; only 05:00 runs.
    sim.at("2024-01-01T05:10:00Z");
    assert_eq!(sim.created.len(), 1, "never a burst");
    assert_eq!(sim.created[0].scheduled, ts("2024-01-01T05:00:00Z"));
    let missed = sim
        .events
        .iter()
        .find(|e| e.reason == "MissedSchedule")
        .unwrap();
    assert!(
        missed.message.contains("4 scheduled run(s)"),
        "{}",
        missed.message
    );
}

#[test]
fn a_run_too_late_for_its_starting_deadline_is_recorded_as_missed() {
    let spec = json!({"rules": [rule(json!({"schedule": "0 3 * * *", "timeZone": "UTC",
        "startingDeadline": "1h"}))]});
    let mut sim = Sim::new(spec, "2024-01-01T00:00:00Z");
    sim.step();
    sim.at("2024-01-01T05:00:00Z");
    assert!(sim.created.is_empty());
    let last = sim.rule().last_result.clone().unwrap();
    assert_eq!(last.phase, RunPhase::Failed);
    assert!(last.message.unwrap().contains("missed"));
    assert_eq!(
        sim.rule().next_run.as_ref().unwrap().0,
        ts("2024-01-02T03:00:00Z")
    );
    assert_eq!(sim.condition("Ready").1, "RunFailed");
    // The next day runs normally.
    sim.at("2024-01-02T03:00:00Z");
    assert_eq!(sim.created.len(), 1);
}

#[test]
fn forbid_waits_for_the_running_job_and_replace_stops_it() {
    let spec = json!({"rules": [rule(json!({"schedule": "0 * * * *", "timeZone": "UTC"}))]});
    let mut sim = Sim::new(spec, "2024-01-01T00:30:00Z");
    sim.step();
    sim.at("2024-01-01T01:00:00Z");
    let first = sim.created[0].name.clone();
    // Still running at 02:00: Forbid (the default) starts nothing.
    sim.at("2024-01-01T02:00:00Z");
    assert_eq!(sim.created.len(), 1);
    assert_eq!(
        sim.rule().next_run.as_ref().unwrap().0,
        ts("2024-01-01T02:00:00Z")
    );
    // It ends at 02:20: the waiting 02:00 run starts then.
    sim.at("2024-01-01T02:20:00Z");
    sim.finish(&first, true, 3);
    sim.step();
    assert_eq!(sim.created.len(), 2);
    assert_eq!(sim.created[1].scheduled, ts("2024-01-01T02:00:00Z"));
    assert_eq!(sim.rule().last_result.as_ref().unwrap().matched, 3);

    let spec = json!({"rules": [rule(json!({"schedule": "0 * * * *", "timeZone": "UTC",
        "concurrencyPolicy": "Replace"}))]});
    let mut sim = Sim::new(spec, "2024-01-01T00:30:00Z");
    sim.step();
    sim.at("2024-01-01T01:00:00Z");
    let first = sim.created[0].name.clone();
    sim.at("2024-01-01T02:00:00Z");
    assert_eq!(sim.stopped, vec![first]);
    assert_eq!(sim.created.len(), 2);
    assert_eq!(sim.active_names(), vec![sim.created[1].name.clone()]);

    let spec = json!({"rules": [rule(json!({"schedule": "0 * * * *", "timeZone": "UTC",
        "concurrencyPolicy": "Allow"}))]});
    let mut sim = Sim::new(spec, "2024-01-01T00:30:00Z");
    sim.step();
    sim.at("2024-01-01T01:00:00Z");
    sim.at("2024-01-01T02:00:00Z");
    assert_eq!(sim.active_names().len(), 2);
    assert_eq!(sim.rule().active.len(), 2);
}

#[test]
fn suspend_stops_scheduling_and_resume_follows_the_deadline_rule() {
    let spec = json!({"rules": [rule(json!({"schedule": "0 3 * * *", "timeZone": "UTC",
        "suspend": true}))]});
    let mut sim = Sim::new(spec, "2024-01-01T00:00:00Z");
    sim.step();
    assert_eq!(sim.rule().next_run, None);
    sim.at("2024-01-05T00:00:00Z");
    assert!(sim.created.is_empty());
    // Resumed (a new generation): no lastRun yet, so the rule waits for its next time.
    sim.input.policy.spec.rules[0].suspend = false;
    sim.input.policy.generation = Some(2);
    sim.step();
    assert!(sim.created.is_empty());
    assert_eq!(
        sim.rule().next_run.as_ref().unwrap().0,
        ts("2024-01-05T03:00:00Z")
    );
}

#[test]
fn history_limits_prune_the_oldest_finished_jobs() {
    let spec = json!({"rules": [rule(json!({"schedule": "0 * * * *", "timeZone": "UTC",
        "successfulRunsHistoryLimit": 2, "failedRunsHistoryLimit": 0}))]});
    let mut sim = Sim::new(spec, "2024-01-01T00:30:00Z");
    sim.step();
    for h in 1..=4 {
        sim.at(&format!("2024-01-01T0{h}:00:00Z"));
        let name = sim.created.last().unwrap().name.clone();
        sim.at(&format!("2024-01-01T0{h}:10:00Z"));
        sim.finish(&name, h != 4, 1);
        sim.step();
        sim.step();
    }
    let names: Vec<String> = sim.created.iter().map(|r| r.name.clone()).collect();
    // Successful 1..3: the oldest (01:00) is pruned; failed 04:00 is pruned (limit 0) only
    // after its result was recorded.
    assert_eq!(sim.pruned, vec![names[0].clone(), names[3].clone()]);
    assert_eq!(
        sim.rule().last_result.as_ref().unwrap().phase,
        RunPhase::Failed
    );
    let left: Vec<&str> = sim.input.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(left, vec![names[1].as_str(), names[2].as_str()]);
}

#[test]
fn table_holds_block_visibly_and_digest_holds_go_to_the_worker() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let spec = json!({
        "rules": [rule(json!({"schedule": "0 3 * * *", "timeZone": "UTC"}))],
        "legalHolds": [
            {"name": "case-117", "reason": "litigation", "tables": ["crm.calls"],
             "until": "2024-01-10T00:00:00Z"},
            {"name": "subject-hold", "reason": "regulator", "subjectDigests": [digest]}
        ]
    });
    let mut sim = Sim::new(spec, "2024-01-01T00:00:00Z");
    sim.step();
    sim.at("2024-01-01T03:00:00Z");
    assert!(sim.created.is_empty());
    let last = sim.rule().last_result.clone().unwrap();
    assert_eq!(last.phase, RunPhase::Blocked);
    let msg = last.message.unwrap();
    assert!(
        msg.contains("case-117 (until 2024-01-10T00:00:00Z)"),
        "{msg}"
    );
    assert!(sim.events.iter().any(|e| e.reason == "RetentionBlocked"));
    let (ready, _, ready_msg) = sim.condition("Ready");
    assert_eq!(ready, "True");
    assert!(ready_msg.contains("blocked by legal holds"), "{ready_msg}");
    assert_eq!(sim.input.policy.status.active_hold_count, Some(2));

    // After the table hold ends, runs go ahead with the subject hold passed on.
    sim.at("2024-01-10T03:00:00Z");
    assert_eq!(sim.created.len(), 1);
    assert_eq!(sim.created[0].held_digests.len(), 1);
    assert_eq!(sim.created[0].held_digests[0].as_str(), digest);
    assert_eq!(sim.input.policy.status.active_holds, vec!["subject-hold"]);
}

#[test]
fn invalid_rules_are_explained_and_do_not_run() {
    let spec = json!({"rules": [
        rule(json!({"name": "bad-table", "table": "crm.nope", "systems": {"matchLabels": {"tier": "first-party"}}})),
        rule(json!({"name": "nowhere", "systems": {"matchLabels": {"tier": "archive"}}})),
        rule(json!({"name": "bad-zone", "timeZone": "Mars/Olympus"})),
        rule(json!({"name": "never", "schedule": "0 0 30 2 *"})),
        rule(json!({"name": "good", "schedule": "0 3 * * *", "timeZone": "UTC"})),
    ]});
    let mut sim = Sim::new(spec, "2024-01-01T00:00:00Z");
    sim.step();
    let (accepted, reason, msg) = sim.condition("Accepted");
    assert_eq!(
        (accepted.as_str(), reason.as_str()),
        ("False", "InvalidRule")
    );
    assert!(
        msg.contains("table crm.nope is not in the data map of DataSystem crm"),
        "{msg}"
    );
    assert!(msg.contains("rule nowhere: no DataSystem"), "{msg}");
    assert!(msg.contains("unknown time zone \"Mars/Olympus\""), "{msg}");
    assert!(msg.contains("never fires"), "{msg}");
    assert_eq!(sim.condition("Ready").1, "InvalidRule");
    sim.at("2024-01-01T03:00:00Z");
    assert_eq!(sim.created.len(), 1);
    assert_eq!(sim.created[0].rule, "good");
}

#[test]
fn an_invalid_policy_runs_nothing() {
    let spec = json!({
        "retry": {"initialBackoff": "2h", "maxBackoff": "1h"},
        "rules": [rule(json!({"schedule": "0 3 * * *", "timeZone": "UTC"}))]
    });
    let mut sim = Sim::new(spec, "2024-01-01T00:00:00Z");
    sim.step();
    sim.at("2024-01-02T03:00:00Z");
    assert!(sim.created.is_empty());
    let (s, reason, msg) = sim.condition("Accepted");
    assert_eq!((s.as_str(), reason.as_str()), ("False", "InvalidPolicy"));
    assert!(msg.contains("retry.initialBackoff"), "{msg}");
}

#[test]
fn dry_run_is_passed_to_the_worker() {
    let spec = json!({"rules": [rule(json!({"schedule": "0 3 * * *", "timeZone": "UTC", "mode": "DryRun"}))]});
    let mut sim = Sim::new(spec, "2024-01-01T00:00:00Z");
    sim.step();
    sim.at("2024-01-01T03:00:00Z");
    assert!(sim.created[0].dry_run);
    let name = sim.created[0].name.clone();
    sim.finish(&name, true, 7);
    sim.step();
    let last = sim.rule().last_result.clone().unwrap();
    assert!(last.dry_run);
    assert_eq!(last.matched, 7);
}

#[test]
fn jobs_of_a_removed_rule_are_pruned_once_finished() {
    let spec = json!({"rules": [rule(json!({"schedule": "0 * * * *", "timeZone": "UTC"}))]});
    let mut sim = Sim::new(spec, "2024-01-01T00:30:00Z");
    sim.step();
    sim.at("2024-01-01T01:00:00Z");
    let name = sim.created[0].name.clone();
    sim.input.policy.spec.rules.clear();
    sim.input.policy.generation = Some(2);
    sim.step();
    assert!(sim.pruned.is_empty(), "a running Job finishes first");
    assert!(sim.input.policy.status.rules.is_empty());
    sim.finish(&name, true, 1);
    sim.step();
    assert_eq!(sim.pruned, vec![name]);
}
