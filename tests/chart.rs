//! The Helm chart in `charts/privacy-operator`, rendered and linted by the real Helm engine
//! (helm-python-sdk), its values checked against `values.schema.json`, and the rendered
//! manifests validated with `kubernetes-validate --strict` against Kubernetes 1.33.
//!
//! The Python tools are installed by `scripts/setup/python-tools.sh`; when they are missing these
//! tests fail with that instruction rather than skip, so CI cannot pass without checking the chart.

#![recursion_limit = "256"]

// The controller test bench (an emulator, the CRDs and the controller; the test plays the
// Job controller), shared with the controller tests: the RBAC test below runs the operator
// through a request's life and checks the chart grants every call it made.
#[path = "../emulator/tests/common/mod.rs"]
mod common;
#[path = "controller_support/mod.rs"]
mod support;

use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use privacy_operator::api::crd::crd_files;
use serde::Deserialize;
use serde_json::{Value, json};

const KUBE_VERSION: &str = "1.33";
const RELEASE: &str = "po";
const NAMESPACE: &str = "privacy-system";

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/privacy-operator")
}

const SETUP_HINT: &str = "install the chart test tools with `bash scripts/setup/python-tools.sh` \
     (pip install helm-python-sdk kubernetes-validate)";

/// Drives helm-python-sdk: reads one JSON request on stdin, prints one JSON answer. Helm errors
/// (schema violations, template failures) come back as `{"error": ...}` so tests can assert on
/// their messages; a missing module exits 3 so the harness can say how to install it.
const DRIVER: &str = r#"
import json, sys
try:
    import helm_python
except ImportError as e:
    print("helm_python is not importable: %s" % e, file=sys.stderr)
    sys.exit(3)
req = json.load(sys.stdin)
try:
    if req["op"] == "render":
        chart = helm_python.Chart.load(req["chart"])
        out = chart.render(req["values"], name=req["release"], namespace=req["namespace"],
                           is_install=True)
        print(json.dumps({"ok": out}))
    elif req["op"] == "lint":
        out = helm_python.lint(req["chart"], req["values"], strict=True,
                               namespace=req["namespace"], kube_version=req["kube_version"])
        print(json.dumps({"ok": out}))
    else:
        raise SystemExit("unknown op %r" % req["op"])
except helm_python.HelmError as e:
    print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
"#;

fn python(request: &Value) -> Result<Value, String> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(DRIVER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {SETUP_HINT}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(request.to_string().as_bytes())
        .expect("write the request to python3");
    let out = child.wait_with_output().expect("wait for python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => panic!("{}; {SETUP_HINT}", stderr.trim()),
        _ => panic!("the helm driver failed ({}):\n{stderr}", out.status),
    }
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the helm driver printed no JSON ({e}):\n{stderr}"));
    match (answer.get("ok"), answer.get("error")) {
        (Some(ok), _) => Ok(ok.clone()),
        (_, Some(Value::String(err))) => Err(err.clone()),
        _ => panic!("unexpected driver answer {answer}"),
    }
}

/// Renders the chart; Err carries Helm's message (e.g. a schema violation).
fn try_render(values: &Value) -> Result<Vec<Value>, String> {
    let files = python(&json!({
        "op": "render",
        "chart": chart_dir(),
        "values": values,
        "release": RELEASE,
        "namespace": NAMESPACE,
    }))?;
    let files = files.as_object().expect("render returns a map");
    let mut docs = Vec::new();
    // Sorted by template path, so failures print in a stable order.
    let names: BTreeSet<&String> = files.keys().collect();
    // NOTES.txt is shown to the user after install, not applied.
    for name in names.into_iter().filter(|n| !n.ends_with("NOTES.txt")) {
        let text = files[name].as_str().expect("rendered text");
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name} renders invalid YAML: {e}\n{text}"));
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    Ok(docs)
}

fn render(values: &Value) -> Vec<Value> {
    try_render(values).unwrap_or_else(|e| panic!("rendering with {values} failed: {e}"))
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

fn one_of<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = all_of(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// Value sets the chart must render, lint and validate with.
fn value_sets() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        (
            "namespaced",
            json!({"watchNamespaces": ["crm"], "replicas": 3}),
        ),
        (
            "single-replica",
            json!({"replicas": 1, "leaderElection": {"enabled": false}}),
        ),
        (
            "everything-on",
            json!({
                "image": {"digest": format!("sha256:{}", "a".repeat(64))},
                "worker": {"image": {"repository": "registry.example/privacy-worker", "tag": "1.2.3", "pullPolicy": "Always"}, "serviceAccountName": "privacy-worker"},
                "subjectSalt": {"create": true, "secretName": "privacy-salt", "key": "digest-salt"},
                "imagePullSecrets": ["regcred"],
                "objectStorage": {
                    "provider": "s3", "bucket": "privacy-exports", "region": "eu-west-1",
                    "endpoint": "https://minio.storage.svc:9000", "forcePathStyle": true,
                    "credentialsSecret": {"name": "privacy-s3"}
                },
                "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
                "metrics": {"serviceMonitor": {"enabled": true, "labels": {"release": "prom"}}},
                "networkPolicy": {
                    "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                    "egress": {"enabled": true, "apiServerCIDRs": ["10.0.0.1/32"], "objectStorageCIDRs": ["10.1.0.0/16"]}
                },
                "admissionPolicy": {"enabled": true, "allowedGroups": ["privacy-approvers", "system:serviceaccounts:argocd"]},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "priorityClassName": "system-cluster-critical",
                "logging": {"level": "privacy_operator=debug", "format": "text"}
            }),
        ),
        (
            "no-crds-no-rbac",
            json!({"crds": {"install": false}, "rbac": {"create": false}, "serviceAccount": {"create": false, "name": "existing"}}),
        ),
    ]
}

