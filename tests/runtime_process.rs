//! Real `privacy-operator run` processes against the emulator, as two replicas of the
//! Deployment would run: one leads, a killed leader is replaced within the lease duration, a
//! SIGTERM hands the lease over at once, and a leader that loses its lease exits non-zero.

#[path = "../emulator/tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use emulator::EmulatorHandle;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const LEASE: &str = "privacy-operator-leader";

struct Replica {
    name: &'static str,
    child: Child,
    metrics: SocketAddr,
    health: SocketAddr,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn start(kubeconfig: &Path, name: &'static str, lease_duration: &str) -> Replica {
    let (metrics, health) = (free_addr(), free_addr());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_privacy-operator"));
    // Only what this test sets: nothing from the environment that runs the tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("PRIVACY_OPERATOR_") || k == "POD_NAME" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", name)
        .env("PRIVACY_OPERATOR_LEADER_ELECT", "true")
        .env("PRIVACY_OPERATOR_LEASE_NAME", LEASE)
        .env("PRIVACY_OPERATOR_LEASE_NAMESPACE", "default")
        .env("PRIVACY_OPERATOR_LEASE_DURATION", lease_duration)
        .env("PRIVACY_OPERATOR_RENEW_DEADLINE", "1500ms")
        .env("PRIVACY_OPERATOR_RETRY_PERIOD", "200ms")
        .env("PRIVACY_OPERATOR_METRICS_ADDR", metrics.to_string())
        .env("PRIVACY_OPERATOR_HEALTH_ADDR", health.to_string())
        .env("PRIVACY_OPERATOR_LOG_LEVEL", "warn")
        .args([
            "run",
            "--worker-image",
            "privacy-operator:test",
            "--salt",
            "runtime-process-test-salt-0123456789",
            "--namespace",
            "default",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    Replica {
        name,
        child: cmd.spawn().expect("operator starts"),
        metrics,
        health,
    }
}

/// One HTTP/1.1 GET: (status, body); `None` while nothing listens.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

async fn leader_gauge(r: &Replica) -> Option<i64> {
    let (_, body) = get(r.metrics, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix("privacy_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
}

async fn holder(client: &kube::Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), "default")
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("still running");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "SIGTERM sent");
}

struct Cluster {
    emu: EmulatorHandle,
    client: kube::Client,
    dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let emu = common::start().await;
    for crd in privacy_operator::api::crds() {
        emu.create_or_replace(serde_json::to_value(&crd).unwrap())
            .expect("CRD installs");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    emu.write_kubeconfig(dir.path().join("kubeconfig"))
        .expect("kubeconfig");
    let client = common::client(&emu);
    Cluster { emu, client, dir }
}

/// Waits for one of `replicas` to hold the lease; returns (leader, standby) indices.
async fn elected(client: &kube::Client, replicas: &[Replica]) -> (usize, usize) {
    let holder = common::wait_for("a leader", Duration::from_secs(30), || async {
        holder(client).await.filter(|h| !h.is_empty())
    })
    .await;
    let leader = replicas
        .iter()
        .position(|r| r.name == holder)
        .expect("a replica holds the lease");
    (leader, 1 - leader)
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_lease_duration() {
    let c = cluster().await;
    let kubeconfig = c.dir.path().join("kubeconfig");
    let mut replicas = vec![
        start(&kubeconfig, "pod-a", "3s"),
        start(&kubeconfig, "pod-b", "3s"),
    ];
    let (leader, standby) = elected(&c.client, &replicas).await;
    // Both are ready (the standby too); only the leader says it leads.
    for r in &replicas {
        common::wait_for("ready", Duration::from_secs(20), || async {
            (get(r.health, "/readyz").await?.0 == 200).then_some(())
        })
        .await;
    }
    common::wait_for("leader gauges", Duration::from_secs(20), || async {
        let l = leader_gauge(&replicas[leader]).await?;
        let s = leader_gauge(&replicas[standby]).await?;
        (l == 1 && s == 0).then_some(())
    })
    .await;

    replicas[leader].child.kill().await.expect("SIGKILL");
    let killed = tokio::time::Instant::now();
    let standby_name = replicas[standby].name;
    common::wait_for(
        "the standby to take over",
        Duration::from_secs(15),
        || async { (holder(&c.client).await.as_deref() == Some(standby_name)).then_some(()) },
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(3) + Duration::from_millis(1500),
        "took over after {took:?}"
    );
    common::wait_for(
        "the new leader's gauge",
        Duration::from_secs(10),
        || async { (leader_gauge(&replicas[standby]).await? == 1).then_some(()) },
    )
    .await;
    drop(c.emu);
}

#[tokio::test]
async fn sigterm_releases_the_lease_to_the_standby_at_once_and_exits_zero() {
    let c = cluster().await;
    let kubeconfig = c.dir.path().join("kubeconfig");
    // A long lease: a takeover well inside it can only come from the release.
    let mut replicas = vec![
        start(&kubeconfig, "pod-a", "30s"),
        start(&kubeconfig, "pod-b", "30s"),
    ];
    let (leader, standby) = elected(&c.client, &replicas).await;
    common::wait_for("the standby running", Duration::from_secs(20), || async {
        (get(replicas[standby].health, "/readyz").await?.0 == 200).then_some(())
    })
    .await;

    sigterm(&replicas[leader].child);
    let stopped = tokio::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(20), replicas[leader].child.wait())
        .await
        .expect("exits within the grace period")
        .expect("status");
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let standby_name = replicas[standby].name;
    common::wait_for(
        "the standby to take over",
        Duration::from_secs(10),
        || async { (holder(&c.client).await.as_deref() == Some(standby_name)).then_some(()) },
    )
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "handover took {:?}",
        stopped.elapsed()
    );
    drop(c.emu);
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_exits_non_zero() {
    let c = cluster().await;
    let kubeconfig = c.dir.path().join("kubeconfig");
    let mut replicas = vec![start(&kubeconfig, "pod-a", "30s")];
    elected(&c.client, &replicas).await;
    // Another holder appears in the Lease (e.g. after a partition healed).
    c.emu
        .create_or_replace(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": "default"},
            "spec": {"holderIdentity": "pod-z", "leaseDurationSeconds": 3600,
                     "renewTime": "2026-01-01T00:00:00.000000Z"}
        }))
        .expect("lease rewritten");
    let status = tokio::time::timeout(Duration::from_secs(20), replicas[0].child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(!status.success(), "lost leadership exits non-zero");
    assert_eq!(holder(&c.client).await.as_deref(), Some("pod-z"));
}
