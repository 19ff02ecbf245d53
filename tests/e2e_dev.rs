//! End to end through `privacy-operator dev --with-sample-data`, as a person runs it: the real
//! binary (emulator, controller, local job runner, worker subprocesses, local object store,
//! the sample SQLite CRM) and the real kubectl. Every wait is on a condition with a deadline
//! (`kubectl wait` or a polled check), never a sleep.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use sha2::{Digest, Sha256};

const JANE: &str = "jane.doe@example.com";
const JOHN: &str = "john.roe@example.com";
/// The sample tables that hang off a contact (Cascade) and are erased with it.
const OWNED: [&str; 7] = [
    "notes", "calls", "sms", "tasks", "tickets", "consents", "contacts",
];
const WAIT: &str = "--timeout=120s";

fn kubectl_binary(minor: u32) -> PathBuf {
    let p = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}"));
    if p.exists() {
        p
    } else {
        PathBuf::from("kubectl")
    }
}

fn repo(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

/// One `privacy-operator dev` process on a data dir.
struct Dev {
    child: Option<Child>,
    data: PathBuf,
    /// What it printed once ready.
    banner: Vec<String>,
}

impl Dev {
    fn start(data: &Path) -> Dev {
        std::fs::create_dir_all(data).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_privacy-operator"))
            .args([
                "dev",
                "--with-sample-data",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data)
            .env("PRIVACY_OPERATOR_LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("privacy-operator dev starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut banner = Vec::new();
        let end = Instant::now() + Duration::from_secs(60);
        // The banner ends with the last command to try.
        while !banner
            .last()
            .is_some_and(|l: &String| l.contains("kubectl describe"))
        {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => banner.push(line),
                Err(_) => panic!("dev did not print its banner within 60s: {banner:#?}"),
            }
        }
        Dev {
            child: Some(child),
            data: std::fs::canonicalize(data).expect("absolute data dir"),
            banner,
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }

    fn database(&self) -> PathBuf {
        self.data.join("sample/crm.db")
    }

    /// kubectl of `minor` against this dev; returns (success, stdout+stderr).
    fn kubectl_v(&self, minor: u32, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        use std::io::Write as _;
        let mut child = Command::new(kubectl_binary(minor))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.data.with_extension(format!("kubectl-cache-{minor}")))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("stdin written");
        }
        let out = child.wait_with_output().expect("kubectl output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl_v(33, args, None);
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{}", self.log_tail());
        out
    }

    fn apply(&self, yaml: &str) {
        let (ok, out) = self.kubectl_v(33, &["apply", "-f", "-"], Some(yaml));
        assert!(ok, "kubectl apply failed:\n{out}\n{yaml}");
    }

    fn get(&self, what: &str) -> Value {
        serde_json::from_str(&self.kubectl(&["get", what, "-o", "json"])).expect("JSON")
    }

    /// `kubectl wait` for `condition` on a request, failing with its status and the log.
    fn wait(&self, request: &str, condition: &str) {
        let target = format!("dsr/{request}");
        let (ok, out) = self.kubectl_v(33, &["wait", condition, &target, WAIT], None);
        if !ok {
            let status = self.kubectl_v(33, &["get", &target, "-o", "yaml"], None).1;
            panic!(
                "kubectl wait {condition} {target}: {out}\n{status}\n{}",
                self.log_tail()
            );
        }
    }

    /// Waits until the emulator's state file holds the request with condition `type_` True.
    fn wait_persisted(&self, request: &str, type_: &str) {
        let file = self.data.join("emulator-state.json");
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let saved = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|doc| {
                    doc["objects"].as_array().is_some_and(|objects| {
                        objects.iter().any(|o| {
                            let o = &o["object"];
                            o["kind"] == "DataSubjectRequest"
                                && o["metadata"]["name"] == request
                                && o["status"]["conditions"].as_array().is_some_and(|cs| {
                                    cs.iter()
                                        .any(|c| c["type"] == type_ && c["status"] == "True")
                                })
                        })
                    })
                });
            if saved {
                return;
            }
            assert!(
                Instant::now() < end,
                "the state file never held {request} with {type_}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL: no shutdown at all.
    fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL sent");
            c.wait().expect("dev reaped");
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A read-only look at the sample CRM.
fn db(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("sample db opens")
}

fn scalar(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The subject's contact id (it is known before an erasure).
fn contact_id(conn: &Connection, email: &str) -> i64 {
    scalar(
        conn,
        &format!("SELECT id FROM contacts WHERE email = '{email}'"),
    )
}

/// The ids of the contact's rows per owned table (call recordings through its calls), taken
/// before an erasure so that later counts cannot miss orphans.
fn subject_ids(conn: &Connection, contact: i64) -> BTreeMap<&'static str, Vec<i64>> {
    let mut out = BTreeMap::new();
    let ids = |sql: String| -> Vec<i64> {
        let mut stmt = conn.prepare(&sql).expect("query");
        stmt.query_map([], |r| r.get(0))
            .expect("rows")
            .map(|r| r.expect("id"))
            .collect()
    };
    for t in OWNED {
        let key = if t == "contacts" { "id" } else { "contact_id" };
        out.insert(
            t,
            ids(format!(
                "SELECT id FROM {t} WHERE {key} = {contact} ORDER BY id"
            )),
        );
    }
    out.insert(
        "call_recordings",
        ids(format!(
            "SELECT id FROM call_recordings WHERE call_id IN (SELECT id FROM calls WHERE contact_id = {contact}) ORDER BY id"
        )),
    );
    out
}

/// Of the rows `ids` names, per table: (still there, soft-deleted).
fn rows(
    conn: &Connection,
    ids: &BTreeMap<&'static str, Vec<i64>>,
) -> BTreeMap<&'static str, (i64, i64)> {
    ids.iter()
        .map(|(t, ids)| {
            let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            let all = scalar(
                conn,
                &format!("SELECT count(*) FROM {t} WHERE id IN ({list})"),
            );
            let hidden = scalar(
                conn,
                &format!(
                    "SELECT count(*) FROM {t} WHERE id IN ({list}) AND deleted_at IS NOT NULL"
                ),
            );
            (*t, (all, hidden))
        })
        .collect()
}

fn policy(name: &str, restore_window: &str) -> String {
    format!(
        r#"apiVersion: privacy-operator.dev/v1alpha1
kind: RetentionPolicy
metadata:
  name: {name}
spec:
  erasure: {{restoreWindow: {restore_window}, thirdPartyPurgeWithin: 10m, backupRetention: 1h}}
  retry: {{maxAttempts: 3, initialBackoff: 1s, maxBackoff: 5s}}
"#
    )
}

fn erasure(name: &str, email: &str, policy: &str) -> String {
    format!(
        r#"apiVersion: privacy-operator.dev/v1alpha1
kind: DataSubjectRequest
metadata:
  name: {name}
spec:
  type: Erasure
  regulation: GDPR
  subject: {{identifiers: {{email: {email}}}}}
  systems: {{matchLabels: {{privacy-operator.dev/sample: crm}}}}
  retentionPolicyRef: {{name: {policy}}}
  verification: {{method: Email, verifiedBy: e2e, verifiedAt: "2025-01-06T09:00:00Z"}}
"#
    )
}

/// Every `manifest.json` below `dir`, parsed, with the directory it describes.
fn manifests(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(manifests(&p));
        } else if p.file_name().is_some_and(|n| n == "manifest.json") {
            let v = serde_json::from_slice(&std::fs::read(&p).expect("manifest readable"))
                .expect("manifest is JSON");
            out.push((dir.to_path_buf(), v));
        }
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn access_request_exports_the_sample_subject_into_the_object_store() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dev = Dev::start(&tmp.path().join("data"));
    // The banner says where things are.
    let banner = dev.banner.join("\n");
    for what in [
        "object store:  file://",
        "sample CRM:",
        "crm.db",
        "examples/dev/access.yaml",
    ] {
        assert!(banner.contains(what), "banner lacks {what:?}:\n{banner}");
    }
    assert!(dev.database().exists());
    let tables = dev.kubectl(&["get", "dsys", "crm-sample"]);
    assert!(tables.contains("crm-sample"), "{tables}");

    dev.kubectl(&["apply", "-f", &repo("examples/dev/access.yaml")]);
    dev.wait("sample-access", "--for=condition=Ready");
    let r = dev.get("dsr/sample-access");
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");

    // The worker's export: NDJSON per table, listed with counts and checksums in the
    // per-system manifest, written last.
    let root = dev.data.join("objects/exports/default/sample-access");
    let found = manifests(&root);
    let (dir, system) = found
        .iter()
        .find(|(_, m)| m["system"] == "crm-sample" && m["step"] == "Export")
        .unwrap_or_else(|| {
            panic!(
                "no export manifest of crm-sample under {}: {found:#?}",
                root.display()
            )
        });
    assert_eq!(system["outcome"], "Succeeded", "{system:#}");
    let files = system["files"].as_array().expect("files listed");
    let mut records = BTreeMap::new();
    for f in files {
        let path = dir.join(f["path"].as_str().expect("path"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} listed but not readable: {e}", path.display()));
        assert_eq!(
            f["sha256"],
            sha256_hex(&bytes),
            "checksum of {}",
            path.display()
        );
        assert_eq!(f["size"], bytes.len() as u64);
        let lines: Vec<Value> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("NDJSON line"))
            .collect();
        assert_eq!(f["records"], lines.len() as u64, "{}", path.display());
        records.insert(f["table"].as_str().unwrap().to_string(), lines);
    }
    // Exactly Jane's rows: her contact, and her rows in every related table.
    let conn = db(&dev.database());
    let jane = contact_id(&conn, JANE);
    let contacts = &records["contacts"];
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["email"], JANE);
    for (table, ids) in subject_ids(&conn, jane) {
        let got: Vec<i64> = records
            .get(table)
            .map(|lines| lines.iter().filter_map(|l| l["id"].as_i64()).collect())
            .unwrap_or_default();
        assert_eq!(got, ids, "{table}: exported ids differ from Jane's rows");
        assert!(!ids.is_empty(), "the sample gives Jane rows in {table}");
    }
    for (table, lines) in &records {
        for line in lines {
            if let Some(owner) = line.get("contact_id").and_then(Value::as_i64) {
                assert_eq!(owner, jane, "{table} row of another contact exported");
            }
        }
    }
    // The bundle: the controller's manifest over every system, written last; status points
    // at it with its checksum.
    let bundle_path = root.join("manifest.json");
    let bundle_bytes = std::fs::read(&bundle_path).expect("the bundle manifest exists");
    let bundle: Value = serde_json::from_slice(&bundle_bytes).expect("bundle is JSON");
    assert!(
        !bundle.to_string().contains(JANE),
        "the bundle names the subject"
    );
    let export = &r["status"]["export"];
    assert_eq!(export["sha256"], sha256_hex(&bundle_bytes), "{export:#}");
    assert!(
        export["location"]
            .as_str()
            .is_some_and(|l| l.ends_with("exports/default/sample-access/manifest.json")),
        "{export:#}"
    );
    let systems = bundle["systems"].as_array().expect("systems");
    assert_eq!(systems.len(), 1);
    assert_eq!(systems[0]["name"], "crm-sample");
    let (mut total, mut size) = (0, bundle_bytes.len() as u64);
    for f in systems[0]["files"].as_array().expect("files") {
        let path = root.join(f["path"].as_str().expect("path"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} in the bundle but not readable: {e}", path.display()));
        assert_eq!(
            f["sha256"],
            sha256_hex(&bytes),
            "checksum of {}",
            path.display()
        );
        total += f["records"].as_u64().expect("records");
        size += bytes.len() as u64;
    }
    // The bundle's size: its manifest and every file in it.
    assert_eq!(export["size"], size, "{export:#}");
    assert_eq!(bundle["records"], total);
    assert_eq!(export["records"], total);
    assert_eq!(total, records.values().map(Vec::len).sum::<usize>() as u64);

    // A request received long ago is overdue from the start, and says so.
    dev.apply(&format!(
        r#"apiVersion: privacy-operator.dev/v1alpha1
kind: DataSubjectRequest
metadata:
  name: e2e-access-late
spec:
  type: Access
  regulation: GDPR
  receivedAt: "2024-01-02T09:00:00Z"
  subject: {{identifiers: {{email: {JOHN}}}}}
  systems: {{matchLabels: {{privacy-operator.dev/sample: crm}}}}
  verification: {{method: Email, verifiedBy: e2e, verifiedAt: "2024-01-02T09:00:00Z"}}
"#
    ));
    dev.wait("e2e-access-late", "--for=condition=Overdue");
    dev.wait("e2e-access-late", "--for=condition=Ready");
    let late = dev.get("dsr/e2e-access-late");
    assert_eq!(late["status"]["dueAt"], "2024-02-02T09:00:00Z", "{late:#}");

    // kubectl 1.27 sees the same: the table with READY True.
    let (ok, table) = dev.kubectl_v(27, &["get", "dsr", "sample-access"], None);
    assert!(ok && table.contains("True"), "{table}");
}

#[test]
fn erasure_soft_deletes_and_a_cancel_restores_every_row() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dev = Dev::start(&tmp.path().join("data"));
    let conn = db(&dev.database());
    let jane = contact_id(&conn, JANE);
    let ids = subject_ids(&conn, jane);
    let before = rows(&conn, &ids);
    let others = scalar(&conn, "SELECT count(*) FROM contacts");

    // The example, with the sample policy's 30s restore window: the cancel lands well inside.
    dev.kubectl(&["apply", "-f", &repo("examples/dev/erasure.yaml")]);
    dev.wait("sample-erasure", "--for=condition=SoftDeleted");
    let hidden = rows(&conn, &ids);
    for (table, (all, soft)) in &hidden {
        assert_eq!(
            all, &before[table].0,
            "{table}: rows removed by a soft delete"
        );
        assert_eq!(soft, all, "{table}: not every row of Jane is hidden");
    }
    assert_eq!(
        scalar(
            &conn,
            "SELECT count(*) FROM contacts WHERE deleted_at IS NOT NULL"
        ),
        1,
        "only Jane is hidden"
    );
    let r = dev.get("dsr/sample-erasure");
    assert_eq!(r["status"]["phase"], "RestoreWindow", "{r:#}");
    assert!(r["status"]["restoreUntil"].is_string());

    dev.kubectl(&[
        "patch",
        "dsr",
        "sample-erasure",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"cancel":true}}"#,
    ]);
    dev.wait("sample-erasure", "--for=jsonpath={.status.phase}=Restored");
    let after = rows(&conn, &ids);
    for (table, (all, soft)) in &after {
        assert_eq!(all, &before[table].0, "{table}: rows lost by restore");
        assert_eq!(*soft, 0, "{table}: rows still hidden after restore");
    }
    assert_eq!(scalar(&conn, "SELECT count(*) FROM contacts"), others);
}

