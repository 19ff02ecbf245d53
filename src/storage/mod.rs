//! Object storage: one small abstraction over `object_store` for S3 (and S3-compatible
//! stores), Google Cloud Storage, Azure Blob Storage and the local filesystem.
//!
//! A [`StorageTarget`] (URL plus options) says where; [`Store::open`] gives a handle rooted
//! at the target's prefix, and [`Store::child`] roots it further below (a worker writes
//! below `exports/<ns>/<request>/<system>/`). Keys are `/`-separated and relative to the
//! store's root. Uploads stream through an [`ObjectWriter`] that hashes on the way and
//! publishes nothing until it finishes; readers hand out [`Store::presign_get`] links
//! (S3/GCS/Azure presigned URLs, `file://` URLs for local storage).
//!
//! Failures are [`StorageError`]s with a CamelCase reason: StorageUnreachable,
//! AccessDenied, NoSuchBucket, InvalidStorageTarget, InvalidRecipient (a bad age
//! recipient given to [`ObjectWriter::encrypt_to`]) or StorageError.
//!
//! Layout below the operator's root (see docs/storage.md):
//! `exports/<ns>/<request>/<system>/` worker files and per-system `manifest.json`;
//! `exports/<ns>/<request>/manifest.json` the bundle manifest; `quarantine/<ns>/<request>/
//! <system>/` restore archives; `ledger/`; `retention/<ns>/<policy>/<rule>/`.
//!
//! Interface note for other modules: the signatures below are the ones agreed in the session
//! notes; additions so far are [`Store::head`], [`StorageTarget::from_vars`],
//! [`StorageTarget::validate`], [`ObjectWriter::size`] and the InvalidRecipient reason.

mod error;
mod target;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use error::StorageError;
pub use target::{Backend, OPTION_MAX_RETRIES, OPTION_RETRY_TIMEOUT_SECS, StorageTarget};
pub use writer::{MAX_PARTS_IN_FLIGHT, ObjectWriter, PART_SIZE, SINGLE_PUT_LIMIT, parse_recipient};

/// Reasons of [`StorageError`].
pub mod reasons {
    pub use super::error::{
        ACCESS_DENIED, INVALID_RECIPIENT, INVALID_TARGET, NO_SUCH_BUCKET, OTHER, UNREACHABLE,
    };
}

