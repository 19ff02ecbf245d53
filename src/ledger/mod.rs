//! The erasure ledger: an append-only record, in object storage, of every purge, so that a
//! system restored from a backup can be cleaned of the subjects erased since the backup.
//!
//! # Entries
//!
//! Every completed purge of a request appends one immutable JSON object,
//! `ledger/<yyyy>/<mm>/<yyyymmddThhmmssZ>-<namespace>-<request>.json`, never rewritten. It
//! holds the time the purge completed, the request, the subject's salted digest, the systems
//! purged and, per system, an HMAC-SHA256 of each identity value the system's data map
//! matches on (`HMAC(key, "<kind>:<normalised value>")`). The key is the ledger key (from a
//! Secret; not the digest salt, so the ledger cannot be joined to status or logs), and the
//! entry records a short id of the key so a replay with another key fails loudly instead of
//! finding nothing. No identifier is stored in clear.
//!
//! The entry's time is the completion of the last first-party purge Job, as recorded in the
//! request's status, so appending again after a crash computes the same key; an existing
//! object is left as it is.
//!
//! # Replay
//!
//! A replay ([`replay`]) scans a restored system's identity columns, hashes each value with
//! the same key (in SQL with pgcrypto's `hmac()` when the extension is installed, otherwise
//! in the worker, streaming), and purges every subject whose hashes match an entry recorded
//! after the backup was taken, with the data map's strategy (delete or anonymise), exactly as
//! the original purge did.

pub mod controller;
pub mod hook;
pub mod plan;
pub mod readiness;
pub mod replay;

use std::fmt;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{IdentifierKind, SubjectDigest};
use crate::storage::{StorageError, Store};

/// Version of the entry format.
pub const ENTRY_VERSION: &str = "privacy-operator.dev/ledger/v1";
/// Prefix of every entry below the operator's storage root.
pub const PREFIX: &str = "ledger/";

/// The ledger's HMAC key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct LedgerKey(Vec<u8>);

impl fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LedgerKey({})", self.id())
    }
}

impl LedgerKey {
    /// A key of at least 16 bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < 16 {
            return Err(
                "the ledger key must be at least 16 bytes (e.g. `openssl rand -hex 32`)".into(),
            );
        }
        Ok(LedgerKey(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A short public id of the key (first 8 hex digits of its SHA-256), to tell keys apart.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(&self.0)[..4])
    }

    /// The keyed hash of one identity value: `HMAC-SHA256(key, "<kind>:<normalised>")`,
    /// lower-case hex. `normalised` must already be in the kind's normal form (as the SQL
    /// connector matches it: e-mail lower-cased, phone digits and `+`).
    pub fn hash_normalised(&self, kind: &IdentifierKind, normalised: &str) -> String {
        // new_from_slice accepts keys of any length for HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(kind.to_string().as_bytes());
        mac.update(b":");
        mac.update(normalised.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The keyed hash of an identifier as given (normalised first).
    pub fn hash(&self, kind: &IdentifierKind, value: &str) -> String {
        self.hash_normalised(kind, &kind.normalise(value))
    }
}

/// Where the ledger key comes from: never the digest salt, so the ledger cannot be joined
/// to status, logs or metrics, and losing one does not expose the other.
#[derive(Clone)]
pub enum LedgerKeySource {
    /// The key itself (tests, `dev`).
    Inline(Vec<u8>),
    /// A key of a Secret, read once at start. Hex text is decoded; anything else is used as
    /// bytes.
    Secret {
        namespace: String,
        name: String,
        key: String,
        /// Create the Secret with a random key when it does not exist.
        create: bool,
    },
}

impl fmt::Debug for LedgerKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerKeySource::Inline(_) => f.write_str("Inline(<redacted>)"),
            LedgerKeySource::Secret {
                namespace,
                name,
                key,
                create,
            } => write!(f, "Secret({namespace}/{name}, key {key}, create {create})"),
        }
    }
}

