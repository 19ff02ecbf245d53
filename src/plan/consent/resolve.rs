//! Which purposes a Restriction, Objection or ConsentWithdrawal request stops, and what that
//! means in each DataSystem, according to a ConsentPolicy.
//!
//! The request names purposes, purpose groups (`marketing` covers every purpose in that group)
//! or `all`. Each resolved purpose's actions whose triggers include the request's type decide
//! the systems it reaches: one system by name, systems by label, or (neither) every system in
//! scope of the request. A purpose without actions restricts in every system in scope (the
//! data maps' `restrict` entries for it). Every reached system gets one Restrict Job carrying
//! the purposes that reach it: an SQL connector sets the data map's restrict columns, an HTTP
//! connector unsubscribes the subject at the processor.
//!
//! Pure: the caller passes the policy and the namespace's DataSystems.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{
    ConsentPolicySpec, RequestType,
    consent::{ActionKind, LawfulBasis, Purpose, PurposeAction, Trigger},
};

use crate::plan::model::ReferenceProblem;

/// A DataSystem of the namespace, as far as purpose actions care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSystem {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// What a request's purposes resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PurposePlan {
    /// The ConsentPolicy used.
    pub policy: String,
    /// Every resolved purpose, sorted.
    pub purposes: Vec<String>,
    /// Per system in scope that some purpose reaches: the purposes and the kinds of action.
    pub systems: BTreeMap<String, SystemPurposes>,
}

/// What the request does in one system.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SystemPurposes {
    pub purposes: BTreeSet<String>,
    pub actions: BTreeSet<ActionName>,
}

/// [`ActionKind`] with an order, for sets and stable messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActionName {
    Restrict,
    Unsubscribe,
    StopEnrichment,
}

impl From<ActionKind> for ActionName {
    fn from(k: ActionKind) -> Self {
        match k {
            ActionKind::Restrict => ActionName::Restrict,
            ActionKind::Unsubscribe => ActionName::Unsubscribe,
            ActionKind::StopEnrichment => ActionName::StopEnrichment,
        }
    }
}

impl ActionName {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionName::Restrict => "Restrict",
            ActionName::Unsubscribe => "Unsubscribe",
            ActionName::StopEnrichment => "StopEnrichment",
        }
    }
}

