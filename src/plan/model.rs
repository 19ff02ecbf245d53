//! What the planner reads ([`PlanInput`]) and what it decides ([`Plan`]).
//!
//! The controller builds a [`PlanInput`] from the request, the objects it references and the
//! Jobs it owns, calls [`super::plan`], and carries out the [`Action`]s in order before writing
//! [`Plan::status`] (only when [`Plan::status_changed`]).

use jiff::Timestamp;
use serde::Serialize;

use crate::api::{
    DataSubjectRequest, DataSubjectRequestSpec, DataSubjectRequestStatus, RetentionPolicySpec,
    SubjectDigest, datasystem::Vendor,
};

use super::jobs::JobStep;

/// The finalizer the operator puts on every request it works on.
pub const FINALIZER: &str = "privacy-operator.dev/cleanup";

/// Everything the planner may look at. Built by the caller; the planner never reads anything
/// else (no clock, no API).
#[derive(Clone, Debug)]
pub struct PlanInput {
    pub request: RequestState,
    pub context: Context,
    pub children: Children,
}

/// The request as last read from the API.
#[derive(Clone, Debug)]
pub struct RequestState {
    /// metadata.name; Job names are derived from it.
    pub name: String,
    /// metadata.generation; copied into observedGeneration.
    pub generation: Option<i64>,
    /// metadata.creationTimestamp: receivedAt when spec.receivedAt is absent, and the order of
    /// duplicates.
    pub created_at: Option<Timestamp>,
    /// metadata.deletionTimestamp is set.
    pub deleting: bool,
    /// metadata.finalizers holds [`FINALIZER`].
    pub has_finalizer: bool,
    pub spec: DataSubjectRequestSpec,
    /// The current status (default when the resource has none yet).
    pub status: DataSubjectRequestStatus,
}

impl RequestState {
    /// The planner's view of a request read from the API.
    pub fn from_resource(dsr: &DataSubjectRequest) -> Self {
        let meta = &dsr.metadata;
        RequestState {
            name: meta.name.clone().unwrap_or_default(),
            generation: meta.generation,
            created_at: meta.creation_timestamp.as_ref().map(|t| t.0),
            deleting: meta.deletion_timestamp.is_some(),
            has_finalizer: meta
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == FINALIZER)),
            spec: dsr.spec.clone(),
            status: dsr.status.clone().unwrap_or_default(),
        }
    }
}

/// What the request's references resolved to.
#[derive(Clone, Debug)]
pub struct Context {
    /// The DataSystems the request's selector matches now (any order).
    pub systems: Vec<SystemInfo>,
    /// The effective RetentionPolicy: the referenced one, the namespace's `default`, or
    /// `RetentionPolicySpec::default()` (the built-in defaults) when there is none. The planner
    /// checks it with `RetentionPolicySpec::problems` itself.
    pub policy: RetentionPolicySpec,
    /// Name of the policy in use, for messages; `None` for the built-in defaults.
    pub policy_name: Option<String>,
    /// References that could not be resolved. The request waits (Accepted=False) while any
    /// is present.
    pub problems: Vec<ReferenceProblem>,
    /// The salted digest of the subject's identifiers; `None` while they cannot be read.
    pub subject_digest: Option<SubjectDigest>,
    /// Other requests of the same type for the same digest that are still in flight (not
    /// complete, failed or themselves duplicates). Excludes this request.
    pub in_flight: Vec<InFlightRequest>,
    /// Restriction, Objection and ConsentWithdrawal under a ConsentPolicy: the purposes
    /// resolved and the systems they reach (see [`super::consent::resolve`]). `None` without
    /// a policy: the request's purposes go to every system in scope as written.
    pub purposes: Option<super::consent::PurposePlan>,
}

