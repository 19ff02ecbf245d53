//! Assembling the export bundle of an Access or Portability request.
//!
//! Every exporting worker left its files and a per-system `manifest.json` below
//! `exports/<ns>/<request>/<system>/`; the controller already read those manifests
//! ([`super::results`]). Assembly checks that every listed file is there with the size the
//! worker recorded, then writes the bundle manifest `exports/<ns>/<request>/manifest.json`
//! LAST, in one PUT, so a bundle manifest only ever describes complete files: storage down
//! half-way leaves no manifest, and the next reconcile tries again.
//!
//! The bundle manifest lists the systems, their files (records, size, SHA-256, path and a
//! presigned download URL), the integration data held by vendors the operator cannot
//! export from (with whom to ask), when it was created and when it expires. It holds no
//! personal data. Re-running assembly (a crash before the status was written) finds the
//! bundle it wrote before and keeps it as it is when it describes the same files.

use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::DataSubjectRequestStatus;
use crate::api::request::{ExportFormat, ExportSpec, ExportStatus};
use crate::plan::timeline::{fmt, time};
use crate::plan::{IntegrationData, JobInfo, JobState, JobStep};
use crate::storage::{StorageError, Store};
use crate::worker::MANIFEST_FILE;
use crate::worker::task::{Manifest, Outcome};
use crate::{Error, Result};

use super::worker::EXPORTS;

/// Version of the bundle manifest format.
pub const BUNDLE_VERSION: &str = "privacy-operator.dev/export/v1";
/// How long presigned download links (of the bundle manifest and of every file) work, at
/// most; never past the bundle's expiry.
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(24 * 3600);

/// The request being exported and what its workers produced.
pub(super) struct Request<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: Option<&'a ExportSpec>,
    /// The request's Jobs, with the workers' manifests attached.
    pub jobs: &'a [JobInfo],
    /// Systems exported (one successful export Job each).
    pub systems: &'a [String],
    /// Systems listed as integration data.
    pub integrations: &'a [IntegrationData],
}

