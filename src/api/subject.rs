//! The data subject: identifiers (inline or from a Secret), their normal form, and the salted
//! digest that is the only form in which a subject may appear in status, events, logs or metrics.
//!
//! Identifier values are personal data. None of the types here prints them: `Debug` shows which
//! kinds are present and `<redacted>` in place of each value.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::refs::SecretReference;

const REDACTED: &str = "<redacted>";
/// Most external id kinds a subject may carry; keeps CEL cost and Secret parsing bounded.
pub const MAX_EXTERNAL_IDS: usize = 16;
/// Longest identifier value accepted (an e-mail address is at most 320 characters).
pub const MAX_IDENTIFIER_LEN: usize = 320;
/// Name of an external id: letters, digits, `_` and `-`, starting with a letter.
pub const EXTERNAL_ID_NAME: &str = "^[A-Za-z][A-Za-z0-9_-]{0,62}$";

/// Who the request is about. Give exactly one of `identifiers` (inline) or `secretRef`
/// (recommended for GitOps: the repository then holds no personal data).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.identifiers) != has(self.secretRef)",
        "message": "give exactly one of subject.identifiers (inline, e.g. identifiers: {email: jane@example.com}) or subject.secretRef (a Secret whose keys are identifier kinds such as email, userId)"
    }
]))]
pub struct Subject {
    /// The subject's identifiers, inline. Anyone who can read this request can read them;
    /// prefer `secretRef` when requests are stored in Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifiers: Option<IdentifierSet>,
    /// A Secret in this namespace holding the identifiers, one per key: `email`, `phone`,
    /// `userId`, `customerId`, or `externalIds.<name>` (e.g. `externalIds.stripe`). Other keys
    /// are an error. The operator reads the Secret once, when it accepts the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,
}

/// The identifiers by which systems know the subject. At least one is required; every one given
/// is used to find the subject's records (a row matching any of them belongs to the subject).
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.email) || has(self.phone) || has(self.userId) || has(self.customerId) || (has(self.externalIds) && size(self.externalIds) > 0)",
        "message": "give at least one identifier: email, phone, userId, customerId or externalIds.<name>"
    }
]))]
pub struct IdentifierSet {
    /// E-mail address. Compared case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 320), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub email: Option<String>,
    /// Phone number, ideally in E.164 form (`+4915112345678`); spaces, dots, dashes and
    /// parentheses are ignored when matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 32),
        regex(pattern = r"^\+?[0-9][0-9 ().-]*[0-9]$")
    )]
    pub phone: Option<String>,
    /// The subject's user or account id in your own product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub user_id: Option<String>,
    /// The subject's customer number (billing, CRM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub customer_id: Option<String>,
    /// Ids issued by other systems, each under a name you choose and reuse in DataSystem data
    /// maps as `externalIds.<name>` (e.g. `{name: stripe, value: cus_123}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub external_ids: Vec<ExternalId>,
}

/// One id issued by another system.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, JsonSchema)]
pub struct ExternalId {
    /// Name of the issuing system as used in data maps: a letter, then letters, digits, `_` or
    /// `-`, e.g. `stripe` or `zendesk-user`.
    #[schemars(length(min = 1, max = 63), regex(pattern = EXTERNAL_ID_NAME))]
    pub name: String,
    /// The id the subject has in that system.
    #[schemars(length(min = 1, max = 256))]
    pub value: String,
}

impl fmt::Debug for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ExternalId {{ name: {:?}, value: {REDACTED} }}",
            self.name
        )
    }
}

/// Which identifier a column or prefix placeholder holds.
///
/// Written as `email`, `phone`, `userId`, `customerId` or `externalIds.<name>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum IdentifierKind {
    Email,
    Phone,
    UserId,
    CustomerId,
    External(String),
}

/// Why identifiers could not be read or are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error(
        "unknown identifier kind {0:?}: use email, phone, userId, customerId or externalIds.<name>"
    )]
    UnknownKind(String),
    #[error("identifier {0} is not valid UTF-8")]
    NotUtf8(String),
    #[error("identifier {0} is empty")]
    Empty(String),
    #[error("identifier {kind} is longer than {max} characters")]
    TooLong { kind: String, max: usize },
    #[error(
        "no identifiers given: the subject needs at least one of email, phone, userId, customerId or externalIds.<name>"
    )]
    NoIdentifiers,
    #[error("more than {MAX_EXTERNAL_IDS} external ids")]
    TooManyExternalIds,
}

