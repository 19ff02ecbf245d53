//! Acceptance, deadlines, extension, duplicates, restarts, deletion, and the other types.

use std::time::Duration as StdDuration;

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    conditions::types,
    request::{RequestPhase, SystemPhase},
};

use super::super::{
    Action, InFlightRequest, JobState, JobStep, LOST_JOB_GRACE, ReferenceProblem,
    conditions::EXTENDED, job_name, plan,
};
use super::*;

fn due_of(regulation: &str, received: &str) -> Timestamp {
    let mut sim = Sim::new("Access", regulation, vec![first_party("crm")], received);
    sim.step();
    sim.time(&sim.status().due_at)
}

#[test]
fn due_dates_follow_the_law_and_month_ends() {
    assert_eq!(
        due_of("GDPR", "2024-01-31T09:00:00Z"),
        ts("2024-02-29T09:00:00Z")
    );
    assert_eq!(
        due_of("GDPR", "2023-01-31T09:00:00Z"),
        ts("2023-02-28T09:00:00Z")
    );
    assert_eq!(
        due_of("UKGDPR", "2023-03-31T23:59:59Z"),
        ts("2023-04-30T23:59:59Z")
    );
    assert_eq!(
        due_of("GDPR", "2023-12-31T12:00:00Z"),
        ts("2024-01-31T12:00:00Z")
    );
    assert_eq!(
        due_of("CCPA", "2024-01-31T09:00:00Z"),
        ts("2024-03-16T09:00:00Z")
    );
    assert_eq!(
        due_of("LGPD", "2024-02-20T09:00:00Z"),
        ts("2024-03-06T09:00:00Z")
    );
}

#[test]
fn received_at_and_policy_overrides_set_the_due_date() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm")],
        "2024-05-10T08:00:00Z",
    );
    sim.input.request.spec.received_at = Some(Time(ts("2024-05-01T09:30:00Z")));
    sim.input.context.policy = serde_json::from_value(serde_json::json!({
        "deadlines": [{"regulation": "GDPR", "respondWithin": "14d"}]
    }))
    .unwrap();
    sim.step();
    assert_eq!(
        sim.time(&sim.status().received_at),
        ts("2024-05-01T09:30:00Z")
    );
    assert_eq!(sim.time(&sim.status().due_at), ts("2024-05-15T09:30:00Z"));
}

#[test]
fn overdue_is_raised_exactly_after_the_due_date_and_stays() {
    let mut sim = Sim::new(
        "Access",
        "LGPD",
        vec![first_party("crm")],
        "2024-02-20T09:00:00Z",
    );
    let p = sim.step();
    let due = ts("2024-03-06T09:00:00Z");
    assert_eq!(
        sim.now + SignedDuration::try_from(p.requeue_after.unwrap()).unwrap(),
        due
    );
    sim.now = due;
    let p = sim.step();
    assert!(!sim.is_true(types::OVERDUE), "at dueAt it is not yet late");
    assert_eq!(p.requeue_after, Some(StdDuration::from_nanos(1)));
    sim.now = due + SignedDuration::from_nanos(1);
    sim.step();
    assert!(sim.is_true(types::OVERDUE));
    assert_eq!(
        sim.events.iter().filter(|e| e.reason == "Overdue").count(),
        1
    );
    assert_eq!(
        sim.events
            .iter()
            .find(|e| e.reason == "Overdue")
            .unwrap()
            .type_,
        super::super::EventType::Warning
    );
    sim.advance(days(2));
    sim.succeed("crm", JobStep::Export);
    sim.step();
    assert!(sim.is_true(types::READY));
    assert!(sim.is_true(types::OVERDUE), "a late answer stays late");
    assert_eq!(
        sim.events.iter().filter(|e| e.reason == "Overdue").count(),
        1
    );
}

