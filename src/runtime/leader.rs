//! Leader election on a `coordination.k8s.io/v1` Lease, following client-go's
//! `leaderelection` package: the holder renews the Lease every retry period; a candidate takes
//! it once the record it last saw has not changed for a whole lease duration (measured on the
//! candidate's own clock, so clock skew between replicas does not matter); every write carries
//! the resourceVersion it was based on, so two candidates can never both win a round.
//!
//! A holder that cannot renew for the renew deadline, or that finds someone else's name in the
//! Lease, has lost: the caller stops reconciling at once. On graceful shutdown the holder
//! releases the Lease (empty holder, one-second duration) so a standby takes over without
//! waiting for expiry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::controller::Clock;
use crate::{Error, Result};

/// How one replica takes part in the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's name in `holderIdentity` (the Pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How long the holder keeps retrying a failed renewal before it gives up leadership.
    pub renew_deadline: Duration,
    /// How often the holder renews and candidates try to acquire.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Rejects timings under which two replicas could both believe they lead.
    pub fn validate(&self) -> Result<()> {
        if self.identity.is_empty() {
            return Err(Error::Config(
                "leader election needs an identity (set POD_NAME or --instance)".into(),
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(Error::Config(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            )));
        }
        if self.renew_deadline <= self.retry_period {
            return Err(Error::Config(format!(
                "the renew deadline ({:?}) must be longer than the retry period ({:?})",
                self.renew_deadline, self.retry_period
            )));
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(Error::Config(
                "the lease duration must be at least one second (Leases count whole seconds)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// Why the holder stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Another replica's name is in the Lease.
    TakenBy(String),
    /// Renewal kept failing for the whole renew deadline.
    RenewDeadline(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::TakenBy(h) => write!(f, "the lease is now held by {h:?}"),
            Lost::RenewDeadline(e) => write!(f, "renewal failed past the renew deadline: {e}"),
        }
    }
}

/// What one round should do, given the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// No Lease yet: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free, released or expired: take it (one more transition).
    Take,
    /// Someone else holds a valid lease.
    HeldBy(String),
}

/// The decision of one round: pure, so it is unit-tested without an API server.
/// `observed_at` is when this replica first saw the Lease's current record.
pub(crate) fn decide(
    current: Option<&LeaseSpec>,
    me: &str,
    observed_at: Timestamp,
    now: Timestamp,
) -> Step {
    let Some(spec) = current else {
        return Step::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::Take;
    }
    let duration = SignedDuration::from_secs(i64::from(
        spec.lease_duration_seconds.unwrap_or_default().max(0),
    ));
    let expires = observed_at.checked_add(duration).unwrap_or(Timestamp::MAX);
    if now >= expires {
        Step::Take
    } else {
        Step::HeldBy(holder.to_string())
    }
}

/// One replica's view of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    clock: Arc<dyn Clock>,
    /// The record last seen and when (this replica's clock) it was first seen.
    observed: Mutex<Option<(Option<LeaseSpec>, Timestamp)>>,
    leading: watch::Sender<bool>,
    /// Turns true once the API server has answered a round (the readiness signal).
    reachable: watch::Sender<bool>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig, clock: Arc<dyn Clock>) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock,
            observed: Mutex::new(None),
            leading: watch::Sender::new(false),
            reachable: watch::Sender::new(false),
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Whether this replica believes it leads, updated on every round.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Turns true once the API server has answered this elector.
    pub fn api_reachable(&self) -> watch::Receiver<bool> {
        self.reachable.subscribe()
    }

    fn set_leading(&self, leading: bool) {
        self.leading
            .send_if_modified(|l| std::mem::replace(l, leading) != leading);
    }

    /// When the current record was first seen (now, if it changed since the last round).
    fn observe(&self, spec: Option<&LeaseSpec>, now: Timestamp) -> Timestamp {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        // Any change of the spec (a renewal moves renewTime) proves the holder is alive.
        let record = spec.cloned();
        match &*observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                *observed = Some((record, now));
                now
            }
        }
    }

    /// One round: read the Lease, then create, renew or take it if we may. `Ok(true)` when we
    /// hold it afterwards; a lost write race (409) is `Ok(false)`, like a valid foreign lease.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = self.clock.now();
        let lease = self.api.get_opt(&self.config.name).await?;
        self.reachable
            .send_if_modified(|r| !std::mem::replace(r, true));
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        let observed_at = self.observe(spec, now);
        let me = self.config.identity.as_str();
        let step = decide(spec, me, observed_at, now);
        let stamp = Some(MicroTime(now));
        let written = match (step, lease) {
            (Step::HeldBy(_), _) => {
                self.set_leading(false);
                return Ok(false);
            }
            (Step::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me.into()),
                        lease_duration_seconds: Some(self.config.duration_seconds()),
                        acquire_time: stamp.clone(),
                        renew_time: stamp,
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (step, Some(mut lease)) => {
                let mut spec = lease.spec.take().unwrap_or_default();
                if step == Step::Take {
                    spec.holder_identity = Some(me.into());
                    spec.acquire_time = stamp.clone();
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(self.config.duration_seconds());
                spec.renew_time = stamp;
                lease.spec = Some(spec);
                // metadata.resourceVersion is the one we read: a concurrent writer makes this
                // a 409 instead of a second leader.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                self.observe(lease.spec.as_ref(), now);
                self.set_leading(true);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() || s.code == 409 => {
                tracing::debug!(lease = %self.config.name, "lost a lease write race");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until this replica leads, trying every retry period. API errors are retried
    /// (logged): a standby outlives API server hiccups.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(
                        lease = %self.config.name,
                        identity = %self.config.identity,
                        "became the leader"
                    );
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.config.name, "cannot acquire the lease")
                }
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews every retry period while leading; returns why leadership ended. Never returns
    /// while renewals succeed.
    pub async fn hold(&self) -> Lost {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let attempt = tokio::time::timeout(
                self.config
                    .renew_deadline
                    .saturating_sub(last_renewed.elapsed()),
                self.try_acquire_or_renew(),
            )
            .await;
            let failure = match attempt {
                Ok(Ok(true)) => {
                    last_renewed = tokio::time::Instant::now();
                    continue;
                }
                Ok(Ok(false)) => {
                    let holder = self
                        .observed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                        .and_then(|(s, _)| s.as_ref())
                        .and_then(|s| s.holder_identity.clone())
                        .unwrap_or_default();
                    if !holder.is_empty() && holder != self.config.identity {
                        self.set_leading(false);
                        return Lost::TakenBy(holder);
                    }
                    "a concurrent write won".to_string()
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the renewal timed out".to_string(),
            };
            tracing::warn!(lease = %self.config.name, error = %failure, "lease renewal failed");
            if last_renewed.elapsed() >= self.config.renew_deadline {
                self.set_leading(false);
                return Lost::RenewDeadline(failure);
            }
        }
    }

    /// Gives the Lease up (graceful shutdown) so a standby takes it at once: holder cleared,
    /// one-second duration, as client-go's `ReleaseOnCancel`. Does nothing unless we hold it.
    pub async fn release(&self) -> Result<()> {
        self.set_leading(false);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(self.clock.now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %self.config.name, "released the lease");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(holder: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: (!holder.is_empty()).then(|| holder.into()),
            lease_duration_seconds: Some(secs),
            renew_time: Some(MicroTime(t("2026-01-01T00:00:00Z"))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_lease_is_created() {
        let now = t("2026-01-01T00:00:00Z");
        assert_eq!(decide(None, "a", now, now), Step::Create);
    }

    #[test]
    fn the_holder_renews_and_others_wait_for_expiry() {
        let seen = t("2026-01-01T00:00:00Z");
        let s = spec("a", 15);
        assert_eq!(decide(Some(&s), "a", seen, seen), Step::Renew);
        let before = t("2026-01-01T00:00:14Z");
        assert_eq!(
            decide(Some(&s), "b", seen, before),
            Step::HeldBy("a".into())
        );
        let at = t("2026-01-01T00:00:15Z");
        assert_eq!(decide(Some(&s), "b", seen, at), Step::Take);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let now = t("2026-01-01T00:00:00Z");
        assert_eq!(decide(Some(&spec("", 1)), "b", now, now), Step::Take);
    }

    #[test]
    fn timings_that_allow_two_leaders_are_rejected() {
        let ok = LeaseConfig {
            name: "l".into(),
            namespace: "ns".into(),
            identity: "pod-a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        ok.validate().unwrap();
        let bad = LeaseConfig {
            renew_deadline: Duration::from_secs(15),
            ..ok.clone()
        };
        assert!(bad.validate().is_err());
        let bad = LeaseConfig {
            retry_period: Duration::from_secs(10),
            ..ok.clone()
        };
        assert!(bad.validate().is_err());
        let bad = LeaseConfig {
            identity: String::new(),
            ..ok
        };
        assert!(bad.validate().is_err());
    }
}
