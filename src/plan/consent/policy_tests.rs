//! The ConsentPolicy planner with an injected clock: coverage, validation, the sweep's
//! schedule (cron in a time zone, missed runs, no overlap), results and history.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::api::{
    ConsentPolicyStatus,
    conditions::{HasConditions, types},
    datamap::DataMap,
    datasystem::{ConnectorType, SqlDriver},
};

use super::policy::{
    HISTORY, PolicyAction, PolicyInput, PolicySystem, RunState, SweepJob, SweepReport, plan,
    sweep_job_name,
};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn crm() -> PolicySystem {
    let map: DataMap = serde_json::from_value(json!({"tables": [
        {"name": "crm.contacts", "identity": [{"column": "email", "identifier": "email"}],
         "relations": [{"table": "crm.consents", "foreignKey": "contact_id"}]},
        {"name": "crm.consents", "consent": {
            "purposeColumn": "purpose", "givenAtColumn": "given_at",
            "withdrawnAtColumn": "withdrawn_at", "expiredAtColumn": "expired_at"}}
    ]}))
    .unwrap();
    PolicySystem {
        name: "crm".into(),
        labels: [("tier".to_string(), "first-party".to_string())].into(),
        connector: ConnectorType::Sql,
        driver: Some(SqlDriver::Postgres),
        data_map: Some(map),
    }
}

fn mailer() -> PolicySystem {
    PolicySystem {
        name: "mailer".into(),
        labels: [("tier".to_string(), "third-party".to_string())].into(),
        connector: ConnectorType::Http,
        driver: None,
        data_map: None,
    }
}

fn input(sweep: serde_json::Value) -> PolicyInput {
    let mut spec = json!({
        "purposes": [
            {"name": "marketing-email", "groups": ["marketing"], "lawfulBasis": "Consent",
             "reconsentAfter": "P2Y",
             "actions": [{"action": "Restrict", "system": "crm"},
                         {"action": "Unsubscribe", "systems": {"matchLabels": {"tier": "third-party"}}}]},
            {"name": "call-recording", "lawfulBasis": "Consent"},
            {"name": "fraud", "lawfulBasis": "LegitimateInterests",
             "actions": [{"action": "Restrict", "system": "crm"}]}
        ]
    });
    if !sweep.is_null() {
        spec["staleConsentSweep"] = sweep;
    }
    PolicyInput {
        name: "consent".into(),
        generation: Some(1),
        created_at: Some(ts("2024-03-01T00:00:00Z")),
        spec: serde_json::from_value(spec).unwrap(),
        status: ConsentPolicyStatus::default(),
        systems: vec![crm(), mailer()],
        jobs: vec![],
        storage: true,
    }
}

fn weekly() -> serde_json::Value {
    json!({"schedule": "0 2 * * 1", "timeZone": "Europe/Berlin"})
}

/// Applies a plan's status (through JSON, like the API) and its Jobs (active).
fn apply(i: &mut PolicyInput, p: &super::policy::PolicyPlan) {
    i.status = serde_json::from_value(serde_json::to_value(&p.status).unwrap()).unwrap();
    for a in &p.actions {
        match a {
            PolicyAction::CreateSweep(r) => i.jobs.push(SweepJob {
                name: r.name.clone(),
                scheduled_at: r.scheduled_at,
                state: RunState::Active,
                report: None,
            }),
            PolicyAction::DeleteJob { name } => i.jobs.retain(|j| &j.name != name),
        }
    }
}

#[test]
fn status_lists_purposes_and_the_systems_they_reach() {
    let i = input(serde_json::Value::Null);
    let p = plan(&i, ts("2024-03-01T00:00:10Z"));
    assert_eq!(p.status.purpose_count, Some(3));
    let systems = |n: &str| {
        p.status
            .purposes
            .iter()
            .find(|x| x.name == n)
            .unwrap()
            .systems
            .clone()
    };
    assert_eq!(systems("marketing-email"), ["crm", "mailer"]);
    assert_eq!(
        systems("call-recording"),
        ["crm", "mailer"],
        "no actions: every system"
    );
    assert_eq!(systems("fraud"), ["crm"]);
    assert!(p.status.is_true(types::READY) && p.status.is_true(types::ACCEPTED));
    assert!(p.status_changed && p.actions.is_empty() && p.requeue_after.is_none());
    // A pass over the written status writes nothing.
    let mut i = i;
    apply(&mut i, &p);
    assert!(!plan(&i, ts("2024-03-01T00:05:00Z")).status_changed);
}

