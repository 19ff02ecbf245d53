//! Leader election against the emulator's coordination.k8s.io/v1 Leases: two electors, one
//! leader; a leader that stops renewing is replaced within the lease duration; a released
//! lease is taken at once.

#[path = "../emulator/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use privacy_operator::controller::SystemClock;
use privacy_operator::runtime::{LeaderElector, LeaseConfig, Lost};
use tokio::task::JoinHandle;

const LEASE: &str = "privacy-operator-leader";

fn lease_config(identity: &str, lease_duration: Duration) -> LeaseConfig {
    LeaseConfig {
        name: LEASE.into(),
        namespace: "default".into(),
        identity: identity.into(),
        lease_duration,
        renew_deadline: lease_duration / 2,
        retry_period: Duration::from_millis(100),
    }
}

fn elector(client: &kube::Client, identity: &str, lease_duration: Duration) -> Arc<LeaderElector> {
    Arc::new(LeaderElector::new(
        client.clone(),
        lease_config(identity, lease_duration),
        Arc::new(SystemClock),
    ))
}

/// Campaigns, then holds the lease until it is lost.
fn campaign(e: &Arc<LeaderElector>) -> JoinHandle<Lost> {
    let e = e.clone();
    tokio::spawn(async move {
        e.acquire().await;
        e.hold().await
    })
}

fn leading(e: &LeaderElector) -> bool {
    *e.leading().borrow()
}

async fn lease(client: &kube::Client) -> Lease {
    Api::<Lease>::namespaced(client.clone(), "default")
        .get(LEASE)
        .await
        .expect("lease exists")
}

