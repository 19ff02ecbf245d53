//! The export bundle end to end: the controller (against the emulator, the test playing the
//! Job controller) dispatches the export Job, the real worker runs it in-process against a
//! real PostgreSQL with the CRM fixture and writes into a real S3 server (s3s-fs), and the
//! controller reads the worker's manifest, writes the bundle manifest last and records it in
//! status with a presigned download link that works.

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "support/postgres.rs"]
mod pg_support;
#[path = "support/s3.rs"]
mod s3;
#[path = "controller_support/mod.rs"]
mod support;

use std::io::Read;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Secret;
use privacy_operator::api::DataSubjectRequest;
use privacy_operator::api::request::{ExportFormat, RequestPhase};
use privacy_operator::controller::export::Bundle;
use privacy_operator::storage::StorageTarget;
use privacy_operator::worker::postgres::Options;
use privacy_operator::worker::task::{Manifest, Outcome, Task};
use privacy_operator::worker::{self, MANIFEST_FILE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Bench, NS, data_system, request};

/// Contact 7 of tests/fixtures/crm: 22 rows across 9 tables.
const SUBJECT: &str = "contact7@example.com";
const DB: &str = "export_bundle";

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm")
}

/// The CRM database, loaded once per test binary (exports only read it).
fn crm_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let pg = pg_support::shared();
        pg.psql("postgres", &format!("CREATE DATABASE {DB}"));
        pg.psql_file(DB, &fixtures().join("schema.sql"));
        pg.psql_file(DB, &fixtures().join("data.sql"));
        pg.url(DB)
    })
}

/// A bench whose controller keeps its object storage in `storage`.
async fn bench(storage: StorageTarget) -> Bench {
    let mut config = support::config();
    config.storage = Some(storage);
    let bench = Bench::start_with(config).await;
    let yaml = std::fs::read_to_string(fixtures().join("datasystem.yaml")).unwrap();
    let spec: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    bench.put(json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSystem",
        "metadata": {"name": "crm"},
        "spec": spec,
    }));
    bench.put(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "crm-db"},
        "stringData": {"url": crm_url()},
    }));
    // Integration data: held by a vendor, listed in the bundle instead of exported.
    bench.put(data_system("mailer", true));
    bench
}

fn access(name: &str, recipient: Option<&str>) -> Value {
    let mut r = request(name, "Access");
    r["spec"]["subject"]["identifiers"] = json!({"email": SUBJECT});
    if let Some(rcpt) = recipient {
        r["spec"]["export"] = json!({"format": "NDJSON", "recipient": rcpt});
    }
    r
}

/// Plays the export Job: runs the real worker on the task from the Job's Secret.
async fn run_export_job(bench: &Bench, request: &str) -> (Task, Manifest) {
    let jobs = bench.wait_jobs(request, "export", 1).await;
    let job = &jobs[0];
    let secret: Secret = common::wait_for(
        &format!("task Secret of {job}"),
        support::DEADLINE,
        || async { bench.secrets_api().get_opt(job).await.ok().flatten() },
    )
    .await;
    let bytes = &secret.data.as_ref().unwrap()["task.json"].0;
    let task = Task::from_json(bytes).unwrap();
    assert_eq!(task.output, format!("exports/{NS}/{request}/crm"));
    let manifest = worker::run_and_write(&task, &Options::default())
        .await
        .unwrap();
    assert_eq!(manifest.outcome, Outcome::Succeeded, "{manifest:#?}");
    (task, manifest)
}

