//! Quarantine soft delete: the subject's rows of Quarantine tables are copied into an
//! encrypted restore archive in object storage, then deleted; a restore puts them back; a
//! purge destroys the archive.
//!
//! # Where and how
//!
//! Archives live below the task's `quarantine` prefix (`quarantine/<ns>/<request>/<system>/`
//! below the operator's storage root), one object per soft-delete run:
//! `archive-<time>-<n>.ndjson.age`. Each is NDJSON, age-encrypted (X25519) to the public key
//! of the operator's quarantine identity: the task's `quarantineKey` (`AGE-SECRET-KEY-1…`)
//! when the operator has a dedicated key, otherwise derived from the operator's subject salt
//! (`hashSalt`, see [`identity_from_salt`]). Either way only the operator and its workers can
//! read an archive. Lines:
//!
//! ```json
//! {"table": "notes", "row": {"id": 25, "contact_id": 7, "body": "…"}}
//! {"table": "deals", "column": "contact_id", "link": {"id": 7, "contact_id": 7}}
//! ```
//!
//! `row` is the whole row as the database's JSON renders it (SQLite BLOBs as
//! `{"$hex": "…"}`); `link` records a Detach child's foreign key, set to NULL so the parent
//! row could be deleted, with the child's primary key.
//!
//! # Order of effects (no crash loses rows)
//!
//! SoftDelete: begin the transaction, stream the rows into the archive and finish the
//! upload, then unlink and delete in the same transaction, then commit. A crash before the
//! upload finished leaves no archive and no change; one after leaves an extra archive and no
//! change (the rerun writes another; restores skip rows already present). A run that fails
//! after its upload removes its archive again (best effort). A rerun after success finds no
//! rows and writes no archive.
//!
//! Restore: read and decrypt every archive under the prefix, insert the rows parents first
//! where no row with the same primary key exists (one statement per table), put the links
//! back where the foreign key is still NULL, commit, then delete the archives.
//!
//! Purge: after the database purge committed, delete everything under the prefix and check
//! that nothing is left (`quarantine` in the verification's `remaining`).

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::WorkerError;
use super::output::{NdjsonFile, storage_error};
use super::task::Task;
use crate::api::datamap::DataMap;
use crate::storage::{ObjectWriter, StorageTarget, Store};

/// Suffix of restore archives.
pub const ARCHIVE_SUFFIX: &str = ".ndjson.age";
/// Key of the quarantine in a purge's verification `remaining`.
pub const VERIFICATION_KEY: &str = "quarantine";

/// Something NDJSON lines stream into: an export file or a restore archive.
pub trait LineSink: Send {
    /// Appends whole lines.
    fn write_chunk(&mut self, chunk: &[u8])
    -> impl Future<Output = Result<(), WorkerError>> + Send;
}

impl LineSink for NdjsonFile {
    fn write_chunk(
        &mut self,
        chunk: &[u8],
    ) -> impl Future<Output = Result<(), WorkerError>> + Send {
        NdjsonFile::write_chunk(self, chunk)
    }
}

/// The quarantine of one task: its store and the operator's identity.
pub struct Quarantine {
    store: Store,
    identity: Option<age::x25519::Identity>,
}

impl Quarantine {
    /// The task's quarantine. `need_key` for SoftDelete and Restore (a purge only deletes).
    pub fn from_task(task: &Task, need_key: bool) -> Result<Quarantine, WorkerError> {
        let prefix = task.quarantine.as_deref().ok_or_else(|| {
            WorkerError::invalid(
                "the data map uses Quarantine soft delete, but the task has no quarantine location; the operator sets it for SoftDelete, Restore and Purge",
            )
        })?;
        let store = open_store(&task.storage, prefix)?;
        let identity = match (task.quarantine_key.as_deref(), task.hash_salt.as_deref()) {
            (Some(key), _) => Some(age::x25519::Identity::from_str(key.trim()).map_err(|_| {
                WorkerError::invalid(
                    "the task's quarantineKey is not an age X25519 identity (AGE-SECRET-KEY-1…); check the operator's quarantine-key Secret",
                )
            })?),
            (None, Some(salt)) if !salt.is_empty() => Some(identity_from_salt(salt)?),
            _ if need_key => {
                return Err(WorkerError::invalid(
                    "the data map uses Quarantine soft delete, but the task has neither a quarantineKey nor the operator's salt to encrypt or decrypt restore archives",
                ));
            }
            _ => None,
        };
        Ok(Quarantine { store, identity })
    }

