//! End-to-end checks of the schema layer with real kubectl binaries: CRD and CR apply with
//! validation on, field-specific 422 messages, strict unknown-field rejection (which proves
//! kubectl chose server-side field validation), CEL transition rules, `kubectl explain` of a
//! custom and a built-in kind, and `kubectl get` printer columns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use emulator::Emulator;

const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: datasubjectrequests.privacy-operator.dev
spec:
  group: privacy-operator.dev
  scope: Namespaced
  names:
    plural: datasubjectrequests
    singular: datasubjectrequest
    kind: DataSubjectRequest
    listKind: DataSubjectRequestList
    shortNames: [dsr]
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - name: Type
      type: string
      jsonPath: .spec.type
    - name: Regulation
      type: string
      jsonPath: .spec.regulation
    - name: Phase
      type: string
      jsonPath: .status.phase
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        description: DataSubjectRequest asks for a data subject's rights to be honoured.
        properties:
          spec:
            type: object
            description: What the data subject asks for.
            required: [type, subject]
            x-kubernetes-validations:
            - rule: "!has(oldSelf.type) || self.type == oldSelf.type"
              message: spec is immutable once accepted
            properties:
              type:
                type: string
                description: The right exercised.
                enum: [Access, Erasure]
              regulation:
                type: string
                enum: [GDPR, CCPA]
                default: GDPR
              subject:
                type: object
                properties:
                  email:
                    type: string
                    pattern: "^[^@]+@[^@]+$"
              restoreWindow:
                type: string
                x-kubernetes-validations:
                - rule: "self.matches('^[0-9]+[dh]$')"
                  message: must be a duration like 14d
              cancel:
                type: boolean
          status:
            type: object
            properties:
              phase:
                type: string
              conditions:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [type]
                items:
                  type: object
                  required: [type, status]
                  properties:
                    type: {type: string}
                    status: {type: string}
"#;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
    dir: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            // Debugging aid: SCHEMA_KUBECTL_VERBOSITY=8 shows every request kubectl makes.
            .args(std::env::var("SCHEMA_KUBECTL_VERBOSITY").map(|v| format!("-v={v}")))
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs");
        eprintln!(
            "$ {} {}\n{}{}",
            self.bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `kubectl apply -f` of a manifest written to a file (as users do).
    fn apply(&self, name: &str, yaml: &str) -> Output {
        let path = self.dir.join(name);
        std::fs::write(&path, yaml).expect("manifest written");
        self.run(&["apply", "-f", path.to_str().expect("utf-8 path")])
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn cr(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: privacy-operator.dev/v1alpha1\nkind: DataSubjectRequest\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    )
}

/// Waits until the CRD is Established (kubectl's own watch on the condition), then checks that
/// `kubectl get dsr` is served.
fn wait_served(k: &Kubectl, ns: &str) {
    let out = k.run(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=20s",
    ]);
    assert!(
        out.status.success(),
        "CRD not established: {}",
        stderr(&out)
    );
    let out = k.run(&["get", "dsr", "-n", ns]);
    assert!(out.status.success(), "CRD not served: {}", stderr(&out));
}