async fn download(url: &str) -> bytes::Bytes {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.bytes().await.unwrap()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Downloads the bundle through status.export.downloadURL and every file through its URL,
/// checking every checksum. Returns the bundle and the files' bytes by bundle path.
async fn fetch_bundle(r: &DataSubjectRequest) -> (Bundle, Vec<(String, Vec<u8>)>) {
    let export = r.status.as_ref().unwrap().export.clone().unwrap();
    let manifest = download(export.download_url.as_deref().unwrap()).await;
    assert_eq!(export.sha256.as_deref(), Some(sha(&manifest).as_str()));
    let bundle: Bundle = serde_json::from_slice(&manifest).unwrap();
    let mut files = Vec::new();
    let mut size = manifest.len() as u64;
    for f in bundle.systems.iter().flat_map(|s| &s.files) {
        let bytes = download(&f.url).await;
        assert_eq!(f.sha256, sha(&bytes), "{}", f.path);
        assert_eq!(f.size, bytes.len() as u64);
        size += f.size;
        files.push((f.path.clone(), bytes.to_vec()));
    }
    assert_eq!(
        export.size,
        Some(size as i64),
        "bundle size is files plus manifest"
    );
    (bundle, files)
}

fn lines(b: &[u8]) -> u64 {
    b.iter().filter(|c| **c == b'\n').count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_bundle_lands_in_s3_with_checksums_and_a_working_download_link() {
    let target = s3::shared().target("operator");
    let bench = bench(target).await;
    bench.put(access("bundle-a", None));
    let (_, manifest) = run_export_job(&bench, "bundle-a").await;
    bench.mark_job("bundle-a-crm-export-1", true);
    let r = bench.wait_condition("bundle-a", "Ready", "True").await;
    let status = r.status.clone().unwrap();
    assert_eq!(status.phase, Some(RequestPhase::Completed));
    let export = status.export.clone().unwrap();
    assert_eq!(
        export.location.as_deref(),
        Some("s3://privacy/operator/exports/default/bundle-a/manifest.json")
    );
    assert_eq!(export.records, Some(22));
    assert_eq!(export.format, Some(ExportFormat::Ndjson));
    assert!(!export.encrypted);
    assert!(export.expires_at.is_some());
    assert!(export.download_url_expires_at.is_some());
    let crm = status.systems.iter().find(|s| s.name == "crm").unwrap();
    assert_eq!(
        crm.records,
        Some(22),
        "records come from the worker's manifest"
    );

    let (bundle, files) = fetch_bundle(&r).await;
    assert_eq!(bundle.records, 22);
    assert!(!bundle.encrypted);
    assert_eq!(bundle.systems.len(), 1);
    assert_eq!(bundle.systems[0].files.len(), manifest.files.len());
    for f in &bundle.systems[0].files {
        let (_, bytes) = files.iter().find(|(p, _)| p == &f.path).unwrap();
        assert_eq!(lines(bytes), f.records, "{}", f.path);
    }
    assert_eq!(bundle.integration_data.len(), 1);
    assert_eq!(bundle.integration_data[0].system, "mailer");
    assert_eq!(
        bundle.integration_data[0].vendor.as_deref(),
        Some("Acme Mailer Ltd")
    );
    // The exported contact is the database's row, byte for byte.
    let (_, contacts) = files
        .iter()
        .find(|(p, _)| p == "crm/crm.contacts.ndjson")
        .unwrap();
    let row =
        pg_support::shared().psql(DB, "SELECT row_to_json(t) FROM crm.contacts t WHERE id = 7");
    assert_eq!(String::from_utf8_lossy(contacts).trim_end(), row);

    // Nothing left to do: reconciles (which read the worker's manifest) write nothing.
    bench.assert_quiet_resync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_bundle_decrypts_to_the_same_rows() {
    let target = s3::shared().target("operator");
    let bench = bench(target).await;
    bench.put(access("plain-b", None));
    run_export_job(&bench, "plain-b").await;
    bench.mark_job("plain-b-crm-export-1", true);
    let plain = bench.wait_condition("plain-b", "Ready", "True").await;
    let (_, plain_files) = fetch_bundle(&plain).await;

    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    bench.put(access("sealed-b", Some(&recipient)));
    let (task, _) = run_export_job(&bench, "sealed-b").await;
    assert_eq!(task.recipient.as_deref(), Some(recipient.as_str()));
    bench.mark_job("sealed-b-crm-export-1", true);
    let sealed = bench.wait_condition("sealed-b", "Ready", "True").await;
    assert!(
        sealed
            .status
            .as_ref()
            .unwrap()
            .export
            .as_ref()
            .unwrap()
            .encrypted
    );
    let (bundle, sealed_files) = fetch_bundle(&sealed).await;
    assert!(bundle.encrypted);
    assert_eq!(bundle.recipient.as_deref(), Some(recipient.as_str()));
    assert_eq!(sealed_files.len(), plain_files.len());
    for (path, bytes) in &sealed_files {
        let clear_path = path
            .strip_suffix(".age")
            .expect("encrypted files end in .age");
        let mut clear = Vec::new();
        age::Decryptor::new(&bytes[..])
            .unwrap()
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut clear)
            .unwrap();
        let (_, expected) = plain_files.iter().find(|(p, _)| p == clear_path).unwrap();
        assert_eq!(&clear, expected, "{path}");
        assert!(
            !bytes
                .windows(SUBJECT.len())
                .any(|w| w == SUBJECT.as_bytes())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_publishes_no_bundle_until_it_is_back() {
    let root = tempfile::tempdir().unwrap();
    let mut server = s3::S3::start_in(root.path(), None);
    let port = server.port;
    let target = server.target("operator").with_option("max_retries", "0");
    let bench = bench(target).await;
    bench.put(access("down-c", None));
    run_export_job(&bench, "down-c").await;
    let bucket = root
        .path()
        .join(s3::BUCKET)
        .join("operator/exports/default/down-c");
    assert!(bucket.join("crm").join(MANIFEST_FILE).exists());

    server.stop();
    bench.mark_job("down-c-crm-export-1", true);
    // The controller sees the Job finish, cannot read the worker's manifest, and retries.
    bench.resync_rounds(2).await;
    let r = bench.requests().get("down-c").await.unwrap();
    let status = r.status.unwrap_or_default();
    assert_ne!(status.phase, Some(RequestPhase::Completed));
    assert!(
        status
            .export
            .as_ref()
            .and_then(|e| e.location.as_ref())
            .is_none()
    );
    assert!(
        !bucket.join(MANIFEST_FILE).exists(),
        "no bundle manifest while storage is down"
    );

    // Back on the same port with the same data: the bundle is assembled.
    let _server = s3::S3::start_in(root.path(), Some(port));
    let r = bench.wait_condition("down-c", "Ready", "True").await;
    assert!(bucket.join(MANIFEST_FILE).exists());
    fetch_bundle(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_storage_access_requests_are_refused_clearly() {
    let mut config = support::config();
    config.storage = None;
    let bench = Bench::start_with(config).await;
    bench.put(data_system("files", false));
    bench.put(access("nostore-d", None));
    let r = bench.wait_condition("nostore-d", "Accepted", "False").await;
    let (status, reason) = support::condition(&r, "Accepted").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "StorageNotConfigured")
    );
    assert!(bench.job_names("nostore-d").await.is_empty());
}
