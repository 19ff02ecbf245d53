//! The ConsentPolicy controller: status (purposes in force, the systems each reaches, the
//! last stale-consent sweep, Accepted/Ready) and the scheduled sweep Jobs.
//!
//! Each reconcile gathers the policy's DataSystems and sweep Jobs (and the latest finished
//! sweep's report from object storage), plans with [`crate::plan::consent::policy::plan`] at
//! the injected clock's now, creates or deletes Jobs, and writes status only when it
//! changed. The next sweep is a requeue at its scheduled time, never a sleep; a Job's end
//! wakes the policy through the owned-Job watch, a DataSystem change through the DataSystem
//! watch.

pub mod jobs;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        controller::{Action, Controller},
        events::{Event as KEvent, EventType, Recorder},
        reflector::ObjectRef,
        watcher,
    },
};
use serde_json::json;

use crate::api::{ConsentPolicy, DataSystem, datasystem::ConnectorType};
use crate::ledger::LedgerKey;
use crate::plan::consent::policy::{
    self, PolicyAction, PolicyInput, PolicySystem, RunState, SweepJob, SweepReport, SweepRequest,
};
use crate::plan::label_value;
use crate::storage::Store;
use crate::worker::consent::{SWEEP_VERSION, SweepTarget, SweepTask, report_key};
use crate::{Error, Result};

use super::{Clock, Config, api, effects::merge_diff};

/// Label naming the ConsentPolicy a sweep Job belongs to.
pub const POLICY_LABEL: &str = "privacy-operator.dev/consent-policy";
/// Annotation with the scheduled time a sweep Job runs for (RFC 3339).
pub const SCHEDULED_AT: &str = "privacy-operator.dev/scheduled-at";
/// Rows per batch of a sweep.
pub const SWEEP_BATCH: i64 = 1000;

/// What the scheduled-work controllers (consent sweeps, ledger replays) share.
#[derive(Clone)]
pub struct Scheduled {
    pub client: Client,
    pub clock: Arc<dyn Clock>,
    pub config: Config,
    /// The operator's object storage (reports, the ledger).
    pub storage: Option<Store>,
    /// The salt of subject digests (the Hash anonymisation of a replayed purge uses it).
    pub salt: Vec<u8>,
    /// The erasure ledger's HMAC key.
    pub ledger_key: Option<LedgerKey>,
    /// Events on policies and systems.
    pub recorder: Recorder,
}

impl Scheduled {
    /// Records an Event on `object`; best effort (status tells the same story).
    pub async fn event(&self, object: &ObjectReference, warning: bool, reason: &str, note: String) {
        let event = KEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note.chars().take(1024).collect()),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(reason, error = %e, "could not record an Event");
        }
    }

    /// A reconcile's requeue: the planner's wake-up (bounded), else the periodic resync.
    pub fn requeue(&self, after: Option<Duration>) -> Action {
        match after {
            Some(d) => Action::requeue(d.clamp(Duration::from_millis(1), self.config.max_requeue)),
            None => Action::requeue(self.config.resync),
        }
    }
}

/// Runs the ConsentPolicy controller until `shutdown` completes.
pub async fn run_until(
    shared: Scheduled,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let ns = shared.config.namespace.clone();
    let client = shared.client.clone();
    let policies: Api<ConsentPolicy> = api(&client, ns.as_deref());
    let controller = Controller::new(policies, watcher::Config::default());
    let store = controller.store();
    tracing::info!(
        namespace = ns.as_deref().unwrap_or("<all>"),
        "starting the ConsentPolicy controller"
    );
    controller
        .owns(
            api::<Job>(&client, ns.as_deref()),
            watcher::Config::default().labels(POLICY_LABEL),
        )
        .watches(
            api::<DataSystem>(&client, ns.as_deref()),
            watcher::Config::default(),
            move |s| {
                // Coverage and consent-record tables follow the namespace's systems.
                let ns = s.namespace();
                store
                    .state()
                    .iter()
                    .filter(|p| p.namespace() == ns)
                    .map(|p| ObjectRef::from_obj(&**p))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_all_on(shared.clock.jumps())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(shared))
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "ConsentPolicy controller");
            }
        })
        .await;
    Ok(())
}

