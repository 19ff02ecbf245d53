use serde_json::json;

use super::*;

const T0: &str = "2025-01-01T00:00:00Z";
const T1: &str = "2025-01-01T00:01:00Z";
const T2: &str = "2025-01-01T00:02:00Z";

fn no_keys(_: &[String]) -> Option<Vec<String>> {
    None
}

fn crd_keys(p: &[String]) -> Option<Vec<String>> {
    (p == ["status", "conditions"]).then(|| vec!["type".to_string()])
}

fn ctx<'a>(manager: &'a str, now: &'a str) -> ApplyContext<'a> {
    ApplyContext {
        manager,
        force: false,
        subresource: None,
        status_subresource: false,
        now,
        list_map_keys: &no_keys,
    }
}

fn cr_ctx<'a>(manager: &'a str, now: &'a str, subresource: Option<&'a str>) -> ApplyContext<'a> {
    ApplyContext {
        manager,
        force: true,
        subresource,
        status_subresource: true,
        now,
        list_map_keys: &crd_keys,
    }
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": data})
}

fn deploy(replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": replicas}})
}

fn entries(obj: &Value) -> Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["manager"] == manager))
        .unwrap_or_else(|| panic!("no entry for {manager} in {obj:#}"))
}

#[test]
fn apply_creates_with_an_apply_entry() {
    let obj = apply(None, &cm(json!({"a": "1"})), &ctx("kubectl", T0)).unwrap();
    assert_eq!(obj["data"], json!({"a": "1"}));
    assert_eq!(
        entries(&obj),
        vec![json!({
            "manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": T0,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}
        })]
    );
}

#[test]
fn reapplying_the_same_config_changes_nothing() {
    let first = apply(None, &cm(json!({"a": "1"})), &ctx("kubectl", T0)).unwrap();
    let again = apply(Some(&first), &cm(json!({"a": "1"})), &ctx("kubectl", T1)).unwrap();
    assert_eq!(first, again);
}

#[test]
fn fields_dropped_from_the_config_are_removed() {
    let first = apply(None, &cm(json!({"a": "1", "b": "2"})), &ctx("kubectl", T0)).unwrap();
    let second = apply(Some(&first), &cm(json!({"a": "1"})), &ctx("kubectl", T1)).unwrap();
    assert_eq!(second["data"], json!({"a": "1"}));
    assert_eq!(
        entry(&second, "kubectl")["fieldsV1"],
        json!({"f:data": {"f:a": {}}})
    );
    assert_eq!(entry(&second, "kubectl")["time"], T1);
}

#[test]
fn fields_another_applier_shares_are_kept_when_dropped() {
    let a = apply(None, &cm(json!({"a": "1", "b": "2"})), &ctx("alice", T0)).unwrap();
    let b = apply(Some(&a), &cm(json!({"b": "2"})), &ctx("bob", T1)).unwrap();
    assert_eq!(entry(&b, "bob")["fieldsV1"], json!({"f:data": {"f:b": {}}}));
    let a2 = apply(Some(&b), &cm(json!({"a": "1"})), &ctx("alice", T2)).unwrap();
    assert_eq!(a2["data"], json!({"a": "1", "b": "2"}));
}

#[test]
fn fields_only_an_updater_shares_are_removed_when_dropped() {
    // Upstream only protects fields other *appliers* own.
    let a = apply(None, &cm(json!({"a": "1"})), &ctx("alice", T0)).unwrap();
    let mut edited = a.clone();
    edited["data"]["z"] = json!("9");
    record_update(Some(&a), &mut edited, "kubectl-edit", None, T1);
    let a2 = apply(Some(&edited), &cm(json!({})), &ctx("alice", T2)).unwrap();
    assert_eq!(a2["data"], json!({"z": "9"}));
}

#[test]
fn changing_a_value_another_manager_owns_is_a_conflict() {
    let a = apply(None, &deploy(1), &ctx("alice", T0)).unwrap();
    let err = apply(Some(&a), &deploy(2), &ctx("bob", T1)).unwrap_err();
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );
    assert_eq!(
        err.details.unwrap()["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".spec.replicas"}])
    );
}

