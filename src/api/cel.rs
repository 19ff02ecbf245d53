//! Helpers that add CEL rules (`x-kubernetes-validations`) to generated schemas.
//!
//! Most rules are written next to their type with `#[schemars(extend(...))]`. The rules here are
//! generated from the schema itself, so that a field added later is covered automatically (for
//! example, the immutability of a request's spec).

use schemars::Schema;
use serde_json::{Value, json};

/// Appends rules to a schema's `x-kubernetes-validations`.
pub fn add_rules(schema: &mut Schema, rules: impl IntoIterator<Item = Value>) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let list = obj
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = list {
        list.extend(rules);
    }
}

/// A transition rule that keeps one optional or required property unchanged: it may not be
/// added, removed or changed after creation. `fieldPath` makes the apiserver name the field.
pub fn immutable_property(name: &str, required: bool, message: &str) -> Value {
    let rule = if required {
        format!("self.{name} == oldSelf.{name}")
    } else {
        format!(
            "has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})"
        )
    };
    json!({ "rule": rule, "message": message, "fieldPath": format!(".{name}") })
}

/// A transition rule for a property that may be set once (added later) but never changed or
/// removed afterwards.
pub fn write_once_property(name: &str, message: &str) -> Value {
    json!({
        "rule": format!("!has(oldSelf.{name}) || (has(self.{name}) && self.{name} == oldSelf.{name})"),
        "message": message,
        "fieldPath": format!(".{name}"),
    })
}

/// Property names of an object schema and whether each is required.
pub fn properties(schema: &Schema) -> Vec<(String, bool)> {
    let Some(obj) = schema.as_object() else {
        return Vec::new();
    };
    let required: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    obj.get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .keys()
                .map(|k| (k.clone(), required.contains(&k.as_str())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_appended_with_field_paths() {
        let mut s = Schema::try_from(json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "required": ["a"],
            "x-kubernetes-validations": [{"rule": "true"}]
        }))
        .unwrap();
        let props = properties(&s);
        assert_eq!(props, vec![("a".into(), true), ("b".into(), false)]);
        add_rules(
            &mut s,
            props
                .iter()
                .map(|(n, r)| immutable_property(n, *r, "is immutable")),
        );
        let rules = s.as_object().unwrap()["x-kubernetes-validations"]
            .as_array()
            .unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[1]["rule"], "self.a == oldSelf.a");
        assert_eq!(rules[2]["fieldPath"], ".b");
    }
}
