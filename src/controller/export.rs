//! Assembling the export bundle of an Access or Portability request.
//!
//! TODO(workers issue): the bundle (manifest of files with record counts and sha256, the
//! integration-data list naming vendors, optional age encryption) is written to object
//! storage from the workers' per-system manifests once the workers and the object-store
//! abstraction exist. Until then the controller records only what is real: the total record
//! count when every exporting Job reported one. `location`, `sha256` and `size` stay empty
//! rather than pointing at a bundle that does not exist.

use crate::api::{DataSubjectRequestStatus, request::ExportStatus};
use crate::plan::IntegrationData;

/// Fills `status.export` for the exported `systems` (the planned status already holds the
/// format and expiry).
pub(super) fn assemble(
    status: &mut DataSubjectRequestStatus,
    systems: &[String],
    integrations: &[IntegrationData],
) {
    let records: Option<i64> = systems
        .iter()
        .map(|name| {
            status
                .systems
                .iter()
                .find(|e| &e.name == name)
                .and_then(|e| e.records)
        })
        .sum();
    let export = status.export.get_or_insert_with(ExportStatus::default);
    export.records = records;
    tracing::debug!(
        systems = systems.len(),
        integrations = integrations.len(),
        records = ?records,
        "export recorded (bundle assembly pending the object store)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request::{SystemPhase, SystemProgress};

    fn entry(name: &str, records: Option<i64>) -> SystemProgress {
        SystemProgress {
            name: name.into(),
            third_party: false,
            step: None,
            phase: SystemPhase::Succeeded,
            job_name: None,
            attempts: 1,
            next_attempt_at: None,
            records,
            message: None,
            last_transition_time: None,
        }
    }

    #[test]
    fn records_are_summed_only_when_every_system_reported() {
        let mut s = DataSubjectRequestStatus {
            systems: vec![entry("a", Some(3)), entry("b", Some(4))],
            ..Default::default()
        };
        assemble(&mut s, &["a".into(), "b".into()], &[]);
        assert_eq!(s.export.as_ref().unwrap().records, Some(7));
        s.systems[1].records = None;
        assemble(&mut s, &["a".into(), "b".into()], &[]);
        assert_eq!(s.export.as_ref().unwrap().records, None);
        assert_eq!(s.export.as_ref().unwrap().location, None);
    }
}
