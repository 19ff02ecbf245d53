#![recursion_limit = "256"]
//! The Helm chart installs, upgrades and uninstalls through the real Helm v4 Go SDK (driven from
//! Python by tests/helm/release.py) against the emulator as against a real cluster: Helm 4
//! applies every object server-side, so this also proves the emulator serves each kind the chart
//! renders with the apply semantics Helm relies on.

#[path = "../emulator/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

const NAMESPACE: &str = "privacy-system";
const RELEASE: &str = "privacy-operator";
/// The chart's full name for `RELEASE` (the release name already contains the chart name).
const FULLNAME: &str = "privacy-operator";
const CRDS: &[&str] = &[
    "consentpolicies.privacy-operator.dev",
    "datasubjectrequests.privacy-operator.dev",
    "datasystems.privacy-operator.dev",
    "retentionpolicies.privacy-operator.dev",
];
const DEADLINE: Duration = Duration::from_secs(20);

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs one Helm action through tests/helm/release.py, returning its JSON result.
async fn helm(kubeconfig: &Path, release: &str, action: &str, values: Option<&Value>) -> Value {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(repo_path("tests/helm/release.py"))
        .arg(kubeconfig)
        .arg(NAMESPACE)
        .arg(release)
        .arg(action);
    if let Some(v) = values {
        cmd.arg(v.to_string());
    }
    let out = cmd.output().await.expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "helm {action} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("helm {action} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// A release without its (long) rendered manifest, for assertion messages.
fn summary(release: &Value) -> Value {
    let mut r = release.clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("manifest");
        o.remove("notes");
    }
    r
}

/// An emulator with `namespaces` created, its kubeconfig (in the returned temp dir) and a client.
async fn cluster(
    namespaces: &[&str],
) -> (
    emulator::EmulatorHandle,
    tempfile::TempDir,
    PathBuf,
    kube::Client,
) {
    let emu = common::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    let client = common::client(&emu);
    let api: Api<Namespace> = Api::all(client.clone());
    for name in namespaces {
        let ns = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        api.create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
    }
    (emu, dir, kubeconfig, client)
}

async fn present<K>(api: &Api<K>, name: &str) -> Option<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("get succeeds")
}

async fn assert_present<K>(api: &Api<K>, name: &str) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    present(api, name)
        .await
        .unwrap_or_else(|| panic!("{} {name} exists", std::any::type_name::<K>()))
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

