//! Reads everything the planner looks at into a [`PlanInput`]: the DataSystems in scope, the
//! effective RetentionPolicy, the subject's salted digest, other requests in flight for the
//! same subject, and the request's Jobs and task Secrets. Reads only; a reference that does
//! not resolve becomes a [`ReferenceProblem`] for the planner, not an error.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::{Api, ResourceExt, api::ListParams, core::PartialObjectMeta};

use crate::api::{
    ConsentPolicy, ConsentPolicySpec, DataSubjectRequest, DataSystem, IdentifierSet,
    RetentionPolicy, RetentionPolicySpec, SubjectDigest,
};
use crate::plan::consent::NamespaceSystem;
use crate::plan::{
    Children, Context as PlanContext, InFlightRequest, JobInfo, PlanInput, ReferenceProblem,
    RequestState, SystemInfo, label_value, labels,
};
use crate::{Error, Result};

use super::{Context, children, worker::controlled_by};

/// What a reconcile read, kept for carrying out the plan.
pub(super) struct Gathered {
    pub input: PlanInput,
    /// DataSystems in scope (and those recorded in status that still exist), by name.
    pub systems: BTreeMap<String, DataSystem>,
    /// Jobs controlled by the request.
    pub jobs: Vec<Job>,
    /// Names of the request's task Secrets.
    pub secrets: Vec<String>,
    /// The subject's identifiers when they were read (held in memory only).
    pub subject: Option<IdentifierSet>,
}

pub(super) async fn gather(
    ctx: &Context,
    dsr: &DataSubjectRequest,
    ns: &str,
    now: Timestamp,
) -> Result<Gathered> {
    let client = &ctx.client;
    let request = RequestState::from_resource(dsr);
    let uid = dsr.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let mut problems = Vec::new();

    // Jobs of every request in the namespace: ours are the children, all of them count
    // against the DataSystems' concurrency limits.
    let all_jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(labels::REQUEST))
        .await?
        .items;
    let running = children::running_per_system(&all_jobs);
    let jobs: Vec<Job> = all_jobs
        .into_iter()
        .filter(|j| controlled_by(j.metadata.owner_references.as_deref(), &uid))
        .collect();
    let mut job_infos: Vec<JobInfo> = jobs
        .iter()
        .filter_map(|j| children::job_info(j, now))
        .collect();
    if let Some(store) = &ctx.storage {
        ctx.results
            .attach(store, ns, &request.name, &jobs, &mut job_infos)
            .await?;
    }
    let secrets: Vec<String> = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default().labels(&format!(
            "{}={}",
            labels::REQUEST,
            label_value(&request.name)
        )))
        .await?
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();

    let selector = dsr.spec.systems.clone().unwrap_or_default();
    let recorded: Vec<&str> = request
        .status
        .systems
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let all_systems = Api::<DataSystem>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    let namespace_systems: Vec<NamespaceSystem> = all_systems
        .iter()
        .map(|s| NamespaceSystem {
            name: s.name_any(),
            labels: s.labels().clone(),
        })
        .collect();
    let systems: BTreeMap<String, DataSystem> = all_systems
        .into_iter()
        .filter(|s| {
            // Systems recorded at acceptance stay in scope even if their labels change.
            selector.matches(s.labels()) || recorded.contains(&s.name_any().as_str())
        })
        .map(|s| (s.name_any(), s))
        .collect();
    let system_infos = systems
        .iter()
        .map(|(name, s)| SystemInfo {
            name: name.clone(),
            third_party: s.spec.third_party,
            vendor: s.spec.vendor.clone(),
            exportable: s.spec.exportable,
            concurrency: u32::try_from(s.spec.concurrency).unwrap_or(1).max(1),
            running_jobs: running.get(&label_value(name)).copied().unwrap_or(0),
        })
        .collect();

    if ctx.storage.is_none()
        && dsr.spec.type_.exports()
        && !crate::plan::conditions::is_terminal(request.status.phase)
    {
        problems.push(ReferenceProblem::StorageNotConfigured);
    }
    let (policy, policy_name) = retention_policy(ctx, dsr, ns, &mut problems).await?;
    let purposes = match consent_policy(ctx, dsr, ns, &mut problems).await? {
        Some((name, spec)) => {
            // The scope as accepted, else what the selector matches now.
            let in_scope: Vec<String> = if recorded.is_empty() {
                systems.keys().cloned().collect()
            } else {
                recorded.iter().map(|s| s.to_string()).collect()
            };
            match crate::plan::consent::resolve(
                &name,
                &spec,
                dsr.spec.type_,
                &dsr.spec.restricted_purposes,
                &namespace_systems,
                &in_scope,
            ) {
                Ok(plan) => Some(plan),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            }
        }
        None => None,
    };

    // The subject Secret is read until the request is accepted (its digest is then in
    // status); later reads happen only when a worker needs the identifiers.
    let mut subject = None;
    let mut subject_digest = None;
    if request.status.subject_digest.is_none() {
        match read_subject(ctx, dsr, ns).await? {
            Ok(set) => {
                subject_digest = Some(set.digest(&ctx.salt));
                subject = Some(set);
            }
            Err(problem) => problems.push(problem),
        }
    }
    problems.extend(rectification_problems(ctx, dsr, ns).await?);

    let digest = subject_digest
        .as_ref()
        .or(request.status.subject_digest.as_ref());
    let in_flight = match digest {
        Some(d) => in_flight(ctx, dsr, ns, d),
        None => Vec::new(),
    };

    Ok(Gathered {
        input: PlanInput {
            request,
            context: PlanContext {
                systems: system_infos,
                policy,
                policy_name,
                problems,
                subject_digest,
                in_flight,
                purposes,
            },
            children: Children {
                jobs: job_infos,
                secrets: secrets.clone(),
            },
        },
        systems,
        jobs,
        secrets,
        subject,
    })
}

