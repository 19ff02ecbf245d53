//! CRUD through kube-rs: conflicts, generation rules, status subresource, CRDs served as
//! dynamic objects with schema validation, pagination, selectors, dry-run.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use common::api_err;

fn secret(name: &str) -> Secret {
    serde_json::from_value(
        json!({"metadata": {"name": name}, "stringData": {"k": "v"}, "data": {"a": "Yg=="}}),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_crud_conflict_and_generation() {
    let emu = common::start().await;
    let client = common::client(&emu);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");

    let created = secrets
        .create(&PostParams::default(), &secret("s1"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.generation, None.or(meta.generation));
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();

    // AlreadyExists.
    let err = api_err(
        secrets
            .create(&PostParams::default(), &secret("s1"))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "secrets \"s1\" already exists");

    // Update bumps RV; stale RV conflicts.
    let mut s = created.clone();
    s.data
        .get_or_insert_with(BTreeMap::new)
        .insert("b".into(), k8s_openapi::ByteString(b"x".to_vec()));
    let updated = secrets
        .replace("s1", &PostParams::default(), &s)
        .await
        .unwrap();
    let rv2: u64 = updated
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    let err = api_err(
        secrets
            .replace("s1", &PostParams::default(), &s)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on secrets \"s1\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Merge patch, get, list across namespaces, delete (Status reply), NotFound.
    let patched = secrets
        .patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["app"], "x");
    let all: Api<Secret> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    secrets
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap();
    let err = api_err(secrets.get("s1").await.unwrap_err());
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (404, "NotFound", "secrets \"s1\" not found")
    );

    // Missing namespace.
    let elsewhere: Api<Secret> = Api::namespaced(client.clone(), "nope");
    let err = api_err(
        elsewhere
            .create(&PostParams::default(), &secret("s2"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );

    // Default namespaces exist.
    let nss: Api<Namespace> = Api::all(client);
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for n in ["default", "kube-system", "kube-public"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_status_subresource_and_generation() {
    let emu = common::start().await;
    let jobs: Api<Job> = Api::namespaced(common::client(&emu), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "j1"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    // Status writes change only status and never the generation.
    let st = jobs
        .patch_status(
            "j1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 1}, "spec": {"parallelism": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().active, Some(1));
    assert_eq!(
        st.spec.unwrap().parallelism,
        Some(1),
        "defaulted, not the 7 sent to /status"
    );
    assert_eq!(st.metadata.generation, Some(1));

    // Main-resource writes ignore status and bump generation for spec changes only.
    let main = jobs
        .patch(
            "j1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 5}, "spec": {"parallelism": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(main.status.unwrap().active, Some(1));
    assert_eq!(main.metadata.generation, Some(2));
    let labels = jobs
        .patch(
            "j1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labels.metadata.generation, Some(2));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_is_served_and_validated() {
    let emu = common::start().await;
    let client = common::client(&emu);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(common::widget_crd()).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = common::wait_for("CRD established", Duration::from_secs(5), || {
        let crds = crds.clone();
        async move {
            let c = crds.get("widgets.example.com").await.ok()?;
            let conds = c.status?.conditions?;
            conds
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    let () = established;

    let ar = common::widget_resource();
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 2}
    }))
    .unwrap();
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.data["spec"]["size"], 2);

    // Status subresource: spec untouched, generation unchanged.
    let st = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Ready");
    assert_eq!(st.metadata.generation, Some(1));
    let sp = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(sp.metadata.generation, Some(2));
    assert_eq!(sp.data["status"]["phase"], "Ready");

    // Strategic merge patch is refused for custom resources.
    let err = api_err(
        widgets
            .patch(
                "w1",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 4}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 415);

    // PUT of a custom resource needs a resourceVersion.
    let mut no_rv = sp.clone();
    no_rv.metadata.resource_version = None;
    let err = api_err(
        widgets
            .replace("w1", &PostParams::default(), &no_rv)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);

    // Deleting the CRD removes its objects and stops serving.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    common::wait_for("CRD gone", Duration::from_secs(5), || {
        let crds = crds.clone();
        async move {
            crds.get_opt("widgets.example.com")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    let err = api_err(widgets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(err.code, 404);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_schema_errors_are_422_with_field_paths() {
    let emu = common::start().await;
    let client = common::client(&emu);
    common::install_widget_crd(&emu);
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &common::widget_resource());
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"color": "green"}
    }))
    .unwrap();
    let err = api_err(
        widgets
            .create(&PostParams::default(), &bad)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .starts_with("Widget.example.com \"bad\" is invalid: "),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(
            "spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\""
        ),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("spec.size: Required value"),
        "{}",
        err.message
    );

    // Defaults are applied; unknown fields are pruned (Warn) or refused (Strict).
    let ok: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "ok"}, "spec": {"size": 1, "extra": true}
    }))
    .unwrap();
    let created = widgets.create(&PostParams::default(), &ok).await.unwrap();
    assert_eq!(created.data["spec"]["color"], "red");
    assert!(created.data["spec"].get("extra").is_none());
    let strict = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..Default::default()
    };
    let err = api_err(
        widgets
            .patch("ok", &strict, &Patch::Merge(json!({"spec": {"foo": 1}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert_eq!(
        err.message,
        "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.foo\""
    );

    // A CRD whose schema does not compile is refused with the field path.
    let mut broken = common::widget_crd();
    broken["metadata"]["name"] = json!("gadgets.example.com");
    broken["spec"]["names"] = json!({"plural": "gadgets", "kind": "Gadget"});
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({"type": "string"});
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let broken: CustomResourceDefinition = serde_json::from_value(broken).unwrap();
    let err = api_err(
        crds.create(&PostParams::default(), &broken)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("spec.versions[0].schema.openAPIV3Schema"),
        "{}",
        err.message
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_selectors_and_dry_run() {
    let emu = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(common::client(&emu), "default");
    for i in 0..7 {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("cm-{i}"), "labels": {"parity": if i % 2 == 0 { "even" } else { "odd" }, "i": i.to_string()}}
        }))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    // Pages of 3 with continue tokens.
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 7);

    let count = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            cms.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(count("parity=even").await, 4);
    assert_eq!(count("parity!=even").await, 3);
    assert_eq!(count("i in (1,2,9)").await, 2);
    assert_eq!(count("i notin (1,2)").await, 5);
    assert_eq!(count("parity").await, 7);
    assert_eq!(count("!parity").await, 0);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=cm-3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    // Dry-run create leaves nothing behind.
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dry"}})).unwrap();
    cms.create(&pp, &cm).await.unwrap();
    assert!(cms.get_opt("dry").await.unwrap().is_none());

    // generateName.
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let made = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(made.metadata.name.unwrap().starts_with("gen-"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_share_storage_between_api_groups() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let emu = common::start().await;
    let client = common::client(&emu);
    let new_events: Api<Event> = Api::namespaced(client.clone(), "default");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "regarding": {"kind": "Widget", "name": "w1", "namespace": "default"},
        "reason": "Reconciled", "note": "done", "type": "Normal", "action": "Reconcile",
        "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "ctl", "reportingInstance": "ctl-0",
    }))
    .unwrap();
    new_events
        .create(&PostParams::default(), &ev)
        .await
        .unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client, "default");
    let found = core
        .list(&ListParams::default().fields("involvedObject.name=w1"))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].message.as_deref(), Some("done"));
    assert_eq!(found.items[0].reporting_component.as_deref(), Some("ctl"));
    let back = new_events
        .list(&ListParams::default().fields("regarding.name=w1"))
        .await
        .unwrap();
    assert_eq!(back.items[0].note.as_deref(), Some("done"));
    emu.shutdown().await;
}
