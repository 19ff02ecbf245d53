//! Access and Portability: one export Job per exportable system, then the bundle.
//!
//! A system that cannot be exported from (integration data held by a vendor) is not skipped
//! silently: its entry says Unsupported and names the vendor, and the bundle's manifest lists
//! it as the place to ask.

use crate::api::{
    conditions::{Status, types},
    request::{ExportStatus, RequestPhase, Step, SystemPhase, SystemProgress},
};

use super::{
    conditions::Outcome,
    jobs::JobStep,
    model::{Action, EventType, IntegrationData},
    planner::Planner,
    step::{Progress, drive},
    timeline::{add, fmt, time},
};

pub(crate) fn run(p: &mut Planner) -> Outcome {
    let systems: Vec<(String, bool)> = p
        .status
        .systems
        .iter()
        .map(|e| (e.name.clone(), e.third_party))
        .collect();
    let mut exported = Vec::new();
    let mut integrations = Vec::new();
    let mut pending = false;
    for (name, third_party) in &systems {
        let Some(info) = p.system(name) else {
            // The gate refuses requests whose systems are gone; nothing to do here.
            continue;
        };
        if !info.exportable {
            let vendor = info.vendor.as_ref();
            let msg = match vendor {
                Some(v) => format!(
                    "data held by {} cannot be exported by the operator; the export manifest lists it with the vendor's privacy contact {}",
                    v.name, v.contact
                ),
                None => "data in this system cannot be exported by the operator; the export manifest lists it".to_string(),
            };
            let now = p.now;
            p.put_entry(
                SystemProgress {
                    name: name.clone(),
                    third_party: *third_party,
                    step: Some(Step::Export),
                    phase: SystemPhase::Unsupported,
                    job_name: None,
                    attempts: 0,
                    next_attempt_at: None,
                    records: None,
                    message: Some(msg),
                    last_transition_time: None,
                },
                now,
            );
            integrations.push(IntegrationData {
                system: name.clone(),
                vendor: vendor.map(|v| v.name.clone()),
                contact: vendor.map(|v| v.contact.clone()),
            });
            continue;
        }
        match drive(p, name, *third_party, JobStep::Export, true, &[]) {
            Progress::Done { .. } => exported.push(name.clone()),
            Progress::Failed => {}
            _ => pending = true,
        }
    }
    if !p.failures.is_empty() {
        // One system's data missing makes the bundle incomplete: stop here.
        return Outcome::Failed;
    }
    if pending {
        return Outcome::Progressing {
            phase: RequestPhase::InProgress,
            reason: "Exporting",
            message: format!(
                "exporting from {} system(s)",
                systems.len() - integrations.len()
            ),
        };
    }
    let n_exported = exported.len();
    let n_integrations = integrations.len();
    if !p.was_true(types::EXPORTED) {
        p.actions.push(Action::AssembleExport {
            systems: exported,
            integrations,
        });
        let spec_export = p.spec().export.clone().unwrap_or_default();
        let expires = add(&p.policy().export_expiry, p.stamp);
        let export = p.status.export.get_or_insert_with(ExportStatus::default);
        export.format = Some(spec_export.format);
        export.encrypted = spec_export.recipient.is_some();
        export.expires_at = Some(time(expires));
    }
    let msg = format!(
        "exported from {n_exported} system(s); {n_integrations} listed as integration data held by vendors"
    );
    p.set(types::EXPORTED, Status::True, "Exported", &msg);
    let expires = p
        .status
        .export
        .as_ref()
        .and_then(|e| e.expires_at.as_ref())
        .map(|t| fmt(t.0))
        .unwrap_or_default();
    Outcome::Done {
        phase: RequestPhase::Completed,
        reason: "Exported",
        message: format!("{msg}; the bundle expires at {expires}"),
    }
}

/// A finished Access or Portability request: its bundle is deleted from object storage at
/// `export.expiresAt` (the policy's exportExpiry), or when the request itself is deleted, and
/// status says when. Until then the request wakes at the expiry.
pub(crate) fn expire(p: &mut Planner) {
    let Some(export) = p.status.export.as_ref() else {
        return;
    };
    if export.deleted_at.is_some() || export.location.is_none() {
        return;
    }
    let Some(expires) = export.expires_at.as_ref().map(|t| t.0) else {
        return;
    };
    let deleting = p.input.request.deleting;
    if !deleting && p.now < expires {
        p.wake_at(expires);
        return;
    }
    p.actions.push(Action::DeleteExport);
    let now = p.now;
    if let Some(export) = p.status.export.as_mut() {
        export.deleted_at = Some(time(now));
        export.download_url = None;
        export.download_url_expires_at = None;
    }
    if !deleting {
        p.event(
            EventType::Normal,
            "ExportExpired",
            format!(
                "the export bundle expired at {} and was deleted from object storage",
                fmt(expires)
            ),
        );
    }
}
