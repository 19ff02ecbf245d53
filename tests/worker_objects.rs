//! The object-storage connector against a real S3 server (s3s-fs, signatures checked) and a
//! local directory: exact export with checksums, soft delete into the encrypted quarantine and
//! restore, purge of objects and quarantined copies with verification, other subjects
//! untouched, and identifiers that could escape the prefix refused.

#[path = "support/s3.rs"]
mod s3_support;

use std::collections::BTreeMap;

use age::secrecy::ExposeSecret;
use bytes::Bytes;
use privacy_operator::api::subject::IdentifierSet;
use privacy_operator::plan::jobs::JobStep;
use privacy_operator::storage::{StorageTarget, Store};
use privacy_operator::worker::postgres::Options;
use privacy_operator::worker::run_task;
use privacy_operator::worker::task::{CONTRACT_VERSION, Manifest, Outcome, Task};
use sha2::{Digest, Sha256};

/// Objects of three users; u-420 shares u-42's first characters.
fn objects() -> BTreeMap<&'static str, Vec<u8>> {
    [
        (
            "users/u-42/avatar.png",
            (0u8..=255).cycle().take(70_000).collect(),
        ),
        ("users/u-42/docs/cv.txt", b"Jane's CV\n".to_vec()),
        ("users/u-420/avatar.png", b"someone else".to_vec()),
        ("users/u-1/notes.txt", b"and another".to_vec()),
    ]
    .into()
}

/// One test's world: the system's bucket prefix and the operator's storage.
struct Case {
    system_url: String,
    credentials: BTreeMap<String, String>,
    system: Store,
    storage: StorageTarget,
    name: String,
    key: String,
}