#[test]
fn chart_crds_are_the_generated_crds_byte_for_byte() {
    let dir = chart_dir().join("files/crds");
    let expected = crd_files();
    if std::env::var_os("PRIVACY_OPERATOR_BLESS").is_some() {
        privacy_operator::api::write_crds(&dir).expect("write the chart's CRDs");
    }
    let mut drift = Vec::new();
    for (name, content) in &expected {
        match fs::read_to_string(dir.join(name)) {
            Ok(actual) if actual == *content => {}
            Ok(_) => drift.push(format!("{name} differs")),
            Err(e) => drift.push(format!("{name}: {e}")),
        }
    }
    let wanted: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for entry in fs::read_dir(&dir).expect("charts/privacy-operator/files/crds exists") {
        let name = entry.expect("read dir entry").file_name();
        let name = name.to_string_lossy();
        if !wanted.contains(name.as_ref()) {
            drift.push(format!("{name} is not a generated CRD"));
        }
    }
    assert!(
        drift.is_empty(),
        "the chart's CRDs drifted from the Rust types:\n  {}\nregenerate with:\n  cargo run -- crd --split charts/privacy-operator/files/crds/\n(or PRIVACY_OPERATOR_BLESS=1 cargo test --test chart)",
        drift.join("\n  ")
    );
}

/// JSON pointer of the first place two values differ, for a readable failure.
fn first_difference(a: &Value, b: &Value, at: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                match (x.get(key), y.get(key)) {
                    (Some(l), Some(r)) if l == r => {}
                    (Some(l), Some(r)) => return first_difference(l, r, &format!("{at}/{key}")),
                    _ => return format!("{at}/{key} (present on one side only)"),
                }
            }
            format!("{at} (no difference)")
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find(|(_, (l, r))| l != r)
            .map_or(format!("{at} (no difference)"), |(i, (l, r))| {
                first_difference(l, r, &format!("{at}/{i}"))
            }),
        _ => format!("{at}: {a} != {b}"),
    }
}

