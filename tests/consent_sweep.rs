//! The ConsentPolicy controller and the stale-consent sweep, end to end: the controller
//! against the emulator schedules the sweep (cron, fake clock), the sweep worker marks
//! exactly the stale consent rows of a real PostgreSQL CRM as expired, and the policy's
//! status shows the purposes, the systems they reach and the sweep's counts.

#![recursion_limit = "256"]

#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "consent_support/mod.rs"]
mod consent_support;
#[path = "support/postgres.rs"]
mod pg_support;
#[path = "controller_support/mod.rs"]
mod support;

use consent_support::{DEADLINE, connection_secret, crm, crm_spec, run_scheduled_job, wait_job};
use kube::api::Api;
use privacy_operator::api::ConsentPolicy;
use privacy_operator::controller::Clock;
use privacy_operator::plan::timeline::fmt;
use serde_json::json;
use support::{Bench, NS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_expires_exactly_the_stale_consents_and_reports_counts() {
    let (pg, db, url) = crm("consent_sweep");
    let bench = Bench::start().await;
    let t0 = bench.clock.now();
    // Consent row n was given n days before t0; row 401 was withdrawn since.
    pg.psql(
        &db,
        &format!(
            "ALTER TABLE crm.consents ADD COLUMN expired_at timestamptz; \
             UPDATE crm.consents SET given_at = timestamptz '{t0}' - id * interval '1 day'; \
             UPDATE crm.consents SET withdrawn_at = timestamptz '{t0}' WHERE id = 401;",
            t0 = fmt(t0)
        ),
    );
    let mut spec = crm_spec();
    spec["connector"]["sql"]["connectionSecretRef"]["name"] = json!("crm-db");
    for t in spec["dataMap"]["tables"].as_array_mut().unwrap() {
        if t["name"] == "crm.consents" {
            t["consent"]["expiredAtColumn"] = json!("expired_at");
        }
    }
    bench.put(connection_secret("crm-db", &url));
    bench.put(json!({
        "apiVersion": "privacy-operator.dev/v1alpha1", "kind": "DataSystem",
        "metadata": {"name": "crm"}, "spec": spec,
    }));
    bench.put(json!({
        "apiVersion": "privacy-operator.dev/v1alpha1",
        "kind": "ConsentPolicy",
        "metadata": {"name": "consent"},
        "spec": {
            "purposes": [
                {"name": "marketing-email", "lawfulBasis": "Consent", "reconsentAfter": "365d",
                 "actions": [{"action": "Restrict", "system": "crm"}]},
                {"name": "call-recording", "lawfulBasis": "Consent"}
            ],
            "staleConsentSweep": {"schedule": "0 3 * * *", "timeZone": "UTC"}
        }
    }));

    // In force, with the next sweep scheduled and nothing run yet.
    let api: Api<ConsentPolicy> = Api::namespaced(bench.client.clone(), NS);
    let policy = common::wait_for("policy Ready with a next sweep", DEADLINE, || {
        let api = api.clone();
        async move {
            let p = api.get("consent").await.ok()?;
            let s = p.status.as_ref()?;
            let ready = s
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && s.next_sweep.is_some()).then_some(p)
        }
    })
    .await;
    let status = policy.status.unwrap();
    assert_eq!(status.purpose_count, Some(2));
    assert_eq!(status.purposes[0].systems, ["crm"]);
    assert!(
        bench
            .jobs_api()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let at = status.next_sweep.unwrap().0;

    // 03:00 comes: one sweep Job, run by the worker.
    bench.clock.set(at);
    let job = wait_job(&bench, "privacy-operator.dev/consent-policy=consent").await;
    run_scheduled_job(&bench, &job, |bytes| async move {
        privacy_operator::worker::consent::run_bytes(&bytes)
            .await
            .is_ok()
    })
    .await;

    let policy = common::wait_for("the sweep's result in status", DEADLINE, || {
        let api = api.clone();
        let job = job.clone();
        async move {
            let p = api.get("consent").await.ok()?;
            let last = p.status.as_ref()?.last_sweep.as_ref()?;
            (last.job_name.as_deref() == Some(job.as_str())).then_some(p)
        }
    })
    .await;
    let status = policy.status.unwrap();
    let last = status.last_sweep.clone().unwrap();
    // marketing-email rows are the odd ids; given more than 365 days before the run: 365..999.
    let expected: Vec<i64> = (365..=999).filter(|n| n % 2 == 1 && *n != 401).collect();
    assert!(last.succeeded, "{last:?}");
    assert_eq!(last.expired, expected.len() as i64);
    assert_eq!(last.started_at.unwrap().0, at);
    let active = |name: &str| {
        status
            .purposes
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.active_consents)
    };
    assert_eq!(
        active("marketing-email"),
        Some(500 - expected.len() as i64 - 1)
    );
    assert_eq!(active("call-recording"), Some(500));
    assert!(status.next_sweep.unwrap().0 > at);

    // Exactly those rows, and nothing else in the table changed.
    let got = pg.psql(
        &db,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM crm.consents WHERE expired_at IS NOT NULL",
    );
    let want: Vec<String> = expected.iter().map(|n| n.to_string()).collect();
    assert_eq!(got, want.join(","));
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM crm.consents WHERE purpose = 'call-recording' AND expired_at IS NOT NULL"),
        "0"
    );

    // kubectl describe tells the story.
    consent_support::wait_event(&bench, "consent", "SweepStarted").await;
    let note = consent_support::wait_event(&bench, "consent", "SweepCompleted").await;
    assert!(note.contains(&expected.len().to_string()), "{note}");

    // Running the same sweep again expires nothing more.
    let again = privacy_operator::worker::consent::run_bytes(
        &consent_support::task_bytes(&bench, &job).await,
    )
    .await
    .unwrap();
    assert_eq!(again.total_rows(), 0);
}
