//! The example custom connector (examples/custom-connector/connector.py) honours the custom
//! image contract: it reads a task in our own format from $PRIVACY_OPERATOR_TASK, writes its
//! files and a manifest that parses as our `Manifest`, exits 0 only on success, and never
//! prints the subject's identifiers. Skipped (with a printed reason) without python3.

#[path = "support/s3.rs"]
mod s3;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use privacy_operator::plan::JobStep;
use privacy_operator::worker::task::{CONTRACT_VERSION, Manifest, Outcome, Task};

const EMAIL: &str = "jane.doe@example.com";

fn python() -> Option<PathBuf> {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| PathBuf::from("python3"))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/custom-connector/connector.py")
}

/// A task in the operator's format (built and serialised by our own types).
fn task(step: JobStep, out: &Path, extra: serde_json::Value) -> Task {
    let mut v = json!({
        "version": CONTRACT_VERSION,
        "request": {"namespace": "shop", "name": "erase-42", "uid": "uid-1",
            "digest": format!("sha256:{}", "cd".repeat(32))},
        "step": step,
        "system": {"name": "toy-erp", "spec": {
            "connector": {"type": "Custom", "custom": {
                "image": "registry.example.com/privacy/toy-erp-connector:0.1.0",
                "args": ["--data", "/var/lib/toy-erp/erp.json"]
            }}
        }},
        "identifiers": {"email": EMAIL},
        "output": out.to_str().unwrap(),
    });
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    Task::from_json(&serde_json::to_vec(&v).unwrap()).unwrap()
}

struct Run {
    code: i32,
    stderr: String,
    manifest: Option<Manifest>,
}

fn run(py: &Path, dir: &Path, data: &Path, t: &Task) -> Run {
    let task_file = dir.join("task.json");
    std::fs::write(&task_file, serde_json::to_vec(t).unwrap()).unwrap();
    let out = Command::new(py)
        .arg(script())
        .arg("--data")
        .arg(data)
        .env("PRIVACY_OPERATOR_TASK", &task_file)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !stderr.contains(EMAIL) && !stdout.contains(EMAIL),
        "the connector logged an identifier: {stderr}{stdout}"
    );
    let manifest = std::fs::read(Path::new(&t.output).join("manifest.json"))
        .ok()
        .map(|b| serde_json::from_slice::<Manifest>(&b).expect("the manifest parses as ours"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr,
        manifest,
    }
}

fn customers(data: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(data).unwrap()).unwrap();
    v["customers"].as_array().unwrap().clone()
}

