//! Fault injection for reliability tests, switchable at run time through
//! `EmulatorHandle::faults()`: failing requests (409, 429, 500), latency, dropped watch
//! streams and early history expiry. Faults only affect HTTP requests, never the handle's
//! in-process API. Randomness comes from a seeded PRNG so that runs repeat.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::ops::Core;
use crate::status::ApiError;

/// The error an injected fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// 409 Conflict, as on a stale resourceVersion.
    Conflict,
    /// 429 TooManyRequests with `Retry-After`.
    TooManyRequests { retry_after_seconds: u64 },
    /// 500 InternalError.
    InternalError,
}

/// Which requests fail, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub kind: FaultKind,
    /// Chance in [0, 1] that a matching request fails (drawn from the seeded PRNG).
    pub probability: f64,
    /// Fail every Nth matching request (1 = every one); combined with `probability` by "or".
    pub every_nth: Option<u64>,
    /// Only create/update/patch/delete/deletecollection.
    pub writes_only: bool,
    /// Only this resource: plural (`jobs`) or plural.group (`jobs.batch`).
    pub resource: Option<String>,
    /// Stop after this many injected failures.
    pub max_failures: Option<u64>,
}

impl FaultRule {
    /// A rule that never fires until given a probability or period.
    pub fn new(kind: FaultKind) -> Self {
        FaultRule {
            kind,
            probability: 0.0,
            every_nth: None,
            writes_only: false,
            resource: None,
            max_failures: None,
        }
    }

    pub fn probability(mut self, p: f64) -> Self {
        self.probability = p.clamp(0.0, 1.0);
        self
    }

    pub fn every_nth(mut self, n: u64) -> Self {
        self.every_nth = Some(n.max(1));
        self
    }

    pub fn writes_only(mut self) -> Self {
        self.writes_only = true;
        self
    }

    pub fn resource(mut self, r: impl Into<String>) -> Self {
        self.resource = Some(r.into());
        self
    }

    pub fn max_failures(mut self, n: u64) -> Self {
        self.max_failures = Some(n);
        self
    }

    fn matches(&self, verb: &str, plural: &str, group: &str) -> bool {
        if self.writes_only && !is_write(verb) {
            return false;
        }
        match &self.resource {
            None => true,
            Some(r) => match r.split_once('.') {
                Some((p, g)) => p == plural && g == group,
                None => r == plural,
            },
        }
    }
}

pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

struct RuleState {
    rule: FaultRule,
    seen: u64,
    fired: u64,
}

struct Inner {
    rules: Vec<RuleState>,
    rng: u64,
    latency: Duration,
    drop_after_events: Option<u64>,
    injected: u64,
}

/// Run-time fault switches. Cheap to clone through `Arc`.
pub struct Faults {
    inner: Mutex<Inner>,
    drop_watches: watch::Sender<u64>,
    core: Arc<Core>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        let (drop_watches, _) = watch::channel(0);
        Faults {
            inner: Mutex::new(Inner {
                rules: Vec::new(),
                rng: 0x9E37_79B9_7F4A_7C15,
                latency: Duration::ZERO,
                drop_after_events: None,
                injected: 0,
            }),
            drop_watches,
            core,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seeds the PRNG that probabilistic rules draw from.
    pub fn set_seed(&self, seed: u64) {
        self.lock().rng = seed;
    }

    pub fn add_rule(&self, rule: FaultRule) {
        self.lock().rules.push(RuleState {
            rule,
            seen: 0,
            fired: 0,
        });
    }

    /// Removes every rule, latency and watch-drop setting.
    pub fn clear(&self) {
        let mut g = self.lock();
        g.rules.clear();
        g.latency = Duration::ZERO;
        g.drop_after_events = None;
    }

    /// Delay added before every API request is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Ends every open watch stream now (clients see the stream end and re-watch).
    pub fn drop_watches_now(&self) {
        self.drop_watches.send_modify(|g| *g += 1);
    }

    /// Ends each watch stream after it has sent `n` events (`None` turns this off).
    pub fn drop_watches_after(&self, n: Option<u64>) {
        self.lock().drop_after_events = n;
    }

    /// Forgets the watch history so that resuming from any older resourceVersion gets
    /// 410 Gone, and ends open watches so that clients must resume.
    pub fn expire_history(&self) {
        self.core.store.lock().expire_history();
        self.drop_watches_now();
    }

    /// How many requests failed on purpose so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    pub(crate) fn latency(&self) -> Duration {
        self.lock().latency
    }

