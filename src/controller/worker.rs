//! The worker Job and its task Secret, as manifests (pure: unit-tested without a cluster).
//!
//! The task ([`crate::worker::task::Task`], the worker contract) names the subject, so it
//! holds personal data. It travels only in the per-Job Secret, mounted read-only at
//! [`TASK_DIR`]; the Job spec (args, env, labels, annotations) holds names, steps and paths,
//! never an identifier.
//!
//! Order of creation: the Job first (owned by the request, so it is found and garbage
//! collected with it), then the Secret owned by the Job, so the Secret goes when the Job goes
//! and never outlives the work. Until the Secret exists the Job's Pod waits for its volume
//! (the kubelet retries the mount). If the controller stops between the two writes, the next
//! reconcile sees a running Job without its Secret and creates the Secret then
//! ([`super::effects`]). Two writes per Job keep an access request over N systems within
//! 2N + 3 writes.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{batch::v1::Job, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use serde_json::json;

use crate::api::{DataSystemSpec, datasystem::ConnectorType};
use crate::plan::{JobRequest, JobStep, label_value, labels};
use crate::worker::TASK_ENV;

/// Where the task Secret is mounted in the worker.
pub const TASK_DIR: &str = "/var/run/privacy-operator/task";
/// The Secret key (and file name) of the task.
pub const TASK_KEY: &str = "task.json";
/// Label on everything the operator creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "privacy-operator");
/// Label telling worker Jobs apart from other things the operator may create.
pub const COMPONENT: (&str, &str) = ("app.kubernetes.io/component", "worker");
/// UID and GID the built-in worker runs as (the distroless `nonroot` user).
pub const WORKER_UID: i64 = 65532;

/// How worker Pods are run.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// The operator's own image, run as `privacy-operator worker --task ...`.
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// Service account of built-in worker Pods; `None` for the namespace's default.
    pub service_account: Option<String>,
    /// Directory (in the worker Pod, an emptyDir) under which each task writes its files and
    /// manifest. TODO(object store): becomes an object-storage URL.
    pub output_root: String,
}

/// Default [`WorkerSettings::output_root`].
pub const OUTPUT_ROOT: &str = "/var/run/privacy-operator/out";

/// Where the task of `job` writes in object storage (a key prefix below the operator's
/// storage root): an export goes where the bundle is assembled,
/// `exports/<ns>/<request>/<system>`; every other step to
/// `results/<ns>/<request>/<system>/<step>`, so the manifests of a request's steps never
/// overwrite each other. Attempts of one step share the location: the latest wins.
pub fn result_prefix(namespace: &str, request: &str, system: &str, step: JobStep) -> String {
    match step {
        JobStep::Export => format!("{}/{namespace}/{request}/{system}", EXPORTS),
        _ => format!("results/{namespace}/{request}/{system}/{}", step.as_str()),
    }
}

/// Prefix of export bundles below the storage root: `exports/<ns>/<request>/`.
pub const EXPORTS: &str = "exports";

/// Where the task of `job` writes without object storage: one directory per request, system
/// and step below `root` in the worker's Pod (results are not read back).
pub fn output_location(root: &str, namespace: &str, request: &str, job: &JobRequest) -> String {
    format!(
        "{}/{namespace}/{request}/{}/{}",
        root.trim_end_matches('/'),
        job.system,
        job.step.as_str()
    )
}

/// Labels of a request's Job (and its task Secret): the planner's labels plus ownership.
pub fn job_labels(request: &str, job: &JobRequest) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::REQUEST.to_string(), label_value(request)),
        (labels::SYSTEM.to_string(), label_value(&job.system)),
        (labels::STEP.to_string(), job.step.as_str().to_string()),
        (labels::ATTEMPT.to_string(), job.attempt.to_string()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (COMPONENT.0.to_string(), COMPONENT.1.to_string()),
    ])
}

