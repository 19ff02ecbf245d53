//! OpenAPI v3 schemas of built-in kinds, generated from k8s-openapi's `schemars` support,
//! named like kube-apiserver names them (`io.k8s.api.core.v1.Secret`).

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value};

use k8s_openapi::api::{
    admissionregistration, apps, batch, coordination, core, events, networking, policy, rbac,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

/// A generator writing definitions to `#/components/schemas/...`, with `$ref` siblings moved
/// under `allOf` as the apiserver publishes them.
pub fn generator() -> SchemaGenerator {
    SchemaSettings::openapi3().into_generator()
}

fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// Adds the schema of a built-in kind (and everything it references) to `generator` and
/// returns its definition name, or `None` for kinds without a generated schema.
pub fn add_builtin_kind(
    generator: &mut SchemaGenerator,
    group: &str,
    version: &str,
    kind: &str,
) -> Option<String> {
    Some(match (group, version, kind) {
        ("", "v1", "Namespace") => add::<core::v1::Namespace>(generator),
        ("", "v1", "Secret") => add::<core::v1::Secret>(generator),
        ("", "v1", "ConfigMap") => add::<core::v1::ConfigMap>(generator),
        ("", "v1", "Event") => add::<core::v1::Event>(generator),
        ("", "v1", "ServiceAccount") => add::<core::v1::ServiceAccount>(generator),
        ("", "v1", "Service") => add::<core::v1::Service>(generator),
        ("", "v1", "Pod") => add::<core::v1::Pod>(generator),
        ("", "v1", "PersistentVolumeClaim") => add::<core::v1::PersistentVolumeClaim>(generator),
        ("events.k8s.io", "v1", "Event") => add::<events::v1::Event>(generator),
        ("batch", "v1", "Job") => add::<batch::v1::Job>(generator),
        ("batch", "v1", "CronJob") => add::<batch::v1::CronJob>(generator),
        ("coordination.k8s.io", "v1", "Lease") => add::<coordination::v1::Lease>(generator),
        ("rbac.authorization.k8s.io", "v1", "Role") => add::<rbac::v1::Role>(generator),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => {
            add::<rbac::v1::RoleBinding>(generator)
        }
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => {
            add::<rbac::v1::ClusterRole>(generator)
        }
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => {
            add::<rbac::v1::ClusterRoleBinding>(generator)
        }
        ("apps", "v1", "Deployment") => add::<apps::v1::Deployment>(generator),
        ("policy", "v1", "PodDisruptionBudget") => {
            add::<policy::v1::PodDisruptionBudget>(generator)
        }
        ("networking.k8s.io", "v1", "NetworkPolicy") => {
            add::<networking::v1::NetworkPolicy>(generator)
        }
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy") => {
            add::<admissionregistration::v1::ValidatingAdmissionPolicy>(generator)
        }
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding") => {
            add::<admissionregistration::v1::ValidatingAdmissionPolicyBinding>(generator)
        }
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => {
            add::<apiext::CustomResourceDefinition>(generator)
        }
        _ => return None,
    })
}

/// The metav1 types every group-version document references: ObjectMeta, ListMeta, Status,
/// DeleteOptions and Patch.
pub fn add_common(generator: &mut SchemaGenerator) {
    add::<meta::ObjectMeta>(generator);
    add::<meta::ListMeta>(generator);
    add::<meta::Status>(generator);
    add::<meta::DeleteOptions>(generator);
    add::<meta::Patch>(generator);
}

/// Takes the generated definitions, fixing what k8s-openapi's Rust types add that the
/// apiserver does not publish: `metadata` is never a required field.
pub fn take_definitions(generator: &mut SchemaGenerator) -> Map<String, Value> {
    let mut defs = generator.take_definitions(true);
    // kubectl's client-side apply computes strategic merge patches from these extensions.
    crate::patch_meta::annotate_openapi_definitions(&mut defs);
    for def in defs.values_mut() {
        if let Some(Value::Array(req)) = def.get_mut("required") {
            req.retain(|r| r != "metadata");
            if req.is_empty()
                && let Some(obj) = def.as_object_mut()
            {
                obj.remove("required");
            }
        }
    }
    defs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_schema_references_object_meta() {
        let mut g = generator();
        let name = add_builtin_kind(&mut g, "", "v1", "Secret").unwrap();
        assert_eq!(name, "io.k8s.api.core.v1.Secret");
        let defs = take_definitions(&mut g);
        let secret = &defs["io.k8s.api.core.v1.Secret"];
        assert_eq!(
            secret["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(secret.get("required").is_none());
        assert!(defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(add_builtin_kind(&mut g, "example.com", "v1", "Nope").is_none());
    }
}