    pub(crate) fn drop_after_events(&self) -> Option<u64> {
        self.lock().drop_after_events
    }

    pub(crate) fn subscribe_drops(&self) -> watch::Receiver<u64> {
        self.drop_watches.subscribe()
    }

    /// Decides whether this request fails, and with what.
    pub(crate) fn check(
        &self,
        verb: &str,
        group: &str,
        plural: &str,
        name: &str,
    ) -> Option<ApiError> {
        let mut g = self.lock();
        let mut hit = None;
        for i in 0..g.rules.len() {
            if !g.rules[i].rule.matches(verb, plural, group) {
                continue;
            }
            if g.rules[i]
                .rule
                .max_failures
                .is_some_and(|m| g.rules[i].fired >= m)
            {
                continue;
            }
            g.rules[i].seen += 1;
            let periodic = g.rules[i]
                .rule
                .every_nth
                .is_some_and(|n| g.rules[i].seen.is_multiple_of(n));
            let p = g.rules[i].rule.probability;
            let random = p > 0.0 && next_f64(&mut g.rng) < p;
            if periodic || random {
                g.rules[i].fired += 1;
                hit = Some(g.rules[i].rule.kind);
                break;
            }
        }
        let kind = hit?;
        g.injected += 1;
        Some(match kind {
            FaultKind::Conflict => ApiError::conflict(
                group,
                plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            FaultKind::TooManyRequests {
                retry_after_seconds,
            } => ApiError::too_many_requests_after(
                "the server has received too many requests and has asked us to try again later",
                retry_after_seconds,
            ),
            FaultKind::InternalError => ApiError::internal(
                "an error on the server (\"injected fault\") has prevented the request from succeeding",
            ),
        })
    }
}

/// splitmix64: tiny, seedable and good enough for fault schedules.
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn next_f64(state: &mut u64) -> f64 {
    (next_u64(state) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> Faults {
        Faults::new(Arc::new(Core::new(10)))
    }

    #[test]
    fn every_nth_and_filters() {
        let f = faults();
        f.add_rule(
            FaultRule::new(FaultKind::InternalError)
                .every_nth(2)
                .writes_only()
                .resource("jobs.batch"),
        );
        assert!(f.check("create", "batch", "jobs", "a").is_none());
        assert_eq!(f.check("create", "batch", "jobs", "a").unwrap().code, 500);
        assert!(f.check("get", "batch", "jobs", "a").is_none());
        assert!(f.check("create", "", "secrets", "a").is_none());
        assert_eq!(f.injected(), 1);
    }

    #[test]
    fn seeded_probability_repeats() {
        let run = || {
            let f = faults();
            f.set_seed(42);
            f.add_rule(FaultRule::new(FaultKind::Conflict).probability(0.5));
            (0..64)
                .map(|_| f.check("update", "", "secrets", "x").is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((16..=48).contains(&hits), "{hits}");
    }

    #[test]
    fn too_many_requests_and_max_failures() {
        let f = faults();
        f.add_rule(
            FaultRule::new(FaultKind::TooManyRequests {
                retry_after_seconds: 2,
            })
            .every_nth(1)
            .max_failures(1),
        );
        let e = f.check("list", "", "secrets", "").unwrap();
        assert_eq!((e.code, e.retry_after_seconds()), (429, Some(2)));
        assert!(f.check("list", "", "secrets", "").is_none());
    }
}
