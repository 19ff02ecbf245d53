//! A Kubernetes API server emulator. See `DESIGN.md`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let emu = emulator::Emulator::builder().start().await?;
//! let kubeconfig = emu.kubeconfig_yaml("emulator");
//! # let _ = kubeconfig;
//! emu.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod apply;
pub mod apply_fieldset;
pub mod apply_walk;
pub mod builtin;
pub mod crds;
pub mod discovery;
pub mod faults;
pub mod lifecycle;
pub mod meta;
pub mod ops;
pub mod patch;
pub mod patch_meta;
pub mod persist;
pub mod protobuf;
pub mod protobuf_json;
pub mod resource;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;
pub mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

pub use faults::{FaultKind, FaultRule, Faults};
pub use ops::Core;
pub use server::{RequestLog, RequestRecord};
pub use status::ApiError;

/// Entry point: `Emulator::builder()...start().await`.
pub struct Emulator;

impl Emulator {
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
}

/// Options of an emulator instance.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    listen: SocketAddr,
    history_capacity: usize,
    data_dir: Option<PathBuf>,
    bookmark_interval: Duration,
    request_log_capacity: usize,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        EmulatorBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            history_capacity: 10_000,
            data_dir: None,
            bookmark_interval: Duration::from_secs(60),
            request_log_capacity: 100_000,
        }
    }
}

impl EmulatorBuilder {
    /// Address to listen on; port 0 picks a free one. Default `127.0.0.1:0`.
    pub fn listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Watch events kept per resource for resuming watches (older resumes get 410 Gone).
    pub fn history_capacity(mut self, events: usize) -> Self {
        self.history_capacity = events.max(1);
        self
    }

    /// Directory where the state is persisted (`emulator-state.json`): loaded at start,
    /// saved about once a second after changes and at shutdown. Without it the state lives in
    /// memory only.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// How often watches with `allowWatchBookmarks` get a BOOKMARK (default 60 s; the real
    /// server uses about a minute too).
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every.max(Duration::from_millis(10));
        self
    }

    /// Requests kept in the request log (oldest dropped first).
    pub fn request_log_capacity(mut self, n: usize) -> Self {
        self.request_log_capacity = n;
        self
    }

    /// Binds the listener and starts serving.
    pub async fn start(self) -> std::io::Result<EmulatorHandle> {
        let listener = tokio::net::TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        let core = Arc::new(Core::new(self.history_capacity));
        if let Some(dir) = &self.data_dir {
            persist::load(&core, dir)?;
        }
        let faults = Arc::new(Faults::new(core.clone()));
        let log = Arc::new(RequestLog::new(self.request_log_capacity));
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(server::Shared {
            core: core.clone(),
            faults: faults.clone(),
            log: log.clone(),
            shutdown: shutdown_rx,
            bookmark_interval: self.bookmark_interval,
            addr,
        });
        let server = tokio::spawn(server::serve(listener, shared));
        let task = match self.data_dir.clone() {
            None => server,
            Some(dir) => tokio::spawn(persist_loop(
                core.clone(),
                dir,
                shutdown_tx.subscribe(),
                server,
            )),
        };
        Ok(EmulatorHandle {
            addr,
            core,
            faults,
            log,
            shutdown: shutdown_tx,
            task: Mutex::new(Some(task)),
        })
    }
}

/// Saves the state whenever it changed (at most once per second) until shutdown, then once
/// more after the server has stopped.
async fn persist_loop(
    core: Arc<Core>,
    dir: PathBuf,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    server: JoinHandle<()>,
) {
    let mut saved = core.store.lock().current_rv();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if core.store.lock().current_rv() == saved {
            continue;
        }
        let (c, d) = (core.clone(), dir.clone());
        match tokio::task::spawn_blocking(move || persist::save(&c, &d)).await {
            Ok(Ok(rv)) => saved = rv,
            Ok(Err(e)) => tracing::warn!("saving emulator state to {}: {e}", dir.display()),
            Err(e) => tracing::warn!("saving emulator state: {e}"),
        }
    }
    let _ = server.await;
    if let Err(e) = persist::save(&core, &dir) {
        tracing::warn!("saving emulator state to {}: {e}", dir.display());
    }
}

/// A running emulator. Dropping it stops the server (without waiting).
pub struct EmulatorHandle {
    addr: SocketAddr,
    core: Arc<Core>,
    faults: Arc<Faults>,
    log: Arc<RequestLog>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig with one cluster, user and context named `context_name`, namespace
    /// `default`, pointing at this server.
    pub fn kubeconfig_yaml(&self, context_name: &str) -> String {
        let name = serde_json::to_string(context_name).unwrap_or_else(|_| "\"emulator\"".into());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\ncurrent-context: {name}\nusers:\n- name: {name}\n  user: {{}}\npreferences: {{}}\n",
            url = self.base_url()
        )
    }

    /// Writes `kubeconfig_yaml("emulator")` to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml("emulator"))
    }

    /// Run-time fault switches for HTTP requests.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Every HTTP request handled (bounded).
    pub fn request_log(&self) -> &RequestLog {
        &self.log
    }

    /// The object store and API rules, for in-process access (no faults, not logged).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Creates the object or replaces the stored one (any resourceVersion), e.g. to install
    /// CRDs. Returns the stored object.
    pub fn create_or_replace(&self, obj: Value) -> Result<Value, ApiError> {
        self.core.create_or_replace(obj)
    }

    /// Stops accepting connections, ends watch streams and waits for the server to finish.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}