    /// A quarantine on `store` with `identity`, for tests and other connectors.
    pub fn new(store: Store, identity: Option<age::x25519::Identity>) -> Self {
        Quarantine { store, identity }
    }

    /// The store, rooted at the quarantine prefix.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn identity(&self) -> Result<&age::x25519::Identity, WorkerError> {
        self.identity
            .as_ref()
            .ok_or_else(|| WorkerError::invalid("the task has no quarantineKey"))
    }

    /// Starts a new archive, encrypted to the operator's identity.
    pub async fn writer(&self) -> Result<ArchiveWriter, WorkerError> {
        let now = jiff::Timestamp::now();
        let key = format!(
            "archive-{}-{}{ARCHIVE_SUFFIX}",
            now.strftime("%Y%m%dT%H%M%S%.9fZ"),
            std::process::id()
        );
        self.writer_at(&key).await
    }

    /// Starts an object at `key` below the quarantine, encrypted to the operator's identity.
    pub async fn writer_at(&self, key: &str) -> Result<ArchiveWriter, WorkerError> {
        let recipient = self.identity()?.to_public().to_string();
        let writer = self
            .store
            .writer(key)
            .await
            .map_err(storage_error)?
            .encrypt_to(&recipient)
            .map_err(storage_error)?;
        Ok(ArchiveWriter { writer, lines: 0 })
    }

    /// Reads and decrypts the object at `key` below the quarantine.
    pub async fn read_object(&self, key: &str) -> Result<Bytes, WorkerError> {
        let identity = self.identity()?;
        let bytes = self
            .store
            .get(key)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| {
                WorkerError::new(
                    "QuarantineUnreadable",
                    format!("{} disappeared while restoring", self.store.url(key)),
                )
            })?;
        let plain = age::decrypt(identity, &bytes).map_err(|e| {
            WorkerError::new(
                "QuarantineUnreadable",
                format!(
                    "{} cannot be decrypted with the operator's quarantine key: {e}",
                    self.store.url(key)
                ),
            )
        })?;
        Ok(Bytes::from(plain))
    }

    /// Every archive under the prefix, decrypted and parsed, with rows grouped by table
    /// (one per primary key: a row archived by two runs is restored once).
    pub async fn read(&self, map: &DataMap) -> Result<Archive, WorkerError> {
        let identity = self.identity()?;
        let mut objects = self.store.list("").await.map_err(storage_error)?;
        objects.retain(|o| o.key.ends_with(ARCHIVE_SUFFIX));
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut archive = Archive::default();
        for object in objects {
            let Some(bytes) = self.store.get(&object.key).await.map_err(storage_error)? else {
                continue;
            };
            let plain = age::decrypt(identity, &bytes).map_err(|e| {
                WorkerError::new(
                    "QuarantineUnreadable",
                    format!(
                        "restore archive {} cannot be decrypted with the operator's quarantine key: {e}",
                        self.store.url(&object.key)
                    ),
                )
            })?;
            archive.add(map, &object.key, &plain)?;
            archive.keys.push(object.key);
        }
        Ok(archive)
    }

    /// Deletes the archives a restore has put back.
    pub async fn remove(&self, keys: &[String]) -> Result<(), WorkerError> {
        for key in keys {
            self.store.delete(key).await.map_err(storage_error)?;
        }
        Ok(())
    }

    /// Deletes everything under the prefix, then counts what is left (zero on success).
    pub async fn destroy(&self) -> Result<u64, WorkerError> {
        self.store.delete_prefix("").await.map_err(storage_error)?;
        let left = self.store.list("").await.map_err(storage_error)?;
        Ok(left.len() as u64)
    }
}

/// The operator's quarantine identity derived from its subject salt (`hashSalt`), for
/// operators without a dedicated quarantine key: SHA-256 of a domain-separated salt as the
/// X25519 secret. The salt is operator-controlled, never changes, and reaches workers only
/// in task Secrets, as a dedicated key would.
pub fn identity_from_salt(salt: &str) -> Result<age::x25519::Identity, WorkerError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"privacy-operator.dev/quarantine-key/v1\0");
    h.update(salt.as_bytes());
    let secret: [u8; 32] = h.finalize().into();
    let encoded = bech32(AGE_SECRET_HRP, &secret).to_uppercase();
    age::x25519::Identity::from_str(&encoded)
        .map_err(|e| WorkerError::invalid(format!("deriving the quarantine key: {e}")))
}

/// The human-readable part of an age X25519 identity.
const AGE_SECRET_HRP: &str = "age-secret-key-";

