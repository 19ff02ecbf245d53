//! The privacy-operator API: resource types of group `privacy-operator.dev`, version
//! `v1alpha1`, their validation (schema and CEL rules) and the helpers controllers use on them.
//!
//! - [`request`] — `DataSubjectRequest` (short name `dsr`)
//! - [`datasystem`] and [`datamap`] — `DataSystem` (`dsys`) and its data map
//! - [`retention`] — `RetentionPolicy` (`rpol`)
//! - [`consent`] — `ConsentPolicy` (`cpol`)
//! - [`subject`] — identifiers, their normal form and the salted subject digest
//! - [`conditions`] — metav1.Condition helpers
//! - [`duration`], [`schedule`] — calendar durations, cron schedules, time zones
//! - [`crd`] — the generated CRDs and the `crds/` files

pub mod cel;
pub mod conditions;
pub mod consent;
pub mod crd;
pub mod datamap;
pub mod datasystem;
pub mod duration;
pub mod reference;
pub mod refs;
pub mod regulation;
pub mod request;
pub mod retention;
pub mod schedule;
pub mod subject;

pub use consent::{ConsentPolicy, ConsentPolicySpec, ConsentPolicyStatus};
pub use crd::{crds, crds_yaml, write_crds};
pub use datasystem::{DataSystem, DataSystemSpec, DataSystemStatus};
pub use duration::Duration;
pub use reference::reference_markdown;
pub use regulation::Regulation;
pub use request::{
    DataSubjectRequest, DataSubjectRequestSpec, DataSubjectRequestStatus, RequestType,
};
pub use retention::{RetentionPolicy, RetentionPolicySpec, RetentionPolicyStatus};
pub use subject::{IdentifierKind, IdentifierSet, SubjectDigest};

/// API group of every privacy-operator resource.
pub const GROUP: &str = "privacy-operator.dev";
/// API version served.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get privacy` lists every privacy-operator resource.
pub const CATEGORY: &str = "privacy";
