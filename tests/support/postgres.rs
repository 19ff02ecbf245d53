//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, a server on
//! 127.0.0.1 with a free port and its unix socket in that directory, stopped when the test
//! binary exits (or when the handle is dropped).
//!
//! The tests run as root, which PostgreSQL refuses, so initdb and the server run as the
//! `postgres` user through `runuser`. The server is started by a small shell that waits on its
//! stdin: when this process exits for any reason the pipe closes and the shell stops the
//! server with a fast shutdown, so no cluster outlives its test binary.
//!
//! Install PostgreSQL with `scripts/setup/postgres.sh`.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Password of the `postgres` superuser over TCP (local socket connections are trusted).
pub const PASSWORD: &str = "test-superuser-pw";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    server: Option<Child>,
}

/// The cluster shared by every test of this binary.
pub fn shared() -> &'static Postgres {
    static CLUSTER: OnceLock<Postgres> = OnceLock::new();
    CLUSTER.get_or_init(Postgres::start)
}

fn bin_dir() -> PathBuf {
    // Prefer 15 (what production targets), else the newest installed.
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    let fifteen = PathBuf::from("/usr/lib/postgresql/15/bin");
    if found.contains(&fifteen) {
        return fifteen;
    }
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run scripts/setup/postgres.sh")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "no postgres user: run scripts/setup/postgres.sh"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(program);
    c
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(|_| Vec::new())
    }

    /// Starts a cluster with extra server settings, given by `settings` once the (postgres
    /// owned) directory exists, e.g. to write TLS keys into it and turn `ssl` on.
    pub fn start_with(settings: impl FnOnce(&Path) -> Vec<(String, String)>) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("privacy-operator-pg-")
            .tempdir()
            .expect("temp dir");
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod temp dir");
        let pwfile = dir.path().join("pw");
        std::fs::File::create(&pwfile)
            .and_then(|mut f| f.write_all(PASSWORD.as_bytes()))
            .expect("write pwfile");
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown pwfile");

        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let extra: String = settings(dir.path())
            .into_iter()
            .map(|(k, v)| format!(" -c {k}={v}"))
            .collect();
        // Files the settings wrote belong to the server's user.
        for entry in std::fs::read_dir(dir.path())
            .expect("read temp dir")
            .flatten()
        {
            std::os::unix::fs::chown(entry.path(), Some(uid), Some(gid)).expect("chown");
        }
        let port = free_port();
        let log = dir.path().join("server.log");
        let server_cmd = format!(
            "exec {postgres} -D {data} -p {port} -h 127.0.0.1 -k {sock} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100{extra}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            sock = dir.path().display(),
        );
        // The shell runs the server in the background and stops it when stdin closes.
        let script = format!(
            "({server_cmd}) >{log} 2>&1 & pid=$!; cat >/dev/null; kill -INT $pid; wait $pid; rm -rf {dir}",
            log = log.display(),
            dir = dir.path().display(),
        );
        let server = as_postgres(Path::new("/bin/sh"))
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let pg = Postgres {
            dir,
            bin,
            port,
            server: Some(server),
        };
        pg.wait_ready(&log);
        pg
    }

    fn wait_ready(&self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within 60s: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A connection URL for `db` as the superuser over TCP.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Runs SQL through psql against `db` (stops at the first error).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(["-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A psql session reading statements from its stdin, for holding locks or transactions
    /// open while a test does something else. Write statements to `stdin`; drop it to end.
    pub fn psql_session(&self, db: &str) -> Child {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start psql")
    }

    /// Polls `query` (which returns one value) until it prints `want`, for at most 30s.
    pub fn wait_for(&self, db: &str, query: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.psql(db, query);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited 30s for {query:?} to give {want:?}, last {got:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a SQL file through psql against `db`.
    pub fn psql_file(&self, db: &str, file: &Path) {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .arg("-f")
            .arg(file)
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql -f {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh database copied from `template` (created once by `init` on first use), so each
    /// test works on its own data.
    pub fn database_from(&self, template: &str, name: &str) -> String {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
        );
        self.url(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // Closing stdin makes the wrapper shell stop the server.
            drop(server.stdin.take());
            let _ = server.wait();
        }
    }
}
