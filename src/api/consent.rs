//! `ConsentPolicy`: processing purposes, their lawful basis and opt-in mode, what withdrawal or
//! objection does in each system, where consent records live, and the stale-consent sweep.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    conditions::{HasConditions, conditions_schema},
    datamap::TABLE_NAME,
    duration::Duration,
    refs::{DNS_SUBDOMAIN, Selector},
    request::PURPOSE_NAME,
    retention::RuleMode,
    schedule::{CronSchedule, TimeZoneName},
};

/// Purposes of processing and how consent for them is given, withdrawn and expired.
// Each printcolumn(...) repeats `type_ = ...`; clippy mistakes them for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "privacy-operator.dev",
    version = "v1alpha1",
    kind = "ConsentPolicy",
    plural = "consentpolicies",
    shortname = "cpol",
    category = "privacy",
    namespaced,
    status = "ConsentPolicyStatus",
    derive = "PartialEq",
    doc = "Processing purposes (marketing e-mail, partner sharing, profile enrichment, analytics, call recording...) with their lawful basis, opt-in mode and re-consent interval; what a consent withdrawal or objection does in each DataSystem (restrict fields, unsubscribe at a third party, stop enrichment); where consent records live; and a scheduled sweep that expires stale consent.",
    // A count from status: a JSONPath like `.spec.purposes[*].name` shows only the first
    // match in the apiserver's table output.
    printcolumn(
        name = "Purposes",
        type_ = "integer",
        json_path = ".status.purposeCount",
        description = "Purposes in force"
    ),
    printcolumn(
        name = "Sweep",
        type_ = "string",
        json_path = ".spec.staleConsentSweep.schedule",
        description = "Schedule of the stale-consent sweep"
    ),
    printcolumn(
        name = "LastSweep",
        type_ = "date",
        json_path = ".status.lastSweep.completedAt",
        priority = 1,
        description = "When the last sweep finished"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Policy valid and in force"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ConsentPolicySpec {
    /// The purposes you process personal data for.
    #[schemars(
        length(min = 1, max = 64),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub purposes: Vec<Purpose>,

    /// Tables that keep consent records (each must declare `consent` columns in its DataSystem's
    /// data map). Omit to use every table whose data map declares them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub consent_records: Vec<ConsentRecordLocation>,

    /// Scheduled expiry of consent older than each purpose's reconsentAfter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_consent_sweep: Option<Sweep>,
}

/// A purpose of processing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.optIn) || self.lawfulBasis == 'Consent'",
        "message": "optIn only applies when lawfulBasis is Consent; remove optIn or change the basis",
        "fieldPath": ".optIn",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "!has(self.reconsentAfter) || self.lawfulBasis == 'Consent'",
        "message": "reconsentAfter only applies when lawfulBasis is Consent; remove it or change the basis",
        "fieldPath": ".reconsentAfter",
        "reason": "FieldValueForbidden"
    }
]))]
pub struct Purpose {
    /// Name used by requests and data maps, e.g. marketing-email, partner-sharing,
    /// profile-enrichment, analytics, call-recording.
    #[schemars(length(min = 1, max = 63), regex(pattern = PURPOSE_NAME))]
    pub name: String,
    /// What the purpose is, as told to the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Groups the purpose belongs to (e.g. marketing). A request naming a group covers all its
    /// purposes: `restrictedPurposes: [marketing]` withdraws every marketing purpose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(min = 1, max = 63), regex(pattern = PURPOSE_NAME)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub groups: Vec<String>,
    /// The lawful basis of the processing (GDPR art. 6(1)): Consent, Contract,
    /// LegalObligation, VitalInterests, PublicTask or LegitimateInterests. Objection applies to
    /// LegitimateInterests and PublicTask; withdrawal applies to Consent.
    pub lawful_basis: LawfulBasis,
    /// How consent is collected (Consent only): Explicit (an unticked box the subject ticks) or
    /// DoubleOptIn (confirmed again through a link sent by e-mail). Defaults to Explicit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in: Option<OptInMode>,
    /// Consent older than this is treated as expired and must be asked for again (Consent
    /// only), e.g. P2Y. Omit for consent that does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconsent_after: Option<Duration>,
    /// What withdrawal, objection or restriction does, per system.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub actions: Vec<PurposeAction>,
}

/// Lawful basis of processing (GDPR art. 6(1)).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LawfulBasis {
    Consent,
    Contract,
    LegalObligation,
    VitalInterests,
    PublicTask,
    LegitimateInterests,
}

