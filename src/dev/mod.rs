//! `privacy-operator dev`: the whole product on one machine. Starts the Kubernetes API
//! emulator (state kept in the data dir, so a restart continues where it stopped), installs
//! the CRDs, writes a kubeconfig, and runs the controller and the local job runner
//! ([`jobs`]) against it, with a local-filesystem object store under the data dir.
//! `--with-sample-data` adds a SQLite CRM and the resources that describe it ([`sample`]).
//!
//! Layout of the data dir:
//!
//! | path | what |
//! | --- | --- |
//! | `kubeconfig` | for kubectl |
//! | `emulator-state.json` | the API objects |
//! | `salt`, `ledger-key` | the salt of subject digests and the erasure ledger's key (kept forever) |
//! | `objects/` | the object store (exports, restore archives, ledger) |
//! | `logs/<namespace>/<job>.log` | worker output, one file per Job |
//! | `run/` | private per-run directories of worker processes (removed after each run) |
//! | `sample/crm.db` | the sample CRM (with `--with-sample-data`) |

pub mod jobs;
pub mod sample;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use emulator::Emulator;
use kube::Client;

use crate::cli::DevArgs;
use crate::controller::clock::SystemClock;
use crate::controller::{self, Config, SaltSource, WorkerSettings};
use crate::ledger::LedgerKeySource;
use crate::storage::StorageTarget;
use crate::{Error, Result, api};

/// The image name put in worker Jobs in dev mode: the local job runner runs Jobs of this
/// image as subprocesses of this binary (nothing pulls it).
pub const DEV_WORKER_IMAGE: &str = "privacy-operator:dev";

/// Where things are, for the lines `dev` prints.
#[derive(Debug, Clone)]
pub struct Layout {
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub objects: PathBuf,
    pub logs: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Layout {
            data_dir: data_dir.to_path_buf(),
            kubeconfig: data_dir.join("kubeconfig"),
            objects: data_dir.join("objects"),
            logs: data_dir.join("logs"),
        }
    }

    /// The object store's URL (a `file://` StorageTarget).
    pub fn objects_url(&self) -> String {
        format!("file://{}", self.objects.display())
    }
}

pub async fn run(args: DevArgs) -> Result<()> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(&args.data_dir).map_err(io_err(&args.data_dir))?;
    // Absolute, so the printed paths and the file:// store work from any directory.
    let data_dir = std::fs::canonicalize(&args.data_dir).map_err(io_err(&args.data_dir))?;
    let layout = Layout::new(&data_dir);
    // Exports and restore archives hold personal data: owner-only.
    jobs::pod::private_dir(&layout.objects).map_err(io_err(&layout.objects))?;

    let handle = Emulator::builder()
        .listen_addr(args.listen)
        .data_dir(&data_dir)
        .start()
        .await
        .map_err(|e| Error::Emulator(format!("cannot listen on {}: {e}", args.listen)))?;
    for crd in api::crds() {
        let value = serde_json::to_value(&crd)?;
        handle
            .create_or_replace(value)
            .map_err(|e| Error::Emulator(e.to_string()))?;
    }
    handle
        .write_kubeconfig(&layout.kubeconfig)
        .map_err(io_err(&layout.kubeconfig))?;
    let uri = handle
        .base_url()
        .parse()
        .map_err(|e| Error::Emulator(format!("emulator URL: {e}")))?;
    let client = Client::try_from(kube::Config::new(uri))?;

    let sample = if args.with_sample_data {
        Some(sample::install(&client, &data_dir).await?)
    } else {
        None
    };

    let mut stops = Vec::new();
    let mut stopped = || {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        async move {
            let _ = rx.await;
        }
    };
    let mut tasks = Vec::new();
    if !args.no_controller {
        let salt = load_or_create_key(&data_dir.join("salt"))?;
        let worker = WorkerSettings {
            image: DEV_WORKER_IMAGE.into(),
            image_pull_policy: Some("Never".into()),
            service_account: None,
            output_root: controller::worker::OUTPUT_ROOT.into(),
        };
        let mut config = Config::new(worker, SaltSource::Inline(salt));
        config.storage = Some(StorageTarget::new(layout.objects_url()));
        config.ledger_key = Some(LedgerKeySource::Inline(load_or_create_key(
            &data_dir.join("ledger-key"),
        )?));
        // A laptop, not a fleet: retry failed reconciles quickly.
        config.error_backoff = Duration::from_millis(200);
        config.max_error_backoff = Duration::from_secs(10);
        tasks.push((
            "controller",
            tokio::spawn(controller::run_until(
                client.clone(),
                config,
                Arc::new(SystemClock),
                stopped(),
            )),
        ));
        let program = std::env::current_exe()
            .map_err(|e| Error::Config(format!("cannot find this program's path: {e}")))?;
        let mut runner = jobs::RunnerConfig::new(program, DEV_WORKER_IMAGE.into(), &data_dir);
        runner.concurrency = args.jobs.max(1);
        tasks.push((
            "job runner",
            tokio::spawn(jobs::run_until(client.clone(), runner, stopped())),
        ));
    }

    print_ready(&handle.base_url(), &layout, &args, sample.as_ref());

    shutdown_signal().await;
    tracing::info!("shutting down");
    for stop in stops {
        let _ = stop.send(());
    }
    for (what, task) in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "{what} ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "{what} task failed"),
            Ok(Ok(Ok(()))) | Err(_) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
    Ok(())
}

/// The first line is what scripts wait for (the API URL and the kubeconfig); the rest tells
/// a person where things are and what to try.
fn print_ready(url: &str, layout: &Layout, args: &DevArgs, sample: Option<&sample::Installed>) {
    use std::fmt::Write as _;
    let mut out = format!(
        "privacy-operator dev: Kubernetes API at {url} (kubeconfig {}){}; press Ctrl-C to stop\n",
        layout.kubeconfig.display(),
        if args.no_controller {
            ", controller off"
        } else {
            ", controller running"
        },
    );
    let _ = writeln!(out, "  data dir:      {}", layout.data_dir.display());
    let _ = writeln!(out, "  object store:  {}", layout.objects_url());
    if !args.no_controller {
        let _ = writeln!(out, "  worker logs:   {}", layout.logs.display());
    }
    match sample {
        Some(s) => {
            let _ = writeln!(
                out,
                "  sample CRM:    {} ({} contacts; DataSystem {}/{}, RetentionPolicy {}/{})",
                s.database.display(),
                s.contacts,
                sample::NAMESPACE,
                sample::SYSTEM,
                sample::NAMESPACE,
                sample::POLICY,
            );
            let _ = writeln!(out, "\nTry it (from the repository root):");
            let _ = writeln!(out, "  export KUBECONFIG={}", layout.kubeconfig.display());
            for line in sample::try_commands(&layout.objects, &s.database) {
                let _ = writeln!(out, "  {line}");
            }
        }
        None => {
            let _ = writeln!(out, "\n  export KUBECONFIG={}", layout.kubeconfig.display());
        }
    }
    print!("{out}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Ctrl-C, or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The digest salt and the ledger key must stay the same for the life of an installation
/// (duplicates and the erasure ledger match on them), so dev keeps them in the data dir.
fn load_or_create_key(path: &Path) -> Result<Vec<u8>> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(salt) if salt.len() >= 16 => return Ok(salt),
        Ok(_) => {
            return Err(Error::Config(format!(
                "{} holds fewer than 16 bytes; delete it to make a new key",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut salt = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(io_err)?;
    write_private(path, &salt).map_err(io_err)?;
    Ok(salt)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
