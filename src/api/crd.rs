//! The CustomResourceDefinitions of every privacy-operator resource, as objects and as the YAML
//! kept in `crds/` (one file per CRD, regenerated with `privacy-operator crd --split crds/`).

use std::{fs, io, path::Path};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use super::{ConsentPolicy, DataSubjectRequest, DataSystem, RetentionPolicy};

/// Every CRD, in a stable order. Use these rather than `T::crd()`: descriptions are reflowed
/// here (see [`reflow_descriptions`]).
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        DataSubjectRequest::crd(),
        DataSystem::crd(),
        RetentionPolicy::crd(),
        ConsentPolicy::crd(),
    ]
    .into_iter()
    .map(reflowed)
    .collect()
}

fn reflowed(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(&crd).expect("a CRD always serialises to JSON");
    reflow_descriptions(&mut value);
    drop_null_from_enums(&mut value);
    serde_json::from_value(value).expect("reflowing descriptions keeps the CRD valid")
}

/// kube-derive lists `null` among the values of an optional enum (next to `nullable: true`), so
/// the apiserver's "supported values" message would offer `"null"` as a choice. `nullable`
/// already admits null, so the entry only confuses the reader of the error.
fn drop_null_from_enums(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            map.values_mut().for_each(drop_null_from_enums);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_from_enums),
        _ => {}
    }
}

/// Doc comments are hard-wrapped at 100 columns; `kubectl explain` wraps text itself and shows
/// embedded line breaks as ragged lines. Joins the lines of each paragraph (paragraphs, separated
/// by a blank line, stay separate) in every `description` of the CRD.
pub fn reflow_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    Value::String(text) if key == "description" => *text = reflow(text),
                    _ => reflow_descriptions(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(reflow_descriptions),
        _ => {}
    }
}

fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// One CRD as a YAML document (without the `---` separator).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml_ng::to_string(crd).expect("a CRD always serialises to YAML")
}

/// Every CRD as multi-document YAML, in the order of [`crds`].
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| format!("---\n{}", crd_yaml(crd)))
        .collect()
}

/// The file name of a CRD in `crds/`: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.{}.yaml", crd.spec.names.plural, crd.spec.group)
}

/// The files `crds/` should hold: (file name, content). Each file is one `---` document, so
/// `cat crds/*.yaml` style concatenation and `kubectl apply -f crds/` both work.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .iter()
        .map(|crd| (file_name(crd), format!("---\n{}", crd_yaml(crd))))
        .collect()
}

/// Writes one file per CRD into `dir` (created if missing). Files of other names in `dir` are
/// left alone.
pub fn write_crds(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, content) in crd_files() {
        fs::write(dir.join(name), content)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_order_are_stable() {
        let names: Vec<String> = crds().iter().map(file_name).collect();
        assert_eq!(
            names,
            [
                "datasubjectrequests.privacy-operator.dev.yaml",
                "datasystems.privacy-operator.dev.yaml",
                "retentionpolicies.privacy-operator.dev.yaml",
                "consentpolicies.privacy-operator.dev.yaml",
            ]
        );
        let all = crds_yaml();
        assert_eq!(all.matches("---\n").count(), 4);
        let joined: String = crd_files().into_iter().map(|(_, c)| c).collect();
        assert_eq!(all, joined);
    }

    #[test]
    fn descriptions_are_reflowed_into_paragraphs() {
        let mut v =
            serde_json::json!({"description": "a\nb\n\nc\n d", "x": [{"description": "e\nf"}]});
        reflow_descriptions(&mut v);
        assert_eq!(v["description"], "a b\n\nc d");
        assert_eq!(v["x"][0]["description"], "e f");
        assert!(!crds_yaml().contains("description: |-"));
    }

    #[test]
    fn write_crds_writes_one_file_each() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("crds");
        write_crds(&out).unwrap();
        assert_eq!(fs::read_dir(&out).unwrap().count(), 4);
        for (name, content) in crd_files() {
            assert_eq!(fs::read_to_string(out.join(name)).unwrap(), content);
        }
    }
}
