//! No identifier leaks: the subject's identifiers reach the task Secrets and nothing else —
//! not status, Events, Job specs or the controller's logs (captured at trace level).

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "controller_support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::{core::v1::Event as CoreEvent, events::v1::Event};
use kube::api::{Api, ListParams};
use serde_json::json;
use support::{Bench, EMAIL, data_system, request};

/// Log lines written by the controller during the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const USER_ID: &str = "user-88123";
const PHONE: &str = "+4915112345678";
const NEW_NAME: &str = "Doe-Smith";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_never_leave_the_task_secrets() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("privacy_operator=trace,kube=debug,kube_runtime=debug,info")
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();

    let bench = Bench::start().await;
    bench.put(data_system("crm", false));
    bench.put(data_system("mailer", true));
    // The subject of one request comes from a Secret, a rectified value too.
    bench.put(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "subject-7"},
        "stringData": {"email": EMAIL, "phone": PHONE}
    }));
    bench.put(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "new-name"},
        "stringData": {"value": NEW_NAME}
    }));
    bench.put(request("access-l", "Access"));
    bench.put(request("erase-l", "Erasure"));
    let mut rect = request("rect-l", "Rectification");
    rect["spec"]["subject"] = json!({"secretRef": {"name": "subject-7"}});
    rect["spec"]["rectification"] = json!({"changes": [
        {"field": "last_name", "system": "crm", "valueFrom": {"name": "new-name", "key": "value"}}
    ]});
    bench.put(rect);
    // A request whose subject Secret is missing reports it without naming anyone.
    let mut missing = request("access-missing", "Access");
    missing["spec"]["subject"] = json!({"secretRef": {"name": "nobody"}});
    bench.put(missing);

    for j in bench.wait_jobs("access-l", "export", 1).await {
        bench.finish_job(&j, true);
    }
    for j in bench.wait_jobs("erase-l", "soft-delete", 1).await {
        bench.finish_job(&j, true);
    }
    for j in bench.wait_jobs("erase-l", "third-party-purge", 1).await {
        bench.finish_job(&j, true);
    }
    for j in bench.wait_jobs("rect-l", "rectify", 1).await {
        bench.finish_job(&j, true);
    }
    bench.wait_condition("access-l", "Ready", "True").await;
    bench.wait_condition("erase-l", "SoftDeleted", "True").await;
    bench.wait_condition("rect-l", "Ready", "True").await;
    let r = bench
        .wait_condition("access-missing", "Accepted", "False")
        .await;
    assert_eq!(
        support::condition(&r, "Accepted").unwrap().1,
        "SubjectSecretNotFound"
    );
    // Fail one Job, so failure paths log and record too.
    bench.advance_days(15);
    for j in bench.wait_jobs("erase-l", "purge", 1).await {
        bench.finish_job(&j, false);
    }
    bench.wait_condition("erase-l", "Purged", "False").await;
    bench.resync_rounds(2).await;

    // The identifiers are where they belong: in the task Secrets.
    let secret = bench
        .secrets_api()
        .get("rect-l-crm-rectify-1")
        .await
        .unwrap();
    let task = String::from_utf8(secret.data.unwrap()["task.json"].0.clone()).unwrap();
    assert!(
        task.contains(EMAIL) && task.contains(NEW_NAME),
        "the scan looks for the right strings"
    );

    let mut haystack = String::new();
    for r in bench.requests().list(&ListParams::default()).await.unwrap() {
        haystack.push_str(&serde_json::to_string(&r.status).unwrap());
        haystack.push_str(&serde_json::to_string(&r.metadata).unwrap());
    }
    for j in bench.jobs_api().list(&ListParams::default()).await.unwrap() {
        haystack.push_str(&serde_json::to_string(&j).unwrap());
    }
    let events: Vec<Event> = Api::namespaced(bench.client.clone(), support::NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(!events.is_empty(), "the controller records Events");
    haystack.push_str(&serde_json::to_string(&events).unwrap());
    let core: Vec<CoreEvent> = Api::namespaced(bench.client.clone(), support::NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    haystack.push_str(&serde_json::to_string(&core).unwrap());
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logged.contains("created worker Job"),
        "logs were captured: {logged}"
    );
    haystack.push_str(&logged);

    for secret in [EMAIL, USER_ID, PHONE, NEW_NAME, "jane.doe"] {
        assert!(
            !haystack.contains(secret),
            "{secret} leaked: ...{}...",
            context(&haystack, secret)
        );
    }
}

fn context(haystack: &str, needle: &str) -> String {
    let at = haystack.find(needle).unwrap_or(0);
    let start = haystack[..at]
        .char_indices()
        .rev()
        .nth(200)
        .map_or(0, |(i, _)| i);
    haystack[start..].chars().take(400).collect()
}
