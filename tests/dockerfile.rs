//! The `Dockerfile` cannot be built here (no container runtime), so it is checked statically:
//! a multi-stage build with `cargo build --release --locked`, a distroless non-root runtime stage
//! without a shell or package manager, the exec-form entrypoint running the controller, and the
//! ports and user the Helm chart expects.

use std::{collections::BTreeSet, fs, path::PathBuf};

use regex::Regex;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One Dockerfile instruction: keyword (upper case) and its arguments, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all(&self, keyword: &str) -> impl Iterator<Item = &Instruction> {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
    }

    fn last(&self, keyword: &str) -> Option<&Instruction> {
        self.all(keyword).last()
    }
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        // Comment lines inside a continued instruction are dropped, as BuildKit does.
        if trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (keyword, args) = pending
                    .split_once(char::is_whitespace)
                    .unwrap_or((&pending, ""));
                out.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_string(),
                });
                pending.clear();
            }
        }
    }
    assert!(
        pending.is_empty(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

fn stages() -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions(&read("Dockerfile")) {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                from: words.first().expect("FROM names an image").to_string(),
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(ins);
        }
    }
    stages
}

fn runtime() -> Stage {
    stages().pop().expect("the Dockerfile has stages")
}

fn exec_form(ins: &Instruction) -> Vec<String> {
    serde_json::from_str(&ins.args).unwrap_or_else(|e| {
        panic!(
            "{} must use the exec (JSON array) form so no shell is needed: {e}: {}",
            ins.keyword, ins.args
        )
    })
}

fn chart_values() -> Value {
    serde_yaml_ng::from_str(&read("charts/privacy-operator/values.yaml")).expect("values.yaml")
}

#[test]
fn builds_in_a_separate_stage_from_the_lock_file() {
    let stages = stages();
    assert!(stages.len() >= 2, "multi-stage build expected");
    let builder = &stages[0];
    assert_eq!(builder.name.as_deref(), Some("builder"));
    assert!(
        builder.from.contains("rust:"),
        "builder image: {}",
        builder.from
    );
    let runs: Vec<&str> = builder.all("RUN").map(|i| i.args.as_str()).collect();
    assert!(
        runs.iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "the builder must run `cargo build --release --locked`: {runs:?}"
    );
    // The toolchain must satisfy the crate's rust-version.
    let arg = Regex::new(r"ARG RUST_VERSION=(\d+)\.(\d+)").expect("regex");
    let dockerfile = read("Dockerfile");
    let caps = arg
        .captures(&dockerfile)
        .expect("ARG RUST_VERSION=<major>.<minor>");
    let image: (u32, u32) = (
        caps[1].parse().expect("major"),
        caps[2].parse().expect("minor"),
    );
    let manifest = read("Cargo.toml");
    let msrv = Regex::new(r#"rust-version = "(\d+)\.(\d+)""#).expect("regex");
    let caps = msrv
        .captures(&manifest)
        .expect("Cargo.toml has rust-version");
    let needed: (u32, u32) = (
        caps[1].parse().expect("major"),
        caps[2].parse().expect("minor"),
    );
    assert!(
        image >= needed,
        "rust {image:?} is older than rust-version {needed:?}"
    );
}

#[test]
fn runtime_stage_is_distroless_and_non_root() {
    let rt = runtime();
    assert!(
        rt.from
            .starts_with("gcr.io/distroless/static-debian12:nonroot")
            || rt.from.starts_with("gcr.io/distroless/cc-debian12:nonroot"),
        "runtime image must be distroless static or cc (nonroot): {}",
        rt.from
    );
    let user = rt.last("USER").expect("the runtime stage sets USER");
    let uid = user.args.split(':').next().unwrap_or_default();
    assert_eq!(
        uid, "65532",
        "numeric non-root user, so runAsNonRoot can verify it"
    );
    assert_ne!(uid, "0");
    // The chart's pod runs as the same user.
    let deployment = read("charts/privacy-operator/templates/deployment.yaml");
    let run_as = Regex::new(r"runAsUser: (\d+)").expect("regex");
    for caps in run_as.captures_iter(&deployment) {
        assert_eq!(
            &caps[1], uid,
            "chart runAsUser differs from the image's USER"
        );
    }
}

#[test]
fn runtime_stage_has_no_shell_or_package_manager() {
    let rt = runtime();
    assert!(
        rt.all("RUN").next().is_none(),
        "RUN needs a shell; the runtime stage must have none"
    );
    assert!(rt.all("SHELL").next().is_none());
    let forbidden = [
        "apt",
        "apk",
        "dnf",
        "yum",
        "/bin/sh",
        "/bin/bash",
        "busybox",
    ];
    for ins in &rt.instructions {
        for word in forbidden {
            assert!(
                !ins.args
                    .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
                    .any(|w| w == word || w.ends_with(&format!("/{word}"))),
                "runtime stage mentions {word}: {} {}",
                ins.keyword,
                ins.args
            );
        }
    }
    // Only the binary comes across from the builder.
    let copies: Vec<&Instruction> = rt.all("COPY").collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0].args.starts_with("--from=builder "),
        "{:?}",
        copies[0]
    );
}

#[test]
fn entrypoint_runs_the_controller() {
    let rt = runtime();
    let entrypoint = exec_form(rt.last("ENTRYPOINT").expect("ENTRYPOINT"));
    assert_eq!(entrypoint, ["/usr/local/bin/privacy-operator"]);
    // `run` is the default; worker Jobs run the same image with `worker` as their args.
    let cmd = exec_form(rt.last("CMD").expect("CMD"));
    assert_eq!(cmd, ["run"]);
    let copy = rt.last("COPY").expect("COPY");
    assert!(
        copy.args.ends_with(" /usr/local/bin/privacy-operator"),
        "{copy:?}"
    );
    // The chart passes the same subcommand explicitly.
    let deployment = read("charts/privacy-operator/templates/deployment.yaml");
    assert!(deployment.contains("args:\n            - run\n"));
}

#[test]
fn exposed_ports_are_the_charts() {
    let rt = runtime();
    let exposed: BTreeSet<u64> = rt
        .all("EXPOSE")
        .flat_map(|i| {
            i.args
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .unwrap_or_else(|e| panic!("EXPOSE {p}: {e}"))
        })
        .collect();
    let values = chart_values();
    let chart: BTreeSet<u64> = [&values["metrics"]["port"], &values["health"]["port"]]
        .into_iter()
        .map(|v| v.as_u64().expect("port number"))
        .collect();
    assert_eq!(
        exposed, chart,
        "EXPOSE must list metrics.port and health.port"
    );
}

#[test]
fn build_context_is_only_the_sources() {
    let ignore = read(".dockerignore");
    let lines: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.first(), Some(&"*"), "exclude everything by default");
    for needed in ["!Cargo.toml", "!Cargo.lock", "!src/", "!emulator/"] {
        assert!(
            lines.contains(&needed),
            ".dockerignore must let {needed} in"
        );
    }
    // Every COPY source of the builder is let in.
    let stages = stages();
    for copy in stages[0].all("COPY") {
        let words: Vec<&str> = copy.args.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(
                lines
                    .iter()
                    .any(|l| l.trim_start_matches('!').trim_end_matches('/') == src),
                "COPY {src} is excluded by .dockerignore"
            );
        }
    }
}
