//! Tests of the whole schema pipeline on a DataSubjectRequest-like CRD schema.

use serde_json::{Value, json};

use super::*;

fn dsr_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["type", "subject"],
                "x-kubernetes-validations": [
                    {"rule": "!has(oldSelf.type) || self.type == oldSelf.type", "message": "spec is immutable once accepted"},
                    {"rule": "self.type != 'Rectification' || has(self.rectification)", "message": "rectification changes are required for Rectification requests", "fieldPath": ".rectification", "reason": "FieldValueRequired"}
                ],
                "properties": {
                    "type": {"type": "string", "enum": ["Access", "Erasure", "Rectification"]},
                    "regulation": {"type": "string", "enum": ["GDPR", "CCPA"], "default": "GDPR"},
                    "subject": {
                        "type": "object",
                        "properties": {
                            "email": {"type": "string", "pattern": "^[^@]+@[^@]+$", "maxLength": 64},
                            "secretRef": {"type": "object", "properties": {"name": {"type": "string", "minLength": 1}}}
                        }
                    },
                    "restoreWindow": {
                        "type": "string", "default": "14d",
                        "x-kubernetes-validations": [{"rule": "self.matches('^[0-9]+[dh]$')", "message": "must be a duration like 14d"}]
                    },
                    "cancel": {"type": "boolean"},
                    "priority": {"type": "integer", "minimum": 0, "maximum": 10, "format": "int32"},
                    "systems": {
                        "type": "array", "maxItems": 3,
                        "items": {"type": "object", "properties": {"name": {"type": "string"}, "weight": {"type": "number", "default": 1.5}}}
                    },
                    "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 5}},
                    "rectification": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"fields": {"type": "object", "properties": {"email": {"type": "string"}}}}},
                    "dueAt": {"type": "string", "format": "date-time"},
                    "note": {"type": "string", "nullable": true},
                    "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}
                }
            },
            "status": {
                "type": "object",
                "properties": {
                    "phase": {"type": "string"},
                    "conditions": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["type"],
                        "items": {
                            "type": "object",
                            "required": ["type", "status"],
                            "properties": {
                                "type": {"type": "string"},
                                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                                "lastTransitionTime": {"type": "string", "format": "date-time"}
                            }
                        }
                    }
                }
            }
        }
    })
}

fn schema() -> StructuralSchema {
    StructuralSchema::compile(&dsr_schema()).expect("schema compiles")
}

fn obj(spec: Value) -> Value {
    json!({"apiVersion": "privacy-operator.dev/v1alpha1", "kind": "DataSubjectRequest",
        "metadata": {"name": "r1", "namespace": "default"}, "spec": spec})
}

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(FieldError::message).collect()
}

#[test]
fn valid_object_passes() {
    let s = schema();
    let mut o =
        obj(json!({"type": "Access", "subject": {"email": "a@b.c"}, "systems": [{"name": "crm"}]}));
    s.apply_defaults(&mut o);
    assert_eq!(o["spec"]["regulation"], "GDPR");
    assert_eq!(o["spec"]["restoreWindow"], "14d");
    assert_eq!(o["spec"]["systems"][0]["weight"], 1.5);
    assert_eq!(messages(&s.validate(&o, None)), Vec::<String>::new());
}