impl IdentifierKind {
    /// The pattern of a kind name, for CRD schemas.
    pub const PATTERN: &'static str =
        r"^(email|phone|userId|customerId|externalIds\.[A-Za-z][A-Za-z0-9_-]{0,62})$";

    /// Normal form of a value of this kind, used for matching and hashing: e-mail addresses are
    /// trimmed and lower-cased, phone numbers keep only a leading `+` and digits, other ids are
    /// trimmed (ids are case-sensitive).
    pub fn normalise(&self, value: &str) -> String {
        let value = value.trim();
        match self {
            IdentifierKind::Email => value.to_lowercase(),
            IdentifierKind::Phone => {
                let plus = value.starts_with('+');
                let digits: String = value.chars().filter(char::is_ascii_digit).collect();
                if plus { format!("+{digits}") } else { digits }
            }
            _ => value.to_string(),
        }
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentifierKind::Email => f.write_str("email"),
            IdentifierKind::Phone => f.write_str("phone"),
            IdentifierKind::UserId => f.write_str("userId"),
            IdentifierKind::CustomerId => f.write_str("customerId"),
            IdentifierKind::External(name) => write!(f, "externalIds.{name}"),
        }
    }
}

fn valid_external_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl FromStr for IdentifierKind {
    type Err = SubjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "email" => IdentifierKind::Email,
            "phone" => IdentifierKind::Phone,
            "userId" => IdentifierKind::UserId,
            "customerId" => IdentifierKind::CustomerId,
            other => match other.strip_prefix("externalIds.") {
                Some(name) if valid_external_name(name) => IdentifierKind::External(name.into()),
                _ => return Err(SubjectError::UnknownKind(s.chars().take(80).collect())),
            },
        })
    }
}

impl Serialize for IdentifierKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IdentifierKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Cow::<str>::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for IdentifierKind {
    fn schema_name() -> Cow<'static, str> {
        "IdentifierKind".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 76,
            "pattern": Self::PATTERN,
        })
    }
}

impl IdentifierSet {
    /// Every identifier with its kind, in a stable order (the order of [`IdentifierKind`]).
    pub fn iter(&self) -> impl Iterator<Item = (IdentifierKind, &str)> {
        let fixed = [
            (IdentifierKind::Email, self.email.as_deref()),
            (IdentifierKind::Phone, self.phone.as_deref()),
            (IdentifierKind::UserId, self.user_id.as_deref()),
            (IdentifierKind::CustomerId, self.customer_id.as_deref()),
        ];
        fixed
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .chain(
                self.external_ids
                    .iter()
                    .map(|e| (IdentifierKind::External(e.name.clone()), e.value.as_str())),
            )
    }

    /// The value for one kind, if given.
    pub fn get(&self, kind: &IdentifierKind) -> Option<&str> {
        match kind {
            IdentifierKind::Email => self.email.as_deref(),
            IdentifierKind::Phone => self.phone.as_deref(),
            IdentifierKind::UserId => self.user_id.as_deref(),
            IdentifierKind::CustomerId => self.customer_id.as_deref(),
            IdentifierKind::External(name) => self
                .external_ids
                .iter()
                .find(|e| &e.name == name)
                .map(|e| e.value.as_str()),
        }
    }

    /// True when no identifier is given.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Sets one identifier (replacing a previous value of the same kind).
    pub fn insert(&mut self, kind: IdentifierKind, value: String) {
        match kind {
            IdentifierKind::Email => self.email = Some(value),
            IdentifierKind::Phone => self.phone = Some(value),
            IdentifierKind::UserId => self.user_id = Some(value),
            IdentifierKind::CustomerId => self.customer_id = Some(value),
            IdentifierKind::External(name) => {
                match self.external_ids.iter_mut().find(|e| e.name == name) {
                    Some(e) => e.value = value,
                    None => self.external_ids.push(ExternalId { name, value }),
                }
            }
        }
    }

