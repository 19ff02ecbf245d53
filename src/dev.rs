//! `privacy-operator dev`: the product on one machine. Starts the Kubernetes API emulator (state
//! kept in the data dir, so a restart continues where it stopped), installs the CRDs, writes a
//! kubeconfig and runs the controller against it.
//!
//! Not here yet: the local job runner that runs worker Jobs as subprocesses (until it lands,
//! Jobs the controller creates stay Active and can be completed by hand with kubectl).

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use emulator::Emulator;
use kube::Client;

use crate::cli::DevArgs;
use crate::controller::clock::SystemClock;
use crate::controller::{self, Config, SaltSource, WorkerSettings};
use crate::{Error, Result, api};

/// The image name put in worker Jobs in dev mode (nothing pulls it).
const DEV_WORKER_IMAGE: &str = "privacy-operator:dev";

pub async fn run(args: DevArgs) -> Result<()> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(&args.data_dir).map_err(io_err(&args.data_dir))?;
    let handle = Emulator::builder()
        .listen_addr(args.listen)
        .data_dir(&args.data_dir)
        .start()
        .await
        .map_err(|e| Error::Emulator(format!("cannot listen on {}: {e}", args.listen)))?;
    for crd in api::crds() {
        let value = serde_json::to_value(&crd)?;
        handle
            .create_or_replace(value)
            .map_err(|e| Error::Emulator(e.to_string()))?;
    }
    let kubeconfig = args.data_dir.join("kubeconfig");
    handle
        .write_kubeconfig(&kubeconfig)
        .map_err(io_err(&kubeconfig))?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = if args.no_controller {
        None
    } else {
        let salt = load_or_create_salt(&args.data_dir.join("salt"))?;
        let uri = handle
            .base_url()
            .parse()
            .map_err(|e| Error::Emulator(format!("emulator URL: {e}")))?;
        let client = Client::try_from(kube::Config::new(uri))?;
        let worker = WorkerSettings {
            image: DEV_WORKER_IMAGE.into(),
            image_pull_policy: Some("Never".into()),
            service_account: None,
            output_root: args.data_dir.join("out").display().to_string(),
        };
        let config = Config::new(worker, SaltSource::Inline(salt));
        let shutdown = async {
            let _ = stop_rx.await;
        };
        Some(tokio::spawn(controller::run_until(
            client,
            config,
            Arc::new(SystemClock),
            shutdown,
        )))
    };

    println!(
        "privacy-operator dev: Kubernetes API at {} (kubeconfig {}){}; press Ctrl-C to stop",
        handle.base_url(),
        kubeconfig.display(),
        if args.no_controller {
            ", controller off"
        } else {
            ", controller running"
        },
    );
    tokio::signal::ctrl_c()
        .await
        .map_err(io_err(Path::new("<signal>")))?;
    tracing::info!("shutting down");
    let _ = stop_tx.send(());
    if let Some(task) = controller {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "controller ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "controller task failed"),
            Ok(Ok(Ok(()))) | Err(_) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
    Ok(())
}

/// The digest salt must stay the same for the life of an installation (duplicates and the
/// erasure ledger match on it), so dev keeps one in the data dir.
fn load_or_create_salt(path: &Path) -> Result<Vec<u8>> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(salt) if salt.len() >= 16 => return Ok(salt),
        Ok(_) => {
            return Err(Error::Config(format!(
                "{} holds fewer than 16 bytes; delete it to make a new salt",
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