/// How consent is collected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OptInMode {
    #[default]
    Explicit,
    DoubleOptIn,
}

/// One thing to do in some systems when a purpose is withdrawn, objected to or restricted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.system) && has(self.systems))",
        "message": "give system (one DataSystem by name) or systems (a label selector), not both"
    }
]))]
pub struct PurposeAction {
    /// Restrict sets the columns the data map's `restrict` entry for this purpose names
    /// (e.g. marketing_opt_in=false); Unsubscribe calls the third party's HTTP connector to
    /// unsubscribe the subject; StopEnrichment turns off profile enrichment (the data map's
    /// restrict entry for this purpose, plus the enrichment call at an HTTP connector).
    pub action: ActionKind,
    /// The DataSystem (by name) the action applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub system: Option<String>,
    /// The DataSystems (by label) the action applies to. With neither system nor systems, the
    /// action applies to every DataSystem in scope of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systems: Option<Selector>,
    /// Which requests trigger the action. Defaults to ConsentWithdrawal and Objection.
    #[serde(default = "default_triggers")]
    #[schemars(length(min = 1, max = 3), extend("x-kubernetes-list-type" = "set"))]
    pub triggers: Vec<Trigger>,
}

fn default_triggers() -> Vec<Trigger> {
    vec![Trigger::ConsentWithdrawal, Trigger::Objection]
}

/// What an action does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ActionKind {
    Restrict,
    Unsubscribe,
    StopEnrichment,
}

/// Request types that trigger an action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Trigger {
    ConsentWithdrawal,
    Objection,
    Restriction,
}

/// A table that keeps consent records.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ConsentRecordLocation {
    /// The DataSystem, by name.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub system: String,
    /// The table in its data map.
    #[schemars(length(min = 1, max = 127), regex(pattern = TABLE_NAME))]
    pub table: String,
}

/// A scheduled sweep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sweep {
    /// When to run, in cron syntax or a macro such as @weekly, e.g. "0 2 * * 1".
    pub schedule: CronSchedule,
    /// Time zone of the schedule, an IANA name. Defaults to UTC.
    #[serde(default)]
    pub time_zone: TimeZoneName,
    /// Enforce marks stale consent as expired; DryRun only counts it. Defaults to Enforce.
    #[serde(default)]
    pub mode: RuleMode,
    /// Stop scheduling sweeps while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// Observed state of a ConsentPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsentPolicyStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (policy valid and in force), and Reconciling/Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Number of purposes in force (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_count: Option<i32>,
    /// Purposes in force and the systems each one covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub purposes: Vec<PurposeStatus>,
    /// When the next sweep is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sweep: Option<Time>,
    /// Outcome of the last sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sweep: Option<SweepResult>,
}

impl HasConditions for ConsentPolicyStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// A purpose in force.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurposeStatus {
    /// The purpose's name.
    pub name: String,
    /// DataSystems the purpose's actions reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<String>,
    /// Consent records in force for the purpose at the last sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_consents: Option<i64>,
}

/// Outcome of a stale-consent sweep.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepResult {
    /// The Job that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// True when the sweep was a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// Consent records marked expired (or that would be, in a dry run).
    #[serde(default)]
    pub expired: i64,
    /// True when the sweep succeeded.
    #[serde(default)]
    pub succeeded: bool,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ConsentPolicySpec {
    /// The purposes a request's `restrictedPurposes` entry names: a purpose, a group, or `all`.
    pub fn resolve(&self, name: &str) -> Vec<&Purpose> {
        self.purposes
            .iter()
            .filter(|p| name == "all" || p.name == name || p.groups.iter().any(|g| g == name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_purposes_groups_or_all() {
        let spec: ConsentPolicySpec = serde_json::from_value(serde_json::json!({
            "purposes": [
                {"name": "marketing-email", "groups": ["marketing"], "lawfulBasis": "Consent"},
                {"name": "partner-sharing", "groups": ["marketing"], "lawfulBasis": "Consent"},
                {"name": "analytics", "lawfulBasis": "LegitimateInterests"}
            ]
        }))
        .unwrap();
        assert_eq!(spec.resolve("marketing").len(), 2);
        assert_eq!(spec.resolve("analytics").len(), 1);
        assert_eq!(spec.resolve("all").len(), 3);
        assert!(spec.resolve("nope").is_empty());
    }
}
