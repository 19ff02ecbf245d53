//! Signatures and idempotency keys of webhook calls.
//!
//! The signature follows the scheme of Stripe's and GitHub's webhooks so processors can reuse
//! their verification code: `X-Privacy-Operator-Signature: t=<unix seconds>,v1=<hex>` where
//! `<hex>` is HMAC-SHA256, keyed with the shared secret, over `<t>.<body>` (the exact bytes
//! sent; empty for a status poll).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::plan::jobs::JobStep;
use crate::worker::task::RequestRef;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Privacy-Operator-Signature";
/// Header carrying the idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// How far a signature's timestamp may be from the processor's clock before it should refuse
/// the call as a replay (what processors are told to use; see the webhook contract).
pub const REPLAY_TOLERANCE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// The header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any size");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is malformed: expected t=<unix seconds>,v1=<hex>")]
    Malformed,
    #[error("signature timestamp is {0}s away from now, outside the replay window")]
    Stale(i64),
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// Checks a signature header as a processor should: the timestamp within `tolerance_secs` of
/// `now` (unix seconds), and one of the `v1` signatures (several are allowed while a secret is
/// rotated) matching, compared in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => {
                candidates.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?)
            }
            // Unknown schemes are skipped, so a future v2 does not break v1 verifiers.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = now.saturating_sub(t);
    if skew.abs() > tolerance_secs {
        return Err(SignatureError::Stale(skew));
    }
    for c in candidates {
        let mut m =
            <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any size");
        m.update(t.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        if m.verify_slice(&c).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// The idempotency key of one step of one request on one system: the same for every retry
/// and every rerun Job of that step (so a processor performs the work once), different for
/// another request, system or step. Derived from the request's uid when known, so a new
/// request that reuses an old name is new work. Holds no personal data.
pub fn idempotency_key(request: &RequestRef, system: &str, step: JobStep) -> String {
    let who = match &request.uid {
        Some(uid) => format!("uid:{uid}"),
        None => format!("name:{}/{}", request.namespace, request.name),
    };
    let mut h = Sha256::new();
    // NUL separators: none of the parts can contain one, so the input is unambiguous.
    for part in [
        "privacy-operator.dev/webhook/v1",
        &who,
        system,
        step.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("po1-{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";

    #[test]
    fn signs_like_stripe_and_verifies() {
        let body = br#"{"operation":"erase"}"#;
        let header = sign(SECRET, 1_700_000_000, body);
        // Independently computed: HMAC-SHA256("whsec_test", "1700000000.{...}").
        let mut m = <HmacSha256 as Mac>::new_from_slice(SECRET).unwrap();
        m.update(b"1700000000.{\"operation\":\"erase\"}");
        let expected = hex::encode(m.finalize().into_bytes());
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
        assert_eq!(verify(SECRET, &header, body, 1_700_000_100, 300), Ok(()));
    }

    #[test]
    fn refuses_tampering_replays_and_garbage() {
        let body = b"{}";
        let header = sign(SECRET, 1_700_000_000, body);
        assert_eq!(
            verify(SECRET, &header, b"{ }", 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &header, body, 1_700_000_301, 300),
            Err(SignatureError::Stale(301))
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert!(verify(SECRET, bad, body, 1, 300).is_err(), "{bad}");
        }
        // A second signature (secret rotation) and unknown schemes are fine.
        let rotated = format!("{header},v0=abc,v1=00");
        assert_eq!(verify(SECRET, &rotated, body, 1_700_000_000, 300), Ok(()));
    }

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        let digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        let mut r = RequestRef {
            namespace: "shop".into(),
            name: "erase-42".into(),
            digest,
            uid: Some("7f0c".into()),
        };
        let k = idempotency_key(&r, "mailer", JobStep::ThirdPartyPurge);
        assert_eq!(k, idempotency_key(&r, "mailer", JobStep::ThirdPartyPurge));
        assert!(k.starts_with("po1-") && k.len() == 68, "{k}");
        assert_ne!(k, idempotency_key(&r, "mailer", JobStep::Export));
        assert_ne!(k, idempotency_key(&r, "crm", JobStep::ThirdPartyPurge));
        let by_name = {
            r.uid = None;
            idempotency_key(&r, "mailer", JobStep::ThirdPartyPurge)
        };
        assert_ne!(k, by_name);
        r.uid = Some("9a1d".into());
        assert_ne!(k, idempotency_key(&r, "mailer", JobStep::ThirdPartyPurge));
    }
}
