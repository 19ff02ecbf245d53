use std::collections::BTreeMap;

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::TypeMeta;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::*;

/// Wraps a message like kube's protobuf serializer does.
fn envelope(api_version: &str, kind: &str, msg: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// What kubectl 1.33 sends as protobuf decodes to what kubectl 1.31 sends as JSON for the same
/// `kubectl create` command (minus `creationTimestamp: null`).
fn assert_same_as_json(pb: &[u8], json_body: &[u8]) {
    let decoded = decode(pb).unwrap();
    let mut expected: Value = serde_json::from_slice(json_body).unwrap();
    strip_nulls(&mut expected);
    assert_eq!(decoded, expected);
}

macro_rules! kubectl_fixture_test {
    ($name:ident, $file:literal) => {
        #[test]
        fn $name() {
            assert_same_as_json(
                include_bytes!(concat!("fixtures/", $file, ".kubectl-1.33.pb")),
                include_bytes!(concat!("fixtures/", $file, ".json")),
            );
        }
    };
}

kubectl_fixture_test!(kubectl_create_namespace, "namespace");
kubectl_fixture_test!(kubectl_create_secret_generic, "secret");
kubectl_fixture_test!(kubectl_create_configmap, "configmap");
kubectl_fixture_test!(kubectl_create_job, "job");
kubectl_fixture_test!(kubectl_create_deployment, "deployment");
kubectl_fixture_test!(kubectl_create_cronjob, "cronjob");
kubectl_fixture_test!(kubectl_create_serviceaccount, "serviceaccount");
kubectl_fixture_test!(kubectl_create_service, "service");

#[test]
fn secret_data_is_base64_and_key_order_matches_go() {
    let decoded = decode(include_bytes!("fixtures/secret.kubectl-1.33.pb")).unwrap();
    assert_eq!(
        decoded["data"],
        json!({"pw": "cEBzcw==", "user": "YWRtaW4="})
    );
    let keys: Vec<&String> = decoded.as_object().unwrap().keys().collect();
    assert_eq!(keys[..3], ["kind", "apiVersion", "metadata"]);
}

#[test]
fn object_meta_fully() {
    let secret = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: Some(String::new()),
            generate_name: Some("s-".into()),
            namespace: Some("ns".into()),
            labels: BTreeMap::from([("a".into(), "b".into())]),
            annotations: BTreeMap::from([("note".into(), String::new())]),
            finalizers: vec!["example.com/f".into()],
            owner_references: vec![meta::OwnerReference {
                api_version: Some("batch/v1".into()),
                kind: Some("Job".into()),
                name: Some("j".into()),
                uid: Some("u-1".into()),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }],
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            deletion_grace_period_seconds: Some(0),
            generation: Some(0),
            ..Default::default()
        }),
        immutable: Some(false),
        data: BTreeMap::from([("bin".into(), vec![0, 255, 1]), ("empty".into(), vec![])]),
        string_data: BTreeMap::new(),
        r#type: Some("Opaque".into()),
    };
    let v = decode(&envelope("v1", "Secret", &secret)).unwrap();
    assert_eq!(
        v,
        json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {
                "generateName": "s-", "namespace": "ns",
                "creationTimestamp": "2023-11-14T22:13:20Z", "deletionGracePeriodSeconds": 0,
                "labels": {"a": "b"}, "annotations": {"note": ""},
                "ownerReferences": [{"kind": "Job", "name": "j", "uid": "u-1", "apiVersion": "batch/v1", "controller": true, "blockOwnerDeletion": false}],
                "finalizers": ["example.com/f"]
            },
            "immutable": false,
            "data": {"bin": "AP8B", "empty": ""},
            "type": "Opaque"
        })
    );
}

