//! The compiled form of one openAPIV3Schema node (a structural schema node plus its value
//! validations), built once per CRD version.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::cel::CompiledRule;
use super::errors::{FieldError, go_quote};

/// `additionalProperties`: a schema, or `true`/`false`.
#[derive(Debug, Clone)]
pub enum Additional {
    Allows(bool),
    Schema(Box<Node>),
}

#[derive(Debug, Clone, Default)]
pub struct Node {
    /// `object`, `array`, `string`, `integer`, `number`, `boolean`, or `None`.
    pub type_: Option<String>,
    pub format: Option<String>,
    pub nullable: bool,
    pub properties: BTreeMap<String, Node>,
    pub required: Vec<String>,
    pub items: Option<Box<Node>>,
    pub additional: Option<Additional>,
    pub enum_: Option<Vec<Value>>,
    pub pattern: Option<(String, Regex)>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_length: Option<i64>,
    pub max_length: Option<i64>,
    pub min_items: Option<i64>,
    pub max_items: Option<i64>,
    pub min_properties: Option<i64>,
    pub max_properties: Option<i64>,
    pub default: Option<Value>,
    pub all_of: Vec<Node>,
    pub any_of: Vec<Node>,
    pub one_of: Vec<Node>,
    pub not: Option<Box<Node>>,
    pub preserve_unknown: bool,
    pub int_or_string: bool,
    pub embedded_resource: bool,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<String>,
    pub rules: Vec<CompiledRule>,
    /// Whether this node or anything below it carries CEL rules (to skip rule-free subtrees).
    pub has_rules: bool,
}

/// Formats supported by the apiserver for strings; others are ignored
/// (`StripUnsupportedFormatsPostProcess`).
const SUPPORTED_STRING_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
];

