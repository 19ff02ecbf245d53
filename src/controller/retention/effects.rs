//! Carrying out a retention plan: run Jobs and their task Secrets, deletions, the status
//! (merge patch of what changed, guarded by the resourceVersion it was planned from) and
//! Events. Every effect is idempotent.

use std::collections::BTreeMap;

use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::events::{Event as KEvent, EventType as KEventType},
};
use serde_json::{Map, json};

use crate::api::RetentionPolicy;
use crate::plan::jobs::JobStep;
use crate::plan::retention::{
    Effect, RetentionPlan, RunRequest, RunState,
    names::{labels, policy_label},
    run_request,
};
use crate::plan::{EventType, label_value};
use crate::worker::retention::{PolicyRef, RetentionTask, RunSpec};
use crate::worker::task::{CONTRACT_VERSION, SystemRef};
use crate::{Error, Result};

use super::super::{MANAGER, effects::merge_diff, worker};
use super::Ctx;
use super::gather::{Gathered, read_secret_key, report_location};

pub(super) async fn apply(
    ctx: &Ctx,
    policy: &RetentionPolicy,
    ns: &str,
    gathered: &Gathered,
    plan: &RetentionPlan,
) -> Result<()> {
    let (before, after) = plan.split();
    for e in before {
        apply_one(ctx, policy, ns, gathered, e).await?;
    }
    repair_missing_secrets(ctx, policy, ns, gathered).await?;
    if plan.status_changed {
        write_status(ctx, policy, ns, plan).await?;
    }
    for e in after {
        apply_one(ctx, policy, ns, gathered, e).await?;
    }
    Ok(())
}

async fn apply_one(
    ctx: &Ctx,
    policy: &RetentionPolicy,
    ns: &str,
    gathered: &Gathered,
    effect: &Effect,
) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match effect {
        Effect::CreateRun(run) => create_run(ctx, policy, ns, gathered, run).await,
        Effect::StopJob { name } | Effect::PruneJob { name } => {
            match jobs.delete(name, &DeleteParams::background()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Effect::RecordEvent(event) => {
            let k = KEvent {
                type_: match event.type_ {
                    EventType::Normal => KEventType::Normal,
                    EventType::Warning => KEventType::Warning,
                },
                reason: event.reason.clone(),
                note: Some(event.message.chars().take(1024).collect()),
                action: event.reason.clone(),
                secondary: None,
            };
            // Best effort: the status tells the same story.
            if let Err(e) = ctx.recorder.publish(&k, &policy.object_ref(&())).await {
                tracing::warn!(reason = %event.reason, error = %e, "could not record an Event");
            }
            Ok(())
        }
    }
}

fn run_labels(policy: &str, run: &RunRequest) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::POLICY.to_string(), policy_label(policy)),
        (labels::RULE.to_string(), run.rule.clone()),
        (labels::SYSTEM.to_string(), label_value(&run.system)),
        (
            labels::STEP.to_string(),
            JobStep::RetentionRun.as_str().to_string(),
        ),
        (
            labels::SCHEDULED.to_string(),
            run.scheduled.as_second().to_string(),
        ),
        (
            worker::MANAGED_BY.0.to_string(),
            worker::MANAGED_BY.1.to_string(),
        ),
        (
            worker::COMPONENT.0.to_string(),
            worker::COMPONENT.1.to_string(),
        ),
    ])
}

/// Creates the run Job (owned by the policy), then its task Secret (owned by the Job).
async fn create_run(
    ctx: &Ctx,
    policy: &RetentionPolicy,
    ns: &str,
    gathered: &Gathered,
    run: &RunRequest,
) -> Result<()> {
    let system = gathered.systems.get(&run.system).ok_or_else(|| {
        Error::TaskInput(format!(
            "DataSystem {} vanished while its retention run was being created",
            run.system
        ))
    })?;
    let owner = policy
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let name = policy.name_any();
    let manifest = worker::worker_job(
        ns,
        &run.name,
        run_labels(&name, run),
        owner,
        &system.spec,
        &ctx.config.worker,
    )?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let created = match jobs.create(&params, &manifest).await {
        Ok(j) => j,
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let existing = jobs.get(&run.name).await?;
            let uid = policy.uid().ok_or(Error::MissingField("metadata.uid"))?;
            if !worker::controlled_by(existing.metadata.owner_references.as_deref(), &uid) {
                return Err(Error::NotOwned {
                    kind: "Job",
                    name: run.name.clone(),
                    owner: format!("RetentionPolicy {name}"),
                });
            }
            existing
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        policy = %format!("{ns}/{name}"),
        job = %run.name,
        rule = %run.rule,
        system = %run.system,
        dry_run = run.dry_run,
        "created retention run Job"
    );
    create_task_secret(ctx, policy, ns, gathered, &created, run).await
}

