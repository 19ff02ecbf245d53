//! Carrying out a plan. Every effect is idempotent: a Job or Secret that already exists and
//! is ours counts as created, a delete of something gone counts as done, finalizer and status
//! writes carry the resourceVersion they were computed from (a concurrent change is a 409
//! and the request is planned again from fresh state).

use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::events::{Event as KEvent, EventType as KEventType},
};
use serde_json::{Map, Value, json};

use crate::api::{DataSubjectRequest, DataSubjectRequestStatus, IdentifierSet, RequestType};
use crate::plan::{Action, Event, EventType, FINALIZER, JobRequest, JobState, JobStep, Plan};
use crate::storage::StorageTarget;
use crate::{Error, Result};

use super::{
    Context, MANAGER, children, export,
    gather::{self, Gathered},
    worker,
};
use crate::worker::task::{
    CONTRACT_VERSION, FieldChange, RequestRef, SystemRef, Task, WebhookSecrets,
};

/// One reconcile's effects, with what it learnt on the way.
struct Effects<'a> {
    ctx: &'a Context,
    dsr: &'a DataSubjectRequest,
    ns: &'a str,
    gathered: &'a Gathered,
    /// The request's resourceVersion after our last write to it.
    resource_version: Option<String>,
    /// The versions of the request this pass went through: the one read, then one per
    /// write that changed it.
    written: Vec<String>,
    /// The subject's identifiers, read at most once per reconcile.
    subject: Option<IdentifierSet>,
    /// The status to write (the plan's, plus the export's results).
    status: DataSubjectRequestStatus,
}

/// Carries out `plan`. Returns the request's resourceVersions this pass superseded: the one
/// the plan was made from and those of its own intermediate writes, all but the last (a
/// later pass handed one of them knows its cache has not caught up with our writes yet).
pub(super) async fn apply(
    ctx: &Context,
    dsr: &DataSubjectRequest,
    ns: &str,
    gathered: &Gathered,
    plan: &Plan,
) -> Result<Vec<String>> {
    let mut fx = Effects {
        ctx,
        dsr,
        ns,
        gathered,
        resource_version: dsr.resource_version(),
        written: Vec::new(),
        subject: gathered.subject.clone(),
        status: plan.status.clone(),
    };
    let (before, after) = plan.split();
    for action in before {
        fx.apply_one(action).await?;
    }
    fx.repair_missing_secrets().await?;
    if plan.status_changed {
        // The ledger entry goes first: if it cannot be written, Purged is not recorded and
        // the next pass appends again (same key, so at most once).
        if crate::ledger::hook::purge_completing(dsr.status.as_ref(), &fx.status) {
            fx.append_ledger().await?;
        }
        fx.write_status().await?;
    }
    for action in after {
        fx.apply_one(action).await?;
    }
    let mut superseded = std::mem::take(&mut fx.written);
    // The last version written is the current one, not superseded.
    superseded.pop();
    Ok(superseded)
}

