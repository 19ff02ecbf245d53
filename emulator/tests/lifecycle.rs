//! Deletion through kube-rs: finalizers and deletionTimestamp, ownerReference garbage
//! collection of Jobs and Secrets (background, foreground, orphan), namespace termination,
//! delete collection and preconditions.

mod common;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy,
};
use kube::{Resource, ResourceExt};
use serde_json::json;

fn owned_job(name: &str, owner: &DynamicObject) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [owner_ref(owner)]},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "w", "image": "worker:1"}]}}},
    }))
    .unwrap()
}

fn owner_ref(owner: &DynamicObject) -> serde_json::Value {
    json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "name": owner.name_any(),
        "uid": owner.uid().unwrap(), "controller": true, "blockOwnerDeletion": true,
    })
}

fn job_owner_ref(job: &Job) -> serde_json::Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": job.name_any(), "uid": job.uid().unwrap(), "controller": true, "blockOwnerDeletion": true})
}

async fn widget(
    emu: &emulator::EmulatorHandle,
    name: &str,
    finalizers: &[&str],
) -> (Api<DynamicObject>, DynamicObject) {
    common::install_widget_crd(emu);
    let api: Api<DynamicObject> =
        Api::namespaced_with(common::client(emu), "default", &common::widget_resource());
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name, "finalizers": finalizers}, "spec": {"size": 1}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    (api, created)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizer_holds_until_removed_then_gc_collects_jobs_and_secrets() {
    let emu = common::start().await;
    let client = common::client(&emu);
    let (widgets, w) = widget(&emu, "w1", &["example.com/cleanup"]).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let job = jobs
        .create(&PostParams::default(), &owned_job("w1-export", &w))
        .await
        .unwrap();
    // The per-Job Secret is owned by the Job: collected transitively.
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "w1-export-task", "ownerReferences": [job_owner_ref(&job)]}, "stringData": {"task": "x"}})).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();

    // Delete: the finalizer holds the object with deletionTimestamp set.
    let deleted = widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    let held = deleted
        .left()
        .expect("object returned while finalizers remain");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(held.metadata.generation, Some(2));
    assert!(
        jobs.get_opt("w1-export").await.unwrap().is_some(),
        "dependents stay while the owner exists"
    );

    // New finalizers cannot be added while deleting.
    let err = common::api_err(
        widgets
            .patch(
                "w1",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"finalizers": ["example.com/cleanup", "x.io/more"]}}),
                ),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);

    // Removing the finalizer deletes the object; GC then removes the Job and its Secret.
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    common::wait_for("owner and dependents gone", Duration::from_secs(5), || {
        let (widgets, jobs, secrets) = (widgets.clone(), jobs.clone(), secrets.clone());
        async move {
            let gone = widgets.get_opt("w1").await.ok()?.is_none()
                && jobs.get_opt("w1-export").await.ok()?.is_none()
                && secrets.get_opt("w1-export-task").await.ok()?.is_none();
            gone.then_some(())
        }
    })
    .await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_and_orphan_propagation() {
    let emu = common::start().await;
    let client = common::client(&emu);
    let (widgets, w) = widget(&emu, "fg", &[]).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut held: Job = owned_job("fg-job", &w);
    held.meta_mut().finalizers = Some(vec!["example.com/hold".into()]);
    jobs.create(&PostParams::default(), &held).await.unwrap();

    // Foreground: the owner waits (foregroundDeletion) for its blocking dependent.
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    let owner = widgets
        .delete("fg", &dp)
        .await
        .unwrap()
        .left()
        .expect("owner kept while dependents remain");
    assert!(
        owner
            .finalizers()
            .contains(&"foregroundDeletion".to_string())
    );
    let job = jobs.get("fg-job").await.unwrap();
    assert!(
        job.metadata.deletion_timestamp.is_some(),
        "dependent is being deleted"
    );
    assert!(widgets.get_opt("fg").await.unwrap().is_some());
    jobs.patch(
        "fg-job",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    common::wait_for("foreground owner gone", Duration::from_secs(5), || {
        let widgets = widgets.clone();
        async move { widgets.get_opt("fg").await.ok()?.is_none().then_some(()) }
    })
    .await;

    // Orphan: dependents stay, without the ownerReference.
    let (widgets, w2) = widget(&emu, "orph", &[]).await;
    jobs.create(&PostParams::default(), &owned_job("orph-job", &w2))
        .await
        .unwrap();
    widgets
        .delete("orph", &DeleteParams::orphan())
        .await
        .unwrap();
    let job = jobs.get("orph-job").await.unwrap();
    assert!(job.metadata.owner_references.unwrap_or_default().is_empty());

    // batch/v1 Jobs orphan by default (with the apiserver's warning); Background collects.
    let parent = jobs.get("orph-job").await.unwrap();
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "child", "ownerReferences": [job_owner_ref(&parent)]}}),
    )
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    secrets.create(&PostParams::default(), &s).await.unwrap();
    jobs.delete("orph-job", &DeleteParams::background())
        .await
        .unwrap();
    assert!(secrets.get_opt("child").await.unwrap().is_none());
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_termination_deletes_contents() {
    let emu = common::start().await;
    let client = common::client(&emu);
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "tenant"}})).unwrap();
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(
        created.spec.unwrap().finalizers.unwrap(),
        vec!["kubernetes".to_string()]
    );
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "tenant");
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/x"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &held).await.unwrap();
    let plain: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "plain"}})).unwrap();
    cms.create(&PostParams::default(), &plain).await.unwrap();

    let terminating = nss
        .delete("tenant", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert!(cms.get_opt("plain").await.unwrap().is_none());
    let err = common::api_err(
        cms.create(&PostParams::default(), &plain)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    assert!(
        err.message.contains("because it is being terminated"),
        "{}",
        err.message
    );

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    common::wait_for("namespace gone", Duration::from_secs(5), || {
        let nss = nss.clone();
        async move { nss.get_opt("tenant").await.ok()?.is_none().then_some(()) }
    })
    .await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_collection_and_preconditions() {
    let emu = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(common::client(&emu), "default");
    for (name, team) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let c: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"team": team}}}))
                .unwrap();
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("team=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(left, ["c"]);

    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let err = common::api_err(cms.delete("c", &dp).await.unwrap_err());
    assert_eq!(err.code, 409);
    assert!(
        err.message
            .contains("Precondition failed: UID in precondition: wrong"),
        "{}",
        err.message
    );
    emu.shutdown().await;
}