/// A DataSystem in scope, as far as the planner cares.
#[derive(Clone, Debug)]
pub struct SystemInfo {
    pub name: String,
    /// spec.thirdParty: a processor that is told to purge (erasure) at t0.
    pub third_party: bool,
    /// spec.vendor, named in messages and the export manifest.
    pub vendor: Option<Vendor>,
    /// spec.exportable: false means access requests list it as integration data.
    pub exportable: bool,
    /// spec.concurrency: most Jobs against the system at once.
    pub concurrency: u32,
    /// Active Jobs of this operator against the system right now, across all requests and
    /// retention rules, this request's included.
    pub running_jobs: u32,
}

/// Another request in flight for the same subject and type.
#[derive(Clone, Debug)]
pub struct InFlightRequest {
    pub name: String,
    pub created_at: Timestamp,
}

/// A reference that does not resolve. Messages never include identifier values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceProblem {
    /// spec.retentionPolicyRef names a policy that does not exist.
    RetentionPolicyNotFound { name: String },
    /// The policy exists but cannot be used (e.g. it does not parse); `problem` says why.
    RetentionPolicyInvalid { name: String, problem: String },
    /// spec.consentPolicyRef names a policy that does not exist.
    ConsentPolicyNotFound { name: String },
    /// spec.subject.secretRef names a Secret that does not exist.
    SubjectSecretNotFound { name: String },
    /// The subject Secret exists but is unusable; `problem` is a `SubjectError` message,
    /// which names identifier kinds, never values.
    SubjectSecretInvalid { name: String, problem: String },
    /// A rectification `valueFrom` names a Secret (or key) that does not exist.
    ValueSecretNotFound { name: String, key: String },
    /// A DataSystem named by the request (rectification change, or one in scope when the
    /// request was accepted) does not exist.
    DataSystemNotFound { name: String },
    /// The selector matches no DataSystem.
    NoDataSystems,
    /// The request exports data (Access, Portability) but the operator has no object
    /// storage configured to put the bundle in.
    StorageNotConfigured,
    /// restrictedPurposes names purposes (or groups) the ConsentPolicy does not define.
    UnknownPurposes {
        policy: String,
        names: Vec<String>,
        known: Vec<String>,
    },
    /// restrictedPurposes names purposes whose lawful basis the request type cannot stop
    /// (e.g. withdrawing consent from a purpose based on legitimate interests).
    PurposesNotApplicable {
        policy: String,
        names: Vec<String>,
        type_: crate::api::RequestType,
    },
    /// A purpose action of the ConsentPolicy names a DataSystem that does not exist.
    ConsentActionSystemNotFound {
        policy: String,
        purpose: String,
        system: String,
    },
}