#[test]
fn extension_applies_once_and_a_second_is_refused() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-31T09:00:00Z",
    );
    sim.step();
    sim.advance(days(10));
    sim.edit(|s| {
        s.extension = Some(
            serde_json::from_value(serde_json::json!({
                "reason": "many related systems to search", "approvedBy": "dpo"
            }))
            .unwrap(),
        )
    });
    sim.step();
    // 29 February + two months.
    assert_eq!(sim.time(&sim.status().due_at), ts("2024-04-29T09:00:00Z"));
    assert_eq!(
        sim.time(&sim.status().extended_due_at),
        ts("2024-04-29T09:00:00Z")
    );
    assert_eq!(sim.cond(EXTENDED), Some(("True".into(), "Extended".into())));
    assert!(sim.event_reasons().contains(&"Extended"));

    // Planning again never extends again.
    sim.advance(days(1));
    assert!(sim.step().is_noop());

    // A different extension (had validation let it through) is refused.
    sim.edit(|s| {
        s.extension = Some(
            serde_json::from_value(serde_json::json!({
                "reason": "still more systems to search"
            }))
            .unwrap(),
        )
    });
    sim.step();
    assert_eq!(sim.time(&sim.status().due_at), ts("2024-04-29T09:00:00Z"));
    assert_eq!(
        sim.cond(EXTENDED),
        Some(("True".into(), "SecondExtensionRefused".into()))
    );
    assert!(sim.event_reasons().contains(&"SecondExtensionRefused"));
    sim.advance(days(1));
    assert!(sim.step().is_noop());
}

#[test]
fn lgpd_allows_no_extension() {
    let mut sim = Sim::new(
        "Access",
        "LGPD",
        vec![first_party("crm")],
        "2024-02-20T09:00:00Z",
    );
    sim.input.request.spec.extension = Some(
        serde_json::from_value(serde_json::json!({"reason": "many related systems"})).unwrap(),
    );
    sim.step();
    assert_eq!(sim.time(&sim.status().due_at), ts("2024-03-06T09:00:00Z"));
    assert_eq!(sim.status().extended_due_at, None);
    assert_eq!(
        sim.cond(EXTENDED),
        Some(("False".into(), "ExtensionNotAllowed".into()))
    );
    assert!(sim.event_reasons().contains(&"ExtensionNotAllowed"));
}

#[test]
fn a_duplicate_names_the_original_and_does_nothing() {
    let mut sim = Sim::new(
        "Erasure",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.input.context.in_flight = vec![
        InFlightRequest {
            name: "first".into(),
            created_at: ts("2024-01-09T00:00:00Z"),
        },
        InFlightRequest {
            name: "later".into(),
            created_at: ts("2024-01-11T00:00:00Z"),
        },
    ];
    let p = sim.step();
    assert!(Sim::created_in(&p).is_empty());
    assert_eq!(sim.phase(), Some(RequestPhase::Duplicate));
    assert_eq!(sim.status().duplicate_of.as_deref(), Some("first"));
    assert!(sim.is_true(types::DUPLICATE) && sim.is_true(types::STALLED));
    let msg = &sim
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == types::DUPLICATE)
        .unwrap()
        .message;
    assert!(msg.contains("first"));
    // Even once the original is gone, a duplicate stays a duplicate.
    sim.input.context.in_flight.clear();
    sim.advance(days(1));
    assert!(sim.step().is_noop());
}

#[test]
fn the_original_is_not_a_duplicate_of_a_later_request() {
    let mut sim = Sim::new(
        "Erasure",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.input.context.in_flight = vec![InFlightRequest {
        name: "later".into(),
        created_at: ts("2024-01-11T00:00:00Z"),
    }];
    let p = sim.step();
    assert_eq!(Sim::created_in(&p).len(), 1);
    assert!(sim.status().duplicate_of.is_none());
}

#[test]
fn missing_references_wait_with_a_specific_reason() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.input.context.problems = vec![ReferenceProblem::RetentionPolicyNotFound {
        name: "strict".into(),
    }];
    let p = sim.step();
    assert!(Sim::created_in(&p).is_empty());
    assert_eq!(
        sim.cond(types::ACCEPTED),
        Some(("False".into(), "RetentionPolicyNotFound".into()))
    );
    assert!(sim.is_true(types::STALLED));
    assert_eq!(sim.phase(), Some(RequestPhase::Pending));
    assert!(sim.status().received_at.is_some() && sim.status().due_at.is_some());
    assert_eq!(sim.events[0].type_, super::super::EventType::Warning);
    assert_eq!(sim.events[0].reason, "RetentionPolicyNotFound");
    // Only the due date wakes it: the reference appearing does the rest.
    assert_eq!(
        sim.now + SignedDuration::try_from(p.requeue_after.unwrap()).unwrap(),
        ts("2024-02-10T00:00:00Z")
    );

    // Another problem replaces it: a new Event, a new reason.
    sim.input.context.problems = vec![ReferenceProblem::SubjectSecretNotFound {
        name: "jane".into(),
    }];
    sim.step();
    assert_eq!(
        sim.cond(types::ACCEPTED),
        Some(("False".into(), "SubjectSecretNotFound".into()))
    );

    sim.input.context.problems.clear();
    sim.advance(SignedDuration::from_mins(1));
    let p = sim.step();
    assert_eq!(Sim::created_in(&p).len(), 1);
    assert!(sim.is_true(types::ACCEPTED));
    assert_eq!(sim.cond(types::STALLED), None);
}

