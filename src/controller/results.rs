//! Reading workers' results back: when a Job has finished, its worker's `manifest.json` (in
//! object storage at [`super::worker::result_prefix`]) says how it went. The planner gets it
//! through [`JobInfo::result`], and `JobInfo::state` is corrected from it: the records
//! found or changed, the worker's failure reason (MissingTable, DatabaseUnreachable, …)
//! instead of the Job's generic one, and `Pending` (a processor that has not confirmed yet)
//! as [`JobState::AwaitingConfirmation`].
//!
//! A finished Job's manifest never changes (a rerun is a new Job), so each is read once per
//! controller process and cached by the Job's UID: a reconcile that changes nothing makes
//! no storage request for it, and never a write anywhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;

use crate::plan::{JobInfo, JobState};
use crate::storage::{StorageError, Store};
use crate::worker::MANIFEST_FILE;
use crate::worker::task::{Manifest, Outcome};

use super::worker::result_prefix;

/// Cached manifests beyond this many are dropped (and read again when needed).
const CACHE_LIMIT: usize = 20_000;

/// The manifests read so far, by Job UID (`None`: the Job finished without one).
#[derive(Default)]
pub struct Results {
    cache: Mutex<HashMap<String, Option<Arc<Manifest>>>>,
}

impl Results {
    fn cached(&self, uid: &str) -> Option<Option<Arc<Manifest>>> {
        self.lock().get(uid).cloned()
    }