/// BIP-173 bech32 (the encoding of age keys) of `data` under `hrp`.
fn bech32(hrp: &str, data: &[u8]) -> String {
    const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    // 8-bit bytes to 5-bit groups, zero-padded.
    let mut groups = Vec::with_capacity(data.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in data {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            groups.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        groups.push(((acc << (5 - bits)) & 31) as u8);
    }
    let mut values: Vec<u8> = hrp.bytes().map(|c| c >> 5).collect();
    values.push(0);
    values.extend(hrp.bytes().map(|c| c & 31));
    values.extend(&groups);
    values.extend([0u8; 6]);
    let polymod = bech32_polymod(&values) ^ 1;
    let mut out = format!("{hrp}1");
    for g in groups
        .iter()
        .copied()
        .chain((0..6).map(|i| ((polymod >> (5 * (5 - i))) & 31) as u8))
    {
        out.push(CHARSET[usize::from(g)] as char);
    }
    out
}

fn bech32_polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    let mut chk = 1u32;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ u32::from(*v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

/// The store below `storage` at `prefix`; without `storage`, `prefix` is a local directory
/// (absolute path or `file://` URL), as for a task's output.
pub fn open_store(storage: &StorageTarget, prefix: &str) -> Result<Store, WorkerError> {
    if !storage.is_unset() {
        return Ok(Store::open(storage).map_err(storage_error)?.child(prefix));
    }
    let url = if prefix.contains("://") {
        prefix.to_string()
    } else if prefix.starts_with('/') {
        format!("file://{prefix}")
    } else {
        return Err(WorkerError::invalid(format!(
            "quarantine location {prefix:?} must be an absolute directory when the task has no storage"
        )));
    };
    Store::open(&StorageTarget::new(url)).map_err(storage_error)
}

/// An archive being uploaded.
pub struct ArchiveWriter {
    writer: ObjectWriter,
    lines: u64,
}

impl ArchiveWriter {
    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The archive's key, relative to the quarantine.
    pub fn key(&self) -> &str {
        self.writer.key()
    }

    /// Completes the upload: the archive is stored when this returns.
    pub async fn finish(self) -> Result<String, WorkerError> {
        let info = self.writer.finish().await.map_err(storage_error)?;
        Ok(info.key)
    }

    /// Drops the archive (nothing to archive, or a failed run).
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::debug!(error = %e, "could not abort an unfinished restore archive");
        }
    }
}

impl LineSink for ArchiveWriter {
    async fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), WorkerError> {
        self.writer.write(chunk).await.map_err(storage_error)?;
        self.lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(())
    }
}

/// One archive line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Line {
    table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    row: Option<serde_json::Value>,
    /// The Detach foreign key column a `link` restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<serde_json::Value>,
}

/// The content of every archive of a quarantine.
#[derive(Debug, Default)]
pub struct Archive {
    /// The archive objects read.
    pub keys: Vec<String>,
    /// Rows by table, one per primary key, in archive order.
    pub rows: BTreeMap<String, Vec<serde_json::Value>>,
    /// Links by (child table, foreign key column): objects with the child's primary key and
    /// the foreign key's value.
    pub links: BTreeMap<(String, String), Vec<serde_json::Value>>,
}