#[test]
fn field_specific_errors() {
    let s = schema();
    let o = obj(
        json!({"type": "Foo", "subject": {"email": "nope", "secretRef": {"name": ""}}, "priority": 11,
        "systems": [{}, {}, {}, {}], "tags": ["a", "b", "a"], "labels": {"x": "toolong"}, "dueAt": "soon",
        "restoreWindow": "14x"}),
    );
    let msgs = messages(&s.validate(&o, None));
    for expected in [
        r#"spec.type: Unsupported value: "Foo": supported values: "Access", "Erasure", "Rectification""#,
        r#"spec.subject.email: Invalid value: "nope": spec.subject.email in body should match '^[^@]+@[^@]+$'"#,
        r#"spec.subject.secretRef.name: Invalid value: "": spec.subject.secretRef.name in body should be at least 1 chars long"#,
        "spec.priority: Invalid value: 11: spec.priority in body should be less than or equal to 10",
        "spec.systems: Too many: 4: must have at most 3 items",
        r#"spec.tags[2]: Duplicate value: "a""#,
        "spec.labels.x: Too long: may not be more than 5 bytes",
        r#"spec.dueAt: Invalid value: "soon": spec.dueAt in body must be of type date-time: "soon""#,
    ] {
        assert!(
            msgs.contains(&expected.to_string()),
            "missing {expected}\nin {msgs:#?}"
        );
    }
    let o = obj(json!({"type": "Access", "subject": {}, "restoreWindow": "14x"}));
    assert_eq!(
        messages(&s.validate(&o, None)),
        vec![r#"spec.restoreWindow: Invalid value: "string": must be a duration like 14d"#]
    );
    let o = obj(json!({"type": "Access"}));
    assert_eq!(
        messages(&s.validate(&o, None)),
        vec![
            "spec.subject: Required value",
            r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#,
        ]
    );
    let o = json!({"apiVersion": "privacy-operator.dev/v1alpha1", "kind": "DataSubjectRequest", "metadata": {"name": "Bad_Name"}});
    let msgs = messages(&s.validate(&o, None));
    assert!(
        msgs[0].starts_with(
            r#"metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#
        ),
        "{msgs:?}"
    );
}

#[test]
fn type_errors_block_cel() {
    let s = schema();
    let o =
        obj(json!({"type": "Access", "subject": {}, "priority": "high", "restoreWindow": "14x"}));
    assert_eq!(
        messages(&s.validate(&o, None)),
        vec![
            r#"spec.priority: Invalid value: "string": spec.priority in body must be of type integer: "string""#,
            r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#,
        ]
    );
    assert_eq!(s.validate(&o, None)[0].reason(), "FieldValueTypeInvalid");
}

#[test]
fn immutability_rule_on_update_only() {
    let s = schema();
    let old = obj(json!({"type": "Access", "subject": {}}));
    let new = obj(json!({"type": "Erasure", "subject": {}}));
    assert!(s.validate(&new, None).is_empty());
    assert_eq!(
        messages(&s.validate(&new, Some(&old))),
        vec![r#"spec: Invalid value: "object": spec is immutable once accepted"#]
    );
    // Exceptions (cancel) are allowed.
    let cancelled = obj(json!({"type": "Access", "subject": {}, "cancel": true}));
    assert!(s.validate(&cancelled, Some(&old)).is_empty());
    // fieldPath + reason
    let rect = obj(json!({"type": "Rectification", "subject": {}}));
    let errs = s.validate(&rect, None);
    assert_eq!(
        messages(&errs),
        vec![
            "spec.rectification: Required value: rectification changes are required for Rectification requests"
        ]
    );
    assert_eq!(errs[0].reason(), "FieldValueRequired");
}

#[test]
fn list_map_conditions() {
    let s = schema();
    let mut o = obj(json!({"type": "Access", "subject": {}}));
    o["status"] = json!({"conditions": [
        {"type": "Ready", "status": "True"}, {"type": "Ready", "status": "Maybe"}]});
    assert_eq!(
        messages(&s.validate(&o, None)),
        vec![
            r#"status.conditions[1].status: Unsupported value: "Maybe": supported values: "True", "False", "Unknown""#,
            r#"status.conditions[1]: Duplicate value: map[string]interface {}{"type":"Ready"}"#,
            r#"<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"#,
        ]
    );
    assert_eq!(
        s.list_map_keys(&["status".into(), "conditions".into()]),
        Some(vec!["type".to_string()])
    );
    assert_eq!(s.list_map_keys(&["spec".into(), "tags".into()]), None);
    assert_eq!(
        s.list_type(&["spec".into(), "tags".into()]).as_deref(),
        Some("set")
    );
}

#[test]
fn pruning() {
    let s = schema();
    let mut o = obj(
        json!({"type": "Access", "subject": {"email": "a@b.c", "phone": "1"}, "foo": 1,
        "systems": [{"name": "a", "x": true}],
        "rectification": {"anything": 1, "fields": {"email": "e", "junk": 2}},
        "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogus": 1}, "spec": {"x": 1}}}),
    );
    o["metadata"]["bogus"] = json!("x");
    o["extra"] = json!(1);
    let pruned = s.prune(&mut o);
    assert_eq!(
        pruned,
        vec![
            "extra",
            "metadata.bogus",
            "spec.foo",
            "spec.rectification.fields.junk",
            "spec.subject.phone",
            "spec.systems[0].x",
            "spec.template.metadata.bogus",
        ]
    );
    assert_eq!(o["spec"]["rectification"]["anything"], 1);
    assert_eq!(o["spec"]["template"]["spec"]["x"], 1);
    assert_eq!(o["apiVersion"], "privacy-operator.dev/v1alpha1");
    assert!(o["metadata"].get("bogus").is_none());
}

#[test]
fn nulls_and_defaults() {
    let s = schema();
    let mut o = obj(
        json!({"type": "Access", "subject": null, "regulation": null, "note": null, "systems": [{"weight": null}]}),
    );
    s.apply_defaults(&mut o);
    assert_eq!(o["spec"]["regulation"], "GDPR");
    assert!(o["spec"].get("subject").is_none());
    assert_eq!(o["spec"]["note"], Value::Null);
    assert_eq!(o["spec"]["systems"][0]["weight"], 1.5);
}

#[test]
fn invalid_schemas_are_rejected() {
    let err = StructuralSchema::compile(&json!({"type": "object", "properties": {
        "a": {"type": "array"},
        "b": {"type": "string", "pattern": "("},
        "c": {"type": "string", "x-kubernetes-validations": [{"rule": "self.size( > 1"}]}
    }}))
    .unwrap_err();
    assert!(
        err.contains("openAPIV3Schema.properties[a].items: Required value"),
        "{err}"
    );
    assert!(
        err.contains("openAPIV3Schema.properties[b].pattern: Invalid value"),
        "{err}"
    );
    assert!(err.contains("openAPIV3Schema.properties[c].x-kubernetes-validations[0].rule: Invalid value: \"self.size( > 1\": compilation failed"), "{err}");
}

#[test]
fn compiled_schemas_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<StructuralSchema>();
}
