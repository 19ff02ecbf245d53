//! Reads what the retention planner looks at: the namespace's DataSystems, the policy's run
//! Jobs (with the reports of finished runs not yet recorded) and its task Secrets.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::{Api, ResourceExt, api::ListParams, core::PartialObjectMeta};

use crate::api::{DataSystem, RetentionPolicy, datasystem::ConnectorType};
use crate::plan::JobState;
use crate::plan::retention::{
    PolicyState, RetentionInput, RunJob, RunReport, RunState, SystemView,
    names::{labels, policy_label},
};
use crate::storage::Store;
use crate::worker::retention::RetentionReport;
use crate::{Error, Result};

use super::super::{children, worker::controlled_by};
use super::Ctx;

pub(super) struct Gathered {
    pub input: RetentionInput,
    pub systems: BTreeMap<String, DataSystem>,
    /// The policy's Jobs, as read.
    pub jobs: Vec<Job>,
    /// Names of the policy's task Secrets.
    pub secrets: BTreeSet<String>,
}

pub(super) async fn gather(
    ctx: &Ctx,
    policy: &RetentionPolicy,
    ns: &str,
    now: Timestamp,
) -> Result<Gathered> {
    let client = &ctx.client;
    let uid = policy.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let state = PolicyState::from_resource(policy);
    let selector = format!("{}={}", labels::POLICY, policy_label(&state.name));

    let systems: BTreeMap<String, DataSystem> = Api::<DataSystem>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let views = systems
        .iter()
        .map(|(name, s)| SystemView {
            name: name.clone(),
            labels: s.labels().clone(),
            sql: s.spec.connector.type_ == ConnectorType::Sql && s.spec.connector.sql.is_some(),
            tables: s
                .spec
                .data_map
                .as_ref()
                .map(|m| m.tables.iter().map(|t| t.name.clone()).collect())
                .unwrap_or_default(),
        })
        .collect();

    let jobs: Vec<Job> = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|j| controlled_by(j.metadata.owner_references.as_deref(), &uid))
        .collect();
    let mut runs: Vec<RunJob> = jobs.iter().filter_map(|j| run_job(j, now)).collect();
    read_reports(ctx, ns, &state, &mut runs).await;

    let secrets = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();

    Ok(Gathered {
        input: RetentionInput {
            policy: state,
            systems: views,
            jobs: runs,
        },
        systems,
        jobs,
        secrets,
    })
}

/// The planner's view of a run Job; `None` when its labels do not say what it is.
fn run_job(job: &Job, now: Timestamp) -> Option<RunJob> {
    let meta = &job.metadata;
    let l = meta.labels.as_ref()?;
    let scheduled = l
        .get(labels::SCHEDULED)?
        .parse::<i64>()
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())?;
    let state = match children::job_state(job, now) {
        JobState::Succeeded { completed_at, .. } => RunState::Succeeded { completed_at },
        JobState::Failed { reason, failed_at } => RunState::Failed { reason, failed_at },
        _ => RunState::Active,
    };
    Some(RunJob {
        name: meta.name.clone()?,
        rule: l.get(labels::RULE)?.clone(),
        system: l.get(labels::SYSTEM)?.clone(),
        scheduled,
        created_at: meta.creation_timestamp.as_ref().map_or(now, |t| t.0),
        state,
        deleting: meta.deletion_timestamp.is_some(),
        report: None,
    })
}

/// Where a run writes its report: a key prefix below the operator's object storage, or
/// (without one) a directory below the worker's output root.
pub(super) fn report_location(ctx: &Ctx, ns: &str, policy: &str, rule: &str, job: &str) -> String {
    let prefix = format!("retention/{ns}/{policy}/{rule}/{job}");
    match &ctx.config.storage {
        Some(_) => prefix,
        None => format!(
            "{}/{prefix}",
            ctx.config.worker.output_root.trim_end_matches('/')
        ),
    }
}

/// Reads the reports of finished runs whose result status does not hold yet (the last run
/// of each rule). A report that cannot be read leaves the counts unknown; the Job's own
/// outcome still counts.
async fn read_reports(ctx: &Ctx, ns: &str, policy: &PolicyState, runs: &mut [RunJob]) {
    for run in runs.iter_mut() {
        if run.state == RunState::Active || run.deleting {
            continue;
        }
        let Some(rule) = policy.status.rules.iter().find(|r| r.name == run.rule) else {
            continue;
        };
        let is_last = rule.last_run.as_ref().is_some_and(|t| t.0 == run.scheduled);
        let recorded = rule
            .last_result
            .as_ref()
            .is_some_and(|r| r.completed_at.is_some() && rule.active.is_empty());
        if !is_last || recorded {
            continue;
        }
        let location = report_location(ctx, ns, &policy.name, &run.rule, &run.name);
        match read_report(ctx, &location).await {
            Ok(Some(r)) => {
                let c = r.rule_counts();
                run.report = Some(RunReport {
                    matched: c.matched as i64,
                    affected: c.affected as i64,
                    held: c.held as i64,
                    message: r.message,
                });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(job = %run.name, error = %e, "cannot read a retention report"),
        }
    }
}

async fn read_report(
    ctx: &Ctx,
    location: &str,
) -> std::result::Result<Option<RetentionReport>, String> {
    let store = match &ctx.config.storage {
        Some(target) => Store::open(target)
            .map_err(|e| e.to_string())?
            .child(location),
        None => {
            let url = format!("file://{location}");
            Store::open(&crate::storage::StorageTarget::new(url)).map_err(|e| e.to_string())?
        }
    };
    let Some(bytes) = store
        .get(crate::worker::retention::REPORT_FILE)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("the report is not valid: {e}"))
}

/// The value of one Secret key, as UTF-8.
pub(super) async fn read_secret_key(
    client: &kube::Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(key))
        .and_then(|b| String::from_utf8(b.0).ok()))
}