#[test]
fn pod_spec_with_env_volumes_resources_probes_and_security_context() {
    let container = core::Container {
        name: Some("app".into()),
        image: Some("busybox".into()),
        args: vec!["--x".into()],
        ports: vec![core::ContainerPort {
            name: Some("http".into()),
            container_port: Some(8080),
            protocol: Some("TCP".into()),
            host_port: Some(0),
            ..Default::default()
        }],
        env: vec![
            core::EnvVar {
                name: Some("A".into()),
                value: Some("1".into()),
                value_from: None,
            },
            core::EnvVar {
                name: Some("S".into()),
                value: Some(String::new()),
                value_from: Some(core::EnvVarSource {
                    secret_key_ref: Some(core::SecretKeySelector {
                        local_object_reference: Some(core::LocalObjectReference {
                            name: Some("creds".into()),
                        }),
                        key: Some("pw".into()),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            },
        ],
        env_from: vec![core::EnvFromSource {
            config_map_ref: Some(core::ConfigMapEnvSource {
                local_object_reference: Some(core::LocalObjectReference {
                    name: Some("cm".into()),
                }),
                optional: None,
            }),
            ..Default::default()
        }],
        resources: Some(core::ResourceRequirements {
            limits: BTreeMap::from([(
                "memory".into(),
                Quantity {
                    string: Some("128Mi".into()),
                },
            )]),
            requests: BTreeMap::from([(
                "cpu".into(),
                Quantity {
                    string: Some("100m".into()),
                },
            )]),
            ..Default::default()
        }),
        volume_mounts: vec![core::VolumeMount {
            name: Some("data".into()),
            mount_path: Some("/data".into()),
            read_only: Some(false),
            ..Default::default()
        }],
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: Some("/healthz".into()),
                    port: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: Some("http".into()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        security_context: Some(core::SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            run_as_user: Some(1000),
            capabilities: Some(core::Capabilities {
                drop: vec!["ALL".into()],
                add: vec![],
            }),
            ..Default::default()
        }),
        stdin: Some(false),
        ..Default::default()
    };
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: Some("p".into()),
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            service_account_name: Some("sa".into()),
            host_network: Some(false),
            volumes: vec![
                core::Volume {
                    name: Some("data".into()),
                    volume_source: Some(core::VolumeSource {
                        empty_dir: Some(core::EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }),
                },
                core::Volume {
                    name: Some("task".into()),
                    volume_source: Some(core::VolumeSource {
                        secret: Some(core::SecretVolumeSource {
                            secret_name: Some("task".into()),
                            default_mode: Some(0o400),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
            ],
            ..Default::default()
        }),
        status: Some(core::PodStatus::default()),
    };
    let v = decode(&envelope("v1", "Pod", &pod)).unwrap();
    assert_eq!(
        v["spec"],
        json!({
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "task", "secret": {"secretName": "task", "defaultMode": 256}}],
            "containers": [{
                "name": "app", "image": "busybox", "args": ["--x"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "envFrom": [{"configMapRef": {"name": "cm"}}],
                "env": [{"name": "A", "value": "1"}, {"name": "S", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw", "optional": false}}}],
                "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
                "securityContext": {"capabilities": {"drop": ["ALL"]}, "runAsUser": 1000, "runAsNonRoot": true, "allowPrivilegeEscalation": false}
            }],
            "restartPolicy": "Never",
            "serviceAccountName": "sa"
        })
    );
    assert_eq!(v["status"], json!({}));
}

#[test]
fn services_use_irregular_json_names() {
    let svc = core::Service {
        metadata: Some(meta::ObjectMeta {
            name: Some("s".into()),
            ..Default::default()
        }),
        spec: Some(core::ServiceSpec {
            cluster_ip: Some("None".into()),
            cluster_ips: vec!["None".into()],
            ..Default::default()
        }),
        status: None,
    };
    let v = decode(&envelope("v1", "Service", &svc)).unwrap();
    assert_eq!(
        v["spec"],
        json!({"clusterIP": "None", "clusterIPs": ["None"]})
    );
}

#[test]
fn leases_and_events_carry_micro_times() {
    let lease = k8s_pb::api::coordination::v1::Lease {
        metadata: Some(meta::ObjectMeta {
            name: Some("leader".into()),
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
            holder_identity: Some("pod-1".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(1_500),
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let v = decode(&envelope("coordination.k8s.io/v1", "Lease", &lease)).unwrap();
    assert_eq!(
        v["spec"],
        json!({"holderIdentity": "pod-1", "leaseDurationSeconds": 15, "renewTime": "2023-11-14T22:13:20.000001Z", "leaseTransitions": 0})
    );

    let event = k8s_pb::api::events::v1::Event {
        metadata: Some(meta::ObjectMeta {
            name: Some("e".into()),
            ..Default::default()
        }),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(0),
        }),
        reporting_controller: Some("privacy-operator".into()),
        reason: Some("Accepted".into()),
        regarding: Some(core::ObjectReference {
            kind: Some("DataSubjectRequest".into()),
            name: Some("r".into()),
            ..Default::default()
        }),
        r#type: Some("Normal".into()),
        ..Default::default()
    };
    let v = decode(&envelope("events.k8s.io/v1", "Event", &event)).unwrap();
    assert_eq!(v["eventTime"], json!("2023-11-14T22:13:20.000000Z"));
    assert_eq!(
        v["regarding"],
        json!({"kind": "DataSubjectRequest", "name": "r"})
    );
    assert_eq!(v["reportingController"], json!("privacy-operator"));
}

#[test]
fn unsupported_kinds_are_415() {
    let err = decode(&envelope(
        "rbac.authorization.k8s.io/v1",
        "Role",
        &core::Namespace::default(),
    ))
    .unwrap_err();
    assert_eq!(err.code, 415);
    assert_eq!(err.reason, "UnsupportedMediaType");
    assert!(
        err.message
            .contains("\"rbac.authorization.k8s.io/v1\" \"Role\""),
        "{}",
        err.message
    );
    assert!(supports("v1", "Namespace"));
    assert!(!supports("v1", "Node"));
}

#[test]
fn malformed_bodies_are_400() {
    assert_eq!(decode(b"{\"kind\":\"Namespace\"}").unwrap_err().code, 400);
    assert_eq!(decode(b"k8s\0\xff\xff\xff").unwrap_err().code, 400);
    let mut bad_raw = MAGIC.to_vec();
    bad_raw.extend(
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Namespace".into()),
            }),
            raw: Some(vec![0x0a, 0xff]),
            content_encoding: None,
            content_type: None,
        }
        .encode_to_vec(),
    );
    assert_eq!(decode(&bad_raw).unwrap_err().code, 400);
}

#[test]
fn delete_options_decode_under_any_group_version() {
    let opts = meta::DeleteOptions {
        propagation_policy: Some("Foreground".into()),
        preconditions: Some(meta::Preconditions {
            uid: Some("u-1".into()),
            resource_version: None,
        }),
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    for gv in ["v1", "apps/v1"] {
        let v = decode(&envelope(gv, "DeleteOptions", &opts)).unwrap();
        assert_eq!(v["kind"], "DeleteOptions");
        assert_eq!(v["propagationPolicy"], "Foreground");
        assert_eq!(v["preconditions"]["uid"], "u-1");
        assert_eq!(v["dryRun"], json!(["All"]));
    }
}