fn integral_floats_as_ints(value: Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => {
            Value::Array(items.into_iter().map(integral_floats_as_ints).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integral_floats_as_ints(v)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn rendered_crds_equal_the_generated_ones_and_are_kept() {
    let docs = render(&json!({}));
    let rendered = all_of(&docs, "CustomResourceDefinition");
    let generated = crd_files();
    assert_eq!(rendered.len(), generated.len());
    for (file, content) in generated {
        let mut want: Value = serde_yaml_ng::from_str(&content)
            .unwrap_or_else(|e| panic!("generated {file} is not YAML: {e}"));
        let name = want["metadata"]["name"]
            .as_str()
            .expect("CRD name")
            .to_string();
        let mut got = (*rendered
            .iter()
            .find(|d| name_of(d) == name)
            .unwrap_or_else(|| panic!("{name} is not rendered")))
        .clone();
        assert_eq!(
            got["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name} must survive helm uninstall"
        );
        assert_eq!(
            got["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
        // Helm adds metadata; the rest must be the generated CRD, value for value.
        for m in [&mut got["metadata"], &mut want["metadata"]] {
            let m = m.as_object_mut().expect("metadata is a map");
            m.remove("annotations");
            m.remove("labels");
        }
        // The generated YAML writes `minimum: 1.0`; Helm's YAML round trip writes `1`. The
        // apiserver reads both as the same float64.
        let (got, want) = (integral_floats_as_ints(got), integral_floats_as_ints(want));
        assert!(
            got == want,
            "{name} renders differently from the generated CRD, first at {}",
            first_difference(&got, &want, "")
        );
    }

    let unkept = render(&json!({"crds": {"keep": false}}));
    for crd in all_of(&unkept, "CustomResourceDefinition") {
        assert!(
            crd["metadata"]["annotations"]
                .get("helm.sh/resource-policy")
                .is_none()
        );
    }
    let none = render(&json!({"crds": {"install": false}}));
    assert!(all_of(&none, "CustomResourceDefinition").is_empty());
}

#[test]
fn lint_strict_is_clean_for_every_value_set() {
    for (label, values) in value_sets() {
        let report = python(&json!({
            "op": "lint",
            "chart": chart_dir(),
            "values": values,
            "namespace": NAMESPACE,
            "kube_version": format!("v{KUBE_VERSION}.0"),
        }))
        .unwrap_or_else(|e| panic!("{label}: lint raised {e}"));
        // Severity 2 is a warning, 3 an error; strict lint fails on both. 1 (info: "icon is
        // recommended") does not fail `helm lint --strict`.
        let findings: Vec<&Value> = report["messages"]
            .as_array()
            .expect("lint messages")
            .iter()
            .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
            .collect();
        assert!(
            findings.is_empty(),
            "{label}: helm lint --strict: {findings:#?}"
        );
        assert_eq!(report["errors"], json!([]), "{label}");
    }
}

/// Writes each rendered document to its own file and runs kubernetes-validate over them.
fn kubernetes_validate(label: &str, docs: &[Value]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        // The Prometheus Operator's CRD schemas are not part of Kubernetes; the ServiceMonitor
        // is checked by shape_of_service_monitor instead.
        if kind_of(doc) == "ServiceMonitor" {
            continue;
        }
        let path = dir.path().join(format!("{i:02}-{}.yaml", kind_of(doc)));
        fs::write(&path, serde_yaml_ng::to_string(doc).expect("to YAML")).expect("write manifest");
        files.push(path);
    }
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBE_VERSION])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubernetes-validate ({e}); {SETUP_HINT}"));
    assert!(
        out.status.success(),
        "{label}: kubernetes-validate --strict -k {KUBE_VERSION} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rendered_manifests_validate_against_kubernetes_1_33() {
    for (label, values) in value_sets() {
        let docs = render(&values);
        assert!(!docs.is_empty(), "{label} renders nothing");
        kubernetes_validate(label, &docs);
    }
}

#[test]
fn schema_rejects_bad_values_with_a_message_naming_the_field() {
    let cases = [
        (
            json!({"bogus": true}),
            "additional properties 'bogus' not allowed",
        ),
        (
            json!({"image": {"tagg": "1"}}),
            "additional properties 'tagg' not allowed",
        ),
        (json!({"replicas": "two"}), "/replicas"),
        (json!({"replicas": 0}), "/replicas"),
        (json!({"metrics": {"port": 70000}}), "/metrics/port"),
        (json!({"logging": {"format": "xml"}}), "/logging/format"),
        (
            json!({"watchNamespaces": ["Not_A_Namespace"]}),
            "/watchNamespaces/0",
        ),
        (
            json!({"objectStorage": {"provider": "ftp"}}),
            "/objectStorage/provider",
        ),
        (
            json!({"admissionPolicy": {"allowedGroups": []}}),
            "/admissionPolicy/allowedGroups",
        ),
        (
            json!({"admissionPolicy": {"allowedGroups": ["it's"]}}),
            "/admissionPolicy/allowedGroups/0",
        ),
        (
            json!({"leaderElection": {"leaseDuration": "15 seconds"}}),
            "/leaderElection/leaseDuration",
        ),
    ];
    for (values, needle) in cases {
        match try_render(&values) {
            Ok(_) => panic!("{values} was accepted"),
            Err(msg) => assert!(
                msg.contains("values don't meet the specifications of the schema")
                    && msg.contains(needle),
                "{values}: message should name {needle:?}:\n{msg}"
            ),
        }
    }
}

fn schema() -> Value {
    let text =
        fs::read_to_string(chart_dir().join("values.schema.json")).expect("values.schema.json");
    serde_json::from_str(&text).expect("values.schema.json is JSON")
}

fn default_values() -> Value {
    let text = fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    serde_yaml_ng::from_str(&text).expect("values.yaml is YAML")
}

/// Every schema object that lists properties closes itself with additionalProperties: false,
/// and documents each property.
fn check_closed(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    if schema.get("additionalProperties") != Some(&Value::Bool(false)) {
        problems.push(format!("{path}: additionalProperties must be false"));
    }
    for (key, sub) in props {
        let sub_path = format!("{path}.{key}");
        if sub
            .get("description")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{sub_path}: no description"));
        }
        check_closed(sub, &sub_path, problems);
    }
}

/// Dotted paths of the leaves of values.yaml (maps of our own, not free-form maps or lists).
fn leaf_paths(values: &Value, schema: &Value, prefix: &str, out: &mut Vec<String>) {
    match (
        values.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        (Some(map), Some(props)) => {
            for (key, v) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match props.get(key) {
                    Some(sub) => leaf_paths(v, sub, &path, out),
                    None => out.push(format!("!{path}")),
                }
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn schema_closes_every_object_and_covers_every_default_value() {
    let schema = schema();
    let mut problems = Vec::new();
    check_closed(&schema, "values", &mut problems);
    let mut leaves = Vec::new();
    leaf_paths(&default_values(), &schema, "", &mut leaves);
    problems.extend(
        leaves
            .iter()
            .filter_map(|l| l.strip_prefix('!'))
            .map(|l| format!("values.yaml has {l}, which the schema does not describe")),
    );
    assert!(
        problems.is_empty(),
        "values.schema.json:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn readme_table_lists_every_value() {
    let readme = fs::read_to_string(chart_dir().join("README.md")).expect("chart README.md");
    let mut leaves = Vec::new();
    leaf_paths(&default_values(), &schema(), "", &mut leaves);
    let missing: Vec<&String> = leaves
        .iter()
        .filter(|l| !readme.contains(&format!("| `{l}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "the README's values table misses {missing:?}"
    );
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn deployment_is_locked_down() {
    for (label, values) in value_sets() {
        let docs = render(&values);
        let deployment = one_of(&docs, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{label}");
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{label}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{label}"
        );
        assert!(
            pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none(),
            "{label}"
        );
        let c = container(deployment);
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{label}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{label}");
        assert_eq!(sc["privileged"], false, "{label}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{label}");
        assert!(sc["capabilities"].get("add").is_none(), "{label}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{label}");
        assert!(
            c["resources"]["requests"]["cpu"].is_string(),
            "{label}: cpu request"
        );
        assert!(
            c["resources"]["requests"]["memory"].is_string(),
            "{label}: memory request"
        );
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{label}: memory limit"
        );
        assert_eq!(c["args"], json!(["run"]), "{label}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{label}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{label}");
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], "health", "{label}: {probe}");
        }
        // The read-only root leaves /tmp as the only writable path.
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "tmp", "mountPath": "/tmp"}]),
            "{label}"
        );
    }
}

fn env<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    container(deployment)["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn deployment_carries_the_configuration() {
    let values = value_sets()
        .into_iter()
        .find(|(l, _)| *l == "everything-on")
        .expect("set")
        .1;
    let docs = render(&values);
    let d = one_of(&docs, "Deployment");
    let digest = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        container(d)["image"],
        format!("ghcr.io/privacy-operator/privacy-operator@{digest}")
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_WORKER_IMAGE"),
        Some("registry.example/privacy-worker:1.2.3")
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_OBJECT_STORE_BUCKET"),
        Some("privacy-exports")
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_OBJECT_STORE_REGION"),
        Some("eu-west-1")
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_OBJECT_STORE_ENDPOINT"),
        Some("https://minio.storage.svc:9000")
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_OBJECT_STORE_FORCE_PATH_STYLE"),
        Some("true")
    );
    // What the operator reads: the storage URL and object_store's own variables.
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_STORAGE_URL"),
        Some("s3://privacy-exports")
    );
    assert_eq!(
        env(d, "AWS_ENDPOINT"),
        Some("https://minio.storage.svc:9000")
    );
    assert_eq!(env(d, "AWS_REGION"), Some("eu-west-1"));
    assert_eq!(env(d, "AWS_ALLOW_HTTP"), None);
    assert_eq!(env(d, "AWS_VIRTUAL_HOSTED_STYLE_REQUEST"), None);
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_LOG_LEVEL"),
        Some("privacy_operator=debug")
    );
    assert_eq!(env(d, "PRIVACY_OPERATOR_LOG_FORMAT"), Some("text"));
    assert_eq!(
        container(d)["envFrom"],
        json!([{"secretRef": {"name": "privacy-s3"}}])
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_WORKER_IMAGE_PULL_POLICY"),
        Some("Always")
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_WORKER_SERVICE_ACCOUNT"),
        Some("privacy-worker")
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_SALT_SECRET"),
        Some(format!("{NAMESPACE}/privacy-salt").as_str())
    );
    assert_eq!(env(d, "PRIVACY_OPERATOR_SALT_KEY"), Some("digest-salt"));
    let namespaced = render(&json!({"watchNamespaces": ["crm"]}));
    assert_eq!(
        env(
            one_of(&namespaced, "Deployment"),
            "PRIVACY_OPERATOR_NAMESPACE"
        ),
        Some("crm")
    );

    let defaults = render(&json!({}));
    let d = one_of(&defaults, "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        container(d)["image"],
        "ghcr.io/privacy-operator/privacy-operator:0.1.0"
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_WORKER_IMAGE"),
        Some("ghcr.io/privacy-operator/privacy-operator:0.1.0")
    );
    assert_eq!(env(d, "PRIVACY_OPERATOR_LEADER_ELECT"), Some("true"));
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_LEASE_NAME"),
        Some("privacy-operator-leader")
    );
    assert_eq!(env(d, "PRIVACY_OPERATOR_LEASE_NAMESPACE"), Some(NAMESPACE));
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_NAMESPACE"),
        None,
        "every namespace"
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_SALT_SECRET"),
        Some(format!("{NAMESPACE}/{RELEASE}-privacy-operator-subject-salt").as_str())
    );
    assert_eq!(env(d, "PRIVACY_OPERATOR_SALT_KEY"), Some("salt"));
    assert_eq!(env(d, "PRIVACY_OPERATOR_WORKER_IMAGE_PULL_POLICY"), None);
    assert_eq!(env(d, "PRIVACY_OPERATOR_WORKER_SERVICE_ACCOUNT"), None);
    assert!(
        all_of(&defaults, "Secret").is_empty(),
        "no generated salt by default"
    );
    assert_eq!(
        env(d, "PRIVACY_OPERATOR_METRICS_ADDR"),
        Some("0.0.0.0:8080")
    );
    assert_eq!(env(d, "PRIVACY_OPERATOR_HEALTH_ADDR"), Some("0.0.0.0:8081"));
    assert!(container(d).get("envFrom").is_none());
}