impl Node {
    /// Compiles `raw` at `path` (used in error messages, e.g.
    /// `openAPIV3Schema.properties[spec]`), collecting every problem into `errs`.
    pub fn compile(raw: &Value, path: &str, errs: &mut Vec<FieldError>) -> Node {
        let Some(obj) = raw.as_object() else {
            errs.push(FieldError::invalid(path, raw.clone(), "must be an object"));
            return Node::default();
        };
        let mut n = Node {
            type_: str_field(obj, "type"),
            nullable: bool_field(obj, "nullable"),
            preserve_unknown: bool_field(obj, "x-kubernetes-preserve-unknown-fields"),
            int_or_string: bool_field(obj, "x-kubernetes-int-or-string"),
            embedded_resource: bool_field(obj, "x-kubernetes-embedded-resource"),
            list_type: str_field(obj, "x-kubernetes-list-type"),
            map_type: str_field(obj, "x-kubernetes-map-type"),
            exclusive_minimum: bool_field(obj, "exclusiveMinimum"),
            exclusive_maximum: bool_field(obj, "exclusiveMaximum"),
            minimum: obj.get("minimum").and_then(Value::as_f64),
            maximum: obj.get("maximum").and_then(Value::as_f64),
            multiple_of: obj.get("multipleOf").and_then(Value::as_f64),
            min_length: obj.get("minLength").and_then(Value::as_i64),
            max_length: obj.get("maxLength").and_then(Value::as_i64),
            min_items: obj.get("minItems").and_then(Value::as_i64),
            max_items: obj.get("maxItems").and_then(Value::as_i64),
            min_properties: obj.get("minProperties").and_then(Value::as_i64),
            max_properties: obj.get("maxProperties").and_then(Value::as_i64),
            default: obj.get("default").cloned(),
            enum_: obj.get("enum").and_then(Value::as_array).cloned(),
            ..Node::default()
        };

        if let Some(t) = &n.type_
            && !matches!(
                t.as_str(),
                "object" | "array" | "string" | "integer" | "number" | "boolean"
            )
        {
            errs.push(FieldError::not_supported(
                format!("{path}.type"),
                Value::String(t.clone()),
                &["array", "boolean", "integer", "number", "object", "string"].map(String::from),
            ));
        }

        n.format = str_field(obj, "format").filter(|f| {
            let is_string = n.type_.as_deref() == Some("string");
            !is_string || SUPPORTED_STRING_FORMATS.contains(&f.as_str())
        });

        if let Some(p) = obj.get("pattern").and_then(Value::as_str) {
            match compile_pattern(p) {
                Ok(re) => n.pattern = Some((p.to_string(), re)),
                Err(e) => errs.push(FieldError::invalid(
                    format!("{path}.pattern"),
                    Value::String(p.to_string()),
                    format!("must be a valid regular expression, but isn't: {e}"),
                )),
            }
        }

        if bool_field(obj, "uniqueItems") {
            errs.push(FieldError::forbidden(
                format!("{path}.uniqueItems"),
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            ));
        }

        if let Some(req) = obj.get("required").and_then(Value::as_array) {
            n.required = req
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
        }

        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let child = Node::compile(v, &format!("{path}.properties[{k}]"), errs);
                n.properties.insert(k.clone(), child);
            }
        }

        match obj.get("items") {
            Some(Value::Array(_)) => errs.push(FieldError::forbidden(
                format!("{path}.items"),
                "items must be a schema object and not an array",
            )),
            Some(v) => n.items = Some(Box::new(Node::compile(v, &format!("{path}.items"), errs))),
            None => {
                if n.type_.as_deref() == Some("array") {
                    errs.push(FieldError::required(
                        format!("{path}.items"),
                        "must be specified",
                    ));
                }
            }
        }

        match obj.get("additionalProperties") {
            Some(Value::Bool(b)) => n.additional = Some(Additional::Allows(*b)),
            Some(v @ Value::Object(_)) => {
                if !n.properties.is_empty() {
                    errs.push(FieldError::forbidden(
                        format!("{path}.additionalProperties"),
                        "additionalProperties and properties are mutual exclusive",
                    ));
                }
                n.additional = Some(Additional::Schema(Box::new(Node::compile(
                    v,
                    &format!("{path}.additionalProperties"),
                    errs,
                ))));
            }
            _ => {}
        }

        for (key, target) in [
            ("allOf", &mut n.all_of),
            ("anyOf", &mut n.any_of),
            ("oneOf", &mut n.one_of),
        ] {
            if let Some(list) = obj.get(key).and_then(Value::as_array) {
                for (i, v) in list.iter().enumerate() {
                    target.push(Node::compile(v, &format!("{path}.{key}[{i}]"), errs));
                }
            }
        }
        if let Some(v) = obj.get("not") {
            n.not = Some(Box::new(Node::compile(v, &format!("{path}.not"), errs)));
        }

        if let Some(keys) = obj
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
        {
            n.list_map_keys = keys
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
        }
        n.check_structure(path, errs);

        if let Some(rules) = obj
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for (i, r) in rules.iter().enumerate() {
                let rule_path = format!("{path}.x-kubernetes-validations[{i}]");
                match CompiledRule::compile(r, &n, &rule_path) {
                    Ok(rule) => n.rules.push(rule),
                    Err(e) => errs.push(*e),
                }
            }
        }
        n.has_rules = !n.rules.is_empty()
            || n.properties.values().any(|p| p.has_rules)
            || n.items.as_ref().is_some_and(|i| i.has_rules)
            || matches!(&n.additional, Some(Additional::Schema(s)) if s.has_rules)
            || n.all_of.iter().any(|a| a.has_rules);
        n
    }

    /// The structural-schema rules the apiserver enforces at CRD creation that matter for
    /// serving (the remaining ones are about publishing).
    fn check_structure(&self, path: &str, errs: &mut Vec<FieldError>) {
        if let Some(lt) = &self.list_type {
            if !matches!(lt.as_str(), "atomic" | "set" | "map") {
                errs.push(FieldError::not_supported(
                    format!("{path}.x-kubernetes-list-type"),
                    Value::String(lt.clone()),
                    &["atomic".to_string(), "set".to_string(), "map".to_string()],
                ));
            }
            if self.type_.as_deref() != Some("array") {
                errs.push(FieldError::invalid(
                    format!("{path}.type"),
                    Value::String(self.type_.clone().unwrap_or_default()),
                    "must be array if x-kubernetes-list-type is specified",
                ));
            }
            if lt == "map" {
                if self.list_map_keys.is_empty() {
                    errs.push(FieldError::required(
                        format!("{path}.x-kubernetes-list-map-keys"),
                        "must not be empty if x-kubernetes-list-type is map",
                    ));
                }
                if let Some(items) = &self.items {
                    for k in &self.list_map_keys {
                        match items.properties.get(k) {
                            None => errs.push(FieldError::invalid(
                                format!("{path}.x-kubernetes-list-map-keys"),
                                Value::Array(
                                    self.list_map_keys
                                        .iter()
                                        .cloned()
                                        .map(Value::String)
                                        .collect(),
                                ),
                                format!(
                                    "entries must all be names of item properties: {}",
                                    go_quote(k)
                                ),
                            )),
                            Some(p) => {
                                if !items.required.contains(k) && p.default.is_none() {
                                    errs.push(FieldError::required(
                                        format!("{path}.items.properties[{k}].default"),
                                        "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        } else if !self.list_map_keys.is_empty() {
            errs.push(FieldError::forbidden(
                format!("{path}.x-kubernetes-list-map-keys"),
                "must not be specified if x-kubernetes-list-type is not map",
            ));
        }
        if let Some(mt) = &self.map_type
            && !matches!(mt.as_str(), "granular" | "atomic")
        {
            errs.push(FieldError::not_supported(
                format!("{path}.x-kubernetes-map-type"),
                Value::String(mt.clone()),
                &["granular".to_string(), "atomic".to_string()],
            ));
        }
    }

    /// The child schema of an object property (a named property, or additionalProperties).
    pub fn property(&self, key: &str) -> Option<&Node> {
        if let Some(p) = self.properties.get(key) {
            return Some(p);
        }
        match &self.additional {
            Some(Additional::Schema(s)) => Some(s),
            _ => None,
        }
    }

    /// The type name as used by kube-openapi and as the bad value of CEL errors.
    pub fn type_label(&self) -> String {
        if self.int_or_string {
            return String::new();
        }
        self.type_.clone().unwrap_or_default()
    }
}

fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(String::from)
}

fn bool_field(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Compiles an ECMA-262-ish schema pattern. Go's RE2 and Rust's regex share the syntax CRDs use;
/// patterns are unanchored searches in both.
pub fn compile_pattern(p: &str) -> Result<Regex, regex::Error> {
    Regex::new(p)
}
