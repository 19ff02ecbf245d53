//! The one error type of the operator.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("cannot load the Kubernetes client configuration: {0}")]
    KubeConfig(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the Kubernetes API emulator: {0}")]
    Emulator(String),

    #[error("worker: {0}")]
    Worker(String),

    #[error("{0}")]
    NotImplemented(&'static str),

    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),

    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("configuration: {0}")]
    Config(String),

    #[error("the object has no {0}")]
    MissingField(&'static str),

    /// An object the operator would create exists but belongs to someone else; the operator
    /// never takes it over.
    #[error("{kind} {name} exists but is not owned by {owner}; delete or rename it")]
    NotOwned {
        kind: &'static str,
        name: String,
        owner: String,
    },

    /// A worker's task cannot be built (the subject Secret, a rectification value or a
    /// connection Secret cannot be read). The message names Secrets and keys, never values.
    #[error("cannot build the worker task: {0}")]
    TaskInput(String),

    /// Object storage failed (reading a worker's manifest, writing the export bundle);
    /// the reconcile is retried.
    #[error("object storage: {0}")]
    Storage(#[from] crate::storage::StorageError),

    /// This replica stopped leading (another took the Lease, or renewal failed past the
    /// renew deadline); the process exits so the Pod restarts as a standby.
    #[error("lost leadership: {0}")]
    LeadershipLost(String),
}

impl Error {
    /// A write lost a race with another writer (409 Conflict): plan again from fresh state.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.is_conflict())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