#[test]
fn the_same_value_is_shared_without_conflict() {
    let a = apply(None, &deploy(1), &ctx("alice", T0)).unwrap();
    let b = apply(Some(&a), &deploy(1), &ctx("bob", T1)).unwrap();
    assert_eq!(
        entry(&b, "alice")["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
    assert_eq!(
        entry(&b, "bob")["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
}

#[test]
fn force_moves_ownership() {
    let a = apply(None, &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1, "paused": false}}), &ctx("alice", T0)).unwrap();
    let mut c = ctx("bob", T1);
    c.force = true;
    let b = apply(Some(&a), &deploy(2), &c).unwrap();
    assert_eq!(b["spec"]["replicas"], json!(2));
    assert_eq!(
        entry(&b, "alice")["fieldsV1"],
        json!({"f:spec": {"f:paused": {}}})
    );
    assert_eq!(
        entry(&b, "bob")["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
    // alice now conflicts with bob.
    let err = apply(Some(&b), &deploy(1), &ctx("alice", T2)).unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"bob\": .spec.replicas"
    );
}

#[test]
fn updates_take_ownership_and_conflict_with_later_applies() {
    let a = apply(None, &deploy(1), &ctx("alice", T0)).unwrap();
    let mut scaled = a.clone();
    scaled["spec"]["replicas"] = json!(5);
    record_update(Some(&a), &mut scaled, "kube-controller-manager", None, T1);
    assert!(
        entries(&scaled).iter().all(|e| e["manager"] != "alice"),
        "alice lost her only field"
    );
    let u = entry(&scaled, "kube-controller-manager");
    assert_eq!(
        (
            u["operation"].as_str(),
            u["apiVersion"].as_str(),
            u["time"].as_str()
        ),
        (Some("Update"), Some("apps/v1"), Some(T1))
    );
    let err = apply(Some(&scaled), &deploy(1), &ctx("alice", T2)).unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kube-controller-manager\" using apps/v1: .spec.replicas"
    );
}

#[test]
fn multiple_conflicts_are_grouped_by_manager() {
    let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "1"}});
    let a = apply(None, &base, &ctx("alice", T0)).unwrap();
    let err = apply(Some(&a), &cm(json!({"a": "2", "b": "2"})), &ctx("bob", T1)).unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .data.a\n- .data.b"
    );
    assert_eq!(err.details.unwrap()["causes"].as_array().unwrap().len(), 2);
}

