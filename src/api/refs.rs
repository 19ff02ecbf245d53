//! References to other objects and label selectors, bounded so that CEL cost estimates stay
//! small (the apiserver refuses CRDs whose rules could be too expensive on unbounded input).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// RFC 1123 subdomain, the rule for most object names.
pub const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key inside a Secret's `data`.
pub const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// Qualified label key (optional DNS prefix, then a name).
pub const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";
/// Label value (may be empty).
pub const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// A reference to another object of a known kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
}

/// A reference to one key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyReference {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key inside the Secret's `data`.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub key: String,
}

/// A reference to a whole Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretReference {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
}

/// Operator of a label selector requirement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One requirement of a label selector, as in `metav1.LabelSelectorRequirement`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0",
        "message": "operators In and NotIn need a non-empty values list; Exists and DoesNotExist take no values"
    }
]))]
pub struct SelectorRequirement {
    /// The label key the requirement applies to.
    #[schemars(length(min = 1, max = 317), regex(pattern = LABEL_KEY))]
    pub key: String,
    /// How the key relates to the values: In, NotIn, Exists or DoesNotExist.
    pub operator: SelectorOperator,
    /// Values for In and NotIn; must be empty for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63), regex(pattern = LABEL_VALUE)))]
    pub values: Vec<String>,
}

/// A label selector, as in `metav1.LabelSelector`: all `matchLabels` and all
/// `matchExpressions` must hold. An empty selector selects every object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels that must all be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<SelectorRequirement>,
}

impl Selector {
    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Does an object with these labels match?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator {
                    SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// The selector as a `labelSelector` query parameter (`a=b,c in (d,e),!f`).
    pub fn to_query(&self) -> String {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for req in &self.match_expressions {
            parts.push(match req.operator {
                SelectorOperator::In => format!("{} in ({})", req.key, req.values.join(",")),
                SelectorOperator::NotIn => format!("{} notin ({})", req.key, req.values.join(",")),
                SelectorOperator::Exists => req.key.clone(),
                SelectorOperator::DoesNotExist => format!("!{}", req.key),
            });
        }
        parts.join(",")
    }
}

impl From<&Selector> for LabelSelector {
    fn from(s: &Selector) -> Self {
        LabelSelector {
            match_labels: (!s.match_labels.is_empty()).then(|| s.match_labels.clone()),
            match_expressions: (!s.match_expressions.is_empty()).then(|| {
                s.match_expressions
                    .iter()
                    .map(|r| LabelSelectorRequirement {
                        key: r.key.clone(),
                        operator: format!("{:?}", r.operator),
                        values: (!r.values.is_empty()).then(|| r.values.clone()),
                    })
                    .collect()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_matches_like_kubernetes() {
        let sel = Selector {
            match_labels: labels(&[("tier", "crm")]),
            match_expressions: vec![
                SelectorRequirement {
                    key: "region".into(),
                    operator: SelectorOperator::In,
                    values: vec!["eu".into(), "uk".into()],
                },
                SelectorRequirement {
                    key: "legacy".into(),
                    operator: SelectorOperator::DoesNotExist,
                    values: vec![],
                },
            ],
        };
        assert!(sel.matches(&labels(&[("tier", "crm"), ("region", "eu")])));
        assert!(!sel.matches(&labels(&[("tier", "crm"), ("region", "us")])));
        assert!(!sel.matches(&labels(&[
            ("tier", "crm"),
            ("region", "eu"),
            ("legacy", "")
        ])));
        assert!(Selector::default().matches(&labels(&[])));
        assert_eq!(sel.to_query(), "tier=crm,region in (eu,uk),!legacy");
        let ls = LabelSelector::from(&sel);
        assert_eq!(ls.match_expressions.unwrap()[0].operator, "In");
    }
}
