//! A ConsentWithdrawal through a ConsentPolicy, end to end: the controller against the
//! emulator resolves the purpose group to purposes and systems, the SQL worker flips exactly
//! the subject's flags for the purpose in a real PostgreSQL CRM, and the third party's HTTP
//! connector is called to unsubscribe the subject. Unknown purposes are refused at acceptance.

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "consent_support/mod.rs"]
mod consent_support;
#[path = "support/postgres.rs"]
mod pg_support;
#[path = "controller_support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use consent_support::{JANE, connection_secret, crm, crm_spec, run_request_job, table_digest};
use privacy_operator::api::request::{RequestPhase, SystemPhase};
use privacy_operator::worker::task::Task;
use serde_json::{Value, json};
use support::{Bench, condition};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The CRM's data map, restricting per purpose: marketing-email clears the opt-in flag,
/// profiling sets do-not-contact (no `all` entry, so each purpose touches its own flag).
fn crm_system(db_secret: &str) -> Value {
    let mut spec = crm_spec();
    spec["connector"]["sql"]["connectionSecretRef"]["name"] = json!(db_secret);
    let tables = spec["dataMap"]["tables"].as_array_mut().unwrap();
    let contacts = tables
        .iter_mut()
        .find(|t| t["name"] == "crm.contacts")
        .unwrap();
    contacts["restrict"] = json!([
        {"purpose": "marketing-email", "set": {"marketing_opt_in": "false"}},
        {"purpose": "profiling", "set": {"do_not_contact": "true"}}
    ]);
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSystem",
        "metadata": {"name": "crm", "labels": {"tier": "first-party"}},
        "spec": spec,
    })
}

fn mailer_system(base_url: &str) -> Value {
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSystem",
        "metadata": {"name": "mailer", "labels": {"tier": "third-party"}},
        "spec": {
            "thirdParty": true,
            "vendor": {"name": "Acme Mailer Ltd", "contact": "privacy@acme-mailer.example"},
            "exportable": false,
            "connector": {"type": "HTTP", "http": {
                "baseURL": base_url,
                "hmacSecretRef": {"name": "mailer-api", "key": "hmac"}
            }}
        }
    })
}

fn policy() -> Value {
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "ConsentPolicy",
        "metadata": {"name": "consent"},
        "spec": {"purposes": [
            {"name": "marketing-email", "groups": ["marketing"], "lawfulBasis": "Consent",
             "actions": [
                {"action": "Restrict", "system": "crm"},
                {"action": "Unsubscribe", "systems": {"matchLabels": {"tier": "third-party"}}}
             ]},
            {"name": "partner-sharing", "groups": ["marketing"], "lawfulBasis": "Consent",
             "actions": [{"action": "Unsubscribe", "system": "mailer"}]},
            {"name": "profiling", "lawfulBasis": "LegitimateInterests",
             "actions": [{"action": "Restrict", "system": "crm"}]}
        ]}
    })
}

fn withdrawal(name: &str, purposes: &[&str]) -> Value {
    json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": name},
        "spec": {
            "type": "ConsentWithdrawal",
            "regulation": "GDPR",
            "subject": {"identifiers": {"email": JANE}},
            "consentPolicyRef": {"name": "consent"},
            "restrictedPurposes": purposes,
            "verification": {"method": "Email", "verifiedBy": "support-desk",
                             "verifiedAt": "2024-01-01T00:00:00Z"}
        }
    })
}