/// The bundle manifest (`exports/<ns>/<request>/manifest.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub version: String,
    pub request: BundleRequest,
    /// RFC 3339: when the bundle was assembled.
    pub created: String,
    /// RFC 3339: when the operator deletes the bundle (the policy's exportExpiry).
    pub expires: String,
    /// Format of the files (NDJSON: one JSON record per line).
    pub format: ExportFormat,
    /// True when every file is age-encrypted to `recipient` (this manifest is not).
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Records over all systems.
    pub records: u64,
    pub systems: Vec<BundleSystem>,
    /// Data the operator cannot export: ask the vendor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub integration_data: Vec<BundleIntegration>,
    /// RFC 3339: when the `url`s of the files stop working.
    pub download_urls_expire_at: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BundleRequest {
    pub namespace: String,
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BundleSystem {
    pub name: String,
    pub records: u64,
    pub files: Vec<BundleFile>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BundleFile {
    /// Relative to the bundle manifest, e.g. `crm/contacts.ndjson` (`.age` when encrypted).
    pub path: String,
    pub table: String,
    pub format: String,
    pub records: u64,
    pub size: u64,
    /// Lower-case hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// Presigned download URL (a `file://` URL for local storage).
    pub url: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BundleIntegration {
    pub system: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    pub note: String,
}

/// Key of the bundle manifest below the storage root.
pub fn bundle_key(namespace: &str, request: &str) -> String {
    format!("{EXPORTS}/{namespace}/{request}/{MANIFEST_FILE}")
}

/// Deletes the request's bundle with every file of it (expired, or the request is being
/// deleted). Without object storage no bundle was ever written.
pub(super) async fn delete(store: Option<&Store>, namespace: &str, request: &str) -> Result<()> {
    let Some(store) = store else {
        return Ok(());
    };
    let deleted = store
        .delete_prefix(&format!("{EXPORTS}/{namespace}/{request}"))
        .await
        .map_err(Error::Storage)?;
    tracing::info!(
        request = %format!("{namespace}/{request}"),
        objects = deleted,
        "deleted the export bundle"
    );
    Ok(())
}

/// Writes the bundle of `systems` (their latest successful export Jobs' manifests are in
/// `jobs`) and fills `status.export`. `status.export.expiresAt` (planned) is the bundle's
/// expiry.
pub(super) async fn assemble(
    store: Option<&Store>,
    request: Request<'_>,
    status: &mut DataSubjectRequestStatus,
    now: Timestamp,
) -> Result<()> {
    let (jobs, systems, integrations) = (request.jobs, request.systems, request.integrations);
    let store = store.ok_or_else(|| {
        Error::Config("no object storage is configured for export bundles".into())
    })?;
    let export = status.export.get_or_insert_with(ExportStatus::default);
    let expires = export.expires_at.as_ref().map_or(now, |t| t.0);
    let root = store.child(&format!("{EXPORTS}/{}/{}", request.namespace, request.name));

    let mut bundle_systems = Vec::new();
    for name in systems {
        let manifest = system_manifest(jobs, name)?;
        bundle_systems.push(bundle_system(&root, name, manifest).await?);
    }
    bundle_systems.sort_by(|a, b| a.name.cmp(&b.name));
    let mut integration_data: Vec<BundleIntegration> = integrations
        .iter()
        .map(|i| BundleIntegration {
            system: i.system.clone(),
            vendor: i.vendor.clone(),
            contact: i.contact.clone(),
            note: match (&i.vendor, &i.contact) {
                (Some(v), Some(c)) => format!(
                    "data held by {v} cannot be exported by the operator; ask {v} ({c}) for it"
                ),
                (Some(v), None) => {
                    format!("data held by {v} cannot be exported by the operator; ask {v} for it")
                }
                _ => "data in this system cannot be exported by the operator; ask its owner"
                    .to_string(),
            },
        })
        .collect();
    integration_data.sort_by(|a, b| a.system.cmp(&b.system));

    let recipient = request.spec.and_then(|s| s.recipient.clone());
    let existing = read_bundle(&root).await?;
    let reusable = existing.filter(|b| {
        same_content(&b.systems, &bundle_systems)
            && b.integration_data == integration_data
            && b.recipient == recipient
            && b.download_urls_expire_at
                .parse::<Timestamp>()
                .is_ok_and(|t| t > now)
    });
    let (bundle, bytes) = match reusable {
        Some(b) => {
            let bytes = serde_json::to_vec_pretty(&b)?;
            (b, bytes)
        }
        None => {
            let urls_expire = url_expiry(now, expires);
            let ttl = remaining(now, urls_expire);
            for s in &mut bundle_systems {
                for f in &mut s.files {
                    f.url = root.presign_get(&f.path, ttl).await?;
                }
            }
            let bundle = Bundle {
                version: BUNDLE_VERSION.into(),
                request: BundleRequest {
                    namespace: request.namespace.into(),
                    name: request.name.into(),
                },
                created: fmt(now),
                expires: fmt(expires),
                format: ExportFormat::Ndjson,
                encrypted: recipient.is_some(),
                recipient,
                records: bundle_systems.iter().map(|s| s.records).sum(),
                systems: bundle_systems,
                integration_data,
                download_urls_expire_at: fmt(urls_expire),
            };
            let bytes = serde_json::to_vec_pretty(&bundle)?;
            // The commit point: one PUT, after every file was checked.
            root.put(MANIFEST_FILE, Bytes::from(bytes.clone())).await?;
            (bundle, bytes)
        }
    };

    let urls_expire: Timestamp = bundle
        .download_urls_expire_at
        .parse()
        .map_err(|e| Error::Config(format!("bundle manifest downloadUrlsExpireAt: {e}")))?;
    let download_url = root
        .presign_get(MANIFEST_FILE, remaining(now, urls_expire))
        .await?;
    let files_size: u64 = bundle
        .systems
        .iter()
        .flat_map(|s| &s.files)
        .map(|f| f.size)
        .sum();
    let export = status.export.get_or_insert_with(ExportStatus::default);
    export.location = Some(root.url(MANIFEST_FILE));
    export.sha256 = Some(hex::encode(Sha256::digest(&bytes)));
    export.size = i64::try_from(files_size + bytes.len() as u64).ok();
    export.records = i64::try_from(bundle.records).ok();
    export.format = Some(bundle.format);
    export.encrypted = bundle.encrypted;
    if let Ok(t) = bundle.expires.parse::<Timestamp>() {
        export.expires_at = Some(time(t));
    }
    export.download_url = Some(download_url);
    export.download_url_expires_at = Some(time(urls_expire));
    tracing::info!(
        request = %format!("{}/{}", request.namespace, request.name),
        systems = bundle.systems.len(),
        integrations = bundle.integration_data.len(),
        records = bundle.records,
        "export bundle assembled"
    );
    Ok(())
}

/// The manifest of the latest successful export of `system`.
fn system_manifest<'a>(jobs: &'a [JobInfo], system: &str) -> Result<&'a Manifest> {
    jobs.iter()
        .filter(|j| j.system == system && j.step == JobStep::Export)
        .filter(|j| matches!(j.state, JobState::Succeeded { .. }))
        .max_by_key(|j| j.attempt)
        .and_then(|j| j.result.as_deref())
        .filter(|m| m.outcome == Outcome::Succeeded)
        .ok_or_else(|| {
            Error::Storage(StorageError::other(format!(
                "the export of system {system} finished but its manifest.json is missing or unreadable; the export is retried"
            )))
        })
}

/// A system's part of the bundle, each file checked against what is stored.
async fn bundle_system(root: &Store, name: &str, manifest: &Manifest) -> Result<BundleSystem> {
    let mut files = Vec::new();
    for f in &manifest.files {
        let path = format!("{name}/{}", f.path);
        match root.head(&path).await? {
            Some(o) if o.size == f.size => {}
            found => {
                return Err(Error::Storage(StorageError::other(format!(
                    "export file {} is {} (its manifest says {} bytes); the export is retried",
                    root.url(&path),
                    found.map_or("missing".to_string(), |o| format!("{} bytes", o.size)),
                    f.size
                ))));
            }
        }
        files.push(BundleFile {
            path,
            table: f.table.clone(),
            format: f.format.clone(),
            records: f.records,
            size: f.size,
            sha256: f.sha256.clone(),
            url: String::new(),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(BundleSystem {
        name: name.to_string(),
        records: files.iter().map(|f| f.records).sum(),
        files,
    })
}

async fn read_bundle(root: &Store) -> Result<Option<Bundle>> {
    Ok(root
        .get(MANIFEST_FILE)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Same files with the same checksums (URLs aside).
fn same_content(a: &[BundleSystem], b: &[BundleSystem]) -> bool {
    let strip = |s: &[BundleSystem]| -> Vec<BundleSystem> {
        s.iter()
            .map(|s| BundleSystem {
                files: s
                    .files
                    .iter()
                    .map(|f| BundleFile {
                        url: String::new(),
                        ..f.clone()
                    })
                    .collect(),
                ..s.clone()
            })
            .collect()
    };
    strip(a) == strip(b)
}

/// Links live [`DOWNLOAD_URL_TTL`], never past the bundle's expiry (at least one minute).
fn url_expiry(now: Timestamp, expires: Timestamp) -> Timestamp {
    let ttl = jiff::SignedDuration::try_from(DOWNLOAD_URL_TTL).unwrap_or_default();
    let wanted = now.checked_add(ttl).unwrap_or(now);
    let floor = now
        .checked_add(jiff::SignedDuration::from_secs(60))
        .unwrap_or(now);
    // Whole seconds, like status timestamps.
    let t = wanted.min(expires).max(floor);
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn remaining(now: Timestamp, until: Timestamp) -> Duration {
    Duration::try_from(until.duration_since(now))
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageTarget;
    use crate::worker::task::{FileEntry, TableCount};
    use std::sync::Arc;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn store(dir: &std::path::Path) -> Store {
        Store::open(&StorageTarget::new(format!("file://{}", dir.display()))).unwrap()
    }

    async fn worker_output(store: &Store, system: &str, rows: &[&str]) -> JobInfo {
        let out = store.child(&format!("exports/ns/r/{system}"));
        let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
        let info = out
            .put("contacts.ndjson", Bytes::from(body.clone()))
            .await
            .unwrap();
        let mut m = Manifest::new(system, JobStep::Export);
        m.tables.insert(
            "contacts".into(),
            TableCount {
                rows: rows.len() as u64,
                detached: 0,
            },
        );
        m.files.push(FileEntry {
            path: "contacts.ndjson".into(),
            table: "contacts".into(),
            format: "ndjson".into(),
            records: rows.len() as u64,
            size: info.size,
            sha256: info.sha256,
        });
        JobInfo {
            name: format!("r-{system}-export-1"),
            system: system.into(),
            step: JobStep::Export,
            attempt: 1,
            created_at: t("2024-01-01T00:00:00Z"),
            state: JobState::Succeeded {
                completed_at: t("2024-01-01T00:01:00Z"),
                records: Some(rows.len() as i64),
            },
            deleting: false,
            result: Some(Arc::new(m)),
        }
    }

    fn status(expires: &str) -> DataSubjectRequestStatus {
        DataSubjectRequestStatus {
            export: Some(ExportStatus {
                expires_at: Some(time(t(expires))),
                format: Some(ExportFormat::Json),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn req<'a>(
        jobs: &'a [JobInfo],
        systems: &'a [String],
        integrations: &'a [IntegrationData],
    ) -> Request<'a> {
        Request {
            namespace: "ns",
            name: "r",
            spec: None,
            jobs,
            systems,
            integrations,
        }
    }

    #[tokio::test]
    async fn bundle_lists_files_integrations_and_is_reused_on_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let jobs = vec![
            worker_output(&store, "crm", &["{\"id\":1}", "{\"id\":2}"]).await,
            worker_output(&store, "billing", &["{\"id\":3}"]).await,
        ];
        let vendor = IntegrationData {
            system: "mailer".into(),
            vendor: Some("Acme Mailer".into()),
            contact: Some("privacy@acme.example".into()),
        };
        let now = t("2024-01-02T00:00:00Z");
        let mut s = status("2024-01-09T00:00:00Z");
        let systems = ["crm".to_string(), "billing".to_string()];
        let vendors = [vendor];
        assemble(Some(&store), req(&jobs, &systems, &vendors), &mut s, now)
            .await
            .unwrap();
        let e = s.export.clone().unwrap();
        assert_eq!(e.records, Some(3));
        assert_eq!(e.format, Some(ExportFormat::Ndjson));
        assert_eq!(
            e.download_url_expires_at,
            Some(time(t("2024-01-03T00:00:00Z")))
        );
        let location = e.location.clone().unwrap();
        assert!(
            location.ends_with("exports/ns/r/manifest.json"),
            "{location}"
        );
        let bytes = std::fs::read(dir.path().join("exports/ns/r/manifest.json")).unwrap();
        assert_eq!(
            e.sha256.as_deref(),
            Some(hex::encode(Sha256::digest(&bytes)).as_str())
        );
        let bundle: Bundle = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(bundle.systems[0].name, "billing");
        assert_eq!(bundle.systems[1].files[0].path, "crm/contacts.ndjson");
        assert!(bundle.systems[1].files[0].url.starts_with("file://"));
        assert_eq!(
            bundle.integration_data[0].vendor.as_deref(),
            Some("Acme Mailer")
        );
        assert!(
            bundle.integration_data[0]
                .note
                .contains("privacy@acme.example")
        );

        // A rerun (crash before the status write) keeps the same bundle.
        let mut again = status("2024-01-09T00:00:05Z");
        let later = t("2024-01-02T00:00:05Z");
        assemble(
            Some(&store),
            req(&jobs, &systems, &vendors),
            &mut again,
            later,
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("exports/ns/r/manifest.json")).unwrap(),
            bytes
        );
        assert_eq!(again.export.unwrap().sha256, e.sha256);
    }

    #[tokio::test]
    async fn missing_files_or_manifests_publish_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let jobs = vec![worker_output(&store, "crm", &["{\"id\":1}"]).await];
        let now = t("2024-01-02T00:00:00Z");
        // A system whose export left no manifest.
        let mut s = status("2024-01-09T00:00:00Z");
        let both = ["crm".to_string(), "web".to_string()];
        let err = assemble(Some(&store), req(&jobs, &both, &[]), &mut s, now)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("web"), "{err}");
        // A file that went missing.
        store
            .delete("exports/ns/r/crm/contacts.ndjson")
            .await
            .unwrap();
        let crm = ["crm".to_string()];
        let err = assemble(Some(&store), req(&jobs, &crm, &[]), &mut s, now)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!dir.path().join("exports/ns/r/manifest.json").exists());
        assert!(
            assemble(None, req(&jobs, &crm, &[]), &mut s, now)
                .await
                .is_err()
        );
    }

    #[test]
    fn link_expiry_is_bounded_by_the_bundle() {
        let now = t("2024-01-01T00:00:00Z");
        assert_eq!(
            url_expiry(now, t("2024-02-01T00:00:00Z")),
            t("2024-01-02T00:00:00Z")
        );
        assert_eq!(
            url_expiry(now, t("2024-01-01T02:00:00Z")),
            t("2024-01-01T02:00:00Z")
        );
        assert_eq!(url_expiry(now, now), t("2024-01-01T00:01:00Z"));
    }
}