fn holder(l: &Lease) -> String {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

fn transitions(l: &Lease) -> i32 {
    l.spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or_default()
}

#[tokio::test]
async fn two_electors_elect_one_leader_and_the_standby_takes_over_when_renewals_stop() {
    let emu = common::start().await;
    let client = common::client(&emu);
    let duration = Duration::from_secs(2);
    let a = elector(&client, "pod-a", duration);
    let b = elector(&client, "pod-b", duration);
    let task_a = campaign(&a);
    let task_b = campaign(&b);

    common::wait_for("a leader", Duration::from_secs(10), || async {
        (leading(&a) || leading(&b)).then_some(())
    })
    .await;
    let (leader, standby, leader_task, standby_task) = if leading(&a) {
        (&a, &b, task_a, task_b)
    } else {
        (&b, &a, task_b, task_a)
    };
    let leader_id = leader.config().identity.clone();
    let standby_id = standby.config().identity.clone();

    // Several renewals go by with exactly one leader, named in the Lease.
    let first = lease(&client).await;
    assert_eq!(holder(&first), leader_id);
    let mut renewals = 0;
    let mut last_renew = first.spec.as_ref().and_then(|s| s.renew_time.clone());
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while renewals < 3 {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for renewals"
        );
        assert!(leading(leader) && !leading(standby), "exactly one leader");
        let l = lease(&client).await;
        assert_eq!(holder(&l), leader_id);
        let renew = l.spec.as_ref().and_then(|s| s.renew_time.clone());
        if renew != last_renew {
            renewals += 1;
            last_renew = renew;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(transitions(&lease(&client).await), 0);

    // The leader dies without a word: it stops renewing.
    leader_task.abort();
    let _ = leader_task.await;
    let died = tokio::time::Instant::now();
    common::wait_for(
        "the standby to take over",
        duration + Duration::from_secs(5),
        || async { leading(standby).then_some(()) },
    )
    .await;
    let took = died.elapsed();
    // The lease duration from the last renewal it saw, plus a retry period or two of polling
    // (and slack for a loaded machine).
    assert!(
        took <= duration + Duration::from_secs(1),
        "took over after {took:?}"
    );
    assert!(
        took >= duration - Duration::from_millis(300),
        "took over a valid lease after {took:?}"
    );
    let l = lease(&client).await;
    assert_eq!(holder(&l), standby_id);
    assert_eq!(transitions(&l), 1);
    standby_task.abort();
}

#[tokio::test]
async fn a_leader_that_finds_another_holder_stops_at_once() {
    let emu = common::start().await;
    let client = common::client(&emu);
    let a = elector(&client, "pod-a", Duration::from_secs(30));
    assert!(a.try_acquire_or_renew().await.unwrap());
    // Someone rewrites the Lease behind our back (e.g. an admin hands it over).
    let api = Api::<Lease>::namespaced(client.clone(), "default");
    let mut l = api.get(LEASE).await.unwrap();
    l.spec.as_mut().unwrap().holder_identity = Some("pod-z".into());
    api.replace(LEASE, &Default::default(), &l).await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(5), a.hold())
        .await
        .expect("hold returns within a few retry periods");
    assert_eq!(lost, Lost::TakenBy("pod-z".into()));
    assert!(!leading(&a));
}

#[tokio::test]
async fn a_released_lease_is_taken_over_at_once() {
    let emu = common::start().await;
    let client = common::client(&emu);
    // A long lease: a takeover well inside it can only come from the release.
    let duration = Duration::from_secs(30);
    let a = elector(&client, "pod-a", duration);
    let b = elector(&client, "pod-b", duration);
    assert!(a.try_acquire_or_renew().await.unwrap());
    let task_b = campaign(&b);
    // b has seen a's valid lease and waits.
    common::wait_for("b to observe the lease", Duration::from_secs(5), || async {
        (!leading(&b) && *b.api_reachable().borrow()).then_some(())
    })
    .await;
    assert!(!b.try_acquire_or_renew().await.unwrap());

    let released = tokio::time::Instant::now();
    a.release().await.expect("release");
    assert!(!leading(&a));
    common::wait_for(
        "b to take the released lease",
        Duration::from_secs(5),
        || async { leading(&b).then_some(()) },
    )
    .await;
    assert!(released.elapsed() < Duration::from_secs(2));
    let l = lease(&client).await;
    assert_eq!(holder(&l), "pod-b");
    assert_eq!(transitions(&l), 1);
    task_b.abort();
}

#[tokio::test]
async fn concurrent_candidates_never_both_win_a_round() {
    let emu = common::start().await;
    let client = common::client(&emu);
    for round in 0..5 {
        let name = format!("race-{round}");
        let mk = |id: &str| {
            let mut c = lease_config(id, Duration::from_secs(30));
            c.name = name.clone();
            Arc::new(LeaderElector::new(client.clone(), c, Arc::new(SystemClock)))
        };
        let electors: Vec<_> = ["a", "b", "c"].iter().map(|id| mk(id)).collect();
        let results = futures::future::join_all(
            electors
                .iter()
                .map(|e| async move { e.try_acquire_or_renew().await }),
        )
        .await;
        let winners = results
            .into_iter()
            .map(|r| r.expect("round completes"))
            .filter(|won| *won)
            .count();
        assert_eq!(winners, 1, "round {round}");
    }
}

#[tokio::test]
async fn expiry_is_measured_on_the_injected_clock() {
    use privacy_operator::controller::FakeClock;
    let emu = common::start().await;
    let client = common::client(&emu);
    let clock = FakeClock::new(jiff::Timestamp::now());
    let mk = |id: &str| {
        LeaderElector::new(
            client.clone(),
            lease_config(id, Duration::from_secs(60)),
            clock.clone(),
        )
    };
    let (a, b) = (mk("pod-a"), mk("pod-b"));
    assert!(a.try_acquire_or_renew().await.unwrap());
    // b first sees a's record now; a then goes silent.
    assert!(!b.try_acquire_or_renew().await.unwrap());
    clock.advance(jiff::SignedDuration::from_secs(59));
    assert!(!b.try_acquire_or_renew().await.unwrap(), "still valid");
    clock.advance(jiff::SignedDuration::from_secs(1));
    assert!(b.try_acquire_or_renew().await.unwrap(), "expired after 60s");
    assert_eq!(holder(&lease(&client).await), "pod-b");
    // a's next renewal finds b in the Lease and does not take it back.
    assert!(!a.try_acquire_or_renew().await.unwrap());
    assert!(!leading(&a));
}
