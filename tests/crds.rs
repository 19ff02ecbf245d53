//! The CRDs in `crds/`, the examples in `examples/` and the malformed corpus in
//! `tests/malformed/`, checked against the generated schemas.
//!
//! Admission is simulated in the apiserver's order (prune, default, validate) with the
//! emulator's structural schema, and CEL rules are cross-checked with kube-cel, an independent
//! CEL implementation, so a rule that only one engine accepts is caught here.

use std::{
    fs,
    path::{Path, PathBuf},
};

use emulator::schema::StructuralSchema;
use privacy_operator::api::{
    ConsentPolicy, DataSubjectRequest, DataSystem, RetentionPolicy,
    crd::{crd_files, crds},
};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `kind` -> the CRD's openAPIV3Schema as JSON.
fn schemas() -> Vec<(String, Value)> {
    crds()
        .into_iter()
        .map(|crd| {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("derived CRDs carry a schema");
            (
                crd.spec.names.kind.clone(),
                serde_json::to_value(schema).unwrap(),
            )
        })
        .collect()
}

fn schema_for(kind: &str) -> Option<Value> {
    schemas()
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, s)| s)
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            use serde::Deserialize;
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// What the apiserver would answer to creating `obj` (or updating `old` to `obj`): every
/// error as `field: message`. Empty when admitted.
fn admit(obj: &Value, old: Option<&Value>) -> Vec<String> {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let raw = schema_for(kind).unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let schema = StructuralSchema::compile(&raw).unwrap();
    let stored = |v: &Value| {
        let mut v = v.clone();
        let unknown = schema.prune(&mut v);
        schema.apply_defaults(&mut v);
        (v, unknown)
    };
    let (new, unknown) = stored(obj);
    let old = old.map(|o| stored(o).0);
    let mut errors: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    errors.extend(
        schema
            .validate(&new, old.as_ref())
            .iter()
            .map(|e| e.message()),
    );
    errors
}