#[test]
fn metrics_service_pdb_and_service_monitor() {
    let docs = render(
        &json!({"metrics": {"port": 9090, "service": {"port": 9091}, "serviceMonitor": {"enabled": true}}}),
    );
    let svc = one_of(&docs, "Service");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "metrics", "port": 9091, "targetPort": "metrics", "protocol": "TCP"}])
    );
    let ports = &container(one_of(&docs, "Deployment"))["ports"];
    assert!(
        ports
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "metrics" && p["containerPort"] == 9090)
    );
    let sm = one_of(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "metrics"
    );
    assert_eq!(
        svc["metadata"]["labels"]["app.kubernetes.io/component"],
        "metrics"
    );
    assert_eq!(
        one_of(&docs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );

    // One replica with a PDB would block every node drain.
    let single = render(&json!({"replicas": 1}));
    assert!(all_of(&single, "PodDisruptionBudget").is_empty());
    assert!(all_of(&single, "ServiceMonitor").is_empty());

    let err = try_render(
        &json!({"metrics": {"service": {"enabled": false}, "serviceMonitor": {"enabled": true}}}),
    )
    .expect_err("a ServiceMonitor without its Service");
    assert!(
        err.contains("metrics.serviceMonitor.enabled needs metrics.service.enabled"),
        "{err}"
    );
}

/// (apiGroup, resource) -> verbs granted by a role's rules.
fn grants(role: &Value) -> Vec<(String, String, BTreeSet<String>, Option<Value>)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let verbs: BTreeSet<String> = rule["verbs"]
            .as_array()
            .expect("verbs")
            .iter()
            .map(|v| v.as_str().expect("verb").to_string())
            .collect();
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for res in rule["resources"].as_array().expect("resources") {
                out.push((
                    group.as_str().expect("group").to_string(),
                    res.as_str().expect("resource").to_string(),
                    verbs.clone(),
                    rule.get("resourceNames").cloned(),
                ));
            }
        }
    }
    out
}

fn verbs_of(role: &Value, group: &str, resource: &str) -> BTreeSet<String> {
    grants(role)
        .into_iter()
        .filter(|(g, r, _, _)| g == group && r == resource)
        .flat_map(|(_, _, v, _)| v)
        .collect()
}