#[test]
fn erasure_reaches_purge_and_the_rows_are_gone() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dev = Dev::start(&tmp.path().join("data"));
    let conn = db(&dev.database());
    let john = contact_id(&conn, JOHN);
    let ids = subject_ids(&conn, john);
    let contacts = scalar(&conn, "SELECT count(*) FROM contacts");
    let deals = scalar(
        &conn,
        &format!("SELECT count(*) FROM deals WHERE contact_id = {john}"),
    );
    assert!(deals > 0);

    dev.apply(&policy("e2e-purge", "3s"));
    dev.apply(&erasure("e2e-erase-purge", JOHN, "e2e-purge"));
    dev.wait("e2e-erase-purge", "--for=condition=Purged");
    dev.wait("e2e-erase-purge", "--for=condition=Ready");
    let r = dev.get("dsr/e2e-erase-purge");
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    for (table, (all, _)) in rows(&conn, &ids) {
        assert_eq!(all, 0, "{table}: John's rows survived the purge");
    }
    assert_eq!(scalar(&conn, "SELECT count(*) FROM contacts"), contacts - 1);
    // Deals are kept (Detach): unlinked from the erased contact, not deleted.
    assert_eq!(
        scalar(
            &conn,
            &format!("SELECT count(*) FROM deals WHERE contact_id = {john}")
        ),
        0
    );
    assert_eq!(
        scalar(&conn, "SELECT count(*) FROM deals WHERE contact_id IS NULL"),
        deals
    );
    // The purge re-scanned and found nothing left (results/<ns>/<request>/<system>/<step>).
    let root = dev.data.join("objects/results/default/e2e-erase-purge");
    let found = manifests(&root);
    let purge = found
        .iter()
        .map(|(_, m)| m)
        .find(|m| m["step"] == "Purge")
        .unwrap_or_else(|| panic!("no purge manifest under {}: {found:#?}", root.display()));
    assert_eq!(purge["verification"]["passed"], true, "{purge:#}");
    // Nothing of John in the object store's manifests, the worker logs or dev's own log, and
    // no task file left behind.
    for (_, m) in &found {
        assert!(!m.to_string().contains(JOHN));
    }
    let mut logs = vec![dev.data.with_extension("log")];
    for ns in std::fs::read_dir(dev.data.join("logs"))
        .expect("logs dir")
        .flatten()
    {
        logs.extend(
            std::fs::read_dir(ns.path())
                .expect("ns logs")
                .flatten()
                .map(|e| e.path()),
        );
    }
    assert!(logs.len() > 2, "{logs:?}");
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains(JOHN), "{} names the subject", log.display());
    }
    let left: Vec<_> = std::fs::read_dir(dev.data.join("run"))
        .expect("run dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "task files left behind: {left:?}");
}