impl LedgerKeySource {
    /// Reads the key. The same key must serve the whole life of the ledger: entries hashed
    /// with another key cannot be replayed.
    pub async fn load(&self, client: &kube::Client) -> crate::Result<LedgerKey> {
        let bytes = match self {
            LedgerKeySource::Inline(b) => b.clone(),
            LedgerKeySource::Secret {
                namespace,
                name,
                key,
                create,
            } => {
                let raw = crate::controller::keys::get_or_create(
                    client,
                    "erasure-ledger key",
                    namespace,
                    name,
                    key,
                    *create,
                )
                .await?;
                let text = String::from_utf8_lossy(&raw);
                hex::decode(text.trim()).unwrap_or(raw)
            }
        };
        LedgerKey::new(bytes).map_err(crate::Error::Config)
    }
}

/// One erasure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// [`ENTRY_VERSION`].
    pub version: String,
    /// When the purge completed.
    pub recorded_at: Timestamp,
    pub namespace: String,
    pub request: String,
    /// metadata.uid of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_uid: Option<String>,
    /// The subject's salted digest (as in the request's status).
    pub subject: SubjectDigest,
    /// [`LedgerKey::id`] of the key the hashes were made with.
    pub key_id: String,
    /// The systems purged.
    pub systems: Vec<LedgerSystem>,
}

/// One purged system and the keyed hashes of the identity values it matches on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LedgerSystem {
    pub name: String,
    pub identities: Vec<IdentityHash>,
}

/// A keyed hash of one identity value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdentityHash {
    pub kind: IdentifierKind,
    /// `HMAC-SHA256(key, "<kind>:<normalised value>")`, hex.
    pub hmac: String,
}

impl LedgerEntry {
    /// The entry's object key: `ledger/<yyyy>/<mm>/<ts>-<namespace>-<request>.json`.
    pub fn key(&self) -> String {
        entry_key(self.recorded_at, &self.namespace, &self.request)
    }

    /// The system's part of the entry.
    pub fn system(&self, name: &str) -> Option<&LedgerSystem> {
        self.systems.iter().find(|s| s.name == name)
    }
}

/// The key of the entry recorded at `at` for a request.
pub fn entry_key(at: Timestamp, namespace: &str, request: &str) -> String {
    let utc = at.to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "{PREFIX}{:04}/{:02}/{}-{namespace}-{request}.json",
        utc.year(),
        utc.month(),
        utc.strftime("%Y%m%dT%H%M%SZ")
    )
}

/// The time an entry's key says it was recorded at (from its file name).
pub fn key_time(key: &str) -> Option<Timestamp> {
    let file = key.rsplit('/').next()?;
    let stamp = file.get(..16)?;
    jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", stamp)
        .ok()?
        .to_datetime()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Why the ledger could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("erasure ledger: {0}")]
    Storage(StorageError),
    #[error("erasure ledger entry {key} is not a valid entry: {problem}")]
    Corrupt { key: String, problem: String },
}

impl From<LedgerError> for crate::Error {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Storage(s) => crate::Error::Storage(s),
            other => crate::Error::Config(other.to_string()),
        }
    }
}

impl From<StorageError> for LedgerError {
    fn from(e: StorageError) -> Self {
        LedgerError::Storage(e)
    }
}

/// The ledger in a store (the operator's storage root).
#[derive(Clone, Debug)]
pub struct Ledger {
    store: Store,
}

impl Ledger {
    pub fn new(store: Store) -> Self {
        Ledger { store }
    }

