//! The object-storage connector: a subject's objects are everything below a per-subject
//! prefix of a bucket (or directory), named by a template such as `users/{userId}/`.
//!
//! - Export copies each object into the output as `objects/<key>` (age-encrypted like every
//!   export file when the request has a recipient) and lists it in the manifest with its
//!   size and SHA-256.
//! - SoftDelete moves each object into the task's quarantine as `objects/<key>.age`,
//!   encrypted to the operator's quarantine key: copy first, then delete the original, so a
//!   crash leaves every object in one place or both, never in none. Reruns move what is left.
//! - Restore moves the quarantined objects back (an object that exists again at its key is
//!   kept and its quarantined copy dropped), then deletes the copies.
//! - Purge deletes the subject's objects and their quarantined copies, then lists both again:
//!   the verification's `remaining` has `objects` (left below the subject's prefix) and
//!   `quarantine`, both zero when it passed.
//! - Restrict and Rectify have nothing to act on: objects carry no fields.
//!
//! Placeholders take the subject's identifier as given (trimmed, not lower-cased: object
//! keys are case-sensitive). A placeholder whose identifier the request does not give fails
//! the task (InvalidTask), and so does a value that could leave the prefix (`/`, `\`, `..`,
//! control characters). Copies hold one object in memory at a time.

use std::str::FromStr;

use bytes::Bytes;

use super::WorkerError;
use super::output::{Output, storage_error};
use super::quarantine::{LineSink, Quarantine, VERIFICATION_KEY};
use super::task::{FileEntry, Manifest, TableCount, Task};
use crate::api::datasystem::ObjectStorageConnector;
use crate::api::subject::{IdentifierKind, IdentifierSet};
use crate::plan::jobs::JobStep;
use crate::storage::{StorageTarget, Store};

/// The manifest's table name for objects.
pub const TABLE: &str = "objects";
/// Where objects go in an export output and in a quarantine.
const OBJECTS_DIR: &str = "objects";
/// Suffix of quarantined (encrypted) objects.
const QUARANTINE_SUFFIX: &str = ".age";

/// Renders `template` with the subject's identifiers.
pub fn subject_prefix(template: &str, ids: &IdentifierSet) -> Result<String, WorkerError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('}').ok_or_else(|| {
            WorkerError::invalid(format!("prefix template {template:?} has an unclosed {{"))
        })?;
        let name = &after[..end];
        let kind = IdentifierKind::from_str(name).map_err(|_| {
            WorkerError::invalid(format!(
                "prefix template {template:?} names {{{name}}}, which is not an identifier kind (email, phone, userId, customerId, externalIds.<name>)"
            ))
        })?;
        let value = ids.get(&kind).map(str::trim).ok_or_else(|| {
            WorkerError::invalid(format!(
                "prefix template {template:?} needs the subject's {kind}, which the request does not give; add it to the request's identifiers"
            ))
        })?;
        check_segment(&kind, value)?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if out.contains('}') {
        return Err(WorkerError::invalid(format!(
            "prefix template {template:?} has an unmatched }}"
        )));
    }
    let prefix = out.trim_start_matches('/');
    if prefix.trim_matches('/').is_empty() {
        return Err(WorkerError::invalid(format!(
            "prefix template {template:?} renders to an empty prefix: it would select every object"
        )));
    }
    Ok(prefix.to_string())
}

/// A value spliced into a key must stay one path segment. The message names the identifier
/// kind, never the value (personal data).
fn check_segment(kind: &IdentifierKind, value: &str) -> Result<(), WorkerError> {
    let bad = value.is_empty()
        || value == "."
        || value.contains("..")
        || value.contains(['/', '\\'])
        || value.chars().any(char::is_control);
    if bad {
        return Err(WorkerError::invalid(format!(
            "the subject's {kind} cannot be used in an object key: it is empty or contains '/', '\\', '..' or control characters"
        )));
    }
    Ok(())
}