#[test]
fn the_example_connector_exports_erases_and_reports_like_a_worker() {
    let Some(py) = python() else {
        eprintln!("skipped: python3 is not available to run examples/custom-connector");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("erp.json");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/custom-connector/erp.sample.json"),
        &data,
    )
    .unwrap();

    // Export: one file, listed with its count and checksum, manifest last.
    let out = dir.path().join("export");
    let r = run(
        &py,
        dir.path(),
        &data,
        &task(JobStep::Export, &out, json!({})),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = r.manifest.expect("a manifest");
    assert_eq!(
        (m.outcome, m.step, m.system.as_str()),
        (Outcome::Succeeded, JobStep::Export, "toy-erp")
    );
    assert_eq!(m.files.len(), 1);
    let f = &m.files[0];
    let bytes = std::fs::read(out.join(&f.path)).unwrap();
    assert_eq!(f.records, 1);
    assert_eq!(f.size, bytes.len() as u64);
    assert_eq!(f.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(m.tables["customers"].rows, 1);
    let row: serde_json::Value = serde_json::from_slice(bytes.trim_ascii_end()).unwrap();
    assert_eq!(row["id"], "c-1");

    // Soft delete, then purge with verification; the other customer is untouched.
    let out = dir.path().join("softdel");
    let r = run(
        &py,
        dir.path(),
        &data,
        &task(JobStep::SoftDelete, &out, json!({})),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(customers(&data)[0]["deleted_at"].is_string());
    let out = dir.path().join("purge");
    let r = run(
        &py,
        dir.path(),
        &data,
        &task(JobStep::Purge, &out, json!({})),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = r.manifest.unwrap();
    let v = m.verification.expect("purge evidence");
    assert!(v.passed);
    assert_eq!(v.remaining["customers"], 0);
    let left = customers(&data);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], "c-2");
    assert!(left[0]["deleted_at"].is_null());
}

#[test]
fn the_example_connector_fails_with_a_manifest_and_a_non_zero_exit() {
    let Some(py) = python() else {
        eprintln!("skipped: python3 is not available to run examples/custom-connector");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("erp.json");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/custom-connector/erp.sample.json"),
        &data,
    )
    .unwrap();
    // A step the connector does not implement.
    let out = dir.path().join("tp");
    let r = run(
        &py,
        dir.path(),
        &data,
        &task(JobStep::ThirdPartyPurge, &out, json!({})),
    );
    assert_eq!(r.code, 1);
    let m = r.manifest.unwrap();
    assert_eq!(m.outcome, Outcome::Failed);
    assert_eq!(m.reason.as_deref(), Some("Unsupported"));
    // The system is unreachable (no data file): a clear reason, nothing changed.
    let out = dir.path().join("missing");
    let r = run(
        &py,
        dir.path(),
        &dir.path().join("absent.json"),
        &task(JobStep::Purge, &out, json!({})),
    );
    assert_eq!(r.code, 1);
    assert_eq!(
        r.manifest.unwrap().reason.as_deref(),
        Some("DatabaseUnreachable")
    );
    // Restrict needs purposes; the task format says so, and the connector applies them.
    let out = dir.path().join("restrict");
    let t = task(
        JobStep::Restrict,
        &out,
        json!({"purposes": ["marketing-email"]}),
    );
    let r = run(&py, dir.path(), &data, &t);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        customers(&data)[0]["restricted"],
        json!(["marketing-email"])
    );
    assert!(
        customers(&data)[1]["restricted"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// The example's own S3 client (SigV4, standard library) against an S3 server that checks
/// signatures; the operator's store reads back what it wrote.
#[tokio::test]
async fn the_example_connector_writes_into_s3() {
    let Some(py) = python() else {
        eprintln!("skipped: python3 is not available to run examples/custom-connector");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("erp.json");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/custom-connector/erp.sample.json"),
        &data,
    )
    .unwrap();
    let server = s3::shared();
    let target = server.target("operator");
    let output = "exports/shop/access-7/toy-erp";
    let mut t = task(JobStep::Export, dir.path(), json!({}));
    t.storage = target.clone();
    t.output = output.into();
    let task_file = dir.path().join("task.json");
    std::fs::write(&task_file, serde_json::to_vec(&t).unwrap()).unwrap();
    let out = tokio::process::Command::new(&py)
        .arg(script())
        .arg("--data")
        .arg(&data)
        .env("PRIVACY_OPERATOR_TASK", &task_file)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains(EMAIL) && !stderr.contains(&server.secret_key),
        "{stderr}"
    );
    let store = privacy_operator::storage::Store::open(&target)
        .unwrap()
        .child(output);
    let bytes = store
        .get("manifest.json")
        .await
        .unwrap()
        .expect("manifest in the bucket");
    let m: Manifest = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m.outcome, Outcome::Succeeded);
    let f = &m.files[0];
    let data = store
        .get(&f.path)
        .await
        .unwrap()
        .expect("export file in the bucket");
    assert_eq!(f.sha256, hex::encode(Sha256::digest(&data)));
    assert_eq!(f.records, 1);
}

/// The example's DataSystem is a valid Custom DataSystem whose Job passes the task path in
/// the environment, never in args.
#[test]
fn the_example_datasystem_is_a_custom_system() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/custom-connector/datasystem.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with('#'),
        "start with a comment saying what it shows"
    );
    let ds: privacy_operator::api::DataSystem = serde_yaml_ng::from_str(&text).unwrap();
    let custom = ds
        .spec
        .connector
        .custom
        .as_ref()
        .expect("a custom connector");
    assert_eq!(
        ds.spec.connector.type_,
        privacy_operator::api::datasystem::ConnectorType::Custom
    );
    assert!(custom.args.iter().all(|a| !a.contains("task")));
    let dockerfile = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/custom-connector/Dockerfile"),
    )
    .unwrap();
    assert!(dockerfile.contains("USER 65532"), "runs as the worker UID");
}