fn error_policy(policy: Arc<ConsentPolicy>, err: &Error, ctx: Arc<Scheduled>) -> Action {
    tracing::warn!(
        policy = %format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any()),
        error = %err,
        "ConsentPolicy reconcile failed; retrying"
    );
    Action::requeue(ctx.config.error_backoff.max(Duration::from_secs(1)))
}

async fn reconcile(policy: Arc<ConsentPolicy>, ctx: Arc<Scheduled>) -> Result<Action> {
    let now = ctx.clock.now();
    let ns = policy
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = policy.name_any();
    let uid = policy.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let systems: Vec<DataSystem> = Api::<DataSystem>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let owned: Vec<Job> = Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("{POLICY_LABEL}={}", label_value(&name))))
        .await?
        .items
        .into_iter()
        .filter(|j| super::worker::controlled_by(j.metadata.owner_references.as_deref(), &uid))
        .collect();
    let mut sweeps = Vec::new();
    for j in &owned {
        let Some(job_name) = j.metadata.name.clone() else {
            continue;
        };
        let Some(scheduled_at) = j
            .annotations()
            .get(SCHEDULED_AT)
            .and_then(|s| s.parse::<Timestamp>().ok())
        else {
            continue;
        };
        sweeps.push(SweepJob {
            name: job_name,
            scheduled_at,
            state: RunState::of(j, now),
            report: None,
        });
    }
    // The latest finished sweep's report (the only one status shows).
    if let Some(latest) = sweeps
        .iter_mut()
        .filter(|s| s.state != RunState::Active)
        .max_by_key(|s| s.scheduled_at)
        && let Some(store) = &ctx.storage
    {
        latest.report = read_report(store, &report_key(&ns, &name, &latest.name)).await?;
    }
    let input = PolicyInput {
        name: name.clone(),
        generation: policy.metadata.generation,
        created_at: policy.metadata.creation_timestamp.as_ref().map(|t| t.0),
        spec: policy.spec.clone(),
        status: policy.status.clone().unwrap_or_default(),
        systems: systems.iter().map(policy_system).collect(),
        jobs: sweeps,
        storage: ctx.storage.is_some(),
    };
    let plan = policy::plan(&input, now);
    let by_name: BTreeMap<String, &DataSystem> =
        systems.iter().map(|s| (s.name_any(), s)).collect();
    // A running sweep whose task Secret is missing (we stopped between the Job and its
    // Secret) gets it now; its Pod waits for the volume until then.
    let selector = format!("{POLICY_LABEL}={}", label_value(&name));
    let secrets = jobs::secret_names(&ctx.client, &ns, &selector).await?;
    for job in input.jobs.iter().filter(|j| j.state == RunState::Active) {
        if !secrets.contains(&job.name)
            && let Some(req) = policy::sweep_request(&input, &job.name, job.scheduled_at)
        {
            tracing::info!(job = %job.name, "re-creating the missing task Secret of a sweep");
            create_sweep(&ctx, &policy, &ns, &req, &by_name).await?;
        }
    }
    for action in &plan.actions {
        match action {
            PolicyAction::CreateSweep(req) => {
                create_sweep(&ctx, &policy, &ns, req, &by_name).await?;
            }
            PolicyAction::DeleteJob { name } => {
                jobs::delete(&ctx.client, &ns, name).await?;
            }
        }
    }
    if plan.status_changed {
        let old_status = policy.status.clone().unwrap_or_default();
        let old = serde_json::to_value(&old_status)?;
        let new = serde_json::to_value(&plan.status)?;
        let patch = json!({
            "metadata": {"resourceVersion": policy.resource_version()},
            "status": merge_diff(&old, &new),
        });
        Api::<ConsentPolicy>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        events(&ctx, &policy, &old_status, &plan).await;
    }
    Ok(ctx.requeue(plan.requeue_after))
}

