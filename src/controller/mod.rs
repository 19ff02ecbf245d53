//! The DataSubjectRequest controller: the effects side of the lifecycle.
//!
//! Each reconcile is thin: [`gather`] reads what the planner needs (the DataSystems in scope,
//! the RetentionPolicy, the subject's digest, duplicates in flight, the request's Jobs and
//! task Secrets), [`crate::plan::plan`] decides at the injected clock's `now`, and
//! [`effects`] carries the actions out idempotently, writing status only when the plan says
//! it changed. Long waits are requeues at the next deadline, never sleeps; the state lives in
//! status and in deterministic Job names, so a controller started after a crash continues
//! without duplicating work.
//!
//! The controller owns Jobs (a Job's change wakes its request) and watches DataSystems,
//! RetentionPolicies and ConsentPolicies (a reference that appears wakes the requests
//! waiting for it). Subject Secrets are not watched: a watch on Secrets would hold every
//! Secret of the cluster in memory. A request waiting for one is looked at again every
//! [`Config::resync`].
//!
//! Identifiers never reach logs, Events or status: logs name requests by namespace/name and
//! the short subject digest only.

pub mod children;
pub mod clock;
pub mod consent;
mod effects;
pub mod export;
mod gather;
pub mod keys;
pub mod observe;
pub mod results;
mod retention;
pub mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        controller::{self as kcontroller, Action, Controller},
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use crate::api::{ConsentPolicy, DataSubjectRequest, DataSystem, RetentionPolicy};
use crate::plan::{self, labels};
use crate::{Error, Result};

pub use clock::{Clock, FakeClock, SystemClock};
pub use worker::WorkerSettings;

/// Field manager of every write, and the reporting controller of Events.
pub const MANAGER: &str = "privacy-operator";

/// How long reconciles under way may finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Safety-net requeue of a request whose cached version predates our own last write.
const STALE_RETRY: Duration = Duration::from_secs(2);

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch this namespace only; `None` for every namespace.
    pub namespace: Option<String>,
    pub worker: WorkerSettings,
    /// Where the salt of subject digests comes from.
    pub salt: SaltSource,
    /// Reporting instance of Events (the Pod name); `None` for the host name.
    pub instance: Option<String>,
    /// Requests reconciled at once.
    pub concurrency: u16,
    /// How often a request with nothing scheduled but not finished is looked at again
    /// (e.g. one waiting for a subject Secret, which is not watched).
    pub resync: Duration,
    /// Longest requeue: deadlines further away are reached by requeueing on the way (and a
    /// clock that drifted is corrected at least this often).
    pub max_requeue: Duration,
    /// First retry delay after a failed reconcile; doubles per consecutive failure.
    pub error_backoff: Duration,
    /// Longest retry delay after failed reconciles.
    pub max_error_backoff: Duration,
    /// Set to true once the controller's request cache has synced (drives `/readyz`).
    pub synced: Option<Arc<tokio::sync::watch::Sender<bool>>>,
    /// The object storage workers write to and exports are assembled in (the root below
    /// which `exports/`, `results/`, `quarantine/` live). `None`: Access and Portability
    /// requests are refused with StorageNotConfigured, other workers write to their Pod.
    pub storage: Option<crate::storage::StorageTarget>,
    /// The erasure ledger's HMAC key. `None`: purges are not recorded in the ledger and
    /// restored systems cannot be replayed (their status says so).
    pub ledger_key: Option<crate::ledger::LedgerKeySource>,
}

impl Config {
    /// Defaults for production, given the worker image and the salt.
    pub fn new(worker: WorkerSettings, salt: SaltSource) -> Self {
        Config {
            namespace: None,
            worker,
            salt,
            instance: None,
            concurrency: 16,
            resync: Duration::from_secs(300),
            max_requeue: Duration::from_secs(3600),
            error_backoff: Duration::from_millis(500),
            max_error_backoff: Duration::from_secs(300),
            synced: None,
            storage: None,
            ledger_key: None,
        }
    }
}

/// The salt of subject digests: the same salt must be used for the whole life of an
/// installation, or duplicates and the erasure ledger stop matching.
#[derive(Clone)]
pub enum SaltSource {
    /// The salt itself (tests, `dev`).
    Inline(Vec<u8>),
    /// A key of a Secret, read once at start.
    Secret {
        namespace: String,
        name: String,
        key: String,
        /// Create the Secret with a random salt when it does not exist.
        create: bool,
    },
}