async fn create_task_secret(
    ctx: &Ctx,
    policy: &RetentionPolicy,
    ns: &str,
    gathered: &Gathered,
    job: &Job,
    run: &RunRequest,
) -> Result<()> {
    let owner = worker::job_owner(job).ok_or(Error::MissingField("Job metadata.uid"))?;
    let job_uid = owner.uid.clone();
    let task = task(ctx, policy, ns, gathered, run).await?;
    let secret = worker::secret_manifest(
        ns,
        &run.name,
        run_labels(&policy.name_any(), run),
        owner,
        &task,
    )?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let existing = secrets.get_metadata(&run.name).await?;
            if worker::controlled_by(existing.metadata.owner_references.as_deref(), &job_uid) {
                Ok(())
            } else {
                Err(Error::NotOwned {
                    kind: "Secret",
                    name: run.name.clone(),
                    owner: format!("Job {}", run.name),
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// A running Job whose Secret is missing (the controller stopped between the two writes)
/// gets its Secret now.
async fn repair_missing_secrets(
    ctx: &Ctx,
    policy: &RetentionPolicy,
    ns: &str,
    gathered: &Gathered,
) -> Result<()> {
    let now = ctx.clock.now();
    for run in &gathered.input.jobs {
        if run.state != RunState::Active || run.deleting || gathered.secrets.contains(&run.name) {
            continue;
        }
        let Some(job) = gathered
            .jobs
            .iter()
            .find(|j| j.metadata.name.as_deref() == Some(run.name.as_str()))
        else {
            continue;
        };
        let Some(request) = run_request(&gathered.input, run, now) else {
            continue;
        };
        if request.name != run.name || !gathered.systems.contains_key(&run.system) {
            continue;
        }
        tracing::info!(job = %run.name, "re-creating the missing task Secret of a running retention Job");
        create_task_secret(ctx, policy, ns, gathered, job, &request).await?;
    }
    Ok(())
}

/// The worker's task for `run`; reads the system's connection Secret.
async fn task(
    ctx: &Ctx,
    policy: &RetentionPolicy,
    ns: &str,
    gathered: &Gathered,
    run: &RunRequest,
) -> Result<RetentionTask> {
    let system = gathered
        .systems
        .get(&run.system)
        .ok_or_else(|| Error::TaskInput(format!("DataSystem {} not found", run.system)))?;
    let rule = policy
        .spec
        .rules
        .iter()
        .find(|r| r.name == run.rule)
        .ok_or_else(|| Error::TaskInput(format!("rule {} is gone", run.rule)))?;
    let connection = match &system.spec.connector.sql {
        Some(sql) => Some(
            read_secret_key(
                &ctx.client,
                ns,
                &sql.connection_secret_ref.name,
                &sql.connection_secret_ref.key,
            )
            .await?
            .ok_or_else(|| {
                Error::TaskInput(format!(
                    "Secret {} key {} (the connection of DataSystem {}) is missing or not UTF-8",
                    sql.connection_secret_ref.name, sql.connection_secret_ref.key, run.system
                ))
            })?,
        ),
        None => None,
    };
    let name = policy.name_any();
    Ok(RetentionTask {
        version: CONTRACT_VERSION.into(),
        step: JobStep::RetentionRun,
        policy: PolicyRef {
            namespace: ns.to_string(),
            name: name.clone(),
            rule: run.rule.clone(),
        },
        system: SystemRef {
            name: run.system.clone(),
            spec: system.spec.clone(),
        },
        connection,
        run: RunSpec {
            table: rule.table.clone().unwrap_or_default(),
            age_column: rule.age_column.clone().unwrap_or_default(),
            cutoff: run.cutoff,
            action: rule.action,
            dry_run: run.dry_run,
            batch_size: u32::try_from(rule.batch_size).unwrap_or(1).max(1),
            scheduled: run.scheduled,
        },
        held_digests: run.held_digests.clone(),
        hash_salt: Some(hex::encode(&ctx.salt)),
        storage: ctx.config.storage.clone().unwrap_or_default(),
        output: report_location(ctx, ns, &name, &run.rule, &run.name),
    })
}

async fn write_status(
    ctx: &Ctx,
    policy: &RetentionPolicy,
    ns: &str,
    plan: &RetentionPlan,
) -> Result<()> {
    let old = serde_json::to_value(policy.status.clone().unwrap_or_default())?;
    let new = serde_json::to_value(&plan.status)?;
    let diff = merge_diff(&old, &new);
    if diff.as_object().is_some_and(Map::is_empty) {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"resourceVersion": policy.resource_version()},
        "status": diff,
    });
    Api::<RetentionPolicy>::namespaced(ctx.client.clone(), ns)
        .patch_status(
            &policy.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}
