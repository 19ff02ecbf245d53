#![recursion_limit = "256"]
//! The product as a user meets it before any controller runs: the real kubectl (oldest and
//! newest we support) applies the generated CRDs and every example to the emulator, shows the
//! printer columns, explains the fields, and refuses each malformed manifest with a message
//! that names the field to fix.

#[path = "../emulator/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{Kubectl, kubectl_binaries};

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// kubectl 1.27 (JSON bodies) and 1.33 (protobuf bodies for typed commands), when installed.
fn kubectls() -> Vec<(u32, PathBuf)> {
    let all = kubectl_binaries();
    assert!(
        !all.is_empty(),
        "no kubectl.1.x binaries found under /usr/lib/google-cloud-sdk/bin"
    );
    let oldest = all.first().cloned();
    let newest = all.last().cloned();
    oldest
        .into_iter()
        .chain(newest)
        .collect::<Vec<_>>()
        .into_iter()
        .fold(Vec::new(), |mut acc, k| {
            if !acc.iter().any(|(m, _)| *m == k.0) {
                acc.push(k);
            }
            acc
        })
}

async fn cluster_with_crds(binary: &Path) -> (emulator::EmulatorHandle, Kubectl) {
    let emu = common::start().await;
    let kubectl = Kubectl::new(&emu, binary);
    let crds = repo_path("crds");
    kubectl
        .ok(&["apply", "-f", crds.to_str().expect("utf-8 path")])
        .await;
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=30s",
        ])
        .await;
    (emu, kubectl)
}

#[tokio::test]
async fn kubectl_applies_crds_and_every_example() {
    for (minor, binary) in kubectls() {
        let (_emu, kubectl) = cluster_with_crds(&binary).await;
        let examples = repo_path("examples");
        let out = kubectl
            .ok(&["apply", "-f", examples.to_str().expect("utf-8 path")])
            .await;
        for kind in [
            "datasubjectrequest",
            "datasystem",
            "retentionpolicy",
            "consentpolicy",
        ] {
            assert!(
                out.contains(&format!("{kind}.privacy-operator.dev/")),
                "1.{minor}: no {kind} in:\n{out}"
            );
        }

        let table = kubectl.ok(&["get", "dsr", "-A"]).await;
        let header = table.lines().next().unwrap_or_default();
        for column in ["NAMESPACE", "NAME", "TYPE", "PHASE", "DUE", "READY", "AGE"] {
            assert!(
                header.contains(column),
                "1.{minor}: column {column} missing in:\n{table}"
            );
        }
        assert!(table.contains("Erasure"), "1.{minor}: {table}");

        let everything = kubectl.ok(&["get", "privacy", "-A"]).await;
        for kind in [
            "datasystem",
            "retentionpolicy",
            "consentpolicy",
            "datasubjectrequest",
        ] {
            assert!(
                everything.contains(kind),
                "1.{minor}: category privacy lacks {kind}:\n{everything}"
            );
        }

        let explain = kubectl.ok(&["explain", "dsr.spec.type"]).await;
        assert!(explain.contains("Erasure"), "1.{minor}: {explain}");
    }
}

#[tokio::test]
async fn kubectl_patch_wait_and_delete_a_request() {
    for (minor, binary) in kubectls() {
        let (_emu, kubectl) = cluster_with_crds(&binary).await;
        let dsr = repo_path("examples/dsr-access.yaml");
        kubectl
            .ok(&["apply", "-f", dsr.to_str().expect("utf-8 path")])
            .await;
        let name = kubectl
            .ok(&["get", "dsr", "-o", "jsonpath={.items[0].metadata.name}"])
            .await;
        assert!(!name.is_empty(), "1.{minor}: no request applied");

        // legalHold stays mutable after acceptance; the merge patch goes through the CEL rules.
        kubectl
            .ok(&[
                "patch",
                "dsr",
                &name,
                "--type=merge",
                "-p",
                r#"{"spec":{"legalHold":true}}"#,
            ])
            .await;
        let hold = kubectl
            .ok(&["get", "dsr", &name, "-o", "jsonpath={.spec.legalHold}"])
            .await;
        assert_eq!(hold, "true", "1.{minor}");

        // The spec changed, so the generation moved on; kubectl wait ignores conditions observed
        // for an older generation, exactly as on a real cluster.
        let generation = kubectl
            .ok(&["get", "dsr", &name, "-o", "jsonpath={.metadata.generation}"])
            .await;
        assert_eq!(
            generation, "2",
            "1.{minor}: a spec change bumps the generation"
        );

        // Play the controller: mark it Ready through the status subresource, then wait on it.
        let status = format!(
            r#"{{"status":{{"phase":"Completed","conditions":[{{"type":"Ready","status":"True","reason":"Complete","message":"done","lastTransitionTime":"2026-01-01T00:00:00Z","observedGeneration":{generation}}}]}}}}"#
        );
        kubectl
            .ok(&[
                "patch",
                "dsr",
                &name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status,
            ])
            .await;
        kubectl
            .ok(&[
                "wait",
                "--for=condition=Ready",
                &format!("dsr/{name}"),
                "--timeout=20s",
            ])
            .await;

        let yaml = kubectl.ok(&["get", "dsr", &name, "-o", "yaml"]).await;
        assert!(yaml.contains("phase: Completed"), "1.{minor}: {yaml}");

        kubectl.ok(&["delete", "dsr", &name, "--wait=true"]).await;
        let gone = kubectl.run(&["get", "dsr", &name]).await;
        assert!(
            !gone.success && gone.stderr.contains("NotFound"),
            "1.{minor}: {gone:?}"
        );
    }
}

/// Each file of `tests/malformed/` says what kubectl must answer with `# expect: <text>`.
/// Every document but the last must be accepted (they set the stage, e.g. the original of a
/// spec that is then changed); the last must be refused with that text.
#[tokio::test]
async fn kubectl_refuses_every_malformed_manifest_naming_the_field() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("tests/malformed"))
        .expect("tests/malformed exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "the malformed corpus is too small: {files:?}"
    );

    for (minor, binary) in kubectls() {
        let (_emu, kubectl) = cluster_with_crds(&binary).await;
        for file in &files {
            let text = std::fs::read_to_string(file).expect("readable");
            let expects: Vec<&str> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("# expect:"))
                .map(str::trim)
                .collect();
            assert!(
                !expects.is_empty(),
                "{} has no '# expect:' line",
                file.display()
            );
            let docs: Vec<&str> = text.split("\n---\n").collect();
            let (last, setup) = docs.split_last().expect("one document at least");
            for doc in setup {
                let out = kubectl
                    .run_with_stdin(&["apply", "-f", "-"], Some(doc))
                    .await;
                assert!(
                    out.success,
                    "1.{minor} {}: set-up document refused: {}",
                    file.display(),
                    out.stderr
                );
            }
            let out = kubectl
                .run_with_stdin(&["apply", "-f", "-"], Some(last))
                .await;
            assert!(
                !out.success,
                "1.{minor} {}: accepted but must be refused:\n{}",
                file.display(),
                out.stdout
            );
            for expect in &expects {
                assert!(
                    out.stderr.contains(expect),
                    "1.{minor} {}: error does not say {expect:?}:\n{}",
                    file.display(),
                    out.stderr
                );
            }
        }
    }
}
