//! Raw HTTP behaviour: discovery documents, content negotiation (Table, aggregated discovery,
//! PartialObjectMetadata), headers (Audit-Id, Warning, Retry-After), fault injection and the
//! request log.

mod common;

use std::time::{Duration, Instant};

use emulator::{FaultKind, FaultRule};
use serde_json::json;

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents() {
    let emu = common::start().await;
    let v = common::raw(&emu, "GET", "/version", &[], "").await.json();
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("33"))
    );
    assert!(v["gitVersion"].as_str().unwrap().starts_with("v1.33."));
    for p in ["/healthz", "/readyz", "/livez"] {
        let r = common::raw(&emu, "GET", p, &[], "").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    let api = common::raw(&emu, "GET", "/api", &[], "").await.json();
    assert_eq!(api["versions"], json!(["v1"]));
    let core = common::raw(&emu, "GET", "/api/v1", &[], "").await.json();
    let ns = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "namespaces")
        .unwrap();
    assert_eq!(
        (ns["namespaced"].as_bool(), ns["shortNames"].clone()),
        (Some(false), json!(["ns"]))
    );
    let batch = common::raw(&emu, "GET", "/apis/batch/v1", &[], "")
        .await
        .json();
    let names: Vec<&str> = batch["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jobs", "jobs/status"]);

    // CRDs appear in discovery once established, and disappear with them.
    common::install_widget_crd(&emu);
    let groups = common::raw(&emu, "GET", "/apis", &[], "").await.json();
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "example.com")
    );
    let g = common::raw(&emu, "GET", "/apis/example.com", &[], "")
        .await
        .json();
    assert_eq!(g["preferredVersion"]["groupVersion"], "example.com/v1");
    let agg = common::raw(
        &emu,
        "GET",
        "/apis",
        &[(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )],
        "",
    )
    .await;
    assert_eq!(
        agg.header("content-type"),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    let agg = agg.json();
    let ex = agg["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "example.com")
        .unwrap();
    assert_eq!(
        ex["versions"][0]["resources"][0]["subresources"][0]["subresource"],
        "status"
    );
    let idx = common::raw(&emu, "GET", "/openapi/v3", &[], "")
        .await
        .json();
    assert!(idx["paths"].get("apis/example.com/v1").is_some(), "{idx}");
    assert_eq!(
        common::raw(&emu, "GET", "/apis/nope/v1", &[], "")
            .await
            .status,
        404
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_metadata_and_headers() {
    let emu = common::start().await;
    let table_accept = (
        "Accept",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
    );
    let t = common::raw(&emu, "GET", "/api/v1/namespaces", &[table_accept], "").await;
    assert!(t.header("audit-id").is_some());
    assert_eq!(t.header("content-type"), Some("application/json"));
    let t = t.json();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Status", "Age"]);
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");

    common::install_widget_crd(&emu);
    let body = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1, "bogus": 1}}).to_string();
    let created = common::raw(
        &emu,
        "POST",
        "/apis/example.com/v1/namespaces/default/widgets",
        &[JSON],
        &body,
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.header("warning"),
        Some("299 - \"unknown field \\\"spec.bogus\\\"\"")
    );
    let t = common::raw(
        &emu,
        "GET",
        "/apis/example.com/v1/namespaces/default/widgets?includeObject=Object",
        &[table_accept],
        "",
    )
    .await
    .json();
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Color", "Phase", "Age"]);
    assert_eq!(t["rows"][0]["cells"][1], "red");
    assert_eq!(t["rows"][0]["object"]["kind"], "Widget");

    let meta = common::raw(
        &emu,
        "GET",
        "/api/v1/namespaces",
        &[(
            "Accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )],
        "",
    )
    .await
    .json();
    assert_eq!(meta["kind"], "PartialObjectMetadataList");

    // Errors are metav1.Status.
    let bad = common::raw(
        &emu,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[JSON],
        r#"{"metadata":{"name":"x","namespace":"other"}}"#,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.json()["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_request_log() {
    let emu = common::start().await;
    let cm = |n: &str| json!({"metadata": {"name": n}}).to_string();
    emu.faults().add_rule(
        FaultRule::new(FaultKind::TooManyRequests {
            retry_after_seconds: 3,
        })
        .every_nth(2)
        .writes_only()
        .resource("configmaps"),
    );
    let a = common::raw(
        &emu,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[JSON],
        &cm("a"),
    )
    .await;
    let b = common::raw(
        &emu,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[JSON],
        &cm("b"),
    )
    .await;
    assert_eq!((a.status, b.status), (201, 429));
    assert_eq!(b.header("retry-after"), Some("3"));
    assert_eq!(b.json()["details"]["retryAfterSeconds"], 3);
    // Reads and other resources are untouched.
    assert_eq!(
        common::raw(
            &emu,
            "GET",
            "/api/v1/namespaces/default/configmaps",
            &[],
            ""
        )
        .await
        .status,
        200
    );
    emu.faults().clear();

    emu.faults().add_rule(
        FaultRule::new(FaultKind::InternalError)
            .every_nth(1)
            .max_failures(1),
    );
    assert_eq!(
        common::raw(&emu, "GET", "/api/v1/namespaces", &[], "")
            .await
            .status,
        500
    );
    assert_eq!(
        common::raw(&emu, "GET", "/api/v1/namespaces", &[], "")
            .await
            .status,
        200
    );

    emu.faults().set_latency(Duration::from_millis(150));
    let start = Instant::now();
    common::raw(&emu, "GET", "/api/v1/namespaces", &[], "").await;
    assert!(start.elapsed() >= Duration::from_millis(150));
    emu.faults().clear();

    // In-process writes are neither faulted nor logged.
    emu.faults()
        .add_rule(FaultRule::new(FaultKind::InternalError).every_nth(1));
    emu.create_or_replace(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inproc", "namespace": "default"}})).unwrap();
    emu.faults().clear();

    let log = emu.request_log();
    let writes = log.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(
        (
            writes[0].verb.as_str(),
            writes[0].resource.as_str(),
            writes[0].namespace.as_str()
        ),
        ("create", "configmaps", "default")
    );
    assert_eq!(writes[1].status, 429);
    assert!(
        log.entries()
            .iter()
            .any(|r| r.verb == "list" && r.resource == "namespaces")
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_watch_streams() {
    let emu = common::start().await;
    let addr = emu.addr();
    let watch = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET /api/v1/namespaces?watch=true HTTP/1.1\r\nHost: {addr}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });
    common::wait_for("watch registered", Duration::from_secs(5), || async {
        emu.request_log()
            .entries()
            .iter()
            .any(|r| r.verb == "watch")
            .then_some(())
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), emu.shutdown())
        .await
        .expect("shutdown completes");
    let text = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("watch ends")
        .unwrap();
    assert!(text.contains("\"type\":\"ADDED\""), "{text}");
}
