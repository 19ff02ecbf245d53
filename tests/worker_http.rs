//! The HTTP connector against a local server playing the processor: it verifies every
//! signature, checks the bearer token, records idempotency keys and performs each deletion
//! once per key, and can be told to fail, throttle, answer asynchronously or never confirm.

#[path = "support/s3.rs"]
mod s3;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use privacy_operator::plan::JobStep;
use privacy_operator::worker::http::{self, Backoff, Options, sign};
use privacy_operator::worker::task::{Manifest, Outcome, Task};

const SECRET: &str = "whsec_3f9a1c";
const TOKEN: &str = "tok_live_81f2";
const EMAIL: &str = "jane.doe@example.com";
const EVENTS: &str = "{\"event\":\"open\",\"n\":1}\n{\"event\":\"click\",\"n\":2}\n";

/// How the processor answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// 200 completed at once.
    Sync,
    /// 202, then completed on the Nth status poll.
    AfterPolls(u32),
    /// 202 for ever.
    Never,
}

struct Job {
    id: String,
    polls: u32,
}

struct State {
    mode: Mode,
    /// Status codes to answer (in order) before handling anything.
    fail_first: Vec<u16>,
    /// Idempotency key of every POST, in order.
    keys: Vec<String>,
    /// Deletions performed, by idempotency key.
    jobs: BTreeMap<String, Job>,
    performed: u32,
    bad_signatures: u32,
    bad_tokens: u32,
    status_polls: u32,
    bodies: Vec<Value>,
    /// Status URL to hand out instead of our own (to test the origin check).
    status_url_override: Option<String>,
    /// Retry-After sent with a 429.
    retry_after: &'static str,
}

#[derive(Clone)]
struct Processor {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Processor {
    async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            mode,
            fail_first: Vec::new(),
            keys: Vec::new(),
            jobs: BTreeMap::new(),
            performed: 0,
            bad_signatures: 0,
            bad_tokens: 0,
            status_polls: 0,
            bodies: Vec::new(),
            status_url_override: None,
            retry_after: "0",
        }));
        let p = Processor { addr, state };
        let server = p.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        p
    }

    fn base_url(&self) -> String {
        format!("http://{}/privacy/v1", self.addr)
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let signature = header(sign::SIGNATURE_HEADER).unwrap_or_default();
        let key = header(sign::IDEMPOTENCY_HEADER).unwrap_or_default();
        let auth = header("authorization").unwrap_or_default();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let now = jiff::Timestamp::now().as_second();
        let mut s = self.state.lock().unwrap();
        // Downloads are served without checks, like a presigned URL.
        if path == "/files/events.ndjson" {
            return reply(StatusCode::OK, None, EVENTS.into());
        }
        if sign::verify(
            SECRET.as_bytes(),
            &signature,
            &body,
            now,
            sign::REPLAY_TOLERANCE_SECS,
        )
        .is_err()
        {
            s.bad_signatures += 1;
            return reply(
                StatusCode::UNAUTHORIZED,
                None,
                json!({"status": "failed", "error": {"code": "BadSignature"}}).to_string(),
            );
        }
        if auth != format!("Bearer {TOKEN}") {
            s.bad_tokens += 1;
            return reply(StatusCode::FORBIDDEN, None, String::new());
        }
        if !s.fail_first.is_empty() {
            let code = s.fail_first.remove(0);
            let retry_after = (code == 429).then_some(s.retry_after);
            return reply(
                StatusCode::from_u16(code).unwrap(),
                retry_after,
                String::new(),
            );
        }
        let mode = s.mode;
        let done = |j: &Job| match mode {
            Mode::Sync => true,
            Mode::AfterPolls(n) => j.polls >= n,
            Mode::Never => false,
        };
        let answer = |j: &Job, s: &State| {
            if done(j) {
                json!({
                    "status": "completed",
                    "reference": j.id,
                    "confirmation": {
                        "id": format!("del_{}", j.id),
                        "completedAt": "2026-11-23T12:00:00Z",
                        "evidence": {
                            "systemsPurged": ["mail", "analytics"],
                            "backupsExpireBy": "2027-02-21",
                            // A careless processor echoes the subject: must be dropped.
                            "note": format!("removed {EMAIL}")
                        }
                    },
                    "records": {"contacts": 1, "events": 40}
                })
            } else {
                let url = s
                    .status_url_override
                    .clone()
                    .unwrap_or_else(|| format!("/privacy/v1/requests/{}", j.id));
                json!({"status": "pending", "reference": j.id, "statusUrl": url})
            }
        };
        match (method.as_str(), path.as_str()) {
            ("POST", "/privacy/v1/erase") => {
                s.keys.push(key.clone());
                s.bodies.push(serde_json::from_slice(&body).unwrap());
                if !s.jobs.contains_key(&key) {
                    // The deletion happens here, once per idempotency key.
                    s.performed += 1;
                    let id = format!("req{}", s.jobs.len() + 1);
                    s.jobs.insert(key.clone(), Job { id, polls: 0 });
                }
                let j = &s.jobs[&key];
                let a = answer(j, &s);
                let code = if done(j) {
                    StatusCode::OK
                } else {
                    StatusCode::ACCEPTED
                };
                reply(code, None, a.to_string())
            }
            ("GET", p) if p.starts_with("/privacy/v1/requests/") => {
                s.status_polls += 1;
                let id = p.trim_start_matches("/privacy/v1/requests/").to_string();
                let Some(k) = s
                    .jobs
                    .iter()
                    .find(|(_, j)| j.id == id)
                    .map(|(k, _)| k.clone())
                else {
                    return reply(StatusCode::NOT_FOUND, None, String::new());
                };
                if let Some(j) = s.jobs.get_mut(&k) {
                    j.polls += 1;
                }
                let j = &s.jobs[&k];
                let a = answer(j, &s);
                reply(StatusCode::OK, None, a.to_string())
            }
            ("POST", "/privacy/v1/export") => {
                s.keys.push(key);
                let files = json!([{
                    "name": "events",
                    "url": format!("http://{}/files/events.ndjson", self.addr),
                    "sha256": hex::encode(Sha256::digest(EVENTS.as_bytes())),
                }]);
                let a = json!({
                    "status": "completed",
                    "data": {"contacts": [{"email": EMAIL, "plan": "pro"}]},
                    "files": files,
                });
                reply(StatusCode::OK, None, a.to_string())
            }
            _ => reply(StatusCode::NOT_FOUND, None, String::new()),
        }
    }
}

