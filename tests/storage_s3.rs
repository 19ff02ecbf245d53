//! The storage abstraction against a real S3-protocol server (s3s-fs, which checks SigV4
//! signatures and presigned-URL expiry): objects, streaming multipart uploads, presigned
//! downloads, age encryption and the error reasons.

#[path = "support/s3.rs"]
mod s3;

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;
use privacy_operator::storage::{PART_SIZE, StorageTarget, Store};
use sha2::{Digest, Sha256};

fn store(prefix: &str) -> Store {
    Store::open(&s3::shared().target(prefix)).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn keys(objects: &[privacy_operator::storage::ObjectInfo]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

#[tokio::test]
async fn put_get_list_delete_rename() {
    let root = store("t-basic");
    let s = root.child("exports/ns/r1");
    let info = s
        .put("crm/contacts.ndjson", Bytes::from_static(b"{\"id\":7}\n"))
        .await
        .unwrap();
    assert_eq!(info.sha256, sha(b"{\"id\":7}\n"));
    assert_eq!(
        s.url("crm/contacts.ndjson"),
        "s3://privacy/t-basic/exports/ns/r1/crm/contacts.ndjson"
    );
    assert_eq!(
        s.get("crm/contacts.ndjson").await.unwrap().unwrap(),
        Bytes::from_static(b"{\"id\":7}\n")
    );
    assert_eq!(s.get("crm/absent.ndjson").await.unwrap(), None);
    assert_eq!(
        s.head("crm/contacts.ndjson").await.unwrap().unwrap().size,
        9
    );

    s.put("crm/notes.ndjson", Bytes::from_static(b""))
        .await
        .unwrap();
    s.copy("crm/contacts.ndjson", "copy/contacts.ndjson")
        .await
        .unwrap();
    s.rename("crm/notes.ndjson", "moved/notes.ndjson")
        .await
        .unwrap();
    let all = s.list("").await.unwrap();
    assert_eq!(
        keys(&all),
        [
            "copy/contacts.ndjson",
            "crm/contacts.ndjson",
            "moved/notes.ndjson"
        ]
    );
    assert_eq!(
        keys(&root.list("exports/ns/r1/crm").await.unwrap()),
        ["exports/ns/r1/crm/contacts.ndjson"]
    );

    s.delete("copy/contacts.ndjson").await.unwrap();
    s.delete("copy/contacts.ndjson").await.unwrap();
    assert_eq!(s.delete_prefix("").await.unwrap(), 2);
    assert!(root.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn multipart_streaming_of_a_large_object_hashes_what_is_stored() {
    let s = store("t-multipart");
    let mut w = s
        .writer("big/records.ndjson")
        .await
        .unwrap()
        .with_part_size(PART_SIZE);
    let mut expected = Sha256::new();
    let mut size = 0u64;
    // 13 MiB in uneven chunks: three parts, the last short.
    let line: Vec<u8> = (0..1000u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i % 36) as usize])
        .chain(std::iter::once(b'\n'))
        .collect();
    while size < 13 * 1024 * 1024 {
        w.write(&line).await.unwrap();
        expected.update(&line);
        size += line.len() as u64;
        if size > 6 * 1024 * 1024 && size < 6 * 1024 * 1024 + 2000 {
            // Parts are uploading, but nothing is visible under the key yet.
            assert!(s.list("big").await.unwrap().is_empty());
        }
    }
    let info = w.finish().await.unwrap();
    assert_eq!(info.size, size);
    assert_eq!(info.sha256, hex::encode(expected.finalize()));
    let stored = s.get("big/records.ndjson").await.unwrap().unwrap();
    assert_eq!(stored.len() as u64, size);
    assert_eq!(sha(&stored), info.sha256);
    assert_eq!(s.list("big").await.unwrap()[0].size, size);
}

#[tokio::test]
async fn aborted_multipart_upload_leaves_nothing() {
    let s = store("t-abort");
    let mut w = s
        .writer("x/partial.bin")
        .await
        .unwrap()
        .with_part_size(PART_SIZE);
    w.write(&vec![7u8; 6 * 1024 * 1024]).await.unwrap();
    w.abort().await.unwrap();
    assert!(s.list("").await.unwrap().is_empty());
    assert_eq!(s.get("x/partial.bin").await.unwrap(), None);
}

#[tokio::test]
async fn presigned_get_works_then_expires() {
    let s = store("t-presign");
    s.put("bundle/manifest.json", Bytes::from_static(b"{\"ok\":true}"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = s
        .presign_get("bundle/manifest.json", Duration::from_secs(300))
        .await
        .unwrap();
    assert!(url.starts_with(&s3::shared().endpoint), "{url}");
    assert!(url.contains("X-Amz-Signature"), "{url}");
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), "{\"ok\":true}");

    // A tampered signature is refused.
    let tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    let status = http.get(&tampered).send().await.unwrap().status();
    assert!(status.is_client_error(), "{status}");

    // A one-second link stops working once its second has passed.
    let short = s
        .presign_get("bundle/manifest.json", Duration::from_secs(1))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = http.get(&short).send().await.unwrap().status();
        if status.is_client_error() {
            break;
        }
        assert_eq!(status, 200, "before expiry the link works");
        assert!(Instant::now() < deadline, "the link never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn wrong_secret_is_access_denied() {
    let mut target = s3::shared().target("t-denied");
    target
        .options
        .insert("aws_secret_access_key".into(), "not-the-secret".into());
    let s = Store::open(&target).unwrap();
    let e = s.put("a", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.reason, "AccessDenied", "{e}");
    assert!(e.message.contains("credentials"), "{e}");
    assert!(!e.message.contains("not-the-secret"), "{e}");
    let e = s.get("a").await.unwrap_err();
    assert_eq!(e.reason, "AccessDenied", "{e}");
}

#[tokio::test]
async fn missing_bucket_is_no_such_bucket() {
    // s3s-fs creates a bucket's directory on PUT, so the check is on reads.
    let s = Store::open(&s3::shared().target_in("no-such-bucket", "p")).unwrap();
    let e = s.list("").await.unwrap_err();
    assert_eq!(e.reason, "NoSuchBucket", "{e}");
    assert!(e.message.contains("create the bucket"), "{e}");
}

#[tokio::test]
async fn server_down_is_unreachable() {
    let mut server = s3::S3::start();
    let s = Store::open(&server.target("t")).unwrap();
    s.put("a", Bytes::from_static(b"x")).await.unwrap();
    server.stop();
    let e = s.put("b", Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.reason, "StorageUnreachable", "{e}");
    assert!(e.message.contains("endpoint"), "{e}");
    let e = s.list("").await.unwrap_err();
    assert_eq!(e.reason, "StorageUnreachable", "{e}");
}

#[tokio::test]
async fn server_down_mid_upload_publishes_nothing() {
    let mut server = s3::S3::start();
    let s = Store::open(&server.target("t").with_option("max_retries", "1")).unwrap();
    let mut w = s.writer("big.bin").await.unwrap().with_part_size(PART_SIZE);
    w.write(&vec![1u8; 6 * 1024 * 1024]).await.unwrap();
    server.stop();
    let mut failed = None;
    for _ in 0..4 {
        if let Err(e) = w.write(&vec![2u8; 1024 * 1024]).await {
            failed = Some(e);
            break;
        }
    }
    let e = match failed {
        Some(e) => e,
        None => w.finish().await.unwrap_err(),
    };
    assert_eq!(e.reason, "StorageUnreachable", "{e}");
    // Nothing reached the bucket directory under the final name.
    assert!(!server.bucket_dir(s3::BUCKET).join("t/big.bin").exists());
}

#[tokio::test]
async fn age_encrypted_upload_round_trips() {
    let s = store("t-age");
    let identity = age::x25519::Identity::generate();
    let mut w = s
        .writer("enc/contacts.ndjson.age")
        .await
        .unwrap()
        .with_part_size(PART_SIZE)
        .encrypt_to(&identity.to_public().to_string())
        .unwrap();
    let mut plain = Vec::new();
    for i in 0..200_000u32 {
        let line = format!("{{\"id\":{i},\"email\":\"person{i}@example.com\"}}\n");
        w.write(line.as_bytes()).await.unwrap();
        plain.extend_from_slice(line.as_bytes());
    }
    let info = w.finish().await.unwrap();
    assert!(info.size > 5 * 1024 * 1024, "multipart was exercised");
    let stored = s.get("enc/contacts.ndjson.age").await.unwrap().unwrap();
    assert_eq!(sha(&stored), info.sha256);
    let mut out = Vec::new();
    age::Decryptor::new(&stored[..])
        .unwrap()
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain);
}

#[test]
fn env_target_carries_the_operators_credentials() {
    let server = s3::shared();
    let vars = vec![
        ("AWS_ENDPOINT".to_string(), server.endpoint.clone()),
        ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
        ("AWS_ACCESS_KEY_ID".to_string(), server.access_key.clone()),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            server.secret_key.clone(),
        ),
        ("AWS_REGION".to_string(), s3::REGION.to_string()),
    ];
    let target = StorageTarget::from_vars("s3://privacy/t-env", vars).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = Store::open(&target).unwrap();
        s.put("x", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(s.get("x").await.unwrap().unwrap(), "1");
    });
}
