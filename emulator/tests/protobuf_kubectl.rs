//! Real kubectl `create` commands against the emulator. kubectl ≥ 1.32 sends built-in kinds as
//! Kubernetes protobuf (`k8s\0` + runtime.Unknown); older ones send JSON. Either way the stored
//! objects must be the same. Skipped (with a note) when a binary is not installed.

mod common;

use common::Kubectl;
use emulator::EmulatorHandle;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use kube::Api;

/// Content types of the successful create requests the emulator saw.
fn create_content_types(emu: &EmulatorHandle) -> Vec<(String, String)> {
    emu.request_log()
        .entries()
        .into_iter()
        .filter(|r| r.verb == "create" && r.status == 201)
        .map(|r| (r.resource, r.content_type))
        .collect()
}

async fn creates_are_stored_faithfully(minor: u32) {
    let Some(bin) = common::kubectl_binary(minor) else {
        eprintln!("kubectl 1.{minor} not installed; skipping");
        return;
    };
    let emu = common::start().await;
    let k = Kubectl::new(&emu, &bin);
    let client = common::client(&emu);

    k.ok(&["create", "namespace", "pb"]).await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "pb",
        "--from-literal=user=admin",
        "--from-literal=pw=p@ss",
    ])
    .await;
    k.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "pb",
        "--from-literal=a=b",
        "--from-literal=empty=",
    ])
    .await;
    k.ok(&[
        "create",
        "job",
        "hello",
        "-n",
        "pb",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo hi",
    ])
    .await;
    k.ok(&["create", "serviceaccount", "robot", "-n", "pb"])
        .await;
    k.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        "pb",
        "--tcp=80:8080",
    ])
    .await;

    let ns = Api::<Namespace>::all(client.clone())
        .get("pb")
        .await
        .expect("namespace stored");
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    let managers: Vec<String> = ns
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["kubectl-create"]);

    let secret = Api::<Secret>::namespaced(client.clone(), "pb")
        .get("creds")
        .await
        .expect("secret stored");
    let data = secret.data.expect("secret data");
    assert_eq!(data["user"].0, b"admin");
    assert_eq!(data["pw"].0, b"p@ss");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    let cm = Api::<ConfigMap>::namespaced(client.clone(), "pb")
        .get("settings")
        .await
        .expect("configmap stored");
    let data = cm.data.expect("configmap data");
    assert_eq!(data["a"], "b");
    assert_eq!(data["empty"], "");

    let job = Api::<Job>::namespaced(client.clone(), "pb")
        .get("hello")
        .await
        .expect("job stored");
    let pod = job.spec.expect("job spec").template.spec.expect("pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(
        (c.name.as_str(), c.image.as_deref()),
        ("hello", Some("busybox"))
    );
    assert_eq!(
        c.command.as_deref(),
        Some(&["sh".to_string(), "-c".to_string(), "echo hi".to_string()][..])
    );

    let sa = Api::<ServiceAccount>::namespaced(client.clone(), "pb")
        .get("robot")
        .await
        .expect("service account stored");
    assert_eq!(sa.metadata.name.as_deref(), Some("robot"));

    let svc = Api::<Service>::namespaced(client.clone(), "pb")
        .get("web")
        .await
        .expect("service stored");
    let spec = svc.spec.expect("service spec");
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(
        (port.port, port.name.as_deref(), port.protocol.as_deref()),
        (80, Some("80-8080"), Some("TCP"))
    );
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
    );
    assert_eq!(spec.selector.expect("selector")["app"], "web");

    let types = create_content_types(&emu);
    assert_eq!(types.len(), 6, "{types:?}");
    let expected = if minor >= 32 {
        "application/vnd.kubernetes.protobuf"
    } else {
        "application/json"
    };
    for (resource, content_type) in &types {
        assert!(
            content_type.starts_with(expected),
            "kubectl 1.{minor} created {resource} with {content_type}"
        );
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn kubectl_1_33_creates_with_protobuf() {
    creates_are_stored_faithfully(33).await;
}

#[tokio::test]
async fn kubectl_1_32_creates_with_protobuf() {
    creates_are_stored_faithfully(32).await;
}

#[tokio::test]
async fn kubectl_1_27_creates_with_json() {
    creates_are_stored_faithfully(27).await;
}