#[test]
fn conditions_merge_by_type_between_managers_on_the_status_subresource() {
    let obj = json!({"apiVersion": "x.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"a": 1}});
    let live = apply(None, &obj, &cr_ctx("user", T0, None)).unwrap();
    let status = |ty: &str, st: &str| json!({"apiVersion": "x.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"a": 99}, "status": {"conditions": [{"type": ty, "status": st}]}});
    let s1 = apply(
        Some(&live),
        &status("Ready", "False"),
        &cr_ctx("operator", T1, Some("status")),
    )
    .unwrap();
    assert_eq!(
        s1["spec"],
        json!({"a": 1}),
        "a status apply never touches spec"
    );
    let s2 = apply(
        Some(&s1),
        &status("Synced", "True"),
        &cr_ctx("syncer", T1, Some("status")),
    )
    .unwrap();
    assert_eq!(
        s2["status"]["conditions"],
        json!([{"type": "Ready", "status": "False"}, {"type": "Synced", "status": "True"}])
    );
    let op = entry(&s2, "operator");
    assert_eq!(op["subresource"], "status");
    assert_eq!(
        op["fieldsV1"],
        json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
    );
    // The operator moves on to a new condition set: Ready goes away, Synced stays.
    let s3 = apply(
        Some(&s2),
        &status("Complete", "True"),
        &cr_ctx("operator", T2, Some("status")),
    )
    .unwrap();
    assert_eq!(
        s3["status"]["conditions"],
        json!([{"type": "Synced", "status": "True"}, {"type": "Complete", "status": "True"}])
    );
}

#[test]
fn main_resource_apply_ignores_status_when_there_is_a_status_subresource() {
    let obj = json!({"apiVersion": "x.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"a": 1}, "status": {"phase": "X"}});
    let live = apply(None, &obj, &cr_ctx("user", T0, None)).unwrap();
    assert!(live.get("status").is_none());
    assert_eq!(
        entry(&live, "user")["fieldsV1"],
        json!({"f:spec": {"f:a": {}}})
    );
}

#[test]
fn status_apply_and_main_apply_by_one_manager_are_separate_entries() {
    let obj = json!({"apiVersion": "x.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"a": 1}, "status": {"phase": "A"}});
    let live = apply(None, &obj, &cr_ctx("op", T0, None)).unwrap();
    let s = apply(Some(&live), &obj, &cr_ctx("op", T1, Some("status"))).unwrap();
    let es = entries(&s);
    assert_eq!(es.len(), 2, "{s:#}");
    assert_eq!(s["status"], json!({"phase": "A"}));
    assert_eq!(s["spec"], json!({"a": 1}));
}

#[test]
fn null_in_the_config_removes_the_field_and_owns_it() {
    let a = apply(None, &cm(json!({"a": "1", "b": "2"})), &ctx("alice", T0)).unwrap();
    let mut c = ctx("bob", T1);
    c.force = true;
    let b = apply(Some(&a), &cm(json!({"b": null})), &c).unwrap();
    assert_eq!(b["data"], json!({"a": "1"}));
    assert_eq!(entry(&b, "bob")["fieldsV1"], json!({"f:data": {"f:b": {}}}));
    // Without force a null over another manager's value is a conflict, like upstream.
    let err = apply(Some(&a), &cm(json!({"a": null})), &ctx("bob", T1)).unwrap_err();
    assert_eq!(err.code, 409);
}

#[test]
fn an_empty_object_in_the_config_is_owned_as_a_leaf() {
    let obj =
        json!({"apiVersion": "x.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {}});
    let live = apply(None, &obj, &ctx("user", T0)).unwrap();
    assert_eq!(live["spec"], json!({}));
    assert_eq!(entry(&live, "user")["fieldsV1"], json!({"f:spec": {}}));
}

#[test]
fn objects_without_managed_fields_belong_to_before_first_apply() {
    let live = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "uid": "u"}, "spec": {"replicas": 1, "paused": true}});
    let err = apply(Some(&live), &deploy(3), &ctx("alice", T0)).unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
    );
    let mut c = ctx("alice", T0);
    c.force = true;
    let out = apply(Some(&live), &deploy(3), &c).unwrap();
    assert_eq!(
        entry(&out, "before-first-apply")["fieldsV1"],
        json!({"f:spec": {".": {}, "f:paused": {}}})
    );
}

#[test]
fn list_map_items_and_keys_for_builtin_containers_and_ports() {
    let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}});
    let obj = apply(None, &cfg, &ctx("kubectl", T0)).unwrap();
    assert_eq!(
        entry(&obj, "kubectl")["fieldsV1"],
        json!({"f:spec": {"f:selector": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
            ".": {}, "f:image": {}, "f:name": {},
            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
        }}}}}})
    );
    // A second container from another applier merges in; dropping ours removes only ours.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "s"}]}}}});
    let both = apply(Some(&obj), &other, &ctx("injector", T1)).unwrap();
    let names: Vec<&str> = both["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nginx", "sidecar"]);
    let mut cfg2 = cfg.clone();
    cfg2["spec"]["template"]["spec"]["containers"] = json!([]);
    let dropped = apply(Some(&both), &cfg2, &ctx("kubectl", T2)).unwrap();
    assert_eq!(
        dropped["spec"]["template"]["spec"]["containers"],
        json!([{"name": "sidecar", "image": "s"}])
    );
}

#[test]
fn invalid_configs_are_refused() {
    let mut cfg = cm(json!({}));
    cfg["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        apply(None, &cfg, &ctx("a", T0)).unwrap_err().message,
        "metadata.managedFields must be nil"
    );
    let dup = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "a"}, {"name": "a"}]}});
    let err = apply(None, &dup, &ctx("a", T0)).unwrap_err();
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        "failed to create typed patch object (ns/p; /v1, Kind=Pod): .spec.containers: duplicate entries for key [name=\"a\"]"
    );
}

