//! Command-line interface: one subcommand per way of running the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::telemetry::{self, LogFormat};
use crate::{Error, Result, api, controller, dev, runtime};

#[derive(Debug, Parser)]
#[command(name = "privacy-operator", version, about, long_about = None)]
pub struct Cli {
    /// Log level or filter directive (e.g. `info`, `privacy_operator=debug`). `RUST_LOG` wins.
    #[arg(
        long,
        global = true,
        env = "PRIVACY_OPERATOR_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "PRIVACY_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: boxing the large `run` options would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller against the cluster in KUBECONFIG (or the in-cluster configuration).
    Run(RunArgs),

    /// Print every CustomResourceDefinition as multi-document YAML.
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long, value_name = "DIR", conflicts_with = "reference")]
        split: Option<PathBuf>,

        /// Print the resource reference (Markdown, as in docs/reference.md) instead.
        #[arg(long)]
        reference: bool,
    },

    /// Run the whole product on this machine without a cluster: a Kubernetes API emulator on
    /// loopback with the CRDs installed, the controller, a local job runner and a local
    /// object store. Writes DIR/kubeconfig for kubectl.
    Dev(DevArgs),

    /// Run one worker task (started by the operator's Jobs).
    Worker(WorkerArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The task file (JSON, mounted from the per-Job Secret). See `privacy_operator::worker`.
    #[arg(long, value_name = "PATH", env = crate::worker::TASK_ENV)]
    pub task: PathBuf,
}

/// Options of `privacy-operator run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "PRIVACY_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// Image of worker Jobs: the operator's own image, run as `privacy-operator worker`.
    #[arg(long, env = "PRIVACY_OPERATOR_WORKER_IMAGE")]
    pub worker_image: String,

    /// imagePullPolicy of worker Jobs (default: the cluster's).
    #[arg(long, env = "PRIVACY_OPERATOR_WORKER_IMAGE_PULL_POLICY")]
    pub worker_image_pull_policy: Option<String>,

    /// Service account of worker Pods (default: the namespace's `default`).
    #[arg(long, env = "PRIVACY_OPERATOR_WORKER_SERVICE_ACCOUNT")]
    pub worker_service_account: Option<String>,

    /// The Secret (NAMESPACE/NAME) holding the salt of subject digests. Keep it forever:
    /// a new salt stops duplicates and the erasure ledger from matching.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        env = "PRIVACY_OPERATOR_SALT_SECRET"
    )]
    pub salt_secret: Option<String>,

    /// Key of the salt in --salt-secret.
    #[arg(long, default_value = "salt", env = "PRIVACY_OPERATOR_SALT_KEY")]
    pub salt_key: String,

    /// Create --salt-secret with a random salt when it does not exist (GitOps-safe: the salt
    /// is made once, in the cluster, never rendered by a tool that would rotate it).
    #[arg(
        long,
        env = "PRIVACY_OPERATOR_CREATE_SALT_SECRET",
        requires = "salt_secret"
    )]
    pub create_salt_secret: bool,

    /// The salt itself (at least 16 bytes), instead of --salt-secret.
    #[arg(
        long,
        env = "PRIVACY_OPERATOR_SALT",
        hide_env_values = true,
        conflicts_with = "salt_secret"
    )]
    pub salt: Option<String>,

    /// Requests reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,

    /// Reporting instance of Events and identity in the leader Lease (set to the Pod name).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,

    /// Serve /metrics (Prometheus) on this address, e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR", env = "PRIVACY_OPERATOR_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Serve /healthz and /readyz on this address, e.g. 0.0.0.0:8081.
    #[arg(long, value_name = "ADDR", env = "PRIVACY_OPERATOR_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// Elect one active replica through a coordination.k8s.io Lease; the others wait.
    #[arg(long, env = "PRIVACY_OPERATOR_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        default_value = "privacy-operator-leader",
        env = "PRIVACY_OPERATOR_LEASE_NAME"
    )]
    pub lease_name: String,

    /// Namespace of the leader Lease (default: the client's namespace, in-cluster the Pod's).
    #[arg(long, env = "PRIVACY_OPERATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a lease is valid without renewal (e.g. 15s).
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "PRIVACY_OPERATOR_LEASE_DURATION")]
    pub lease_duration: Duration,

    /// How long the leader retries a failed renewal before it stops reconciling (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "PRIVACY_OPERATOR_RENEW_DEADLINE")]
    pub renew_deadline: Duration,

    /// How often the leader renews and standbys try to acquire (e.g. 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "PRIVACY_OPERATOR_RETRY_PERIOD")]
    pub retry_period: Duration,

    /// Object storage for exports and worker results: s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix or file:///dir. Credentials and endpoint come from the
    /// environment object_store understands (AWS_*, GOOGLE_*, AZURE_*) and are handed to
    /// workers. Without it, Access and Portability requests are refused.
    #[arg(long, value_name = "URL", env = "PRIVACY_OPERATOR_STORAGE_URL")]
    pub storage_url: Option<String>,

    /// The Secret (NAMESPACE/NAME) holding the erasure ledger's HMAC key (hex, at least 16
    /// bytes; not the salt). With --storage-url, every purge is recorded in the ledger and a
    /// DataSystem restored from backup is replayed. Keep it forever: entries hashed with
    /// another key cannot be replayed.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        env = "PRIVACY_OPERATOR_LEDGER_KEY_SECRET"
    )]
    pub ledger_key_secret: Option<String>,

    /// Key of the ledger key in --ledger-key-secret.
    #[arg(long, default_value = "key", env = "PRIVACY_OPERATOR_LEDGER_KEY_KEY")]
    pub ledger_key_key: String,

    /// Create --ledger-key-secret with a random key when it does not exist.
    #[arg(
        long,
        env = "PRIVACY_OPERATOR_CREATE_LEDGER_KEY_SECRET",
        requires = "ledger_key_secret"
    )]
    pub create_ledger_key_secret: bool,
}

