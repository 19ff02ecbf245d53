//! TLS to PostgreSQL: a server whose certificate is signed by a private CA is reached with
//! `sslmode=require&sslrootcert=<ca.pem>`, and refused without the CA.

#[path = "support/postgres.rs"]
mod pg_support;

use std::path::Path;
use std::process::Command;

use privacy_operator::api::DataSystemSpec;
use privacy_operator::api::subject::IdentifierSet;
use privacy_operator::plan::jobs::JobStep;
use privacy_operator::worker::postgres::Options;
use privacy_operator::worker::run_task;
use privacy_operator::worker::task::{CONTRACT_VERSION, Outcome, RequestRef, SystemRef, Task};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

fn task(url: String, out: &Path) -> Task {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm/datasystem.yaml"),
    )
    .unwrap();
    let spec: DataSystemSpec = serde_yaml_ng::from_str(&yaml).unwrap();
    let ids = IdentifierSet {
        email: Some("contact7@example.com".into()),
        ..Default::default()
    };
    Task {
        version: CONTRACT_VERSION.into(),
        request: RequestRef {
            namespace: "ns".into(),
            name: "tls".into(),
            digest: ids.digest(b"t"),
            uid: None,
        },
        step: JobStep::Export,
        system: SystemRef {
            name: "crm".into(),
            spec,
        },
        connection: Some(url),
        identifiers: ids,
        changes: vec![],
        purposes: vec![],
        hash_salt: None,
        webhook: None,
        quarantine: None,
        quarantine_key: None,
        credentials: Default::default(),
        storage: Default::default(),
        output: out.display().to_string(),
        recipient: None,
    }
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let pg = pg_support::Postgres::start_with(|dir| {
        make_certs(dir);
        let file = |n: &str| format!("'{}'", dir.join(n).display());
        vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), file("server.crt")),
            ("ssl_key_file".into(), file("server.key")),
        ]
    });
    pg.psql("postgres", "CREATE DATABASE crm");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm");
    pg.psql_file("crm", &fixtures.join("schema.sql"));
    pg.psql_file("crm", &fixtures.join("data.sql"));
    // The test keeps its own copy of the CA: the cluster directory belongs to postgres.
    let client_dir = tempfile::tempdir().unwrap();
    let ca = client_dir.path().join("ca.pem");
    std::fs::copy(pg.dir().join("ca.pem"), &ca).unwrap();
    let out = tempfile::tempdir().unwrap();

    let url = format!(
        "{}?sslmode=require&sslrootcert={}",
        pg.url("crm"),
        ca.display()
    );
    let m = run_task(&task(url, out.path()), &Options::default()).await;
    assert_eq!(m.outcome, Outcome::Succeeded, "{m:?}");
    assert_eq!(m.total_rows(), 22);
    // sslmode=require: success means the session was TLS, verified against the private CA.

    let m = run_task(
        &task(format!("{}?sslmode=require", pg.url("crm")), out.path()),
        &Options::default(),
    )
    .await;
    assert_eq!(m.reason.as_deref(), Some("TlsFailed"), "{}", m.message);
    assert!(
        m.message.to_lowercase().contains("certificate"),
        "{}",
        m.message
    );

    let m = run_task(
        &task(
            format!("{}?sslrootcert=/nonexistent/ca.pem", pg.url("crm")),
            out.path(),
        ),
        &Options::default(),
    )
    .await;
    assert_eq!(m.reason.as_deref(), Some("TlsFailed"), "{}", m.message);
    assert!(m.message.contains("/nonexistent/ca.pem"), "{}", m.message);
}
