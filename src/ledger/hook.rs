//! Where a request's purge meets the ledger: the request controller, about to record
//! `Purged=True`, appends the entry first (see `controller::effects`). If the append fails
//! the status is not written and the next pass plans `Purged=True` again; the entry's key is
//! a function of the recorded purge times, so the retry writes the same object once.

use std::collections::BTreeMap;

use crate::api::{
    DataSubjectRequestStatus, DataSystemSpec, IdentifierSet,
    conditions::{HasConditions, types},
    request::{Step, SystemPhase},
};

use super::{ENTRY_VERSION, IdentityHash, LedgerEntry, LedgerKey, LedgerSystem};

/// True when `new` records the purge and `old` did not: the moment to append.
pub fn purge_completing(
    old: Option<&DataSubjectRequestStatus>,
    new: &DataSubjectRequestStatus,
) -> bool {
    new.is_true(types::PURGED) && !old.is_some_and(|o| o.is_true(types::PURGED))
}

/// The request being purged, as the entry names it.
#[derive(Clone, Debug)]
pub struct PurgedRequest<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
}

/// The entry for a purge recorded in `status`: the first-party systems whose Purge succeeded,
/// each with the keyed hashes of the subject's identifiers of the kinds its data map matches
/// on (every identifier for a system without a data map). `None` when no first-party system
/// was purged (nothing a backup restore could bring back through us).
pub fn entry(
    request: &PurgedRequest,
    status: &DataSubjectRequestStatus,
    systems: &BTreeMap<String, DataSystemSpec>,
    subject: &IdentifierSet,
    key: &LedgerKey,
) -> Option<LedgerEntry> {
    let purged: Vec<_> = status
        .systems
        .iter()
        .filter(|e| {
            !e.third_party && e.step == Some(Step::Purge) && e.phase == SystemPhase::Succeeded
        })
        .collect();
    let recorded_at = purged
        .iter()
        .filter_map(|e| e.last_transition_time.as_ref().map(|t| t.0))
        .max()?;
    let subject_digest = status.subject_digest.clone()?;
    let mut out = Vec::new();
    for e in purged {
        let kinds: Option<Vec<_>> =
            systems
                .get(&e.name)
                .and_then(|s| s.data_map.as_ref())
                .map(|m| {
                    m.tables
                        .iter()
                        .flat_map(|t| t.identity.iter().map(|i| i.identifier.clone()))
                        .collect()
                });
        let mut identities: Vec<IdentityHash> = subject
            .iter()
            .filter(|(kind, _)| kinds.as_ref().is_none_or(|k| k.contains(kind)))
            .map(|(kind, value)| IdentityHash {
                hmac: key.hash(&kind, value),
                kind,
            })
            .collect();
        identities.sort();
        out.push(LedgerSystem {
            name: e.name.clone(),
            identities,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Some(LedgerEntry {
        version: ENTRY_VERSION.into(),
        recorded_at,
        namespace: request.namespace.to_string(),
        request: request.name.to_string(),
        request_uid: request.uid.map(str::to_string),
        subject: subject_digest,
        key_id: key.id(),
        systems: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(purged: bool) -> DataSubjectRequestStatus {
        serde_json::from_value(json!({
            "subjectDigest": format!("sha256:{}", "b".repeat(64)),
            "conditions": [{"type": "Purged", "status": if purged {"True"} else {"False"},
                "reason": "x", "message": "", "lastTransitionTime": "2024-06-20T10:00:00Z"}],
            "systems": [
                {"name": "crm", "step": "Purge", "phase": "Succeeded",
                 "lastTransitionTime": "2024-06-17T10:00:05Z"},
                {"name": "files", "step": "Purge", "phase": "Succeeded",
                 "lastTransitionTime": "2024-06-17T10:00:09Z"},
                {"name": "mailer", "thirdParty": true, "step": "Purge", "phase": "Succeeded",
                 "lastTransitionTime": "2024-06-18T00:00:00Z"}
            ]
        }))
        .unwrap()
    }

    fn systems() -> BTreeMap<String, DataSystemSpec> {
        let crm: DataSystemSpec = serde_json::from_value(json!({
            "connector": {"type": "SQL", "sql": {"driver": "postgres",
                "connectionSecretRef": {"name": "db", "key": "url"}}},
            "dataMap": {"tables": [{"name": "contacts",
                "identity": [{"column": "email", "identifier": "email"}]}]}
        }))
        .unwrap();
        let files: DataSystemSpec = serde_json::from_value(json!({
            "connector": {"type": "ObjectStorage", "objectStorage": {
                "url": "s3://b", "prefix": "users/{userId}/"}}
        }))
        .unwrap();
        [("crm".to_string(), crm), ("files".to_string(), files)].into()
    }

    fn jane() -> IdentifierSet {
        IdentifierSet {
            email: Some("Jane@Example.com".into()),
            user_id: Some("u-42".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_entry_is_deterministic_and_holds_no_identifier() {
        let key = LedgerKey::new(b"ledger-key-0123456789".to_vec()).unwrap();
        let req = PurgedRequest {
            namespace: "shop",
            name: "erase-42",
            uid: Some("uid-1"),
        };
        let e = entry(&req, &status(true), &systems(), &jane(), &key).unwrap();
        assert_eq!(
            e.key(),
            "ledger/2024/06/20240617T100009Z-shop-erase-42.json"
        );
        assert_eq!(
            e.systems
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["crm", "files"],
            "third parties purge on their side"
        );
        // crm matches on e-mail only; files has no data map and keeps every kind.
        assert_eq!(e.systems[0].identities.len(), 1);
        assert_eq!(
            e.systems[0].identities[0].hmac,
            key.hash(&crate::api::IdentifierKind::Email, "jane@example.com")
        );
        assert_eq!(e.systems[1].identities.len(), 2);
        let again = entry(&req, &status(true), &systems(), &jane(), &key).unwrap();
        assert_eq!(e, again);
        let text = serde_json::to_string(&e).unwrap().to_lowercase();
        assert!(!text.contains("jane") && !text.contains("u-42"), "{text}");
    }

    #[test]
    fn only_the_transition_to_purged_appends() {
        assert!(purge_completing(Some(&status(false)), &status(true)));
        assert!(purge_completing(None, &status(true)));
        assert!(!purge_completing(Some(&status(true)), &status(true)));
        assert!(!purge_completing(Some(&status(false)), &status(false)));
    }
}
