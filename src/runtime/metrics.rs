//! The operator's Prometheus metrics, one registry per process.
//!
//! The registry is process-wide (like client-go's legacy registry) so the controller can
//! record a reconcile without threading a handle through its configuration. Labels never
//! carry subject data: only request types, phases, error reasons and Job outcomes.
//!
//! One operator runtime per process is assumed: the leader gauge is the process's.
//!
//! Who feeds what:
//! - reconciles, errors by reason and durations: [`record_reconcile`], called around every
//!   reconcile in `controller::run_until`;
//! - the leader gauge: `runtime::run` from the elector's state (1 without leader election);
//! - requests by type and phase, overdue requests, time to completion and Job outcomes are
//!   registered (so dashboards and alerts can be written against them) and are to be fed by
//!   the controller's effects step (`controller::effects`) through [`Metrics`]'s public fields.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// DataSubjectRequest `spec.type`.
    pub r#type: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// `succeeded` or `failed`.
    pub outcome: String,
}

/// The request types (`spec.type`), whose series exist from the start: prometheus-client
/// leaves a family without series out of the exposition, and alerts want zeros, not gaps.
pub const REQUEST_TYPES: [&str; 7] = [
    "Access",
    "Portability",
    "Rectification",
    "Erasure",
    "Restriction",
    "Objection",
    "ConsentWithdrawal",
];

/// Every metric family the operator exposes.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub leader: Gauge,
    pub requests: Family<RequestLabels, Gauge>,
    pub overdue_requests: Gauge,
    pub completion_time: Histogram,
    pub jobs: Family<JobLabels, Counter>,
}

fn completion_histogram() -> Histogram {
    // One minute to about three months: statutory deadlines are days to weeks.
    Histogram::new(exponential_buckets(60.0, 4.0, 10))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("privacy_operator");
        let reconciles = Counter::default();
        registry.register(
            "reconciles",
            "DataSubjectRequest reconciles run",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed DataSubjectRequest reconciles, by reason",
            reconcile_errors.clone(),
        );
        // 1 ms to about 16 s.
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica is the elected leader (always 1 without leader election)",
            leader.clone(),
        );
        let requests = Family::<RequestLabels, Gauge>::default();
        registry.register(
            "requests",
            "DataSubjectRequests by type and phase",
            requests.clone(),
        );
        let overdue_requests = Gauge::default();
        registry.register(
            "requests_overdue",
            "Unfinished DataSubjectRequests past their statutory due date",
            overdue_requests.clone(),
        );
        let completion_time = completion_histogram();
        registry.register(
            "request_completion_seconds",
            "Time from receipt to completion of DataSubjectRequests",
            completion_time.clone(),
        );
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register("jobs", "Finished worker Jobs, by outcome", jobs.clone());
        for t in REQUEST_TYPES {
            let _ = requests.get_or_create(&RequestLabels {
                r#type: t.into(),
                phase: "Pending".into(),
            });
        }
        for reason in ERROR_REASONS {
            let _ = reconcile_errors.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        for outcome in ["succeeded", "failed"] {
            let _ = jobs.get_or_create(&JobLabels {
                outcome: outcome.into(),
            });
        }
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            leader,
            requests,
            overdue_requests,
            completion_time,
            jobs,
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Records one finished reconcile.
pub fn record_reconcile(elapsed: Duration, error: Option<&Error>) {
    let m = global();
    m.reconciles.inc();
    m.reconcile_duration.observe(elapsed.as_secs_f64());
    if let Some(e) = error {
        m.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: error_reason(e).into(),
            })
            .inc();
    }
}

/// Every value of [`error_reason`], whose series exist from the start.
const ERROR_REASONS: [&str; 15] = [
    "Conflict",
    "NotFound",
    "ServerError",
    "APIError",
    "Transport",
    "Config",
    "IO",
    "Emulator",
    "Worker",
    "NotImplemented",
    "Serialization",
    "MissingField",
    "NotOwned",
    "TaskInput",
    "Storage",
];

/// A short, bounded label for an error (never its message, which may name objects).
pub fn error_reason(e: &Error) -> &'static str {
    match e {
        Error::Kube(kube::Error::Api(s)) if s.is_conflict() || s.code == 409 => "Conflict",
        Error::Kube(kube::Error::Api(s)) if s.is_not_found() => "NotFound",
        Error::Kube(kube::Error::Api(s)) if s.code >= 500 => "ServerError",
        Error::Kube(kube::Error::Api(_)) => "APIError",
        Error::Kube(_) => "Transport",
        Error::KubeConfig(_) | Error::Config(_) => "Config",
        Error::Io { .. } => "IO",
        Error::Emulator(_) => "Emulator",
        Error::Worker(_) => "Worker",
        Error::NotImplemented(_) => "NotImplemented",
        Error::Yaml(_) | Error::Json(_) => "Serialization",
        Error::MissingField(_) => "MissingField",
        Error::NotOwned { .. } => "NotOwned",
        Error::TaskInput(_) => "TaskInput",
        Error::Storage(_) => "Storage",
        // Not a reconcile error; counted as configuration if it ever reaches here.
        Error::LeadershipLost(_) => "Config",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_in_text_format() {
        record_reconcile(Duration::from_millis(3), Some(&Error::MissingField("x")));
        let text = global().encode();
        for family in [
            "# TYPE privacy_operator_reconciles counter",
            "# TYPE privacy_operator_reconcile_errors counter",
            "# TYPE privacy_operator_reconcile_duration_seconds histogram",
            "# TYPE privacy_operator_leader gauge",
            "# TYPE privacy_operator_requests gauge",
            "# TYPE privacy_operator_requests_overdue gauge",
            "# TYPE privacy_operator_request_completion_seconds histogram",
            "# TYPE privacy_operator_jobs counter",
        ] {
            assert!(text.contains(family), "{family} missing from:\n{text}");
        }
        assert!(text.contains("privacy_operator_reconcile_errors_total{reason=\"MissingField\"}"));
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("privacy_operator_reconcile_errors_total{reason=\"Conflict\"} 0"));
        let reason = error_reason(&Error::TaskInput("x".into()));
        assert!(ERROR_REASONS.contains(&reason));
    }
}
