//! [`StorageTarget`]: where objects live (a URL plus object_store options), and how the
//! operator builds one from its own environment to hand its storage credentials to workers.

use std::collections::BTreeMap;
use std::fmt;

use object_store::ObjectStoreScheme;
use object_store::aws::AmazonS3ConfigKey;
use object_store::azure::AzureConfigKey;
use object_store::gcp::GoogleConfigKey;
use serde::{Deserialize, Serialize};
use url::Url;

use super::StorageError;

/// Options this crate reads itself (not passed to object_store): the retry budget of one
/// request. Defaults keep a worker from hanging minutes on a store that is down.
pub const OPTION_MAX_RETRIES: &str = "max_retries";
/// Seconds after the first attempt of a request during which retries may still start.
pub const OPTION_RETRY_TIMEOUT_SECS: &str = "retry_timeout_secs";

/// Where objects live: a URL and object_store config options. Travels inside task Secrets,
/// so `Debug` redacts option values (and any credentials in the URL).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StorageTarget {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
    /// `file:///abs/dir`.
    pub url: String,
    /// object_store config keys, e.g. `aws_endpoint`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_region`, `aws_allow_http`; plus [`OPTION_MAX_RETRIES`]
    /// and [`OPTION_RETRY_TIMEOUT_SECS`].
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// The kind of store a target URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    S3,
    Gcs,
    Azure,
    Local,
}

impl Backend {
    /// Prefix of the environment variables object_store understands for this backend.
    fn env_prefix(self) -> Option<&'static str> {
        match self {
            Backend::S3 => Some("AWS_"),
            Backend::Gcs => Some("GOOGLE_"),
            Backend::Azure => Some("AZURE_"),
            Backend::Local => None,
        }
    }

    /// Does object_store accept `key` as a config option of this backend?
    fn accepts(self, key: &str) -> bool {
        match self {
            Backend::S3 => key.parse::<AmazonS3ConfigKey>().is_ok(),
            Backend::Gcs => key.parse::<GoogleConfigKey>().is_ok(),
            Backend::Azure => key.parse::<AzureConfigKey>().is_ok(),
            Backend::Local => false,
        }
    }
}

impl StorageTarget {
    /// A target without options (credentials then come from the store's defaults, e.g. an
    /// instance role).
    pub fn new(url: impl Into<String>) -> Self {
        StorageTarget {
            url: url.into(),
            options: BTreeMap::new(),
        }
    }

    /// True for the default (empty) target: no storage configured.
    pub fn is_unset(&self) -> bool {
        self.url.is_empty()
    }

    /// Adds one option.
    pub fn with_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(key.into(), value.into());
        self
    }

    /// A target for `url` with the options object_store understands taken from the process
    /// environment (`AWS_*` for S3, `GOOGLE_*` for GCS, `AZURE_*` for Azure), so the
    /// operator can hand the credentials it was given to its workers.
    pub fn from_env(url: &str) -> Result<Self, StorageError> {
        Self::from_vars(url, std::env::vars())
    }

    /// [`StorageTarget::from_env`] over explicit variables (for tests and callers that
    /// filter the environment themselves). Unknown variables are skipped.
    pub fn from_vars(
        url: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StorageError> {
        let (backend, _, _) = parse(url)?;
        let mut target = StorageTarget::new(url);
        if let Some(prefix) = backend.env_prefix() {
            for (name, value) in vars {
                if !name.starts_with(prefix) || value.is_empty() {
                    continue;
                }
                let key = name.to_ascii_lowercase();
                if backend.accepts(&key) {
                    target.options.insert(key, value);
                }
            }
        }
        Ok(target)
    }

    /// The target to hand to workers: without the settings that point at files or
    /// endpoints of the operator's own Pod (a web-identity token file, a role to assume with
    /// it, container or instance metadata endpoints, a service-account key path), which a
    /// worker Pod does not have. A worker with workload identity fills them from its own
    /// environment ([`StorageTarget::with_env_defaults`]).
    pub fn for_workers(&self) -> StorageTarget {
        let mut out = self.clone();
        out.options.retain(|k, _| !pod_local(k));
        out
    }

    /// Adds the options object_store understands from this process's environment that the
    /// target does not set itself (a worker's own workload identity).
    pub fn with_env_defaults(&self) -> StorageTarget {
        let mut out = self.clone();
        if let Ok(env) = StorageTarget::from_env(&self.url) {
            for (k, v) in env.options {
                out.options.entry(k).or_insert(v);
            }
        }
        out
    }

    /// The backend this target's URL names.
    pub fn backend(&self) -> Result<Backend, StorageError> {
        parse(&self.url).map(|(b, _, _)| b)
    }

    /// Checks the URL and the options without connecting.
    pub fn validate(&self) -> Result<(), StorageError> {
        let (backend, _, _) = parse(&self.url)?;
        for key in self.options.keys() {
            if key == OPTION_MAX_RETRIES || key == OPTION_RETRY_TIMEOUT_SECS {
                continue;
            }
            if !backend.accepts(key) {
                return Err(StorageError::invalid_target(format!(
                    "storage option {key:?} is not understood for {backend:?} storage"
                )));
            }
        }
        Ok(())
    }
}

