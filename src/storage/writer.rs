//! [`ObjectWriter`]: a streaming upload with the SHA-256 and size of the stored bytes
//! computed on the way, optionally age-encrypted.
//!
//! Objects up to [`SINGLE_PUT_LIMIT`] are stored with a single PUT at
//! [`ObjectWriter::finish`]; larger ones switch to a multipart upload of [`PART_SIZE`] parts
//! with at most [`MAX_PARTS_IN_FLIGHT`] uploading at once, so memory stays bounded whatever
//! the object's size.
//! Either way nothing is visible under the key until `finish` succeeds: a failed or
//! abandoned writer aborts its upload (also when dropped), and the key keeps its previous
//! content (or stays absent).

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use super::error::INVALID_RECIPIENT;
use super::{ObjectInfo, StorageError};

/// Size of a multipart part (S3 requires at least 5 MiB for all parts but the last).
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Objects up to this size are stored with one PUT at finish; beyond it the upload turns
/// multipart, so that parts upload while the rest is still being produced.
pub const SINGLE_PUT_LIMIT: usize = PART_SIZE;
/// Parts uploading at once; writes wait for a slot (backpressure).
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

/// A streaming upload to one key. Call [`ObjectWriter::finish`] to publish the object, or
/// [`ObjectWriter::abort`] to drop it.
pub struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    location: Path,
    /// The key as the caller named it (relative to its [`super::Store`]).
    key: String,
    /// The object's URL, for messages.
    url: String,
    hash: Sha256,
    size: u64,
    /// Bytes not yet handed to an upload (until the first part is full).
    pending: Vec<u8>,
    upload: Option<WriteMultipart>,
    part_size: usize,
    single_put_limit: usize,
    encryption: Option<Encryption>,
    /// Set after a failed write: the upload was aborted, nothing more can be written.
    failed: Option<StorageError>,
}

/// age encryption: the sync stream writer fills a shared buffer that the writer drains
/// into the upload after every call.
struct Encryption {
    stream: age::stream::StreamWriter<SharedBuf>,
    out: SharedBuf,
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parses an age X25519 recipient (`age1...`).
pub fn parse_recipient(recipient: &str) -> Result<age::x25519::Recipient, StorageError> {
    recipient.trim().parse().map_err(|e: &str| {
        StorageError::new(
            INVALID_RECIPIENT,
            format!("export recipient is not an age X25519 public key (age1...): {e}"),
        )
    })
}

impl ObjectWriter {
    pub(super) fn new(
        store: Arc<dyn ObjectStore>,
        location: Path,
        key: String,
        url: String,
    ) -> Self {
        ObjectWriter {
            store,
            location,
            key,
            url,
            hash: Sha256::new(),
            size: 0,
            pending: Vec::new(),
            upload: None,
            part_size: PART_SIZE,
            single_put_limit: SINGLE_PUT_LIMIT,
            encryption: None,
            failed: None,
        }
    }

    /// Encrypts everything written from now on to the age X25519 `age_recipient`; `size` and
    /// `sha256` of the result are those of the stored (encrypted) bytes. Must be called
    /// before the first write.
    pub fn encrypt_to(mut self, age_recipient: &str) -> Result<ObjectWriter, StorageError> {
        if self.size > 0 || self.encryption.is_some() {
            return Err(StorageError::other(
                "encrypt_to must be called once, before anything is written",
            ));
        }
        let recipient = parse_recipient(age_recipient)?;
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| StorageError::new(INVALID_RECIPIENT, e.to_string()))?;
        let out = SharedBuf::default();
        let stream = encryptor
            .wrap_output(out.clone())
            .map_err(|e| StorageError::other(format!("age header: {e}")))?;
        self.encryption = Some(Encryption { stream, out });
        Ok(self)
    }

