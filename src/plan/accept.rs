//! The gate before any work: references resolve (Accepted), the request is not a duplicate,
//! and the subject's identity is verified (Verified). Accepting fixes the scope: the systems
//! in scope are recorded in status.systems and later DataSystems do not join.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    RequestType,
    conditions::{Status, types},
    request::{RequestPhase, SystemPhase, SystemProgress},
};

use super::{
    conditions::Outcome,
    erasure,
    model::{EventType, ReferenceProblem},
    planner::Planner,
};

pub(crate) enum Gate {
    Open,
    Closed(Outcome),
}

/// Every reference problem: those the caller found, plus what the planner can see itself
/// (an unusable policy, systems gone since acceptance, rectifications naming unknown systems).
fn problems(p: &Planner) -> Vec<ReferenceProblem> {
    let ctx = &p.input.context;
    let mut out = ctx.problems.clone();
    let policy_problems = ctx.policy.problems();
    if !policy_problems.is_empty() {
        out.push(ReferenceProblem::RetentionPolicyInvalid {
            name: ctx.policy_name.clone().unwrap_or_else(|| "default".into()),
            problem: policy_problems.join("; "),
        });
    }
    let mut missing = |name: &str| {
        let problem = ReferenceProblem::DataSystemNotFound { name: name.into() };
        if p.system(name).is_none() && !out.contains(&problem) {
            out.push(problem);
        }
    };
    for e in &p.status.systems {
        missing(&e.name);
    }
    if let Some(r) = &p.spec().rectification {
        for c in &r.changes {
            if let Some(s) = &c.system {
                missing(s);
            }
        }
    }
    if p.status.systems.is_empty() && ctx.systems.is_empty() {
        out.push(ReferenceProblem::NoDataSystems);
    }
    out
}

/// The in-flight request this one duplicates: the earliest other request of the same type
/// for the same subject created before this one. Only asked before any work started.
fn duplicate_of(p: &Planner) -> Option<String> {
    if let Some(original) = &p.old.duplicate_of {
        return Some(original.clone());
    }
    let started = !p.input.children.jobs.is_empty()
        || p.old.systems.iter().any(|e| e.attempts > 0)
        || p.old.restore_until.is_some();
    if started {
        return None;
    }
    let me = (
        p.input.request.created_at.unwrap_or(p.now),
        p.input.request.name.as_str(),
    );
    p.input
        .context
        .in_flight
        .iter()
        .map(|o| (o.created_at, o.name.as_str()))
        .filter(|o| *o < me)
        .min()
        .map(|(_, name)| name.to_string())
}

pub(crate) fn gate(p: &mut Planner) -> Gate {
    let spec = p.spec();
    if spec.type_ == RequestType::Erasure && spec.cancel && !erasure::started(p) {
        return Gate::Closed(Outcome::Done {
            phase: RequestPhase::Cancelled,
            reason: "Cancelled",
            message: "cancelled before any data was touched; nothing to restore".into(),
        });
    }

    let problems = problems(p);
    if let Some(first) = problems.first() {
        let reason = first.reason().to_string();
        let message = problems
            .iter()
            .map(ReferenceProblem::message)
            .collect::<Vec<_>>()
            .join("; ");
        if p.set(types::ACCEPTED, Status::False, &reason, &message)
            .reason_changed
        {
            p.event(EventType::Warning, &reason, message.clone());
        }
        return Gate::Closed(Outcome::Blocked { reason, message });
    }

    if p.status.systems.is_empty() {
        let mut systems: Vec<_> = p.input.context.systems.iter().collect();
        systems.sort_by(|a, b| a.name.cmp(&b.name));
        let stamp = p.stamp;
        p.status.systems = systems
            .into_iter()
            .map(|s| SystemProgress {
                name: s.name.clone(),
                third_party: s.third_party,
                step: None,
                phase: SystemPhase::Pending,
                job_name: None,
                attempts: 0,
                next_attempt_at: None,
                records: None,
                message: None,
                last_transition_time: Some(Time(stamp)),
            })
            .collect();
    }
    if let Some(d) = &p.input.context.subject_digest {
        p.status.subject_digest = Some(d.clone());
    }
    let third = p.status.systems.iter().filter(|s| s.third_party).count();
    let msg = format!(
        "accepted under {}: {} DataSystem(s) in scope ({third} third-party)",
        spec.regulation.as_str(),
        p.status.systems.len()
    );
    if p.set(types::ACCEPTED, Status::True, "Accepted", &msg)
        .transitioned
    {
        let due = p
            .status
            .due_at
            .as_ref()
            .map(|t| super::timeline::fmt(t.0))
            .unwrap_or_default();
        p.event(
            EventType::Normal,
            "Accepted",
            format!("{msg}; due by {due}"),
        );
    }

    if let Some(original) = duplicate_of(p) {
        return Gate::Closed(Outcome::Duplicate { original });
    }

    if let Some(v) = &spec.verification {
        p.set(
            types::VERIFIED,
            Status::True,
            "Verified",
            &format!(
                "identity verified ({:?}) at {}",
                v.method,
                super::timeline::fmt(v.verified_at.0)
            ),
        );
    } else if p.policy().pre_verified {
        let name = p
            .input
            .context
            .policy_name
            .clone()
            .unwrap_or_else(|| "default".into());
        p.set(
            types::VERIFIED,
            Status::True,
            "PreVerified",
            &format!("RetentionPolicy {name} treats its requests as verified"),
        );
    } else {
        let msg = "add spec.verification (how the subject's identity was checked); nothing is done until then";
        if p.set(types::VERIFIED, Status::False, "AwaitingVerification", msg)
            .transitioned
        {
            p.event(EventType::Normal, "AwaitingVerification", msg);
        }
        return Gate::Closed(Outcome::Progressing {
            phase: RequestPhase::AwaitingVerification,
            reason: "AwaitingVerification",
            message: msg.into(),
        });
    }
    Gate::Open
}