/// CEL rules only, evaluated by kube-cel on the defaulted object.
fn cel_errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let raw = schema_for(kind).unwrap();
    match kube_cel::Validator::new().validate(&raw, obj, old) {
        Ok(()) => Vec::new(),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

fn typed_round_trip(obj: &Value) {
    let kind = obj["kind"].as_str().unwrap_or_default();
    let result = match kind {
        "DataSubjectRequest" => {
            serde_json::from_value::<DataSubjectRequest>(obj.clone()).map(|_| ())
        }
        "DataSystem" => serde_json::from_value::<DataSystem>(obj.clone()).map(|_| ()),
        "RetentionPolicy" => serde_json::from_value::<RetentionPolicy>(obj.clone()).map(|_| ()),
        "ConsentPolicy" => serde_json::from_value::<ConsentPolicy>(obj.clone()).map(|_| ()),
        other => panic!("unexpected kind {other}"),
    };
    result.unwrap_or_else(|e| {
        panic!(
            "{kind} {}: the Rust type refuses it: {e}",
            obj["metadata"]["name"]
        )
    });
}

/// `crds/` must hold exactly what the code generates. Set PRIVACY_OPERATOR_BLESS=1 to rewrite.
#[test]
fn crds_dir_matches_generated_yaml() {
    let dir = repo("crds");
    if std::env::var_os("PRIVACY_OPERATOR_BLESS").is_some() {
        privacy_operator::api::write_crds(&dir).unwrap();
    }
    let mut stale = Vec::new();
    for (name, generated) in crd_files() {
        match fs::read_to_string(dir.join(&name)) {
            Ok(on_disk) if on_disk == generated => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    let expected: Vec<String> = crd_files().into_iter().map(|(n, _)| n).collect();
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !expected.contains(&name) {
            stale.push(format!("{name} is not generated by the code (remove it)"));
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ is out of date with the Rust types:\n  {}\nregenerate with:\n  cargo run -- crd --split crds/\n(or PRIVACY_OPERATOR_BLESS=1 cargo test --test crds)",
        stale.join("\n  ")
    );
}

#[test]
fn crd_names_and_columns() {
    let crds = crds();
    let names: Vec<(&str, &str, Vec<String>)> = crds
        .iter()
        .map(|c| {
            (
                c.spec.names.kind.as_str(),
                c.spec.scope.as_str(),
                c.spec.names.short_names.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("DataSubjectRequest", "Namespaced", vec!["dsr".to_string()]),
            ("DataSystem", "Namespaced", vec!["dsys".to_string()]),
            ("RetentionPolicy", "Namespaced", vec!["rpol".to_string()]),
            ("ConsentPolicy", "Namespaced", vec!["cpol".to_string()]),
        ]
    );
    for crd in &crds {
        assert_eq!(crd.spec.group, "privacy-operator.dev");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["privacy".to_string()][..])
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            cols.contains(&"Ready") && cols.last() == Some(&"Age"),
            "{cols:?}"
        );
    }
    let dsr_cols: Vec<&str> = crds[0].spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        dsr_cols,
        ["Type", "Regulation", "Phase", "Due", "Ready", "Age"]
    );
}

// ---------------------------------------------------------------------------------------------
// Structural schema

/// Keys of apiextensions.k8s.io/v1 JSONSchemaProps we may emit (others are dropped or refused
/// by the apiserver).
const ALLOWED_KEYS: &[&str] = &[
    "description",
    "type",
    "format",
    "title",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "properties",
    "additionalProperties",
    "nullable",
    "example",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];
const SCALARS: &[&str] = &["string", "integer", "number", "boolean"];

fn check_node(node: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        errors.push(format!("{path}: not a schema object"));
        return;
    };
    for key in obj.keys() {
        if !ALLOWED_KEYS.contains(&key.as_str()) {
            errors.push(format!("{path}: forbidden key {key}"));
        }
    }
    let ty = obj.get("type").and_then(Value::as_str);
    let flag = |k: &str| obj.get(k) == Some(&Value::Bool(true));
    if ty.is_none()
        && !flag("x-kubernetes-int-or-string")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        errors.push(format!("{path}: no type"));
    }
    if path != "<root>"
        && path != "<root>.spec"
        && path != "<root>.status"
        && obj
            .get("description")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        && !path.ends_with("[]")
        && !path.ends_with("{}")
    {
        errors.push(format!(
            "{path}: no description (kubectl explain shows nothing)"
        ));
    }
    // k8s-openapi's generic text for metav1.Time says nothing about the field.
    if obj
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.starts_with("Time is a wrapper"))
    {
        errors.push(format!("{path}: only the generic metav1.Time description"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        // kubectl reads manifests as YAML 1.1, where these keys are booleans: `on: [..]` would
        // reach the server as `true: [..]` and be refused as an unknown field.
        for name in props.keys() {
            let yaml11_bool = ["y", "n", "yes", "no", "on", "off", "true", "false"];
            if yaml11_bool.contains(&name.to_ascii_lowercase().as_str()) {
                errors.push(format!(
                    "{path}.{name}: YAML 1.1 reads this key as a boolean"
                ));
            }
        }
        if obj.contains_key("additionalProperties") {
            errors.push(format!(
                "{path}: properties and additionalProperties together"
            ));
        }
        for req in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !req.as_str().is_some_and(|r| props.contains_key(r)) {
                errors.push(format!("{path}: required {req} is not a property"));
            }
        }
        for (name, child) in props {
            check_node(child, &format!("{path}.{name}"), errors);
        }
    }
    match obj.get("additionalProperties") {
        Some(Value::Bool(_)) => {
            errors.push(format!("{path}: additionalProperties must be a schema"))
        }
        Some(schema) => check_node(schema, &format!("{path}{{}}"), errors),
        None => {}
    }
    if ty == Some("array") {
        match obj.get("items") {
            Some(items @ Value::Object(_)) => check_node(items, &format!("{path}[]"), errors),
            _ => errors.push(format!("{path}: array without a single items schema")),
        }
        let items = obj.get("items").cloned().unwrap_or(Value::Null);
        match obj.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys = obj
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array);
                if keys.is_none_or(|k| k.is_empty()) {
                    errors.push(format!("{path}: list-type map without list-map-keys"));
                }
                let required = items["required"].as_array().cloned().unwrap_or_default();
                for key in keys.into_iter().flatten() {
                    let k = key.as_str().unwrap_or_default();
                    let prop = &items["properties"][k];
                    if !SCALARS.contains(&prop["type"].as_str().unwrap_or_default()) {
                        errors.push(format!("{path}: map key {k} is not a scalar property"));
                    }
                    if !required.contains(key) && prop.get("default").is_none() {
                        errors.push(format!("{path}: map key {k} must be required or defaulted"));
                    }
                }
            }
            Some("set") if !SCALARS.contains(&items["type"].as_str().unwrap_or_default()) => {
                errors.push(format!("{path}: list-type set of non-scalars"));
            }
            Some("set" | "atomic") | None => {}
            Some(other) => errors.push(format!("{path}: unknown list type {other}")),
        }
    }
    if let Some(values) = obj.get("enum").and_then(Value::as_array) {
        for v in values {
            let ok = match v {
                Value::Null => flag("nullable"),
                Value::String(_) => ty == Some("string"),
                _ => false,
            };
            if !ok {
                errors.push(format!("{path}: enum value {v} does not fit the type"));
            }
        }
    }
    for rule in obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !rule["rule"].is_string() || rule["message"].as_str().is_none_or(|m| m.len() <= 20) {
            errors.push(format!(
                "{path}: CEL rule without a rule or a helpful message: {rule}"
            ));
        }
        if let Some(fp) = rule.get("fieldPath").and_then(Value::as_str) {
            let mut target = node;
            for seg in fp.trim_start_matches('.').split('.') {
                target = &target["properties"][seg];
            }
            if target.is_null() {
                errors.push(format!("{path}: fieldPath {fp} does not name a property"));
            }
        }
        if let Some(reason) = rule.get("reason").and_then(Value::as_str)
            && ![
                "FieldValueInvalid",
                "FieldValueForbidden",
                "FieldValueRequired",
                "FieldValueDuplicate",
            ]
            .contains(&reason)
        {
            errors.push(format!("{path}: unknown CEL reason {reason}"));
        }
    }
}

