//! Validation of custom resources like apiextensions-apiserver: kube-openapi's schema
//! validator (messages and field paths as `kubeOpenAPIResultToFieldErrors` makes them),
//! embedded resources, list-type sets and maps, then CEL rules.

use serde_json::{Map, Value};

use super::cel::{Bindings, child_path, display_path};
use super::errors::{FieldError, FieldErrorKind, go_float, go_quote, json_type_name};
use super::formats;
use super::node::{Additional, Node};

/// Everything the apiserver checks on a custom resource, in its order.
pub fn validate_object(root: &Node, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
        validate_dns_subdomain(name, "metadata.name", &mut errs);
    }
    validate_value(root, obj, old, "", &mut errs);
    validate_embedded(root, obj, "", &mut errs);
    // On update, list-type invariants are only enforced when the stored object met them.
    let old_lists_ok = old.is_none_or(|o| {
        let mut e = Vec::new();
        validate_list_types(root, o, "", &mut e);
        e.is_empty()
    });
    if old_lists_ok {
        validate_list_types(root, obj, "", &mut errs);
    }
    if root.has_rules {
        // strategy.go's hasBlockingErr: rules assume the shape the schema promises.
        let blocking = errs.iter().any(|e| {
            matches!(
                e.kind,
                FieldErrorKind::NotSupported
                    | FieldErrorKind::Required
                    | FieldErrorKind::TooLong
                    | FieldErrorKind::TooMany
                    | FieldErrorKind::TypeInvalid
            )
        });
        if blocking {
            errs.push(FieldError::invalid(
                "<nil>",
                Value::Null,
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
        } else {
            validate_rules(root, obj, old, "", true, &mut errs);
        }
    }
    errs
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `NameIsDNSSubdomain`, reported at `field`.
pub fn validate_dns_subdomain(name: &str, field: &str, errs: &mut Vec<FieldError>) {
    if name.len() > 253 {
        errs.push(FieldError::invalid(
            field,
            Value::String(name.to_string()),
            "must be no more than 253 characters",
        ));
    }
    if !is_dns1123_subdomain(name) {
        errs.push(FieldError::invalid(
            field,
            Value::String(name.to_string()),
            DNS1123_SUBDOMAIN_MSG,
        ));
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// kube-openapi's path for a property: `a.b`, with `.b` at the root (trimmed later).
fn prop_path(path: &str, key: &str) -> String {
    child_path(path, key)
}

/// The `name` kube-openapi puts into its messages.
fn name(path: &str) -> &str {
    path
}

fn type_names(node: &Node) -> Option<String> {
    if node.int_or_string {
        Some("integer,string".to_string())
    } else {
        node.type_.clone()
    }
}

fn type_matches(node: &Node, v: &Value) -> bool {
    let Some(types) = type_names(node) else {
        return true;
    };
    let actual = json_type_name(v);
    let contains = |t: &str| types.split(',').any(|x| x == t);
    if contains(actual) {
        return true;
    }
    match v {
        // isFloatInt: an integral float is fine for an integer field.
        Value::Number(n) if n.is_f64() => {
            contains("integer") && n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        // isIntFloat: an integer is fine for a number field.
        Value::Number(_) => contains("number"),
        _ => false,
    }
}

/// Validates `v` against `node` at `path`, as kube-openapi's `SchemaValidator.Validate`.
///
/// `old` is the correlated value of the stored object on update: errors in values left
/// unchanged are ratcheted away (`CRDValidationRatcheting`, on by default since 1.30), so an
/// object that became invalid under a newer schema can still be updated elsewhere.
pub fn validate_value(
    node: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if old.is_some_and(|o| json_eq(o, v)) {
        return;
    }
    if v.is_null() {
        if let Some(t) = type_names(node)
            && !node.nullable
        {
            errs.push(type_error(path, &t, "null"));
        }
        validate_enum(node, v, path, errs);
        return;
    }
    // type
    if let Some(t) = type_names(node)
        && !type_matches(node, v)
    {
        errs.push(type_error(path, &t, json_type_name(v)));
    }
    // allOf / anyOf / oneOf / not
    validate_combinators(node, v, path, errs);
    match v {
        Value::String(s) => {
            validate_string(node, s, path, errs);
            if let Some(f) = &node.format
                && node.type_.as_deref() == Some("string")
                && !formats::is_valid(f, s)
            {
                errs.push(FieldError::type_invalid(
                    display_path(path),
                    v.clone(),
                    format!(
                        "{} in body must be of type {}: {}",
                        name(path),
                        f,
                        go_quote(s)
                    ),
                ));
            }
        }
        Value::Number(n) => validate_number(node, n, path, errs),
        Value::Array(items) => validate_array(node, items, old, path, errs),
        _ => {}
    }
    validate_enum(node, v, path, errs);
    if let Value::Object(obj) = v {
        validate_object_props(node, obj, old.and_then(Value::as_object), path, errs);
    }
}

fn type_error(path: &str, types: &str, actual: &str) -> FieldError {
    FieldError::type_invalid(
        display_path(path),
        Value::String(actual.to_string()),
        format!(
            "{} in body must be of type {}: {}",
            name(path),
            types,
            go_quote(actual)
        ),
    )
}

fn validate_string(node: &Node, s: &str, path: &str, errs: &mut Vec<FieldError>) {
    let len = s.chars().count() as i64;
    if let Some(max) = node.max_length
        && len > max
    {
        errs.push(FieldError::too_long(
            display_path(path),
            Value::String(s.to_string()),
            Some(max),
        ));
        return;
    }
    if let Some(min) = node.min_length
        && len < min
    {
        errs.push(FieldError::invalid(
            display_path(path),
            Value::String(s.to_string()),
            format!(
                "{} in body should be at least {} chars long",
                name(path),
                min
            ),
        ));
        return;
    }
    if let Some((src, re)) = &node.pattern
        && !re.is_match(s)
    {
        errs.push(FieldError::invalid(
            display_path(path),
            Value::String(s.to_string()),
            format!("{} in body should match '{}'", name(path), src),
        ));
    }
}

fn validate_number(node: &Node, n: &serde_json::Number, path: &str, errs: &mut Vec<FieldError>) {
    let value = Value::Number(n.clone());
    let int = n.as_i64();
    let f = n.as_f64().unwrap_or(0.0);
    if let Some(factor) = node.multiple_of {
        let ok = match int {
            Some(i) if factor as i64 != 0 => i % (factor as i64) == 0,
            _ => {
                let mult = if factor < 1.0 {
                    1.0 / factor * f
                } else {
                    f / factor
                };
                mult.fract() == 0.0
            }
        };
        if !ok {
            let shown = match int {
                Some(_) if factor as i64 != 0 => (factor as i64).to_string(),
                _ => go_float(factor),
            };
            errs.push(FieldError::invalid(
                display_path(path),
                value.clone(),
                format!("{} in body should be a multiple of {}", name(path), shown),
            ));
        }
    }
    if let Some(max) = node.maximum {
        let (fails, shown) = match int {
            Some(i) => {
                let m = max as i64;
                (
                    if node.exclusive_maximum {
                        i >= m
                    } else {
                        i > m
                    },
                    m.to_string(),
                )
            }
            None => (
                if node.exclusive_maximum {
                    f >= max
                } else {
                    f > max
                },
                go_float(max),
            ),
        };
        if fails {
            let op = if node.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(FieldError::invalid(
                display_path(path),
                value.clone(),
                format!("{} in body should be {} {}", name(path), op, shown),
            ));
        }
    }
    if let Some(min) = node.minimum {
        let (fails, shown) = match int {
            Some(i) => {
                let m = min as i64;
                (
                    if node.exclusive_minimum {
                        i <= m
                    } else {
                        i < m
                    },
                    m.to_string(),
                )
            }
            None => (
                if node.exclusive_minimum {
                    f <= min
                } else {
                    f < min
                },
                go_float(min),
            ),
        };
        if fails {
            let op = if node.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(FieldError::invalid(
                display_path(path),
                value,
                format!("{} in body should be {} {}", name(path), op, shown),
            ));
        }
    }
}

fn validate_array(
    node: &Node,
    items: &[Value],
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if let Some(item_node) = &node.items {
        for (i, item) in items.iter().enumerate() {
            let old_item = correlated_item(node, item, old);
            validate_value(item_node, item, old_item, &format!("{path}[{i}]"), errs);
        }
    }
    let size = items.len() as i64;
    if let Some(min) = node.min_items
        && size < min
    {
        errs.push(FieldError::invalid(
            display_path(path),
            Value::from(size),
            format!("{} in body should have at least {} items", name(path), min),
        ));
    }
    if let Some(max) = node.max_items
        && size > max
    {
        errs.push(FieldError::too_many(
            display_path(path),
            Some(size),
            Some(max),
        ));
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`), like the enum check's
/// type conversion.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn validate_enum(node: &Node, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(values) = &node.enum_ else { return };
    if values.is_empty() || values.iter().any(|e| json_eq(e, v)) {
        return;
    }
    let supported: Vec<String> = values
        .iter()
        .map(|e| match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    errs.push(FieldError::not_supported(
        display_path(path),
        v.clone(),
        &supported,
    ));
}

fn validate_object_props(
    node: &Node,
    obj: &Map<String, Value>,
    old: Option<&Map<String, Value>>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let count = obj.len() as i64;
    if let Some(min) = node.min_properties
        && count < min
    {
        errs.push(FieldError::invalid(
            display_path(path),
            Value::from(count),
            format!(
                "{} in body should have at least {} properties",
                name(path),
                min
            ),
        ));
        return;
    }
    if let Some(max) = node.max_properties
        && count > max
    {
        errs.push(FieldError::too_many(
            display_path(path),
            Some(count),
            Some(max),
        ));
        return;
    }
    match &node.additional {
        Some(Additional::Allows(false)) => {
            for k in obj.keys() {
                if !node.properties.contains_key(k) {
                    errs.push(FieldError::invalid(
                        display_path(path),
                        Value::String(k.clone()),
                        format!("{}.{} in body is a forbidden property", name(path), k),
                    ));
                }
            }
        }
        Some(Additional::Schema(s)) => {
            for (k, v) in obj {
                if !node.properties.contains_key(k) {
                    validate_value(s, v, old.and_then(|o| o.get(k)), &child_path(path, k), errs);
                }
            }
        }
        _ => {}
    }
    for (k, p) in &node.properties {
        if let Some(v) = obj.get(k) {
            validate_value(p, v, old.and_then(|o| o.get(k)), &prop_path(path, k), errs);
        }
    }
    for k in &node.required {
        if !obj.contains_key(k) {
            errs.push(FieldError::required(prop_path(path, k), ""));
        }
    }
}

/// Errors of a combinator branch (never ratcheted, as the apiserver does for allOf).
fn sub_errors(node: &Node, v: &Value, path: &str) -> Vec<FieldError> {
    let mut e = Vec::new();
    validate_value(node, v, None, path, &mut e);
    e
}

/// The old item a list item correlates with: only list-type map items do, by key.
fn correlated_item<'a>(node: &Node, item: &Value, old: Option<&'a Value>) -> Option<&'a Value> {
    if node.list_type.as_deref() != Some("map") {
        return None;
    }
    let key = list_map_key(node, item)?;
    old?.as_array()?
        .iter()
        .find(|o| list_map_key(node, o).as_ref() == Some(&key))
}

fn validate_combinators(node: &Node, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let composite = |msg: String| FieldError::invalid("<nil>", Value::String(String::new()), msg);
    if !node.any_of.is_empty() {
        let results: Vec<Vec<FieldError>> =
            node.any_of.iter().map(|s| sub_errors(s, v, path)).collect();
        if !results.iter().any(Vec::is_empty) {
            errs.push(composite(format!(
                "{} must validate at least one schema (anyOf)",
                go_quote(path)
            )));
            if let Some(best) = results.into_iter().min_by_key(Vec::len) {
                errs.extend(best);
            }
        }
    }
    if !node.one_of.is_empty() {
        let results: Vec<Vec<FieldError>> =
            node.one_of.iter().map(|s| sub_errors(s, v, path)).collect();
        let valid = results.iter().filter(|r| r.is_empty()).count();
        if valid != 1 {
            let extra = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            errs.push(composite(format!(
                "{} must validate one and only one schema (oneOf). {}",
                go_quote(path),
                extra
            )));
            if valid == 0
                && let Some(best) = results.into_iter().min_by_key(Vec::len)
            {
                errs.extend(best);
            }
        }
    }
    if !node.all_of.is_empty() {
        let mut validated = 0;
        for s in &node.all_of {
            let r = sub_errors(s, v, path);
            if r.is_empty() {
                validated += 1;
            }
            errs.extend(r);
        }
        if validated != node.all_of.len() {
            let extra = if validated == 0 {
                ". None validated"
            } else {
                ""
            };
            errs.push(composite(format!(
                "{} must validate all the schemas (allOf){}",
                go_quote(path),
                extra
            )));
        }
    }
    if let Some(not) = &node.not
        && sub_errors(not, v, path).is_empty()
    {
        errs.push(composite(format!(
            "{} must not validate the schema (not)",
            go_quote(path)
        )));
    }
}

/// `x-kubernetes-embedded-resource` objects need `apiVersion` and `kind`, and a valid name.
fn validate_embedded(node: &Node, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match v {
        Value::Object(obj) => {
            if node.embedded_resource && !path.is_empty() {
                for f in ["apiVersion", "kind"] {
                    match obj.get(f) {
                        Some(Value::String(s)) if !s.is_empty() => {}
                        _ => errs.push(FieldError::required(
                            child_path(path, f),
                            "must not be empty",
                        )),
                    }
                }
                if let Some(name) = obj
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                {
                    validate_dns_subdomain(name, &child_path(path, "metadata.name"), errs);
                }
            }
            for (k, child) in obj {
                if let Some(p) = node.properties.get(k) {
                    validate_embedded(p, child, &child_path(path, k), errs);
                } else if let Some(Additional::Schema(s)) = &node.additional {
                    validate_embedded(s, child, &format!("{path}[{k}]"), errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_node) = &node.items {
                for (i, item) in items.iter().enumerate() {
                    validate_embedded(item_node, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

/// The key of a list-type map item, with defaults for absent keys.
pub fn list_map_key(node: &Node, item: &Value) -> Option<Map<String, Value>> {
    let obj = item.as_object()?;
    let item_node = node.items.as_deref();
    let mut key = Map::new();
    for k in &node.list_map_keys {
        let v = obj
            .get(k)
            .cloned()
            .or_else(|| {
                item_node
                    .and_then(|n| n.properties.get(k))
                    .and_then(|p| p.default.clone())
            })
            .unwrap_or(Value::Null);
        key.insert(k.clone(), v);
    }
    Some(key)
}

/// `ValidateListSetsAndMaps`: set items unique, map keys unique.
fn validate_list_types(node: &Node, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match v {
        Value::Object(obj) => {
            for (k, child) in obj {
                if let Some(p) = node.properties.get(k) {
                    validate_list_types(p, child, &child_path(path, k), errs);
                } else if let Some(Additional::Schema(s)) = &node.additional {
                    validate_list_types(s, child, &format!("{path}[{k}]"), errs);
                }
            }
        }
        Value::Array(items) => {
            match node.list_type.as_deref() {
                Some("set") => {
                    for (i, item) in items.iter().enumerate() {
                        if items[..i].iter().any(|earlier| json_eq(earlier, item)) {
                            errs.push(FieldError::duplicate(format!("{path}[{i}]"), item.clone()));
                        }
                    }
                }
                Some("map") => {
                    let mut seen: Vec<Map<String, Value>> = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match list_map_key(node, item) {
                            Some(key) => {
                                if seen.iter().any(|s| {
                                    json_eq(&Value::Object(s.clone()), &Value::Object(key.clone()))
                                }) {
                                    errs.push(FieldError::duplicate(
                                        format!("{path}[{i}]"),
                                        Value::Object(key),
                                    ));
                                } else {
                                    seen.push(key);
                                }
                            }
                            None => errs.push(FieldError::invalid(
                                format!("{path}[{i}]"),
                                item.clone(),
                                "must be an object for an array of list-type map",
                            )),
                        }
                    }
                }
                _ => {}
            }
            if let Some(item_node) = &node.items {
                for (i, item) in items.iter().enumerate() {
                    validate_list_types(item_node, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

/// Evaluates every CEL rule, pairing each value with its old value where the apiserver can
/// correlate them: object properties (unless `x-kubernetes-map-type: atomic`) and list-type
/// map items by key.
pub fn validate_rules(
    node: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    resource_root: bool,
    errs: &mut Vec<FieldError>,
) {
    if v.is_null() || !node.has_rules {
        return;
    }
    // Ratcheting: a rule that does not look at oldSelf cannot newly fail on an unchanged value.
    let unchanged = old.is_some_and(|o| json_eq(o, v));
    let rules = node
        .rules
        .iter()
        .chain(node.all_of.iter().flat_map(|b| b.rules.iter()));
    let mut bindings = None;
    for rule in rules {
        if unchanged && !rule.uses_old_self {
            continue;
        }
        let b = bindings.get_or_insert_with(|| Bindings::new(node, v, old, resource_root));
        if let Some(e) = rule.evaluate_with(node, b, path) {
            errs.push(e);
        }
    }
    match v {
        Value::Object(obj) => {
            let correlatable = node.map_type.as_deref() != Some("atomic");
            let old_obj = if correlatable {
                old.and_then(Value::as_object)
            } else {
                None
            };
            for (k, child) in obj {
                let old_child = old_obj.and_then(|o| o.get(k));
                if let Some(p) = node.properties.get(k) {
                    let child_path = child_path(path, k);
                    validate_rules(p, child, old_child, &child_path, p.embedded_resource, errs);
                } else if let Some(Additional::Schema(s)) = &node.additional {
                    let key_path = format!("{path}[{k}]");
                    validate_rules(s, child, old_child, &key_path, s.embedded_resource, errs);
                }
            }
        }
        Value::Array(items) => {
            let Some(item_node) = &node.items else { return };
            for (i, item) in items.iter().enumerate() {
                let old_item = correlated_item(node, item, old);
                let item_path = format!("{path}[{i}]");
                validate_rules(
                    item_node,
                    item,
                    old_item,
                    &item_path,
                    item_node.embedded_resource,
                    errs,
                );
            }
        }
        _ => {}
    }
}