    fn remember(&self, uid: &str, manifest: Option<Arc<Manifest>>) {
        let mut cache = self.lock();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(uid.to_string(), manifest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<Manifest>>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the worker's result to every finished Job that is the latest attempt of its
    /// system and step (older attempts share its location and are history). A manifest
    /// that cannot be read (storage down) is an error: planning without it could record a
    /// wrong outcome, so the reconcile is retried.
    pub async fn attach(
        &self,
        store: &Store,
        namespace: &str,
        request: &str,
        jobs: &[Job],
        infos: &mut [JobInfo],
    ) -> Result<(), StorageError> {
        let latest: Vec<bool> = infos
            .iter()
            .map(|i| {
                !infos
                    .iter()
                    .any(|o| o.system == i.system && o.step == i.step && o.attempt > i.attempt)
            })
            .collect();
        for (info, is_latest) in infos.iter_mut().zip(latest) {
            if !is_latest || info.state == JobState::Active {
                continue;
            }
            let Some(uid) = jobs
                .iter()
                .find(|j| j.metadata.name.as_deref() == Some(info.name.as_str()))
                .and_then(|j| j.metadata.uid.clone())
            else {
                continue;
            };
            let manifest = match self.cached(&uid) {
                Some(m) => m,
                None => {
                    let key = format!(
                        "{}/{MANIFEST_FILE}",
                        result_prefix(namespace, request, &info.system, info.step)
                    );
                    let manifest = read(store, &key).await?;
                    self.remember(&uid, manifest.clone());
                    manifest
                }
            };
            if let Some(m) = manifest {
                apply(info, m);
            }
        }
        Ok(())
    }
}

/// The manifest at `key`; `None` when absent or not a manifest (a broken custom image: the
/// Job's own state then stands).
async fn read(store: &Store, key: &str) -> Result<Option<Arc<Manifest>>, StorageError> {
    let Some(bytes) = store.get(key).await? else {
        return Ok(None);
    };
    match serde_json::from_slice::<Manifest>(&bytes) {
        Ok(m) => Ok(Some(Arc::new(m))),
        Err(e) => {
            tracing::warn!(manifest = %store.url(key), error = %e, "ignoring a worker manifest that does not parse");
            Ok(None)
        }
    }
}

/// Corrects `info.state` from the worker's manifest and attaches it. A manifest of another
/// system or step is ignored. A Job that failed while an older Succeeded manifest sits at
/// its location (the worker died before writing its own) stays Failed.
pub fn apply(info: &mut JobInfo, manifest: Arc<Manifest>) {
    if manifest.system != info.system || manifest.step != info.step {
        return;
    }
    let finished_at = match &info.state {
        JobState::Succeeded { completed_at, .. } => *completed_at,
        JobState::Failed { failed_at, .. } => *failed_at,
        JobState::AwaitingConfirmation { checked_at, .. } => *checked_at,
        JobState::Active => return,
    };
    let records = i64::try_from(manifest.total_rows()).ok();
    info.state = match (&info.state, manifest.outcome) {
        (_, Outcome::Pending) => JobState::AwaitingConfirmation {
            checked_at: finished_at,
            recheck_at: manifest
                .retry_after
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok()),
        },
        (JobState::Succeeded { .. }, Outcome::Succeeded) => JobState::Succeeded {
            completed_at: finished_at,
            records,
        },
        (_, Outcome::Failed) => JobState::Failed {
            reason: manifest
                .reason
                .clone()
                .unwrap_or_else(|| "WorkerFailed".into()),
            failed_at: finished_at,
        },
        (state, Outcome::Succeeded) => state.clone(),
    };
    info.result = Some(manifest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::JobStep;
    use crate::storage::StorageTarget;
    use crate::worker::task::TableCount;
    use bytes::Bytes;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn info(state: JobState, attempt: u32) -> JobInfo {
        JobInfo {
            name: format!("r-crm-export-{attempt}"),
            system: "crm".into(),
            step: JobStep::Export,
            attempt,
            created_at: t("2024-01-01T00:00:00Z"),
            state,
            deleting: false,
            result: None,
        }
    }

    fn manifest(outcome: Outcome) -> Manifest {
        let mut m = Manifest::new("crm", JobStep::Export);
        m.outcome = outcome;
        m.tables.insert(
            "contacts".into(),
            TableCount {
                rows: 3,
                detached: 0,
            },
        );
        m.tables.insert(
            "notes".into(),
            TableCount {
                rows: 18,
                detached: 0,
            },
        );
        m
    }

    fn done() -> JobState {
        JobState::Succeeded {
            completed_at: t("2024-01-01T00:05:00Z"),
            records: None,
        }
    }

    fn failed() -> JobState {
        JobState::Failed {
            reason: "BackoffLimitExceeded".into(),
            failed_at: t("2024-01-01T00:06:00Z"),
        }
    }

    #[test]
    fn records_and_reasons_come_from_the_manifest() {
        let mut i = info(done(), 1);
        apply(&mut i, Arc::new(manifest(Outcome::Succeeded)));
        assert_eq!(
            i.state,
            JobState::Succeeded {
                completed_at: t("2024-01-01T00:05:00Z"),
                records: Some(21)
            }
        );
        assert!(i.result.is_some());

        let mut failed_manifest = manifest(Outcome::Failed);
        failed_manifest.reason = Some("MissingTable".into());
        let mut i = info(failed(), 1);
        apply(&mut i, Arc::new(failed_manifest.clone()));
        assert_eq!(
            i.state,
            JobState::Failed {
                reason: "MissingTable".into(),
                failed_at: t("2024-01-01T00:06:00Z")
            }
        );
        // A custom image that exits 0 but reports failure still failed.
        let mut i = info(done(), 1);
        apply(&mut i, Arc::new(failed_manifest));
        assert!(matches!(i.state, JobState::Failed { ref reason, .. } if reason == "MissingTable"));
    }

    #[test]
    fn pending_awaits_confirmation_and_stale_manifests_do_not_count() {
        let mut m = manifest(Outcome::Pending);
        m.retry_after = Some("2024-01-01T01:00:00Z".into());
        let mut i = info(failed(), 1);
        apply(&mut i, Arc::new(m));
        assert_eq!(
            i.state,
            JobState::AwaitingConfirmation {
                checked_at: t("2024-01-01T00:06:00Z"),
                recheck_at: Some(t("2024-01-01T01:00:00Z"))
            }
        );
        // The Job failed but a Succeeded manifest is there: an older run's; the Job stands.
        let mut i = info(failed(), 2);
        apply(&mut i, Arc::new(manifest(Outcome::Succeeded)));
        assert_eq!(i.state, failed());
        // Another step's manifest is not this Job's.
        let mut other = manifest(Outcome::Succeeded);
        other.step = JobStep::Purge;
        let mut i = info(done(), 1);
        apply(&mut i, Arc::new(other));
        assert!(i.result.is_none());
    }

    #[tokio::test]
    async fn only_finished_latest_attempts_are_read_and_reads_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StorageTarget::new(format!(
            "file://{}",
            dir.path().display()
        )))
        .unwrap();
        let key = format!(
            "{}/manifest.json",
            result_prefix("ns", "r", "crm", JobStep::Export)
        );
        let bytes = serde_json::to_vec(&manifest(Outcome::Succeeded)).unwrap();
        store.put(&key, Bytes::from(bytes)).await.unwrap();
        let job = |name: &str, uid: &str| -> Job {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name, "uid": uid}}))
                .unwrap()
        };
        let jobs = vec![job("r-crm-export-1", "u1"), job("r-crm-export-2", "u2")];
        let results = Results::default();
        let mut infos = vec![info(failed(), 1), info(done(), 2)];
        results
            .attach(&store, "ns", "r", &jobs, &mut infos)
            .await
            .unwrap();
        assert!(infos[0].result.is_none(), "older attempt left alone");
        assert!(matches!(
            infos[1].state,
            JobState::Succeeded {
                records: Some(21),
                ..
            }
        ));
        // Cached: the object can go away, the result stays.
        store.delete(&key).await.unwrap();
        let mut again = vec![info(done(), 2)];
        results
            .attach(&store, "ns", "r", &jobs, &mut again)
            .await
            .unwrap();
        assert!(again[0].result.is_some());
    }
}
