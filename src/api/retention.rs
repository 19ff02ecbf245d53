//! `RetentionPolicy`: grace periods and deadlines for requests, legal holds, and scheduled
//! retention rules ("rows of table T older than D by column C: purge or anonymise").

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    conditions::{HasConditions, conditions_schema},
    datamap::{SQL_IDENTIFIER, TABLE_NAME},
    duration::Duration,
    refs::Selector,
    regulation::Regulation,
    schedule::{CronSchedule, TimeZoneName},
    subject::SubjectDigest,
};

/// Grace periods, deadlines, legal holds and scheduled retention for a namespace.
// Each printcolumn(...) repeats `type_ = ...`; clippy mistakes them for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "privacy-operator.dev",
    version = "v1alpha1",
    kind = "RetentionPolicy",
    plural = "retentionpolicies",
    shortname = "rpol",
    category = "privacy",
    namespaced,
    status = "RetentionPolicyStatus",
    derive = "PartialEq",
    doc = "Grace periods and deadlines for DataSubjectRequests (restore window, third-party purge deadline, backup retention, export expiry, statutory deadline overrides, retries), legal holds that block purges, and scheduled retention rules that purge or anonymise old rows. Requests use the policy they reference, or the one named `default` in their namespace.",
    printcolumn(
        name = "Restore",
        type_ = "string",
        json_path = ".spec.erasure.restoreWindow",
        description = "Restore window of erasures"
    ),
    printcolumn(
        name = "ThirdParty",
        type_ = "string",
        json_path = ".spec.erasure.thirdPartyPurgeWithin",
        description = "Deadline for processors to confirm a purge"
    ),
    printcolumn(
        name = "Export",
        type_ = "string",
        json_path = ".spec.exportExpiry",
        priority = 1,
        description = "How long exports stay downloadable"
    ),
    // Counts come from status: a JSONPath like `.spec.rules[*].name` shows only the first
    // match in the apiserver's table output.
    printcolumn(
        name = "Rules",
        type_ = "integer",
        json_path = ".status.ruleCount",
        description = "Scheduled retention rules"
    ),
    printcolumn(
        name = "Holds",
        type_ = "integer",
        json_path = ".status.activeHoldCount",
        description = "Legal holds in force"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Policy valid and schedules running"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicySpec {
    /// Grace periods of erasure requests.
    #[serde(default)]
    pub erasure: ErasureGrace,

    /// How long an export bundle stays downloadable before it is deleted. Defaults to 7d.
    #[serde(default = "default_export_expiry")]
    pub export_expiry: Duration,

    /// Statutory deadline overrides per regulation, e.g. a stricter internal target.
    /// Regulations not listed use the law's deadline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 4),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["regulation"])
    )]
    pub deadlines: Vec<DeadlineOverride>,

    /// Retries of failed Jobs per request step.
    #[serde(default)]
    pub retry: RetryPolicy,

    /// Treat requests that use this policy as verified (identity checked before the request
    /// was created, e.g. by a logged-in self-service portal). Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_verified: bool,

    /// Holds that block purges and retention deletes of the data they cover, for litigation or
    /// a regulator's order. Remove a hold to release it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub legal_holds: Vec<LegalHold>,

    /// Scheduled retention rules. Each run is a Job, like a CronJob.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub rules: Vec<RetentionRule>,
}

fn default_export_expiry() -> Duration {
    Duration::days(7)
}

/// Grace periods of an erasure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasureGrace {
    /// How long soft-deleted data stays restorable (a cancel brings it back) before it is
    /// purged permanently. Defaults to 14d.
    #[serde(default = "default_restore_window")]
    pub restore_window: Duration,
    /// By when third-party processors must confirm the purge, counted from the request.
    /// Defaults to 30d.
    #[serde(default = "default_third_party_purge_within")]
    pub third_party_purge_within: Duration,
    /// How long your backups keep data; recorded as status.backupsAgeOutAt so you can show
    /// when the last copy disappears. Defaults to 90d.
    #[serde(default = "default_backup_retention")]
    pub backup_retention: Duration,
}

impl Default for ErasureGrace {
    fn default() -> Self {
        ErasureGrace {
            restore_window: default_restore_window(),
            third_party_purge_within: default_third_party_purge_within(),
            backup_retention: default_backup_retention(),
        }
    }
}

fn default_restore_window() -> Duration {
    Duration::days(14)
}
fn default_third_party_purge_within() -> Duration {
    Duration::days(30)
}
fn default_backup_retention() -> Duration {
    Duration::days(90)
}

/// A deadline that replaces the law's for one regulation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineOverride {
    /// The regulation this applies to.
    pub regulation: Regulation,
    /// Time to answer, counted from receipt, e.g. 14d for an internal target under GDPR.
    pub respond_within: Duration,
    /// Length of the one allowed extension; omit to use the law's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Duration>,
}

