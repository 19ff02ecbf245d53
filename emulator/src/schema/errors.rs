//! Field errors rendered exactly like apimachinery's `field.Error`
//! (`k8s.io/apimachinery/pkg/util/validation/field/errors.go`).

use serde_json::Value;

/// The kind of a field error, named as apimachinery's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    TooLong,
    TooMany,
    Duplicate,
    Forbidden,
    TypeInvalid,
}

impl FieldErrorKind {
    /// The `CauseType` (`reason` of a Status cause).
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The human text of the type (`ErrorType.String()`).
    pub fn text(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
        }
    }
}

/// One field-level validation error.
///
/// `bad_value: None` means apimachinery's "omit value" (the body shows only the type).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.subject.email` or `spec.systems[0].name`; `<nil>` for errors
    /// apimachinery reports without a path.
    pub field: String,
    pub kind: FieldErrorKind,
    pub bad_value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn new(
        field: impl Into<String>,
        kind: FieldErrorKind,
        bad_value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            kind,
            bad_value,
            detail: detail.into(),
        }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            field,
            FieldErrorKind::Required,
            Some(Value::String(String::new())),
            detail,
        )
    }

    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::Invalid, Some(value), detail)
    }

    pub fn type_invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorKind::TypeInvalid, Some(value), detail)
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            field,
            FieldErrorKind::Forbidden,
            Some(Value::String(String::new())),
            detail,
        )
    }

    pub fn duplicate(field: impl Into<String>, value: Value) -> Self {
        Self::new(field, FieldErrorKind::Duplicate, Some(value), "")
    }

    /// `field.NotSupported`: the detail lists every supported value, Go-quoted.
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[String]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(field, FieldErrorKind::NotSupported, Some(value), detail)
    }

    /// `field.TooMany` (1.32+ wording): `actual` is omitted when unknown.
    pub fn too_many(field: impl Into<String>, actual: Option<i64>, max: Option<i64>) -> Self {
        let detail = match max {
            Some(1) => "must have at most 1 item".to_string(),
            Some(m) => format!("must have at most {m} items"),
            None => "has too many items".to_string(),
        };
        Self::new(
            field,
            FieldErrorKind::TooMany,
            actual.map(Value::from),
            detail,
        )
    }

    /// `field.TooLong` (1.32+ wording, which `TooLongMaxLength` now forwards to); the value
    /// itself is never printed.
    pub fn too_long(field: impl Into<String>, value: Value, max: Option<i64>) -> Self {
        let detail = match max {
            Some(1) => "may not be more than 1 byte".to_string(),
            Some(m) => format!("may not be more than {m} bytes"),
            None => "value is too long".to_string(),
        };
        Self::new(field, FieldErrorKind::TooLong, Some(value), detail)
    }

    /// The `CauseType` of this error, e.g. `FieldValueRequired`.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// `field.Error.Error()`: `<field>: <body>`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }

    /// `field.Error.ErrorBody()`: the message without the field path.
    pub fn body(&self) -> String {
        let mut s = match (self.kind, &self.bad_value) {
            (FieldErrorKind::Required | FieldErrorKind::Forbidden | FieldErrorKind::TooLong, _)
            | (_, None) => self.kind.text().to_string(),
            (_, Some(v)) => format!("{}: {}", self.kind.text(), go_value(v)),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

/// Formats an unstructured value the way `ErrorBody` does: strings `%q`, scalars `%v`,
/// `null` as `"null"`, maps and slices with Go's `%#v`.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::Null => go_quote("null"),
        Value::String(s) => go_quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::Array(_) | Value::Object(_) => go_sharp_v(v),
    }
}

/// Go's `%#v` of a decoded JSON value (`map[string]interface {}` / `[]interface {}`).
pub fn go_sharp_v(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".to_string(),
        Value::String(s) => go_quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_sharp_v).collect();
            format!("[]interface {{}}{{{}}}", parts.join(", "))
        }
        Value::Object(map) => {
            // Go prints map keys sorted.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", go_quote(k), go_sharp_v(&map[k.as_str()])))
                .collect();
            format!("map[string]interface {{}}{{{}}}", parts.join(", "))
        }
    }
}

/// A JSON number printed like Go's `%v` of the int64 or float64 it decodes to.
pub fn go_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        go_float(n.as_f64().unwrap_or(0.0))
    }
}

/// Go's `%v` for a float64 (`strconv.FormatFloat(f, 'g', -1, 64)` with `%v`'s exponent range).
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".to_string()
        } else {
            "-Inf".to_string()
        };
    }
    if f == 0.0 {
        return "0".to_string();
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..21).contains(&exp) {
        // Rust's Display is the shortest round-trip representation, without exponent.
        format!("{f}")
    } else {
        // Rust: 1e21 / 1.5e-7; Go: 1e+21 / 1.5e-07.
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exponent)) => {
                let (sign, digits) = match exponent.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', exponent),
                };
                let digits = if digits.len() < 2 {
                    format!("0{digits}")
                } else {
                    digits.to_string()
                };
                format!("{mantissa}e{sign}{digits}")
            }
            None => s,
        }
    }
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let cp = c as u32;
                if cp <= 0xffff {
                    out.push_str(&format!("\\u{cp:04x}"));
                } else {
                    out.push_str(&format!("\\U{cp:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The JSON type name kube-openapi reports for a value (`schemaInfoForType`).
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) => {
            if n.is_f64() {
                "number"
            } else {
                "integer"
            }
        }
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_match_apimachinery() {
        let e = FieldError::not_supported(
            "spec.type",
            json!("Foo"),
            &["Access".to_string(), "Erasure".to_string()],
        );
        assert_eq!(
            e.message(),
            r#"spec.type: Unsupported value: "Foo": supported values: "Access", "Erasure""#
        );
        assert_eq!(e.reason(), "FieldValueNotSupported");
        assert_eq!(
            FieldError::required("spec.subject", "").message(),
            "spec.subject: Required value"
        );
        assert_eq!(
            FieldError::invalid(
                "spec.restoreWindow",
                json!("14x"),
                "must be a duration like 14d"
            )
            .message(),
            r#"spec.restoreWindow: Invalid value: "14x": must be a duration like 14d"#
        );
        assert_eq!(
            FieldError::invalid("spec", json!("object"), "spec is immutable once accepted")
                .message(),
            r#"spec: Invalid value: "object": spec is immutable once accepted"#
        );
        assert_eq!(
            FieldError::too_many("spec.systems", Some(5), Some(3)).message(),
            "spec.systems: Too many: 5: must have at most 3 items"
        );
        assert_eq!(
            FieldError::too_long("spec.note", json!("abc"), Some(2)).message(),
            "spec.note: Too long: may not be more than 2 bytes"
        );
        assert_eq!(
            FieldError::duplicate("status.conditions[1]", json!({"type": "Ready"})).message(),
            r#"status.conditions[1]: Duplicate value: map[string]interface {}{"type":"Ready"}"#
        );
        assert_eq!(
            FieldError::forbidden("spec.x", "nope").message(),
            "spec.x: Forbidden: nope"
        );
        assert_eq!(
            FieldError::invalid("spec.n", json!(3), "").message(),
            "spec.n: Invalid value: 3"
        );
    }

    #[test]
    fn go_formatting() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_quote("a\"b\n"), r#""a\"b\n""#);
        assert_eq!(
            go_sharp_v(&json!(["a", 1, null])),
            r#"[]interface {}{"a", 1, interface {}(nil)}"#
        );
        assert_eq!(go_value(&Value::Null), r#""null""#);
    }
}