fn set(verbs: &[&str]) -> BTreeSet<String> {
    verbs.iter().map(|v| v.to_string()).collect()
}

#[test]
fn rbac_is_least_privilege() {
    let docs = render(&json!({}));
    let manager = one_of(&docs, "ClusterRole");
    for (_, _, verbs, _) in grants(manager) {
        assert!(!verbs.contains("*"), "no wildcard verbs");
        assert!(
            !verbs.contains("escalate")
                && !verbs.contains("bind")
                && !verbs.contains("impersonate")
        );
    }
    for rule in manager["rules"].as_array().expect("rules") {
        assert!(
            !rule["apiGroups"]
                .as_array()
                .expect("groups")
                .contains(&json!("*"))
        );
        assert!(
            !rule["resources"]
                .as_array()
                .expect("resources")
                .contains(&json!("*"))
        );
    }
    for plural in [
        "datasubjectrequests",
        "datasystems",
        "retentionpolicies",
        "consentpolicies",
    ] {
        assert_eq!(
            verbs_of(manager, "privacy-operator.dev", plural),
            set(&["get", "list", "watch", "patch", "update"])
        );
        assert_eq!(
            verbs_of(manager, "privacy-operator.dev", &format!("{plural}/status")),
            set(&["get", "patch", "update"])
        );
        assert_eq!(
            verbs_of(
                manager,
                "privacy-operator.dev",
                &format!("{plural}/finalizers")
            ),
            set(&["update"])
        );
    }
    assert_eq!(
        verbs_of(manager, "batch", "jobs"),
        set(&["create", "get", "list", "watch", "delete"])
    );
    assert_eq!(
        verbs_of(manager, "", "secrets"),
        set(&["create", "get", "list", "watch", "delete"])
    );
    assert_eq!(verbs_of(manager, "", "events"), set(&["create", "patch"]));
    assert_eq!(
        verbs_of(manager, "events.k8s.io", "events"),
        set(&["create", "patch"])
    );
    let groups: BTreeSet<String> = grants(manager).into_iter().map(|(g, _, _, _)| g).collect();
    assert_eq!(
        groups,
        set(&["", "batch", "events.k8s.io", "privacy-operator.dev"])
    );
    assert_eq!(all_of(&docs, "ClusterRoleBinding").len(), 1);

    // Leader election: only the one Lease may be read or written.
    let role = |docs: &[Value], suffix: &str| -> Value {
        let name = format!("{RELEASE}-privacy-operator-{suffix}");
        all_of(docs, "Role")
            .into_iter()
            .find(|r| name_of(r) == name)
            .unwrap_or_else(|| panic!("no Role {name}"))
            .clone()
    };
    assert_eq!(all_of(&docs, "Role").len(), 2);
    let lease_role = role(&docs, "leader-election");
    let lease_role = &lease_role;
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
    for (group, res, verbs, names) in grants(lease_role) {
        assert_eq!(
            (group.as_str(), res.as_str()),
            ("coordination.k8s.io", "leases")
        );
        if verbs != set(&["create"]) {
            assert_eq!(
                names,
                Some(json!(["privacy-operator-leader"])),
                "{verbs:?} must name the lease"
            );
        }
    }

    // The salt: one Secret, read by name; `create` (which cannot name) only so the operator
    // can make it at first start (subjectSalt.generate, the default).
    let salt_role = role(&docs, "subject-salt");
    assert_eq!(salt_role["metadata"]["namespace"], NAMESPACE);
    let read = (
        String::new(),
        "secrets".to_string(),
        set(&["get"]),
        Some(json!([format!("{RELEASE}-privacy-operator-subject-salt")])),
    );
    assert_eq!(
        grants(&salt_role),
        vec![
            read.clone(),
            (String::new(), "secrets".to_string(), set(&["create"]), None)
        ]
    );
    let own_salt = render(&json!({"subjectSalt": {"generate": false}}));
    assert_eq!(grants(&role(&own_salt, "subject-salt")), vec![read]);

    // Watched namespaces: Secrets and Jobs only there, through RoleBindings.
    let docs = render(&json!({"watchNamespaces": ["crm"]}));
    assert!(
        all_of(&docs, "ClusterRoleBinding").is_empty(),
        "no cluster-wide grant with watchNamespaces"
    );
    let bindings: BTreeSet<(String, String)> = all_of(&docs, "RoleBinding")
        .into_iter()
        .filter(|b| b["roleRef"]["kind"] == "ClusterRole")
        .map(|b| {
            assert_eq!(b["subjects"][0]["namespace"], NAMESPACE);
            (
                b["metadata"]["namespace"].as_str().expect("ns").to_string(),
                b["roleRef"]["name"].as_str().expect("role").to_string(),
            )
        })
        .collect();
    let manager_name = format!("{RELEASE}-privacy-operator-manager");
    assert_eq!(bindings, [("crm".to_string(), manager_name)].into());

    let docs = render(&json!({"leaderElection": {"enabled": false}, "replicas": 1}));
    assert_eq!(
        all_of(&docs, "Role").len(),
        1,
        "only the salt Role without leader election"
    );
}

