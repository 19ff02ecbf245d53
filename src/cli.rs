//! Command-line interface: one subcommand per way of running the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::{self, LogFormat};
use crate::{Error, Result, api, dev};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller against the cluster in KUBECONFIG (or the in-cluster configuration).
    Run,

    /// Print every CustomResourceDefinition as multi-document YAML.
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        split: Option<PathBuf>,
    },

    /// Run on this machine without a cluster: a Kubernetes API emulator on loopback with the
    /// CRDs installed. Writes DIR/kubeconfig for kubectl.
    Dev(DevArgs),

    /// Run one worker task (started by the operator's Jobs).
    Worker,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where state, the kubeconfig and the local object store live.
    #[arg(long, value_name = "DIR", default_value = ".dev-data")]
    pub data_dir: PathBuf,

    /// Address of the Kubernetes API emulator (loopback; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,

    /// Serve the API and the CRDs only; do not start the controller.
    #[arg(long)]
    pub no_controller: bool,
}

pub async fn run(cli: Cli) -> Result<()> {
    telemetry::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Run => Err(Error::NotImplemented(
            "the controller does not reconcile anything yet: the DataSubjectRequest lifecycle lands with the lifecycle issue",
        )),
        Command::Crd { split: None } => {
            print!("{}", api::crds_yaml());
            Ok(())
        }
        Command::Crd { split: Some(dir) } => api::write_crds(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        }),
        Command::Dev(args) => dev::run(args).await,
        Command::Worker => Err(Error::NotImplemented(
            "`privacy-operator worker` is not implemented yet: the connectors land with the workers issue",
        )),
    }
}