fn scenario(bin: &str, kubeconfig: &Path, ns: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let k = Kubectl {
        bin: PathBuf::from(bin),
        kubeconfig: kubeconfig.to_path_buf(),
        cache: tempfile::tempdir().expect("cache dir"),
        dir: work.path().to_path_buf(),
    };

    let out = k.apply("crd.yaml", CRD);
    assert!(out.status.success(), "CRD apply failed: {}", stderr(&out));
    let out = k.apply(
        "ns.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_served(&k, ns);

    // A valid request is created, with defaults applied.
    let out = k.apply(
        "good.yaml",
        &cr(
            ns,
            "good",
            "  type: Access\n  subject:\n    email: a@example.com\n",
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("datasubjectrequest.privacy-operator.dev/good created")
    );
    let regulation = k.ok(&[
        "get",
        "dsr",
        "good",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.regulation}",
    ]);
    assert_eq!(regulation, "GDPR");

    // Printer columns.
    let table = k.ok(&["get", "dsr", "-n", ns]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "TYPE", "REGULATION", "PHASE", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(&row[..3], ["good", "Access", "GDPR"], "{table}");

    // A bad enum and pattern are rejected with field-specific messages.
    let out = k.apply(
        "bad.yaml",
        &cr(ns, "bad", "  type: Foo\n  subject:\n    email: nope\n"),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(r#"The DataSubjectRequest "bad" is invalid"#),
        "{err}"
    );
    assert!(
        err.contains(
            r#"spec.type: Unsupported value: "Foo": supported values: "Access", "Erasure""#
        ),
        "{err}"
    );
    assert!(err.contains(r#"spec.subject.email: Invalid value: "nope": spec.subject.email in body should match '^[^@]+@[^@]+$'"#), "{err}");

    // A missing required field.
    let out = k.apply("noreq.yaml", &cr(ns, "noreq", "  type: Access\n"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.subject: Required value"),
        "{}",
        stderr(&out)
    );

    // CEL rule on a field.
    let out = k.apply(
        "cel.yaml",
        &cr(
            ns,
            "cel",
            "  type: Access\n  subject: {}\n  restoreWindow: 14x\n",
        ),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"spec.restoreWindow: Invalid value: "string": must be a duration like 14d"#
        ),
        "{}",
        stderr(&out)
    );

    // Unknown fields are refused by the server (kubectl chose server-side field validation:
    // client-side validation would have reported a ValidationError instead).
    let out = k.apply(
        "unknown.yaml",
        &cr(ns, "unknown", "  type: Access\n  subject: {}\n  foo: bar\n"),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(r#"unknown field "spec.foo""#), "{err}");
    assert!(!err.contains("ValidationError"), "{err}");

    // The spec is immutable once accepted (transition rule), except for the allowed changes.
    let out = k.apply(
        "good.yaml",
        &cr(
            ns,
            "good",
            "  type: Erasure\n  subject:\n    email: a@example.com\n",
        ),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"spec: Invalid value: "object": spec is immutable once accepted"#),
        "{}",
        stderr(&out)
    );
    let out = k.apply(
        "good.yaml",
        &cr(
            ns,
            "good",
            "  type: Access\n  cancel: true\n  subject:\n    email: a@example.com\n",
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // explain: a custom kind's field, and a built-in kind.
    let explain = k.ok(&["explain", "dsr.spec"]);
    assert!(
        explain.contains("KIND:       DataSubjectRequest"),
        "{explain}"
    );
    assert!(
        explain.contains("What the data subject asks for."),
        "{explain}"
    );
    assert!(
        explain.contains("subject\t<Object> -required-"),
        "{explain}"
    );
    let explain = k.ok(&["explain", "dsr.spec.type"]);
    assert!(explain.contains("The right exercised."), "{explain}");
    let explain = k.ok(&["explain", "secret"]);
    assert!(
        explain.contains("Secret holds secret data of a certain type."),
        "{explain}"
    );
    let explain = k.ok(&["explain", "dsr.metadata.name"]);
    assert!(
        explain.contains("Name must be unique within a namespace."),
        "{explain}"
    );
}

fn run_with(bin: &str, ns: &str) {
    if !Path::new(bin).exists() {
        eprintln!("skipping: {bin} is not installed");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let emu = rt
        .block_on(Emulator::builder().start())
        .expect("emulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    // kubectl blocks this thread; the emulator keeps running on the runtime's workers.
    scenario(bin, &kubeconfig, ns);
    rt.block_on(emu.shutdown());
}

#[test]
fn kubectl_1_27_validates_explains_and_prints_columns() {
    run_with(KUBECTL_127, "k127");
}

#[test]
fn kubectl_1_33_validates_explains_and_prints_columns() {
    run_with(KUBECTL_133, "k133");
}

#[test]
fn kubectl_on_path_validates_explains_and_prints_columns() {
    run_with("/usr/bin/kubectl", "kpath");
}

/// The product's CRDs (`crds/`), its examples (`examples/`, all valid) and its malformed
/// manifests (`tests/malformed/`, each with `# expect: <message part>`), validated by the
/// schema layer directly: defaults, pruning, then validation (the previous document of a file
/// is the stored object, for transition rules).
#[test]
fn product_crds_accept_examples_and_reject_malformed_manifests() {
    use emulator::schema::StructuralSchema;
    use serde::Deserialize;
    use serde_json::Value;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let docs = |path: &Path| -> Vec<Value> {
        let text = std::fs::read_to_string(path).expect("readable manifest");
        serde_yaml_ng::Deserializer::from_str(&text)
            .filter_map(|d| Value::deserialize(d).ok())
            .filter(|v| !v.is_null())
            .collect()
    };
    let Ok(crd_files) = std::fs::read_dir(root.join("crds")) else {
        eprintln!("skipping: no crds/ directory");
        return;
    };
    let mut schemas: Vec<(String, StructuralSchema)> = Vec::new();
    for f in crd_files {
        let path = f.expect("dir entry").path();
        for crd in docs(&path) {
            let kind = crd
                .pointer("/spec/names/kind")
                .and_then(Value::as_str)
                .expect("kind")
                .to_string();
            for (i, v) in crd
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .expect("versions")
                .iter()
                .enumerate()
            {
                let raw = v.pointer("/schema/openAPIV3Schema").expect("schema");
                let at = format!("spec.versions[{i}].schema.openAPIV3Schema");
                let compiled = StructuralSchema::compile_at(raw, &at)
                    .unwrap_or_else(|e| panic!("{} does not compile: {:?}", path.display(), e));
                schemas.push((kind.clone(), compiled));
            }
        }
    }
    let check = |doc: &Value, old: Option<&Value>| -> Option<Vec<String>> {
        let kind = doc.get("kind").and_then(Value::as_str)?;
        let (_, schema) = schemas.iter().find(|(k, _)| k == kind)?;
        let mut obj = doc.clone();
        let unknown = schema.prune(&mut obj);
        schema.apply_defaults(&mut obj);
        let mut msgs: Vec<String> = unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect();
        msgs.extend(schema.validate(&obj, old).iter().map(|e| e.message()));
        Some(msgs)
    };

    // Every YAML file of examples/, subdirectories included.
    let mut examples = Vec::new();
    let mut dirs = vec![root.join("examples")];
    while let Some(dir) = dirs.pop() {
        for f in std::fs::read_dir(&dir).expect("examples/") {
            let path = f.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                examples.push(path);
            }
        }
    }
    for path in examples {
        for doc in docs(&path) {
            if let Some(msgs) = check(&doc, None) {
                assert!(
                    msgs.is_empty(),
                    "{} should be valid: {msgs:#?}",
                    path.display()
                );
            }
        }
    }

    let mut checked = 0;
    for f in std::fs::read_dir(root.join("tests/malformed")).expect("tests/malformed/") {
        let path = f.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        let expect: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect:"))
            .map(|s| s.trim().to_string())
            .collect();
        let all = docs(&path);
        let Some((last, before)) = all.split_last() else {
            continue;
        };
        // Earlier documents (the stored object) must be valid themselves.
        let mut old = None;
        for d in before {
            let msgs = check(d, old).unwrap_or_default();
            assert!(
                msgs.is_empty(),
                "{}: first document should be valid: {msgs:#?}",
                path.display()
            );
            old = Some(d);
        }
        let Some(msgs) = check(last, old) else {
            continue;
        };
        assert!(!msgs.is_empty(), "{} was accepted", path.display());
        for e in &expect {
            assert!(
                msgs.iter().any(|m| m.contains(e.as_str())),
                "{}: expected {e:?} in {msgs:#?}",
                path.display()
            );
        }
        checked += 1;
    }
    eprintln!("{checked} malformed manifests rejected as expected");
    assert!(checked > 0, "no malformed manifests were checked");
}