/// Runs `task` against the object-storage system `connector` and fills `manifest`.
pub async fn run(
    task: &Task,
    connector: &ObjectStorageConnector,
    output: &Output,
    manifest: &mut Manifest,
) -> Result<(), WorkerError> {
    let prefix = subject_prefix(&connector.prefix, &task.identifiers)?;
    let target = StorageTarget::from_vars(
        &connector.url,
        task.credentials.iter().map(|(k, v)| (k.clone(), v.clone())),
    )
    .map_err(storage_error)?;
    let store = Store::open(&target).map_err(storage_error)?;
    let mut run = Run {
        store,
        prefix,
        manifest,
    };
    match task.step {
        JobStep::Export => run.export(output).await,
        JobStep::SoftDelete => run.soft_delete(&Quarantine::from_task(task, true)?).await,
        JobStep::Restore => run.restore(&Quarantine::from_task(task, true)?).await,
        JobStep::Purge => {
            let quarantine = match task.quarantine {
                Some(_) => Some(Quarantine::from_task(task, false)?),
                None => None,
            };
            run.purge(quarantine.as_ref()).await
        }
        JobStep::Restrict => {
            run.manifest.message =
                "object storage holds no fields to restrict; objects are kept as they are".into();
            Ok(())
        }
        JobStep::Rectify => Err(WorkerError::invalid(
            "an object-storage system has no rectifiable fields; rectify the objects' source system instead",
        )),
        JobStep::ThirdPartyPurge => Err(WorkerError::unsupported(
            "a third-party purge is done by the HTTP connector, not by an object-storage system",
        )),
        other => Err(WorkerError::invalid(format!(
            "step {other:?} comes as its own task, not to the object-storage connector"
        ))),
    }
}

struct Run<'m> {
    /// The system's store (at its URL's root).
    store: Store,
    /// The subject's prefix below it.
    prefix: String,
    manifest: &'m mut Manifest,
}

