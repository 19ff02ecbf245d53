//! A processor that confirms its purge late: workers end awaiting confirmation, the planner
//! reruns the step at the time they suggest (a status check, thanks to the idempotency key),
//! spends no retry budget on it, keeps at most a couple of Jobs around, and the 30-day
//! deadline still raises its warning.

use jiff::{SignedDuration, Timestamp};

use crate::api::{
    conditions::types,
    request::{RequestPhase, SystemPhase},
};

use super::super::{JobStep, conditions::THIRD_PARTIES_OVERDUE, step::DEFAULT_RECHECK};
use super::*;

const T0: &str = "2024-03-01T10:00:00Z";

impl Sim {
    /// The latest Job of `step` on `system` ends awaiting confirmation, asking to be run
    /// again `after` from now (`None`: no suggestion).
    fn awaits(&mut self, system: &str, step: JobStep, after: Option<SignedDuration>) -> String {
        let now = self.now;
        self.finish_job(
            system,
            step,
            JobState::AwaitingConfirmation {
                checked_at: now,
                recheck_at: after.map(|d| now + d),
            },
        )
    }

    /// Plans as the controller would: it reads only the latest attempt's manifest, so an
    /// earlier run that ended awaiting confirmation shows as a completed Job.
    fn pass(&mut self) -> Plan {
        let jobs = &mut self.input.children.jobs;
        let latest: Vec<(String, JobStep, u32)> = jobs
            .iter()
            .map(|j| (j.system.clone(), j.step, j.attempt))
            .collect();
        for j in jobs.iter_mut() {
            let newer = latest
                .iter()
                .any(|(s, st, a)| s == &j.system && *st == j.step && *a > j.attempt);
            if let JobState::AwaitingConfirmation { checked_at, .. } = j.state
                && newer
            {
                j.state = JobState::Succeeded {
                    completed_at: checked_at,
                    records: Some(0),
                };
            }
        }
        self.step()
    }

    fn entry(&self, system: &str) -> &crate::api::request::SystemProgress {
        self.status()
            .systems
            .iter()
            .find(|e| e.name == system)
            .unwrap()
    }

    fn mailer_jobs(&self) -> Vec<&JobInfo> {
        self.input
            .children
            .jobs
            .iter()
            .filter(|j| j.system == "mailer")
            .collect()
    }
}

fn erasure() -> Sim {
    Sim::new(
        "Erasure",
        "GDPR",
        vec![first_party("crm"), third_party("mailer", false)],
        T0,
    )
}

#[test]
fn a_late_confirmation_is_awaited_without_spending_the_budget() {
    let mut sim = erasure();
    let t0 = ts(T0);
    sim.pass();
    sim.advance(SignedDuration::from_mins(15));
    sim.succeed("crm", JobStep::SoftDelete);
    sim.awaits(
        "mailer",
        JobStep::ThirdPartyPurge,
        Some(SignedDuration::from_hours(6)),
    );
    let p = sim.pass();
    // Not a failure, not done: waiting, with the next check scheduled.
    let e = sim.entry("mailer");
    assert_eq!(e.phase, SystemPhase::Waiting);
    let recheck = t0 + SignedDuration::from_mins(15) + SignedDuration::from_hours(6);
    assert_eq!(sim.time(&e.next_attempt_at), recheck);
    assert!(
        e.message
            .as_deref()
            .unwrap()
            .contains("has not confirmed it yet"),
        "{e:?}"
    );
    assert!(!sim.is_true(types::FAILED));
    assert_eq!(
        sim.cond(types::THIRD_PARTIES_PURGED),
        Some(("False".into(), "AwaitingConfirmation".into()))
    );
    assert_eq!(sim.now + requeue(&p), recheck);
    assert!(!sim.event_reasons().contains(&"JobFailed"));

    // Every check for a month comes back "not yet", each asking for six hours.
    let max = sim.input.context.policy.retry.max_attempts as u32;
    let mut checks = 1u32;
    let mut purged = false;
    while sim.now < t0 + days(33) {
        let p = sim.pass();
        // Old checks are cleaned up: at most the last check and the one running.
        assert!(sim.mailer_jobs().len() <= 2, "{:#?}", sim.mailer_jobs());
        let created = Sim::created_in(&p);
        if let Some((_, step, attempt)) = created.iter().find(|c| c.0 == "mailer").cloned() {
            assert_eq!(step, JobStep::ThirdPartyPurge);
            checks += 1;
            assert_eq!(attempt, checks);
            sim.advance(SignedDuration::from_mins(2));
            sim.awaits(
                "mailer",
                JobStep::ThirdPartyPurge,
                Some(SignedDuration::from_hours(6)),
            );
            continue;
        }
        if !purged && !sim.jobs_of(JobStep::Purge).is_empty() {
            sim.advance(SignedDuration::from_mins(5));
            sim.succeed("crm", JobStep::Purge);
            purged = true;
            continue;
        }
        sim.advance(requeue(&p));
    }
    assert!(purged);
    assert!(checks > 100 && checks > max, "{checks} checks");
    assert!(!sim.is_true(types::FAILED));
    assert_ne!(sim.phase(), Some(RequestPhase::Failed));
    // The 30-day deadline passed unconfirmed: the warning is up, and checks go on.
    assert!(sim.is_true(THIRD_PARTIES_OVERDUE));
    assert!(sim.event_reasons().contains(&"ThirdPartiesOverdue"));
    assert_eq!(sim.phase(), Some(RequestPhase::InProgress));

    // The processor confirms at the next check.
    let at = sim.time(&sim.entry("mailer").next_attempt_at);
    sim.now = at;
    let p = sim.pass();
    assert_eq!(Sim::created_in(&p).len(), 1);
    sim.advance(SignedDuration::from_mins(1));
    sim.succeed("mailer", JobStep::ThirdPartyPurge);
    sim.pass();
    assert!(sim.is_true(types::THIRD_PARTIES_PURGED));
    assert!(sim.is_true(types::READY));
    assert_eq!(sim.phase(), Some(RequestPhase::Completed));
    assert!(
        sim.is_true(THIRD_PARTIES_OVERDUE),
        "the warning stays visible"
    );
}