#[test]
fn an_invalid_policy_or_no_systems_blocks() {
    let mut sim = Sim::new("Access", "GDPR", vec![], "2024-01-10T00:00:00Z");
    sim.step();
    assert_eq!(
        sim.cond(types::ACCEPTED),
        Some(("False".into(), "NoDataSystems".into()))
    );

    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.input.context.policy.retry.initial_backoff = crate::api::Duration::hours(2);
    sim.input.context.policy_name = Some("strict".into());
    sim.step();
    assert_eq!(
        sim.cond(types::ACCEPTED),
        Some(("False".into(), "RetentionPolicyInvalid".into()))
    );
}

#[test]
fn a_system_gone_after_acceptance_stops_new_work() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm"), first_party("tickets")],
        "2024-01-10T00:00:00Z",
    );
    sim.input.context.systems[1].concurrency = 1;
    sim.input.context.systems[1].running_jobs = 1;
    sim.step();
    sim.input.context.systems.retain(|s| s.name != "tickets");
    let p = sim.step();
    assert!(Sim::created_in(&p).is_empty());
    assert_eq!(
        sim.cond(types::ACCEPTED),
        Some(("False".into(), "DataSystemNotFound".into()))
    );
}

#[test]
fn planning_again_with_the_same_children_changes_nothing() {
    let sim = Sim::new(
        "Erasure",
        "GDPR",
        vec![first_party("crm"), third_party("mailer", true)],
        "2024-01-10T00:00:00Z",
    );
    let first = plan(&sim.input, sim.now);
    assert!(first.status_changed);
    // The status is written, the Jobs are not yet in the cache.
    let mut input = sim.input.clone();
    input.request.status = first.status.clone();
    input.request.has_finalizer = true;
    for now in [
        sim.now,
        sim.now + SignedDuration::from_secs(1),
        sim.now + SignedDuration::from_secs(59),
    ] {
        let again = plan(&input, now);
        assert!(again.is_noop(), "at {now}: {:#?}", again.actions);
    }
}

#[test]
fn restart_with_jobs_but_a_lost_status_write_creates_nothing_twice() {
    let mut sim = Sim::new(
        "Erasure",
        "GDPR",
        vec![
            first_party("crm"),
            first_party("tickets"),
            third_party("mailer", true),
        ],
        "2024-01-10T00:00:00Z",
    );
    let t0 = sim.now;
    sim.input.request.has_finalizer = true;
    // A crash after creating two of three Jobs, before the status write.
    let first = plan(&sim.input, sim.now);
    for a in &first.actions {
        if let Action::CreateJob(j) = a
            && j.system != "tickets"
        {
            sim.input.children.jobs.push(super::super::JobInfo {
                name: j.name.clone(),
                system: j.system.clone(),
                step: j.step,
                attempt: j.attempt,
                created_at: t0,
                state: JobState::Active,
                deleting: false,
                result: None,
            });
        }
    }
    sim.advance(SignedDuration::from_secs(7));
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("tickets".to_string(), JobStep::SoftDelete, 1)]
    );
    // The timeline counts from the first Job, not from the restart.
    assert_eq!(sim.time(&sim.status().restore_until), t0 + days(14));
}