impl Case {
    /// In the S3 server: the system in bucket `userdata` below `<name>/`, the operator's
    /// storage in the default bucket.
    async fn s3(name: &str) -> Case {
        let s3 = s3_support::shared();
        s3.create_bucket("userdata");
        let credentials: BTreeMap<String, String> = [
            ("AWS_ACCESS_KEY_ID", s3.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key.as_str()),
            ("AWS_ENDPOINT", s3.endpoint.as_str()),
            ("AWS_REGION", s3_support::REGION),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let system_url = format!("s3://userdata/{name}");
        let system = Store::open(&s3.target_in("userdata", name)).unwrap();
        Case::fill(system_url, credentials, system, s3.target(""), name).await
    }

    /// On the local filesystem, as in single-machine use.
    async fn local(dir: &std::path::Path, name: &str) -> Case {
        let system_url = format!("file://{}/system", dir.display());
        std::fs::create_dir_all(dir.join("system")).unwrap();
        std::fs::create_dir_all(dir.join("operator")).unwrap();
        let system = Store::open(&StorageTarget::new(&system_url)).unwrap();
        let storage = StorageTarget::new(format!("file://{}/operator", dir.display()));
        Case::fill(system_url, BTreeMap::new(), system, storage, name).await
    }

    async fn fill(
        system_url: String,
        credentials: BTreeMap<String, String>,
        system: Store,
        storage: StorageTarget,
        name: &str,
    ) -> Case {
        for (key, bytes) in objects() {
            system.put(key, Bytes::from(bytes)).await.unwrap();
        }
        Case {
            system_url,
            credentials,
            system,
            storage,
            name: name.to_string(),
            key: age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
                .to_string(),
        }
    }

    fn task_with(&self, step: JobStep, prefix: &str, ids: IdentifierSet) -> Task {
        let digest = ids.digest(b"test");
        serde_json::from_value(serde_json::json!({
            "version": CONTRACT_VERSION,
            "request": {"namespace": "shop", "name": self.name, "digest": digest},
            "step": step,
            "system": {"name": "uploads", "spec": {"connector": {
                "type": "ObjectStorage",
                "objectStorage": {"url": self.system_url, "prefix": prefix,
                                  "credentialsSecretRef": {"name": "uploads-s3"}}}}},
            "identifiers": ids,
            "storage": self.storage,
            "output": format!("exports/shop/{}/uploads", self.name),
            "quarantine": format!("quarantine/shop/{}/uploads", self.name),
            "quarantineKey": self.key,
            "credentials": self.credentials,
        }))
        .unwrap()
    }

    fn task(&self, step: JobStep) -> Task {
        let ids = IdentifierSet {
            user_id: Some("u-42".into()),
            ..Default::default()
        };
        self.task_with(step, "users/{userId}/", ids)
    }

    async fn run(&self, step: JobStep) -> Manifest {
        run_task(&self.task(step), &Options::default()).await
    }

    fn operator(&self, prefix: &str) -> Store {
        Store::open(&self.storage)
            .unwrap()
            .child(&format!("{prefix}/shop/{}/uploads", self.name))
    }

    /// Every object of the system with its content.
    async fn contents(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for o in self.system.list("").await.unwrap() {
            let bytes = self.system.get(&o.key).await.unwrap().unwrap();
            out.insert(o.key, bytes.to_vec());
        }
        out
    }
}

fn ok(m: &Manifest) {
    assert_eq!(m.outcome, Outcome::Succeeded, "{m:#?}");
}

fn all() -> BTreeMap<String, Vec<u8>> {
    objects()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn others() -> BTreeMap<String, Vec<u8>> {
    all()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("users/u-42/"))
        .collect()
}

#[tokio::test]
async fn export_copies_exactly_the_subjects_objects() {
    let case = Case::s3("export").await;
    let m = case.run(JobStep::Export).await;
    ok(&m);
    assert_eq!(m.tables["objects"].rows, 2);
    let files: BTreeMap<&str, _> = m.files.iter().map(|f| (f.path.as_str(), f)).collect();
    assert_eq!(
        files.keys().copied().collect::<Vec<_>>(),
        vec![
            "objects/users/u-42/avatar.png",
            "objects/users/u-42/docs/cv.txt"
        ]
    );
    let out = case.operator("exports");
    for (key, bytes) in objects()
        .into_iter()
        .filter(|(k, _)| k.starts_with("users/u-42/"))
    {
        let path = format!("objects/{key}");
        let f = files[path.as_str()];
        assert_eq!(f.size, bytes.len() as u64);
        assert_eq!(f.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(out.get(&path).await.unwrap().unwrap().to_vec(), bytes);
    }
    assert_eq!(case.contents().await, all(), "export changes nothing");
}

async fn soft_delete_restore_purge(case: Case) {
    let m = case.run(JobStep::SoftDelete).await;
    ok(&m);
    assert_eq!(m.tables["objects"].rows, 2);
    assert_eq!(case.contents().await, others(), "only u-42's objects moved");
    let quarantine = case.operator("quarantine");
    let held = quarantine.list("").await.unwrap();
    assert_eq!(
        held.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        vec![
            "objects/users/u-42/avatar.png.age",
            "objects/users/u-42/docs/cv.txt.age"
        ]
    );
    let stored = quarantine.get(&held[1].key).await.unwrap().unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains("Jane"),
        "quarantined copies are encrypted"
    );

    let again = case.run(JobStep::SoftDelete).await;
    ok(&again);
    assert_eq!(again.total_rows(), 0);

    // The application uploads a new cv meanwhile: restore keeps it.
    case.system
        .put("users/u-42/docs/cv.txt", Bytes::from_static(b"new cv"))
        .await
        .unwrap();
    let r = case.run(JobStep::Restore).await;
    ok(&r);
    assert_eq!(r.tables["objects"].rows, 1);
    let mut want = all();
    want.insert("users/u-42/docs/cv.txt".into(), b"new cv".to_vec());
    assert_eq!(case.contents().await, want);
    assert!(quarantine.list("").await.unwrap().is_empty());

    // Soft delete, a late upload, then purge: nothing of u-42 anywhere.
    ok(&case.run(JobStep::SoftDelete).await);
    case.system
        .put("users/u-42/late.txt", Bytes::from_static(b"late"))
        .await
        .unwrap();
    let p = case.run(JobStep::Purge).await;
    ok(&p);
    assert_eq!(p.tables["objects"].rows, 1);
    let v = p.verification.unwrap();
    assert!(v.passed);
    assert_eq!(
        v.remaining,
        [("objects".to_string(), 0), ("quarantine".to_string(), 0)].into()
    );
    assert_eq!(case.contents().await, others());
    assert!(quarantine.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn soft_delete_restore_and_purge_in_s3() {
    soft_delete_restore_purge(Case::s3("lifecycle").await).await;
}

#[tokio::test]
async fn soft_delete_restore_and_purge_on_the_local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    soft_delete_restore_purge(Case::local(dir.path(), "local").await).await;
}

#[tokio::test]
async fn identifiers_that_could_escape_the_prefix_are_refused() {
    let case = Case::s3("escape").await;
    for bad in ["../u-1", "u-42/../u-1", ".."] {
        let ids = IdentifierSet {
            user_id: Some(bad.into()),
            ..Default::default()
        };
        let m = run_task(
            &case.task_with(JobStep::Purge, "users/{userId}/", ids),
            &Options::default(),
        )
        .await;
        assert_eq!(m.reason.as_deref(), Some("InvalidTask"), "{bad}");
        assert!(m.message.contains("userId"), "{}", m.message);
    }
    let ids = IdentifierSet {
        email: Some("jane@example.com".into()),
        ..Default::default()
    };
    let m = run_task(
        &case.task_with(JobStep::Purge, "users/{userId}/", ids),
        &Options::default(),
    )
    .await;
    assert_eq!(m.reason.as_deref(), Some("InvalidTask"));
    assert!(
        m.message.contains("needs the subject's userId"),
        "{}",
        m.message
    );
    assert_eq!(case.contents().await, all(), "nothing deleted");
}

#[tokio::test]
async fn wrong_credentials_fail_clearly_and_change_nothing() {
    let mut case = Case::s3("denied").await;
    case.credentials
        .insert("AWS_SECRET_ACCESS_KEY".into(), "wrong-secret".into());
    let m = case.run(JobStep::Purge).await;
    assert_eq!(m.outcome, Outcome::Failed);
    assert!(!m.message.contains("wrong-secret"), "{}", m.message);
    assert_eq!(case.contents().await, all());
}