fn reply(code: StatusCode, retry_after: Option<&str>, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::builder()
        .status(code)
        .header("content-type", "application/json");
    if let Some(v) = retry_after {
        r = r.header("retry-after", v);
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

fn task(p: &Processor, step: JobStep, out: &std::path::Path, secret: &str, token: &str) -> Task {
    let v = json!({
        "version": privacy_operator::worker::task::CONTRACT_VERSION,
        "request": {"namespace": "shop", "name": "erase-42", "uid": "6c1e2d0a-uid",
            "digest": format!("sha256:{}", "ab".repeat(32))},
        "step": step,
        "system": {"name": "mailer", "spec": {
            "connector": {"type": "HTTP", "http": {
                "baseURL": p.base_url(),
                "hmacSecretRef": {"name": "mailer-hmac", "key": "secret"},
                "authSecretRef": {"name": "mailer-token", "key": "token"},
                "timeout": "10s",
                "pollInterval": "1s"
            }},
            "thirdParty": true,
            "vendor": {"name": "Acme Mailer Ltd", "contact": "privacy@acme-mailer.example"}
        }},
        "identifiers": {"email": EMAIL, "userId": "u-88123"},
        "webhook": {"hmacSecret": secret, "bearerToken": token},
        "output": out.to_str().unwrap(),
    });
    Task::from_json(&serde_json::to_vec(&v).unwrap()).unwrap()
}

fn fast() -> Options {
    Options {
        confirmation_window: Duration::from_secs(5),
        max_polls: 10,
        poll_interval: Some(Duration::from_millis(20)),
        timeout: Some(Duration::from_secs(5)),
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        },
    }
}

fn no_identifiers(m: &Manifest) {
    let text = serde_json::to_string(m).unwrap();
    for s in [EMAIL, "u-88123", SECRET, TOKEN] {
        assert!(!text.contains(s), "{s} leaked into the manifest: {text}");
    }
}

#[tokio::test]
async fn a_signed_purge_is_confirmed_with_evidence() {
    let p = Processor::start(Mode::Sync).await;
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let m = http::run_task(&t, &fast()).await;
    assert_eq!(m.outcome, Outcome::Succeeded, "{}", m.message);
    no_identifiers(&m);
    let c = m.confirmation.as_ref().expect("evidence");
    assert_eq!(c.status, "completed");
    assert_eq!(c.confirmation_id.as_deref(), Some("del_req1"));
    assert_eq!(c.reference.as_deref(), Some("req1"));
    assert_eq!(c.completed_at.as_deref(), Some("2026-11-23T12:00:00Z"));
    assert_eq!(c.calls, 1);
    assert_eq!(
        c.idempotency_key,
        sign::idempotency_key(&t.request, "mailer", JobStep::ThirdPartyPurge)
    );
    assert_eq!(
        c.evidence.get("systemsPurged"),
        Some(&json!(["mail", "analytics"]))
    );
    assert!(
        !c.evidence.contains_key("note"),
        "the echo of the subject is dropped"
    );
    assert_eq!(m.tables["events"].rows, 40);
    assert!(m.message.contains("del_req1"), "{}", m.message);
    // What the processor received: the contract's body, identifiers included (it needs them).
    p.with(|s| {
        assert_eq!(s.performed, 1);
        assert_eq!(s.bad_signatures, 0);
        let b = &s.bodies[0];
        assert_eq!(b["apiVersion"], http::WEBHOOK_VERSION);
        assert_eq!(b["operation"], "erase");
        assert_eq!(b["mode"], "purge");
        assert_eq!(b["requestId"], "6c1e2d0a-uid");
        assert_eq!(b["subject"]["identifiers"]["email"], EMAIL);
        assert_eq!(
            b["subject"]["digest"],
            format!("sha256:{}", "ab".repeat(32))
        );
        assert_eq!(b["thirdParty"], true);
    });
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_signature_check() {
    let p = Processor::start(Mode::Sync).await;
    let dir = tempfile::tempdir().unwrap();
    let t = task(
        &p,
        JobStep::ThirdPartyPurge,
        dir.path(),
        "not-the-secret",
        TOKEN,
    );
    let m = http::run_task(&t, &fast()).await;
    assert_eq!(m.outcome, Outcome::Failed);
    assert_eq!(m.reason.as_deref(), Some("AuthenticationFailed"));
    assert!(m.message.contains("hmacSecretRef"), "{}", m.message);
    assert!(m.message.contains("BadSignature"), "{}", m.message);
    p.with(|s| {
        assert_eq!(s.bad_signatures, 1, "no retry of a refused signature");
        assert_eq!(s.performed, 0);
    });
}

#[tokio::test]
async fn a_wrong_token_fails_clearly() {
    let p = Processor::start(Mode::Sync).await;
    let dir = tempfile::tempdir().unwrap();
    let t = task(
        &p,
        JobStep::ThirdPartyPurge,
        dir.path(),
        SECRET,
        "tok_wrong",
    );
    let m = http::run_task(&t, &fast()).await;
    assert_eq!(m.outcome, Outcome::Failed);
    assert_eq!(m.reason.as_deref(), Some("AuthenticationFailed"));
    assert!(m.message.contains("403"), "{}", m.message);
    assert!(m.message.contains("authSecretRef"), "{}", m.message);
    no_identifiers(&m);
    p.with(|s| assert_eq!((s.bad_tokens, s.performed), (1, 0)));
}

#[tokio::test]
async fn an_asynchronous_purge_is_polled_to_completion() {
    let p = Processor::start(Mode::AfterPolls(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let m = http::run_task(&t, &fast()).await;
    assert_eq!(m.outcome, Outcome::Succeeded, "{}", m.message);
    let c = m.confirmation.as_ref().unwrap();
    assert_eq!(c.calls, 4, "one POST and three polls");
    assert_eq!(c.confirmation_id.as_deref(), Some("del_req1"));
    p.with(|s| {
        assert_eq!(s.status_polls, 3);
        assert_eq!(s.performed, 1);
        assert_eq!(s.bad_signatures, 0, "polls are signed too");
    });
}

#[tokio::test]
async fn transient_errors_are_retried_with_the_same_key() {
    let p = Processor::start(Mode::Sync).await;
    p.with(|s| s.fail_first = vec![500, 503, 429, 502]);
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let m = http::run_task(&t, &fast()).await;
    assert_eq!(m.outcome, Outcome::Succeeded, "{}", m.message);
    assert_eq!(m.confirmation.as_ref().unwrap().calls, 5);
    p.with(|s| {
        assert_eq!(s.performed, 1);
        assert!(s.fail_first.is_empty());
    });
}

#[tokio::test]
async fn a_processor_that_stays_down_fails_within_the_timeout() {
    let p = Processor::start(Mode::Sync).await;
    p.with(|s| s.fail_first = vec![503; 10_000]);
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let options = Options {
        timeout: Some(Duration::from_millis(400)),
        ..fast()
    };
    let started = std::time::Instant::now();
    let m = http::run_task(&t, &options).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(m.outcome, Outcome::Failed);
    assert_eq!(m.reason.as_deref(), Some("ProcessorUnavailable"));
    assert!(m.message.contains("503"), "{}", m.message);
    p.with(|s| assert_eq!(s.performed, 0));
}

#[tokio::test]
async fn an_unreachable_processor_fails_clearly() {
    // Bind and drop: nothing listens on the port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let p = Processor {
        addr,
        state: Arc::new(Mutex::new(State {
            mode: Mode::Sync,
            fail_first: vec![],
            keys: vec![],
            jobs: BTreeMap::new(),
            performed: 0,
            bad_signatures: 0,
            bad_tokens: 0,
            status_polls: 0,
            bodies: vec![],
            status_url_override: None,
            retry_after: "0",
        })),
    };
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let options = Options {
        timeout: Some(Duration::from_millis(300)),
        ..fast()
    };
    let m = http::run_task(&t, &options).await;
    assert_eq!(
        m.reason.as_deref(),
        Some("ProcessorUnreachable"),
        "{}",
        m.message
    );
}

#[tokio::test]
async fn no_confirmation_ends_pending_and_the_rerun_deletes_nothing_twice() {
    let p = Processor::start(Mode::Never).await;
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let options = Options {
        max_polls: 2,
        ..fast()
    };
    let before = jiff::Timestamp::now();
    let first = http::run_task(&t, &options).await;
    assert_eq!(first.outcome, Outcome::Pending, "{}", first.message);
    assert_eq!(first.reason.as_deref(), Some("AwaitingConfirmation"));
    let at: jiff::Timestamp = first.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(at >= before + jiff::SignedDuration::from_secs(59), "{at}");
    let c = first.confirmation.as_ref().unwrap();
    assert_eq!(c.status, "pending");
    assert_eq!(c.reference.as_deref(), Some("req1"));
    no_identifiers(&first);
    // The Pending manifest round-trips through the manifest format.
    let back: Manifest = serde_json::from_slice(&serde_json::to_vec(&first).unwrap()).unwrap();
    assert_eq!(back, first);

    // Days later the processor has finished; the rerun asks again with the same key.
    p.with(|s| s.mode = Mode::Sync);
    let second = http::run_task(&t, &options).await;
    assert_eq!(second.outcome, Outcome::Succeeded, "{}", second.message);
    let c2 = second.confirmation.as_ref().unwrap();
    assert_eq!(c2.idempotency_key, c.idempotency_key);
    assert_eq!(c2.confirmation_id.as_deref(), Some("del_req1"));
    p.with(|s| {
        assert_eq!(s.keys.len(), 2);
        assert_eq!(
            s.keys[0], s.keys[1],
            "the rerun sends the same Idempotency-Key"
        );
        assert_eq!(s.performed, 1, "the processor deleted once");
        assert_eq!(s.status_polls, 2);
    });
}

#[tokio::test]
async fn another_request_gets_another_key() {
    let p = Processor::start(Mode::Sync).await;
    let dir = tempfile::tempdir().unwrap();
    let t1 = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let mut t2 = t1.clone();
    t2.request.uid = Some("another-uid".into());
    assert_eq!(
        http::run_task(&t1, &fast()).await.outcome,
        Outcome::Succeeded
    );
    assert_eq!(
        http::run_task(&t2, &fast()).await.outcome,
        Outcome::Succeeded
    );
    p.with(|s| {
        assert_ne!(s.keys[0], s.keys[1]);
        assert_eq!(s.performed, 2);
    });
}

#[tokio::test]
async fn a_status_url_on_another_host_is_refused() {
    let p = Processor::start(Mode::Never).await;
    p.with(|s| s.status_url_override = Some("http://attacker.example/steal".into()));
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let m = http::run_task(&t, &fast()).await;
    assert_eq!(m.outcome, Outcome::Failed);
    assert_eq!(m.reason.as_deref(), Some("ProcessorError"));
    assert!(m.message.contains("baseURL"), "{}", m.message);
}

#[tokio::test]
async fn an_export_writes_inline_and_downloaded_records() {
    let p = Processor::start(Mode::Sync).await;
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::Export, dir.path(), SECRET, TOKEN);
    let m = http::run_task(&t, &fast()).await;
    assert_eq!(m.outcome, Outcome::Succeeded, "{}", m.message);
    let files: BTreeMap<_, _> = m.files.iter().map(|f| (f.table.as_str(), f)).collect();
    assert_eq!(files["contacts"].records, 1);
    assert_eq!(files["events"].records, 2);
    let events = std::fs::read(dir.path().join("events.ndjson")).unwrap();
    assert_eq!(events, EVENTS.as_bytes());
    assert_eq!(files["events"].sha256, hex::encode(Sha256::digest(&events)));
    let contacts = std::fs::read_to_string(dir.path().join("contacts.ndjson")).unwrap();
    let row: Value = serde_json::from_str(contacts.trim()).unwrap();
    assert_eq!(
        row["email"], EMAIL,
        "exported data is the subject's, in the file"
    );
    assert_eq!(m.tables["contacts"].rows, 1);
    no_identifiers(&m);
}

/// Through the worker's own dispatch and manifest writing (default options; the processor
/// answers at once).
#[tokio::test]
async fn the_worker_runs_http_tasks() {
    let p = Processor::start(Mode::Sync).await;
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let task_file = dir.path().join("task.json");
    std::fs::write(&task_file, serde_json::to_vec(&t).unwrap()).unwrap();
    let m = privacy_operator::worker::run_file(&task_file)
        .await
        .unwrap();
    assert_eq!(m.outcome, Outcome::Succeeded);
    let written: Manifest =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(written, m);
    assert!(written.confirmation.is_some());
}

#[tokio::test]
async fn throttling_beyond_the_timeout_fails_as_rate_limited_at_once() {
    let p = Processor::start(Mode::Sync).await;
    p.with(|s| {
        s.fail_first = vec![429; 100];
        s.retry_after = "3600";
    });
    let dir = tempfile::tempdir().unwrap();
    let t = task(&p, JobStep::ThirdPartyPurge, dir.path(), SECRET, TOKEN);
    let started = std::time::Instant::now();
    let m = http::run_task(&t, &fast()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no waiting past the timeout"
    );
    assert_eq!(m.reason.as_deref(), Some("RateLimited"), "{}", m.message);
    assert!(m.message.contains("3600s"), "{}", m.message);
    p.with(|s| assert_eq!((s.fail_first.len(), s.performed), (99, 0)));
}

/// An export through the worker's dispatch lands in object storage like every connector's:
/// files first, manifest last, under the task's output prefix.
#[tokio::test]
async fn an_http_export_lands_in_object_storage() {
    let p = Processor::start(Mode::Sync).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = task(&p, JobStep::Export, dir.path(), SECRET, TOKEN);
    let target = s3::shared().target("operator");
    t.storage = target.clone();
    t.output = "exports/shop/access-7/mailer".into();
    let m = privacy_operator::worker::run_and_write(
        &t,
        &privacy_operator::worker::postgres::Options::default(),
    )
    .await
    .unwrap();
    assert_eq!(m.outcome, Outcome::Succeeded, "{}", m.message);
    let store = privacy_operator::storage::Store::open(&target)
        .unwrap()
        .child("exports/shop/access-7/mailer");
    let stored: Manifest =
        serde_json::from_slice(&store.get("manifest.json").await.unwrap().unwrap()).unwrap();
    assert_eq!(stored, m);
    for f in &m.files {
        let bytes = store
            .get(&f.path)
            .await
            .unwrap()
            .expect("file in the bucket");
        assert_eq!(f.sha256, hex::encode(Sha256::digest(&bytes)));
    }
    let events = store.get("events.ndjson").await.unwrap().unwrap();
    assert_eq!(&events[..], EVENTS.as_bytes());
}