impl std::fmt::Debug for SaltSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaltSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            SaltSource::Secret {
                namespace,
                name,
                key,
                create,
            } => write!(f, "Secret({namespace}/{name}, key {key}, create {create})"),
        }
    }
}

impl SaltSource {
    async fn load(&self, client: &Client) -> Result<Vec<u8>> {
        let salt = match self {
            SaltSource::Inline(salt) => salt.clone(),
            SaltSource::Secret {
                namespace,
                name,
                key,
                create,
            } => keys::get_or_create(client, "subject salt", namespace, name, key, *create).await?,
        };
        if salt.len() < 16 {
            return Err(Error::Config(
                "the subject salt must be at least 16 bytes (e.g. `openssl rand -base64 32`)"
                    .into(),
            ));
        }
        Ok(salt)
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub clock: Arc<dyn Clock>,
    pub config: Config,
    salt: Vec<u8>,
    /// Every request the controller sees, for duplicate detection and watch mapping.
    requests: Store<DataSubjectRequest>,
    /// Consecutive failed reconciles per request, for the retry backoff.
    failures: Mutex<HashMap<ObjectRef<DataSubjectRequest>, u32>>,
    /// Per request, the resourceVersions our last pass's writes replaced. A reconcile
    /// handed one of them comes from a cache that has not seen our writes yet: planning from
    /// it would redo work already recorded (and lose a 409 race), so it waits for the watch
    /// event.
    superseded: Mutex<HashMap<ObjectRef<DataSubjectRequest>, Vec<String>>>,
    /// Jobs awaiting their outcome, for the Job outcome metric.
    outcomes: observe::JobOutcomes,
    /// The object storage of [`Config::storage`], opened once.
    storage: Option<crate::storage::Store>,
    /// Workers' manifests read so far.
    results: results::Results,
    /// The erasure ledger's key; with `storage`, purges are appended to the ledger.
    ledger_key: Option<crate::ledger::LedgerKey>,
}

impl Context {
    fn superseded(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<DataSubjectRequest>, Vec<String>>> {
        self.superseded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<DataSubjectRequest>, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until the process ends.
pub async fn run(client: Client, config: Config, clock: Arc<dyn Clock>) -> Result<()> {
    run_until(client, config, clock, std::future::pending()).await
}

/// Runs the controller until `shutdown` completes (reconciles under way finish first).
pub async fn run_until(
    client: Client,
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let salt = config.salt.load(&client).await?;
    // One shutdown signal for every controller of the operator.
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let retention = retention::run(
        client.clone(),
        config.clone(),
        clock.clone(),
        salt.clone(),
        shutdown.clone(),
    );
    let storage = config
        .storage
        .as_ref()
        .map(crate::storage::Store::open)
        .transpose()
        .map_err(|e| Error::Config(format!("object storage: {e}")))?;
    let ledger_key = match &config.ledger_key {
        Some(source) => Some(source.load(&client).await?),
        None => None,
    };
    // Consent sweeps and ledger replays: scheduled work beside the requests.
    let scheduled = consent::Scheduled {
        client: client.clone(),
        clock: clock.clone(),
        config: config.clone(),
        storage: storage.clone(),
        salt: salt.clone(),
        ledger_key: ledger_key.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: config.instance.clone(),
            },
        ),
    };
    let consent_done = consent::run_until(scheduled.clone(), shutdown.clone());
    let replays_done = crate::ledger::controller::run_until(scheduled, shutdown.clone());
    let ns = config.namespace.as_deref();
    let requests: Api<DataSubjectRequest> = api(&client, ns);
    let jobs: Api<Job> = api(&client, ns);
    let controller = Controller::new(requests, watcher::Config::default());
    let store = controller.store();
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        clock: clock.clone(),
        config: config.clone(),
        salt,
        requests: store.clone(),
        failures: Mutex::default(),
        superseded: Mutex::default(),
        outcomes: observe::JobOutcomes::default(),
        storage: storage.clone(),
        ledger_key: ledger_key.clone(),
        results: results::Results::default(),
    });
    let gauges = observe::spawn_gauges(store.clone());
    let synced = config.synced.clone().map(|tx| {
        let store = store.clone();
        tokio::spawn(async move {
            if observe::synced(&store).await {
                tracing::info!("request cache synced");
                let _ = tx.send(true);
            }
        })
    });
    let (s1, s2, s3) = (store.clone(), store.clone(), store);
    tracing::info!(
        namespace = ns.unwrap_or("<all>"),
        worker_image = %config.worker.image,
        "starting the DataSubjectRequest controller"
    );
    let requests_done = controller
        .with_config(kcontroller::Config::default().concurrency(config.concurrency))
        .owns(jobs, watcher::Config::default().labels(labels::REQUEST))
        .watches(
            api::<DataSystem>(&client, ns),
            watcher::Config::default(),
            move |s| waiting_in_namespace(&s1, s.namespace().as_deref(), |_| true),
        )
        .watches(
            api::<RetentionPolicy>(&client, ns),
            watcher::Config::default(),
            move |p| {
                let name = p.name_any();
                waiting_in_namespace(&s2, p.namespace().as_deref(), |r| {
                    match &r.spec.retention_policy_ref {
                        Some(rf) => rf.name == name,
                        None => name == "default",
                    }
                })
            },
        )
        .watches(
            api::<ConsentPolicy>(&client, ns),
            watcher::Config::default(),
            move |p| {
                let name = p.name_any();
                waiting_in_namespace(&s3, p.namespace().as_deref(), |r| {
                    match &r.spec.consent_policy_ref {
                        Some(rf) => rf.name == name,
                        // Requests that stop processing use the namespace's `default`.
                        None => name == "default" && r.spec.type_.restricts(),
                    }
                })
            },
        )
        .reconcile_all_on(clock.jumps())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |dsr, ctx| async move {
                // Feeds /metrics (runtime::metrics): count, duration, errors by reason.
                let started = std::time::Instant::now();
                let result = reconcile(dsr, ctx).await;
                crate::runtime::metrics::record_reconcile(started.elapsed(), result.as_ref().err());
                result
            },
            error_policy,
            ctx,
        )
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::trace!(request = %obj, "reconciled"),
                // Reconcile failures are logged by error_policy; these are watch problems.
                Err(kcontroller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        });
    // All stop on the same signal; dropping this future (an aborted task) stops them all.
    let all = futures::future::join4(requests_done, retention, consent_done, replays_done);
    // A kube-runtime controller stopped before its first list completes waits for a store
    // that will never fill: after the signal, reconciles under way get SHUTDOWN_GRACE, then
    // whatever is left is dropped (every reconcile is idempotent; the next leader plans again).
    let grace = async {
        shutdown.clone().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        (_, _, consent, replays) = all => {
            for (what, result) in [("ConsentPolicy", consent), ("erasure-ledger replay", replays)] {
                if let Err(e) = result {
                    tracing::error!(error = %e, "the {what} controller stopped");
                }
            }
        }
        () = grace => tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "controllers still busy after the shutdown grace period; abandoning them"
        ),
    }
    gauges.abort();
    if let Some(synced) = synced {
        synced.abort();
    }
    Ok(())
}

