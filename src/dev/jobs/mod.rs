//! The local job runner of `privacy-operator dev`: it plays the Job controller and the kubelet
//! against the emulator, which stores Jobs but runs nothing.
//!
//! It watches batch/v1 Jobs and runs each one's worker container as a subprocess of the
//! operator binary (`privacy-operator worker --task ...`), one Pod at a time per Job
//! (parallelism 1), at most [`RunnerConfig::concurrency`] at once. The Job's Secret volumes are
//! written into a private directory (0700, removed when the process ends) and the container's
//! mount paths in its args and env point there; the process gets the Job's args and env only,
//! which name paths, never identifiers.
//!
//! Status is written the way the Job controller writes it ([`status`]): `startTime` and
//! `active` when picked up, then `succeeded`/`failed` counts, the interim and terminal
//! conditions with the controller's reasons (`BackoffLimitExceeded`, `DeadlineExceeded`) and
//! `completionTime`. `backoffLimit` (default 6) retries failed processes after the Job
//! controller's exponential backoff (capped small for a laptop); `activeDeadlineSeconds`
//! kills the process; `suspend` kills it and marks the Job suspended; deleting the Job kills it.
//! Terminal outcomes are also recorded as Events (`Completed`, `BackoffLimitExceeded`, ...).
//!
//! Restart-safe: a Job with a terminal condition is never run again; a Job found active (its
//! process died with the previous `dev`) is run again, and the rerun is counted in the
//! [`RUNS_ANNOTATION`]. Jobs of images other than the operator's own (custom connectors)
//! cannot run here and are marked Failed with reason `CustomImageNotSupported`.

pub mod pod;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use kube::{
    Api, Client, Resource as _, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        events::{Event as KEvent, EventType, Recorder, Reporter},
        watcher,
    },
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::{Error, Result};
use status::Disposition;

/// Annotation counting how many times the runner started a Job's process after finding it
/// active when `dev` started (its previous process died with the previous `dev`).
pub const RUNS_ANNOTATION: &str = "dev.privacy-operator.dev/reruns";
/// The Job controller's default `backoffLimit`.
const DEFAULT_BACKOFF_LIMIT: i32 = 6;
/// Field manager of the runner's writes.
const MANAGER: &str = "privacy-operator-dev-job-runner";
/// Pause between retries of a status write the API refused (the result must not be lost).
const WRITE_RETRY: Duration = Duration::from_millis(500);
/// Environment passed through to worker processes (logging and TLS roots); everything else
/// of the parent's environment is withheld, as a Pod does not inherit the node's.
const PASS_ENV: &[&str] = &[
    "PATH",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "PRIVACY_OPERATOR_LOG_LEVEL",
    "PRIVACY_OPERATOR_LOG_FORMAT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// How the runner runs.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The operator binary, run as the worker image's entrypoint.
    pub program: PathBuf,
    /// The image the controller puts in built-in worker Jobs; Jobs of other images fail.
    pub worker_image: String,
    /// Private per-run directories (Secret volumes, scratch). Emptied at start: leftovers of a
    /// killed `dev` hold task files.
    pub run_dir: PathBuf,
    /// One log file per Job (`<namespace>/<job>.log`, appended per run): the Pod logs.
    pub log_dir: PathBuf,
    /// Watch this namespace only; `None` for every namespace.
    pub namespace: Option<String>,
    /// Processes running at once.
    pub concurrency: usize,
    /// First retry delay after a failed process (the Job controller uses 10s).
    pub backoff_base: Duration,
    /// Longest retry delay (the Job controller uses 6m).
    pub backoff_cap: Duration,
}

impl RunnerConfig {
    /// Defaults for `dev`: four processes at once, retries after 1s doubling to 10s.
    pub fn new(program: PathBuf, worker_image: String, data_dir: &Path) -> Self {
        RunnerConfig {
            program,
            worker_image,
            run_dir: data_dir.join("run"),
            log_dir: data_dir.join("logs"),
            namespace: None,
            concurrency: 4,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(10),
        }
    }
}

struct Shared {
    client: Client,
    config: RunnerConfig,
    slots: Semaphore,
    /// Events on Jobs, as the Job controller records them (`kubectl describe job`).
    recorder: Recorder,
}

/// What the runner is doing about one Job (by uid).
enum Entry {
    /// A supervisor runs (or ran) the Job; kept after it ends so stale watch events of the
    /// same Job never start it again.
    Supervised(JoinHandle<()>),
    /// The Job was suspended: the task writes the Suspended status after the supervisor
    /// stopped.
    Suspending(JoinHandle<()>),
}