impl Run<'_> {
    /// Keys of the subject's objects, relative to the system's root.
    async fn keys(&self) -> Result<Vec<String>, WorkerError> {
        let listed = self
            .store
            .child(&self.prefix)
            .list("")
            .await
            .map_err(storage_error)?;
        let base = self.prefix.trim_end_matches('/');
        Ok(listed
            .into_iter()
            .map(|o| format!("{base}/{}", o.key))
            .collect())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, WorkerError> {
        self.store.get(key).await.map_err(storage_error)
    }

    fn count(&mut self, n: u64) {
        self.manifest
            .tables
            .entry(TABLE.to_string())
            .or_default()
            .rows += n;
    }

    async fn export(&mut self, output: &Output) -> Result<(), WorkerError> {
        self.manifest
            .tables
            .insert(TABLE.to_string(), TableCount::default());
        for key in self.keys().await? {
            // Deleted between listing and reading: not the subject's any more.
            let Some(bytes) = self.get(&key).await? else {
                continue;
            };
            let mut file = output.ndjson(&format!("{OBJECTS_DIR}/{key}")).await?;
            let path = file.key().to_string();
            if let Err(e) = LineSink::write_chunk(&mut file, &bytes).await {
                file.abort().await;
                return Err(e);
            }
            let (_, size, sha256) = file.finish().await?;
            self.count(1);
            self.manifest.files.push(FileEntry {
                path,
                table: TABLE.into(),
                format: "object".into(),
                records: 1,
                size,
                sha256,
            });
        }
        self.manifest.message = format!("exported {} objects", self.manifest.files.len());
        Ok(())
    }

    async fn soft_delete(&mut self, q: &Quarantine) -> Result<(), WorkerError> {
        self.manifest
            .tables
            .insert(TABLE.to_string(), TableCount::default());
        for key in self.keys().await? {
            let Some(bytes) = self.get(&key).await? else {
                continue;
            };
            let mut writer = q
                .writer_at(&format!("{OBJECTS_DIR}/{key}{QUARANTINE_SUFFIX}"))
                .await?;
            if let Err(e) = writer.write_chunk(&bytes).await {
                writer.abort().await;
                return Err(e);
            }
            // Stored in quarantine before the original goes.
            writer.finish().await?;
            self.store.delete(&key).await.map_err(storage_error)?;
            self.count(1);
        }
        self.manifest.message = format!(
            "moved {} objects into the encrypted quarantine",
            self.manifest.total_rows()
        );
        Ok(())
    }

    async fn restore(&mut self, q: &Quarantine) -> Result<(), WorkerError> {
        self.manifest
            .tables
            .insert(TABLE.to_string(), TableCount::default());
        let quarantined = q
            .store()
            .child(OBJECTS_DIR)
            .list("")
            .await
            .map_err(storage_error)?;
        for object in quarantined {
            let Some(key) = object.key.strip_suffix(QUARANTINE_SUFFIX) else {
                continue;
            };
            // Only ever back below the subject's prefix, whatever the quarantine holds.
            let below = format!("{}/", self.prefix.trim_end_matches('/'));
            if !key.starts_with(&below) || key.split('/').any(|s| s == "..") {
                return Err(WorkerError::invalid(format!(
                    "quarantined object {key} is not below the subject's prefix; refusing to restore it"
                )));
            }
            let copy = format!("{OBJECTS_DIR}/{}", object.key);
            let present = self.store.head(key).await.map_err(storage_error)?.is_some();
            if !present {
                let plain = q.read_object(&copy).await?;
                self.store.put(key, plain).await.map_err(storage_error)?;
                self.count(1);
            }
            q.store().delete(&copy).await.map_err(storage_error)?;
        }
        self.manifest.message = format!(
            "restored {} objects from the quarantine",
            self.manifest.total_rows()
        );
        Ok(())
    }

    async fn purge(&mut self, q: Option<&Quarantine>) -> Result<(), WorkerError> {
        let keys = self.keys().await?;
        for key in &keys {
            self.store.delete(key).await.map_err(storage_error)?;
        }
        self.manifest.tables.insert(
            TABLE.to_string(),
            TableCount {
                rows: keys.len() as u64,
                detached: 0,
            },
        );
        let mut remaining = std::collections::BTreeMap::new();
        remaining.insert(TABLE.to_string(), self.keys().await?.len() as u64);
        if let Some(q) = q {
            remaining.insert(VERIFICATION_KEY.to_string(), q.destroy().await?);
        }
        super::record_verification(
            self.manifest,
            remaining,
            "objects were found below the subject's prefix after the purge (uploaded concurrently?)",
        )?;
        self.manifest.message = format!(
            "purged {} objects; verification found none left",
            keys.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> IdentifierSet {
        serde_json::from_value(serde_json::json!({
            "email": "Jane@Example.com", "userId": " u-42 ",
            "externalIds": [{"name": "tenant", "value": "acme"}]
        }))
        .unwrap()
    }

    #[test]
    fn templates_render_with_the_identifiers_as_given() {
        assert_eq!(
            subject_prefix("users/{userId}/", &ids()).unwrap(),
            "users/u-42/"
        );
        assert_eq!(
            subject_prefix("/t/{externalIds.tenant}/{email}/files", &ids()).unwrap(),
            "t/acme/Jane@Example.com/files"
        );
    }

    #[test]
    fn missing_identifiers_and_bad_templates_are_explained() {
        let e = subject_prefix("c/{customerId}/", &ids()).unwrap_err();
        assert!(
            e.message.contains("customerId") && e.reason == "InvalidTask",
            "{e}"
        );
        assert!(subject_prefix("c/{nope}/", &ids()).is_err());
        assert!(subject_prefix("c/{userId", &ids()).is_err());
        assert!(subject_prefix("{userId}}", &ids()).is_err());
    }

    #[test]
    fn values_cannot_escape_the_prefix() {
        for bad in ["../other", "a/b", "..", ".", "a\\b", "x\ny", ""] {
            let ids = IdentifierSet {
                user_id: Some(bad.into()),
                ..Default::default()
            };
            let e = subject_prefix("users/{userId}/", &ids).unwrap_err();
            assert_eq!(e.reason, "InvalidTask", "{bad:?}");
            if bad.len() > 2 {
                assert!(!e.message.contains(bad), "{e}");
            }
        }
    }
}