/// Does `key` name a file or endpoint local to the Pod that configured it?
fn pod_local(key: &str) -> bool {
    use AmazonS3ConfigKey as S3;
    use AzureConfigKey as Az;
    use GoogleConfigKey as Gcs;
    if let Ok(k) = key.parse::<S3>() {
        return matches!(
            k,
            S3::WebIdentityTokenFile
                | S3::RoleArn
                | S3::RoleSessionName
                | S3::ContainerCredentialsRelativeUri
                | S3::ContainerCredentialsFullUri
                | S3::ContainerAuthorizationTokenFile
                | S3::MetadataEndpoint
        );
    }
    if let Ok(k) = key.parse::<Gcs>() {
        return matches!(k, Gcs::ServiceAccount | Gcs::ApplicationCredentials);
    }
    if let Ok(k) = key.parse::<Az>() {
        return matches!(k, Az::FederatedTokenFile | Az::MsiEndpoint);
    }
    false
}

/// The backend, the parsed URL and the prefix path inside the bucket (no leading or
/// trailing slash).
pub(super) fn parse(url: &str) -> Result<(Backend, Url, String), StorageError> {
    let parsed = Url::parse(url).map_err(|e| {
        StorageError::invalid_target(format!(
            "storage URL {:?} is not a URL: {e}",
            redact_url(url)
        ))
    })?;
    let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|_| unsupported(url))?;
    let backend = match scheme {
        ObjectStoreScheme::AmazonS3 => Backend::S3,
        ObjectStoreScheme::GoogleCloudStorage => Backend::Gcs,
        ObjectStoreScheme::MicrosoftAzure => Backend::Azure,
        ObjectStoreScheme::Local => Backend::Local,
        _ => return Err(unsupported(url)),
    };
    if backend == Backend::Local && !parsed.path().starts_with('/') {
        return Err(StorageError::invalid_target(format!(
            "local storage URL {url:?} must name an absolute directory (file:///abs/dir)"
        )));
    }
    Ok((backend, parsed, path.as_ref().to_string()))
}

fn unsupported(url: &str) -> StorageError {
    StorageError::invalid_target(format!(
        "storage URL {:?} is not supported: use s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///abs/dir",
        redact_url(url)
    ))
}

/// The URL without userinfo (`s3://key:secret@bucket` is legal but must not be logged).
pub(super) fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("redacted");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl fmt::Debug for StorageTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted<'a>(&'a BTreeMap<String, String>);
        impl fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.keys().map(|k| (k, "<redacted>")))
                    .finish()
            }
        }
        f.debug_struct("StorageTarget")
            .field("url", &redact_url(&self.url))
            .field("options", &Redacted(&self.options))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_gives_the_backends_own_options_only() {
        let env = vars(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_PROFILE_NOT_A_KEY", "x"),
            ("GOOGLE_SERVICE_ACCOUNT", "/sa.json"),
            ("HOME", "/root"),
        ]);
        let t = StorageTarget::from_vars("s3://bucket/root", env.clone()).unwrap();
        assert_eq!(
            t.options.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "aws_access_key_id",
                "aws_allow_http",
                "aws_endpoint",
                "aws_secret_access_key"
            ]
        );
        let g = StorageTarget::from_vars("gs://bucket", env.clone()).unwrap();
        assert_eq!(g.options.len(), 1);
        let l = StorageTarget::from_vars("file:///tmp/x", env).unwrap();
        assert!(l.options.is_empty());
        t.validate().unwrap();
    }

    #[test]
    fn workers_get_portable_settings_only() {
        let t = StorageTarget::from_vars(
            "s3://bucket",
            vars(&[
                ("AWS_REGION", "eu-west-1"),
                ("AWS_ROLE_ARN", "arn:aws:iam::1:role/operator"),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/token"),
                ("AWS_ACCESS_KEY_ID", "AKIA"),
            ]),
        )
        .unwrap();
        let w = t.for_workers();
        assert_eq!(
            w.options.keys().map(String::as_str).collect::<Vec<_>>(),
            ["aws_access_key_id", "aws_region"]
        );
        let g = StorageTarget::new("gs://b")
            .with_option("google_service_account", "/sa.json")
            .with_option("google_service_account_key", "{}");
        assert_eq!(g.for_workers().options.len(), 1);
    }

    #[test]
    fn debug_redacts_values_and_url_credentials() {
        let t = StorageTarget::new("s3://AKIA:topsecret@bucket/p")
            .with_option("aws_secret_access_key", "hunter2");
        let d = format!("{t:?} {t:#?}");
        assert!(!d.contains("hunter2") && !d.contains("topsecret"), "{d}");
        assert!(d.contains("aws_secret_access_key"), "{d}");
    }

    #[test]
    fn bad_targets_are_refused_clearly() {
        for url in [
            "http://example.com/x",
            "memory:///",
            "ftp://h/x",
            "not a url",
        ] {
            let e = StorageTarget::new(url).validate().unwrap_err();
            assert_eq!(e.reason, "InvalidStorageTarget", "{url}: {e}");
        }
        let e = StorageTarget::new("s3://b")
            .with_option("nonsense", "1")
            .validate()
            .unwrap_err();
        assert!(e.message.contains("nonsense"), "{e}");
        assert_eq!(
            parse("s3://bucket/a/b/").unwrap().2,
            "a/b",
            "prefix without slashes"
        );
        assert_eq!(
            StorageTarget::new("az://container/p").backend().unwrap(),
            Backend::Azure
        );
    }
}