impl ReferenceProblem {
    /// CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            ReferenceProblem::RetentionPolicyNotFound { .. } => "RetentionPolicyNotFound",
            ReferenceProblem::RetentionPolicyInvalid { .. } => "RetentionPolicyInvalid",
            ReferenceProblem::ConsentPolicyNotFound { .. } => "ConsentPolicyNotFound",
            ReferenceProblem::SubjectSecretNotFound { .. } => "SubjectSecretNotFound",
            ReferenceProblem::SubjectSecretInvalid { .. } => "SubjectSecretInvalid",
            ReferenceProblem::ValueSecretNotFound { .. } => "ValueSecretNotFound",
            ReferenceProblem::DataSystemNotFound { .. } => "DataSystemNotFound",
            ReferenceProblem::NoDataSystems => "NoDataSystems",
            ReferenceProblem::StorageNotConfigured => "StorageNotConfigured",
            ReferenceProblem::UnknownPurposes { .. } => "UnknownPurposes",
            ReferenceProblem::PurposesNotApplicable { .. } => "PurposesNotApplicable",
            ReferenceProblem::ConsentActionSystemNotFound { .. } => "ConsentActionSystemNotFound",
        }
    }

    /// What is wrong and what to do about it.
    pub fn message(&self) -> String {
        match self {
            ReferenceProblem::RetentionPolicyNotFound { name } => format!(
                "RetentionPolicy {name} not found in this namespace; create it or fix spec.retentionPolicyRef"
            ),
            ReferenceProblem::RetentionPolicyInvalid { name, problem } => {
                format!("RetentionPolicy {name} cannot be used: {problem}")
            }
            ReferenceProblem::ConsentPolicyNotFound { name } => format!(
                "ConsentPolicy {name} not found in this namespace; create it or fix spec.consentPolicyRef"
            ),
            ReferenceProblem::SubjectSecretNotFound { name } => format!(
                "Secret {name} (spec.subject.secretRef) not found in this namespace; create it with the subject's identifiers"
            ),
            ReferenceProblem::SubjectSecretInvalid { name, problem } => {
                format!("Secret {name} (spec.subject.secretRef) cannot be used: {problem}")
            }
            ReferenceProblem::ValueSecretNotFound { name, key } => format!(
                "Secret {name} with key {key} (a rectification valueFrom) not found in this namespace; create it or fix the change"
            ),
            ReferenceProblem::DataSystemNotFound { name } => format!(
                "DataSystem {name} not found in this namespace; create it or remove it from the request"
            ),
            ReferenceProblem::NoDataSystems => "no DataSystem in this namespace matches spec.systems; create one or fix the selector".to_string(),
            ReferenceProblem::StorageNotConfigured => "the operator has no object storage for export bundles; configure it (Helm value storage.url, or --storage-url) and the request continues".to_string(),
            ReferenceProblem::UnknownPurposes {
                policy,
                names,
                known,
            } => format!(
                "ConsentPolicy {policy} defines no purpose or group named {}; use one of {}, a group, or all",
                names.join(", "),
                known.join(", ")
            ),
            ReferenceProblem::PurposesNotApplicable {
                policy,
                names,
                type_,
            } => {
                let hint = match type_ {
                    crate::api::RequestType::ConsentWithdrawal => {
                        "only purposes with lawfulBasis Consent can be withdrawn; use type Objection or Restriction for the others"
                    }
                    _ => "objection applies to purposes based on LegitimateInterests, PublicTask or Consent; use type Restriction for the others",
                };
                format!(
                    "{} in ConsentPolicy {policy}: {hint}",
                    names.join(", ")
                )
            }
            ReferenceProblem::ConsentActionSystemNotFound {
                policy,
                purpose,
                system,
            } => format!(
                "ConsentPolicy {policy} purpose {purpose} has an action on DataSystem {system}, which does not exist in this namespace; create it or fix the policy"
            ),
        }
    }
}

/// The Jobs and per-Job Secrets this request owns.
#[derive(Clone, Debug, Default)]
pub struct Children {
    pub jobs: Vec<JobInfo>,
    /// Names of the per-Job task Secrets that exist.
    pub secrets: Vec<String>,
}

/// One owned Job, read from its labels and status.
#[derive(Clone, Debug)]
pub struct JobInfo {
    pub name: String,
    pub system: String,
    pub step: JobStep,
    pub attempt: u32,
    /// metadata.creationTimestamp.
    pub created_at: Timestamp,
    pub state: JobState,
    /// metadata.deletionTimestamp is set.
    pub deleting: bool,
    /// The worker's result manifest, once the Job finished and the controller read it from
    /// object storage (outcome, reason, message, counts, files, purge verification). `state`
    /// already reflects it (records, failure reason, AwaitingConfirmation).
    pub result: Option<std::sync::Arc<crate::worker::task::Manifest>>,
}

/// Where a Job stands.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    Active,
    Succeeded {
        completed_at: Timestamp,
        /// Records found or changed, from the worker's manifest, when known.
        records: Option<i64>,
    },
    Failed {
        /// CamelCase reason of the Job's Failed condition (e.g. BackoffLimitExceeded) or the
        /// worker's result code. Sanitised before use; never a free-text message.
        reason: String,
        failed_at: Timestamp,
    },
    /// The worker's manifest says outcome `Pending`: the system (an HTTP processor) accepted
    /// the work but had not confirmed it when the worker stopped waiting. Not a failure: the
    /// step is run again at `recheck_at` (the same idempotency key makes the rerun a status
    /// check), spending no retry budget. The controller sets this from the latest attempt's
    /// manifest whatever the Job's own condition; an earlier attempt that ended so shows as
    /// Succeeded (its worker exited 0), which the planner understands.
    AwaitingConfirmation {
        /// When the Job finished.
        checked_at: Timestamp,
        /// The manifest's `retryAfter`; `None`: [`super::step::DEFAULT_RECHECK`] after
        /// `checked_at`.
        recheck_at: Option<Timestamp>,
    },
}