/// Retries of failed Jobs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts per step and system before the request fails. Defaults to 5.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: i32,
    /// Wait after the first failure; doubles after each further failure. Defaults to 30s.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts. Defaults to 1h.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_attempts() -> i32 {
    5
}
fn default_initial_backoff() -> Duration {
    "30s".parse().expect("30s is a valid duration")
}
fn default_max_backoff() -> Duration {
    Duration::hours(1)
}

/// A legal hold. Empty `systems`, `tables` and `subjectDigests` hold everything in the
/// namespace; each one given narrows the hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegalHold {
    /// Name of the hold, e.g. case-2024-117.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::refs::DNS_SUBDOMAIN))]
    pub name: String,
    /// Why the hold exists and who ordered it.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// DataSystems covered (by name); empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 253), regex(pattern = super::refs::DNS_SUBDOMAIN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub systems: Vec<String>,
    /// Tables covered (in the systems covered); empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 127), regex(pattern = TABLE_NAME)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub tables: Vec<String>,
    /// Subjects covered, by the digest shown in their requests' status.subjectDigest; empty
    /// for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "set"))]
    pub subject_digests: Vec<SubjectDigest>,
    /// The hold ends by itself at this time; omit to hold until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
}

/// A scheduled retention rule: purge or anonymise what is older than `olderThan`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.table) != has(self.prefix)",
        "message": "give exactly one of table (with ageColumn, for SQL systems) or prefix (for object-storage systems)"
    },
    {
        "rule": "!has(self.table) || has(self.ageColumn)",
        "message": "a table rule needs ageColumn: the timestamp column the age is measured from (e.g. closed_at)",
        "fieldPath": ".ageColumn",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "!has(self.prefix) || !has(self.ageColumn)",
        "message": "ageColumn only applies to table rules; object age is the object's last-modified time",
        "fieldPath": ".ageColumn",
        "reason": "FieldValueForbidden"
    }
]))]
pub struct RetentionRule {
    /// Name of the rule, unique in the policy; Jobs and status entries are named after it.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// DataSystems the rule runs against, by label. Omit for all in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systems: Option<Selector>,
    /// The table whose rows expire (SQL systems).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 127), regex(pattern = TABLE_NAME))]
    pub table: Option<String>,
    /// The object prefix whose objects expire (object-storage systems), e.g. recordings/.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub prefix: Option<String>,
    /// Timestamp column the age is measured from (table rules), e.g. closed_at, created_at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = SQL_IDENTIFIER))]
    pub age_column: Option<String>,
    /// Rows (or objects) older than this expire, e.g. 180d, P2Y.
    pub older_than: Duration,
    /// Purge deletes expired rows with their related records (per the data map); Anonymise
    /// keeps them and applies each field's anonymise strategy.
    pub action: RetentionAction,
    /// Enforce changes data; DryRun only reports what would be changed. Defaults to Enforce.
    #[serde(default)]
    pub mode: RuleMode,
    /// When to run, in cron syntax ("minute hour day-of-month month day-of-week") or a macro
    /// such as @daily. E.g. "0 3 * * *" runs at 03:00 every day.
    pub schedule: CronSchedule,
    /// Time zone of the schedule, an IANA name. Defaults to UTC.
    #[serde(default)]
    pub time_zone: TimeZoneName,
    /// What to do when a run is due while the previous one still runs: Forbid skips the new
    /// run, Replace stops the old one, Allow runs both. Defaults to Forbid.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run missed (operator down) is still started if no later than this after its time;
    /// omit to always catch up with the most recent missed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<Duration>,
    /// Rows deleted or updated per transaction; keeps locks short. Defaults to 1000.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: i32,
    /// Finished Jobs kept for inspection. Defaults to 3.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: i32,
    /// Failed Jobs kept for inspection. Defaults to 1.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: i32,
    /// Stop scheduling new runs while true. Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

fn default_batch_size() -> i32 {
    1000
}
fn default_successful_history() -> i32 {
    3
}
fn default_failed_history() -> i32 {
    1
}

/// What a retention rule does to expired data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetentionAction {
    Purge,
    Anonymise,
}

/// Whether a scheduled rule changes data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RuleMode {
    #[default]
    Enforce,
    DryRun,
}

/// What to do with overlapping runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    Allow,
    #[default]
    Forbid,
    Replace,
}

/// Observed state of a RetentionPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicyStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (policy valid, schedules running), and Reconciling/Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// State of each scheduled rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub rules: Vec<RuleStatus>,
    /// Names of the legal holds in force now (not expired).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_holds: Vec<String>,
    /// Number of scheduled rules (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_count: Option<i32>,
    /// Number of legal holds in force (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_hold_count: Option<i32>,
}

