//! State persisted in a data directory survives a restart, CRDs included.

mod common;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator::Emulator::builder()
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    common::install_widget_crd(&emu);
    let client = common::client(&emu);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "kept"}, "stringData": {"a": "b"}}))
            .unwrap();
    let before = secrets.create(&PostParams::default(), &s).await.unwrap();
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client, "default", &common::widget_resource());
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 5}})).unwrap();
    widgets.create(&PostParams::default(), &w).await.unwrap();
    emu.shutdown().await;

    let emu = emulator::Emulator::builder()
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let client = common::client(&emu);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let after = secrets.get("kept").await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client, "default", &common::widget_resource());
    assert_eq!(widgets.get("w").await.unwrap().data["spec"]["size"], 5);
    // New writes continue the resourceVersion sequence.
    let s2: Secret = serde_json::from_value(json!({"metadata": {"name": "new"}})).unwrap();
    let created = secrets.create(&PostParams::default(), &s2).await.unwrap();
    let rv_new: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    let rv_old: u64 = before.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv_new > rv_old);
    emu.shutdown().await;
}