/// A duration such as `15s`, `1m30s`, `500ms` or ISO 8601 `PT15S`.
fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 15s or 1m30s: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

impl RunArgs {
    /// The controller configuration these options describe.
    pub fn controller_config(&self) -> Result<controller::Config> {
        let salt = match (&self.salt, &self.salt_secret) {
            (Some(salt), _) => controller::SaltSource::Inline(salt.as_bytes().to_vec()),
            (None, Some(secret)) => {
                let (namespace, name) = secret.split_once('/').ok_or_else(|| {
                    Error::Config(format!("--salt-secret {secret:?} must be NAMESPACE/NAME"))
                })?;
                controller::SaltSource::Secret {
                    namespace: namespace.into(),
                    name: name.into(),
                    key: self.salt_key.clone(),
                    create: self.create_salt_secret,
                }
            }
            (None, None) => {
                return Err(Error::Config(
                    "give --salt-secret NAMESPACE/NAME (or --salt): subject digests need a salt"
                        .into(),
                ));
            }
        };
        let mut config = controller::Config::new(
            controller::WorkerSettings {
                image: self.worker_image.clone(),
                image_pull_policy: self.worker_image_pull_policy.clone(),
                service_account: self.worker_service_account.clone(),
                output_root: controller::worker::OUTPUT_ROOT.into(),
            },
            salt,
        );
        config.namespace = self.namespace.clone();
        config.concurrency = self.concurrency.max(1);
        config.instance = self.instance.clone();
        if let Some(url) = self.storage_url.as_deref().filter(|u| !u.is_empty()) {
            let target = crate::storage::StorageTarget::from_env(url)
                .and_then(|t| t.validate().map(|()| t))
                .map_err(|e| Error::Config(format!("--storage-url: {e}")))?;
            config.storage = Some(target);
        }
        if let Some(secret) = &self.ledger_key_secret {
            let (namespace, name) = secret.split_once('/').ok_or_else(|| {
                Error::Config(format!(
                    "--ledger-key-secret {secret:?} must be NAMESPACE/NAME"
                ))
            })?;
            config.ledger_key = Some(crate::ledger::LedgerKeySource::Secret {
                namespace: namespace.into(),
                name: name.into(),
                key: self.ledger_key_key.clone(),
                create: self.create_ledger_key_secret,
            });
        }
        Ok(config)
    }

    /// The runtime options these flags describe; `default_namespace` holds the Lease when no
    /// --lease-namespace is given.
    pub fn runtime_options(&self, default_namespace: &str) -> Result<runtime::Options> {
        let leader_election = if self.leader_elect {
            let identity = self.instance.clone().unwrap_or_default();
            let lease = runtime::LeaseConfig {
                name: self.lease_name.clone(),
                namespace: self
                    .lease_namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| default_namespace.to_string()),
                identity,
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            };
            lease.validate()?;
            Some(lease)
        } else {
            None
        };
        Ok(runtime::Options {
            health_addr: self.health_addr,
            metrics_addr: self.metrics_addr,
            leader_election,
        })
    }
}

async fn run_controller(args: RunArgs) -> Result<()> {
    let config = args.controller_config()?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| Error::KubeConfig(e.to_string()))?;
    let options = args.runtime_options(client.default_namespace())?;
    runtime::run(
        client,
        config,
        std::sync::Arc::new(controller::SystemClock),
        options,
        shutdown_signal(),
        None,
    )
    .await
}