impl HasConditions for RetentionPolicyStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// State of one scheduled rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleStatus {
    /// The rule's name.
    pub name: String,
    /// When the last run was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Time>,
    /// When the last run that succeeded finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run: Option<Time>,
    /// When the next run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// Jobs running for this rule now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// Outcome of the last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<RunResult>,
}

/// Outcome of one retention run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// The Job that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Succeeded, Failed, or Blocked (a legal hold covered the data).
    pub phase: RunPhase,
    /// True when the run was a dry run (nothing changed).
    #[serde(default)]
    pub dry_run: bool,
    /// Rows or objects that matched the rule.
    #[serde(default)]
    pub matched: i64,
    /// Rows or objects purged or anonymised (0 for a dry run).
    #[serde(default)]
    pub affected: i64,
    /// Rows or objects skipped because a legal hold covers them.
    #[serde(default)]
    pub held: i64,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunPhase {
    Succeeded,
    Failed,
    Blocked,
}

impl RetentionPolicySpec {
    /// The deadline to answer a request under `regulation`: the override if any, else the law.
    pub fn deadline(&self, regulation: Regulation) -> Duration {
        self.deadlines
            .iter()
            .find(|d| d.regulation == regulation)
            .map(|d| d.respond_within.clone())
            .unwrap_or_else(|| regulation.statutory_deadline())
    }

    /// The one extension allowed under `regulation`: the override if any, else the law's.
    pub fn extension(&self, regulation: Regulation) -> Option<Duration> {
        self.deadlines
            .iter()
            .find(|d| d.regulation == regulation)
            .and_then(|d| d.extension.clone())
            .or_else(|| regulation.max_extension())
    }
}

impl RetentionPolicySpec {
    /// Combinations the schema cannot refuse (calendar durations do not compare in CEL), each
    /// as a message that says what to fix. The controller reports them as Ready=False.
    pub fn problems(&self) -> Vec<String> {
        // Calendar units are compared from the start of February, where a month is shortest,
        // so "30d" counts as longer than "P1M" (it is, in February).
        let anchor: jiff::Timestamp = "2001-02-01T00:00:00Z"
            .parse()
            .expect("constant timestamp parses");
        let longer = |a: &Duration, b: &Duration| {
            a.compare_from(b, anchor)
                .map(|o| o == std::cmp::Ordering::Greater)
                .unwrap_or(true)
        };
        let mut out = Vec::new();
        if longer(&self.retry.initial_backoff, &self.retry.max_backoff) {
            out.push(format!(
                "retry.initialBackoff ({}) is longer than retry.maxBackoff ({}); lower initialBackoff or raise maxBackoff",
                self.retry.initial_backoff, self.retry.max_backoff
            ));
        }
        for d in &self.deadlines {
            let law = d.regulation.statutory_deadline();
            if longer(&d.respond_within, &law) {
                out.push(format!(
                    "deadlines[{}].respondWithin ({}) is longer than the law allows ({}); use {} or less",
                    d.regulation.as_str(),
                    d.respond_within,
                    law,
                    law
                ));
            }
            match (&d.extension, d.regulation.max_extension()) {
                (Some(ext), None) => out.push(format!(
                    "deadlines[{}].extension ({ext}) is not allowed: {} allows no extension; remove it",
                    d.regulation.as_str(),
                    d.regulation.as_str()
                )),
                (Some(ext), Some(max)) if longer(ext, &max) => out.push(format!(
                    "deadlines[{}].extension ({ext}) is longer than the law allows ({max}); use {max} or less",
                    d.regulation.as_str()
                )),
                _ => {}
            }
        }
        out.extend(self.grace_problems());
        for r in &self.rules {
            if r.older_than.is_zero() {
                out.push(format!(
                    "rules[{}].olderThan is zero, which would expire everything; give a real age such as 180d",
                    r.name
                ));
            }
        }
        out
    }
}

