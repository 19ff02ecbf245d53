//! The replay controller: watches DataSystems and, when `spec.restoredFromBackup` names a
//! backup time not yet replayed, runs a replay Job (owned by the DataSystem) and records its
//! progress and result in `status.replay` and the `Replaying` condition.
//!
//! It also keeps the DataSystem's `Ready` condition ([`super::readiness`]: a valid data map
//! and the connector's Secrets present). Only `Ready`, `status.replay` and the `Replaying`
//! condition are written, as merge patches guarded by the resourceVersion they were computed
//! from, and only when they changed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        controller::{Action, Controller},
        watcher,
    },
};
use serde_json::json;

use crate::api::{
    DataSystem,
    datasystem::{ConnectorType, ReplayPhase, SqlDriver},
};
use crate::controller::consent::{Scheduled, jobs};
use crate::plan::{JobStep, consent::policy::RunState, label_value, labels as request_labels};
use crate::{Error, Result};

use super::plan::{self, ReplayAction, ReplayInput, ReplayJob};
use super::replay::{REPLAY_VERSION, ReplayReport, ReplayTask, report_key};
use super::{Ledger, LedgerKey};

/// How often a DataSystem that is not Ready (e.g. waiting for its Secret) is checked again.
const NOT_READY_RETRY: Duration = Duration::from_secs(30);

/// Label naming the DataSystem a replay Job works on.
pub const REPLAY_LABEL: &str = "privacy-operator.dev/replay-of";
/// Annotation with the backup time a replay Job replays after (RFC 3339).
pub const BACKUP_TAKEN_AT: &str = "privacy-operator.dev/backup-taken-at";

/// Runs the replay controller until `shutdown` completes.
pub async fn run_until(
    shared: Scheduled,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let ns = shared.config.namespace.clone();
    let client = shared.client.clone();
    let systems: Api<DataSystem> = match &ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let jobs: Api<Job> = match &ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    Controller::new(systems, watcher::Config::default())
        .owns(jobs, watcher::Config::default().labels(REPLAY_LABEL))
        .reconcile_all_on(shared.clock.jumps())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(shared))
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "replay controller");
            }
        })
        .await;
    Ok(())
}

fn error_policy(system: Arc<DataSystem>, err: &Error, ctx: Arc<Scheduled>) -> Action {
    tracing::warn!(
        system = %format!("{}/{}", system.namespace().unwrap_or_default(), system.name_any()),
        error = %err,
        "replay reconcile failed; retrying"
    );
    Action::requeue(ctx.config.error_backoff.max(Duration::from_secs(1)))
}

/// Why a system cannot be replayed at all.
fn blocked(ctx: &Scheduled, system: &DataSystem) -> Option<(&'static str, String)> {
    if ctx.storage.is_none() || ctx.ledger_key.is_none() {
        return Some((
            "LedgerNotConfigured",
            "the operator has no erasure ledger (object storage and a ledger key); erasures since the backup cannot be replayed".into(),
        ));
    }
    let sql = system
        .spec
        .connector
        .sql
        .as_ref()
        .filter(|_| system.spec.connector.type_ == ConnectorType::Sql);
    if sql.is_none_or(|s| s.driver != SqlDriver::Postgres) || system.spec.data_map.is_none() {
        return Some((
            "ReplayUnsupported",
            "the erasure-ledger replay supports PostgreSQL systems with a data map only; erase the subjects recorded in the ledger by other means".into(),
        ));
    }
    None
}

