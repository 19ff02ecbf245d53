//! Consent: how Restriction, Objection and ConsentWithdrawal requests resolve their purposes
//! through a ConsentPolicy ([`resolve`]).

pub mod policy;
pub mod resolve;

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;

pub use resolve::{NamespaceSystem, PurposePlan, SystemPurposes, resolve};
