//! The RetentionPolicy controller: scheduled retention runs as worker Jobs.
//!
//! Like the request controller, each reconcile is gather → [`crate::plan::retention::plan`]
//! (pure, at the injected clock's `now`) → idempotent effects, and the status is written only
//! when the plan changed it. The controller owns the run Jobs (a Job's end wakes its policy)
//! and watches DataSystems (a system appearing or changing its data map re-validates every
//! policy of its namespace). Waits are requeues at the next scheduled run, never sleeps; the
//! schedule's state lives in `status.rules[]` and in deterministic Job names, so a restart
//! neither loses nor repeats a run.
//!
//! Run Jobs use the same Job and task-Secret builders as request Jobs
//! ([`super::worker::worker_job`], [`super::worker::secret_manifest`]); their task is a
//! [`crate::worker::retention::RetentionTask`] and their report is read back from
//! `retention/<ns>/<policy>/<rule>/<job>/manifest.json` in the operator's object storage (or,
//! without object storage, from the local output directory, which only an in-process runner
//! shares with the controller).

mod effects;
mod gather;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Client, ResourceExt,
    runtime::{
        controller::{self as kcontroller, Action, Controller},
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use crate::api::{DataSystem, RetentionPolicy};
use crate::plan::retention::{self as planner, names::labels};
use crate::{Error, Result};

use super::{Clock, Config, MANAGER, api};

/// What every retention reconcile shares.
struct Ctx {
    client: Client,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
    config: Config,
    salt: Vec<u8>,
    failures: Mutex<HashMap<ObjectRef<RetentionPolicy>, u32>>,
}

impl Ctx {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<RetentionPolicy>, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the RetentionPolicy controller until `shutdown` completes.
pub(super) async fn run(
    client: Client,
    config: Config,
    clock: Arc<dyn Clock>,
    salt: Vec<u8>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = config.namespace.clone();
    let policies = api::<RetentionPolicy>(&client, ns.as_deref());
    let controller = Controller::new(policies, watcher::Config::default());
    let store: Store<RetentionPolicy> = controller.store();
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        clock: clock.clone(),
        config,
        salt,
        failures: Mutex::default(),
    });
    tracing::info!(
        namespace = ns.as_deref().unwrap_or("<all>"),
        "starting the RetentionPolicy controller"
    );
    controller
        .owns(
            api::<Job>(&client, ns.as_deref()),
            watcher::Config::default().labels(labels::POLICY),
        )
        .watches(
            api::<DataSystem>(&client, ns.as_deref()),
            watcher::Config::default(),
            move |s| {
                let namespace = s.namespace();
                store
                    .state()
                    .iter()
                    .filter(|p| p.namespace() == namespace)
                    .map(|p| ObjectRef::from_obj(&**p))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_all_on(clock.jumps())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::trace!(policy = %obj, "reconciled"),
                Err(kcontroller::Error::ReconcilerFailed(..)) => {}
                Err(e) => tracing::warn!(error = %e, "retention controller"),
            }
        })
        .await;
}

async fn reconcile(policy: Arc<RetentionPolicy>, ctx: Arc<Ctx>) -> Result<Action> {
    let now = ctx.clock.now();
    let ns = policy
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let gathered = gather::gather(&ctx, &policy, &ns, now).await?;
    let plan = planner::plan(&gathered.input, now);
    if !plan.is_noop() {
        tracing::info!(
            policy = %format!("{ns}/{}", policy.name_any()),
            effects = plan.effects.len(),
            status_changed = plan.status_changed,
            "applying retention plan"
        );
    }
    effects::apply(&ctx, &policy, &ns, &gathered, &plan).await?;
    ctx.failures().remove(&ObjectRef::from_obj(&*policy));
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d.clamp(Duration::from_millis(1), ctx.config.max_requeue)),
        // Nothing scheduled (suspended, invalid): a change wakes it; the resync corrects
        // a clock that drifted.
        None => Action::requeue(ctx.config.resync),
    })
}

fn error_policy(policy: Arc<RetentionPolicy>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let failures = {
        let mut f = ctx.failures();
        let n = f.entry(ObjectRef::from_obj(&*policy)).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let delay = super::backoff(&ctx.config, failures, err.is_conflict());
    let name = format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    );
    if err.is_conflict() {
        tracing::debug!(policy = %name, error = %err, ?delay, "conflict; planning again");
    } else {
        tracing::warn!(policy = %name, error = %err, failures, ?delay, "retention reconcile failed; retrying");
    }
    Action::requeue(delay)
}