#[test]
fn a_job_lost_from_the_cluster_is_created_again_after_a_grace_period() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.step();
    // Someone deletes the Job; the status still says it runs.
    sim.input.children.jobs.clear();
    sim.input.context.systems[0].running_jobs = 0;
    let grace = SignedDuration::try_from(LOST_JOB_GRACE).unwrap();
    sim.advance(grace - SignedDuration::from_secs(1));
    let p = sim.step();
    assert!(p.is_noop());
    assert_eq!(p.requeue_after, Some(StdDuration::from_secs(1)));
    sim.advance(SignedDuration::from_secs(1));
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("crm".to_string(), JobStep::Export, 1)]
    );
    assert_eq!(
        sim.created,
        vec![job_name("req-1", "crm", JobStep::Export, 1); 2]
    );
}

#[test]
fn finished_jobs_deleted_later_are_remembered_by_status() {
    let mut sim = Sim::new(
        "Erasure",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.step();
    sim.succeed("crm", JobStep::SoftDelete);
    sim.step();
    sim.input.children.jobs.clear();
    sim.advance(days(1));
    assert!(sim.step().is_noop());
    sim.run_until(ts("2024-01-24T00:00:00Z"));
    assert_eq!(sim.jobs_of(JobStep::Purge).len(), 1);
    assert!(sim.jobs_of(JobStep::SoftDelete).is_empty());
}

#[test]
fn no_identifier_reaches_status_events_or_actions() {
    // The invariant runs on every pass of every test; this one adds hostile Job reasons.
    let mut sim = Sim::new(
        "Rectification",
        "GDPR",
        vec![first_party("crm"), first_party("tickets")],
        "2024-01-10T00:00:00Z",
    );
    sim.step();
    sim.fail("crm", JobStep::Rectify, "jane.doe@example.com not found");
    let p = sim.step();
    check_no_identifiers(&p);
    let text = serde_json::to_string(&p).unwrap();
    assert!(text.contains("JobFailed"));
    for s in SECRETS {
        assert!(!text.contains(s));
        assert!(!serde_json::to_string(&sim.events).unwrap().contains(s));
        assert!(!serde_json::to_string(sim.status()).unwrap().contains(s));
    }
}

#[test]
fn rectification_runs_where_a_change_applies() {
    let mut sim = Sim::new(
        "Rectification",
        "GDPR",
        vec![first_party("crm"), first_party("tickets")],
        "2024-01-10T00:00:00Z",
    );
    let p = sim.step();
    assert_eq!(
        Sim::created_in(&p),
        vec![("crm".to_string(), JobStep::Rectify, 1)]
    );
    let tickets = sim
        .status()
        .systems
        .iter()
        .find(|s| s.name == "tickets")
        .unwrap();
    assert_eq!(tickets.phase, SystemPhase::Skipped);
    sim.succeed("crm", JobStep::Rectify);
    sim.step();
    assert!(sim.is_true(types::RECTIFIED) && sim.is_true(types::READY));
    assert_eq!(sim.phase(), Some(RequestPhase::Completed));
}

#[test]
fn restriction_objection_and_withdrawal_restrict_every_system() {
    for type_ in ["Restriction", "Objection", "ConsentWithdrawal"] {
        let mut sim = Sim::new(
            type_,
            "CCPA",
            vec![first_party("crm"), third_party("mailer", false)],
            "2024-01-10T00:00:00Z",
        );
        let p = sim.step();
        assert_eq!(
            Sim::created_in(&p),
            vec![
                ("crm".to_string(), JobStep::Restrict, 1),
                ("mailer".to_string(), JobStep::Restrict, 1)
            ]
        );
        sim.succeed("crm", JobStep::Restrict);
        sim.succeed("mailer", JobStep::Restrict);
        sim.step();
        assert!(sim.is_true(types::RESTRICTED), "{type_}");
        let msg = &sim
            .status()
            .conditions
            .iter()
            .find(|c| c.type_ == types::RESTRICTED)
            .unwrap()
            .message;
        assert!(msg.contains("marketing-email, profiling"), "{msg}");
    }
}

#[test]
fn deleting_an_access_request_cleans_up_without_a_status_write() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm"), first_party("tickets")],
        "2024-01-10T00:00:00Z",
    );
    sim.step();
    sim.input.request.deleting = true;
    let p = sim.step();
    assert!(!p.status_changed);
    assert_eq!(
        p.actions,
        vec![
            Action::DeleteJob {
                name: job_name("req-1", "crm", JobStep::Export, 1)
            },
            Action::DeleteJob {
                name: job_name("req-1", "tickets", JobStep::Export, 1)
            },
            Action::DeleteSecret {
                name: job_name("req-1", "crm", JobStep::Export, 1)
            },
            Action::DeleteSecret {
                name: job_name("req-1", "tickets", JobStep::Export, 1)
            },
            Action::RemoveFinalizer,
        ]
    );
    assert!(sim.gone);
}