impl PurposePlan {
    /// The purposes a Restrict Job on `system` carries; empty when none reaches it.
    pub fn purposes_for(&self, system: &str) -> Vec<String> {
        self.systems
            .get(system)
            .map(|s| s.purposes.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The trigger matching a request type, if that type stops processing at all.
pub fn trigger_of(type_: RequestType) -> Option<Trigger> {
    match type_ {
        RequestType::ConsentWithdrawal => Some(Trigger::ConsentWithdrawal),
        RequestType::Objection => Some(Trigger::Objection),
        RequestType::Restriction => Some(Trigger::Restriction),
        _ => None,
    }
}

/// Whether the lawful basis lets a request of this type stop the purpose: consent is
/// withdrawn (art. 7(3)); objection applies to legitimate interests and public tasks
/// (art. 21(1)) and to direct marketing based on consent (art. 21(2)); restriction (art. 18)
/// applies to any basis.
pub fn applies(type_: RequestType, basis: LawfulBasis) -> bool {
    match type_ {
        RequestType::ConsentWithdrawal => basis == LawfulBasis::Consent,
        RequestType::Objection => matches!(
            basis,
            LawfulBasis::LegitimateInterests | LawfulBasis::PublicTask | LawfulBasis::Consent
        ),
        _ => true,
    }
}

/// Resolves a request's `restrictedPurposes` (all of the policy's applicable purposes when
/// empty) against `policy`. `namespace` lists every DataSystem of the namespace; `in_scope`
/// the systems the request covers. Problems say exactly which name failed and why.
pub fn resolve(
    policy_name: &str,
    policy: &ConsentPolicySpec,
    type_: RequestType,
    requested: &[String],
    namespace: &[NamespaceSystem],
    in_scope: &[String],
) -> Result<PurposePlan, Vec<ReferenceProblem>> {
    let Some(trigger) = trigger_of(type_) else {
        return Ok(PurposePlan {
            policy: policy_name.to_string(),
            ..Default::default()
        });
    };
    let mut problems = Vec::new();
    let mut chosen: BTreeMap<&str, &Purpose> = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut not_applicable = Vec::new();
    let names: Vec<&str> = if requested.is_empty() {
        vec!["all"]
    } else {
        requested.iter().map(String::as_str).collect()
    };
    for name in names {
        let found = policy.resolve(name);
        if found.is_empty() {
            unknown.push(name.to_string());
            continue;
        }
        let explicit = found.len() == 1 && found[0].name == name;
        let fitting: Vec<&Purpose> = found
            .iter()
            .copied()
            .filter(|p| applies(type_, p.lawful_basis))
            .collect();
        if fitting.is_empty() || (explicit && fitting.len() != found.len()) {
            not_applicable.push(name.to_string());
            continue;
        }
        for p in fitting {
            chosen.insert(p.name.as_str(), p);
        }
    }
    if !unknown.is_empty() {
        problems.push(ReferenceProblem::UnknownPurposes {
            policy: policy_name.to_string(),
            names: unknown,
            known: policy.purposes.iter().map(|p| p.name.clone()).collect(),
        });
    }
    if !not_applicable.is_empty() {
        problems.push(ReferenceProblem::PurposesNotApplicable {
            policy: policy_name.to_string(),
            names: not_applicable,
            type_,
        });
    }

    let mut plan = PurposePlan {
        policy: policy_name.to_string(),
        purposes: chosen.keys().map(|n| n.to_string()).collect(),
        systems: BTreeMap::new(),
    };
    for purpose in chosen.values() {
        let actions: Vec<&PurposeAction> = purpose
            .actions
            .iter()
            .filter(|a| a.triggers.contains(&trigger))
            .collect();
        if purpose.actions.is_empty() {
            for system in in_scope {
                add(&mut plan, system, &purpose.name, ActionName::Restrict);
            }
            continue;
        }
        for action in actions {
            match targets(action, namespace, in_scope) {
                Ok(systems) => {
                    for system in systems {
                        add(&mut plan, &system, &purpose.name, action.action.into());
                    }
                }
                Err(missing) => {
                    let problem = ReferenceProblem::ConsentActionSystemNotFound {
                        policy: policy_name.to_string(),
                        purpose: purpose.name.clone(),
                        system: missing,
                    };
                    if !problems.contains(&problem) {
                        problems.push(problem);
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

fn add(plan: &mut PurposePlan, system: &str, purpose: &str, action: ActionName) {
    let entry = plan.systems.entry(system.to_string()).or_default();
    entry.purposes.insert(purpose.to_string());
    entry.actions.insert(action);
}

/// The systems in scope an action reaches, or the name of the system it names that does not
/// exist in the namespace.
fn targets(
    action: &PurposeAction,
    namespace: &[NamespaceSystem],
    in_scope: &[String],
) -> Result<Vec<String>, String> {
    let reached: Vec<&str> = match (&action.system, &action.systems) {
        (Some(name), _) => {
            if !namespace.iter().any(|s| &s.name == name) {
                return Err(name.clone());
            }
            vec![name.as_str()]
        }
        (None, Some(selector)) => namespace
            .iter()
            .filter(|s| selector.matches(&s.labels))
            .map(|s| s.name.as_str())
            .collect(),
        (None, None) => in_scope.iter().map(String::as_str).collect(),
    };
    // A system outside the request's scope is the request's choice, not an error.
    Ok(reached
        .into_iter()
        .filter(|s| in_scope.iter().any(|x| x == s))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> ConsentPolicySpec {
        serde_json::from_value(json!({
            "purposes": [
                {"name": "marketing-email", "groups": ["marketing"], "lawfulBasis": "Consent",
                 "actions": [
                    {"action": "Restrict", "system": "crm"},
                    {"action": "Unsubscribe", "systems": {"matchLabels": {"tier": "third-party"}}}
                 ]},
                {"name": "partner-sharing", "groups": ["marketing"], "lawfulBasis": "Consent",
                 "actions": [{"action": "Restrict", "system": "partners",
                              "triggers": ["ConsentWithdrawal"]}]},
                {"name": "profiling", "lawfulBasis": "LegitimateInterests",
                 "actions": [{"action": "StopEnrichment"}]},
                {"name": "billing", "lawfulBasis": "Contract"}
            ]
        }))
        .unwrap()
    }

    fn ns() -> Vec<NamespaceSystem> {
        let sys = |name: &str, tier: &str| NamespaceSystem {
            name: name.into(),
            labels: [("tier".to_string(), tier.to_string())].into(),
        };
        vec![
            sys("crm", "first-party"),
            sys("partners", "first-party"),
            sys("mailer", "third-party"),
            sys("files", "first-party"),
        ]
    }

    fn scope() -> Vec<String> {
        ["crm", "files", "mailer", "partners"]
            .map(String::from)
            .to_vec()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_group_withdraws_every_consent_purpose_in_it_across_systems() {
        let plan = resolve(
            "consent",
            &policy(),
            RequestType::ConsentWithdrawal,
            &names(&["marketing"]),
            &ns(),
            &scope(),
        )
        .unwrap();
        assert_eq!(plan.purposes, ["marketing-email", "partner-sharing"]);
        assert_eq!(plan.purposes_for("crm"), ["marketing-email"]);
        assert_eq!(plan.purposes_for("mailer"), ["marketing-email"]);
        assert_eq!(plan.purposes_for("partners"), ["partner-sharing"]);
        assert!(plan.purposes_for("files").is_empty());
        assert!(
            plan.systems["mailer"]
                .actions
                .contains(&ActionName::Unsubscribe)
        );
    }

    #[test]
    fn triggers_select_actions_by_request_type() {
        // partner-sharing's only action fires on withdrawal, not objection.
        let plan = resolve(
            "consent",
            &policy(),
            RequestType::Objection,
            &names(&["marketing"]),
            &ns(),
            &scope(),
        )
        .unwrap();
        assert!(!plan.systems.contains_key("partners"));
        assert_eq!(plan.purposes_for("crm"), ["marketing-email"]);
    }

    #[test]
    fn unknown_purposes_are_named_with_the_known_ones() {
        let err = resolve(
            "consent",
            &policy(),
            RequestType::ConsentWithdrawal,
            &names(&["marketing-sms", "marketing"]),
            &ns(),
            &scope(),
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].reason(), "UnknownPurposes");
        let m = err[0].message();
        assert!(
            m.contains("marketing-sms") && m.contains("partner-sharing"),
            "{m}"
        );
    }

    #[test]
    fn withdrawal_of_a_purpose_not_based_on_consent_is_refused() {
        let err = resolve(
            "consent",
            &policy(),
            RequestType::ConsentWithdrawal,
            &names(&["profiling"]),
            &ns(),
            &scope(),
        )
        .unwrap_err();
        assert_eq!(err[0].reason(), "PurposesNotApplicable");
        assert!(
            err[0].message().contains("Objection"),
            "{}",
            err[0].message()
        );
        // Objection to it is fine and reaches every system in scope.
        let plan = resolve(
            "consent",
            &policy(),
            RequestType::Objection,
            &names(&["profiling"]),
            &ns(),
            &scope(),
        )
        .unwrap();
        assert_eq!(plan.systems.len(), 4);
    }

    #[test]
    fn all_means_every_applicable_purpose() {
        let plan = resolve(
            "consent",
            &policy(),
            RequestType::ConsentWithdrawal,
            &[],
            &ns(),
            &scope(),
        )
        .unwrap();
        assert_eq!(plan.purposes, ["marketing-email", "partner-sharing"]);
        let plan = resolve(
            "consent",
            &policy(),
            RequestType::Restriction,
            &names(&["all"]),
            &ns(),
            &scope(),
        )
        .unwrap();
        // billing has no actions: it restricts in every system in scope.
        assert_eq!(plan.purposes.len(), 4);
        assert_eq!(plan.purposes_for("files"), ["billing"]);
    }

    #[test]
    fn an_action_naming_a_missing_system_is_a_problem() {
        let mut ns = ns();
        ns.retain(|s| s.name != "partners");
        let err = resolve(
            "consent",
            &policy(),
            RequestType::ConsentWithdrawal,
            &names(&["partner-sharing"]),
            &ns,
            &["crm".to_string()],
        )
        .unwrap_err();
        assert_eq!(err[0].reason(), "ConsentActionSystemNotFound");
        assert!(err[0].message().contains("partners"));
    }

    #[test]
    fn systems_out_of_scope_are_left_alone() {
        let plan = resolve(
            "consent",
            &policy(),
            RequestType::ConsentWithdrawal,
            &names(&["marketing-email"]),
            &ns(),
            &["crm".to_string()],
        )
        .unwrap();
        assert_eq!(plan.systems.keys().collect::<Vec<_>>(), ["crm"]);
    }
}
