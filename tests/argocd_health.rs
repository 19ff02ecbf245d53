//! The Argo CD health checks in `deploy/argocd/health/<Kind>.lua`, run in a Lua interpreter
//! against the fixtures of `deploy/argocd/testdata/<Kind>/`, whose `health_test.yaml` lists the
//! expected status and message per input as Argo CD's own `resource_customizations` tests do.
//!
//! Argo CD runs these scripts in gopher-lua (Lua 5.1) with only the base, table, string and
//! math libraries and the object as the global `obj`; the interpreter here is opened the same
//! way, so a script that reaches for `os` or `io` fails here as it would in Argo CD.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use mlua::{Lua, LuaOptions, LuaSerdeExt, StdLib};
use privacy_operator::api::{
    ConsentPolicyStatus, DataSubjectRequestStatus, DataSystemStatus, RetentionPolicyStatus,
};
use serde::Deserialize;
use serde_json::Value;

const KINDS: [&str; 4] = [
    "DataSubjectRequest",
    "DataSystem",
    "RetentionPolicy",
    "ConsentPolicy",
];

/// Argo CD's health statuses (gitops-engine `HealthStatusCode`).
const ARGO_STATUSES: [&str; 6] = [
    "Healthy",
    "Progressing",
    "Degraded",
    "Suspended",
    "Missing",
    "Unknown",
];

fn argocd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/argocd")
}

