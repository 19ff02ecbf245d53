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

    #[error("{0}")]
    NotImplemented(&'static str),

    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),

    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