    /// Reads identifiers from a Secret's `data` (keys are identifier kinds, see
    /// [`Subject::secret_ref`]). Unknown keys are an error so that a typo (`emial`) does not
    /// silently narrow the search.
    pub fn from_secret_data<'a, I>(data: I) -> Result<Self, SubjectError>
    where
        I: IntoIterator<Item = (&'a String, &'a [u8])>,
    {
        let mut set = IdentifierSet::default();
        for (key, bytes) in data {
            let kind: IdentifierKind = key.parse()?;
            let value = std::str::from_utf8(bytes)
                .map_err(|_| SubjectError::NotUtf8(kind.to_string()))?
                .trim();
            if value.is_empty() {
                return Err(SubjectError::Empty(kind.to_string()));
            }
            if value.chars().count() > MAX_IDENTIFIER_LEN {
                return Err(SubjectError::TooLong {
                    kind: kind.to_string(),
                    max: MAX_IDENTIFIER_LEN,
                });
            }
            set.insert(kind, value.to_string());
        }
        if set.external_ids.len() > MAX_EXTERNAL_IDS {
            return Err(SubjectError::TooManyExternalIds);
        }
        if set.is_empty() {
            return Err(SubjectError::NoIdentifiers);
        }
        Ok(set)
    }

    /// Salted SHA-256 over all normalised identifiers. The same subject named by the same
    /// identifiers (in any spelling that normalises alike) always gives the same digest for a
    /// given salt; without the salt the digest cannot be brute-forced from a list of e-mails.
    pub fn digest(&self, salt: &[u8]) -> SubjectDigest {
        let mut parts: Vec<(IdentifierKind, String)> = self
            .iter()
            .map(|(kind, value)| {
                let normal = kind.normalise(value);
                (kind, normal)
            })
            .collect();
        // External ids are a list: sort so that their order in the manifest does not matter.
        parts.sort();
        let mut h = salted(salt);
        for (kind, value) in parts {
            feed(&mut h, kind.to_string().as_bytes());
            feed(&mut h, value.as_bytes());
        }
        SubjectDigest::from_hasher(h)
    }

    /// One salted digest per identifier, so that a row holding only one of them (a ticket with
    /// just the e-mail) can be matched without storing the identifier in clear.
    pub fn identifier_digests(&self, salt: &[u8]) -> Vec<(IdentifierKind, SubjectDigest)> {
        self.iter()
            .map(|(kind, value)| {
                let digest = identifier_digest(&kind, value, salt);
                (kind, digest)
            })
            .collect()
    }
}

/// Salted SHA-256 of one identifier value (normalised for its kind).
pub fn identifier_digest(kind: &IdentifierKind, value: &str, salt: &[u8]) -> SubjectDigest {
    let mut h = salted(salt);
    feed(&mut h, kind.to_string().as_bytes());
    feed(&mut h, kind.normalise(value).as_bytes());
    SubjectDigest::from_hasher(h)
}

fn salted(salt: &[u8]) -> Sha256 {
    let mut h = Sha256::new();
    h.update(b"privacy-operator.dev/subject/v1\0");
    feed(&mut h, salt);
    h
}

// Length-prefixing every part keeps the encoding unambiguous ("ab"+"c" differs from "a"+"bc").
fn feed(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

impl fmt::Debug for IdentifierSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("IdentifierSet");
        for (kind, _) in self.iter() {
            match kind {
                IdentifierKind::External(_) => {}
                other => {
                    s.field(&other.to_string(), &format_args!("{REDACTED}"));
                }
            }
        }
        if !self.external_ids.is_empty() {
            let names: Vec<&str> = self.external_ids.iter().map(|e| e.name.as_str()).collect();
            s.field(
                "externalIds",
                &format_args!("{names:?} (values {REDACTED})"),
            );
        }
        s.finish()
    }
}

/// A salted SHA-256 digest of a subject's identifiers, written `sha256:<64 hex digits>`.
/// Safe to put in status, events, logs, metrics labels and the erasure ledger.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SubjectDigest(String);

impl SubjectDigest {
    /// The pattern of a digest, for CRD schemas.
    pub const PATTERN: &'static str = "^sha256:[0-9a-f]{64}$";

    fn from_hasher(h: Sha256) -> Self {
        SubjectDigest(format!("sha256:{}", hex::encode(h.finalize())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first hex digits, for names and labels that have length limits (63 characters).
    pub fn short(&self) -> &str {
        &self.0["sha256:".len().."sha256:".len() + 16]
    }
}

impl fmt::Display for SubjectDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SubjectDigest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("sha256:") {
            Some(h)
                if h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(SubjectDigest(s.to_string()))
            }
            _ => Err(format!(
                "invalid subject digest {:?}: expected sha256: followed by 64 lower-case hex digits",
                s.chars().take(80).collect::<String>()
            )),
        }
    }
}