#[test]
fn record_update_on_create_owns_everything_set() {
    let mut obj = json!({"apiVersion": "x.dev/v1", "kind": "Thing", "metadata": {"name": "t", "labels": {"a": "b"}}, "spec": {"x": 1}});
    record_update(None, &mut obj, "kubectl-create", None, T0);
    assert_eq!(
        entries(&obj),
        vec![
            json!({"manager": "kubectl-create", "operation": "Update", "apiVersion": "x.dev/v1", "time": T0, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:a": {}}}, "f:spec": {".": {}, "f:x": {}}}})
        ]
    );
}

#[test]
fn record_update_without_changes_keeps_managed_fields() {
    let mut obj = cm(json!({"a": "1"}));
    record_update(None, &mut obj, "creator", None, T0);
    let before = obj.clone();
    let mut same = obj.clone();
    record_update(Some(&before), &mut same, "editor", None, T1);
    assert_eq!(same, before);
}

#[test]
fn record_update_merges_into_the_managers_previous_entry_and_tracks_removals() {
    let mut obj = cm(json!({"a": "1", "b": "2"}));
    record_update(None, &mut obj, "creator", None, T0);
    let mut edited = obj.clone();
    edited["data"] = json!({"a": "1", "c": "3"});
    record_update(Some(&obj), &mut edited, "editor", None, T1);
    assert_eq!(
        entry(&edited, "creator")["fieldsV1"],
        json!({"f:data": {".": {}, "f:a": {}}})
    );
    assert_eq!(
        entry(&edited, "editor")["fieldsV1"],
        json!({"f:data": {"f:c": {}}})
    );
    let mut again = edited.clone();
    again["data"]["a"] = json!("5");
    record_update(Some(&edited), &mut again, "editor", None, T2);
    assert_eq!(
        entry(&again, "editor")["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:c": {}}})
    );
    assert_eq!(entry(&again, "editor")["time"], T2);
}

#[test]
fn record_update_on_status_subresource_is_a_separate_entry() {
    let mut obj = json!({"apiVersion": "x.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"x": 1}});
    record_update(None, &mut obj, "op", None, T0);
    let mut st = obj.clone();
    st["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    record_update_with(Some(&obj), &mut st, "op", Some("status"), T1, &crd_keys);
    let es = entries(&st);
    assert_eq!(es.len(), 2);
    let status_entry = es.iter().find(|e| e["subresource"] == "status").unwrap();
    assert_eq!(
        status_entry["fieldsV1"],
        json!({"f:status": {".": {}, "f:conditions": {".": {}, "k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
    );
}

#[test]
fn record_update_reset_and_untracked_objects() {
    let mut obj = cm(json!({"a": "1"}));
    record_update(None, &mut obj, "creator", None, T0);
    let mut reset = obj.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    record_update(Some(&obj), &mut reset, "x", None, T1);
    assert!(reset["metadata"].get("managedFields").is_none());
    // Once untracked, plain updates do not start tracking again.
    let mut later = reset.clone();
    later["data"]["a"] = json!("2");
    record_update(Some(&reset), &mut later, "x", None, T2);
    assert!(later["metadata"].get("managedFields").is_none());
}

#[test]
fn kubectl_server_side_apply_takes_over_from_client_side_apply() {
    let last = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{},"name":"d"},"spec":{"replicas":1}}"#;
    let mut live = deploy(1);
    live["metadata"]["annotations"] = json!({LAST_APPLIED: last});
    record_update(None, &mut live, "kubectl-client-side-apply", None, T0);
    let mut cfg = deploy(2);
    cfg["metadata"]["annotations"] = json!({"note": "x"});
    let out = apply(Some(&live), &cfg, &ctx("kubectl", T1)).unwrap();
    assert_eq!(out["spec"]["replicas"], json!(2));
    let annotation = out["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .unwrap();
    assert_eq!(
        annotation,
        "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"annotations\":{\"note\":\"x\"},\"name\":\"d\"},\"spec\":{\"replicas\":2}}\n"
    );
    // Another manager gets no such favour.
    assert_eq!(
        apply(Some(&live), &cfg, &ctx("helm", T1)).unwrap_err().code,
        409
    );
}

#[test]
fn managed_fields_are_sorted_apply_first_then_by_time() {
    let a = apply(None, &cm(json!({"a": "1"})), &ctx("zed", T1)).unwrap();
    let mut u = a.clone();
    u["data"]["b"] = json!("2");
    record_update(Some(&a), &mut u, "early", None, T0);
    let b = apply(Some(&u), &cm(json!({"c": "3"})), &ctx("amy", T2)).unwrap();
    let order: Vec<&str> = b["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["zed", "amy", "early"]);
}

#[test]
fn update_managers_are_capped() {
    let mut obj = cm(json!({}));
    record_update(None, &mut obj, "m0", None, T0);
    for i in 1..=12 {
        let mut next = obj.clone();
        next["data"][format!("k{i}")] = json!("v");
        record_update(
            Some(&obj),
            &mut next,
            &format!("m{i}"),
            None,
            &format!("2025-01-01T00:00:{i:02}Z"),
        );
        obj = next;
    }
    let es = entries(&obj);
    assert_eq!(es.len(), 10);
    assert!(es.iter().any(|e| e["manager"] == ANCIENT_CHANGES));
}
