use serde_json::json;

use super::*;
use crate::resource::PatchKind;

fn info(group: &str, kind: &str) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        plural: format!("{}s", kind.to_lowercase()),
        singular: kind.to_lowercase(),
        namespaced: true,
        short_names: vec![],
        categories: vec![],
        verbs: vec![],
        status_subresource: true,
        schema: None,
        openapi_schema: None,
        printer_columns: vec![],
        patch_kind: PatchKind::Builtin,
    }
}

fn smp(doc: Value, patch: Value, group: &str, kind: &str) -> Result<Value, ApiError> {
    strategic_merge_patch(&doc, patch.to_string().as_bytes(), &info(group, kind))
}

fn pod(containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
}

// ---- JSON patch ----

#[test]
fn json_patch_applies_operations_in_order() {
    let doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1, 2]}});
    let out = json_patch(
        &doc,
        br#"[{"op":"test","path":"/metadata/labels/a","value":"1"},
            {"op":"replace","path":"/metadata/labels/a","value":"2"},
            {"op":"add","path":"/spec/x/-","value":3},
            {"op":"remove","path":"/spec/x/0"}]"#,
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"metadata": {"labels": {"a": "2"}}, "spec": {"x": [2, 3]}})
    );
}

#[test]
fn json_patch_failed_test_is_422_with_the_apiserver_message() {
    let doc = json!({"metadata": {"resourceVersion": "5"}});
    let err = json_patch(
        &doc,
        br#"[{"op":"test","path":"/metadata/resourceVersion","value":"4"}]"#,
    )
    .unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    assert_eq!(
        err.message,
        "the server rejected our request due to an error in our request"
    );
}

#[test]
fn json_patch_missing_path_is_422() {
    let err = json_patch(
        &json!({}),
        br#"[{"op":"replace","path":"/spec/x","value":1}]"#,
    )
    .unwrap_err();
    assert_eq!(err.code, 422);
    let err = json_patch(&json!({}), br#"[{"op":"remove","path":"/spec"}]"#).unwrap_err();
    assert_eq!(err.code, 422);
}

#[test]
fn json_patch_malformed_is_400() {
    assert_eq!(json_patch(&json!({}), b"{").unwrap_err().code, 400);
    assert_eq!(
        json_patch(&json!({}), br#"{"op":"add"}"#).unwrap_err().code,
        400
    );
    assert_eq!(
        json_patch(&json!({}), br#"[{"op":"frobnicate","path":"/a"}]"#)
            .unwrap_err()
            .code,
        400
    );
}

// ---- merge patch ----

#[test]
fn merge_patch_merges_objects_and_deletes_nulls() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"list": [1, 2]}});
    let out = merge_patch(
        &doc,
        br#"{"metadata":{"labels":{"a":null,"c":"3"}},"spec":{"list":[9]}}"#,
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"list": [9]}})
    );
}

#[test]
fn merge_patch_rejects_non_objects_and_bad_json() {
    assert_eq!(merge_patch(&json!({}), b"[1]").unwrap_err().code, 400);
    assert_eq!(merge_patch(&json!({}), b"nope").unwrap_err().code, 400);
}

// ---- strategic merge patch ----

#[test]
fn smp_is_refused_for_custom_resources() {
    let mut i = info("privacy-operator.dev", "DataSubjectRequest");
    i.patch_kind = PatchKind::Custom;
    let err = strategic_merge_patch(&json!({}), b"{}", &i).unwrap_err();
    assert_eq!(err.code, 415);
    assert_eq!(err.reason, "UnsupportedMediaType");
}

#[test]
fn smp_merges_containers_by_name_keeping_order() {
    let doc = pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
    let out = smp(doc, json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}), "", "Pod").unwrap();
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}])
    );
}

#[test]
fn smp_deletes_list_items_with_patch_delete() {
    let doc = pod(json!([{"name": "a"}, {"name": "b"}]));
    let out = smp(
        doc,
        json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        "",
        "Pod",
    )
    .unwrap();
    assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
}

#[test]
fn smp_replace_directive_on_list_and_map() {
    let doc = pod(json!([{"name": "a", "image": "x"}, {"name": "b"}]));
    let out = smp(
        doc.clone(),
        json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}),
        "",
        "Pod",
    )
    .unwrap();
    assert_eq!(out["spec"]["containers"], json!([{"name": "z"}]));

    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let out = smp(
        doc,
        json!({"metadata": {"labels": {"c": "3", "$patch": "replace"}}}),
        "",
        "ConfigMap",
    )
    .unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
}

#[test]
fn smp_delete_directive_on_map_empties_it() {
    let doc = json!({"spec": {"securityContext": {"runAsUser": 1}}});
    let out = smp(
        doc,
        json!({"spec": {"securityContext": {"$patch": "delete"}}}),
        "",
        "Pod",
    )
    .unwrap();
    assert_eq!(out["spec"]["securityContext"], json!({}));
}

#[test]
fn smp_lists_without_strategy_are_replaced() {
    let doc = json!({"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "c", "args": ["1", "2"]}]}});
    let out = smp(doc, json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "args": ["3"]}]}}), "", "Pod").unwrap();
    assert_eq!(out["spec"]["tolerations"], json!([{"key": "b"}]));
    assert_eq!(out["spec"]["containers"][0]["args"], json!(["3"]));
}