#[test]
fn admission_policy_restricts_erasures_to_the_allowed_groups() {
    assert!(all_of(&render(&json!({})), "ValidatingAdmissionPolicy").is_empty());
    let docs = render(
        &json!({"admissionPolicy": {"enabled": true, "allowedGroups": ["dpo", "system:serviceaccounts:argocd"], "validationActions": ["Warn", "Audit"]}, "watchNamespaces": ["crm"]}),
    );
    let policy = one_of(&docs, "ValidatingAdmissionPolicy");
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let rules = &policy["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(
        rules["resources"],
        json!(["datasubjectrequests"]),
        "status writes are not matched"
    );
    let allowed = policy["spec"]["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == "allowed")
        .expect("allowed variable");
    assert!(
        allowed["expression"]
            .as_str()
            .expect("CEL")
            .contains(r#"["dpo","system:serviceaccounts:argocd"]"#),
        "{allowed}"
    );
    let validations = policy["spec"]["validations"]
        .as_array()
        .expect("validations");
    assert!(validations.iter().any(|v| {
        v["expression"]
            .as_str()
            .is_some_and(|e| e.contains("'Erasure'"))
    }));
    assert!(validations.iter().any(|v| {
        v["expression"]
            .as_str()
            .is_some_and(|e| e.contains("releasesHold"))
    }));
    for v in validations {
        assert!(
            v["messageExpression"]
                .as_str()
                .expect("message")
                .contains("'dpo, system:serviceaccounts:argocd'")
        );
    }
    let binding = one_of(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(
        binding["spec"]["validationActions"],
        json!(["Warn", "Audit"])
    );
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["crm"])
    );
}

#[test]
fn network_policy_admits_scrapes_and_probes_only() {
    let docs = render(&json!({}));
    let np = one_of(&docs, "NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    let ports: Vec<&Value> = np["spec"]["ingress"]
        .as_array()
        .expect("ingress")
        .iter()
        .map(|r| &r["ports"][0]["port"])
        .collect();
    assert_eq!(ports, [&json!("metrics"), &json!("health")]);

    let docs = render(
        &json!({"networkPolicy": {"egress": {"enabled": true, "apiServerCIDRs": ["10.0.0.1/32"]}}}),
    );
    let np = one_of(&docs, "NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let egress = np["spec"]["egress"].as_array().expect("egress");
    assert_eq!(egress.len(), 2, "DNS and the API server: {egress:?}");
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32");
    assert!(
        all_of(
            &render(&json!({"networkPolicy": {"enabled": false}})),
            "NetworkPolicy"
        )
        .is_empty()
    );
}

/// (what, operation, the user's groups, object, oldObject, a fragment of the denial if denied)
type AdmissionCase = (
    &'static str,
    &'static str,
    Vec<String>,
    Value,
    Option<Value>,
    Option<&'static str>,
);

/// The policy's CEL, evaluated by kube-cel (an independent CEL implementation of the VAP
/// environment) on the requests it must admit and deny. `variables` are inlined, as kube-cel
/// does not bind them; the apiserver evaluates them the same way, lazily, by name.
#[test]
fn admission_policy_cel_admits_approvers_and_denies_others() {
    use kube_cel::{AdmissionRequest, VapEvaluator, VapExpression};

    let docs = render(
        &json!({"admissionPolicy": {"enabled": true, "allowedGroups": ["dpo", "system:serviceaccounts:argocd"]}}),
    );
    let policy = one_of(&docs, "ValidatingAdmissionPolicy");
    let variables: Vec<(String, String)> = policy["spec"]["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| {
            (
                format!("variables.{}", v["name"].as_str().expect("name")),
                format!("({})", v["expression"].as_str().expect("expression")),
            )
        })
        .collect();
    let inline = |expr: &str| {
        variables
            .iter()
            .fold(expr.to_string(), |e, (name, body)| e.replace(name, body))
    };
    let expressions: Vec<VapExpression> = policy["spec"]["validations"]
        .as_array()
        .expect("validations")
        .iter()
        .map(|v| VapExpression {
            expression: inline(v["expression"].as_str().expect("expression")),
            message: None,
            message_expression: v["messageExpression"].as_str().map(inline),
        })
        .collect();

    let dsr = |type_: &str, legal_hold: Option<bool>| {
        let mut spec =
            json!({"type": type_, "regulation": "GDPR", "subject": {"secretRef": {"name": "s"}}});
        if let Some(hold) = legal_hold {
            spec["legalHold"] = json!(hold);
        }
        json!({"apiVersion": "privacy-operator.dev/v1alpha1", "kind": "DataSubjectRequest", "metadata": {"name": "r", "namespace": "crm"}, "spec": spec})
    };
    let approver = vec!["dpo".to_string(), "system:authenticated".to_string()];
    let agent = vec![
        "support-agents".to_string(),
        "system:authenticated".to_string(),
    ];
    let argocd = vec!["system:serviceaccounts:argocd".to_string()];
    let cases: Vec<AdmissionCase> = vec![
        (
            "approver creates an erasure",
            "CREATE",
            approver.clone(),
            dsr("Erasure", None),
            None,
            None,
        ),
        (
            "Argo CD creates an erasure",
            "CREATE",
            argocd,
            dsr("Erasure", None),
            None,
            None,
        ),
        (
            "agent creates an erasure",
            "CREATE",
            agent.clone(),
            dsr("Erasure", None),
            None,
            Some(
                "creating an Erasure request needs membership of one of the groups dpo, system:serviceaccounts:argocd; user alex is not a member",
            ),
        ),
        (
            "user without groups creates an erasure",
            "CREATE",
            vec![],
            dsr("Erasure", None),
            None,
            Some("creating an Erasure request"),
        ),
        (
            "agent creates an access request",
            "CREATE",
            agent.clone(),
            dsr("Access", None),
            None,
            None,
        ),
        (
            "agent places a legal hold",
            "UPDATE",
            agent.clone(),
            dsr("Erasure", Some(true)),
            Some(dsr("Erasure", Some(false))),
            None,
        ),
        (
            "agent releases a legal hold",
            "UPDATE",
            agent.clone(),
            dsr("Erasure", Some(false)),
            Some(dsr("Erasure", Some(true))),
            Some("releasing a legal hold (legalHold: false) lets purges run"),
        ),
        (
            "agent removes a legal hold field",
            "UPDATE",
            agent.clone(),
            dsr("Erasure", None),
            Some(dsr("Erasure", Some(true))),
            Some("releasing a legal hold"),
        ),
        (
            "approver releases a legal hold",
            "UPDATE",
            approver,
            dsr("Erasure", Some(false)),
            Some(dsr("Erasure", Some(true))),
            None,
        ),
        (
            "agent updates an erasure without touching the hold",
            "UPDATE",
            agent,
            dsr("Erasure", None),
            Some(dsr("Erasure", None)),
            None,
        ),
    ];
    for (what, operation, groups, object, old, denial) in cases {
        let mut builder = VapEvaluator::builder()
            .object(object)
            .request(AdmissionRequest {
                operation: operation.into(),
                username: "alex".into(),
                groups,
                ..Default::default()
            });
        if let Some(old) = old {
            builder = builder.old_object(old);
        }
        let results = builder.build().evaluate(&expressions);
        let denied: Vec<String> = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.message.clone().unwrap_or_default())
            .collect();
        match denial {
            None => assert!(denied.is_empty(), "{what}: denied: {denied:?}"),
            Some(fragment) => assert!(
                denied.iter().any(|m| m.contains(fragment)),
                "{what}: expected a denial containing {fragment:?}, got {denied:?}"
            ),
        }
        for message in &denied {
            assert!(!message.contains("evaluation error"), "{what}: {message}");
        }
    }
}

/// Value combinations the schema cannot express fail the render with a message that says
/// what to change.
#[test]
fn inconsistent_values_fail_with_a_clear_message() {
    let cases = [
        (
            json!({"watchNamespaces": ["crm", "helpdesk"]}),
            "the operator watches one namespace or every namespace",
        ),
        (
            json!({"replicas": 2, "leaderElection": {"enabled": false}}),
            "replicas > 1 needs leaderElection.enabled: true",
        ),
        (
            json!({"admissionPolicy": {"enabled": true, "validationActions": ["Deny", "Warn"]}}),
            "Deny and Warn cannot be combined",
        ),
        (
            json!({"metrics": {"service": {"enabled": false}, "serviceMonitor": {"enabled": true}}}),
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ];
    for (values, needle) in cases {
        let err = try_render(&values).expect_err("inconsistent values must not render");
        assert!(err.contains(needle), "{values}: {err}");
    }
    render(&json!({"replicas": 1, "leaderElection": {"enabled": false}}));
    render(&json!({"admissionPolicy": {"enabled": true, "validationActions": ["Deny", "Audit"]}}));
}

#[test]
fn notes_warn_about_a_missing_bucket() {
    let notes = |values: Value| -> String {
        let files = python(&json!({
            "op": "render",
            "chart": chart_dir(),
            "values": values,
            "release": RELEASE,
            "namespace": NAMESPACE,
        }))
        .expect("render");
        files["privacy-operator/templates/NOTES.txt"]
            .as_str()
            .expect("NOTES.txt is rendered")
            .to_string()
    };
    assert!(notes(json!({})).contains("WARNING: objectStorage.bucket is empty"));
    assert!(
        notes(json!({"objectStorage": {"url": "gs://b/p"}})).contains("Object storage: gs://b/p")
    );
    let configured =
        notes(json!({"objectStorage": {"bucket": "exports"}, "watchNamespaces": ["crm"]}));
    assert!(!configured.contains("WARNING"), "{configured}");
    assert!(configured.contains("Watching: crm"), "{configured}");
}

#[test]
fn storage_url_is_built_from_the_values() {
    let url = |values: Value| {
        let docs = render(&values);
        env(one_of(&docs, "Deployment"), "PRIVACY_OPERATOR_STORAGE_URL").map(str::to_string)
    };
    assert_eq!(url(json!({})), None);
    assert_eq!(
        url(json!({"objectStorage": {"bucket": "b", "prefix": "/privacy/"}})),
        Some("s3://b/privacy".into())
    );
    assert_eq!(
        url(json!({"objectStorage": {"provider": "gcs", "bucket": "b"}})),
        Some("gs://b".into())
    );
    assert_eq!(
        url(json!({"objectStorage": {"provider": "azure", "bucket": "c", "prefix": "p"}})),
        Some("az://c/p".into())
    );
    assert_eq!(
        url(json!({"objectStorage": {"provider": "filesystem", "bucket": "/var/lib/privacy"}})),
        Some("file:///var/lib/privacy".into())
    );
    assert_eq!(
        url(json!({"objectStorage": {"url": "s3://x/y", "bucket": "ignored"}})),
        Some("s3://x/y".into())
    );
    let docs = render(&json!({"objectStorage": {"bucket": "b", "endpoint": "http://minio:9000"}}));
    let d = one_of(&docs, "Deployment");
    assert_eq!(env(d, "AWS_ALLOW_HTTP"), Some("true"));
    let docs = render(&json!({"objectStorage": {"bucket": "b"}}));
    let d = one_of(&docs, "Deployment");
    assert_eq!(env(d, "AWS_VIRTUAL_HOSTED_STYLE_REQUEST"), Some("true"));
    assert!(try_render(&json!({"objectStorage": {"url": "ftp://x"}})).is_err());
}

#[test]
fn generated_salt_is_random_kept_and_opt_in() {
    let docs = render(&json!({"subjectSalt": {"create": true}}));
    let secret = one_of(&docs, "Secret");
    assert_eq!(
        name_of(secret),
        format!("{RELEASE}-privacy-operator-subject-salt")
    );
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "the salt must outlive the release"
    );
    let salt = secret["data"]["salt"].as_str().expect("base64 salt");
    // 48 random characters, base64-encoded: well over the operator's 16-byte minimum.
    assert_eq!(salt.len(), 64, "{salt}");
    let again = render(&json!({"subjectSalt": {"create": true}}));
    assert_ne!(
        one_of(&again, "Secret")["data"]["salt"],
        salt,
        "offline renders cannot reuse a salt; this is why create is off by default"
    );
}

/// Whether a rule of `role` grants `verb` on `group`/`resource` (`resource` may carry a
/// subresource, `jobs` or `datasubjectrequests/status`), without a resourceNames limit.
fn role_grants(role: &Value, group: &str, resource: &str, verb: &str) -> bool {
    grants(role).into_iter().any(|(g, r, verbs, names)| {
        g == group && r == resource && verbs.contains(verb) && names.is_none()
    })
}

/// The RBAC of the chart, checked against the operator's real behaviour: every API call the
/// controller makes while an Access request completes and an Erasure goes through soft delete,
/// third-party purge and purge (as recorded by the emulator's request log) must be granted by
/// the manager ClusterRole that the chart binds in the watched namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_every_call_the_controller_makes() {
    let bench = support::Bench::start().await;
    bench.put(support::data_system("crm", false));
    bench.put(support::data_system("mailer", true));
    bench.put(support::request("access-1", "Access"));
    bench.put(support::request("erase-1", "Erasure"));

    for job in bench.wait_jobs("access-1", "export", 1).await {
        bench.finish_job(&job, true);
    }
    bench.wait_condition("access-1", "Ready", "True").await;
    let soft = bench.wait_jobs("erase-1", "soft-delete", 1).await;
    let third = bench.wait_jobs("erase-1", "third-party-purge", 1).await;
    for job in soft.iter().chain(&third) {
        bench.finish_job(job, true);
    }
    bench.wait_condition("erase-1", "SoftDeleted", "True").await;
    bench.advance_days(15);
    for job in bench.wait_jobs("erase-1", "purge", 1).await {
        bench.finish_job(&job, true);
    }
    bench.wait_condition("erase-1", "Ready", "True").await;

    // The test's own objects go in in-process; over HTTP it only reads (gets and lists that
    // the operator makes too), so the log is the operator's.
    let calls: BTreeSet<(String, String, String)> = bench
        .emu
        .request_log()
        .entries()
        .into_iter()
        .filter(|r| !r.verb.is_empty() && !r.resource.is_empty())
        .map(|r| {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            (r.group, resource, r.verb)
        })
        .collect();
    for needed in [
        ("batch", "jobs", "create"),
        ("", "secrets", "create"),
        (
            "privacy-operator.dev",
            "datasubjectrequests/status",
            "patch",
        ),
    ] {
        assert!(
            calls.contains(&(needed.0.into(), needed.1.into(), needed.2.into())),
            "the run did not exercise {needed:?}; calls: {calls:#?}"
        );
    }

    let docs = render(&json!({"watchNamespaces": [support::NS]}));
    let manager = one_of(&docs, "ClusterRole");
    let bound_in_ns = all_of(&docs, "RoleBinding").into_iter().any(|b| {
        b["metadata"]["namespace"] == support::NS
            && b["roleRef"]["name"] == manager["metadata"]["name"]
    });
    assert!(
        bound_in_ns,
        "the manager role is bound in the watched namespace"
    );
    let missing: Vec<&(String, String, String)> = calls
        .iter()
        .filter(|(group, resource, verb)| !role_grants(manager, group, resource, verb))
        .collect();
    assert!(
        missing.is_empty(),
        "the chart's RBAC does not grant calls the operator makes (group, resource, verb): {missing:#?}"
    );
}