/// A processor's privacy endpoint: answers every call `completed` and records (path, body).
async fn processor() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/privacy/v1", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let (head_end, length) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
                seen.lock().unwrap().push((path, body));
                let answer = r#"{"status":"completed","reference":"unsub-1"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_flips_exactly_the_subjects_flags_for_the_purpose_and_calls_the_third_party() {
    let (pg, db, url) = crm("withdrawal_flags");
    let before: Vec<(&str, String)> = [
        "crm.companies",
        "crm.deals",
        "crm.notes",
        "crm.calls",
        "crm.call_recordings",
        "crm.sms",
        "crm.tasks",
        "crm.tickets",
        "crm.consents",
    ]
    .iter()
    .map(|t| (*t, table_digest(pg, &db, t, &[])))
    .collect();
    let contacts_before = pg.psql(
        &db,
        "SELECT md5(string_agg(row_to_json(c)::text, '|' ORDER BY id)) FROM crm.contacts c WHERE id <> 7",
    );

    let (base_url, calls) = processor().await;
    let bench = Bench::start().await;
    bench.put(connection_secret("crm-db", &url));
    bench.put(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mailer-api"},
                     "stringData": {"hmac": "shared-webhook-secret-0123456789"}}),
    );
    bench.put(crm_system("crm-db"));
    bench.put(mailer_system(&base_url));
    bench.put(support::data_system("files", false));
    bench.put(policy());
    bench.put(withdrawal("withdraw-1", &["marketing"]));

    let jobs = bench.wait_jobs("withdraw-1", "restrict", 2).await;
    assert_eq!(
        jobs,
        ["withdraw-1-crm-restrict-1", "withdraw-1-mailer-restrict-1"]
    );
    // Each Job carries the purposes that reach its system.
    let purposes = |bytes: Vec<u8>| Task::from_json(&bytes).unwrap().purposes;
    assert_eq!(
        purposes(consent_support::task_bytes(&bench, &jobs[0]).await),
        ["marketing-email"]
    );
    assert_eq!(
        purposes(consent_support::task_bytes(&bench, &jobs[1]).await),
        ["marketing-email", "partner-sharing"]
    );

    let crm_manifest = run_request_job(&bench, &jobs[0]).await;
    assert_eq!(crm_manifest.total_rows(), 1, "{crm_manifest:#?}");
    let mailer_manifest = run_request_job(&bench, &jobs[1]).await;
    assert_eq!(
        mailer_manifest.outcome,
        privacy_operator::worker::task::Outcome::Succeeded,
        "{mailer_manifest:#?}"
    );

    let dsr = bench
        .wait_status_phase("withdraw-1", RequestPhase::Completed)
        .await;
    let status = dsr.status.as_ref().unwrap();
    let files = status.systems.iter().find(|s| s.name == "files").unwrap();
    assert_eq!(files.phase, SystemPhase::Skipped);
    let (s, _) = condition(&dsr, "Restricted").unwrap();
    assert_eq!(s, "True");
    let msg = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Restricted")
        .unwrap()
        .message;
    assert!(msg.contains("marketing-email, partner-sharing"), "{msg}");

    // The database: contact 7's opt-in is off, its do-not-contact untouched, nothing else
    // changed anywhere.
    assert_eq!(
        pg.psql(
            &db,
            "SELECT marketing_opt_in || ',' || do_not_contact FROM crm.contacts WHERE id = 7"
        ),
        "false,false"
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT md5(string_agg(row_to_json(c)::text, '|' ORDER BY id)) FROM crm.contacts c WHERE id <> 7"
        ),
        contacts_before
    );
    for (table, digest) in before {
        assert_eq!(table_digest(pg, &db, table, &[]), digest, "{table} changed");
    }

    // The processor was asked once to restrict the subject for both purposes.
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].0, "/privacy/v1/restrict");
    assert_eq!(
        calls[0].1["purposes"],
        json!(["marketing-email", "partner-sharing"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_purposes_are_refused_with_a_specific_reason() {
    let bench = Bench::start().await;
    bench.put(support::data_system("files", false));
    bench.put(policy());
    bench.put(withdrawal("withdraw-2", &["marketing-sms"]));
    let dsr = bench
        .wait_condition("withdraw-2", "Accepted", "False")
        .await;
    assert_eq!(
        condition(&dsr, "Accepted"),
        Some(("False".into(), "UnknownPurposes".into()))
    );
    let msg = &dsr
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .unwrap()
        .message;
    assert!(
        msg.contains("marketing-sms") && msg.contains("partner-sharing"),
        "{msg}"
    );
    assert!(bench.job_names("withdraw-2").await.is_empty());
}