/// Runs Jobs until `shutdown` completes; running processes are killed then.
pub async fn run_until(
    client: Client,
    config: RunnerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    reset_dir(&config.run_dir)?;
    pod::private_dir(&config.log_dir).map_err(|source| Error::Io {
        path: config.log_dir.clone(),
        source,
    })?;
    let jobs: Api<Job> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let reporter = Reporter {
        controller: "job-controller".into(),
        instance: None,
    };
    let shared = Arc::new(Shared {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        slots: Semaphore::new(config.concurrency.max(1)),
        config,
    });
    tracing::info!(
        concurrency = shared.config.concurrency,
        image = %shared.config.worker_image,
        "starting the local job runner"
    );
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let stream = watcher(jobs, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => break,
            event = stream.next() => event,
        };
        match event {
            Some(Ok(watcher::Event::Apply(job))) => handle(&shared, &mut entries, job),
            Some(Ok(watcher::Event::InitApply(job))) => {
                if let Some(uid) = job.uid() {
                    listed.insert(uid);
                }
                handle(&shared, &mut entries, job);
            }
            Some(Ok(watcher::Event::Delete(job))) => {
                if let Some(uid) = job.uid() {
                    stop(&mut entries, &uid);
                    entries.remove(&uid);
                }
            }
            Some(Ok(watcher::Event::Init)) => listed.clear(),
            Some(Ok(watcher::Event::InitDone)) => {
                // Jobs deleted while the watch was down.
                let gone: Vec<String> = entries
                    .keys()
                    .filter(|uid| !listed.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    stop(&mut entries, &uid);
                    entries.remove(&uid);
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "watching Jobs"),
            None => break,
        }
    }
    tracing::info!("stopping the local job runner");
    for (_, entry) in entries.drain() {
        let handle = match entry {
            Entry::Supervised(h) | Entry::Suspending(h) => h,
        };
        handle.abort();
        let _ = handle.await;
    }
    Ok(())
}

/// Empties `dir` (task files of runs a killed `dev` left behind) and makes it private.
fn reset_dir(dir: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    pod::private_dir(dir).map_err(io)
}

fn handle(shared: &Arc<Shared>, entries: &mut HashMap<String, Entry>, job: Job) {
    let Some(uid) = job.uid() else { return };
    let (Some(ns), name) = (job.namespace(), job.name_any()) else {
        return;
    };
    match status::disposition(&job) {
        Disposition::Finished => {}
        Disposition::Deleting => stop(entries, &uid),
        Disposition::Suspended => {
            let running = match entries.remove(&uid) {
                Some(Entry::Supervised(h)) => {
                    h.abort();
                    Some(h)
                }
                Some(Entry::Suspending(h)) => {
                    entries.insert(uid, Entry::Suspending(h));
                    return;
                }
                None => None,
            };
            if running.is_none() && status::is_suspended(job.status.as_ref()) {
                return;
            }
            let shared = shared.clone();
            let task = tokio::spawn(async move {
                if let Some(h) = running {
                    let _ = h.await;
                }
                mark_suspended(&shared, &ns, &name).await;
            });
            entries.insert(uid, Entry::Suspending(task));
        }
        Disposition::Runnable => {
            let after = match entries.remove(&uid) {
                Some(Entry::Supervised(h)) => {
                    entries.insert(uid, Entry::Supervised(h));
                    return;
                }
                Some(Entry::Suspending(h)) => Some(h),
                None => None,
            };
            let shared = shared.clone();
            let key = uid.clone();
            let task = tokio::spawn(async move {
                if let Some(h) = after {
                    let _ = h.await;
                }
                supervise(shared, ns, name, key).await;
            });
            entries.insert(uid, Entry::Supervised(task));
        }
    }
}

/// Stops whatever runs for `uid` (dropping the process handle kills the process).
fn stop(entries: &mut HashMap<String, Entry>, uid: &str) {
    if let Some(Entry::Supervised(h) | Entry::Suspending(h)) = entries.get(uid) {
        h.abort();
    }
}

async fn mark_suspended(shared: &Shared, ns: &str, name: &str) {
    let api: Api<Job> = Api::namespaced(shared.client.clone(), ns);
    let Ok(Some(job)) = api.get_opt(name).await else {
        return;
    };
    if status::disposition(&job) != Disposition::Suspended {
        return;
    }
    let new = status::suspended(job.status.as_ref(), now());
    write_status(&api, name, job.status.as_ref(), &new).await;
    tracing::info!(job = %format!("{ns}/{name}"), "Job suspended");
}

