//! Patches and server-side apply end to end: real kubectl (`apply --server-side`, client-side
//! `apply`, `patch`) and kube-rs `Patch::Apply` for spec and status, against the emulator.

mod common;

use common::Kubectl;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

const KUBECTL: u32 = 33;

fn kubectl(emu: &emulator::EmulatorHandle) -> Option<Kubectl> {
    match common::kubectl_binary(KUBECTL) {
        Some(bin) => Some(Kubectl::new(emu, &bin)),
        None => {
            eprintln!("kubectl 1.{KUBECTL} not installed; skipping");
            None
        }
    }
}

fn write(k: &Kubectl, name: &str, yaml: &str) -> String {
    let p = k.dir().join(name);
    std::fs::write(&p, yaml).expect("manifest written");
    p.to_string_lossy().into_owned()
}

async fn get_json(k: &Kubectl, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&k.ok(&a).await).expect("kubectl prints JSON")
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn kubectl_server_side_apply_owns_prunes_and_conflicts() {
    let emu = common::start().await;
    let Some(k) = kubectl(&emu) else { return };
    let v1 = write(
        &k,
        "cm1.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: \"1\"\n  b: \"2\"\n",
    );
    k.ok(&["apply", "--server-side", "-f", &v1]).await;
    let first = get_json(&k, &["cm", "app"]).await;
    assert_eq!(
        managers(&first),
        [("kubectl".to_string(), "Apply".to_string())]
    );
    assert_eq!(
        first["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}})
    );

    // Re-applying the same manifest is a no-op write.
    k.ok(&["apply", "--server-side", "-f", &v1]).await;
    let again = get_json(&k, &["cm", "app"]).await;
    assert_eq!(
        again["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );

    // Dropping a key from the manifest removes it.
    let v2 = write(
        &k,
        "cm2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: \"1\"\n",
    );
    k.ok(&["apply", "--server-side", "-f", &v2]).await;
    assert_eq!(
        get_json(&k, &["cm", "app"]).await["data"],
        json!({"a": "1"})
    );

    // Another manager changing kubectl's value conflicts, until it forces.
    let other = write(
        &k,
        "cm3.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: \"9\"\n",
    );
    let out = k
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=helm",
            "-f",
            &other,
        ])
        .await;
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("Apply failed with 1 conflict: conflict with \"kubectl\": .data.a"),
        "{}",
        out.stderr
    );
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=helm",
        "--force-conflicts",
        "-f",
        &other,
    ])
    .await;
    let forced = get_json(&k, &["cm", "app"]).await;
    assert_eq!(forced["data"], json!({"a": "9"}));
    assert_eq!(
        managers(&forced),
        [("helm".to_string(), "Apply".to_string())]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn kubectl_client_side_apply_then_server_side_apply() {
    let emu = common::start().await;
    let Some(k) = kubectl(&emu) else { return };
    let v1 = write(
        &k,
        "svc1.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app: web, tier: front}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n  - {name: https, port: 443, targetPort: 8443}\n",
    );
    k.ok(&["apply", "-f", &v1]).await;
    let created = get_json(&k, &["svc", "web"]).await;
    assert!(
        created["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // Client-side apply computes a strategic merge patch from the last-applied configuration:
    // the dropped label and port go, the changed port is merged by its key.
    let v2 = write(
        &k,
        "svc2.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 9090}\n",
    );
    k.ok(&["apply", "-f", &v2]).await;
    let updated = get_json(&k, &["svc", "web"]).await;
    assert_eq!(updated["metadata"]["labels"], json!({"app": "web"}));
    let ports = updated["spec"]["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["targetPort"], json!(9090));

    // Moving to server-side apply takes over client-side apply's fields without conflicts.
    let v3 = write(
        &k,
        "svc3.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: 7070}\n",
    );
    k.ok(&["apply", "--server-side", "-f", &v3]).await;
    let ssa = get_json(&k, &["svc", "web"]).await;
    assert_eq!(ssa["spec"]["ports"][0]["targetPort"], json!(7070));
    let last: Value = serde_json::from_str(
        ssa["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("annotation kept"),
    )
    .expect("annotation is JSON");
    assert_eq!(last["spec"]["ports"][0]["targetPort"], json!(7070));
    emu.shutdown().await;
}

#[tokio::test]
async fn kubectl_patch_types() {
    let emu = common::start().await;
    let Some(k) = kubectl(&emu) else { return };
    let cm = write(
        &k,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\n  finalizers: [example.com/a]\ndata:\n  a: \"1\"\n",
    );
    k.ok(&["create", "-f", &cm]).await;

    k.ok(&[
        "patch",
        "cm",
        "p",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "cm",
        "p",
        "--type=strategic",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/b"]}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "cm",
        "p",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/a","value":"1"},{"op":"remove","path":"/data/a"}]"#,
    ])
    .await;
    let obj = get_json(&k, &["cm", "p"]).await;
    assert_eq!(obj["data"], json!({"b": "2"}));
    let fins = obj["metadata"]["finalizers"]
        .as_array()
        .expect("finalizers")
        .clone();
    assert_eq!(fins.len(), 2, "{fins:?}");
    let mgr: Vec<String> = managers(&obj).into_iter().map(|(m, _)| m).collect();
    assert!(mgr.contains(&"kubectl-patch".to_string()), "{mgr:?}");

    let out = k
        .run(&[
            "patch",
            "cm",
            "p",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/data/b","value":"nope"}]"#,
        ])
        .await;
    assert!(!out.success);
    assert!(
        out.stderr
            .contains("the server rejected our request due to an error in our request"),
        "{}",
        out.stderr
    );

    k.ok(&[
        "patch",
        "cm",
        "p",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/metadata/finalizers","value":[]}]"#,
    ])
    .await;
    emu.shutdown().await;
}

fn conditions_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}, "owner": {"type": "string"}}},
                        "status": {"type": "object", "properties": {
                            "phase": {"type": "string"},
                            "conditions": {
                                "type": "array",
                                "x-kubernetes-list-type": "map",
                                "x-kubernetes-list-map-keys": ["type"],
                                "items": {"type": "object", "required": ["type", "status"], "properties": {
                                    "type": {"type": "string"}, "status": {"type": "string"}, "reason": {"type": "string"}
                                }}
                            }
                        }}
                    }
                }}
            }]
        }
    })
}