    /// The key being written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes stored so far (after encryption).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `data`. Waits while [`MAX_PARTS_IN_FLIGHT`] parts are uploading. After an
    /// error the upload is aborted and every later call fails.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = match &mut self.encryption {
            Some(enc) => match enc.stream.write_all(data) {
                Ok(()) => {
                    let sealed = enc.out.take();
                    self.store_bytes(&sealed).await
                }
                Err(e) => Err(StorageError::other(format!("age encryption: {e}"))),
            },
            None => self.store_bytes(data).await,
        };
        if let Err(e) = &result {
            self.fail(e.clone()).await;
        }
        result
    }

    /// Completes the upload and publishes the object.
    pub async fn finish(mut self) -> Result<ObjectInfo, StorageError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if let Some(enc) = self.encryption.take() {
            let tail = enc
                .stream
                .finish()
                .map_err(|e| StorageError::other(format!("age encryption: {e}")))
                .map(|_| enc.out.take());
            let result = match tail {
                Ok(tail) => self.store_bytes(&tail).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                self.abort_upload().await;
                return Err(e);
            }
        }
        let result = match self.upload.take() {
            // WriteMultipart::finish aborts the upload itself when completing fails.
            Some(upload) => upload.finish().await.map(|_| ()),
            None => {
                let payload = PutPayload::from(Bytes::from(std::mem::take(&mut self.pending)));
                self.store.put(&self.location, payload).await.map(|_| ())
            }
        };
        result.map_err(|e| StorageError::from_store(e, "upload", &self.url))?;
        Ok(ObjectInfo {
            key: self.key.clone(),
            size: self.size,
            sha256: hex::encode(std::mem::take(&mut self.hash).finalize()),
        })
    }

    /// Drops the upload: parts already sent are discarded, the key is not touched.
    pub async fn abort(mut self) -> Result<(), StorageError> {
        match self.upload.take() {
            Some(upload) => upload
                .abort()
                .await
                .map_err(|e| StorageError::from_store(e, "abort upload", &self.url)),
            None => Ok(()),
        }
    }

    /// Hashes and queues bytes that will be stored as they are.
    async fn store_bytes(&mut self, data: &[u8]) -> Result<(), StorageError> {
        if data.is_empty() {
            return Ok(());
        }
        self.hash.update(data);
        self.size += data.len() as u64;
        if self.upload.is_none() {
            self.pending.extend_from_slice(data);
            if self.pending.len() <= self.single_put_limit {
                return Ok(());
            }
            let upload = self
                .store
                .put_multipart(&self.location)
                .await
                .map_err(|e| StorageError::from_store(e, "start upload", &self.url))?;
            let mut upload = WriteMultipart::new_with_chunk_size(upload, self.part_size);
            upload.put(Bytes::from(std::mem::take(&mut self.pending)));
            self.upload = Some(upload);
        } else if let Some(upload) = &mut self.upload {
            upload.write(data);
        }
        if let Some(upload) = &mut self.upload {
            upload
                .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                .await
                .map_err(|e| StorageError::from_store(e, "upload part", &self.url))?;
        }
        Ok(())
    }

    async fn fail(&mut self, e: StorageError) {
        self.abort_upload().await;
        self.pending = Vec::new();
        self.failed = Some(e);
    }

    async fn abort_upload(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Err(e) = upload.abort().await
        {
            tracing::debug!(url = %self.url, error = %e, "could not abort a failed upload");
        }
    }

    /// Uses parts of `part_size` bytes and switches to multipart once more than one part is
    /// written (instead of [`PART_SIZE`] and [`SINGLE_PUT_LIMIT`]): for tests and tuning.
    /// S3 rejects parts under 5 MiB (but the last).
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size.max(1);
        self.single_put_limit = self.part_size;
        self
    }
}

impl Drop for ObjectWriter {
    /// A writer dropped mid-upload (an error elsewhere, a cancelled task) aborts its
    /// multipart upload in the background so the store does not keep orphaned parts.
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}