/// The worker Job for `job`, owned (as controller) by the request `owner`. `system` decides
/// the image: a Custom connector runs its own image with the task path in [`TASK_ENV`].
pub fn job_manifest(
    namespace: &str,
    request: &str,
    owner: OwnerReference,
    job: &JobRequest,
    system: &DataSystemSpec,
    settings: &WorkerSettings,
) -> Result<Job, serde_json::Error> {
    worker_job(
        namespace,
        &job.name,
        job_labels(request, job),
        owner,
        system,
        settings,
    )
}

/// A worker Job named `name` with `labels` (also on its Pods), owned (as controller) by
/// `owner`: the Job of a request ([`job_manifest`]) or of a retention run.
pub fn worker_job(
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    owner: OwnerReference,
    system: &DataSystemSpec,
    settings: &WorkerSettings,
) -> Result<Job, serde_json::Error> {
    let task_path = format!("{TASK_DIR}/{TASK_KEY}");
    let custom = system
        .connector
        .custom
        .as_ref()
        .filter(|_| system.connector.type_ == ConnectorType::Custom);
    let security = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    let mounts = json!([
        {"name": "task", "mountPath": TASK_DIR, "readOnly": true},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "out", "mountPath": settings.output_root},
    ]);
    let mut container = match custom {
        Some(c) => {
            let mut v = json!({
                "name": "connector",
                "image": c.image,
                "env": [{"name": TASK_ENV, "value": task_path}],
            });
            if !c.command.is_empty() {
                v["command"] = json!(c.command);
            }
            if !c.args.is_empty() {
                v["args"] = json!(c.args);
            }
            v
        }
        None => json!({
            "name": "worker",
            "image": settings.image,
            "args": ["worker", "--task", task_path],
        }),
    };
    container["securityContext"] = security;
    container["volumeMounts"] = mounts;
    if let Some(policy) = &settings.image_pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    let service_account = match custom {
        Some(c) => c.service_account_name.clone(),
        None => settings.service_account.clone(),
    };
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "enableServiceLinks": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "task", "secret": {"secretName": name, "defaultMode": 0o440}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "out", "emptyDir": {}},
        ],
    });
    if let Some(sa) = service_account {
        pod_spec["serviceAccountName"] = json!(sa);
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {
            // The planner retries with its own backoff and budget; a Job is one attempt.
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec,
            },
        },
    }))
}

/// The task Secret of `job_name`, owned by the Job (`owner`).
pub fn secret_manifest(
    namespace: &str,
    job_name: &str,
    labels: BTreeMap<String, String>,
    owner: OwnerReference,
    task: &impl serde::Serialize,
) -> Result<Secret, serde_json::Error> {
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(job_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            TASK_KEY.to_string(),
            ByteString(serde_json::to_vec(task)?),
        )])),
        ..Default::default()
    })
}

/// An owner reference to a Job (for its task Secret).
pub fn job_owner(job: &Job) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(false),
    })
}