impl Archive {
    fn add(&mut self, map: &DataMap, key: &str, plain: &[u8]) -> Result<(), WorkerError> {
        let mut seen: BTreeMap<String, std::collections::BTreeSet<String>> = self
            .rows
            .iter()
            .map(|(t, rows)| (t.clone(), rows.iter().map(|r| pk_of(map, t, r)).collect()))
            .collect();
        for (i, text) in plain.split(|b| *b == b'\n').enumerate() {
            if text.is_empty() {
                continue;
            }
            // serde_json's messages give positions, not values.
            let line: Line = serde_json::from_slice(text).map_err(|e| {
                WorkerError::new(
                    "QuarantineUnreadable",
                    format!("restore archive {key} line {}: {e}", i + 1),
                )
            })?;
            if map.table(&line.table).is_none() {
                return Err(WorkerError::invalid(format!(
                    "restore archive {key} holds rows of table {}, which is no longer in the data map; add it back to restore them",
                    line.table
                )));
            }
            match (line.row, line.column, line.link) {
                (Some(row), _, _) => {
                    let pk = pk_of(map, &line.table, &row);
                    if seen.entry(line.table.clone()).or_default().insert(pk) {
                        self.rows.entry(line.table).or_default().push(row);
                    }
                }
                (None, Some(column), Some(link)) => {
                    self.links
                        .entry((line.table, column))
                        .or_default()
                        .push(link);
                }
                _ => {
                    return Err(WorkerError::new(
                        "QuarantineUnreadable",
                        format!(
                            "restore archive {key} line {}: neither a row nor a link",
                            i + 1
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Rows archived in total.
    pub fn total_rows(&self) -> usize {
        self.rows.values().map(Vec::len).sum()
    }
}

/// The primary key value of an archived row of `table`, as JSON text.
fn pk_of(map: &DataMap, table: &str, row: &serde_json::Value) -> String {
    let pk = map.table(table).map_or("id", |t| t.primary_key.as_str());
    row.get(pk).map(|v| v.to_string()).unwrap_or_default()
}

/// Uploads `bytes` as a new archive (for connectors that build lines in memory).
pub async fn put_archive(q: &Quarantine, bytes: Bytes) -> Result<Option<String>, WorkerError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut w = q.writer().await?;
    w.write_chunk(&bytes).await?;
    Ok(Some(w.finish().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> DataMap {
        serde_json::from_value(serde_json::json!({"tables": [
            {"name": "contacts", "identity": [{"column": "email", "identifier": "email"}],
             "relations": [{"table": "deals", "foreignKey": "contact_id", "onErase": "Detach"}]},
            {"name": "deals", "primaryKey": "deal_id"}
        ]}))
        .unwrap()
    }

    #[tokio::test]
    async fn archives_round_trip_encrypted_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&StorageTarget::default(), &dir.path().display().to_string())
            .unwrap()
            .child("quarantine/ns/r/crm");
        let identity = age::x25519::Identity::generate();
        let q = Quarantine::new(store.clone(), Some(identity.clone()));
        let lines = concat!(
            r#"{"table":"contacts","row":{"id":7,"email":"jane@example.com"}}"#,
            "\n",
            r#"{"table":"deals","column":"contact_id","link":{"deal_id":3,"contact_id":7}}"#,
            "\n"
        );
        for _ in 0..2 {
            put_archive(&q, Bytes::from(lines)).await.unwrap();
        }
        let objects = store.list("").await.unwrap();
        assert_eq!(objects.len(), 2);
        for o in &objects {
            let stored = store.get(&o.key).await.unwrap().unwrap();
            assert!(
                !String::from_utf8_lossy(&stored).contains("jane"),
                "archives are encrypted"
            );
        }
        let archive = q.read(&map()).await.unwrap();
        assert_eq!(archive.keys.len(), 2);
        assert_eq!(archive.rows["contacts"].len(), 1, "same primary key once");
        assert_eq!(
            archive.links[&("deals".to_string(), "contact_id".to_string())].len(),
            2
        );

        let stranger = Quarantine::new(store.clone(), Some(age::x25519::Identity::generate()));
        let err = stranger.read(&map()).await.unwrap_err();
        assert_eq!(err.reason, "QuarantineUnreadable");

        assert_eq!(q.destroy().await.unwrap(), 0);
        assert!(q.read(&map()).await.unwrap().rows.is_empty());
    }

    #[tokio::test]
    async fn tables_outside_the_map_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            open_store(&StorageTarget::default(), &dir.path().display().to_string()).unwrap();
        let q = Quarantine::new(store, Some(age::x25519::Identity::generate()));
        put_archive(
            &q,
            Bytes::from_static(b"{\"table\":\"gone\",\"row\":{\"id\":1}}\n"),
        )
        .await
        .unwrap();
        let err = q.read(&map()).await.unwrap_err();
        assert!(err.message.contains("gone"), "{err}");
    }

    #[test]
    fn keys_derived_from_the_salt_are_valid_and_stable() {
        use age::secrecy::ExposeSecret;
        let a = identity_from_salt("00ff").unwrap();
        let b = identity_from_salt("00ff").unwrap();
        let c = identity_from_salt("00fe").unwrap();
        assert_eq!(a.to_string().expose_secret(), b.to_string().expose_secret());
        assert_ne!(a.to_public().to_string(), c.to_public().to_string());
        let plain = age::decrypt(&a, &age::encrypt(&b.to_public(), b"archive").unwrap()).unwrap();
        assert_eq!(plain, b"archive");
    }

    #[test]
    fn relative_local_locations_are_refused() {
        let err = open_store(&StorageTarget::default(), "quarantine/x").unwrap_err();
        assert_eq!(err.reason, "InvalidTask");
    }
}