fn script(kind: &str) -> String {
    let path = argocd_dir().join(format!("health/{kind}.lua"));
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Debug, Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: Health,
    input_path: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Health {
    status: String,
    message: String,
}

fn read_yaml(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cases(kind: &str) -> Vec<(HealthTest, Value)> {
    let dir = argocd_dir().join("testdata").join(kind);
    let spec: HealthTests = serde_json::from_value(read_yaml(&dir.join("health_test.yaml")))
        .unwrap_or_else(|e| panic!("{kind}/health_test.yaml: {e}"));
    spec.tests
        .into_iter()
        .map(|t| {
            let input = read_yaml(&dir.join(&t.input_path));
            (t, input)
        })
        .collect()
}

/// Runs a health script the way Argo CD does: `obj` global, restricted standard library, the
/// chunk's return value is the health table.
fn run(kind: &str, source: &str, obj: &Value) -> Result<Health, String> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let value = lua.to_value(obj).map_err(|e| e.to_string())?;
    lua.globals().set("obj", value).map_err(|e| e.to_string())?;
    let table: mlua::Table = lua
        .load(source)
        .set_name(format!("{kind}.lua"))
        .eval()
        .map_err(|e| e.to_string())?;
    let status: String = table.get("status").map_err(|e| e.to_string())?;
    let message: String = table.get("message").map_err(|e| e.to_string())?;
    Ok(Health { status, message })
}

#[test]
fn every_kind_passes_its_health_test_cases() {
    let mut failures = Vec::new();
    for kind in KINDS {
        let source = script(kind);
        let cases = cases(kind);
        assert!(cases.len() >= 5, "{kind}: too few health test cases");
        for (case, input) in cases {
            assert_eq!(input["kind"], kind, "{}: wrong kind", case.input_path);
            match run(kind, &source, &input) {
                Ok(got) if got == case.health_status => {}
                Ok(got) => failures.push(format!(
                    "{kind}/{}: expected {:?}, got {:?}",
                    case.input_path, case.health_status, got
                )),
                Err(e) => failures.push(format!("{kind}/{}: script error: {e}", case.input_path)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_argo_outcome_the_scripts_can_give_is_covered() {
    // Each kind's fixtures exercise Healthy, Progressing and Degraded; requests also Suspended.
    for kind in KINDS {
        let seen: Vec<String> = cases(kind)
            .into_iter()
            .map(|(case, _)| case.health_status.status)
            .collect();
        for status in &seen {
            assert!(ARGO_STATUSES.contains(&status.as_str()), "{kind}: {status}");
        }
        let mut wanted = vec!["Healthy", "Progressing", "Degraded"];
        if kind == "DataSubjectRequest" {
            wanted.push("Suspended");
        }
        for status in wanted {
            assert!(
                seen.iter().any(|s| s == status),
                "{kind}: no test case expects {status}"
            );
        }
    }
}

/// The fixtures' status blocks must be what the operator writes: each one deserialises into the
/// Rust status type and serialises back without losing a field (a misspelt field would vanish).
#[test]
fn fixtures_use_the_real_status_shape() {
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(status: &Value) -> Value {
        let typed: T = serde_json::from_value(status.clone())
            .unwrap_or_else(|e| panic!("status does not deserialise: {e}\n{status}"));
        serde_json::to_value(typed).expect("status serialises")
    }
    fn assert_subset(fixture: &Value, typed: &Value, at: &str) {
        match (fixture, typed) {
            (Value::Object(f), Value::Object(t)) => {
                for (key, value) in f {
                    let Some(other) = t.get(key) else {
                        panic!("{at}/{key} is not a field of the status type");
                    };
                    assert_subset(value, other, &format!("{at}/{key}"));
                }
            }
            (Value::Array(f), Value::Array(t)) => {
                assert_eq!(f.len(), t.len(), "{at}");
                for (i, (l, r)) in f.iter().zip(t).enumerate() {
                    assert_subset(l, r, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }
    for kind in KINDS {
        for (case, input) in cases(kind) {
            let Some(status) = input.get("status") else {
                continue;
            };
            let typed = match kind {
                "DataSubjectRequest" => round_trip::<DataSubjectRequestStatus>(status),
                "DataSystem" => round_trip::<DataSystemStatus>(status),
                "RetentionPolicy" => round_trip::<RetentionPolicyStatus>(status),
                "ConsentPolicy" => round_trip::<ConsentPolicyStatus>(status),
                other => unreachable!("{other}"),
            };
            assert_subset(
                status,
                &typed,
                &format!("{kind}/{}:status", case.input_path),
            );
        }
    }
}

/// The scripts never fail on odd input: Argo CD shows a script error as the app's health, so
/// partial objects must still yield a status.
#[test]
fn scripts_survive_partial_objects() {
    let partial = [
        serde_json::json!({"metadata": {}}),
        serde_json::json!({"metadata": {"generation": 1}, "status": {}}),
        serde_json::json!({"metadata": {"generation": 1}, "status": {"conditions": []}}),
        serde_json::json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready"}]}}),
        serde_json::json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False"}], "rules": [{"name": "r"}], "replay": {}}}),
    ];
    for kind in KINDS {
        let source = script(kind);
        for obj in &partial {
            let got =
                run(kind, &source, obj).unwrap_or_else(|e| panic!("{kind} fails on {obj}: {e}"));
            assert!(
                ARGO_STATUSES.contains(&got.status.as_str()),
                "{kind}: {got:?}"
            );
            assert!(!got.message.is_empty(), "{kind} on {obj}: empty message");
        }
    }
}

/// The argocd-cm snippet carries each script verbatim under the key Argo CD looks up
/// (`resource.customizations.health.<group>_<kind>`).
#[test]
fn argocd_cm_snippet_embeds_each_script() {
    let path = argocd_dir().join("argocd-cm.yaml");
    if std::env::var_os("PRIVACY_OPERATOR_BLESS").is_some() {
        fs::write(&path, render_argocd_cm()).expect("write argocd-cm.yaml");
    }
    let on_disk = fs::read_to_string(&path).expect("argocd-cm.yaml");
    assert!(
        on_disk == render_argocd_cm(),
        "deploy/argocd/argocd-cm.yaml is stale; regenerate with PRIVACY_OPERATOR_BLESS=1 cargo test --test argocd_health"
    );
    let cm = read_yaml(&path);
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data: BTreeMap<String, String> =
        serde_json::from_value(cm["data"].clone()).expect("data is a string map");
    assert_eq!(data.len(), KINDS.len());
    for kind in KINDS {
        let key = format!("resource.customizations.health.privacy-operator.dev_{kind}");
        let embedded = data
            .get(&key)
            .unwrap_or_else(|| panic!("argocd-cm.yaml has no {key}"));
        assert!(
            *embedded == script(kind),
            "argocd-cm.yaml's {key} differs from health/{kind}.lua; regenerate with \
             PRIVACY_OPERATOR_BLESS=1 cargo test --test argocd_health"
        );
    }
}

fn render_argocd_cm() -> String {
    let mut out = String::from(
        "# Argo CD health checks for privacy-operator resources: merge these keys into the argocd-cm\n\
         # ConfigMap (kubectl patch, a kustomize patch, or the argo-cd Helm chart's configs.cm). Each value\n\
         # is deploy/argocd/health/<Kind>.lua verbatim; tests/argocd_health.rs fails when they differ\n\
         # (regenerate with PRIVACY_OPERATOR_BLESS=1 cargo test --test argocd_health).\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: argocd-cm\n  namespace: argocd\n  labels:\n    \
         app.kubernetes.io/name: argocd-cm\n    app.kubernetes.io/part-of: argocd\n\
         data:\n",
    );
    for kind in KINDS {
        out.push_str(&format!(
            "  resource.customizations.health.privacy-operator.dev_{kind}: |\n"
        ));
        for line in script(kind).lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Argo CD's interpreter is gopher-lua, i.e. Lua 5.1: the scripts must not use syntax added
/// later (integer division, bitwise operators, goto, attribs), which the Lua 5.4 used here
/// would accept. Comments and string literals are stripped before looking.
#[test]
fn scripts_stay_within_lua_5_1() {
    let strings = regex::Regex::new(r#""(\\.|[^"\\])*"|'(\\.|[^'\\])*'"#).expect("regex");
    let comment = regex::Regex::new(r"--.*$").expect("regex");
    let later =
        regex::Regex::new(r"//|&|\||<<|>>|~[^=]|\bgoto\b|<const>|<close>|::").expect("regex");
    let sandboxed = regex::Regex::new(r"\b(os|io|debug|package|require|load|loadstring|dofile)\b")
        .expect("regex");
    for kind in KINDS {
        for (n, line) in script(kind).lines().enumerate() {
            let code = strings.replace_all(line, "\"\"");
            let code = comment.replace(&code, "");
            assert!(
                !later.is_match(&code),
                "{kind}.lua:{}: syntax newer than Lua 5.1: {line}",
                n + 1
            );
            assert!(
                !sandboxed.is_match(&code),
                "{kind}.lua:{}: not available in Argo CD's sandbox: {line}",
                n + 1
            );
        }
    }
}