#[test]
fn failures_after_a_check_count_from_it_and_still_exhaust_the_budget() {
    let mut sim = erasure();
    let max = sim.input.context.policy.retry.max_attempts as u32;
    sim.pass();
    sim.succeed("crm", JobStep::SoftDelete);
    // Three checks come back "not yet" (without a suggested time: the default applies).
    for _ in 0..3 {
        sim.awaits("mailer", JobStep::ThirdPartyPurge, None);
        sim.pass();
        assert_eq!(
            sim.time(&sim.entry("mailer").next_attempt_at),
            sim.now + DEFAULT_RECHECK
        );
        sim.advance(DEFAULT_RECHECK);
        let p = sim.pass();
        assert_eq!(Sim::created_in(&p).len(), 1);
    }
    // Then the processor is down: failures count 1..max from the last check.
    for n in 1..=max {
        sim.fail("mailer", JobStep::ThirdPartyPurge, "ProcessorUnavailable");
        sim.pass();
        let e = sim.entry("mailer").clone();
        if n < max {
            assert_eq!(e.phase, SystemPhase::Waiting);
            assert!(
                e.message
                    .as_deref()
                    .unwrap()
                    .contains(&format!("attempt {n} of {max}")),
                "{e:?}"
            );
            let at = sim.time(&e.next_attempt_at);
            sim.now = at;
            let p = sim.pass();
            assert_eq!(Sim::created_in(&p).len(), 1);
        } else {
            assert_eq!(e.phase, SystemPhase::Failed);
            assert!(
                e.message
                    .as_deref()
                    .unwrap()
                    .contains(&format!("{max} times")),
                "{e:?}"
            );
        }
    }
    assert!(sim.is_true(types::FAILED));
}

#[test]
fn a_worker_asking_for_a_recheck_too_soon_gets_the_minimum() {
    let mut sim = erasure();
    sim.pass();
    sim.awaits(
        "mailer",
        JobStep::ThirdPartyPurge,
        Some(SignedDuration::from_secs(1)),
    );
    let at: Timestamp = sim.now;
    sim.pass();
    assert_eq!(
        sim.time(&sim.entry("mailer").next_attempt_at),
        at + SignedDuration::from_secs(60)
    );
}

#[test]
fn checks_go_on_after_a_cancel() {
    let mut sim = erasure();
    sim.pass();
    sim.succeed("crm", JobStep::SoftDelete);
    sim.awaits(
        "mailer",
        JobStep::ThirdPartyPurge,
        Some(SignedDuration::from_hours(1)),
    );
    sim.pass();
    sim.edit(|s| s.cancel = true);
    sim.advance(SignedDuration::from_hours(1));
    let p = sim.pass();
    // The purge request cannot be recalled; its confirmation is still collected.
    let created = Sim::created_in(&p);
    assert!(
        created.contains(&("mailer".to_string(), JobStep::ThirdPartyPurge, 2)),
        "{created:?}"
    );
}

/// The path through the controller: the worker exits 0 with a Pending manifest, the
/// controller's result reader turns it into AwaitingConfirmation, the planner schedules the
/// recheck at the manifest's retryAfter.
#[test]
fn a_pending_manifest_read_by_the_controller_schedules_the_recheck() {
    use crate::controller::results::apply;
    use crate::worker::task::{Manifest, Outcome};

    let mut sim = erasure();
    sim.step();
    sim.advance(SignedDuration::from_mins(1));
    sim.succeed("mailer", JobStep::ThirdPartyPurge);
    let mut m = Manifest::new("mailer", JobStep::ThirdPartyPurge);
    m.outcome = Outcome::Pending;
    let at = sim.now + SignedDuration::from_hours(2);
    m.retry_after = Some(at.to_string());
    let job = sim
        .input
        .children
        .jobs
        .iter_mut()
        .find(|j| j.system == "mailer")
        .unwrap();
    apply(job, std::sync::Arc::new(m));
    assert!(matches!(job.state, JobState::AwaitingConfirmation { .. }));
    sim.pass();
    let e = sim.entry("mailer");
    assert_eq!(e.phase, SystemPhase::Waiting);
    assert_eq!(sim.time(&e.next_attempt_at), at);
    assert!(!sim.is_true(types::THIRD_PARTIES_PURGED));
    sim.now = at;
    let p = sim.pass();
    assert_eq!(
        Sim::created_in(&p),
        vec![("mailer".to_string(), JobStep::ThirdPartyPurge, 2)]
    );
}

fn requeue(p: &Plan) -> SignedDuration {
    SignedDuration::try_from(p.requeue_after.expect("a requeue")).unwrap()
}