#[test]
fn every_schema_is_structural() {
    for (kind, schema) in schemas() {
        let mut errors = Vec::new();
        check_node(&schema, "<root>", &mut errors);
        let top: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(
            top,
            ["spec", "status"],
            "{kind}: only spec and status at the root"
        );
        assert_eq!(schema["required"], serde_json::json!(["spec"]), "{kind}");
        assert!(
            errors.is_empty(),
            "{kind} is not a structural schema:\n  {}",
            errors.join("\n  ")
        );
        // The emulator compiles schemas the way the apiserver validates CRDs.
        if let Err(e) = StructuralSchema::compile(&schema) {
            panic!("{kind}: the emulator refuses the schema: {e}");
        }
    }
}

fn walk_rules<'a>(node: &'a Value, out: &mut Vec<(&'a Value, String)>) {
    for rule in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push((node, rule["rule"].as_str().unwrap_or_default().to_string()));
    }
    for child in node["properties"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        walk_rules(child, out);
    }
    if node["items"].is_object() {
        walk_rules(&node["items"], out);
    }
    if node["additionalProperties"].is_object() {
        walk_rules(&node["additionalProperties"], out);
    }
}

#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    let mut count = 0;
    for (kind, schema) in schemas() {
        let compiled = kube_cel::compile_schema(&schema);
        let mut errors: Vec<String> = Vec::new();
        fn collect(c: &kube_cel::CompiledSchema, errors: &mut Vec<String>) {
            errors.extend(c.compilation_errors().iter().map(|e| e.to_string()));
            c.properties.values().for_each(|p| collect(p, errors));
            if let Some(i) = &c.items {
                collect(i, errors);
            }
            if let Some(a) = &c.additional_properties {
                collect(a, errors);
            }
        }
        collect(&compiled, &mut errors);
        assert!(
            errors.is_empty(),
            "{kind}: CEL rules do not compile: {errors:?}"
        );
        let mut rules = Vec::new();
        walk_rules(&schema, &mut rules);
        for (node, rule) in rules {
            count += 1;
            let node_compiled = kube_cel::compile_schema(node);
            let warnings = kube_cel::analyze_rule(
                &rule,
                &node_compiled,
                kube_cel::ScopeContext::CrdValidation,
            );
            let serious: Vec<_> = warnings
                .iter()
                // Scope warnings flag comprehension variables (`t` in `all(t, ...)`) too, so
                // only the cost estimate is held against the rule.
                .filter(|w| matches!(w.kind, kube_cel::WarningKind::CostExceeded))
                .collect();
            assert!(serious.is_empty(), "{kind}: rule {rule:?}: {serious:?}");
        }
    }
    assert!(
        count >= 30,
        "expected the full rule set, found {count} rules"
    );
}

// ---------------------------------------------------------------------------------------------
// Examples

#[test]
fn examples_are_admitted_and_typed() {
    // Every example, also those in subdirectories (examples/dev, examples/custom-connector).
    let mut files = yaml_files("examples");
    for entry in fs::read_dir(repo("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let rel = path
                .strip_prefix(repo(""))
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            files.extend(yaml_files(&rel));
        }
    }
    assert!(files.len() >= 15, "examples missing: {files:?}");
    let mut kinds = std::collections::BTreeSet::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with('#'),
            "{}: start with a comment saying what it shows",
            path.display()
        );
        for doc in yaml_docs(&path) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            if doc["apiVersion"] == "v1" && kind == "Secret" {
                assert!(doc["metadata"]["name"].is_string());
                continue;
            }
            assert_eq!(
                doc["apiVersion"],
                "privacy-operator.dev/v1alpha1",
                "{}",
                path.display()
            );
            let errors = admit(&doc, None);
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            let cel = cel_errors(&doc, None);
            assert!(
                cel.is_empty(),
                "{}: kube-cel disagrees: {cel:#?}",
                path.display()
            );
            typed_round_trip(&doc);
            kinds.insert(match kind.as_str() {
                "DataSubjectRequest" => doc["spec"]["type"].as_str().unwrap().to_string(),
                "DataSystem" => doc["spec"]["connector"]["type"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                _ => kind,
            });
        }
    }
    let expected = [
        "Access",
        "ConsentPolicy",
        "ConsentWithdrawal",
        "Custom",
        "Erasure",
        "HTTP",
        "ObjectStorage",
        "Objection",
        "Portability",
        "Rectification",
        "Restriction",
        "RetentionPolicy",
        "SQL",
    ];
    assert_eq!(
        kinds.iter().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
}