#[tokio::test]
async fn kube_rs_apply_spec_and_status_with_force() {
    let emu = common::start().await;
    emu.create_or_replace(conditions_crd())
        .expect("CRD installs");
    let client = common::client(&emu);
    let ar = kube::api::ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let user = PatchParams::apply("user");
    let op = PatchParams::apply("operator").force();

    let spec = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 1}});
    api.patch("g", &user, &Patch::Apply(&spec))
        .await
        .expect("created by apply");

    let status = |ty: &str, st: &str| {
        json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
        "status": {"phase": "Working", "conditions": [{"type": ty, "status": st}]}})
    };
    api.patch_status("g", &op, &Patch::Apply(&status("Ready", "False")))
        .await
        .expect("status applied");
    let other = PatchParams::apply("auditor").force();
    api.patch_status(
        "g",
        &other,
        &Patch::Apply(
            &json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
        "status": {"conditions": [{"type": "Audited", "status": "True"}]}}),
        ),
    )
    .await
    .expect("second status manager applies");
    let g = api
        .patch_status("g", &op, &Patch::Apply(&status("Ready", "True")))
        .await
        .expect("status re-applied");
    let conditions = &g.data["status"]["conditions"];
    assert_eq!(
        conditions,
        &json!([{"type": "Ready", "status": "True"}, {"type": "Audited", "status": "True"}])
    );
    assert_eq!(
        g.data["spec"],
        json!({"size": 1}),
        "status applies leave spec alone"
    );

    // The user changing spec through apply does not disturb status, and conflicts are reported
    // against the status manager only for fields it owns.
    let spec2 = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 2}});
    let g = api
        .patch("g", &user, &Patch::Apply(&spec2))
        .await
        .expect("spec re-applied");
    assert_eq!(g.data["spec"]["size"], json!(2));
    assert_eq!(g.data["status"]["phase"], json!("Working"));

    let thief = PatchParams::apply("thief");
    let err = api
        .patch("g", &thief, &Patch::Apply(&spec))
        .await
        .expect_err("conflict");
    let status = common::api_err(err);
    assert_eq!(status.code, 409);
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"user\": .spec.size"
    );

    let entries = g.metadata.managed_fields.unwrap_or_default();
    let status_entry = entries
        .iter()
        .find(|e| e.manager.as_deref() == Some("operator"))
        .expect("operator entry");
    assert_eq!(status_entry.subresource.as_deref(), Some("status"));
    emu.shutdown().await;
}
