//! `privacy-operator dev`: the whole product on one machine.

use std::time::Duration;

use emulator::Emulator;

use crate::cli::DevArgs;
use crate::{Error, Result, api};

pub async fn run(args: DevArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir).map_err(|source| Error::Io {
        path: args.data_dir.clone(),
        source,
    })?;
    let handle = Emulator::builder()
        .listen_addr(args.listen)
        .data_dir(&args.data_dir)
        .start()
        .await
        .map_err(|source| Error::Io {
            path: "<listen>".into(),
            source,
        })?;
    for crd in api::crds() {
        let value = serde_json::to_value(&crd)?;
        handle
            .create_or_replace(value)
            .map_err(|e| Error::Emulator(e.to_string()))?;
    }
    let kubeconfig = args.data_dir.join("kubeconfig");
    handle
        .write_kubeconfig(&kubeconfig)
        .map_err(|source| Error::Io {
            path: kubeconfig.clone(),
            source,
        })?;
    if !args.no_controller {
        tracing::warn!("the controller is not implemented yet; serving the API and CRDs only");
    }
    println!(
        "privacy-operator dev: Kubernetes API at {} (kubeconfig {}); press Ctrl-C to stop",
        handle.base_url(),
        kubeconfig.display()
    );
    tokio::signal::ctrl_c().await.map_err(|source| Error::Io {
        path: "<signal>".into(),
        source,
    })?;
    tracing::info!("shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
    Ok(())
}
