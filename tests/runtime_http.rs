//! The operator runtime in-process against the emulator: probes, metrics, and a graceful
//! shutdown that releases the Lease and stops the servers.

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "controller_support/mod.rs"]
mod controller_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use privacy_operator::controller::SystemClock;
use privacy_operator::runtime::{self, Bound, LeaseConfig, Options};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// One HTTP/1.1 GET: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("written");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("reply within 10s")
        .expect("reply read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, body.to_string())
}

fn install_crds(emu: &emulator::EmulatorHandle) {
    for crd in privacy_operator::api::crds() {
        emu.create_or_replace(serde_json::to_value(&crd).unwrap())
            .expect("CRD installs");
    }
}

fn loopback() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

// The metrics registry (and so the leader gauge) is process-wide, as in a real operator
// process: two runtimes at once in this test binary would overwrite each other's gauge, so
// the cases run one after the other.
#[tokio::test]
async fn leader_and_standby_runtimes() {
    a_leader_serves_probes_and_metrics_and_releases_its_lease_on_shutdown().await;
    a_standby_is_ready_and_shuts_down_without_touching_the_lease().await;
    without_leader_election_the_process_leads_creates_its_salt_and_is_ready_once_synced().await;
}

async fn a_leader_serves_probes_and_metrics_and_releases_its_lease_on_shutdown() {
    let emu = common::start().await;
    install_crds(&emu);
    let client = common::client(&emu);
    let options = Options {
        health_addr: loopback(),
        metrics_addr: loopback(),
        leader_election: Some(LeaseConfig {
            name: "privacy-operator-leader".into(),
            namespace: "default".into(),
            identity: "pod-a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_millis(200),
        }),
    };
    let (bound_tx, bound_rx) = oneshot::channel::<Bound>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(runtime::run(
        client.clone(),
        controller_support::config(),
        Arc::new(SystemClock),
        options,
        async move {
            let _ = stop_rx.await;
        },
        Some(bound_tx),
    ));
    let bound = bound_rx.await.expect("servers bound");
    let (health, metrics) = (bound.health.unwrap(), bound.metrics.unwrap());

    assert_eq!(get(health, "/healthz").await.0, 200);
    assert_eq!(get(health, "/nope").await.0, 404);
    common::wait_for("ready", Duration::from_secs(10), || async {
        (get(health, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    common::wait_for("the leader gauge", Duration::from_secs(10), || async {
        let (status, body) = get(metrics, "/metrics").await;
        assert_eq!(status, 200);
        body.lines()
            .any(|l| l == "privacy_operator_leader 1")
            .then_some(())
    })
    .await;

    // The leader reconciles: a new request is counted in the metrics.
    let dsr = json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": "metrics-probe", "namespace": controller_support::NS},
        "spec": {
            "type": "Access",
            "regulation": "GDPR",
            "subject": {"identifiers": {"email": controller_support::EMAIL}}
        }
    });
    emu.create_or_replace(dsr).expect("request stored");
    let body = common::wait_for("a counted reconcile", Duration::from_secs(20), || async {
        let (_, body) = get(metrics, "/metrics").await;
        body.lines()
            .filter_map(|l| l.strip_prefix("privacy_operator_reconciles_total "))
            .any(|n| n.trim() != "0")
            .then_some(body)
    })
    .await;
    for family in [
        "# TYPE privacy_operator_reconciles counter",
        "# TYPE privacy_operator_reconcile_errors counter",
        "# TYPE privacy_operator_reconcile_duration_seconds histogram",
        "# TYPE privacy_operator_leader gauge",
        "# TYPE privacy_operator_requests gauge",
        "# TYPE privacy_operator_requests_overdue gauge",
        "# TYPE privacy_operator_request_completion_seconds histogram",
        "# TYPE privacy_operator_jobs counter",
    ] {
        assert!(body.contains(family), "{family} missing:\n{body}");
    }
    assert!(!body.contains(controller_support::EMAIL));

    // SIGTERM: the controller stops, the lease is released, the servers close.
    stop_tx.send(()).expect("runtime listening");
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("shuts down")
        .expect("task")
        .expect("a graceful shutdown is a success");
    let lease = Api::<Lease>::namespaced(client, "default")
        .get("privacy-operator-leader")
        .await
        .expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity, None, "released");
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert!(tokio::net::TcpStream::connect(health).await.is_err());
    assert!(tokio::net::TcpStream::connect(metrics).await.is_err());
}

async fn a_standby_is_ready_and_shuts_down_without_touching_the_lease() {
    let emu = common::start().await;
    install_crds(&emu);
    let client = common::client(&emu);
    // Someone else holds a long lease.
    emu.create_or_replace(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "privacy-operator-leader", "namespace": "default"},
        "spec": {"holderIdentity": "pod-z", "leaseDurationSeconds": 3600,
                 "renewTime": "2026-01-01T00:00:00.000000Z"}
    }))
    .expect("lease stored");
    let options = Options {
        health_addr: loopback(),
        metrics_addr: None,
        leader_election: Some(LeaseConfig {
            name: "privacy-operator-leader".into(),
            namespace: "default".into(),
            identity: "pod-b".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_millis(200),
        }),
    };
    let (bound_tx, bound_rx) = oneshot::channel::<Bound>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(runtime::run(
        client.clone(),
        controller_support::config(),
        Arc::new(SystemClock),
        options,
        async move {
            let _ = stop_rx.await;
        },
        Some(bound_tx),
    ));
    let health = bound_rx.await.expect("bound").health.expect("health");
    // Ready while standing by, so a rolling update with maxUnavailable 0 progresses.
    common::wait_for("ready", Duration::from_secs(10), || async {
        (get(health, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    stop_tx.send(()).expect("runtime listening");
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("shuts down")
        .expect("task")
        .expect("success");
    let lease = Api::<Lease>::namespaced(client, "default")
        .get("privacy-operator-leader")
        .await
        .expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("pod-z")
    );
}

async fn without_leader_election_the_process_leads_creates_its_salt_and_is_ready_once_synced() {
    let emu = common::start().await;
    install_crds(&emu);
    let client = common::client(&emu);
    let options = Options {
        health_addr: loopback(),
        metrics_addr: loopback(),
        leader_election: None,
    };
    let (bound_tx, bound_rx) = oneshot::channel::<Bound>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // The operator makes its salt Secret at first start (`--create-salt-secret`).
    let mut config = controller_support::config();
    config.salt = privacy_operator::controller::SaltSource::Secret {
        namespace: "default".into(),
        name: "subject-salt".into(),
        key: "salt".into(),
        create: true,
    };
    // A request already there: the request gauges count it once the cache has synced.
    emu.create_or_replace(json!({
        "apiVersion": "privacy-operator.dev/v1alpha1", "kind": "DataSubjectRequest",
        "metadata": {"name": "access-m", "namespace": "default"},
        "spec": {"type": "Access", "regulation": "GDPR",
                 "subject": {"identifiers": {"email": "m@example.com"}}}
    }))
    .expect("request created");
    let run = tokio::spawn(runtime::run(
        client.clone(),
        config,
        Arc::new(SystemClock),
        options,
        async move {
            let _ = stop_rx.await;
        },
        Some(bound_tx),
    ));
    let bound = bound_rx.await.expect("bound");
    let (health, metrics) = (bound.health.unwrap(), bound.metrics.unwrap());
    common::wait_for("ready", Duration::from_secs(10), || async {
        assert!(!run.is_finished(), "the runtime stopped early");
        (get(health, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    let (_, body) = get(metrics, "/metrics").await;
    assert!(
        body.lines().any(|l| l == "privacy_operator_leader 1"),
        "{body}"
    );
    let salt = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "default")
        .get("subject-salt")
        .await
        .expect("the operator created the salt Secret");
    let salt = salt.data.expect("data")["salt"].0.clone();
    assert_eq!(salt.len(), 64, "32 random bytes, hex");
    assert!(salt.iter().all(u8::is_ascii_hexdigit));
    // Fed from the controller's cache (recomputed every few seconds).
    common::wait_for("request gauge", Duration::from_secs(30), || async {
        let (_, body) = get(metrics, "/metrics").await;
        body.lines()
            .any(|l| {
                l.starts_with("privacy_operator_requests{")
                    && l.contains("type=\"Access\"")
                    && !l.ends_with(" 0")
            })
            .then_some(())
    })
    .await;
    stop_tx.send(()).expect("runtime listening");
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("shuts down")
        .expect("task")
        .expect("success");
    // No Lease without leader election.
    assert!(
        Api::<Lease>::namespaced(client, "default")
            .get_opt("privacy-operator-leader")
            .await
            .expect("get")
            .is_none()
    );
}