/// The Deployment configures the binary through environment variables: the binary must
/// accept every one the chart sets (a value clap refuses would crash-loop the pod). Runs the
/// real binary with exactly the rendered environment and no cluster: it must get past argument
/// parsing and stop at "no Kubernetes configuration".
#[test]
fn the_binary_accepts_the_charts_environment() {
    for (label, values) in value_sets() {
        let docs = render(&values);
        let deployment = one_of(&docs, "Deployment");
        let c = container(deployment);
        let home = tempfile::tempdir().expect("temp HOME");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_privacy-operator"));
        cmd.env_clear()
            .env("HOME", home.path())
            .env("KUBECONFIG", home.path().join("no-kubeconfig"))
            .env("POD_NAME", "privacy-operator-0")
            .env("POD_NAMESPACE", NAMESPACE)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in c["env"].as_array().expect("env") {
            if let Some(value) = var["value"].as_str() {
                cmd.env(var["name"].as_str().expect("env name"), value);
            }
        }
        let args: Vec<&str> = c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg"))
            .collect();
        let mut child = cmd.args(&args).spawn().expect("run privacy-operator");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for privacy-operator") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{label}: privacy-operator kept running without a cluster");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // clap exits 2 on a refused argument or environment value.
        assert_ne!(
            status.code(),
            Some(2),
            "{label}: the binary refused its configuration:\n{stderr}"
        );
        assert!(
            !status.success(),
            "{label}: ran without a cluster?\n{stdout}{stderr}"
        );
        let said = format!("{stdout}{stderr}").to_lowercase();
        assert!(
            said.contains("kube") || said.contains("config"),
            "{label}: expected a missing-cluster error, got:\n{stdout}{stderr}"
        );
    }
}
