//! Rectification (Rectify Jobs with the requested changes) and Restriction, Objection and
//! ConsentWithdrawal (Restrict Jobs for the named purposes), one Job per system in scope.

use crate::api::{
    RequestType,
    conditions::{Status, types},
    request::{RequestPhase, SystemPhase, SystemProgress},
};

use super::{
    conditions::Outcome,
    jobs::JobStep,
    planner::Planner,
    step::{Progress, drive},
};

/// True when some rectification change applies to `system`.
fn rectifies(p: &Planner, system: &str) -> bool {
    p.spec().rectification.as_ref().is_some_and(|r| {
        r.changes
            .iter()
            .any(|c| c.system.as_deref().is_none_or(|s| s == system))
    })
}

pub(crate) fn run(p: &mut Planner) -> Outcome {
    let rectify = p.spec().type_ == RequestType::Rectification;
    let step = if rectify {
        JobStep::Rectify
    } else {
        JobStep::Restrict
    };
    let systems: Vec<(String, bool)> = p
        .status
        .systems
        .iter()
        .map(|e| (e.name.clone(), e.third_party))
        .collect();
    let mut pending = false;
    let mut done = 0;
    for (name, third_party) in &systems {
        let skip = if rectify {
            (!rectifies(p, name)).then(|| "no change applies to this system".to_string())
        } else {
            p.input
                .context
                .purposes
                .as_ref()
                .filter(|plan| plan.purposes_for(name).is_empty())
                .map(|plan| {
                    format!(
                        "no action of ConsentPolicy {} for these purposes reaches this system",
                        plan.policy
                    )
                })
        };
        if let Some(message) = skip {
            let now = p.now;
            p.put_entry(
                SystemProgress {
                    name: name.clone(),
                    third_party: *third_party,
                    step: Some(step.status_step()),
                    phase: SystemPhase::Skipped,
                    job_name: None,
                    attempts: 0,
                    next_attempt_at: None,
                    records: None,
                    message: Some(message),
                    last_transition_time: None,
                },
                now,
            );
            continue;
        }
        match drive(p, name, *third_party, step, true, &[]) {
            Progress::Done { .. } => done += 1,
            Progress::Failed => {}
            _ => pending = true,
        }
    }
    if !p.failures.is_empty() {
        return Outcome::Failed;
    }
    if pending {
        let (reason, msg) = if rectify {
            ("Rectifying", "rectifying")
        } else {
            ("Restricting", "restricting processing")
        };
        return Outcome::Progressing {
            phase: RequestPhase::InProgress,
            reason,
            message: format!("{msg} in {} system(s)", systems.len()),
        };
    }
    if rectify {
        let msg = format!("corrected in {done} system(s)");
        p.set(types::RECTIFIED, Status::True, "Rectified", &msg);
        Outcome::Done {
            phase: RequestPhase::Completed,
            reason: "Rectified",
            message: msg,
        }
    } else {
        let what = match &p.input.context.purposes {
            Some(plan) if !plan.purposes.is_empty() => plan.purposes.join(", "),
            _ if p.spec().restricted_purposes.is_empty() => {
                "the purposes of the ConsentPolicy".to_string()
            }
            _ => p.spec().restricted_purposes.join(", "),
        };
        let msg = format!("processing for {what} restricted in {done} system(s)");
        p.set(types::RESTRICTED, Status::True, "Restricted", &msg);
        Outcome::Done {
            phase: RequestPhase::Completed,
            reason: "Restricted",
            message: msg,
        }
    }
}
