//! Scenario tests of the planner: a small simulation plays the controller (applies actions,
//! writes status through a JSON round trip like the API server) and the Job controller (the
//! test marks Jobs succeeded or failed), while an injected clock moves over weeks.
//!
//! Every pass is checked for invariants: no identifier of the subject in the plan, no Job
//! created twice, and planning again from the result changes nothing.

mod confirmation;
mod erasure;
mod export;
mod lifecycle;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::api::{
    DataSubjectRequestSpec, DataSubjectRequestStatus, RetentionPolicySpec,
    conditions::HasConditions, datasystem::Vendor, request::RequestPhase,
};

use super::{
    Action, Children, Context, Event, JobInfo, JobState, JobStep, Plan, PlanInput, RequestState,
    SystemInfo, plan,
};

/// The subject's identifiers: none may ever appear in a plan.
pub(super) const SECRETS: [&str; 4] = [
    "jane.doe@example.com",
    "+4915112345678",
    "user-88123",
    "Doe-Smith",
];

pub(super) fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub(super) fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

pub(super) fn first_party(name: &str) -> SystemInfo {
    SystemInfo {
        name: name.into(),
        third_party: false,
        vendor: None,
        exportable: true,
        concurrency: 4,
        running_jobs: 0,
    }
}

pub(super) fn third_party(name: &str, exportable: bool) -> SystemInfo {
    SystemInfo {
        name: name.into(),
        third_party: true,
        vendor: Some(Vendor {
            name: "Acme Mailer Ltd".into(),
            contact: "privacy@acme-mailer.example".into(),
        }),
        exportable,
        concurrency: 4,
        running_jobs: 0,
    }
}

pub(super) fn spec(type_: &str, regulation: &str) -> DataSubjectRequestSpec {
    let mut v = json!({
        "type": type_,
        "regulation": regulation,
        "subject": {"identifiers": {
            "email": SECRETS[0],
            "phone": SECRETS[1],
            "userId": SECRETS[2],
        }},
        "verification": {
            "method": "Email",
            "verifiedBy": "support-desk",
            "verifiedAt": "2024-01-01T00:00:00Z",
        },
    });
    match type_ {
        "Rectification" => {
            v["rectification"] = json!({"changes": [
                {"field": "last_name", "value": SECRETS[3], "system": "crm"}
            ]});
        }
        "Restriction" | "Objection" | "ConsentWithdrawal" => {
            v["restrictedPurposes"] = json!(["marketing-email", "profiling"]);
        }
        _ => {}
    }
    serde_json::from_value(v).unwrap()
}

pub(super) struct Sim {
    pub input: PlanInput,
    pub now: Timestamp,
    pub events: Vec<Event>,
    /// Status writes so far.
    pub writes: usize,
    /// Jobs created so far.
    pub created: Vec<String>,
    pub assembled: Vec<Action>,
    /// DeleteExport actions carried out.
    pub exports_deleted: usize,
    /// The finalizer came off: the request is gone.
    pub gone: bool,
    /// The controller crashes after the next pass's actions, before its status write.
    pub crash_before_write: bool,
    pub last: Option<Plan>,
}

impl Sim {
    pub fn new(type_: &str, regulation: &str, systems: Vec<SystemInfo>, now: &str) -> Self {
        let now = ts(now);
        Sim {
            input: PlanInput {
                request: RequestState {
                    name: "req-1".into(),
                    generation: Some(1),
                    created_at: Some(now),
                    deleting: false,
                    has_finalizer: false,
                    spec: spec(type_, regulation),
                    status: DataSubjectRequestStatus::default(),
                },
                context: Context {
                    systems,
                    policy: RetentionPolicySpec::default(),
                    policy_name: None,
                    problems: Vec::new(),
                    subject_digest: Some(
                        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                            .parse()
                            .unwrap(),
                    ),
                    in_flight: Vec::new(),
                    purposes: None,
                },
                children: Children::default(),
            },
            now,
            events: Vec::new(),
            writes: 0,
            created: Vec::new(),
            assembled: Vec::new(),
            exports_deleted: 0,
            gone: false,
            crash_before_write: false,
            last: None,
        }
    }

    pub fn status(&self) -> &DataSubjectRequestStatus {
        &self.input.request.status
    }

    pub fn phase(&self) -> Option<RequestPhase> {
        self.status().phase
    }

