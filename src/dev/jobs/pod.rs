//! Playing the kubelet for one worker Pod: what of a Job's Pod template can run on this
//! machine ([`LaunchPlan`], pure), its volumes materialised in a private directory, and the
//! container's args and env with mount paths remapped onto that directory.
//!
//! Only the operator's own worker image runs locally: it is this very binary. The task file
//! reaches the process the way it reaches a Pod, as a file of the mounted Secret; the process
//! gets the Job's args and env (which name paths, never identifiers) and nothing else of
//! ours: its environment is cleared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::{Api, Client};

/// Why a Job's Pod cannot run on this machine: a CamelCase reason for the Job's Failed
/// condition and a message saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRunnable {
    pub reason: &'static str,
    pub message: String,
}

impl NotRunnable {
    fn spec(message: impl Into<String>) -> Self {
        NotRunnable {
            reason: "UnsupportedPodSpec",
            message: message.into(),
        }
    }
}

/// Where a volume's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Secret's keys as files (`items` maps keys to relative paths; empty: every key by name).
    Secret {
        name: String,
        items: Vec<(String, String)>,
        mode: u32,
        optional: bool,
    },
    /// An empty private directory.
    EmptyDir,
}

/// One volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    pub mount_path: String,
    pub source: Source,
}

/// What to run for a Job: the container's args and literal env, and its mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
}

/// The launch plan of `job`, or why it cannot run here. `worker_image` is the image the
/// controller puts in built-in worker Jobs: the only one this machine can run.
pub fn plan(job: &Job, worker_image: &str) -> Result<LaunchPlan, NotRunnable> {
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| NotRunnable::spec("the Job has no Pod template spec"))?;
    if pod.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(NotRunnable::spec(
            "init containers cannot run locally; dev runs one worker container per Job",
        ));
    }
    let [container] = pod.containers.as_slice() else {
        return Err(NotRunnable::spec(format!(
            "the Pod has {} containers; dev runs Jobs of exactly one worker container",
            pod.containers.len()
        )));
    };
    let image = container.image.as_deref().unwrap_or_default();
    if image != worker_image {
        return Err(NotRunnable {
            reason: "CustomImageNotSupported",
            message: format!(
                "image {image:?} cannot run locally: privacy-operator dev runs only the operator's own worker ({worker_image}); run custom connectors in a cluster"
            ),
        });
    }
    if container.command.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(NotRunnable::spec(
            "a command override cannot run locally: the worker image's entrypoint is the operator binary",
        ));
    }
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(NotRunnable::spec("envFrom is not supported locally"));
    }
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        if var.value_from.is_some() {
            return Err(NotRunnable::spec(format!(
                "env {} uses valueFrom, which is not supported locally",
                var.name
            )));
        }
        env.push((var.name.clone(), var.value.clone().unwrap_or_default()));
    }
    let volumes: BTreeMap<&str, _> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        if m.sub_path.as_ref().is_some_and(|p| !p.is_empty())
            || m.sub_path_expr.as_ref().is_some_and(|p| !p.is_empty())
        {
            return Err(NotRunnable::spec(format!(
                "volume mount {} uses subPath, which is not supported locally",
                m.name
            )));
        }
        let volume = volumes.get(m.name.as_str()).ok_or_else(|| {
            NotRunnable::spec(format!(
                "volume mount {} names no volume of the Pod",
                m.name
            ))
        })?;
        let source = if let Some(s) = &volume.secret {
            Source::Secret {
                name: s.secret_name.clone().ok_or_else(|| {
                    NotRunnable::spec(format!("secret volume {} has no secretName", m.name))
                })?,
                items: s
                    .items
                    .iter()
                    .flatten()
                    .map(|i| (i.key.clone(), i.path.clone()))
                    .collect(),
                mode: u32::try_from(s.default_mode.unwrap_or(0o644)).unwrap_or(0o644),
                optional: s.optional.unwrap_or(false),
            }
        } else if volume.empty_dir.is_some() {
            Source::EmptyDir
        } else {
            return Err(NotRunnable::spec(format!(
                "volume {} is neither a Secret nor an emptyDir; only those can be mounted locally",
                m.name
            )));
        };
        mounts.push(Mount {
            volume: m.name.clone(),
            mount_path: m.mount_path.clone(),
            source,
        });
    }
    Ok(LaunchPlan {
        args: container.args.clone().unwrap_or_default(),
        env,
        mounts,
    })
}

