//! The request planner with purposes resolved through a ConsentPolicy: Restrict Jobs only
//! where a purpose's action reaches, the rest Skipped, and unknown purposes blocking
//! acceptance with a specific reason.

use serde_json::json;

use crate::api::{
    ConsentPolicySpec, RequestType,
    conditions::types,
    request::{RequestPhase, SystemPhase},
};
use crate::plan::tests::{Sim, first_party, third_party};
use crate::plan::{JobStep, ReferenceProblem};

use super::{NamespaceSystem, resolve};

fn policy() -> ConsentPolicySpec {
    serde_json::from_value(json!({
        "purposes": [
            {"name": "marketing-email", "groups": ["marketing"], "lawfulBasis": "Consent",
             "actions": [
                {"action": "Restrict", "system": "crm"},
                {"action": "Unsubscribe", "system": "mailer"}
             ]},
            {"name": "profiling", "lawfulBasis": "LegitimateInterests"}
        ]
    }))
    .unwrap()
}

fn withdrawal(purposes: &[&str]) -> Sim {
    let mut sim = Sim::new(
        "ConsentWithdrawal",
        "GDPR",
        vec![
            first_party("crm"),
            first_party("files"),
            third_party("mailer", false),
        ],
        "2024-06-03T10:00:00Z",
    );
    sim.input.request.spec.restricted_purposes = purposes.iter().map(|s| s.to_string()).collect();
    let namespace: Vec<NamespaceSystem> = ["crm", "files", "mailer"]
        .iter()
        .map(|n| NamespaceSystem {
            name: n.to_string(),
            labels: Default::default(),
        })
        .collect();
    let scope: Vec<String> = namespace.iter().map(|s| s.name.clone()).collect();
    match resolve(
        "consent",
        &policy(),
        RequestType::ConsentWithdrawal,
        &sim.input.request.spec.restricted_purposes,
        &namespace,
        &scope,
    ) {
        Ok(plan) => sim.input.context.purposes = Some(plan),
        Err(problems) => sim.input.context.problems.extend(problems),
    }
    sim
}

#[test]
fn withdrawal_restricts_where_the_policy_reaches_and_skips_the_rest() {
    let mut sim = withdrawal(&["marketing"]);
    let p = sim.step();
    let mut created = Sim::created_in(&p);
    created.sort();
    assert_eq!(
        created,
        [
            ("crm".to_string(), JobStep::Restrict, 1),
            ("mailer".to_string(), JobStep::Restrict, 1),
        ]
    );
    let files = sim
        .status()
        .systems
        .iter()
        .find(|e| e.name == "files")
        .unwrap();
    assert_eq!(files.phase, SystemPhase::Skipped);
    assert!(files.message.as_deref().unwrap().contains("consent"));

    sim.advance(jiff::SignedDuration::from_secs(5));
    sim.succeed("crm", JobStep::Restrict);
    sim.succeed("mailer", JobStep::Restrict);
    sim.step();
    assert_eq!(sim.phase(), Some(RequestPhase::Completed));
    let restricted = sim
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == types::RESTRICTED)
        .unwrap();
    assert_eq!(restricted.status, "True");
    assert!(
        restricted.message.contains("marketing-email") && restricted.message.contains("2 system"),
        "{}",
        restricted.message
    );
}

#[test]
fn unknown_purposes_block_acceptance_with_a_specific_reason() {
    let mut sim = withdrawal(&["marketing-sms"]);
    let p = sim.step();
    assert!(Sim::created_in(&p).is_empty());
    assert_eq!(
        sim.cond(types::ACCEPTED),
        Some(("False".into(), "UnknownPurposes".into()))
    );
    let accepted = sim
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == types::ACCEPTED)
        .unwrap();
    assert!(accepted.message.contains("marketing-sms"));
    assert!(sim.event_reasons().contains(&"UnknownPurposes"));
}

#[test]
fn withdrawing_a_purpose_not_based_on_consent_is_refused() {
    let mut sim = withdrawal(&["profiling"]);
    sim.step();
    assert_eq!(
        sim.cond(types::ACCEPTED),
        Some(("False".into(), "PurposesNotApplicable".into()))
    );
    assert!(matches!(
        sim.input.context.problems[0],
        ReferenceProblem::PurposesNotApplicable { .. }
    ));
}