    /// Appends `entry` unless an object of its key exists (a retry of the same append).
    /// Returns true when it wrote.
    pub async fn append(&self, entry: &LedgerEntry) -> Result<bool, LedgerError> {
        let key = entry.key();
        if self.store.head(&key).await?.is_some() {
            return Ok(false);
        }
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| LedgerError::Corrupt {
            key: key.clone(),
            problem: e.to_string(),
        })?;
        self.store.put(&key, Bytes::from(bytes)).await?;
        Ok(true)
    }

    /// Keys of the entries recorded strictly after `after`, oldest first.
    pub async fn keys_after(&self, after: Timestamp) -> Result<Vec<String>, LedgerError> {
        let mut keys: Vec<(Timestamp, String)> = self
            .store
            .list(PREFIX)
            .await?
            .into_iter()
            .filter(|o| o.key.ends_with(".json"))
            .filter_map(|o| key_time(&o.key).map(|t| (t, o.key)))
            .filter(|(t, _)| *t > after)
            .collect();
        keys.sort();
        Ok(keys.into_iter().map(|(_, k)| k).collect())
    }

    /// Reads one entry.
    pub async fn read(&self, key: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        let Some(bytes) = self.store.get(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LedgerError::Corrupt {
                key: key.to_string(),
                problem: e.to_string(),
            })
    }

    /// The entries recorded after `after` that purged `system`, oldest first.
    pub async fn entries_for(
        &self,
        system: &str,
        after: Timestamp,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let mut out = Vec::new();
        for key in self.keys_after(after).await? {
            if let Some(e) = self.read(&key).await?
                && e.system(system).is_some()
            {
                out.push(e);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn keys_are_dated_and_read_back() {
        let key = entry_key(ts("2024-06-03T10:00:07Z"), "shop", "erase-42");
        assert_eq!(key, "ledger/2024/06/20240603T100007Z-shop-erase-42.json");
        assert_eq!(key_time(&key), Some(ts("2024-06-03T10:00:07Z")));
        assert_eq!(key_time("ledger/2024/06/garbage.json"), None);
    }

    #[test]
    fn hashes_are_keyed_normalised_and_typed() {
        let k = LedgerKey::new(b"0123456789abcdef-ledger".to_vec()).unwrap();
        let other = LedgerKey::new(b"another-key-of-16+bytes".to_vec()).unwrap();
        let email = IdentifierKind::Email;
        assert_eq!(
            k.hash(&email, " Jane@Example.COM"),
            k.hash(&email, "jane@example.com")
        );
        assert_ne!(
            k.hash(&email, "jane@example.com"),
            other.hash(&email, "jane@example.com")
        );
        assert_ne!(
            k.hash(&IdentifierKind::UserId, "u-1"),
            k.hash(&IdentifierKind::CustomerId, "u-1")
        );
        // Known answer: HMAC-SHA256(key, "email:a@b.c").
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(k.bytes()).unwrap();
        mac.update(b"email:a@b.c");
        assert_eq!(
            k.hash(&email, "a@b.c"),
            hex::encode(mac.finalize().into_bytes())
        );
        assert!(!format!("{k:?}").contains("0123456789abcdef"));
        assert!(LedgerKey::new(b"short".to_vec()).is_err());
    }

    #[tokio::test]
    async fn append_is_idempotent_and_lists_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let target = crate::storage::StorageTarget::new(format!("file://{}", dir.path().display()));
        let ledger = Ledger::new(Store::open(&target).unwrap());
        let entry = |at: &str, name: &str| LedgerEntry {
            version: ENTRY_VERSION.into(),
            recorded_at: ts(at),
            namespace: "shop".into(),
            request: name.into(),
            request_uid: None,
            subject: format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
            key_id: "00000000".into(),
            systems: vec![LedgerSystem {
                name: "crm".into(),
                identities: vec![],
            }],
        };
        let a = entry("2024-01-05T00:00:00Z", "a");
        assert!(ledger.append(&a).await.unwrap());
        assert!(!ledger.append(&a).await.unwrap(), "a retry writes nothing");
        ledger
            .append(&entry("2024-03-01T00:00:00Z", "b"))
            .await
            .unwrap();
        let after = ledger.keys_after(ts("2024-02-01T00:00:00Z")).await.unwrap();
        assert_eq!(after, ["ledger/2024/03/20240301T000000Z-shop-b.json"]);
        let all = ledger
            .entries_for("crm", ts("2023-01-01T00:00:00Z"))
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], a);
        assert!(
            ledger
                .entries_for("files", ts("2023-01-01T00:00:00Z"))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
