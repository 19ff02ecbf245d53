//! privacy-operator turns privacy obligations (GDPR, UK GDPR, CCPA/CPRA, LGPD) into declarative
//! Kubernetes resources. See the README for the tour and `api` for the resource reference.

pub mod api;
pub mod cli;
pub mod controller;
pub mod dev;
pub mod error;
pub mod ledger;
pub mod plan;
pub mod runtime;
pub mod storage;
pub mod telemetry;
pub mod worker;

pub use error::{Error, Result};