#[test]
fn a_missing_system_or_unusable_consent_table_is_a_condition_with_a_reason() {
    let mut i = input(weekly());
    i.systems.retain(|s| s.name != "crm");
    let p = plan(&i, ts("2024-03-01T00:00:10Z"));
    let c = p.status.condition(types::ACCEPTED).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ConsentActionSystemNotFound")
    );
    assert!(c.message.contains("crm"), "{}", c.message);
    assert!(p.actions.is_empty() && p.status.next_sweep.is_none());

    let mut i = input(weekly());
    if let Some(m) = i.systems[0].data_map.as_mut() {
        m.tables[1].consent.as_mut().unwrap().expired_at_column = None;
    }
    let p = plan(&i, ts("2024-03-01T00:00:10Z"));
    let c = p.status.condition(types::READY).unwrap();
    assert_eq!(c.reason, "ConsentRecordsInvalid");
    assert!(c.message.contains("expiredAtColumn"), "{}", c.message);

    let mut i = input(json!({"schedule": "@daily", "timeZone": "Mars/Olympus"}));
    i.storage = true;
    let p = plan(&i, ts("2024-03-01T00:00:10Z"));
    assert_eq!(
        p.status.condition(types::READY).unwrap().reason,
        "InvalidTimeZone"
    );

    let mut i = input(weekly());
    i.storage = false;
    let p = plan(&i, ts("2024-03-01T00:00:10Z"));
    assert_eq!(
        p.status.condition(types::READY).unwrap().reason,
        "StorageNotConfigured"
    );
}

#[test]
fn sweeps_run_on_schedule_in_their_zone_one_at_a_time() {
    let mut i = input(weekly());
    // Created on Friday 1 March; the first Monday 02:00 Berlin (CET) is 4 March 01:00 UTC.
    let p = plan(&i, ts("2024-03-01T00:00:10Z"));
    assert!(p.actions.is_empty());
    assert_eq!(
        p.status.next_sweep.as_ref().unwrap().0,
        ts("2024-03-04T01:00:00Z")
    );
    assert_eq!(
        p.requeue_after,
        Some(std::time::Duration::from_secs(3 * 86400 + 3600 - 10))
    );
    apply(&mut i, &p);

    let at = ts("2024-03-04T01:00:00Z");
    let p = plan(&i, at);
    let [PolicyAction::CreateSweep(req)] = p.actions.as_slice() else {
        panic!("one sweep: {:?}", p.actions);
    };
    assert_eq!(req.name, sweep_job_name("consent", at));
    assert_eq!(req.scheduled_at, at);
    assert!(!req.dry_run);
    assert_eq!(req.locations.len(), 1);
    assert_eq!(req.locations[0].table, "crm.consents");
    // Only consent-based purposes; reconsentAfter P2Y counts back from the scheduled time.
    let names: Vec<_> = req.purposes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["marketing-email", "call-recording"]);
    assert_eq!(req.purposes[0].cutoff, Some(ts("2022-03-04T01:00:00Z")));
    assert_eq!(req.purposes[1].cutoff, None);
    apply(&mut i, &p);

    // Still running a week later: no second sweep.
    let p = plan(&i, ts("2024-03-11T01:00:00Z"));
    assert!(p.actions.is_empty(), "{:?}", p.actions);

    // It finishes; after summer time starts (31 March) 02:00 Berlin is 00:00 UTC.
    i.jobs[0].state = RunState::Succeeded {
        completed_at: ts("2024-03-11T01:00:30Z"),
    };
    i.jobs[0].report = Some(SweepReport {
        succeeded: true,
        dry_run: false,
        expired: [("marketing-email".to_string(), 7)].into(),
        active: [
            ("marketing-email".to_string(), 493),
            ("call-recording".to_string(), 500),
        ]
        .into(),
        reason: None,
        message: "expired 7".into(),
    });
    let p = plan(&i, ts("2024-03-11T01:00:31Z"));
    // The run missed while the first one ran is made up once, at its scheduled time.
    let [PolicyAction::CreateSweep(req)] = p.actions.as_slice() else {
        panic!("the missed run: {:?}", p.actions);
    };
    assert_eq!(req.scheduled_at, ts("2024-03-11T01:00:00Z"));
    let last = p.status.last_sweep.clone().unwrap();
    assert_eq!(last.expired, 7);
    assert!(last.succeeded);
    let mail = p
        .status
        .purposes
        .iter()
        .find(|x| x.name == "marketing-email")
        .unwrap();
    assert_eq!(mail.active_consents, Some(493));
    apply(&mut i, &p);
    i.jobs[1].state = RunState::Succeeded {
        completed_at: ts("2024-03-11T01:01:00Z"),
    };
    let p = plan(&i, ts("2024-03-30T12:00:00Z"));
    assert_eq!(
        p.status.next_sweep.as_ref().unwrap().0,
        ts("2024-04-01T00:00:00Z")
    );
}