/// The unfinished requests of `namespace` that `relevant` says depend on a changed object.
fn waiting_in_namespace(
    store: &Store<DataSubjectRequest>,
    namespace: Option<&str>,
    relevant: impl Fn(&DataSubjectRequest) -> bool,
) -> Vec<ObjectRef<DataSubjectRequest>> {
    store
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == namespace)
        .filter(|r| !plan::conditions::is_terminal(r.status.as_ref().and_then(|s| s.phase)))
        .filter(|r| relevant(r))
        .map(|r| ObjectRef::from_obj(&**r))
        .collect()
}

/// One reconcile: gather, plan, act.
async fn reconcile(dsr: Arc<DataSubjectRequest>, ctx: Arc<Context>) -> Result<Action> {
    let key = ObjectRef::from_obj(&*dsr);
    if dsr
        .resource_version()
        .is_some_and(|rv| ctx.superseded().get(&key).is_some_and(|s| s.contains(&rv)))
    {
        // The watch event of our own write is on its way and will wake the request; the
        // requeue is only a safety net.
        tracing::trace!(request = %key, "cache behind our last write; waiting for it");
        return Ok(Action::requeue(STALE_RETRY));
    }
    let now = ctx.clock.now();
    let ns = dsr
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let gathered = gather::gather(&ctx, &dsr, &ns, now).await?;
    let plan = plan::plan(&gathered.input, now);
    let digest = gathered
        .input
        .context
        .subject_digest
        .as_ref()
        .or(plan.status.subject_digest.as_ref())
        .map_or("-", |d| d.short());
    if !plan.is_noop() {
        tracing::info!(
            request = %format!("{ns}/{}", dsr.name_any()),
            digest,
            phase = ?plan.status.phase,
            actions = plan.actions.len(),
            status_changed = plan.status_changed,
            "applying plan"
        );
    }
    ctx.outcomes.observe(&ns, &gathered.input.children.jobs);
    let superseded = effects::apply(&ctx, &dsr, &ns, &gathered, &plan).await?;
    let gone = plan.actions.contains(&plan::Action::RemoveFinalizer);
    for action in &plan.actions {
        if let plan::Action::CreateJob(job) = action {
            ctx.outcomes.created(&ns, &job.name);
        }
    }
    if plan.status_changed {
        observe::completion(dsr.status.as_ref(), &plan.status);
    }
    if gone {
        ctx.outcomes.forget(&ns, &gathered.input.children.jobs);
    }
    if superseded.is_empty() || gone {
        ctx.superseded().remove(&key);
    } else {
        ctx.superseded().insert(key.clone(), superseded);
    }
    ctx.failures().remove(&key);
    Ok(next_wakeup(&plan, &ctx.config))
}