fn log_level(d: &Deployment) -> Option<String> {
    d.spec
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == "PRIVACY_OPERATOR_LOG_LEVEL")
        .and_then(|e| e.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_uninstall_round_trip() {
    let (_emu, _dir, kubeconfig, client) = cluster(&[NAMESPACE]).await;

    // Everything optional the chart renders without external dependencies.
    let values = json!({
        "subjectSalt": {"create": true},
        "admissionPolicy": {"enabled": true},
    });
    let installed = helm(&kubeconfig, RELEASE, "install", Some(&values)).await;
    assert_eq!(installed["status"], "deployed", "{}", summary(&installed));

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRDS {
        common::wait_for(&format!("CRD {name} Established"), DEADLINE, || async {
            present(&crds, name).await.filter(established).map(|_| ())
        })
        .await;
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let deployment = assert_present(&deployments, FULLNAME).await;
    assert_eq!(deployment.spec.replicas, Some(2));
    // Helm 4 applies server-side: the fields belong to Helm's Apply manager.
    let managers: Vec<(String, String)> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.iter().any(|(_, op)| op == "Apply"),
        "server-side applied: {managers:?}"
    );
    assert_present(
        &Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE),
        FULLNAME,
    )
    .await;
    assert_present(
        &Api::<Service>::namespaced(client.clone(), NAMESPACE),
        &format!("{FULLNAME}-metrics"),
    )
    .await;
    assert_present(
        &Api::<ClusterRole>::all(client.clone()),
        &format!("{FULLNAME}-manager"),
    )
    .await;
    assert_present(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        &format!("{FULLNAME}-manager"),
    )
    .await;
    let roles: Api<Role> = Api::namespaced(client.clone(), NAMESPACE);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), NAMESPACE);
    for suffix in ["leader-election", "subject-salt"] {
        assert_present(&roles, &format!("{FULLNAME}-{suffix}")).await;
        assert_present(&bindings, &format!("{FULLNAME}-{suffix}")).await;
    }
    assert_present(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), NAMESPACE),
        FULLNAME,
    )
    .await;
    assert_present(
        &Api::<NetworkPolicy>::namespaced(client.clone(), NAMESPACE),
        FULLNAME,
    )
    .await;
    let vaps: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let vapbs: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let vap_names: Vec<String> = vaps
        .list(&Default::default())
        .await
        .expect("policies listed")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(vap_names.len(), 1, "{vap_names:?}");
    assert_present(&vapbs, &vap_names[0]).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let salt_name = format!("{FULLNAME}-subject-salt");
    let salt = assert_present(&secrets, &salt_name).await.data;
    let records = ListParams::default().labels(&format!("owner=helm,name={RELEASE}"));
    let stored = secrets
        .list(&records)
        .await
        .expect("release records listed");
    assert_eq!(stored.items.len(), 1, "Helm stores revision 1 as a Secret");

    // An upgrade changes what it should and keeps the salt (Helm lookup sees the Secret).
    let upgraded = helm(
        &kubeconfig,
        RELEASE,
        "upgrade",
        Some(&json!({
            "subjectSalt": {"create": true},
            "admissionPolicy": {"enabled": true},
            "replicas": 3,
            "logging": {"level": "debug"},
        })),
    )
    .await;
    assert_eq!(upgraded["status"], "deployed", "{}", summary(&upgraded));
    assert_eq!(upgraded["revision"], 2, "{}", summary(&upgraded));
    let deployment = assert_present(&deployments, FULLNAME).await;
    assert_eq!(deployment.spec.replicas, Some(3));
    assert_eq!(log_level(&deployment).as_deref(), Some("debug"));
    assert_eq!(assert_present(&secrets, &salt_name).await.data, salt);
    // Helm deletes what a revision no longer renders: disable the admission policy.
    let pruned = helm(
        &kubeconfig,
        RELEASE,
        "upgrade",
        Some(&json!({"subjectSalt": {"create": true}, "replicas": 3})),
    )
    .await;
    assert_eq!(pruned["status"], "deployed", "{}", summary(&pruned));
    assert_eq!(pruned["revision"], 3, "{}", summary(&pruned));
    assert!(
        present(&vapbs, &vap_names[0]).await.is_none(),
        "binding pruned"
    );
    assert!(
        present(&vaps, &vap_names[0]).await.is_none(),
        "policy pruned"
    );

    // Uninstall removes the operator but keeps the CRDs and the salt (resource-policy keep).
    helm(&kubeconfig, RELEASE, "uninstall", None).await;
    for name in CRDS {
        let crd = assert_present(&crds, name).await;
        assert!(established(&crd), "{name} still served");
    }
    assert!(present(&secrets, &salt_name).await.is_some(), "salt kept");
    // Helm purged its release records (protobuf DELETEs of Secrets).
    let left = secrets
        .list(&records)
        .await
        .expect("release records listed");
    assert!(left.items.is_empty(), "release records purged");
    common::wait_for("Deployment deleted", DEADLINE, || async {
        present(&deployments, FULLNAME)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        present(
            &Api::<ClusterRole>::all(client.clone()),
            &format!("{FULLNAME}-manager")
        )
        .await
        .is_none(),
        "ClusterRole deleted"
    );
}

/// A release watching one namespace binds the manager role there only, and the optional
/// objects follow their values: one replica renders no PodDisruptionBudget, egress rules join
/// the NetworkPolicy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_scoped_to_one_namespace() {
    let (_emu, _dir, kubeconfig, client) = cluster(&[NAMESPACE, "team-a"]).await;
    let release = "gdpr";
    let fullname = "gdpr-privacy-operator";
    let values = json!({
        "subjectSalt": {"create": true},
        "watchNamespaces": ["team-a"],
        "replicas": 1,
        "networkPolicy": {"egress": {
            "enabled": true,
            "apiServerCIDRs": ["10.0.0.1/32"],
            "objectStorageCIDRs": ["192.0.2.0/24"],
        }},
    });
    let installed = helm(&kubeconfig, release, "install", Some(&values)).await;
    assert_eq!(installed["status"], "deployed", "{}", summary(&installed));

    let manager = format!("{fullname}-manager");
    assert_present(&Api::<ClusterRole>::all(client.clone()), &manager).await;
    assert_present(
        &Api::<RoleBinding>::namespaced(client.clone(), "team-a"),
        &manager,
    )
    .await;
    assert!(
        present(&Api::<ClusterRoleBinding>::all(client.clone()), &manager)
            .await
            .is_none(),
        "no cluster-wide binding"
    );
    assert!(
        present(
            &Api::<PodDisruptionBudget>::namespaced(client.clone(), NAMESPACE),
            fullname
        )
        .await
        .is_none(),
        "no PodDisruptionBudget for one replica"
    );
    let policy = assert_present(
        &Api::<NetworkPolicy>::namespaced(client.clone(), NAMESPACE),
        fullname,
    )
    .await;
    let types = policy.spec.and_then(|s| s.policy_types).unwrap_or_default();
    assert!(types.iter().any(|t| t == "Egress"), "{types:?}");

    helm(&kubeconfig, release, "uninstall", None).await;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "team-a");
    common::wait_for("RoleBinding deleted", DEADLINE, || async {
        present(&bindings, &manager).await.is_none().then_some(())
    })
    .await;
}