#[test]
fn a_request_going_away_without_our_finalizer_is_left_alone() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.input.request.deleting = true;
    let p = sim.peek();
    assert!(p.is_noop());
}

#[test]
fn a_finished_request_only_follows_the_generation() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.step();
    sim.succeed("crm", JobStep::Export);
    sim.step();
    assert!(sim.is_true(types::READY));
    sim.edit(|s| s.legal_hold = true);
    let p = sim.step();
    assert!(p.status_changed && p.actions.is_empty());
    assert_eq!(sim.status().observed_generation, Some(2));
    assert!(
        sim.status()
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
}

#[test]
fn long_request_names_give_bounded_job_names() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.input.request.name = format!("support-ticket-{}", "9".repeat(120));
    let p = sim.step();
    let Action::CreateJob(j) = &p.actions[1] else {
        panic!("{:#?}", p.actions)
    };
    assert!(j.name.len() <= 63, "{}", j.name);
    assert!(j.name.ends_with("-export-1"));
}

#[test]
fn a_crash_before_every_status_write_still_converges() {
    let mut sim = Sim::new(
        "Erasure",
        "GDPR",
        vec![
            first_party("crm"),
            first_party("tickets"),
            third_party("mailer", true),
        ],
        "2024-01-10T00:00:00Z",
    );
    let t0 = sim.now;
    // Every pass that wants to write crashes once first; `step` asserts no Job is created twice.
    let pass = |sim: &mut Sim| {
        sim.crash_before_write = true;
        sim.step();
        sim.step()
    };
    pass(&mut sim);
    sim.advance(SignedDuration::from_secs(30));
    sim.succeed("crm", JobStep::SoftDelete);
    sim.succeed("tickets", JobStep::SoftDelete);
    sim.succeed("mailer", JobStep::ThirdPartyPurge);
    pass(&mut sim);
    assert_eq!(sim.time(&sim.status().restore_until), t0 + days(14));
    sim.now = t0 + days(14);
    pass(&mut sim);
    sim.succeed("crm", JobStep::Purge);
    sim.succeed("tickets", JobStep::Purge);
    pass(&mut sim);
    assert_eq!(sim.phase(), Some(RequestPhase::Completed));
    assert_eq!(sim.created.len(), 5);
}

#[test]
fn an_export_assembled_but_not_recorded_is_assembled_again() {
    let mut sim = Sim::new(
        "Access",
        "GDPR",
        vec![first_party("crm")],
        "2024-01-10T00:00:00Z",
    );
    sim.step();
    sim.succeed("crm", JobStep::Export);
    sim.crash_before_write = true;
    sim.step();
    assert_eq!(sim.assembled.len(), 1);
    assert!(!sim.is_true(types::EXPORTED));
    sim.step();
    assert_eq!(sim.assembled.len(), 2);
    assert!(sim.is_true(types::EXPORTED));
    assert_eq!(sim.created.len(), 1);
}

#[test]
fn the_request_state_is_read_from_the_resource() {
    let dsr: crate::api::DataSubjectRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {
            "name": "r", "generation": 3,
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "deletionTimestamp": "2024-01-02T00:00:00Z",
            "finalizers": [super::super::FINALIZER],
        },
        "spec": serde_json::to_value(super::spec("Access", "GDPR")).unwrap(),
    }))
    .unwrap();
    let state = super::super::RequestState::from_resource(&dsr);
    assert_eq!(state.name, "r");
    assert_eq!(state.generation, Some(3));
    assert_eq!(state.created_at, Some(ts("2024-01-01T00:00:00Z")));
    assert!(state.deleting && state.has_finalizer);
    assert_eq!(state.status, Default::default());
}
