//! Worker Jobs of scheduled work (stale-consent sweeps, erasure-ledger replays): the Job,
//! owned by the resource that scheduled it, then its task Secret owned by the Job, as for
//! requests (see `controller::worker`). Creation is idempotent: an existing Job or Secret
//! that is ours counts as created; one that is not is never taken over.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{batch::v1::Job, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};

use crate::api::DataSystemSpec;
use crate::plan::{JobStep, label_value, labels as request_labels};
use crate::{Error, Result};

use super::super::{
    MANAGER,
    worker::{
        COMPONENT, MANAGED_BY, TASK_KEY, WorkerSettings, controlled_by, job_owner, worker_job,
    },
};

/// Labels of a scheduled Job: who owns it (`owner_label` = the owner's name), the step and
/// the attempt. No request label: the request controller neither sees nor counts them.
pub fn labels(
    owner_label: &str,
    owner: &str,
    step: JobStep,
    attempt: u32,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (owner_label.to_string(), label_value(owner)),
        (request_labels::STEP.to_string(), step.as_str().to_string()),
        (request_labels::ATTEMPT.to_string(), attempt.to_string()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (COMPONENT.0.to_string(), COMPONENT.1.to_string()),
    ])
}

/// The value of one Secret key, as UTF-8.
pub async fn read_secret_key(
    client: &Client,
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

/// Creates the Job `name` (running the built-in worker unless `system` is a Custom
/// connector) and its task Secret holding `task`.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    client: &Client,
    settings: &WorkerSettings,
    ns: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    owner: OwnerReference,
    system: &DataSystemSpec,
    task: &[u8],
) -> Result<()> {
    let owner_uid = owner.uid.clone();
    let mut job = worker_job(ns, name, labels.clone(), owner, system, settings)?;
    job.metadata.annotations = Some(annotations);
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let created = match jobs.create(&params, &job).await {
        Ok(j) => j,
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let existing = jobs.get(name).await?;
            if !controlled_by(existing.metadata.owner_references.as_deref(), &owner_uid) {
                return Err(Error::NotOwned {
                    kind: "Job",
                    name: name.to_string(),
                    owner: "its scheduler".into(),
                });
            }
            existing
        }
        Err(e) => return Err(e.into()),
    };
    let job_ref = job_owner(&created).ok_or(Error::MissingField("Job metadata.uid"))?;
    let job_uid = job_ref.uid.clone();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![job_ref]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            TASK_KEY.to_string(),
            ByteString(task.to_vec()),
        )])),
        ..Default::default()
    };
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    match secrets.create(&params, &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let existing = secrets.get_metadata(name).await?;
            if controlled_by(existing.metadata.owner_references.as_deref(), &job_uid) {
                Ok(())
            } else {
                Err(Error::NotOwned {
                    kind: "Secret",
                    name: name.to_string(),
                    owner: format!("Job {name}"),
                })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Names of the task Secrets labelled `selector` in `ns`.
pub async fn secret_names(client: &Client, ns: &str, selector: &str) -> Result<Vec<String>> {
    Ok(
        Api::<kube::core::PartialObjectMeta<Secret>>::namespaced(client.clone(), ns)
            .list_metadata(&kube::api::ListParams::default().labels(selector))
            .await?
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect(),
    )
}

/// Deletes a Job (its Pods and task Secret go with it); a Job already gone is fine.
pub async fn delete(client: &Client, ns: &str, name: &str) -> Result<()> {
    match Api::<Job>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
