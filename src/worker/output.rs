//! Where a worker writes: [`Output`], a store rooted at the task's output prefix (see
//! [`super::task::Task::output_store`]), optionally encrypting every export file to the
//! request's age recipient.
//!
//! Files stream into the store as they are produced ([`NdjsonFile`]): counted and hashed on
//! the way, published under their final key only when complete ([`NdjsonFile::finish`]),
//! never visible half-written. `manifest.json` goes last ([`Output::write_manifest`]), so a
//! manifest always describes complete files.

use bytes::Bytes;

use crate::storage::{ObjectWriter, StorageError, Store};

use super::task::{FileEntry, Manifest, TableCount};
use super::{MANIFEST_FILE, WorkerError};

/// Suffix of files encrypted to the request's recipient (the age format).
pub const ENCRYPTED_SUFFIX: &str = ".age";

/// The output location of one task.
#[derive(Clone, Debug)]
pub struct Output {
    store: Store,
    recipient: Option<String>,
}

impl Output {
    /// Export files are age-encrypted to `recipient` when given.
    pub fn new(store: Store, recipient: Option<String>) -> Self {
        Output { store, recipient }
    }

    /// The store, rooted at the output prefix.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// True when export files are encrypted.
    pub fn encrypted(&self) -> bool {
        self.recipient.is_some()
    }

    /// Starts the NDJSON file `file_name` (stored as `file_name.age` when encrypting).
    pub async fn ndjson(&self, file_name: &str) -> Result<NdjsonFile, WorkerError> {
        let key = match self.recipient {
            Some(_) => format!("{file_name}{ENCRYPTED_SUFFIX}"),
            None => file_name.to_string(),
        };
        let mut writer = self.store.writer(&key).await.map_err(storage_error)?;
        if let Some(r) = &self.recipient {
            writer = writer.encrypt_to(r).map_err(storage_error)?;
        }
        Ok(NdjsonFile { writer, records: 0 })
    }

    /// Writes `manifest.json` (one PUT: whole or absent). Call it after every file is
    /// finished.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<String, WorkerError> {
        let bytes = serde_json::to_vec_pretty(manifest)
            .map_err(|e| WorkerError::new("OutputError", e.to_string()))?;
        self.store
            .put(MANIFEST_FILE, Bytes::from(bytes))
            .await
            .map_err(storage_error)?;
        Ok(self.store.url(MANIFEST_FILE))
    }
}

/// A storage failure as a worker error: the storage reason (StorageUnreachable,
/// AccessDenied, NoSuchBucket, InvalidStorageTarget, InvalidRecipient) is kept, so status
/// says what to fix.
pub fn storage_error(e: StorageError) -> WorkerError {
    WorkerError::new(e.reason, e.message)
}

/// An NDJSON file being uploaded, with its records counted on the way.
pub struct NdjsonFile {
    writer: ObjectWriter,
    records: u64,
}

impl NdjsonFile {
    /// The key it is stored under, relative to the output location (for the manifest).
    pub fn key(&self) -> &str {
        self.writer.key()
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Appends output that holds whole lines of JSON, so records are counted by newlines
    /// (JSON text escapes newlines inside values).
    pub async fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), WorkerError> {
        self.writer.write(chunk).await.map_err(storage_error)?;
        self.records += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(())
    }

    /// Publishes the file. Returns its records, and the size and lower-case hex SHA-256 of
    /// the stored bytes (encrypted ones when encrypting).
    pub async fn finish(self) -> Result<(u64, u64, String), WorkerError> {
        let records = self.records;
        let info = self.writer.finish().await.map_err(storage_error)?;
        Ok((records, info.size, info.sha256))
    }

    /// Ends the export of `table`: an empty file is dropped (the table counts 0 rows), any
    /// other is published and listed in `manifest` with its records, size and checksum.
    pub async fn publish_into(
        self,
        manifest: &mut Manifest,
        table: &str,
    ) -> Result<(), WorkerError> {
        if self.records == 0 {
            self.abort().await;
            manifest
                .tables
                .insert(table.to_string(), TableCount::default());
            return Ok(());
        }
        let key = self.key().to_string();
        let (records, size, sha256) = self.finish().await?;
        manifest.tables.insert(
            table.to_string(),
            TableCount {
                rows: records,
                detached: 0,
            },
        );
        manifest.files.push(FileEntry {
            path: key,
            table: table.to_string(),
            format: "ndjson".into(),
            records,
            size,
            sha256,
        });
        Ok(())
    }

    /// Drops the file: nothing is published (an empty table, or a failed export).
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::debug!(error = %e, "could not abort an unfinished export file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::jobs::JobStep;
    use crate::storage::StorageTarget;
    use sha2::{Digest, Sha256};

    fn output(dir: &std::path::Path, recipient: Option<String>) -> Output {
        let store = Store::open(&StorageTarget::new(format!("file://{}", dir.display())))
            .unwrap()
            .child("exports/ns/r/crm");
        Output::new(store, recipient)
    }

    #[tokio::test]
    async fn counts_lines_and_hashes_what_it_stored() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path(), None);
        let mut f = out.ndjson("t.ndjson").await.unwrap();
        f.write_chunk(b"{\"a\":1}\n{\"a\"").await.unwrap();
        f.write_chunk(b":2}\n").await.unwrap();
        assert_eq!(f.key(), "t.ndjson");
        let (records, size, sha) = f.finish().await.unwrap();
        let bytes = std::fs::read(dir.path().join("exports/ns/r/crm/t.ndjson")).unwrap();
        assert_eq!((records, size), (2, bytes.len() as u64));
        assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
        let url = out
            .write_manifest(&Manifest::new("crm", JobStep::Export))
            .await
            .unwrap();
        assert!(url.ends_with("exports/ns/r/crm/manifest.json"), "{url}");
    }

    #[tokio::test]
    async fn encrypted_files_get_the_age_suffix_and_aborted_ones_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let out = output(dir.path(), Some(id.to_public().to_string()));
        assert!(out.encrypted());
        let mut f = out.ndjson("t.ndjson").await.unwrap();
        assert_eq!(f.key(), "t.ndjson.age");
        f.write_chunk(b"{\"a\":1}\n").await.unwrap();
        let (records, size, _) = f.finish().await.unwrap();
        assert_eq!(records, 1);
        assert!(size > 8);
        let empty = out.ndjson("e.ndjson").await.unwrap();
        empty.abort().await;
        let keys: Vec<String> = out
            .store()
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["t.ndjson.age"]);
    }

    #[tokio::test]
    async fn bad_recipient_fails_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(dir.path(), Some("age1bad".into()));
        let e = out.ndjson("t.ndjson").await.err().unwrap();
        assert_eq!(e.reason, "InvalidRecipient");
    }
}