/// The planner's decision.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The complete desired status.
    pub status: DataSubjectRequestStatus,
    /// False when `status` equals the current status: then write nothing.
    pub status_changed: bool,
    /// Effects, in the order to apply them. Use [`Plan::split`]: apply the first part, then
    /// write the status (when `status_changed`), then apply the rest (RemoveFinalizer and the
    /// Events).
    pub actions: Vec<Action>,
    /// Reconcile again after this long: the time to the next deadline (restoreUntil, the
    /// third-party deadline, dueAt, a retry backoff, a legal hold's end, a free Job slot).
    /// `None`: nothing is scheduled; only a change (spec, Job, reference) wakes the request.
    pub requeue_after: Option<std::time::Duration>,
    /// DataSystems on which a Job is waiting for a free slot (spec.concurrency reached). The
    /// controller may wake this request when a Job against one of them finishes.
    pub waiting_for_slots: Vec<String>,
}

impl Plan {
    /// True when the plan asks for nothing: no write, no action.
    pub fn is_noop(&self) -> bool {
        !self.status_changed && self.actions.is_empty()
    }

    /// The actions to apply before writing the status (finalizer, Jobs, Secrets, the export
    /// bundle, whose result goes into the status), and those after it (RemoveFinalizer, after
    /// which the request may be gone, and the Events, which should describe a status that was
    /// written).
    pub fn split(&self) -> (&[Action], &[Action]) {
        let at = self
            .actions
            .iter()
            .position(|a| matches!(a, Action::RemoveFinalizer | Action::RecordEvent(_)))
            .unwrap_or(self.actions.len());
        self.actions.split_at(at)
    }
}

/// One effect for the controller to carry out. Every action is idempotent: applying it twice
/// (after a crash) has the effect of applying it once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Add [`FINALIZER`] to metadata.finalizers.
    AddFinalizer,
    /// Create a worker Job (and its task Secret, named like the Job) owned by the request,
    /// labelled with [`super::jobs::labels`]. `AlreadyExists` means a previous run created it:
    /// treat as success when the existing Job is owned by this request.
    CreateJob(JobRequest),
    /// Delete an owned Job (propagation Background: its Pods and task Secret go with it).
    DeleteJob { name: String },
    /// Delete a task Secret whose Job does not exist.
    DeleteSecret { name: String },
    /// Assemble the export bundle from the workers' manifests of `systems`, list
    /// `integrations` in the manifest, and fill `status.export` (location, sha256, size,
    /// records) of the planned status before writing it. If assembly fails, do not write the
    /// planned status (the next reconcile plans the assembly again).
    AssembleExport {
        systems: Vec<String>,
        integrations: Vec<IntegrationData>,
    },
    /// Delete the request's export bundle (`exports/<ns>/<request>/`) from object storage:
    /// it expired, or the request is being deleted. Objects already gone are fine.
    DeleteExport,
    /// Record a Kubernetes Event on the request.
    RecordEvent(Event),
    /// Remove [`FINALIZER`]; the request then disappears.
    RemoveFinalizer,
}

/// A Job to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobRequest {
    /// Deterministic: see [`super::jobs::job_name`].
    pub name: String,
    pub system: String,
    pub step: JobStep,
    pub attempt: u32,
}

/// Data held by a system the operator cannot export from: the manifest names the vendor to ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IntegrationData {
    pub system: String,
    pub vendor: Option<String>,
    pub contact: Option<String>,
}

/// An Event to record. Messages never contain identifiers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}
