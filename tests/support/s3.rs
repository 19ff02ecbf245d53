//! A throwaway S3 server for tests: `s3s-fs` (it checks SigV4 signatures and presigned-URL
//! expiry) on 127.0.0.1 with a free port, a temporary root directory and its own access key.
//! Buckets are directories of the root. Stopped when the test binary exits, or earlier with
//! [`S3::stop`].
//!
//! As in tests/support/postgres.rs, the server runs under a small shell that waits on its
//! stdin: when this process exits for any reason the pipe closes and the shell kills the
//! server and removes the root, so no server outlives its test binary.
//!
//! Install s3s-fs with `scripts/setup/s3.sh`.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use privacy_operator::storage::StorageTarget;

pub const ACCESS_KEY: &str = "privacy-test-access";
pub const SECRET_KEY: &str = "privacy-test-secret-0123456789";
pub const REGION: &str = "us-east-1";
/// The bucket every server starts with.
pub const BUCKET: &str = "privacy";

pub struct S3 {
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    root: PathBuf,
    server: Option<Child>,
}

/// The server shared by every test of this binary.
pub fn shared() -> &'static S3 {
    static SERVER: OnceLock<S3> = OnceLock::new();
    SERVER.get_or_init(S3::start)
}

fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.exists());
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin/s3s-fs"))
        .filter(|p| p.exists());
    on_path
        .or(cargo_bin)
        .unwrap_or_else(|| panic!("s3s-fs is not installed: run scripts/setup/s3.sh"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl S3 {
    pub fn start() -> S3 {
        let root = tempfile::Builder::new()
            .prefix("privacy-operator-s3-")
            .tempdir()
            .expect("temp dir")
            // The shell removes it when the server stops.
            .keep();
        Self::spawn(root, None, true)
    }

    /// A server on `root`, which the caller owns (kept when the server stops), on `port`
    /// or a free one: stopping it and starting another on the same root and port is a
    /// restart that keeps every object.
    pub fn start_in(root: &std::path::Path, port: Option<u16>) -> S3 {
        Self::spawn(root.to_path_buf(), port, false)
    }

    fn spawn(root: PathBuf, port: Option<u16>, remove_root: bool) -> S3 {
        std::fs::create_dir_all(root.join(BUCKET)).expect("create the bucket directory");
        let port = port.unwrap_or_else(free_port);
        let server_cmd = format!(
            "exec {bin} --host 127.0.0.1 --port {port} --access-key {ACCESS_KEY} --secret-key {SECRET_KEY} {root}",
            bin = binary().display(),
            root = root.display(),
        );
        let log = root.with_extension(format!("{port}.log"));
        let cleanup = if remove_root {
            format!("rm -rf {} {}", root.display(), log.display())
        } else {
            format!("rm -f {}", log.display())
        };
        let script = format!(
            "({server_cmd}) >{log} 2>&1 & pid=$!; cat >/dev/null; kill $pid; wait $pid; {cleanup}",
            log = log.display(),
        );
        let server = Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let s3 = S3 {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: BUCKET.to_string(),
            access_key: ACCESS_KEY.to_string(),
            secret_key: SECRET_KEY.to_string(),
            root,
            server: Some(server),
        };
        s3.wait_ready(&log);
        s3
    }

    fn wait_ready(&self, log: &std::path::Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not accept connections within 30s: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A target for `prefix` in the default bucket with this server's credentials.
    pub fn target(&self, prefix: &str) -> StorageTarget {
        self.target_in(&self.bucket, prefix)
    }

    /// A target for `prefix` in `bucket` (which may not exist).
    pub fn target_in(&self, bucket: &str, prefix: &str) -> StorageTarget {
        let prefix = prefix.trim_matches('/');
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        StorageTarget::new(url)
            .with_option("aws_endpoint", &self.endpoint)
            .with_option("aws_allow_http", "true")
            .with_option("aws_region", REGION)
            .with_option("aws_access_key_id", &self.access_key)
            .with_option("aws_secret_access_key", &self.secret_key)
    }

    /// Creates another bucket.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).expect("create bucket directory");
    }

    /// Where the server keeps `bucket` on disk, for tests that check what is stored.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// Stops the server now (closing the shell's stdin) and waits until it no longer
    /// accepts connections.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            drop(server.stdin.take());
            let _ = server.wait();
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(Instant::now() < deadline, "s3s-fs did not stop within 10s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}