/// Ctrl-C, or SIGTERM (how Kubernetes stops a Pod).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where state, the kubeconfig and the local object store live.
    #[arg(long, value_name = "DIR", default_value = ".dev-data")]
    pub data_dir: PathBuf,

    /// Address of the Kubernetes API emulator (loopback; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,

    /// Serve the API and the CRDs only; do not start the controller nor the job runner.
    #[arg(long)]
    pub no_controller: bool,

    /// Create a SQLite CRM with sample contacts (DIR/sample/crm.db), its DataSystem and a
    /// RetentionPolicy with windows of seconds, to watch a whole erasure in a minute.
    #[arg(long)]
    pub with_sample_data: bool,

    /// Worker Jobs run at once by the local job runner.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,
}

pub async fn run(cli: Cli) -> Result<()> {
    telemetry::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Run(args) => run_controller(args).await,
        Command::Crd {
            reference: true, ..
        } => {
            print!("{}", api::reference_markdown());
            Ok(())
        }
        Command::Crd { split: None, .. } => {
            print!("{}", api::crds_yaml());
            Ok(())
        }
        Command::Crd {
            split: Some(dir), ..
        } => api::write_crds(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        }),
        Command::Dev(args) => dev::run(args).await,
        Command::Worker(args) => crate::worker::run_file(&args.task)
            .await
            .map(|_| ())
            .map_err(|e| Error::Worker(e.to_string())),
    }
}

#[cfg(test)]
mod run_args_tests {
    use super::*;

    fn parse(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["privacy-operator", "run"].iter().chain(args))
            .expect("arguments parse");
        match cli.command {
            Command::Run(a) => a,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn salt_from_a_secret() {
        let a = parse(&[
            "--worker-image",
            "img:1",
            "--salt-secret",
            "privacy/salt",
            "--namespace",
            "shop",
        ]);
        let c = a.controller_config().unwrap();
        assert_eq!(c.namespace.as_deref(), Some("shop"));
        assert_eq!(c.worker.image, "img:1");
        assert!(matches!(
            c.salt,
            controller::SaltSource::Secret { ref namespace, ref name, ref key, create: false }
                if namespace == "privacy" && name == "salt" && key == "salt"
        ));
    }

    #[test]
    fn runtime_flags_build_the_lease_and_endpoints() {
        let a = parse(&[
            "--worker-image",
            "img:1",
            "--salt",
            "0123456789abcdef",
            "--instance",
            "pod-a",
            "--leader-elect",
            "--lease-duration",
            "15s",
            "--renew-deadline",
            "10s",
            "--retry-period",
            "2s",
            "--metrics-addr",
            "0.0.0.0:8080",
            "--health-addr",
            "0.0.0.0:8081",
        ]);
        let o = a.runtime_options("operators").unwrap();
        let lease = o.leader_election.expect("leader election on");
        assert_eq!(lease.namespace, "operators");
        assert_eq!(lease.name, "privacy-operator-leader");
        assert_eq!(lease.identity, "pod-a");
        assert_eq!(lease.lease_duration, Duration::from_secs(15));
        assert_eq!(lease.retry_period, Duration::from_secs(2));
        assert_eq!(o.metrics_addr, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(o.health_addr, Some("0.0.0.0:8081".parse().unwrap()));

        let off = parse(&["--worker-image", "img:1", "--salt", "0123456789abcdef"]);
        assert!(off.runtime_options("x").unwrap().leader_election.is_none());
        // Leader election needs an identity and sane timings.
        let a = parse(&["--worker-image", "i", "--leader-elect"]);
        assert!(a.runtime_options("x").is_err());
        let a = parse(&[
            "--worker-image",
            "i",
            "--instance",
            "p",
            "--leader-elect",
            "--renew-deadline",
            "20s",
        ]);
        assert!(a.runtime_options("x").is_err());
    }

    #[test]
    fn durations_parse_like_the_chart_writes_them() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn a_salt_is_required_and_secret_names_are_checked() {
        let a = parse(&["--worker-image", "img:1"]);
        assert!(a.controller_config().is_err());
        let a = parse(&["--worker-image", "img:1", "--salt-secret", "no-slash"]);
        assert!(a.controller_config().is_err());
    }

    #[test]
    fn the_ledger_key_comes_from_a_secret() {
        let base = ["--worker-image", "img:1", "--salt", "0123456789abcdef"];
        let c = parse(&base).controller_config().unwrap();
        assert!(c.ledger_key.is_none());
        let args: Vec<&str> = base
            .iter()
            .copied()
            .chain(["--ledger-key-secret", "privacy/ledger"])
            .collect();
        let c = parse(&args).controller_config().unwrap();
        assert!(matches!(
            c.ledger_key,
            Some(crate::ledger::LedgerKeySource::Secret { ref namespace, ref name, ref key, .. })
                if namespace == "privacy" && name == "ledger" && key == "key"
        ));
        let args: Vec<&str> = base
            .iter()
            .copied()
            .chain(["--ledger-key-secret", "ledger"])
            .collect();
        assert!(parse(&args).controller_config().is_err());
    }
}