/// The referenced policy, else the namespace's `default`, else the built-in defaults.
async fn retention_policy(
    ctx: &Context,
    dsr: &DataSubjectRequest,
    ns: &str,
    problems: &mut Vec<ReferenceProblem>,
) -> Result<(RetentionPolicySpec, Option<String>)> {
    let api = Api::<RetentionPolicy>::namespaced(ctx.client.clone(), ns);
    let name = dsr
        .spec
        .retention_policy_ref
        .as_ref()
        .map(|r| r.name.clone());
    let wanted = name.clone().unwrap_or_else(|| "default".into());
    Ok(match api.get_opt(&wanted).await? {
        Some(p) => (p.spec, Some(wanted)),
        None => {
            if let Some(name) = name {
                problems.push(ReferenceProblem::RetentionPolicyNotFound { name });
            }
            (RetentionPolicySpec::default(), None)
        }
    })
}

/// The ConsentPolicy of a request that stops processing: the referenced one, else the
/// namespace's `default` when there is one. `None` for other request types, and without a
/// policy (the request's purposes then go to every system as written).
async fn consent_policy(
    ctx: &Context,
    dsr: &DataSubjectRequest,
    ns: &str,
    problems: &mut Vec<ReferenceProblem>,
) -> Result<Option<(String, ConsentPolicySpec)>> {
    let referenced = dsr.spec.consent_policy_ref.as_ref().map(|r| r.name.clone());
    if referenced.is_none() && !dsr.spec.type_.restricts() {
        return Ok(None);
    }
    let wanted = referenced.clone().unwrap_or_else(|| "default".into());
    match Api::<ConsentPolicy>::namespaced(ctx.client.clone(), ns)
        .get_opt(&wanted)
        .await?
    {
        Some(p) if dsr.spec.type_.restricts() => Ok(Some((wanted, p.spec))),
        Some(_) => Ok(None),
        None => {
            if let Some(name) = referenced {
                problems.push(ReferenceProblem::ConsentPolicyNotFound { name });
            }
            Ok(None)
        }
    }
}

/// The subject's identifiers: inline, or from the referenced Secret. The inner error is a
/// problem to report on the request (its message names no identifier).
pub(super) async fn read_subject(
    ctx: &Context,
    dsr: &DataSubjectRequest,
    ns: &str,
) -> Result<Result<IdentifierSet, ReferenceProblem>> {
    let subject = &dsr.spec.subject;
    if let Some(set) = &subject.identifiers {
        return Ok(Ok(set.clone()));
    }
    let Some(r) = &subject.secret_ref else {
        return Ok(Err(ReferenceProblem::SubjectSecretInvalid {
            name: String::new(),
            problem: "spec.subject has neither identifiers nor secretRef".into(),
        }));
    };
    let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&r.name)
        .await?
    else {
        return Ok(Err(ReferenceProblem::SubjectSecretNotFound {
            name: r.name.clone(),
        }));
    };
    let data = secret.data.unwrap_or_default();
    Ok(
        IdentifierSet::from_secret_data(data.iter().map(|(k, v)| (k, v.0.as_slice()))).map_err(
            |e| ReferenceProblem::SubjectSecretInvalid {
                name: r.name.clone(),
                problem: e.to_string(),
            },
        ),
    )
}

/// Rectification values kept in Secrets must exist.
async fn rectification_problems(
    ctx: &Context,
    dsr: &DataSubjectRequest,
    ns: &str,
) -> Result<Vec<ReferenceProblem>> {
    let mut out = Vec::new();
    let Some(r) = &dsr.spec.rectification else {
        return Ok(out);
    };
    for change in &r.changes {
        if let Some(from) = &change.value_from
            && read_secret_key(ctx, ns, &from.name, &from.key)
                .await?
                .is_none()
        {
            out.push(ReferenceProblem::ValueSecretNotFound {
                name: from.name.clone(),
                key: from.key.clone(),
            });
        }
    }
    Ok(out)
}

/// The value of one Secret key, as UTF-8.
pub(super) async fn read_secret_key(
    ctx: &Context,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(key))
        .and_then(|b| String::from_utf8(b.0).ok()))
}

/// Other unfinished requests of the same type in the namespace for the same subject, from
/// the controller's cache. Their digest is the one in their status, or computed from inline
/// identifiers for requests not yet accepted.
fn in_flight(
    ctx: &Context,
    dsr: &DataSubjectRequest,
    ns: &str,
    digest: &SubjectDigest,
) -> Vec<InFlightRequest> {
    let me = dsr.uid();
    ctx.requests
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(ns) && o.uid() != me)
        .filter(|o| o.spec.type_ == dsr.spec.type_)
        .filter(|o| !crate::plan::conditions::is_terminal(o.status.as_ref().and_then(|s| s.phase)))
        .filter(|o| {
            let theirs = o
                .status
                .as_ref()
                .and_then(|s| s.subject_digest.clone())
                .or_else(|| {
                    o.spec
                        .subject
                        .identifiers
                        .as_ref()
                        .map(|i| i.digest(&ctx.salt))
                });
            theirs.as_ref() == Some(digest)
        })
        .filter_map(|o| {
            Some(InFlightRequest {
                name: o.name_any(),
                created_at: o.metadata.creation_timestamp.as_ref()?.0,
            })
        })
        .collect()
}
