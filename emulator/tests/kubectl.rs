//! Real kubectl binaries against the emulator: discovery, create, get (Table and YAML),
//! printer columns of CRDs, delete. Skipped (with a note) when a binary is not installed.

mod common;

use common::Kubectl;
/// The smoke sequence every kubectl version must pass.
async fn smoke(minor: u32) {
    let Some(bin) = common::kubectl_binary(minor) else {
        eprintln!("kubectl 1.{minor} not installed; skipping");
        return;
    };
    let emu = common::start().await;
    let k = Kubectl::new(&emu, &bin);

    let ns = k.ok(&["get", "ns"]).await;
    assert!(
        ns.lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .eq(["NAME", "STATUS", "AGE"]),
        "{ns}"
    );
    assert!(ns.contains("default") && ns.contains("Active"), "{ns}");

    // kubectl >= 1.32 sends these creates as protobuf.
    let out = k
        .ok(&[
            "create",
            "secret",
            "generic",
            "s1",
            "--from-literal=user=alice",
        ])
        .await;
    assert!(out.contains("secret/s1 created"), "{out}");
    let out = k
        .ok(&["create", "configmap", "c1", "--from-literal=a=b"])
        .await;
    assert!(out.contains("configmap/c1 created"), "{out}");

    let yaml = k.ok(&["get", "secrets", "-o", "yaml"]).await;
    assert!(
        yaml.contains("kind: List") || yaml.contains("kind: SecretList"),
        "{yaml}"
    );
    assert!(
        yaml.contains("name: s1") && yaml.contains("user: YWxpY2U="),
        "{yaml}"
    );
    let table = k.ok(&["get", "secrets"]).await;
    assert!(table.contains("s1") && table.contains("Opaque"), "{table}");
    let cm = k.ok(&["get", "cm", "c1", "-o", "jsonpath={.data.a}"]).await;
    assert_eq!(cm, "b");

    let out = k.ok(&["delete", "secret", "s1"]).await;
    assert!(out.contains("secret \"s1\" deleted"), "{out}");
    let gone = k.run(&["get", "secret", "s1"]).await;
    assert!(!gone.success);
    assert!(
        gone.stderr.contains("NotFound") || gone.stderr.contains("not found"),
        "{}",
        gone.stderr
    );

    // A CRD: discovery picks it up, printer columns show, short names resolve.
    common::install_widget_crd(&emu);
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n  color: blue\n";
    let applied = k.run_with_stdin(&["apply", "-f", "-"], Some(widget)).await;
    assert!(applied.success, "apply failed: {}", applied.stderr);
    let table = k.ok(&["get", "wd"]).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "COLOR", "PHASE", "AGE"], "{table}");
    assert!(table.contains("w1") && table.contains("blue"), "{table}");

    // A bad manifest is refused with the field path.
    let bad = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  size: 0\n";
    let refused = k.run_with_stdin(&["create", "-f", "-"], Some(bad)).await;
    assert!(!refused.success);
    assert!(refused.stderr.contains("spec.size"), "{}", refused.stderr);

    let out = k.ok(&["delete", "wd", "w1"]).await;
    assert!(out.contains("deleted"), "{out}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_smoke() {
    smoke(27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_30_smoke() {
    smoke(30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_smoke() {
    smoke(33).await;
}

/// Beyond the smoke sequence: `wait`, `describe`, watch output, server-side apply, namespace
/// deletion, events.
async fn workflows(minor: u32) {
    let Some(bin) = common::kubectl_binary(minor) else {
        eprintln!("kubectl 1.{minor} not installed; skipping");
        return;
    };
    let emu = common::start().await;
    let k = Kubectl::new(&emu, &bin);
    common::install_widget_crd(&emu);

    let widget =
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n";
    let out = k
        .run_with_stdin(&["apply", "--server-side", "-f", "-"], Some(widget))
        .await;
    assert!(
        out.success && out.stdout.contains("serverside-applied"),
        "{out:?}"
    );

    // `kubectl wait` watches until the condition holds.
    let waiter = {
        let bin = bin.clone();
        let dir = k.dir().to_path_buf();
        tokio::spawn(async move {
            tokio::process::Command::new(bin)
                .arg("--kubeconfig")
                .arg(dir.join("kubeconfig"))
                .arg("--cache-dir")
                .arg(dir.join("cache"))
                .args([
                    "wait",
                    "--for=condition=Ready",
                    "widget/w1",
                    "--timeout=20s",
                ])
                .output()
                .await
                .expect("kubectl wait runs")
        })
    };
    common::wait_for(
        "kubectl wait is watching",
        std::time::Duration::from_secs(20),
        || async {
            emu.request_log()
                .entries()
                .iter()
                .any(|r| r.verb == "watch" && r.resource == "widgets")
                .then_some(())
        },
    )
    .await;
    let info = emu.core().lookup("example.com", "v1", "widgets").unwrap();
    let cur = emu.core().get(&info, "default", "w1").unwrap();
    let mut next = (*cur).clone();
    next["status"] = serde_json::json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Done", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]});
    emu.core()
        .update(
            &info,
            Some("default"),
            "w1",
            next,
            &Default::default(),
            emulator::ops::Subresource::Status,
        )
        .unwrap();
    let waited = waiter.await.unwrap();
    assert!(
        waited.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(String::from_utf8_lossy(&waited.stdout).contains("condition met"));

    // describe shows the object and its events (events field selectors).
    // Written as events.k8s.io/v1 (what kube-rs' Recorder sends); describe reads core v1.
    let ev = serde_json::json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "w1.1", "namespace": "default"},
        "regarding": {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w1", "namespace": "default", "uid": cur["metadata"]["uid"]},
        "reason": "Reconciled", "note": "all good", "type": "Normal", "action": "Reconcile",
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "widget-controller", "reportingInstance": "widget-controller-0",
    });
    emu.create_or_replace(ev).unwrap();
    let described = k.ok(&["describe", "widget", "w1"]).await;
    assert!(
        described.contains("Name:") && described.contains("w1"),
        "{described}"
    );
    assert!(
        described.contains("Reconciled") && described.contains("all good"),
        "{described}"
    );
    let events = k
        .ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=w1",
        ])
        .await;
    assert!(events.contains("Reconciled"), "{events}");

    // `get -w` prints the initial table then streams changes until the request times out.
    let watched = k.ok(&["get", "ns", "-w", "--request-timeout=2s"]).await;
    assert!(watched.contains("kube-system"), "{watched}");

    // Namespace deletion.
    k.ok(&["create", "namespace", "tenant"]).await;
    k.ok(&["create", "configmap", "c", "-n", "tenant"]).await;
    let out = k
        .ok(&[
            "delete",
            "namespace",
            "tenant",
            "--wait=true",
            "--timeout=20s",
        ])
        .await;
    assert!(out.contains("namespace \"tenant\" deleted"), "{out}");
    let gone = k.run(&["get", "namespace", "tenant"]).await;
    assert!(!gone.success);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_workflows() {
    workflows(27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_workflows() {
    workflows(33).await;
}