/// `value` with a leading mount path replaced by its host directory (the longest mount path
/// that is a whole-component prefix wins).
pub fn remap(value: &str, mounts: &[(String, PathBuf)]) -> String {
    let best = mounts
        .iter()
        .filter(|(mount, _)| {
            let mount = mount.trim_end_matches('/');
            !mount.is_empty()
                && (value == mount
                    || value
                        .strip_prefix(mount)
                        .is_some_and(|rest| rest.starts_with('/')))
        })
        .max_by_key(|(mount, _)| mount.trim_end_matches('/').len());
    match best {
        Some((mount, host)) => {
            let rest = &value[mount.trim_end_matches('/').len()..];
            format!("{}{rest}", host.display())
        }
        None => value.to_string(),
    }
}

/// Why materialising the volumes failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading Secret {name}: {source}")]
    Api { name: String, source: kube::Error },
    #[error("Secret {secret} has no key {key:?}")]
    MissingKey { secret: String, key: String },
    #[error("{0}")]
    BadPath(String),
}

/// Creates a directory only the current user may enter (the task file names the subject).
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // `recursive` leaves an existing directory's mode alone: make sure.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Materialises every mounted volume under `dir` (one directory per volume) and returns
/// (mount path, host directory) pairs for [`remap`]. Waits for Secrets that do not exist yet,
/// as the kubelet retries a mount until its Secret appears (the controller creates a Job
/// before its task Secret).
pub async fn materialise(
    client: &Client,
    namespace: &str,
    plan: &LaunchPlan,
    dir: &Path,
) -> Result<Vec<(String, PathBuf)>, MountError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MountError::Io { path, source }
    };
    private_dir(dir).map_err(io(dir))?;
    let mut out = Vec::new();
    for m in &plan.mounts {
        let host = dir.join(safe_component(&m.volume)?);
        if !host.exists() {
            private_dir(&host).map_err(io(&host))?;
            if let Source::Secret {
                name,
                items,
                mode,
                optional,
            } = &m.source
            {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let secret = match wait_for_secret(&secrets, name, *optional).await? {
                    Some(s) => s,
                    None => {
                        out.push((m.mount_path.clone(), host));
                        continue;
                    }
                };
                write_secret(&secret, name, items, *mode, &host)?;
            }
        }
        out.push((m.mount_path.clone(), host));
    }
    Ok(out)
}

/// A volume name or item path as a relative path inside the private dir: no `..`, no
/// absolute paths (the API validates this too; a hand-made Job may not have been).
fn safe_component(name: &str) -> Result<PathBuf, MountError> {
    let p = Path::new(name);
    let ok = !name.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(MountError::BadPath(format!(
            "{name:?} is not a relative path"
        )))
    }
}

