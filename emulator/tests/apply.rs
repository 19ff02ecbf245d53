//! Server-side apply through kube-rs `Patch::Apply`: create on first apply, field managers,
//! conflicts and `force`, the status subresource, managedFields on ordinary writes.

mod common;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_round_trip_conflicts_and_force() {
    let emu = common::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(common::client(&emu), "default");
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}});
    let created = cms
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&cfg))
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap()["x"], "1");
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["alice"]);

    // Re-applying the same config changes nothing (same resourceVersion).
    let again = cms
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&cfg))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );

    // Another manager setting the same field conflicts unless forced.
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "2"}});
    let err = common::api_err(
        cms.patch("a", &PatchParams::apply("bob"), &Patch::Apply(&other))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    let forced = cms
        .patch(
            "a",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["x"], "2");

    // fieldManager is required for apply.
    let err = common::api_err(
        cms.patch("a", &PatchParams::default(), &Patch::Apply(&cfg))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);

    // Ordinary writes record an Update entry for their manager.
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "b"}, "data": {"k": "v"}})).unwrap();
    let pp = PostParams {
        field_manager: Some("carol".into()),
        ..Default::default()
    };
    let b = cms.create(&pp, &cm).await.unwrap();
    let mf = b.metadata.managed_fields.unwrap_or_default();
    assert!(
        mf.iter()
            .any(|m| m.manager.as_deref() == Some("carol")
                && m.operation.as_deref() == Some("Update")),
        "{mf:?}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_to_custom_resource_and_status() {
    let emu = common::start().await;
    common::install_widget_crd(&emu);
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(common::client(&emu), "default", &common::widget_resource());
    let cfg = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2, "tags": ["a"]}});
    let w = widgets
        .patch("w", &PatchParams::apply("op"), &Patch::Apply(&cfg))
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["size"], 2);
    assert_eq!(
        w.data["spec"]["color"], "red",
        "defaults applied on apply-create"
    );
    assert_eq!(w.metadata.generation, Some(1));

    let st = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"phase": "Ready"}});
    let w = widgets
        .patch_status("w", &PatchParams::apply("op").force(), &Patch::Apply(&st))
        .await
        .unwrap();
    assert_eq!(w.data["status"]["phase"], "Ready");
    assert_eq!(w.metadata.generation, Some(1));
    assert_eq!(w.data["spec"]["size"], 2);

    // Invalid applied config: 422 from the schema.
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 0}});
    let err = common::api_err(
        widgets
            .patch("w", &PatchParams::apply("op"), &Patch::Apply(&bad))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    emu.shutdown().await;
}