impl Effects<'_> {
    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.ctx.client.clone(), self.ns)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), self.ns)
    }

    fn requests(&self) -> Api<DataSubjectRequest> {
        Api::namespaced(self.ctx.client.clone(), self.ns)
    }

    fn name(&self) -> String {
        self.dsr.name_any()
    }

    fn uid(&self) -> Result<String> {
        self.dsr.uid().ok_or(Error::MissingField("metadata.uid"))
    }

    async fn apply_one(&mut self, action: &Action) -> Result<()> {
        match action {
            Action::AddFinalizer => {
                let mut finalizers = self.dsr.finalizers().to_vec();
                if !finalizers.iter().any(|f| f == FINALIZER) {
                    finalizers.push(FINALIZER.to_string());
                    self.patch_finalizers(finalizers).await?;
                }
            }
            Action::RemoveFinalizer => {
                let finalizers: Vec<String> = self
                    .dsr
                    .finalizers()
                    .iter()
                    .filter(|f| *f != FINALIZER)
                    .cloned()
                    .collect();
                if finalizers.len() != self.dsr.finalizers().len() {
                    self.patch_finalizers(finalizers).await?;
                }
            }
            Action::CreateJob(job) => self.create_job(job).await?,
            Action::DeleteJob { name } => {
                ignore_not_found(self.jobs().delete(name, &DeleteParams::background()).await)?;
            }
            Action::DeleteSecret { name } => {
                ignore_not_found(
                    self.secrets()
                        .delete(name, &DeleteParams::background())
                        .await,
                )?;
            }
            Action::AssembleExport {
                systems,
                integrations,
            } => {
                let now = self.ctx.clock.now();
                export::assemble(
                    self.ctx.storage.as_ref(),
                    export::Request {
                        namespace: self.ns,
                        name: &self.name(),
                        spec: self.dsr.spec.export.as_ref(),
                        jobs: &self.gathered.input.children.jobs,
                        systems,
                        integrations,
                    },
                    &mut self.status,
                    now,
                )
                .await?
            }
            Action::DeleteExport => {
                export::delete(self.ctx.storage.as_ref(), self.ns, &self.name()).await?
            }
            Action::RecordEvent(event) => self.record_event(event).await,
        }
        Ok(())
    }

    /// Merge patch of the whole list, guarded by the resourceVersion it was computed from.
    async fn patch_finalizers(&mut self, finalizers: Vec<String>) -> Result<()> {
        let patch = json!({"metadata": {
            "resourceVersion": self.resource_version,
            "finalizers": finalizers,
        }});
        let patched = self
            .requests()
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.wrote(patched.resource_version());
        Ok(())
    }

    /// Records the version a write produced (a write that changed nothing keeps it).
    fn wrote(&mut self, rv: Option<String>) {
        if rv == self.resource_version {
            return;
        }
        if self.written.is_empty()
            && let Some(read) = &self.resource_version
        {
            self.written.push(read.clone());
        }
        if let Some(v) = &rv {
            self.written.push(v.clone());
        }
        self.resource_version = rv;
    }

    /// Writes the planned status as a merge patch of what changed (fields that went away are
    /// nulled), guarded by the resourceVersion the plan was made from.
    async fn write_status(&mut self) -> Result<()> {
        let old = serde_json::to_value(self.dsr.status.clone().unwrap_or_default())?;
        let new = serde_json::to_value(&self.status)?;
        let diff = merge_diff(&old, &new);
        if diff.as_object().is_some_and(Map::is_empty) {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"resourceVersion": self.resource_version},
            "status": diff,
        });
        let patched = self
            .requests()
            .patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.wrote(patched.resource_version());
        Ok(())
    }

    /// Creates the Job (owned by the request), then its task Secret (owned by the Job).
    async fn create_job(&mut self, job: &JobRequest) -> Result<()> {
        let system = self.gathered.systems.get(&job.system).ok_or_else(|| {
            Error::TaskInput(format!(
                "DataSystem {} vanished while its Job was being created",
                job.system
            ))
        })?;
        let owner = self
            .dsr
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("metadata.uid"))?;
        let manifest = worker::job_manifest(
            self.ns,
            &self.name(),
            owner,
            job,
            &system.spec,
            &self.ctx.config.worker,
        )?;
        let params = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let created = match self.jobs().create(&params, &manifest).await {
            Ok(j) => j,
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let existing = self.jobs().get(&job.name).await?;
                let uid = self.uid()?;
                if !worker::controlled_by(existing.metadata.owner_references.as_deref(), &uid) {
                    return Err(Error::NotOwned {
                        kind: "Job",
                        name: job.name.clone(),
                        owner: format!("DataSubjectRequest {}", self.name()),
                    });
                }
                existing
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(
            request = %format!("{}/{}", self.ns, self.name()),
            job = %job.name,
            system = %job.system,
            step = job.step.as_str(),
            attempt = job.attempt,
            "created worker Job"
        );
        self.create_task_secret(&created, job).await
    }

    /// A Job whose Secret is missing (the controller stopped between the two writes) gets its
    /// Secret now, while it still runs.
    async fn repair_missing_secrets(&mut self) -> Result<()> {
        let now = self.ctx.clock.now();
        let missing: Vec<(Job, JobRequest)> = self
            .gathered
            .jobs
            .iter()
            .filter_map(|j| {
                let info = children::job_info(j, now)?;
                let name = j.metadata.name.clone()?;
                let wanted = info.state == JobState::Active
                    && !info.deleting
                    && !self.gathered.secrets.contains(&name);
                wanted.then(|| {
                    (
                        j.clone(),
                        JobRequest {
                            name,
                            system: info.system,
                            step: info.step,
                            attempt: info.attempt,
                        },
                    )
                })
            })
            .collect();
        for (job, req) in missing {
            if !self.gathered.systems.contains_key(&req.system) {
                continue;
            }
            tracing::info!(job = %req.name, "re-creating the missing task Secret of a running Job");
            self.create_task_secret(&job, &req).await?;
        }
        Ok(())
    }

    async fn create_task_secret(&mut self, job: &Job, req: &JobRequest) -> Result<()> {
        let owner = worker::job_owner(job).ok_or(Error::MissingField("Job metadata.uid"))?;
        let job_uid = owner.uid.clone();
        let task = self.task(req).await?;
        let secret = worker::secret_manifest(
            self.ns,
            &req.name,
            worker::job_labels(&self.name(), req),
            owner,
            &task,
        )?;
        let params = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        match self.secrets().create(&params, &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let existing = self.secrets().get_metadata(&req.name).await?;
                if worker::controlled_by(existing.metadata.owner_references.as_deref(), &job_uid) {
                    Ok(())
                } else {
                    Err(Error::NotOwned {
                        kind: "Secret",
                        name: req.name.clone(),
                        owner: format!("Job {}", req.name),
                    })
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The worker's task; reads the subject, rectification values and the system's
    /// connection Secret when needed.
    /// Appends the purge to the erasure ledger (when the operator has one).
    async fn append_ledger(&mut self) -> Result<()> {
        let (Some(store), Some(key)) = (&self.ctx.storage, &self.ctx.ledger_key) else {
            tracing::warn!(
                request = %format!("{}/{}", self.ns, self.name()),
                "purge not recorded in the erasure ledger: the operator has no object storage or ledger key"
            );
            return Ok(());
        };
        let subject = match self.subject.clone() {
            Some(s) => s,
            None => {
                let s = gather::read_subject(self.ctx, self.dsr, self.ns)
                    .await?
                    .map_err(|p| Error::TaskInput(p.message()))?;
                self.subject = Some(s.clone());
                s
            }
        };
        let specs = self
            .gathered
            .systems
            .iter()
            .map(|(n, s)| (n.clone(), s.spec.clone()))
            .collect();
        let name = self.name();
        let uid = self.dsr.uid();
        let request = crate::ledger::hook::PurgedRequest {
            namespace: self.ns,
            name: &name,
            uid: uid.as_deref(),
        };
        let Some(entry) = crate::ledger::hook::entry(&request, &self.status, &specs, &subject, key)
        else {
            return Ok(());
        };
        let wrote = crate::ledger::Ledger::new(store.clone())
            .append(&entry)
            .await?;
        tracing::info!(
            request = %format!("{}/{name}", self.ns),
            digest = %entry.subject.short(),
            entry = %entry.key(),
            wrote,
            "purge recorded in the erasure ledger"
        );
        Ok(())
    }

    async fn task(&mut self, req: &JobRequest) -> Result<Task> {
        let system = self.gathered.systems.get(&req.system).ok_or_else(|| {
            Error::TaskInput(format!("DataSystem {} is not in scope", req.system))
        })?;
        let identifiers = match self.subject.clone() {
            Some(s) => s,
            None => {
                let s = gather::read_subject(self.ctx, self.dsr, self.ns)
                    .await?
                    .map_err(|p| Error::TaskInput(p.message()))?;
                self.subject = Some(s.clone());
                s
            }
        };
        let spec = &self.dsr.spec;
        let mut changes = Vec::new();
        if spec.type_ == RequestType::Rectification
            && let Some(r) = &spec.rectification
        {
            for c in &r.changes {
                if c.system.as_ref().is_some_and(|s| s != &req.system) {
                    continue;
                }
                let value = match (&c.value, &c.value_from) {
                    (Some(v), _) => v.clone(),
                    (None, Some(from)) => {
                        self.secret_value(&from.name, &from.key, "a rectification valueFrom")
                            .await?
                    }
                    (None, None) => continue,
                };
                changes.push(FieldChange {
                    field: c.field.clone(),
                    table: c.table.clone(),
                    value,
                });
            }
        }
        let connection = match &system.spec.connector.sql {
            Some(sql) => Some(
                self.secret_value(
                    &sql.connection_secret_ref.name,
                    &sql.connection_secret_ref.key,
                    &format!("the connection of DataSystem {}", req.system),
                )
                .await?,
            ),
            None => None,
        };
        // Object storage: the credentials Secret's keys, named as environment variables.
        let credentials = match system
            .spec
            .connector
            .object_storage
            .as_ref()
            .and_then(|o| o.credentials_secret_ref.as_ref())
        {
            Some(r) => Api::<Secret>::namespaced(self.ctx.client.clone(), self.ns)
                .get_opt(&r.name)
                .await?
                .and_then(|s| s.data)
                .ok_or_else(|| {
                    Error::TaskInput(format!(
                        "Secret {} (the credentials of DataSystem {}) is missing or empty",
                        r.name, req.system
                    ))
                })?
                .into_iter()
                .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
                .collect(),
            None => Default::default(),
        };
        let webhook = match &system.spec.connector.http {
            Some(http) => {
                let what = format!("the webhook secrets of DataSystem {}", req.system);
                let hmac_secret = self
                    .secret_value(&http.hmac_secret_ref.name, &http.hmac_secret_ref.key, &what)
                    .await?;
                let bearer_token = match &http.auth_secret_ref {
                    Some(r) => Some(self.secret_value(&r.name, &r.key, &what).await?),
                    None => None,
                };
                Some(WebhookSecrets {
                    hmac_secret,
                    bearer_token,
                })
            }
            None => None,
        };
        Ok(Task {
            version: CONTRACT_VERSION.into(),
            request: RequestRef {
                namespace: self.ns.to_string(),
                name: self.name(),
                digest: identifiers.digest(&self.ctx.salt),
                uid: self.dsr.metadata.uid.clone(),
            },
            step: req.step,
            system: SystemRef {
                name: req.system.clone(),
                spec: system.spec.clone(),
            },
            connection,
            identifiers,
            changes,
            // Under a ConsentPolicy, the purposes that reach this system (groups resolved).
            purposes: match &self.gathered.input.context.purposes {
                Some(plan) => plan.purposes_for(&req.system),
                None => spec.restricted_purposes.clone(),
            },
            hash_salt: Some(hex::encode(&self.ctx.salt)),
            webhook,
            // Restore archives and quarantined objects of this request and system.
            quarantine: match req.step {
                JobStep::SoftDelete | JobStep::Restore | JobStep::Purge => {
                    Some(match &self.ctx.config.storage {
                        Some(_) => format!("quarantine/{}/{}/{}", self.ns, self.name(), req.system),
                        None => format!(
                            "{}/quarantine/{}/{}/{}",
                            self.ctx.config.worker.output_root.trim_end_matches('/'),
                            self.ns,
                            self.name(),
                            req.system
                        ),
                    })
                }
                _ => None,
            },
            // Workers derive the quarantine key from hash_salt; set this to use a dedicated key.
            quarantine_key: None,
            credentials,
            storage: self
                .ctx
                .config
                .storage
                .as_ref()
                .map(StorageTarget::for_workers)
                .unwrap_or_default(),
            output: match &self.ctx.config.storage {
                Some(_) => worker::result_prefix(self.ns, &self.name(), &req.system, req.step),
                None => worker::output_location(
                    &self.ctx.config.worker.output_root,
                    self.ns,
                    &self.name(),
                    req,
                ),
            },
            recipient: match req.step {
                JobStep::Export => spec.export.as_ref().and_then(|e| e.recipient.clone()),
                _ => None,
            },
        })
    }

    async fn secret_value(&self, name: &str, key: &str, what: &str) -> Result<String> {
        gather::read_secret_key(self.ctx, self.ns, name, key)
            .await?
            .ok_or_else(|| {
                Error::TaskInput(format!(
                    "Secret {name} key {key} ({what}) is missing or not UTF-8"
                ))
            })
    }

    /// Events are best effort: a failure is logged, never fails the reconcile (the status,
    /// already written, tells the same story).
    async fn record_event(&self, event: &Event) {
        let reference = self.dsr.object_ref(&());
        let k = KEvent {
            type_: match event.type_ {
                EventType::Normal => KEventType::Normal,
                EventType::Warning => KEventType::Warning,
            },
            reason: event.reason.clone(),
            note: Some(truncate(&event.message, 1024)),
            action: event.reason.clone(),
            secondary: None,
        };
        if let Err(e) = self.ctx.recorder.publish(&k, &reference).await {
            tracing::warn!(
                request = %format!("{}/{}", self.ns, self.name()),
                reason = %event.reason,
                error = %e,
                "could not record an Event"
            );
        }
    }
}

fn ignore_not_found<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed and new members,
/// and `null` for members that went away. Arrays are replaced whole, as merge patch does.
pub(super) fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if ov.is_object() && nv.is_object() => {
                        out.insert(k.clone(), merge_diff(ov, nv));
                    }
                    _ => {
                        out.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_diff_sends_changes_and_nulls_removals() {
        let old = json!({"phase": "InProgress", "export": {"records": 3, "format": "JSON"}, "duplicateOf": "x", "systems": [1, 2]});
        let new = json!({"phase": "Completed", "export": {"records": 3, "format": "CSV"}, "systems": [1, 2, 3]});
        assert_eq!(
            merge_diff(&old, &new),
            json!({"phase": "Completed", "export": {"format": "CSV"}, "duplicateOf": null, "systems": [1, 2, 3]})
        );
        assert_eq!(merge_diff(&new, &new), json!({}));
    }

    #[test]
    fn merge_diff_applied_gives_new() {
        // Apply the diff as RFC 7386 does and compare.
        fn apply(target: &mut Value, patch: &Value) {
            if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else if v.is_object() && t.get(k).is_some_and(Value::is_object) {
                        apply(t.get_mut(k).unwrap(), v);
                    } else {
                        t.insert(k.clone(), v.clone());
                    }
                }
            } else {
                *target = patch.clone();
            }
        }
        let old = json!({"a": {"b": 1, "c": {"d": 2}}, "e": [1], "f": "x"});
        let new = json!({"a": {"c": {"d": 3, "g": 4}}, "e": [], "h": true});
        let mut patched = old.clone();
        apply(&mut patched, &merge_diff(&old, &new));
        assert_eq!(patched, new);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
