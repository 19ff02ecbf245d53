//! The `Ready` condition of a DataSystem: whether requests can use it as declared. Checked
//! where it can be without touching the system itself: the data map (names, relations, no
//! cycle) and the Secrets the connector needs. A wrong password or an unreachable database
//! shows in the first Job's result instead, with its reason.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;

use crate::Result;
use crate::api::conditions::{self, Status, types};
use crate::api::datasystem::{ConnectorType, DataSystemSpec};
use crate::api::subject::IdentifierSet;
use crate::worker::sql::Finder;

/// What is wrong with the spec alone, if anything: (reason, message).
pub fn spec_problem(spec: &DataSystemSpec) -> Option<(&'static str, String)> {
    let c = &spec.connector;
    if c.type_ == ConnectorType::Sql {
        let Some(map) = &spec.data_map else {
            return Some((
                "MissingDataMap",
                "an SQL connector needs spec.dataMap: which tables hold the subject's data".into(),
            ));
        };
        // The finder checks names, relations and cycles; the identifier is a placeholder.
        let probe = IdentifierSet {
            email: Some("probe@example.invalid".into()),
            ..Default::default()
        };
        if let Err(e) = Finder::new(map, &probe) {
            return Some(("InvalidDataMap", e.to_string()));
        }
    }
    None
}

/// The Secrets (name, key) the connector reads.
fn secrets(spec: &DataSystemSpec) -> Vec<(String, Option<String>)> {
    let c = &spec.connector;
    let mut out = Vec::new();
    if let Some(sql) = &c.sql {
        out.push((
            sql.connection_secret_ref.name.clone(),
            Some(sql.connection_secret_ref.key.clone()),
        ));
    }
    if let Some(http) = &c.http {
        out.push((
            http.hmac_secret_ref.name.clone(),
            Some(http.hmac_secret_ref.key.clone()),
        ));
        if let Some(auth) = &http.auth_secret_ref {
            out.push((auth.name.clone(), Some(auth.key.clone())));
        }
    }
    if let Some(objects) = &c.object_storage
        && let Some(creds) = &objects.credentials_secret_ref
    {
        out.push((creds.name.clone(), None));
    }
    out
}

/// The Ready condition for `spec` in `namespace`, as (status, reason, message).
pub async fn evaluate(
    client: &kube::Client,
    namespace: &str,
    spec: &DataSystemSpec,
) -> Result<(Status, &'static str, String)> {
    if let Some((reason, message)) = spec_problem(spec) {
        return Ok((Status::False, reason, message));
    }
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    for (name, key) in secrets(spec) {
        let Some(secret) = api.get_opt(&name).await? else {
            return Ok((
                Status::False,
                "SecretNotFound",
                format!("Secret {name} does not exist in namespace {namespace}"),
            ));
        };
        if let Some(key) = key {
            let has = secret.data.as_ref().is_some_and(|d| d.contains_key(&key))
                || secret
                    .string_data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(&key));
            if !has {
                return Ok((
                    Status::False,
                    "SecretKeyNotFound",
                    format!("Secret {name} has no key {key:?}"),
                ));
            }
        }
    }
    let tables = spec.data_map.as_ref().map_or(0, |m| m.tables.len());
    let message = match spec.connector.type_ {
        ConnectorType::Sql => format!("data map of {tables} table(s) is valid; Secrets present"),
        _ => "connector configured; Secrets present".to_string(),
    };
    Ok((Status::True, "Valid", message))
}

/// `conditions` with Ready set as evaluated; `None` when nothing changed.
pub fn updated(
    conditions: &[Condition],
    ready: (Status, &'static str, String),
    generation: Option<i64>,
    now: Timestamp,
) -> Option<Vec<Condition>> {
    let mut out = conditions.to_vec();
    let (status, reason, message) = ready;
    let changed = conditions::set(
        &mut out,
        types::READY,
        status,
        reason,
        &message,
        generation,
        now,
    );
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> DataSystemSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_cyclic_or_missing_data_map_is_explained() {
        let missing = spec(
            "connector: {type: SQL, sql: {driver: postgres, connectionSecretRef: {name: db, key: url}}}",
        );
        assert_eq!(spec_problem(&missing).unwrap().0, "MissingDataMap");
        let cyclic = spec(
            "connector: {type: SQL, sql: {driver: postgres, connectionSecretRef: {name: db, key: url}}}
dataMap:
  tables:
    - name: a
      identity: [{column: email, identifier: email}]
      relations: [{table: b, foreignKey: a_id}]
    - name: b
      relations: [{table: a, foreignKey: b_id}]
",
        );
        let (reason, message) = spec_problem(&cyclic).unwrap();
        assert_eq!(reason, "InvalidDataMap");
        assert!(message.contains("cycle"), "{message}");
        let fine = spec(
            "connector: {type: SQL, sql: {driver: postgres, connectionSecretRef: {name: db, key: url}}}
dataMap:
  tables:
    - name: a
      identity: [{column: email, identifier: email}]
",
        );
        assert_eq!(spec_problem(&fine), None);
    }
}