/// Does `owners` name `uid` as the controller?
pub fn controlled_by(owners: Option<&[OwnerReference]>, uid: &str) -> bool {
    owners
        .unwrap_or(&[])
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IdentifierSet;
    use crate::plan::JobStep;
    use crate::worker::task::{CONTRACT_VERSION, FieldChange, RequestRef, SystemRef, Task};

    const EMAIL: &str = "jane.doe@example.com";

    fn system(custom: bool) -> DataSystemSpec {
        let connector = if custom {
            json!({"type": "Custom", "custom": {
                "image": "registry.example.com/erp:1", "args": ["--fast"],
                "serviceAccountName": "erp-connector"
            }})
        } else {
            json!({"type": "SQL", "sql": {"driver": "postgres",
                "connectionSecretRef": {"name": "crm-db", "key": "url"}}})
        };
        serde_json::from_value(json!({"connector": connector, "dataMap": {"tables": []}}))
            .or_else(|_| serde_json::from_value(json!({"connector": connector})))
            .unwrap()
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "privacy-operator.dev/v1alpha1".into(),
            kind: "DataSubjectRequest".into(),
            name: "r".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn req() -> JobRequest {
        JobRequest {
            name: "r-crm-export-1".into(),
            system: "crm".into(),
            step: JobStep::Export,
            attempt: 1,
        }
    }

    fn settings() -> WorkerSettings {
        WorkerSettings {
            image: "ghcr.io/example/privacy-operator:1.0".into(),
            image_pull_policy: None,
            service_account: Some("privacy-worker".into()),
            output_root: OUTPUT_ROOT.into(),
        }
    }

    fn task() -> Task {
        let identifiers = IdentifierSet {
            email: Some(EMAIL.into()),
            ..Default::default()
        };
        Task {
            version: CONTRACT_VERSION.into(),
            request: RequestRef {
                namespace: "ns".into(),
                name: "r".into(),
                digest: identifiers.digest(b"salt"),
                uid: None,
            },
            step: JobStep::Rectify,
            system: SystemRef {
                name: "crm".into(),
                spec: system(false),
            },
            connection: Some("postgres://u:p@db/crm".into()),
            identifiers,
            changes: vec![FieldChange {
                field: "phone".into(),
                table: None,
                value: "+4915112345678".into(),
            }],
            purposes: vec![],
            hash_salt: None,
            webhook: None,
            quarantine: None,
            quarantine_key: None,
            credentials: Default::default(),
            storage: Default::default(),
            output: output_location(OUTPUT_ROOT, "ns", "r", &req()),
            recipient: None,
        }
    }

    #[test]
    fn built_in_worker_job_is_locked_down_and_holds_no_identifier() {
        let job = job_manifest("ns", "r", owner(), &req(), &system(false), &settings()).unwrap();
        let v = serde_json::to_value(&job).unwrap();
        let spec = &v["spec"]["template"]["spec"];
        let c = &spec["containers"][0];
        assert_eq!(v["spec"]["backoffLimit"], 0);
        assert_eq!(
            c["args"],
            json!([
                "worker",
                "--task",
                "/var/run/privacy-operator/task/task.json"
            ])
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["serviceAccountName"], "privacy-worker");
        assert_eq!(spec["volumes"][0]["secret"]["secretName"], "r-crm-export-1");
        assert_eq!(c["volumeMounts"][0]["readOnly"], true);
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(v["metadata"]["labels"][labels::STEP], "export");
        assert!(c.get("env").is_none());
        assert!(!v.to_string().contains(EMAIL));
    }

    #[test]
    fn custom_connector_runs_its_image_with_the_task_path_in_env() {
        let job = job_manifest("ns", "r", owner(), &req(), &system(true), &settings()).unwrap();
        let v = serde_json::to_value(&job).unwrap();
        let spec = &v["spec"]["template"]["spec"];
        let c = &spec["containers"][0];
        assert_eq!(c["image"], "registry.example.com/erp:1");
        assert_eq!(c["args"], json!(["--fast"]));
        assert_eq!(c["env"][0]["name"], TASK_ENV);
        assert_eq!(spec["serviceAccountName"], "erp-connector");
    }

    #[test]
    fn task_secret_round_trips_and_debug_redacts() {
        let t = task();
        let s =
            secret_manifest("ns", "r-crm-export-1", job_labels("r", &req()), owner(), &t).unwrap();
        let bytes = &s.data.as_ref().unwrap()[TASK_KEY].0;
        let back = Task::from_json(bytes).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&t).unwrap()
        );
        assert_eq!(back.output, "/var/run/privacy-operator/out/ns/r/crm/export");
        assert_eq!(s.immutable, Some(true));
        let dbg = format!("{t:?} {t:#?} {s:?}");
        assert!(!dbg.contains(EMAIL), "{dbg}");
        assert!(!dbg.contains("+4915112345678"), "{dbg}");
    }

    #[test]
    fn controller_ownership() {
        let o = owner();
        assert!(controlled_by(Some(std::slice::from_ref(&o)), "uid-1"));
        assert!(!controlled_by(Some(&[o]), "uid-2"));
        assert!(!controlled_by(None, "uid-1"));
    }
}