/// The Events of a pass whose status was written: sweeps started and finished, and the
/// policy becoming unusable.
async fn events(
    ctx: &Scheduled,
    policy: &ConsentPolicy,
    old: &crate::api::ConsentPolicyStatus,
    plan: &policy::PolicyPlan,
) {
    let object = policy.object_ref(&());
    for action in &plan.actions {
        if let PolicyAction::CreateSweep(req) = action {
            let note = format!(
                "stale-consent sweep for {} started (Job {}{})",
                crate::plan::timeline::fmt(req.scheduled_at),
                req.name,
                if req.dry_run { ", dry run" } else { "" }
            );
            ctx.event(&object, false, "SweepStarted", note).await;
        }
    }
    if let Some(last) = &plan.status.last_sweep
        && old.last_sweep.as_ref() != Some(last)
        && old.last_sweep.as_ref().and_then(|l| l.job_name.as_ref()) != last.job_name.as_ref()
    {
        let note = last.message.clone().unwrap_or_default();
        if last.succeeded {
            ctx.event(&object, false, "SweepCompleted", note).await;
        } else {
            ctx.event(&object, true, "SweepFailed", note).await;
        }
    }
    let was = old.conditions.iter().find(|c| c.type_ == "Accepted");
    if let Some(now) = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted" && c.status == "False")
        && was.is_none_or(|w| w.status != "False" || w.reason != now.reason)
    {
        ctx.event(&object, true, &now.reason, now.message.clone())
            .await;
    }
}

fn policy_system(s: &DataSystem) -> PolicySystem {
    PolicySystem {
        name: s.name_any(),
        labels: s.labels().clone(),
        connector: s.spec.connector.type_,
        driver: s
            .spec
            .connector
            .sql
            .as_ref()
            .filter(|_| s.spec.connector.type_ == ConnectorType::Sql)
            .map(|q| q.driver),
        data_map: s.spec.data_map.clone(),
    }
}

async fn read_report(store: &Store, key: &str) -> Result<Option<SweepReport>> {
    let Some(bytes) = store
        .get(key)
        .await
        .map_err(|e| Error::Config(format!("reading the sweep report {key}: {e}")))?
    else {
        return Ok(None);
    };
    // A report that does not parse counts as missing: the run is then shown as failed.
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Builds the sweep's task (with each system's connection URL) and creates its Job.
async fn create_sweep(
    ctx: &Scheduled,
    policy: &ConsentPolicy,
    ns: &str,
    req: &SweepRequest,
    systems: &BTreeMap<String, &DataSystem>,
) -> Result<()> {
    let storage = ctx
        .config
        .storage
        .clone()
        .ok_or_else(|| Error::Config("the stale-consent sweep needs object storage".into()))?;
    let mut targets = Vec::new();
    let mut first_spec = None;
    for loc in &req.locations {
        let system = systems
            .get(&loc.system)
            .ok_or_else(|| Error::TaskInput(format!("DataSystem {} vanished", loc.system)))?;
        let sql = system.spec.connector.sql.as_ref().ok_or_else(|| {
            Error::TaskInput(format!("DataSystem {} is not an SQL system", loc.system))
        })?;
        let connection = jobs::read_secret_key(
            &ctx.client,
            ns,
            &sql.connection_secret_ref.name,
            &sql.connection_secret_ref.key,
        )
        .await?
        .ok_or_else(|| {
            Error::TaskInput(format!(
                "Secret {} key {} (the connection of DataSystem {}) is missing or not UTF-8",
                sql.connection_secret_ref.name, sql.connection_secret_ref.key, loc.system
            ))
        })?;
        first_spec.get_or_insert(&system.spec);
        targets.push(SweepTarget {
            location: loc.clone(),
            connection,
            batch_size: Some(i64::from(sql.batch_size)),
        });
    }
    let Some(spec) = first_spec else {
        return Ok(());
    };
    let name = policy.name_any();
    let task = SweepTask {
        version: SWEEP_VERSION.into(),
        namespace: ns.to_string(),
        policy: name.clone(),
        job: req.name.clone(),
        scheduled_at: req.scheduled_at,
        dry_run: req.dry_run,
        purposes: req.purposes.clone(),
        targets,
        batch_size: SWEEP_BATCH,
        storage,
        report: report_key(ns, &name, &req.name),
    };
    let owner = policy
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let labels = jobs::labels(POLICY_LABEL, &name, crate::plan::JobStep::ConsentSweep, 1);
    let annotations = BTreeMap::from([(
        SCHEDULED_AT.to_string(),
        crate::plan::timeline::fmt(req.scheduled_at),
    )]);
    jobs::create(
        &ctx.client,
        &ctx.config.worker,
        ns,
        &req.name,
        labels,
        annotations,
        owner,
        spec,
        &serde_json::to_vec(&task)?,
    )
    .await?;
    tracing::info!(
        policy = %format!("{ns}/{name}"),
        job = %req.name,
        dry_run = req.dry_run,
        "created stale-consent sweep Job"
    );
    Ok(())
}