fn example(name: &str, kind: &str) -> Value {
    yaml_docs(&repo("examples").join(name))
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap()
}

#[test]
fn request_spec_changes_follow_the_rules() {
    let erasure = example("dsr-erasure.yaml", "DataSubjectRequest");
    let change = |f: &dyn Fn(&mut Value)| {
        let mut v = erasure.clone();
        f(&mut v);
        (admit(&v, Some(&erasure)), cel_errors(&v, Some(&erasure)))
    };
    // cancel and legalHold may change at any time; metadata and status are not spec.
    for ok in [
        change(&|v| v["spec"]["cancel"] = true.into()),
        change(&|v| v["spec"]["legalHold"] = true.into()),
        change(&|v| v["metadata"]["labels"] = serde_json::json!({"team": "privacy"})),
        change(&|v| {
            v["spec"]["extension"] =
                serde_json::json!({"reason": "Subject has accounts in five systems"})
        }),
    ] {
        assert_eq!(ok, (vec![], vec![]));
    }
    // Everything else is immutable, and each engine names the field.
    for (field, f) in [
        (
            "spec.regulation",
            &(|v: &mut Value| v["spec"]["regulation"] = "GDPR".into()) as &dyn Fn(&mut Value),
        ),
        ("spec.subject", &|v: &mut Value| {
            v["spec"]["subject"]["identifiers"]["email"] = "x@y.z".into()
        }),
        ("spec.retentionPolicyRef", &|v: &mut Value| {
            v["spec"]
                .as_object_mut()
                .unwrap()
                .remove("retentionPolicyRef");
        }),
        ("spec.systems", &|v: &mut Value| {
            v["spec"]["systems"] = serde_json::json!({"matchLabels": {"a": "b"}})
        }),
        ("spec.verification", &|v: &mut Value| {
            v["spec"]["verification"]["verifiedBy"] = "someone-else".into()
        }),
    ] {
        let (errs, cel) = change(f);
        assert!(
            errs.iter().any(|e| e.starts_with(field)),
            "{field}: {errs:?}"
        );
        assert!(
            cel.iter().any(|e| e.starts_with(field)),
            "{field} (kube-cel): {cel:?}"
        );
    }
    // Verification can be added to an unverified request, once.
    let mut unverified = erasure.clone();
    unverified["spec"]
        .as_object_mut()
        .unwrap()
        .remove("verification");
    assert!(admit(&erasure, Some(&unverified)).is_empty());
    let errs = admit(&unverified, Some(&erasure));
    assert!(
        errs.iter()
            .any(|e| e.contains("verification can be set only once")),
        "{errs:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed corpus

#[test]
fn malformed_manifests_are_refused_with_a_message_naming_the_field() {
    let files = yaml_files("tests/malformed");
    assert!(files.len() >= 20, "corpus too small: {files:?}");
    let mut failures = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert_eq!(expects.len(), 1, "{name}: exactly one `# expect: ` line");
        let expect = expects[0].trim();
        let docs = yaml_docs(&path);
        let (obj, old) = match docs.as_slice() {
            [obj] => (obj, None),
            [old, obj] => {
                let errs = admit(old, None);
                assert!(
                    errs.is_empty(),
                    "{name}: the first document must be valid: {errs:?}"
                );
                (obj, Some(old))
            }
            _ => panic!("{name}: one document, or two (the original and the changed one)"),
        };
        let errors = admit(obj, old);
        if !errors.iter().any(|e| e.contains(expect)) {
            failures.push(format!("{name}: expected {expect:?} in {errors:#?}"));
        }
        // Whatever the emulator says, a manifest whose expectation comes from a CEL rule must
        // also be refused by kube-cel.
        let cel = cel_errors(obj, old);
        let from_cel = errors.iter().any(|e| e.contains(expect)) && !cel.is_empty();
        let from_schema = !errors.is_empty();
        assert!(from_cel || from_schema, "{name}: nothing refused it");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// docs/reference.md is generated from the same schemas; it must not drift from the types.
#[test]
fn reference_doc_matches_generated_markdown() {
    let have = fs::read_to_string(repo("docs/reference.md")).unwrap_or_default();
    let want = privacy_operator::api::reference_markdown();
    assert!(
        have == want,
        "docs/reference.md is out of date with the Rust types; regenerate it with:\n  cargo run -- crd --reference > docs/reference.md"
    );
}