async fn wait_for_secret(
    api: &Api<Secret>,
    name: &str,
    optional: bool,
) -> Result<Option<Secret>, MountError> {
    let err = |source| MountError::Api {
        name: name.to_string(),
        source,
    };
    if let Some(s) = api.get_opt(name).await.map_err(err)? {
        return Ok(Some(s));
    }
    if optional {
        return Ok(None);
    }
    tracing::debug!(secret = name, "waiting for the task Secret to appear");
    loop {
        match kube::runtime::wait::await_condition(api.clone(), name, |s: Option<&Secret>| {
            s.is_some()
        })
        .await
        {
            Ok(Some(s)) => return Ok(Some(s)),
            Ok(None) => {}
            Err(e) => {
                // A dropped watch: look again shortly (the caller's deadline still applies).
                tracing::debug!(secret = name, error = %e, "watching for the Secret");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        if let Some(s) = api.get_opt(name).await.map_err(err)? {
            return Ok(Some(s));
        }
    }
}

fn write_secret(
    secret: &Secret,
    name: &str,
    items: &[(String, String)],
    mode: u32,
    dir: &Path,
) -> Result<(), MountError> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    let files: Vec<(String, String)> = if items.is_empty() {
        data.keys().map(|k| (k.clone(), k.clone())).collect()
    } else {
        items.to_vec()
    };
    for (key, rel) in files {
        let bytes = data.get(&key).ok_or_else(|| MountError::MissingKey {
            secret: name.to_string(),
            key: key.clone(),
        })?;
        let path = dir.join(safe_component(&rel)?);
        if let Some(parent) = path.parent() {
            private_dir(parent).map_err(|source| MountError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        write_file(&path, bytes, mode).map_err(|source| MountError::Io { path, source })?;
    }
    Ok(())
}

/// Writes a file readable by its owner only (the Secret's mode, without group and other
/// bits: on this machine the owner is the only user that runs the worker).
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode((mode & 0o700) | 0o400);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const IMAGE: &str = "privacy-operator:dev";

    fn job(container: serde_json::Value, volumes: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "r-crm-export-1", "namespace": "ns"},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [container],
                "volumes": volumes,
            }}}
        }))
        .unwrap()
    }

    fn worker_job() -> Job {
        job(
            json!({
                "name": "worker", "image": IMAGE,
                "args": ["worker", "--task", "/var/run/privacy-operator/task/task.json"],
                "volumeMounts": [
                    {"name": "task", "mountPath": "/var/run/privacy-operator/task", "readOnly": true},
                    {"name": "tmp", "mountPath": "/tmp"}
                ]
            }),
            json!([
                {"name": "task", "secret": {"secretName": "r-crm-export-1", "defaultMode": 0o440}},
                {"name": "tmp", "emptyDir": {}}
            ]),
        )
    }

    #[test]
    fn the_built_in_worker_runs_with_its_secret_and_scratch_dir() {
        let p = plan(&worker_job(), IMAGE).unwrap();
        assert_eq!(p.args[2], "/var/run/privacy-operator/task/task.json");
        assert!(p.env.is_empty());
        assert_eq!(
            p.mounts[0].source,
            Source::Secret {
                name: "r-crm-export-1".into(),
                items: vec![],
                mode: 0o440,
                optional: false
            }
        );
        assert_eq!(p.mounts[1].source, Source::EmptyDir);
    }

    #[test]
    fn custom_images_and_exotic_specs_are_refused_with_a_reason() {
        let custom = job(
            json!({"name": "c", "image": "registry.example.com/erp:1",
                   "env": [{"name": "PRIVACY_OPERATOR_TASK", "value": "/t/task.json"}]}),
            json!([]),
        );
        let e = plan(&custom, IMAGE).unwrap_err();
        assert_eq!(e.reason, "CustomImageNotSupported");
        assert!(
            e.message.contains("registry.example.com/erp:1"),
            "{}",
            e.message
        );

        let host_path = job(
            json!({"name": "w", "image": IMAGE,
                   "volumeMounts": [{"name": "h", "mountPath": "/h"}]}),
            json!([{"name": "h", "hostPath": {"path": "/etc"}}]),
        );
        assert_eq!(
            plan(&host_path, IMAGE).unwrap_err().reason,
            "UnsupportedPodSpec"
        );

        let from_secret = job(
            json!({"name": "w", "image": IMAGE,
                   "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
            json!([]),
        );
        assert_eq!(
            plan(&from_secret, IMAGE).unwrap_err().reason,
            "UnsupportedPodSpec"
        );
    }

    #[test]
    fn mount_paths_are_remapped_by_whole_components() {
        let mounts = vec![
            ("/var/run/po".to_string(), PathBuf::from("/h/a")),
            ("/var/run/po/task".to_string(), PathBuf::from("/h/b")),
            ("/tmp/".to_string(), PathBuf::from("/h/c")),
        ];
        assert_eq!(
            remap("/var/run/po/task/task.json", &mounts),
            "/h/b/task.json"
        );
        assert_eq!(remap("/var/run/po/x", &mounts), "/h/a/x");
        assert_eq!(remap("/var/run/pox", &mounts), "/var/run/pox");
        assert_eq!(remap("/tmp", &mounts), "/h/c");
        assert_eq!(remap("worker", &mounts), "worker");
    }

    #[test]
    fn secret_files_are_private_and_paths_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "s"},
            "data": {"task.json": "e30="}
        }))
        .unwrap();
        write_secret(&secret, "s", &[], 0o440, dir.path()).unwrap();
        let path = dir.path().join("task.json");
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o400);
        }
        let escape = vec![("task.json".to_string(), "../x".to_string())];
        assert!(write_secret(&secret, "s", &escape, 0o440, dir.path()).is_err());
        let missing = vec![("nope".to_string(), "nope".to_string())];
        assert!(matches!(
            write_secret(&secret, "s", &missing, 0o440, dir.path()),
            Err(MountError::MissingKey { .. })
        ));
    }

    #[test]
    fn private_dirs_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b");
        private_dir(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
    }
}