impl Serialize for SubjectDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SubjectDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Cow::<str>::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for SubjectDigest {
    fn schema_name() -> Cow<'static, str> {
        "SubjectDigest".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 71,
            "pattern": Self::PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn jane() -> IdentifierSet {
        IdentifierSet {
            email: Some("Jane.Doe@Example.com ".into()),
            phone: Some("+49 (151) 123-45678".into()),
            user_id: Some("u-42".into()),
            customer_id: None,
            external_ids: vec![ExternalId {
                name: "stripe".into(),
                value: "cus_9".into(),
            }],
        }
    }

    #[test]
    fn debug_never_prints_values() {
        let s = Subject {
            identifiers: Some(jane()),
            secret_ref: None,
        };
        let out = format!("{s:?} {:#?}", jane());
        for secret in ["Jane", "jane", "151", "u-42", "cus_9"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.contains("email") && out.contains("stripe") && out.contains(REDACTED));
    }

    #[test]
    fn digest_is_stable_over_spelling_and_salted() {
        let mut other = jane();
        other.email = Some("jane.doe@example.COM".into());
        other.phone = Some("+4915112345678".into());
        assert_eq!(jane().digest(b"salt"), other.digest(b"salt"));
        assert_ne!(jane().digest(b"salt"), jane().digest(b"pepper"));
        other.user_id = Some("U-42".into());
        assert_ne!(
            jane().digest(b"salt"),
            other.digest(b"salt"),
            "ids are case-sensitive"
        );
        let d = jane().digest(b"salt");
        assert!(d.as_str().parse::<SubjectDigest>().is_ok());
        assert_eq!(d.short().len(), 16);
        // Known answer, so an accidental change of the encoding (which would break duplicate
        // detection and ledger replay across upgrades) fails loudly.
        let only_email = IdentifierSet {
            email: Some("a@b.c".into()),
            ..Default::default()
        };
        assert_eq!(
            only_email.digest(b"s").as_str(),
            "sha256:".to_string()
                + &hex::encode({
                    let mut h = Sha256::new();
                    h.update(b"privacy-operator.dev/subject/v1\0");
                    for part in [&b"s"[..], b"email", b"a@b.c"] {
                        h.update((part.len() as u64).to_be_bytes());
                        h.update(part);
                    }
                    h.finalize()
                })
        );
    }

    #[test]
    fn per_identifier_digests_match_single_digest() {
        let digests = jane().identifier_digests(b"k");
        assert_eq!(digests.len(), 4);
        assert_eq!(
            digests[0].1,
            identifier_digest(&IdentifierKind::Email, "jane.doe@example.com", b"k")
        );
    }

    #[test]
    fn kinds_parse_and_print() {
        for k in [
            "email",
            "phone",
            "userId",
            "customerId",
            "externalIds.stripe",
        ] {
            assert_eq!(k.parse::<IdentifierKind>().unwrap().to_string(), k);
        }
        for bad in ["mail", "externalIds.", "externalIds.9x", "UserId"] {
            assert!(bad.parse::<IdentifierKind>().is_err(), "{bad}");
        }
        let re = regex::Regex::new(IdentifierKind::PATTERN).unwrap();
        assert!(re.is_match("externalIds.zendesk-user") && !re.is_match("externalIds.9x"));
    }

    #[test]
    fn secret_data_is_read_strictly() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("email".to_string(), b"jane@example.com\n".to_vec()),
            ("externalIds.stripe".to_string(), b"cus_9".to_vec()),
        ]
        .into();
        let set =
            IdentifierSet::from_secret_data(data.iter().map(|(k, v)| (k, v.as_slice()))).unwrap();
        assert_eq!(set.email.as_deref(), Some("jane@example.com"));
        assert_eq!(
            set.get(&"externalIds.stripe".parse().unwrap()),
            Some("cus_9")
        );

        let typo: BTreeMap<String, Vec<u8>> = [("emial".to_string(), b"x".to_vec())].into();
        let err = IdentifierSet::from_secret_data(typo.iter().map(|(k, v)| (k, v.as_slice())))
            .unwrap_err();
        assert!(err.to_string().contains("emial") && err.to_string().contains("userId"));
        let empty: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        assert_eq!(
            IdentifierSet::from_secret_data(empty.iter().map(|(k, v)| (k, v.as_slice()))),
            Err(SubjectError::NoIdentifiers)
        );
    }

    #[test]
    fn errors_do_not_echo_values() {
        let data: BTreeMap<String, Vec<u8>> = [("email".to_string(), vec![0xff, 0xfe])].into();
        let err = IdentifierSet::from_secret_data(data.iter().map(|(k, v)| (k, v.as_slice())))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "identifier email is not valid UTF-8");
    }
}