#[test]
fn dev_killed_mid_timeline_continues_after_a_restart_without_duplicate_jobs() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let dev = Dev::start(&data);
    let ids = subject_ids(&db(&dev.database()), contact_id(&db(&dev.database()), JANE));
    dev.apply(&policy("e2e-restart", "8s"));
    dev.apply(&erasure("e2e-erase-restart", JANE, "e2e-restart"));
    dev.wait("e2e-erase-restart", "--for=condition=SoftDeleted");
    // The emulator snapshots its state about once a second: kill once the snapshot holds
    // the soft-deleted request, so that what is tested is the operator's recovery.
    dev.wait_persisted("e2e-erase-restart", "SoftDeleted");
    // Mid-timeline: soft-deleted, purge not yet due. No shutdown at all.
    dev.kill();

    let dev = Dev::start(&data);
    dev.wait("e2e-erase-restart", "--for=condition=Purged");
    // kubectl 1.27 waits too.
    let (ok, out) = dev.kubectl_v(
        27,
        &[
            "wait",
            "--for=condition=Ready",
            "dsr/e2e-erase-restart",
            WAIT,
        ],
        None,
    );
    assert!(ok, "{out}");
    let conn = db(&dev.database());
    for (table, (all, _)) in rows(&conn, &ids) {
        assert_eq!(all, 0, "{table}: Jane's rows survived the purge");
    }
    // One Job per step, each complete: the restart repeated nothing.
    let jobs = dev.get("jobs");
    let mut per_step: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for j in jobs["items"].as_array().expect("items") {
        let labels = &j["metadata"]["labels"];
        if labels["privacy-operator.dev/request"] != "e2e-erase-restart" {
            continue;
        }
        let step = labels["privacy-operator.dev/step"]
            .as_str()
            .unwrap()
            .to_string();
        let complete = j["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
        });
        assert!(complete, "{j:#}");
        per_step
            .entry(step)
            .or_default()
            .push(j["metadata"]["name"].as_str().unwrap().to_string());
    }
    assert_eq!(per_step.len(), 2, "{per_step:?}");
    for (step, names) in &per_step {
        assert_eq!(names.len(), 1, "{step}: {names:?}");
    }
}

