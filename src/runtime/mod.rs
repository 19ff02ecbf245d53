//! The operator process around the controller: leader election, the probe and metrics
//! endpoints, and graceful shutdown.
//!
//! With leader election, a replica waits as a standby until it holds the Lease, then runs the
//! controller. Losing the Lease drops the controller at once (in-flight reconciles are
//! abandoned: every reconcile is idempotent and the next leader plans again) and [`run`]
//! returns [`Error::LeadershipLost`], so the process exits non-zero and the Pod restarts as a
//! fresh standby, as controller-runtime does. On SIGTERM the controller finishes the
//! reconciles under way while the Lease keeps being renewed, then the Lease is released so a
//! standby takes over at once, and the servers stop.

pub mod http;
pub mod leader;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::controller::{self, Clock};
use crate::{Error, Result};

pub use http::Health;
pub use leader::{LeaderElector, LeaseConfig, Lost};

/// What runs around the controller.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Where `/healthz` and `/readyz` are served; `None` for nowhere.
    pub health_addr: Option<SocketAddr>,
    /// Where `/metrics` is served; `None` for nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Take part in leader election on this Lease; `None` to reconcile unconditionally.
    pub leader_election: Option<LeaseConfig>,
}

/// The bound endpoints (useful when asked for port 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bound {
    pub health: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// Runs the operator until `shutdown` completes or leadership is lost. `bound` hears the
/// addresses the servers listen on, once they listen.
pub async fn run(
    client: kube::Client,
    config: controller::Config,
    clock: Arc<dyn Clock>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
    bound: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> Result<()> {
    if let Some(lease) = &options.leader_election {
        lease.validate()?;
    }
    let health = Arc::new(Health::default());
    let (servers_stop, servers_stopped) = watch::channel(false);
    let mut addrs = Bound::default();
    let mut servers = Vec::new();
    if let Some(addr) = options.health_addr {
        let listener = http::bind(addr, "health").await?;
        addrs.health = listener.local_addr().ok();
        servers.push(http::serve_health(
            listener,
            health.clone(),
            servers_stopped.clone(),
        ));
    }
    if let Some(addr) = options.metrics_addr {
        let listener = http::bind(addr, "metrics").await?;
        addrs.metrics = listener.local_addr().ok();
        servers.push(http::serve_metrics(listener, servers_stopped.clone()));
    }
    tracing::info!(health = ?addrs.health, metrics = ?addrs.metrics, "serving probes and metrics");
    if let Some(tx) = bound {
        let _ = tx.send(addrs);
    }

    // One shutdown signal, observed by several parties (the controller needs a 'static one).
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let result = match options.leader_election {
        None => run_unelected(client, config, clock, &health, stop_rx).await,
        Some(lease) => run_elected(client, config, clock, lease, &health, stop_rx).await,
    };

    signal.abort();
    let _ = servers_stop.send(true);
    for server in servers {
        let _ = server.await;
    }
    result
}

/// Completes once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn run_unelected(
    client: kube::Client,
    config: controller::Config,
    clock: Arc<dyn Clock>,
    health: &Health,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    metrics::global().leader.set(1);
    tokio::select! {
        version = client.apiserver_version() => { version?; }
        () = stopped(stop.clone()) => return Ok(()),
    }
    // Ready once the controller's cache has synced: a replica that answers /readyz has seen
    // every request and will act on it.
    let (synced_tx, mut synced_rx) = watch::channel(false);
    let mut config = config;
    config.synced = Some(Arc::new(synced_tx));
    let controller = controller::run_until(client, config, clock, stopped(stop));
    tokio::pin!(controller);
    tokio::select! {
        result = &mut controller => return result,
        synced = synced_rx.wait_for(|s| *s) => if synced.is_ok() { health.set_ready(true) },
    }
    controller.await
}

async fn run_elected(
    client: kube::Client,
    config: controller::Config,
    clock: Arc<dyn Clock>,
    lease: LeaseConfig,
    health: &Arc<Health>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let elector = LeaderElector::new(client.clone(), lease, clock.clone());
    let mirrors = mirror_elector(&elector, health.clone());
    let result = lead(&elector, client, config, clock, stop).await;
    mirrors.abort();
    metrics::global().leader.set(0);
    result
}

/// Keeps the leader gauge and the readiness flag in step with the elector.
fn mirror_elector(elector: &LeaderElector, health: Arc<Health>) -> tokio::task::JoinHandle<()> {
    let mut leading = elector.leading();
    let mut reachable = elector.api_reachable();
    tokio::spawn(async move {
        let mut reachable_open = true;
        loop {
            metrics::global()
                .leader
                .set(i64::from(*leading.borrow_and_update()));
            if *reachable.borrow_and_update() {
                health.set_ready(true);
            }
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                changed = reachable.changed(), if reachable_open => {
                    reachable_open = changed.is_ok();
                }
            }
        }
    })
}

async fn lead(
    elector: &LeaderElector,
    client: kube::Client,
    config: controller::Config,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let lease = elector.config();
    tracing::info!(
        lease = %format!("{}/{}", lease.namespace, lease.name),
        identity = %lease.identity,
        "waiting to become the leader"
    );
    tokio::select! {
        () = elector.acquire() => {}
        () = stopped(stop.clone()) => {
            // A round cancelled mid-flight may still have written us into the Lease.
            if let Err(e) = elector.release().await {
                tracing::debug!(error = %e, "cannot check the lease on shutdown");
            }
            return Ok(());
        }
    }
    let controller = controller::run_until(client, config, clock, stopped(stop));
    let hold = elector.hold();
    tokio::pin!(controller, hold);
    // Both are polled: the Lease keeps being renewed while the controller drains on shutdown.
    let result = tokio::select! {
        lost = &mut hold => {
            tracing::error!(reason = %lost, "lost leadership; stopped reconciling");
            return Err(Error::LeadershipLost(lost.to_string()));
        }
        result = &mut controller => result,
    };
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %e, "cannot release the lease; a standby takes over when it expires");
    }
    result
}
