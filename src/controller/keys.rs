//! Long-lived key Secrets (the salt of subject digests, the erasure ledger's HMAC key): read
//! once at start and, when the operator is allowed to, created at the first start.
//!
//! Creating them in the cluster is what makes them GitOps-safe: a key rendered by a tool
//! (`helm template`, Argo CD) would be a new key on every render, and a rotated key silently
//! stops duplicate detection and ledger replays from matching.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;

use super::MANAGER;
use crate::{Error, Result};

/// The bytes under `key` of Secret `namespace/name`; with `create`, a missing Secret is
/// created with 32 random bytes (hex text). `what` names the key in messages.
pub async fn get_or_create(
    client: &kube::Client,
    what: &str,
    namespace: &str,
    name: &str,
    key: &str,
    create: bool,
) -> Result<Vec<u8>> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(name).await? {
        Some(secret) => secret,
        None if create => create_secret(&api, what, name, key).await?,
        None => {
            return Err(Error::Config(format!(
                "the {what} Secret {namespace}/{name} does not exist; create it with a random key {key:?} (e.g. `openssl rand -hex 32`), or let the operator create it"
            )));
        }
    };
    secret
        .data
        .and_then(|mut d| d.remove(key))
        .map(|b| b.0)
        .ok_or_else(|| {
            Error::Config(format!(
                "the {what} Secret {namespace}/{name} has no key {key:?}"
            ))
        })
}

/// Creates the Secret; another replica may win the race, and then its Secret is the one.
async fn create_secret(api: &Api<Secret>, what: &str, name: &str, key: &str) -> Result<Secret> {
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
        .map_err(|e| Error::Config(format!("cannot read random bytes for the {what}: {e}")))?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": MANAGER},
            "annotations": {
                "privacy-operator.dev/note": format!("The {what}. Never change or delete it: duplicate detection and the erasure ledger depend on it; back it up.")
            }
        },
        "type": "Opaque",
        "stringData": {key: hex::encode(random)},
    }))?;
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) if created.data.is_some() => {
            tracing::info!(secret = name, "created the {what} Secret");
            Ok(created)
        }
        Ok(_) => {
            tracing::info!(secret = name, "created the {what} Secret");
            Ok(api.get(name).await?)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(api.get(name).await?),
        Err(e) => Err(e.into()),
    }
}