/// What the fake processor was asked: (method, path, Idempotency-Key, body).
type Calls = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, Value)>>>;

/// A third-party processor on loopback that accepts an erasure and confirms it only on the
/// third status poll (the HTTP webhook contract, docs/connectors/http-webhook.md).
fn late_processor() -> (u16, Calls) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("processor listens");
    let port = listener.local_addr().expect("address").port();
    let calls: Calls = Default::default();
    let seen = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().expect("stream"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
            );
            let (mut length, mut key) = (0usize, String::new());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap_or_default();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "idempotency-key" => key = value.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let polls = {
                let mut c = seen.lock().expect("calls");
                c.push((method.clone(), path.clone(), key, body));
                c.iter().filter(|c| c.0 == "GET").count()
            };
            let (code, answer) = match (method.as_str(), path.as_str()) {
                ("POST", "/privacy/v1/erase") => (
                    "202 Accepted",
                    r#"{"status":"pending","reference":"req-1","statusUrl":"/privacy/v1/requests/req-1"}"#,
                ),
                ("GET", "/privacy/v1/requests/req-1") if polls < 3 => {
                    ("200 OK", r#"{"status":"pending","reference":"req-1"}"#)
                }
                ("GET", "/privacy/v1/requests/req-1") => (
                    "200 OK",
                    r#"{"status":"completed","reference":"req-1","confirmation":{"id":"del-1","completedAt":"2026-01-01T00:00:00Z"}}"#,
                ),
                _ => ("501 Not Implemented", "{}"),
            };
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (port, calls)
}