async fn reconcile(system: Arc<DataSystem>, ctx: Arc<Scheduled>) -> Result<Action> {
    // Ready first: written on its own (the watch event of the write brings the next pass).
    let ns_of = system
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let ready = super::readiness::evaluate(&ctx.client, &ns_of, &system.spec).await?;
    // Secrets are not watched: a system waiting for one is looked at again.
    let not_ready = ready.0 != crate::api::conditions::Status::True;
    let conditions = system
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Some(conditions) = super::readiness::updated(
        &conditions,
        ready,
        system.metadata.generation,
        ctx.clock.now(),
    ) {
        let patch = json!({
            "metadata": {"resourceVersion": system.resource_version()},
            "status": {
                "observedGeneration": system.metadata.generation,
                "conditions": conditions,
            },
        });
        Api::<DataSystem>::namespaced(ctx.client.clone(), &ns_of)
            .patch_status(
                &system.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        return Ok(if not_ready {
            Action::requeue(NOT_READY_RETRY)
        } else {
            Action::await_change()
        });
    }
    if system.spec.restored_from_backup.is_none()
        && system.status.as_ref().is_none_or(|s| s.replay.is_none())
    {
        return Ok(if not_ready {
            Action::requeue(NOT_READY_RETRY)
        } else {
            Action::await_change()
        });
    }
    let now = ctx.clock.now();
    let ns = system
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = system.name_any();
    let uid = system.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let owned: Vec<Job> = Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("{REPLAY_LABEL}={}", label_value(&name))))
        .await?
        .items
        .into_iter()
        .filter(|j| {
            crate::controller::worker::controlled_by(j.metadata.owner_references.as_deref(), &uid)
        })
        .collect();
    let mut replays = Vec::new();
    for j in &owned {
        let (Some(job_name), Some(backup), Some(attempt)) = (
            j.metadata.name.clone(),
            j.annotations()
                .get(BACKUP_TAKEN_AT)
                .and_then(|s| s.parse::<Timestamp>().ok()),
            j.labels()
                .get(request_labels::ATTEMPT)
                .and_then(|a| a.parse::<u32>().ok()),
        ) else {
            continue;
        };
        let state = RunState::of(j, now);
        let report = match (&state, &ctx.storage) {
            (RunState::Active, _) | (_, None) => None,
            (_, Some(store)) => read_report(store, &report_key(&ns, &name, &job_name)).await?,
        };
        replays.push(ReplayJob {
            name: job_name,
            backup_taken_at: backup,
            attempt,
            state,
            report,
        });
    }
    let blocked = blocked(&ctx, &system);
    let restored = system.spec.restored_from_backup.clone();
    // Counted once, before the first attempt, for the progress shown while it runs.
    let ledger_total = match (&restored, &ctx.storage, &blocked) {
        (Some(r), Some(store), None)
            if !replays
                .iter()
                .any(|j| j.backup_taken_at == r.backup_taken_at.0) =>
        {
            let entries = Ledger::new(store.clone())
                .entries_for(&name, r.backup_taken_at.0)
                .await?;
            Some(entries.len() as i64)
        }
        _ => None,
    };
    let input = ReplayInput {
        system: name.clone(),
        generation: system.metadata.generation,
        restored,
        status: system.status.clone().unwrap_or_default(),
        jobs: replays,
        blocked,
        ledger_total,
    };
    // A running replay whose task Secret is missing (we stopped between the Job and its
    // Secret) gets it now; its Pod waits for the volume until then.
    let selector = format!("{REPLAY_LABEL}={}", label_value(&name));
    let secrets = jobs::secret_names(&ctx.client, &ns, &selector).await?;
    for job in input.jobs.iter().filter(|j| j.state == RunState::Active) {
        if !secrets.contains(&job.name) && input.blocked.is_none() {
            tracing::info!(job = %job.name, "re-creating the missing task Secret of a replay");
            create_replay(
                &ctx,
                &system,
                &ns,
                &job.name,
                job.attempt,
                job.backup_taken_at,
            )
            .await?;
        }
    }
    let plan = plan::plan(&input, now);
    for action in &plan.actions {
        let ReplayAction::CreateReplay {
            name: job,
            attempt,
            backup_taken_at,
        } = action;
        create_replay(&ctx, &system, &ns, job, *attempt, *backup_taken_at).await?;
    }
    if plan.status_changed {
        let patch = json!({
            "metadata": {"resourceVersion": system.resource_version()},
            "status": {
                "replay": plan.status.replay,
                "conditions": plan.status.conditions,
            },
        });
        Api::<DataSystem>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let object = system.object_ref(&());
        let before = input.status.replay.as_ref().and_then(|r| r.phase);
        let after = plan.status.replay.as_ref();
        let note = after.and_then(|r| r.message.clone()).unwrap_or_default();
        if !plan.actions.is_empty() {
            ctx.event(&object, false, "ReplayStarted", note).await;
        } else if before != after.and_then(|r| r.phase) {
            match after.and_then(|r| r.phase) {
                Some(ReplayPhase::Succeeded) => {
                    ctx.event(&object, false, "ReplaySucceeded", note).await;
                }
                Some(ReplayPhase::Failed) => {
                    ctx.event(&object, true, "ReplayFailed", note).await;
                }
                _ => {}
            }
        }
    }
    Ok(match plan.requeue_after {
        Some(d) => ctx.requeue(Some(d)),
        None => Action::await_change(),
    })
}

async fn read_report(store: &crate::storage::Store, key: &str) -> Result<Option<ReplayReport>> {
    let bytes = store
        .get(key)
        .await
        .map_err(|e| Error::Config(format!("reading the replay report {key}: {e}")))?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

async fn create_replay(
    ctx: &Scheduled,
    system: &DataSystem,
    ns: &str,
    job: &str,
    attempt: u32,
    backup: Timestamp,
) -> Result<()> {
    let name = system.name_any();
    let (Some(storage), Some(key)) = (ctx.config.storage.clone(), ctx.ledger_key.as_ref()) else {
        return Ok(());
    };
    let sql = system
        .spec
        .connector
        .sql
        .as_ref()
        .ok_or_else(|| Error::TaskInput(format!("DataSystem {name} is not an SQL system")))?;
    let connection = jobs::read_secret_key(
        &ctx.client,
        ns,
        &sql.connection_secret_ref.name,
        &sql.connection_secret_ref.key,
    )
    .await?
    .ok_or_else(|| {
        Error::TaskInput(format!(
            "Secret {} key {} (the connection of DataSystem {name}) is missing or not UTF-8",
            sql.connection_secret_ref.name, sql.connection_secret_ref.key
        ))
    })?;
    let task = ReplayTask {
        version: REPLAY_VERSION.into(),
        namespace: ns.to_string(),
        system: name.clone(),
        job: job.to_string(),
        spec: system.spec.clone(),
        connection,
        backup_taken_at: backup,
        ledger_key: hex::encode(LedgerKey::bytes(key)),
        hash_salt: Some(hex::encode(&ctx.salt)),
        storage,
        report: report_key(ns, &name, job),
    };
    let owner = system
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let labels = jobs::labels(REPLAY_LABEL, &name, JobStep::LedgerReplay, attempt);
    let annotations = [(
        BACKUP_TAKEN_AT.to_string(),
        crate::plan::timeline::fmt(backup),
    )]
    .into();
    jobs::create(
        &ctx.client,
        &ctx.config.worker,
        ns,
        job,
        labels,
        annotations,
        owner,
        &system.spec,
        &serde_json::to_vec(&task)?,
    )
    .await?;
    tracing::info!(
        system = %format!("{ns}/{name}"),
        job,
        attempt,
        backup = %crate::plan::timeline::fmt(backup),
        "created erasure-ledger replay Job"
    );
    Ok(())
}