impl RetentionPolicySpec {
    /// Grace periods that cannot all be honoured: zero-length windows that would act
    /// immediately, and windows that end after a deadline this policy itself sets (an
    /// erasure whose restore window or third-party confirmation ends after `respondWithin`
    /// plus its extension would always be overdue).
    fn grace_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let g = &self.erasure;
        if self.export_expiry.is_zero() {
            out.push(
                "exportExpiry is zero: exports would be deleted as soon as they are written; give a real period such as 7d"
                    .to_string(),
            );
        }
        if g.third_party_purge_within.is_zero() {
            out.push(
                "erasure.thirdPartyPurgeWithin is zero: no processor can confirm a purge instantly; give a real deadline such as 30d"
                    .to_string(),
            );
        }
        for d in &self.deadlines {
            let extension = d.extension.clone().or_else(|| d.regulation.max_extension());
            let limit = match &extension {
                Some(ext) => format!("{} plus the {ext} extension", d.respond_within),
                None => d.respond_within.to_string(),
            };
            let anchor: jiff::Timestamp = "2001-02-01T00:00:00Z"
                .parse()
                .expect("constant timestamp parses");
            // The latest an erasure under this override may complete.
            let due = extension
                .as_ref()
                .and_then(|e| e.after(d.respond_within.after(anchor).ok()?).ok())
                .or_else(|| d.respond_within.after(anchor).ok());
            let Some(due) = due else { continue };
            let ends_after = |w: &Duration| w.after(anchor).map_or(true, |end| end > due);
            if ends_after(&g.restore_window) {
                out.push(format!(
                    "erasure.restoreWindow ({}) ends after the {} deadline of deadlines[{}] ({limit}): every erasure would be purged late; shorten restoreWindow or lengthen respondWithin",
                    g.restore_window,
                    d.regulation.as_str(),
                    d.regulation.as_str()
                ));
            }
            // thirdPartyPurgeWithin may end after the answer is due: the answer to the subject
            // covers our own systems, processors confirm on their own deadline (tracked by
            // ThirdPartiesPurged and its overdue warning). Refusing it would make LGPD's 15 days
            // unusable with the common 30-day processor deadline.
        }
        out
    }
}

impl Default for RetentionPolicySpec {
    /// The built-in defaults used when a namespace has no policy.
    fn default() -> Self {
        RetentionPolicySpec {
            erasure: ErasureGrace::default(),
            export_expiry: default_export_expiry(),
            deadlines: Vec::new(),
            retry: RetryPolicy::default(),
            pre_verified: false,
            legal_holds: Vec::new(),
            rules: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_common_practice() {
        let p: RetentionPolicySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(p, RetentionPolicySpec::default());
        assert_eq!(p.erasure.restore_window.as_str(), "14d");
        assert_eq!(p.erasure.third_party_purge_within.as_str(), "30d");
        assert_eq!(p.export_expiry.as_str(), "7d");
        assert_eq!(p.deadline(Regulation::Gdpr).as_str(), "P1M");
    }

    #[test]
    fn overrides_replace_the_law() {
        let p: RetentionPolicySpec = serde_json::from_value(serde_json::json!({
            "deadlines": [{"regulation": "GDPR", "respondWithin": "14d"}]
        }))
        .unwrap();
        assert_eq!(p.deadline(Regulation::Gdpr).as_str(), "14d");
        assert_eq!(p.extension(Regulation::Gdpr).unwrap().as_str(), "P2M");
        assert_eq!(p.deadline(Regulation::Ccpa).as_str(), "45d");
        assert!(p.problems().is_empty());
    }

    #[test]
    fn impossible_grace_periods_are_explained() {
        let p: RetentionPolicySpec = serde_json::from_value(serde_json::json!({
            "erasure": {"restoreWindow": "30d", "thirdPartyPurgeWithin": "0d"},
            "exportExpiry": "0d",
            "deadlines": [{"regulation": "LGPD", "respondWithin": "15d"}]
        }))
        .unwrap();
        let problems = p.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("exportExpiry is zero"), "{problems:?}");
        assert!(problems[1].contains("thirdPartyPurgeWithin is zero"));
        assert!(
            problems[2].contains("erasure.restoreWindow (30d) ends after the LGPD deadline"),
            "{problems:?}"
        );
        // Processors keep their own (30-day) deadline under LGPD's 15 days: not a conflict.
        let lgpd: RetentionPolicySpec = serde_json::from_value(serde_json::json!({
            "deadlines": [{"regulation": "LGPD", "respondWithin": "15d"}]
        }))
        .unwrap();
        assert!(lgpd.problems().is_empty(), "{:?}", lgpd.problems());
        // The defaults fit GDPR's deadline (one month, extendable by two).
        let ok: RetentionPolicySpec = serde_json::from_value(serde_json::json!({
            "deadlines": [{"regulation": "GDPR", "respondWithin": "P1M"}]
        }))
        .unwrap();
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
    }

    #[test]
    fn impossible_combinations_are_explained() {
        let p: RetentionPolicySpec = serde_json::from_value(serde_json::json!({
            "deadlines": [
                {"regulation": "GDPR", "respondWithin": "30d"},
                {"regulation": "LGPD", "respondWithin": "15d", "extension": "15d"}
            ],
            "retry": {"initialBackoff": "2h", "maxBackoff": "1h"}
        }))
        .unwrap();
        let problems = p.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("retry.initialBackoff"));
        assert!(problems[1].contains("deadlines[GDPR].respondWithin"));
        assert!(problems[2].contains("LGPD allows no extension"));
    }
}
