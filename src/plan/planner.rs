//! The working state of one planning pass: the status being built, the actions and Events
//! decided so far, and the instants at which the request must be looked at again.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    DataSubjectRequestSpec, DataSubjectRequestStatus, RetentionPolicySpec,
    conditions::{HasConditions, Status},
    request::SystemProgress,
};

use super::{
    jobs::{JobStep, job_name},
    model::{Action, Event, EventType, JobRequest, PlanInput, SystemInfo},
    timeline,
};

/// How long a free Job slot is waited for before looking again, when no Job of ours ends
/// sooner (other requests' Jobs do not wake this one unless the controller maps them).
pub const SLOT_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct Planner<'a> {
    pub input: &'a PlanInput,
    /// The injected clock, exact.
    pub now: Timestamp,
    /// `now` floored to whole seconds: every time written to status, because metav1.Time
    /// keeps seconds only and a value must read back exactly as planned.
    pub stamp: Timestamp,
    pub old: &'a DataSubjectRequestStatus,
    pub status: DataSubjectRequestStatus,
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
    /// Per-system failures whose retry budget is spent, as messages that say what to do.
    pub failures: Vec<String>,
    pub waiting_for_slots: BTreeSet<String>,
    wakeups: Vec<Timestamp>,
    dispatched: BTreeMap<String, u32>,
}

/// How a condition compares with the one in the status the pass started from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Change {
    /// New, or its status (True/False/Unknown) differs.
    pub transitioned: bool,
    /// Its status or reason differs.
    pub reason_changed: bool,
}

impl<'a> Planner<'a> {
    pub fn new(input: &'a PlanInput, now: Timestamp) -> Self {
        Planner {
            input,
            now,
            stamp: timeline::floor(now),
            old: &input.request.status,
            status: input.request.status.clone(),
            actions: Vec::new(),
            events: Vec::new(),
            failures: Vec::new(),
            waiting_for_slots: BTreeSet::new(),
            wakeups: Vec::new(),
            dispatched: BTreeMap::new(),
        }
    }

    pub fn spec(&self) -> &'a DataSubjectRequestSpec {
        &self.input.request.spec
    }

    pub fn policy(&self) -> &'a RetentionPolicySpec {
        &self.input.context.policy
    }

    pub fn generation(&self) -> Option<i64> {
        self.input.request.generation
    }

    pub fn system(&self, name: &str) -> Option<&'a SystemInfo> {
        self.input.context.systems.iter().find(|s| s.name == name)
    }

    /// Sets a condition on the status being built.
    pub fn set(&mut self, type_: &str, status: Status, reason: &str, message: &str) -> Change {
        let generation = self.generation();
        self.status
            .set_condition(type_, status, reason, message, generation, self.stamp);
        let old = self.old.condition(type_);
        Change {
            transitioned: old.is_none_or(|c| c.status != status.as_str()),
            reason_changed: old.is_none_or(|c| c.status != status.as_str() || c.reason != reason),
        }
    }

    pub fn remove(&mut self, type_: &str) {
        self.status.remove_condition(type_);
    }

    /// True when the condition was True in the status the pass started from.
    pub fn was_true(&self, type_: &str) -> bool {
        self.old.is_true(type_)
    }

    pub fn event(&mut self, type_: EventType, reason: &str, message: impl Into<String>) {
        self.events.push(Event {
            type_,
            reason: reason.to_string(),
            message: message.into(),
        });
    }

    /// Look at the request again at `at` (ignored unless in the future).
    pub fn wake_at(&mut self, at: Timestamp) {
        if at > self.now {
            self.wakeups.push(at);
        }
    }

    /// The earliest future instant asked for, if any.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.wakeups.iter().min().copied()
    }

    /// Creates the Job for `attempt` of `step` on `system` unless the system's concurrency
    /// limit is reached or a Job of that name already exists. Returns the Job's name when
    /// created.
    pub fn dispatch(&mut self, system: &str, step: JobStep, attempt: u32) -> Option<String> {
        let name = job_name(&self.input.request.name, system, step, attempt);
        if self.input.children.jobs.iter().any(|j| j.name == name) {
            return None;
        }
        let info = self.system(system)?;
        let used = info.running_jobs + self.dispatched.get(system).copied().unwrap_or(0);
        if used >= info.concurrency.max(1) {
            self.waiting_for_slots.insert(system.to_string());
            self.wakeups.push(self.now + SLOT_RETRY);
            return None;
        }
        *self.dispatched.entry(system.to_string()).or_default() += 1;
        self.actions.push(Action::CreateJob(JobRequest {
            name: name.clone(),
            system: system.to_string(),
            step,
            attempt,
        }));
        Some(name)
    }

    /// The entry of `system` in the status the pass started from.
    pub fn old_entry(&self, system: &str) -> Option<&'a SystemProgress> {
        self.old.systems.iter().find(|e| e.name == system)
    }

    /// Replaces (or adds) the entry of a system. `at` is when its phase changed, used only
    /// when the step or phase differs from the old entry, so that an unchanged entry is
    /// written back identical.
    pub fn put_entry(&mut self, mut entry: SystemProgress, at: Timestamp) {
        let old = self.old_entry(&entry.name);
        entry.last_transition_time = match old {
            Some(o) if o.step == entry.step && o.phase == entry.phase => {
                o.last_transition_time.clone()
            }
            _ => Some(Time(timeline::floor(at))),
        };
        match self
            .status
            .systems
            .iter_mut()
            .find(|e| e.name == entry.name)
        {
            Some(e) => *e = entry,
            None => self.status.systems.push(entry),
        }
    }

    /// Replaces the message of a system's entry in the status being built.
    pub fn set_entry_message(&mut self, system: &str, message: Option<String>) {
        if let Some(e) = self.status.systems.iter_mut().find(|e| e.name == system) {
            e.message = message;
        }
    }
}