#[test]
fn smp_finalizers_merge_and_delete_from_primitive_list() {
    let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
    let out = smp(
        doc.clone(),
        json!({"metadata": {"finalizers": ["c", "a"]}}),
        "",
        "ConfigMap",
    )
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    let out = smp(
        doc,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        "",
        "ConfigMap",
    )
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
}

#[test]
fn smp_null_removes_field_and_map_keys() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}}});
    let out = smp(
        doc,
        json!({"metadata": {"labels": {"a": null}, "annotations": null}}),
        "",
        "ConfigMap",
    )
    .unwrap();
    assert_eq!(out["metadata"], json!({"labels": {"b": "2"}}));
}

#[test]
fn smp_owner_references_merge_by_uid() {
    let doc = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}});
    let out = smp(
        doc,
        json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}}),
        "",
        "ConfigMap",
    )
    .unwrap();
    // Upstream puts patch items it cannot place relative to live ones first.
    assert_eq!(
        out["metadata"]["ownerReferences"],
        json!([{"uid": "2", "name": "b"}, {"uid": "1", "name": "a"}])
    );
}

#[test]
fn smp_env_and_ports_in_deployment_template() {
    let doc = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "app",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "volumeMounts": [{"name": "v", "mountPath": "/a"}]
    }]}}}});
    let patch = json!({"spec": {"template": {"spec": {"containers": [{
        "name": "app",
        "env": [{"name": "B", "value": "3"}, {"name": "A", "$patch": "delete"}],
        "ports": [{"containerPort": 443}],
        "volumeMounts": [{"name": "w", "mountPath": "/b"}]
    }]}}}});
    let out = smp(doc, patch, "apps", "Deployment").unwrap();
    let c = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["env"], json!([{"name": "B", "value": "3"}]));
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "w", "mountPath": "/b"}, {"name": "v", "mountPath": "/a"}])
    );
}

#[test]
fn smp_conditions_merge_by_type() {
    let doc = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}]}});
    let out = smp(
        doc,
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        "",
        "Pod",
    )
    .unwrap();
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "Scheduled", "status": "True"}])
    );
}

#[test]
fn smp_set_element_order_reorders_merged_list() {
    // What kubectl apply sends after the user swapped two containers and changed one image.
    let doc = pod(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]));
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
        "containers": [{"name": "a", "image": "a2"}]
    }});
    let out = smp(doc, patch, "", "Pod").unwrap();
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "b", "image": "b"}, {"name": "a", "image": "a2"}])
    );
}

#[test]
fn smp_set_element_order_for_scalars_with_deletions() {
    let doc = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["c", "a", "d"],
        "$deleteFromPrimitiveList/finalizers": ["b"],
        "finalizers": ["d"]
    }});
    let out = smp(doc, patch, "", "ConfigMap").unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "d"]));
}

#[test]
fn smp_retain_keys_clears_other_keys() {
    let doc =
        json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let out = smp(doc, patch, "apps", "Deployment").unwrap();
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

    let bad = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
    let err = smp(json!({}), bad, "apps", "Deployment").unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "invalid patch format of retainKeys")
    );
}

#[test]
fn smp_new_fields_have_their_directives_processed() {
    let doc = json!({"metadata": {"name": "x"}});
    let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}]}]}});
    let out = smp(doc, patch, "", "Pod").unwrap();
    assert_eq!(
        out["spec"],
        json!({"containers": [{"name": "a", "env": []}]})
    );
}

#[test]
fn smp_errors_match_the_apiserver() {
    let doc = pod(json!([{"name": "a"}]));
    let err = smp(
        doc.clone(),
        json!({"spec": {"containers": [{"image": "x"}]}}),
        "",
        "Pod",
    )
    .unwrap_err();
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        "map: map[image:x] does not contain declared merge key: name"
    );

    let err = smp(
        doc.clone(),
        json!({"spec": {"containers": [{"name": "a", "$patch": "bogus"}]}}),
        "",
        "Pod",
    )
    .unwrap_err();
    assert_eq!(err.code, 500);
    assert!(
        err.message.starts_with("unknown patch type: bogus"),
        "{}",
        err.message
    );

    let err = smp(
        json!({"metadata": {"finalizers": [["a"]]}}),
        json!({"metadata": {"finalizers": [["b"]]}}),
        "",
        "Pod",
    )
    .unwrap_err();
    assert_eq!(err.code, 422);

    let err = smp(
        doc,
        json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
        "",
        "Pod",
    )
    .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "invalid patch format of primitive list")
    );

    assert_eq!(smp(json!({}), json!([1]), "", "Pod").unwrap_err().code, 400);
}

#[test]
fn smp_kubectl_three_way_patch_removing_a_label_and_an_env_var() {
    // Shape of the patch `kubectl apply` (client-side) computes from last-applied, new config and live.
    let live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"app": "d", "tier": "web"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}}
    });
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":1}"}, "labels": {"tier": null}},
        "spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"name": "app", "$setElementOrder/env": [{"name": "A"}], "env": [{"name": "B", "$patch": "delete"}], "image": "a:2"}]
        }}}
    });
    let out = smp(live, patch, "apps", "Deployment").unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"app": "d"}));
    assert_eq!(out["spec"]["replicas"], json!(3));
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "app", "image": "a:2", "env": [{"name": "A", "value": "1"}]}])
    );
}