    /// `(status, reason)` of a condition.
    pub fn cond(&self, type_: &str) -> Option<(String, String)> {
        self.status()
            .condition(type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.status().is_true(type_)
    }

    pub fn time(
        &self,
        t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    ) -> Timestamp {
        t.as_ref().expect("time is set").0
    }

    /// Changes the spec as a user would (bumping metadata.generation).
    pub fn edit(&mut self, f: impl FnOnce(&mut DataSubjectRequestSpec)) {
        f(&mut self.input.request.spec);
        let g = self.input.request.generation.unwrap_or(0);
        self.input.request.generation = Some(g + 1);
    }

    /// Plans at the current time without applying anything.
    pub fn peek(&self) -> Plan {
        plan(&self.input, self.now)
    }

    /// Plans, checks the invariants, and applies the plan like the controller would.
    pub fn step(&mut self) -> Plan {
        assert!(!self.gone, "the request is gone");
        let p = plan(&self.input, self.now);
        check_no_identifiers(&p);
        for a in &p.actions {
            if let Action::CreateJob(j) = a {
                assert!(
                    !self.input.children.jobs.iter().any(|x| x.name == j.name),
                    "Job {} created twice",
                    j.name
                );
            }
        }
        let crashed = std::mem::take(&mut self.crash_before_write) && p.status_changed;
        self.apply(&p, crashed);
        if !self.gone && !crashed {
            // Planning again from the result, at the same instant, changes nothing.
            let again = plan(&self.input, self.now);
            assert!(
                again.is_noop(),
                "second pass is not a no-op at {}: {:#?}\nstatus before: {:#?}",
                self.now,
                again.actions,
                self.input.request.status
            );
        }
        self.last = Some(p.clone());
        p
    }

    fn apply(&mut self, p: &Plan, crashed: bool) {
        let mut status = p.status.clone();
        let (before, after) = p.split();
        assert!(
            after
                .iter()
                .all(|a| matches!(a, Action::RemoveFinalizer | Action::RecordEvent(_))),
            "only RemoveFinalizer and Events come after the status write: {:#?}",
            p.actions
        );
        assert!(
            before
                .iter()
                .all(|a| !matches!(a, Action::RemoveFinalizer | Action::RecordEvent(_)))
        );
        for a in &p.actions {
            match a {
                Action::AddFinalizer => self.input.request.has_finalizer = true,
                Action::RemoveFinalizer => self.gone = true,
                Action::CreateJob(j) => {
                    self.created.push(j.name.clone());
                    self.input.children.jobs.push(JobInfo {
                        name: j.name.clone(),
                        system: j.system.clone(),
                        step: j.step,
                        attempt: j.attempt,
                        created_at: self.now,
                        state: JobState::Active,
                        deleting: false,
                        result: None,
                    });
                    self.input.children.secrets.push(j.name.clone());
                    self.running(&j.system, 1);
                }
                Action::DeleteJob { name } => {
                    self.input.children.jobs.retain(|j| &j.name != name);
                }
                Action::DeleteSecret { name } => {
                    self.input.children.secrets.retain(|s| s != name);
                }
                Action::DeleteExport => self.exports_deleted += 1,
                Action::AssembleExport { .. } => {
                    self.assembled.push(a.clone());
                    let e = status.export.get_or_insert_with(Default::default);
                    e.location = Some("s3://exports/ns/req-1/manifest.json".into());
                    e.sha256 = Some("ab".repeat(32));
                    e.size = Some(1234);
                }
                Action::RecordEvent(e) => self.events.push(e.clone()),
            }
        }
        if p.status_changed && !crashed {
            self.writes += 1;
            // Through JSON, as the API server stores it (times keep whole seconds).
            let json = serde_json::to_value(&status).unwrap();
            self.input.request.status = serde_json::from_value(json).unwrap();
        }
    }

    fn running(&mut self, system: &str, delta: i64) {
        if let Some(s) = self
            .input
            .context
            .systems
            .iter_mut()
            .find(|s| s.name == system)
        {
            s.running_jobs = (s.running_jobs as i64 + delta).max(0) as u32;
        }
    }

    fn finish_job(&mut self, system: &str, step: JobStep, state: JobState) -> String {
        let job = self
            .input
            .children
            .jobs
            .iter_mut()
            .filter(|j| j.system == system && j.step == step)
            .max_by_key(|j| j.attempt)
            .unwrap_or_else(|| panic!("no {step:?} Job on {system}"));
        assert_eq!(job.state, JobState::Active, "{} is not active", job.name);
        job.state = state;
        let name = job.name.clone();
        self.running(system, -1);
        name
    }

    pub fn succeed(&mut self, system: &str, step: JobStep) -> String {
        let at = self.now;
        self.finish_job(
            system,
            step,
            JobState::Succeeded {
                completed_at: at,
                records: Some(21),
            },
        )
    }

    pub fn fail(&mut self, system: &str, step: JobStep, reason: &str) -> String {
        let at = self.now;
        self.finish_job(
            system,
            step,
            JobState::Failed {
                reason: reason.into(),
                failed_at: at,
            },
        )
    }

    pub fn advance(&mut self, d: SignedDuration) {
        self.now = self.now.checked_add(d).unwrap();
    }

    /// Follows the requeues (as the controller's timer would) until `until`, planning at each
    /// wake-up. Returns the number of passes.
    pub fn run_until(&mut self, until: Timestamp) -> usize {
        let mut passes = 0;
        loop {
            let p = self.step();
            passes += 1;
            let Some(after) = p.requeue_after else { break };
            let next = self
                .now
                .checked_add(SignedDuration::try_from(after).unwrap())
                .unwrap();
            if next > until {
                break;
            }
            assert!(passes < 1000, "requeue loop");
            self.now = next;
        }
        self.now = self.now.max(until);
        passes
    }

    pub fn jobs_of(&self, step: JobStep) -> Vec<&JobInfo> {
        self.input
            .children
            .jobs
            .iter()
            .filter(|j| j.step == step)
            .collect()
    }

    pub fn created_in(p: &Plan) -> Vec<(String, JobStep, u32)> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateJob(j) => Some((j.system.clone(), j.step, j.attempt)),
                _ => None,
            })
            .collect()
    }

    pub fn event_reasons(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.reason.as_str()).collect()
    }
}

pub(super) fn check_no_identifiers(p: &Plan) {
    let text = serde_json::to_string(p).unwrap();
    for s in SECRETS {
        assert!(!text.contains(s), "{s} leaked into the plan: {text}");
    }
}
