//! [`StorageError`]: a CamelCase reason for status and manifests, and a message for people,
//! mapped from object_store's errors.

use std::error::Error as StdError;
use std::fmt;

use object_store::client::{HttpError, HttpErrorKind};

/// The store could not be reached (connection refused, DNS, timeouts after retries).
pub const UNREACHABLE: &str = "StorageUnreachable";
/// Credentials missing, wrong or lacking permission.
pub const ACCESS_DENIED: &str = "AccessDenied";
/// The bucket (container) does not exist.
pub const NO_SUCH_BUCKET: &str = "NoSuchBucket";
/// The target URL or its options cannot be used.
pub const INVALID_TARGET: &str = "InvalidStorageTarget";
/// An export recipient that is not an age X25519 public key.
pub const INVALID_RECIPIENT: &str = "InvalidRecipient";
/// Anything else the store reported.
pub const OTHER: &str = "StorageError";

/// Why a storage operation failed. Messages name keys and buckets, never option values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageError {
    /// One of StorageUnreachable, AccessDenied, NoSuchBucket, InvalidStorageTarget,
    /// InvalidRecipient, StorageError.
    pub reason: &'static str,
    pub message: String,
}

impl StorageError {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        StorageError {
            reason,
            message: message.into(),
        }
    }

    pub fn invalid_target(message: impl Into<String>) -> Self {
        Self::new(INVALID_TARGET, message)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(OTHER, message)
    }

    /// Maps an object_store error of an operation (`what`, e.g. "put exports/x") on the
    /// store at `url` to a reason people and the planner can act on.
    pub(super) fn from_store(e: object_store::Error, what: &str, url: &str) -> Self {
        let text = chain_text(&e);
        let reason = classify(&e, &text);
        let hint = match reason {
            UNREACHABLE => "; check the storage endpoint and the network",
            ACCESS_DENIED => "; check the storage credentials and their permissions",
            NO_SUCH_BUCKET => "; create the bucket or fix the storage URL",
            _ => "",
        };
        StorageError::new(reason, format!("{what} at {url}: {text}{hint}"))
    }
}

fn classify(e: &object_store::Error, text: &str) -> &'static str {
    // S3-style error codes in the response body are the most precise signal.
    if text.contains("NoSuchBucket") || text.contains("ContainerNotFound") {
        return NO_SUCH_BUCKET;
    }
    if [
        "AccessDenied",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
    ]
    .iter()
    .any(|c| text.contains(c))
    {
        return ACCESS_DENIED;
    }
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => return ACCESS_DENIED,
        object_store::Error::UnknownConfigurationKey { .. } => return INVALID_TARGET,
        _ => {}
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<HttpError>()
            && matches!(
                h.kind(),
                HttpErrorKind::Connect | HttpErrorKind::Timeout | HttpErrorKind::Request
            )
        {
            return UNREACHABLE;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
        {
            return ACCESS_DENIED;
        }
        source = s.source();
    }
    OTHER
}

/// The error and its sources, deduplicated (object_store repeats inner messages).
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl StdError for StorageError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_store_errors_to_reasons() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "nope");
        let e = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(io),
        };
        let m = StorageError::from_store(e, "put a", "file:///x");
        assert_eq!(m.reason, ACCESS_DENIED);
        assert!(m.message.contains("credentials"), "{m}");
        let e = object_store::Error::Generic {
            store: "S3",
            source: "Server returned error response: <Code>NoSuchBucket</Code>".into(),
        };
        assert_eq!(
            StorageError::from_store(e, "get", "s3://b").reason,
            NO_SUCH_BUCKET
        );
        let e = object_store::Error::NotImplemented {
            operation: "x".into(),
            implementer: "y".into(),
        };
        assert_eq!(StorageError::from_store(e, "x", "s3://b").reason, OTHER);
    }
}