fn now() -> Timestamp {
    // Whole seconds, as the API server stores times.
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

/// How one run of the Job's process ended.
enum RunEnd {
    Exited(std::process::ExitStatus),
    /// The Pod could not start (a volume or the process); reason and message for status.
    CannotRun(&'static str, String),
}

/// Runs one Job to a terminal status (or until aborted).
async fn supervise(shared: Arc<Shared>, ns: String, name: String, uid: String) {
    let api: Api<Job> = Api::namespaced(shared.client.clone(), &ns);
    let job_ref = format!("{ns}/{name}");
    let mut first = true;
    loop {
        let job = match api.get_opt(&name).await {
            Ok(Some(j)) if j.uid().as_deref() == Some(uid.as_str()) => j,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(job = %job_ref, error = %e, "reading the Job; retrying");
                tokio::time::sleep(WRITE_RETRY).await;
                continue;
            }
        };
        if status::disposition(&job) != Disposition::Runnable {
            return;
        }
        let old = job.status.clone();
        if first && old.as_ref().and_then(|s| s.active).unwrap_or(0) > 0 {
            count_rerun(&api, &job).await;
        }
        first = false;
        let started = status::started(old.as_ref(), now());
        if old.as_ref() != Some(&started) {
            write_status(&api, &name, old.as_ref(), &started).await;
        }
        let plan = match pod::plan(&job, &shared.config.worker_image) {
            Ok(p) => p,
            Err(nr) => {
                tracing::warn!(job = %job_ref, reason = nr.reason, "{}", nr.message);
                let new = status::failed(Some(&started), (nr.reason, &nr.message), false, now());
                write_status(&api, &name, Some(&started), &new).await;
                record(&shared, &job, EventType::Warning, nr.reason, &nr.message).await;
                return;
            }
        };
        let deadline = status::deadline(&job, &started);
        let attempt = started.failed.unwrap_or(0) + 1;
        let run = run_once(&shared, &ns, &name, &uid, attempt, &plan);
        let ended = match until(deadline, run).await {
            Some(end) => end,
            None => {
                tracing::info!(job = %job_ref, "active deadline exceeded; process killed");
                let new = status::failed(Some(&started), status::DEADLINE_EXCEEDED, true, now());
                write_status(&api, &name, Some(&started), &new).await;
                let (reason, message) = status::DEADLINE_EXCEEDED;
                record(&shared, &job, EventType::Warning, reason, message).await;
                return;
            }
        };
        match ended {
            RunEnd::Exited(exit) if exit.success() => {
                tracing::info!(job = %job_ref, "Job complete");
                let new = status::succeeded(Some(&started), now());
                write_status(&api, &name, Some(&started), &new).await;
                record(
                    &shared,
                    &job,
                    EventType::Normal,
                    "Completed",
                    "Job completed",
                )
                .await;
                return;
            }
            RunEnd::Exited(exit) => {
                let limit = job
                    .spec
                    .as_ref()
                    .and_then(|s| s.backoff_limit)
                    .unwrap_or(DEFAULT_BACKOFF_LIMIT)
                    .max(0);
                let failures = started.failed.unwrap_or(0) + 1;
                if failures > limit {
                    tracing::info!(job = %job_ref, %exit, failures, "Job failed: backoff limit reached");
                    let new =
                        status::failed(Some(&started), status::BACKOFF_LIMIT_EXCEEDED, true, now());
                    write_status(&api, &name, Some(&started), &new).await;
                    let (reason, message) = status::BACKOFF_LIMIT_EXCEEDED;
                    record(&shared, &job, EventType::Warning, reason, message).await;
                    return;
                }
                let new = status::pod_failed(Some(&started));
                write_status(&api, &name, Some(&started), &new).await;
                let delay = status::backoff(
                    u32::try_from(failures).unwrap_or(u32::MAX),
                    shared.config.backoff_base,
                    shared.config.backoff_cap,
                );
                tracing::info!(job = %job_ref, %exit, failures, ?delay, "worker failed; retrying after the backoff");
                if until(deadline, tokio::time::sleep(delay)).await.is_none() {
                    let new = status::failed(Some(&new), status::DEADLINE_EXCEEDED, false, now());
                    write_status(&api, &name, None, &new).await;
                    let (reason, message) = status::DEADLINE_EXCEEDED;
                    record(&shared, &job, EventType::Warning, reason, message).await;
                    return;
                }
            }
            RunEnd::CannotRun(reason, message) => {
                tracing::warn!(job = %job_ref, reason, "{message}");
                let new = status::failed(Some(&started), (reason, &message), false, now());
                write_status(&api, &name, Some(&started), &new).await;
                record(&shared, &job, EventType::Warning, reason, &message).await;
                return;
            }
        }
    }
}

/// An Event on the Job, as the Job controller records one; best effort (status tells the same).
async fn record(shared: &Shared, job: &Job, type_: EventType, reason: &str, note: &str) {
    let event = KEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = shared.recorder.publish(&event, &job.object_ref(&())).await {
        tracing::debug!(job = %job.name_any(), error = %e, "could not record an Event");
    }
}

/// Runs `fut` until `deadline` (a wall-clock time); `None` when the deadline came first.
async fn until<T>(deadline: Option<Timestamp>, fut: impl Future<Output = T>) -> Option<T> {
    match deadline {
        None => Some(fut.await),
        Some(at) => {
            let left = Timestamp::now().duration_until(at);
            let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
            tokio::time::timeout(left, fut).await.ok()
        }
    }
}

async fn count_rerun(api: &Api<Job>, job: &Job) {
    let runs: u32 = job
        .annotations()
        .get(RUNS_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let patch =
        serde_json::json!({"metadata": {"annotations": {RUNS_ANNOTATION: (runs + 1).to_string()}}});
    if let Err(e) = api
        .patch(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(job = %job.name_any(), error = %e, "counting the rerun");
    }
    tracing::info!(
        job = %format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        "Job was active when dev started; running it again"
    );
}

/// Writes the status, retrying until the API takes it or the Job is gone: a finished run's
/// result must not be lost.
async fn write_status(api: &Api<Job>, name: &str, old: Option<&JobStatus>, new: &JobStatus) {
    let patch = match status::merge_patch(old, new) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(job = name, error = %e, "Job status does not serialise");
            return;
        }
    };
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    loop {
        match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            // Refused for good (invalid, forbidden): retrying would not change the answer.
            Err(kube::Error::Api(s))
                if (400..500).contains(&s.code) && ![409, 429].contains(&s.code) =>
            {
                tracing::error!(job = name, error = %s, "the API refused the Job status");
                return;
            }
            Err(e) => {
                tracing::warn!(job = name, error = %e, "writing Job status; retrying");
                tokio::time::sleep(WRITE_RETRY).await;
            }
        }
    }
}

