//! Store behaviour on the local filesystem (the S3 protocol is covered by
//! tests/storage_s3.rs against a real S3 server).

use std::io::Read;

use super::*;

fn local() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/root", dir.path().display());
    let store = Store::open(&StorageTarget::new(url)).unwrap();
    (dir, store)
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn put_get_list_delete_rename_copy() {
    let (dir, store) = local();
    let exports = store.child("exports/ns/r1");
    let info = exports
        .put("crm/a.ndjson", Bytes::from_static(b"{\"a\":1}\n"))
        .await
        .unwrap();
    assert_eq!(info.size, 8);
    assert_eq!(info.sha256, sha(b"{\"a\":1}\n"));
    assert!(dir.path().join("root/exports/ns/r1/crm/a.ndjson").exists());
    assert_eq!(
        exports.get("crm/a.ndjson").await.unwrap().unwrap(),
        Bytes::from_static(b"{\"a\":1}\n")
    );
    assert_eq!(exports.get("crm/missing").await.unwrap(), None);
    assert_eq!(exports.head("crm/missing").await.unwrap(), None);
    assert_eq!(exports.head("crm/a.ndjson").await.unwrap().unwrap().size, 8);

    exports.copy("crm/a.ndjson", "crm/b.ndjson").await.unwrap();
    exports
        .rename("crm/b.ndjson", "web/c.ndjson")
        .await
        .unwrap();
    let keys: Vec<String> = exports
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["crm/a.ndjson", "web/c.ndjson"]);
    // The parent store sees the same objects under longer keys.
    let keys: Vec<String> = store
        .list("exports/ns")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        keys,
        ["exports/ns/r1/crm/a.ndjson", "exports/ns/r1/web/c.ndjson"]
    );
    // A prefix matches whole segments only.
    assert!(exports.list("cr").await.unwrap().is_empty());
    assert!(exports.list("nothing/here").await.unwrap().is_empty());

    exports.delete("web/c.ndjson").await.unwrap();
    exports.delete("web/c.ndjson").await.unwrap();
    assert_eq!(exports.delete_prefix("crm").await.unwrap(), 1);
    assert!(exports.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn urls_and_file_presigning() {
    let (dir, store) = local();
    let c = store.child("/exports/").child("ns");
    assert_eq!(
        c.url("r/manifest.json"),
        format!(
            "file://{}/root/exports/ns/r/manifest.json",
            dir.path().display()
        )
    );
    assert_eq!(
        c.url(""),
        format!("file://{}/root/exports/ns", dir.path().display())
    );
    let url = c
        .presign_get("r/x.json", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(url, c.url("r/x.json"));
}

#[tokio::test]
async fn bad_keys_are_refused() {
    let (_dir, store) = local();
    for key in ["a/../b", "a//b", "./a"] {
        let e = store.put(key, Bytes::new()).await.unwrap_err();
        assert_eq!(e.reason, "StorageError", "{key}: {e}");
        assert!(e.message.contains("invalid object key"), "{e}");
    }
    let e = store.delete_prefix("").await;
    assert!(e.is_ok(), "a file:// root has a non-empty base prefix");
}

#[tokio::test]
async fn streaming_writer_switches_to_multipart_and_hashes() {
    let (dir, store) = local();
    let mut w = store.writer("big.bin").await.unwrap().with_part_size(1024);
    let mut all = Vec::new();
    for i in 0..100u32 {
        let chunk = vec![(i % 251) as u8; 97];
        all.extend_from_slice(&chunk);
        w.write(&chunk).await.unwrap();
        // Nothing under the final key until finish.
        assert!(!dir.path().join("root/big.bin").exists());
    }
    let info = w.finish().await.unwrap();
    assert_eq!(info.size, all.len() as u64);
    assert_eq!(info.sha256, sha(&all));
    assert_eq!(std::fs::read(dir.path().join("root/big.bin")).unwrap(), all);
    // No staging files left next to it.
    assert_eq!(store.list("").await.unwrap().len(), 1);
}

#[tokio::test]
async fn aborted_writer_publishes_nothing() {
    let (dir, store) = local();
    let mut w = store.writer("x/part.bin").await.unwrap().with_part_size(16);
    w.write(&[1u8; 100]).await.unwrap();
    w.abort().await.unwrap();
    let mut w = store.writer("x/small.bin").await.unwrap();
    w.write(b"abc").await.unwrap();
    drop(w);
    assert!(store.list("").await.unwrap().is_empty());
    assert!(!dir.path().join("root/x/part.bin").exists());
}

#[tokio::test]
async fn encrypted_writer_round_trips_with_age() {
    let (_dir, store) = local();
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let mut w = store
        .writer("secret.ndjson")
        .await
        .unwrap()
        .with_part_size(64 * 1024)
        .encrypt_to(&recipient)
        .unwrap();
    let line = b"{\"email\":\"jane@example.com\"}\n";
    let mut plain = Vec::new();
    for _ in 0..10_000 {
        w.write(line).await.unwrap();
        plain.extend_from_slice(line);
    }
    let info = w.finish().await.unwrap();
    let stored = store.get("secret.ndjson").await.unwrap().unwrap();
    assert_eq!(info.size, stored.len() as u64);
    assert_eq!(info.sha256, sha(&stored));
    assert!(!stored.windows(5).any(|w| w == b"email"));
    let decryptor = age::Decryptor::new(&stored[..]).unwrap();
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert_eq!(out, plain);
}

#[tokio::test]
async fn bad_recipient_is_a_clear_error() {
    let (_dir, store) = local();
    let w = store.writer("x").await.unwrap();
    let e = w.encrypt_to("age1notakey").err().unwrap();
    assert_eq!(e.reason, "InvalidRecipient");
    assert!(e.message.contains("age"), "{e}");
    let mut w = store.writer("y").await.unwrap();
    w.write(b"a").await.unwrap();
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    assert!(w.encrypt_to(&recipient).is_err());
}

#[tokio::test]
async fn unwritable_directory_is_access_denied_or_error() {
    // Root ignores permissions; only check the mapping when not root.
    if nix_is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ro")).unwrap();
    let mut perms = std::fs::metadata(dir.path().join("ro"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o500);
    std::fs::set_permissions(dir.path().join("ro"), perms).unwrap();
    let store = Store::open(&StorageTarget::new(format!(
        "file://{}/ro",
        dir.path().display()
    )))
    .unwrap();
    let e = store.put("a", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.reason, "AccessDenied", "{e}");
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(true)
}

#[test]
fn writer_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let (_dir, store) = local();
    send(store.put("a", Bytes::new()));
    send(store.get("a"));
    send(store.list(""));
    send(store.delete_prefix("a"));
    send(store.rename("a", "b"));
    send(store.presign_get("a", Duration::from_secs(1)));
    send(store.writer("a"));
}

#[tokio::test]
async fn azure_and_gcs_targets_open_and_azure_presigns_offline() {
    // A presigned Azure URL is a SAS signed with the account key: no request is made.
    let key = "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXk=";
    let az = Store::open(
        &StorageTarget::new("az://exports/root")
            .with_option("azure_storage_account_name", "acct")
            .with_option("azure_storage_account_key", key),
    )
    .unwrap();
    assert_eq!(az.backend(), Backend::Azure);
    assert_eq!(az.url("a/b.json"), "az://exports/root/a/b.json");
    let url = az
        .child("exports/ns")
        .presign_get("r/manifest.json", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        url.starts_with(
            "https://acct.blob.core.windows.net/exports/root/exports/ns/r/manifest.json?"
        ),
        "{url}"
    );
    assert!(url.contains("sig="), "{url}");
    let gcs = Store::open(&StorageTarget::new("gs://bucket/p")).unwrap();
    assert_eq!(gcs.backend(), Backend::Gcs);
    assert_eq!(gcs.url("k"), "gs://bucket/p/k");
}