#[test]
fn a_third_party_processor_that_confirms_late_completes_the_erasure() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dev = Dev::start(&tmp.path().join("data"));
    let (port, calls) = late_processor();
    dev.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: mailer-api}}
stringData: {{hmac: e2e-shared-secret}}
---
apiVersion: privacy-operator.dev/v1alpha1
kind: DataSystem
metadata:
  name: mailer
  labels: {{privacy-operator.dev/sample: crm}}
spec:
  thirdParty: true
  exportable: false
  vendor: {{name: Acme Mailer Ltd, contact: privacy@acme-mailer.example}}
  connector:
    type: HTTP
    http:
      baseURL: http://127.0.0.1:{port}/privacy/v1
      hmacSecretRef: {{name: mailer-api, key: hmac}}
      pollInterval: 1s
      timeout: 10s
"#
    ));
    dev.apply(&policy("e2e-third-party", "3s"));
    dev.apply(&erasure("e2e-erase-processor", JANE, "e2e-third-party"));
    dev.wait("e2e-erase-processor", "--for=condition=ThirdPartiesPurged");
    dev.wait("e2e-erase-processor", "--for=condition=Ready");
    let r = dev.get("dsr/e2e-erase-processor");
    assert_eq!(r["status"]["phase"], "Completed", "{r:#}");
    let mailer = r["status"]["systems"]
        .as_array()
        .and_then(|s| s.iter().find(|e| e["name"] == "mailer"))
        .unwrap_or_else(|| panic!("no mailer entry: {r:#}"))
        .clone();
    assert_eq!(mailer["phase"], "Succeeded", "{mailer:#}");
    assert_eq!(mailer["thirdParty"], true);

    // One purge call, then polls until the confirmation, all under one idempotency key.
    let calls = calls.lock().expect("calls").clone();
    let posts: Vec<_> = calls.iter().filter(|c| c.0 == "POST").collect();
    assert_eq!(posts.len(), 1, "{calls:#?}");
    assert_eq!(posts[0].3["operation"], "erase");
    assert_eq!(posts[0].3["mode"], "purge");
    assert!(
        calls.iter().filter(|c| c.0 == "GET").count() >= 3,
        "{calls:#?}"
    );
    let key = &posts[0].2;
    assert!(!key.is_empty());
    assert!(calls.iter().all(|c| &c.2 == key), "{calls:#?}");
}