/// Removes a run's private directory when the run ends, however it ends (the Secret files in
/// it hold the subject's identifiers).
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "removing a run directory");
        }
    }
}

/// One Pod: materialises the volumes, waits for a slot, runs the process to its end.
async fn run_once(
    shared: &Shared,
    ns: &str,
    name: &str,
    uid: &str,
    attempt: i32,
    plan: &pod::LaunchPlan,
) -> RunEnd {
    // Volumes first: a Pod waiting for its Secret must not hold a slot others could use.
    let dir = RunDir(shared.config.run_dir.join(format!("{uid}-{attempt}")));
    let mounts = match pod::materialise(&shared.client, ns, plan, &dir.0).await {
        Ok(m) => m,
        Err(e) => return RunEnd::CannotRun("FailedMount", e.to_string()),
    };
    let Ok(_slot) = shared.slots.acquire().await else {
        return RunEnd::CannotRun("RunnerStopped", "the local job runner is stopping".into());
    };
    let log_path = shared.config.log_dir.join(ns).join(format!("{name}.log"));
    let (stdout, stderr) = match open_log(&log_path, attempt) {
        Ok(files) => files,
        Err(e) => {
            return RunEnd::CannotRun("ContainerCannotRun", format!("{}: {e}", log_path.display()));
        }
    };
    let mut cmd = tokio::process::Command::new(&shared.config.program);
    cmd.args(plan.args.iter().map(|a| pod::remap(a, &mounts)))
        .env_clear()
        .current_dir(&dir.0)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    for key in PASS_ENV {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    // The output goes to a log file, not a terminal.
    cmd.env("NO_COLOR", "1");
    if let Some((_, tmp)) = mounts
        .iter()
        .find(|(m, _)| m.trim_end_matches('/') == "/tmp")
    {
        cmd.env("TMPDIR", tmp);
    }
    for (k, v) in &plan.env {
        cmd.env(k, pod::remap(v, &mounts));
    }
    die_with_parent(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return RunEnd::CannotRun(
                "ContainerCannotRun",
                format!("cannot start {}: {e}", shared.config.program.display()),
            );
        }
    };
    tracing::debug!(job = %format!("{ns}/{name}"), attempt, "worker process started");
    match child.wait().await {
        Ok(exit) => RunEnd::Exited(exit),
        Err(e) => RunEnd::CannotRun("ContainerCannotRun", format!("waiting for the worker: {e}")),
    }
}

/// The Job's log file (appended, owner-only), with a line marking the run.
fn open_log(path: &Path, attempt: i32) -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        pod::private_dir(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "--- run {attempt} at {} ---", now())?;
    let copy = file.try_clone()?;
    Ok((file, copy))
}

/// A worker must not outlive a `dev` that was killed (it would run on beside the rerun the
/// next `dev` starts): on Linux the kernel sends it SIGKILL when its parent dies.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only prctl and
    // getppid, which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent as libc::pid_t {
                return Err(std::io::Error::other("the parent process exited"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut tokio::process::Command) {}