#[test]
fn downtime_makes_up_only_the_latest_run_and_history_is_bounded() {
    let mut i = input(json!({"schedule": "0 3 * * *"}));
    let mut now = ts("2024-03-02T03:00:00Z");
    for day in 0..6 {
        let p = plan(&i, now);
        assert_eq!(
            p.actions
                .iter()
                .filter(|a| matches!(a, PolicyAction::CreateSweep(_)))
                .count(),
            1,
            "day {day}"
        );
        apply(&mut i, &p);
        let last = i.jobs.len() - 1;
        i.jobs[last].state = RunState::Succeeded {
            completed_at: now.checked_add(SignedDuration::from_secs(60)).unwrap(),
        };
        now = now.checked_add(SignedDuration::from_hours(24)).unwrap();
    }
    assert!(i.jobs.len() <= HISTORY + 1, "{} Jobs kept", i.jobs.len());
    // Down for ten days: one sweep, for the latest missed time.
    let later = ts("2024-03-18T05:00:00Z");
    let p = plan(&i, later);
    let sweeps: Vec<_> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            PolicyAction::CreateSweep(r) => Some(r.scheduled_at),
            _ => None,
        })
        .collect();
    assert_eq!(sweeps, [ts("2024-03-18T03:00:00Z")]);
}

#[test]
fn a_failed_sweep_is_reported_and_suspend_stops_scheduling() {
    let mut i = input(json!({"schedule": "@daily", "mode": "DryRun"}));
    let p = plan(&i, ts("2024-03-02T00:00:00Z"));
    let [PolicyAction::CreateSweep(req)] = p.actions.as_slice() else {
        panic!()
    };
    assert!(req.dry_run);
    apply(&mut i, &p);
    i.jobs[0].state = RunState::Failed {
        failed_at: ts("2024-03-02T00:01:00Z"),
        reason: "BackoffLimitExceeded".into(),
    };
    let p = plan(&i, ts("2024-03-02T00:01:01Z"));
    let last = p.status.last_sweep.clone().unwrap();
    assert!(!last.succeeded && last.dry_run);
    assert!(last.message.unwrap().contains("BackoffLimitExceeded"));
    assert!(
        p.status
            .condition(types::READY)
            .unwrap()
            .message
            .contains("failed")
    );

    let mut i = input(json!({"schedule": "@daily", "suspend": true}));
    let p = plan(&i, ts("2024-03-05T00:00:00Z"));
    assert!(p.actions.is_empty() && p.status.next_sweep.is_none());
    assert!(
        p.status
            .condition(types::READY)
            .unwrap()
            .message
            .contains("suspended")
    );
    i.storage = true;
}

#[test]
fn a_lost_task_is_rebuilt_as_planned_and_job_states_are_read() {
    let i = input(weekly());
    let at = ts("2024-03-04T01:00:00Z");
    let p = plan(&i, at);
    let [PolicyAction::CreateSweep(planned)] = p.actions.as_slice() else {
        panic!("{:?}", p.actions)
    };
    let rebuilt = super::policy::sweep_request(&i, &planned.name, at).unwrap();
    assert_eq!(&rebuilt, planned);

    let job = |status: serde_json::Value| -> k8s_openapi::api::batch::v1::Job {
        serde_json::from_value(json!({"metadata": {"name": "j"}, "status": status})).unwrap()
    };
    let now = ts("2024-03-04T02:00:00Z");
    assert_eq!(
        RunState::of(&job(json!({"active": 1})), now),
        RunState::Active
    );
    assert_eq!(
        RunState::of(
            &job(
                json!({"completionTime": "2024-03-04T01:05:00Z", "conditions": [
                {"type": "Complete", "status": "True", "lastTransitionTime": "2024-03-04T01:05:01Z"}]})
            ),
            now
        ),
        RunState::Succeeded {
            completed_at: ts("2024-03-04T01:05:00Z")
        }
    );
    assert_eq!(
        RunState::of(
            &job(json!({"conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                 "lastTransitionTime": "2024-03-04T01:09:00Z"}]})),
            now
        ),
        RunState::Failed {
            failed_at: ts("2024-03-04T01:09:00Z"),
            reason: "DeadlineExceeded".into()
        }
    );
}
