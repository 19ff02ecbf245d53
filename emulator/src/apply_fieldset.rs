//! Field paths and sets as structured-merge-diff defines them, and their `FieldsV1` encoding
//! (`{"f:spec":{"f:replicas":{}},"f:status":{"f:conditions":{"k:{\"type\":\"Ready\"}":{".":{},...}}}}`).

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// One step of a path. The derived order (fields, then keys, then values, then indexes) is the
/// order structured-merge-diff serializes children in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pe {
    /// `f:<name>`: a field of a struct or a key of a map.
    Field(String),
    /// `k:<json>`: an item of an associative list, by its key fields (a JSON object with
    /// sorted keys).
    Key(String),
    /// `v:<json>`: an item of a set, by value.
    Value(String),
    /// `i:<n>`: an item of a list by position (only in managedFields written by others).
    Index(usize),
}

impl Pe {
    /// The `k:` element of a list item from its key fields.
    pub fn key(fields: &[(String, Value)]) -> Pe {
        let mut sorted: Vec<&(String, Value)> = fields.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut m = Map::new();
        for (k, v) in sorted {
            m.insert(k.clone(), canonical(v));
        }
        Pe::Key(Value::Object(m).to_string())
    }

    pub fn value(v: &Value) -> Pe {
        Pe::Value(canonical(v).to_string())
    }

    fn encode(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<Pe, String> {
        let (prefix, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("invalid path element {s:?}"))?;
        let json = |r: &str| {
            serde_json::from_str::<Value>(r).map_err(|e| format!("invalid path element {s:?}: {e}"))
        };
        Ok(match prefix {
            "f" => Pe::Field(rest.to_string()),
            "k" => match json(rest)? {
                Value::Object(m) => Pe::key(&m.into_iter().collect::<Vec<_>>()),
                _ => return Err(format!("invalid key path element {s:?}")),
            },
            "v" => Pe::value(&json(rest)?),
            "i" => Pe::Index(
                rest.parse()
                    .map_err(|_| format!("invalid index path element {s:?}"))?,
            ),
            _ => return Err(format!("unknown path element prefix in {s:?}")),
        })
    }

    /// The parsed key fields of a `k:` element.
    pub fn key_fields(&self) -> Option<Map<String, Value>> {
        match self {
            Pe::Key(k) => serde_json::from_str::<Value>(k).ok().and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            }),
            _ => None,
        }
    }
}

/// Objects with sorted keys, so that equal values have one text.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&m[k.as_str()])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Go's `%v`-ish rendering used in conflict messages: strings quoted, the rest as JSON.
fn display_value(v: &Value) -> String {
    v.to_string()
}

impl fmt::Display for Pe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pe::Field(n) => write!(f, ".{n}"),
            Pe::Key(_) => {
                let fields = self.key_fields().unwrap_or_default();
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", display_value(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            Pe::Value(v) => {
                let parsed: Value = serde_json::from_str(v).unwrap_or(Value::Null);
                write!(f, "[={}]", display_value(&parsed))
            }
            Pe::Index(i) => write!(f, "[{i}]"),
        }
    }
}

pub type Path = Vec<Pe>;

/// `.spec.containers[name="a"].image`, as structured-merge-diff prints paths.
pub fn path_string(p: &[Pe]) -> String {
    p.iter().map(|e| e.to_string()).collect()
}

/// A set of paths (each a member of the set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, p: Path) {
        self.0.insert(p);
    }

    pub fn contains(&self, p: &[Pe]) -> bool {
        self.0.contains(p)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn retain(&mut self, f: impl FnMut(&Path) -> bool) {
        self.0.retain(f);
    }

    /// Decodes a `fieldsV1` object.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let mut set = FieldSet::new();
        let Value::Object(m) = v else {
            return Err("fieldsV1 is not an object".into());
        };
        decode_node(m, &mut Vec::new(), &mut set)?;
        Ok(set)
    }

    /// Encodes as a `fieldsV1` object.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Node::default();
        for p in &self.0 {
            let mut n = &mut root;
            for pe in p {
                n = n.children.entry(pe.clone()).or_default();
            }
            n.member = true;
        }
        root.encode()
    }
}

fn decode_node(m: &Map<String, Value>, path: &mut Path, set: &mut FieldSet) -> Result<(), String> {
    for (k, v) in m {
        if k == "." {
            set.insert(path.clone());
            continue;
        }
        path.push(Pe::decode(k)?);
        match v {
            Value::Object(child) if child.is_empty() => set.insert(path.clone()),
            Value::Object(child) => decode_node(child, path, set)?,
            _ => return Err(format!("fieldsV1 entry {k:?} is not an object")),
        }
        path.pop();
    }
    Ok(())
}

#[derive(Default)]
struct Node {
    member: bool,
    children: std::collections::BTreeMap<Pe, Node>,
}

impl Node {
    fn encode(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            m.insert(pe.encode(), child.encode());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn f(n: &str) -> Pe {
        Pe::Field(n.into())
    }

    #[test]
    fn fields_v1_round_trip_with_dot_for_members_with_children() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}, "f:replicas": {}},
            "f:metadata2": {"f:finalizers": {"v:\"a\"": {}}}
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert!(set.contains(&[f("metadata"), f("labels")]));
        assert!(set.contains(&[f("metadata"), f("labels"), f("app")]));
        assert!(!set.contains(&[f("spec")]));
        let key = Pe::key(&[("name".into(), json!("nginx"))]);
        assert!(set.contains(&[f("spec"), f("containers"), key.clone(), f("image")]));
        let back = set.to_fields_v1();
        assert_eq!(FieldSet::from_fields_v1(&back).unwrap(), set);
        assert_eq!(
            back["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"][".".to_string()],
            json!({})
        );
        let keys: Vec<&String> = back["f:spec"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["f:containers", "f:replicas"]);
    }

    #[test]
    fn keys_are_sorted_and_printed_like_smd() {
        let k = Pe::key(&[
            ("protocol".into(), json!("TCP")),
            ("containerPort".into(), json!(80)),
        ]);
        assert_eq!(k.encode(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        let p = vec![f("spec"), f("ports"), k, f("name")];
        assert_eq!(
            path_string(&p),
            r#".spec.ports[containerPort=80,protocol="TCP"].name"#
        );
        assert_eq!(
            path_string(&[f("metadata"), f("finalizers"), Pe::value(&json!("x"))]),
            r#".metadata.finalizers[="x"]"#
        );
    }

    #[test]
    fn bad_fields_v1_is_an_error() {
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
    }
}