/// When to look at the request again: the planner's next deadline (bounded), a periodic
/// look for unfinished requests with nothing scheduled, or only on change once finished.
fn next_wakeup(plan: &plan::Plan, config: &Config) -> Action {
    match plan.requeue_after {
        Some(d) => Action::requeue(d.clamp(Duration::from_millis(1), config.max_requeue)),
        None if plan::conditions::is_terminal(plan.status.phase) => Action::await_change(),
        None => Action::requeue(config.resync),
    }
}

fn error_policy(dsr: Arc<DataSubjectRequest>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*dsr);
    let failures = {
        let mut f = ctx.failures();
        let n = f.entry(key).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(&ctx.config, failures, err.is_conflict());
    let request = format!("{}/{}", dsr.namespace().unwrap_or_default(), dsr.name_any());
    if err.is_conflict() {
        tracing::debug!(%request, error = %err, ?delay, "conflict; planning again");
    } else {
        tracing::warn!(%request, error = %err, failures, ?delay, "reconcile failed; retrying");
    }
    Action::requeue(delay)
}

/// Exponential backoff per request; a write conflict (someone else changed the request)
/// is retried at once, since planning again from the new version is what resolves it.
fn backoff(config: &Config, failures: u32, conflict: bool) -> Duration {
    if conflict && failures <= 3 {
        return Duration::from_millis(10);
    }
    let exp = failures.saturating_sub(1).min(20);
    config
        .error_backoff
        .saturating_mul(1 << exp)
        .min(config.max_error_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(
            WorkerSettings {
                image: "img".into(),
                image_pull_policy: None,
                service_account: None,
                output_root: worker::OUTPUT_ROOT.into(),
            },
            SaltSource::Inline(b"0123456789abcdef".to_vec()),
        )
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_conflicts_retry_fast() {
        let c = config();
        assert_eq!(backoff(&c, 1, false), Duration::from_millis(500));
        assert_eq!(backoff(&c, 2, false), Duration::from_secs(1));
        assert_eq!(backoff(&c, 3, false), Duration::from_secs(2));
        assert_eq!(backoff(&c, 40, false), Duration::from_secs(300));
        assert_eq!(backoff(&c, 1, true), Duration::from_millis(10));
        assert_eq!(backoff(&c, 5, true), Duration::from_secs(8));
    }

    #[test]
    fn salt_source_debug_hides_the_salt() {
        let s = format!("{:?}", SaltSource::Inline(b"very-secret-salt".to_vec()));
        assert!(!s.contains("very-secret-salt"));
    }
}
