//! `privacy-operator dev` as a person runs it: the real binary, the line it prints once ready,
//! the kubeconfig it writes, kubectl against it, Ctrl-C, and a restart that keeps the state.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Dev {
    child: Child,
    line: String,
}

impl Dev {
    fn start(data_dir: &Path, extra: &[&str]) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_privacy-operator"))
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("privacy-operator dev starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("dev prints where it listens within 60 s");
        Dev { child, line }
    }

    /// Ctrl-C, then the exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(self.child.wait());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("dev stops within 30 s of Ctrl-C")
            .expect("exit status")
    }
}

fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String) {
    let binary = ["/usr/lib/google-cloud-sdk/bin/kubectl.1.33", "kubectl"]
        .into_iter()
        .find(|b| !b.starts_with('/') || Path::new(b).exists())
        .expect("a kubectl");
    let out = Command::new(binary)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn repo(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

#[test]
fn dev_serves_the_crds_to_kubectl_and_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    let kubeconfig = data.join("kubeconfig");

    let dev = Dev::start(&data, &["--no-controller"]);
    assert!(
        dev.line
            .starts_with("privacy-operator dev: Kubernetes API at http://127.0.0.1:")
            && dev.line.contains(&kubeconfig.display().to_string())
            && dev.line.contains("controller off"),
        "unexpected ready line: {}",
        dev.line
    );
    let (ok, out) = kubectl(
        &kubeconfig,
        &cache,
        &["apply", "-f", &repo("crds"), "-f", &repo("examples")],
    );
    assert!(ok, "kubectl apply -f crds/ -f examples/ failed:\n{out}");
    let (ok, table) = kubectl(&kubeconfig, &cache, &["get", "dsr", "-A"]);
    assert!(ok, "{table}");
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "TYPE", "PHASE", "DUE", "READY", "AGE"] {
        assert!(header.contains(column), "no {column} column:\n{table}");
    }
    let (ok, out) = kubectl(
        &kubeconfig,
        &cache,
        &["apply", "-f", &repo("tests/malformed/unknown-type.yaml")],
    );
    assert!(!ok && out.contains("spec.type: Unsupported value"), "{out}");
    let status = dev.interrupt();
    assert!(status.success(), "dev exits cleanly on Ctrl-C: {status:?}");

    // Same data dir: the requests are still there.
    let dev = Dev::start(&data, &["--no-controller"]);
    let (ok, names) = kubectl(
        &kubeconfig,
        &cache,
        &["get", "dsr", "-o", "jsonpath={.items[*].metadata.name}"],
    );
    assert!(
        ok && names.contains("erase-2024-0118"),
        "state lost across a restart: {names}"
    );
    assert!(dev.interrupt().success());
}