/// Default retries of one request (connection errors, 5xx, throttling).
const DEFAULT_MAX_RETRIES: usize = 3;
/// Default time after a request's first attempt during which retries may start.
const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// An object: its key (relative to the store it was listed or written through), size, and
/// lower-case hex SHA-256 of its bytes (empty when not computed, e.g. from a listing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// A handle on a store, rooted at a prefix. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    signer: Option<Arc<dyn Signer>>,
    backend: Backend,
    /// The target URL without trailing slash (what [`Store::url`] starts with).
    base_url: String,
    /// The target's prefix inside the bucket (local: the absolute directory).
    base: Path,
    /// Prefixes added by [`Store::child`], `/`-joined, relative to `base`.
    rel: String,
    /// Local storage: the directory a `file://` presigned URL points into.
    local: Option<Arc<LocalFileSystem>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url(""))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store a target names. Connects lazily: a store that is down fails on the
    /// first operation (StorageUnreachable), not here.
    pub fn open(target: &StorageTarget) -> Result<Store, StorageError> {
        target.validate()?;
        let (backend, url, prefix) = target::parse(&target.url)?;
        let retry = retry_config(target)?;
        let options = target
            .options
            .iter()
            .filter(|(k, _)| *k != OPTION_MAX_RETRIES && *k != OPTION_RETRY_TIMEOUT_SECS);
        let build_err = |e: object_store::Error| {
            StorageError::invalid_target(format!(
                "storage {}: {e}",
                target::redact_url(&target.url)
            ))
        };
        let mut local = None;
        let (inner, signer): (Arc<dyn ObjectStore>, Option<Arc<dyn Signer>>) = match backend {
            Backend::S3 => {
                let mut b = AmazonS3Builder::new().with_url(url.as_str());
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(build_err)?, v);
                }
                let s = Arc::new(b.with_retry(retry).build().map_err(build_err)?);
                (s.clone(), Some(s))
            }
            Backend::Gcs => {
                let mut b = GoogleCloudStorageBuilder::new().with_url(url.as_str());
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(build_err)?, v);
                }
                let s = Arc::new(b.with_retry(retry).build().map_err(build_err)?);
                (s.clone(), Some(s))
            }
            Backend::Azure => {
                let mut b = MicrosoftAzureBuilder::new().with_url(url.as_str());
                for (k, v) in options {
                    b = b.with_config(k.parse().map_err(build_err)?, v);
                }
                let s = Arc::new(b.with_retry(retry).build().map_err(build_err)?);
                (s.clone(), Some(s))
            }
            Backend::Local => {
                // Rooted at `/`: the target's directory is the base prefix, so keys can
                // never escape it (object_store paths have no `..`).
                let fs = Arc::new(LocalFileSystem::new().with_automatic_cleanup(true));
                local = Some(fs.clone());
                (fs, None)
            }
        };
        Ok(Store {
            inner,
            signer,
            backend,
            base_url: target.url.trim_end_matches('/').to_string(),
            base: Path::from(prefix.as_str()),
            rel: String::new(),
            local,
        })
    }

    /// The kind of store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A store rooted at `prefix` below this one (empty segments are ignored).
    pub fn child(&self, prefix: &str) -> Store {
        let mut child = self.clone();
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            child.rel = if self.rel.is_empty() {
                prefix.to_string()
            } else {
                format!("{}/{prefix}", self.rel)
            };
        }
        child
    }

    /// The URL of `key` (the store's root for an empty key), e.g.
    /// `s3://bucket/prefix/exports/ns/r/manifest.json`, for manifests and status.
    pub fn url(&self, key: &str) -> String {
        let mut out = self.base_url.clone();
        for part in [self.rel.as_str(), key.trim_matches('/')] {
            if !part.is_empty() {
                out.push('/');
                out.push_str(part);
            }
        }
        out
    }

    /// The object_store path of `key`. Keys are validated: no empty, `.` or `..` segments.
    fn path(&self, key: &str) -> Result<Path, StorageError> {
        let mut full = self.base.clone();
        for part in [self.rel.as_str(), key.trim_matches('/')] {
            if part.is_empty() {
                continue;
            }
            for segment in part.split('/') {
                if segment.is_empty() || segment == "." || segment == ".." {
                    return Err(StorageError::other(format!(
                        "invalid object key {key:?}: empty, '.' or '..' segment"
                    )));
                }
                full = full.join(segment);
            }
        }
        Ok(full)
    }

    /// The key of `path` relative to this store's root.
    fn key_of(&self, root: &Path, path: &Path) -> Option<String> {
        let parts: Vec<String> = path
            .prefix_match(root)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }

    fn err(&self, what: &str, key: &str) -> impl FnOnce(object_store::Error) -> StorageError {
        let what = format!("{what} {key}");
        let url = self.url("");
        move |e| StorageError::from_store(e, &what, &url)
    }

    /// Stores `bytes` under `key` in one request (atomic: whole or nothing).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<ObjectInfo, StorageError> {
        let path = self.path(key)?;
        let info = ObjectInfo {
            key: key.to_string(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        };
        self.inner
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(self.err("put", key))?;
        Ok(info)
    }

    /// A streaming upload to `key`; nothing is visible until [`ObjectWriter::finish`].
    pub async fn writer(&self, key: &str) -> Result<ObjectWriter, StorageError> {
        let path = self.path(key)?;
        Ok(ObjectWriter::new(
            self.inner.clone(),
            path,
            key.to_string(),
            self.url(key),
        ))
    }

    /// The object's bytes; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let path = self.path(key)?;
        let result = match self.inner.get(&path).await {
            Ok(r) => r,
            Err(e) => return not_found_is_none(e).map_err(self.err("get", key)),
        };
        result.bytes().await.map(Some).map_err(self.err("get", key))
    }

    /// Size of the object (sha256 empty); `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        let path = self.path(key)?;
        match self.inner.head(&path).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: meta.size,
                sha256: String::new(),
            })),
            Err(e) => not_found_is_none(e).map_err(self.err("head", key)),
        }
    }

    /// Every object below `prefix` (recursively; empty for all), keys relative to this
    /// store, sorted; sha256 is empty (listings do not carry it).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let root = self.path("")?;
        let at = self.path(prefix)?;
        let mut out: Vec<ObjectInfo> = self
            .inner
            .list(Some(&at))
            .map_ok(|meta| (meta.location, meta.size))
            .try_collect::<Vec<_>>()
            .await
            .or_else(|e| not_found_is_none::<()>(e).map(|_| Vec::new()))
            .map_err(self.err("list", prefix))?
            .into_iter()
            .filter_map(|(location, size)| {
                Some(ObjectInfo {
                    key: self.key_of(&root, &location)?,
                    size,
                    sha256: String::new(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes `key`; an absent key is fine.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e) => not_found_is_none::<()>(e)
                .map(|_| ())
                .map_err(self.err("delete", key)),
        }
    }

    /// Deletes every object below `prefix`; returns how many were deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        if prefix.trim_matches('/').is_empty() && self.rel.is_empty() && self.base.is_root() {
            return Err(StorageError::other(
                "refusing to delete every object of the store: give a prefix",
            ));
        }
        let objects = self.list(prefix).await?;
        let paths: Vec<object_store::Result<Path>> = objects
            .iter()
            .map(|o| self.path(&o.key))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(Ok)
            .collect();
        let deleted = self
            .inner
            .delete_stream(futures::stream::iter(paths).boxed())
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await
            .map_err(self.err("delete below", prefix))?;
        Ok(deleted)
    }

    /// Copies `from` to `to` (overwriting).
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let (f, t) = (self.path(from)?, self.path(to)?);
        self.inner
            .copy(&f, &t)
            .await
            .map_err(self.err("copy", &format!("{from} to {to}")))
    }

    /// Moves `from` to `to` (overwriting). Copy then delete on object stores: `to` is
    /// whole before `from` disappears.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let (f, t) = (self.path(from)?, self.path(to)?);
        self.inner
            .rename(&f, &t)
            .await
            .map_err(self.err("rename", &format!("{from} to {to}")))
    }

    /// A URL anyone can GET `key` with until `expires_in` has passed: a presigned URL on
    /// S3/GCS/Azure (signed with the store's credentials, no request made), a `file://` URL
    /// for local storage (which has no expiry: local storage is for single-machine use).
    pub async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        let path = self.path(key)?;
        if let Some(signer) = &self.signer {
            return signer
                .signed_url(object_store::signer::Method::GET, &path, expires_in)
                .await
                .map(|u| u.to_string())
                .map_err(self.err("presign", key));
        }
        let local = self
            .local
            .as_ref()
            .ok_or_else(|| StorageError::other("this store cannot presign URLs"))?;
        let file = local
            .path_to_filesystem(&path)
            .map_err(self.err("presign", key))?;
        url::Url::from_file_path(&file)
            .map(|u| u.to_string())
            .map_err(|()| {
                StorageError::other(format!("{} is not an absolute path", file.display()))
            })
    }
}

/// `Ok(None)` for NotFound, the error otherwise. A missing bucket is an error, not an
/// absent object.
fn not_found_is_none<T>(e: object_store::Error) -> Result<Option<T>, object_store::Error> {
    match &e {
        object_store::Error::NotFound { .. } if !format!("{e:?}").contains("NoSuchBucket") => {
            Ok(None)
        }
        _ => Err(e),
    }
}

fn retry_config(target: &StorageTarget) -> Result<RetryConfig, StorageError> {
    let number = |key: &str| -> Result<Option<u64>, StorageError> {
        target
            .options
            .get(key)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    StorageError::invalid_target(format!(
                        "storage option {key} must be a whole number, not {v:?}"
                    ))
                })
            })
            .transpose()
    };
    let max_retries = number(OPTION_MAX_RETRIES)?
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .unwrap_or(DEFAULT_MAX_RETRIES);
    let retry_timeout = number(OPTION_RETRY_TIMEOUT_SECS)?
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_TIMEOUT);
    Ok(RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries,
        retry_timeout,
    })
}

#[cfg(test)]
mod tests;
