//! Kubernetes JSON from k8s-pb (prost) messages: the `ToJson` trait, the field encoding rules
//! and the hand-written conversions of apimachinery's special types.
//!
//! Go's protobuf encoding writes every non-pointer scalar, so a decoded message cannot tell an
//! unset `omitempty` field from an explicit zero. We drop empty strings always, and zeros and
//! `false` except for the fields in `ZERO_IS_A_VALUE` (Go pointers and non-`omitempty` fields),
//! which gives the JSON kubectl would have sent.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{Duration, FieldsV1, MicroTime, Time};
use k8s_pb::apimachinery::pkg::runtime::RawExtension;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;

/// A message rendered as Kubernetes JSON.
pub trait ToJson {
    fn to_json(&self) -> Value;
}

/// A message field rendered as a JSON member value; `None` omits it.
pub trait FieldJson {
    fn field_json(&self, name: &str) -> Option<Value>;
}

/// JSON names of integer and boolean fields whose zero value is meaningful.
const ZERO_IS_A_VALUE: &[&str] = &[
    // Go pointers
    "activeDeadlineSeconds",
    "allocateLoadBalancerNodePorts",
    "allowPrivilegeEscalation",
    "automountServiceAccountToken",
    "backoffLimit",
    "backoffLimitPerIndex",
    "blockOwnerDeletion",
    "completions",
    "controller",
    "defaultMode",
    "deletionGracePeriodSeconds",
    "enableServiceLinks",
    "expirationSeconds",
    "failedJobsHistoryLimit",
    "fsGroup",
    "hostProcess",
    "hostUsers",
    "immutable",
    "leaseDurationSeconds",
    "leaseTransitions",
    "manualSelector",
    "maxFailedIndexes",
    "maxExpirationSeconds",
    "minDomains",
    "mode",
    "optional",
    "parallelism",
    "partition",
    "priority",
    "privileged",
    "progressDeadlineSeconds",
    "readOnlyRootFilesystem",
    "replicas",
    "revisionHistoryLimit",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "startingDeadlineSeconds",
    "started",
    "successfulJobsHistoryLimit",
    "suspend",
    "terminating",
    "terminationGracePeriodSeconds",
    "tolerationSeconds",
    "ttlSecondsAfterFinished",
    // required, not omitempty
    "containerPort",
    "exitCode",
    "maxSkew",
    "port",
    "ready",
    "restartCount",
    "weight",
];

/// The JSON name of a prost field: lowerCamelCase of the snake name.
pub fn json_name(rust_field: &str) -> String {
    let field = rust_field.strip_prefix("r#").unwrap_or(rust_field);
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Adds a field to a message's JSON. In `*Status` messages no zero is kept: clients never set
/// status on create, and the names there (`replicas`) would collide with spec pointers.
pub fn put(m: &mut Map<String, Value>, message: &str, name: &str, field: &impl FieldJson) {
    let lookup = if message.ends_with("Status") {
        ""
    } else {
        name
    };
    if let Some(v) = field.field_json(lookup) {
        m.insert(name.to_string(), v);
    }
}

/// Go's `json:",inline"`: the embedded message's members become the parent's.
pub fn inline<T: ToJson>(m: &mut Map<String, Value>, field: &Option<T>) {
    if let Some(Value::Object(inner)) = field.as_ref().map(ToJson::to_json) {
        m.extend(inner);
    }
}

/// Implements `ToJson` for a message from its field list: `field` (JSON name derived),
/// `field => "jsonName"` (irregular names such as `clusterIP`), `..field` (inlined).
macro_rules! json_message {
    ($ty:path { $($body:tt)* }) => {
        impl $crate::protobuf_json::ToJson for $ty {
            fn to_json(&self) -> ::serde_json::Value {
                #[allow(unused_mut)]
                let mut m = ::serde_json::Map::new();
                json_message!(@fields stringify!($ty), self m $($body)*);
                ::serde_json::Value::Object(m)
            }
        }
    };
    (@fields $t:expr, $s:ident $m:ident) => {};
    (@fields $t:expr, $s:ident $m:ident .. $f:ident $(, $($rest:tt)*)?) => {
        $crate::protobuf_json::inline(&mut $m, &$s.$f);
        json_message!(@fields $t, $s $m $($($rest)*)?);
    };
    (@fields $t:expr, $s:ident $m:ident $f:ident => $name:literal $(, $($rest:tt)*)?) => {
        $crate::protobuf_json::put(&mut $m, $t, $name, &$s.$f);
        json_message!(@fields $t, $s $m $($($rest)*)?);
    };
    (@fields $t:expr, $s:ident $m:ident $f:ident $(, $($rest:tt)*)?) => {
        $crate::protobuf_json::put(&mut $m, $t, &$crate::protobuf_json::json_name(stringify!($f)), &$s.$f);
        json_message!(@fields $t, $s $m $($($rest)*)?);
    };
}
pub(crate) use json_message;

// ---- scalars ----

impl FieldJson for Option<String> {
    fn field_json(&self, _: &str) -> Option<Value> {
        self.as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.clone()))
    }
}

fn keeps_zero(name: &str) -> bool {
    ZERO_IS_A_VALUE.contains(&name)
}

impl FieldJson for Option<i32> {
    fn field_json(&self, name: &str) -> Option<Value> {
        self.filter(|v| *v != 0 || keeps_zero(name))
            .map(Value::from)
    }
}

impl FieldJson for Option<i64> {
    fn field_json(&self, name: &str) -> Option<Value> {
        self.filter(|v| *v != 0 || keeps_zero(name))
            .map(Value::from)
    }
}

impl FieldJson for Option<f64> {
    fn field_json(&self, name: &str) -> Option<Value> {
        self.filter(|v| *v != 0.0 || keeps_zero(name))
            .map(Value::from)
    }
}

impl FieldJson for Option<bool> {
    fn field_json(&self, name: &str) -> Option<Value> {
        self.filter(|v| *v || keeps_zero(name)).map(Value::Bool)
    }
}

/// `[]byte` fields are base64 in JSON.
impl FieldJson for Option<Vec<u8>> {
    fn field_json(&self, _: &str) -> Option<Value> {
        self.as_ref()
            .filter(|b| !b.is_empty())
            .map(|b| Value::String(base64(b)))
    }
}

impl<T: ToJson> FieldJson for Option<T> {
    fn field_json(&self, _: &str) -> Option<Value> {
        self.as_ref().map(ToJson::to_json).filter(|v| !v.is_null())
    }
}

// ---- repeated and maps ----

fn non_empty(items: Vec<Value>) -> Option<Value> {
    if items.is_empty() {
        None
    } else {
        Some(Value::Array(items))
    }
}

impl FieldJson for Vec<String> {
    fn field_json(&self, _: &str) -> Option<Value> {
        non_empty(self.iter().map(|s| Value::String(s.clone())).collect())
    }
}

impl FieldJson for Vec<i32> {
    fn field_json(&self, _: &str) -> Option<Value> {
        non_empty(self.iter().map(|v| Value::from(*v)).collect())
    }
}

impl FieldJson for Vec<i64> {
    fn field_json(&self, _: &str) -> Option<Value> {
        non_empty(self.iter().map(|v| Value::from(*v)).collect())
    }
}

impl<T: ToJson> FieldJson for Vec<T> {
    fn field_json(&self, _: &str) -> Option<Value> {
        non_empty(self.iter().map(ToJson::to_json).collect())
    }
}

fn non_empty_map(m: Map<String, Value>) -> Option<Value> {
    if m.is_empty() {
        None
    } else {
        Some(Value::Object(m))
    }
}

impl FieldJson for BTreeMap<String, String> {
    fn field_json(&self, _: &str) -> Option<Value> {
        non_empty_map(
            self.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
}

/// `map[string][]byte` (Secret `data`, ConfigMap `binaryData`): base64 values.
impl FieldJson for BTreeMap<String, Vec<u8>> {
    fn field_json(&self, _: &str) -> Option<Value> {
        non_empty_map(
            self.iter()
                .map(|(k, v)| (k.clone(), Value::String(base64(v))))
                .collect(),
        )
    }
}

impl<T: ToJson> FieldJson for BTreeMap<String, T> {
    fn field_json(&self, _: &str) -> Option<Value> {
        non_empty_map(self.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
    }
}

// ---- apimachinery special types ----

fn timestamp(seconds: Option<i64>, nanos: Option<i32>, micro: bool) -> Value {
    let (s, n) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    // Go encodes the zero time as an empty message.
    if seconds.is_none() && nanos.is_none() {
        return Value::Null;
    }
    match jiff::Timestamp::new(s, if micro { n - n % 1000 } else { 0 }) {
        Ok(t) if micro => Value::String(t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()),
        Ok(t) => Value::String(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Err(_) => Value::Null,
    }
}

impl ToJson for Time {
    fn to_json(&self) -> Value {
        timestamp(self.seconds, self.nanos, false)
    }
}

impl ToJson for MicroTime {
    fn to_json(&self) -> Value {
        timestamp(self.seconds, self.nanos, true)
    }
}

impl ToJson for Quantity {
    fn to_json(&self) -> Value {
        Value::String(self.string.clone().unwrap_or_default())
    }
}

impl ToJson for IntOrString {
    fn to_json(&self) -> Value {
        match self.r#type {
            Some(1) => Value::String(self.str_val.clone().unwrap_or_default()),
            _ => Value::from(self.int_val.unwrap_or(0)),
        }
    }
}

/// Embedded JSON (`runtime.RawExtension`, `FieldsV1`).
fn raw_json(raw: &Option<Vec<u8>>) -> Value {
    raw.as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null)
}

impl ToJson for RawExtension {
    fn to_json(&self) -> Value {
        raw_json(&self.raw)
    }
}

impl ToJson for FieldsV1 {
    fn to_json(&self) -> Value {
        raw_json(&self.raw)
    }
}

/// `metav1.Duration` as Go's `time.Duration.String()`.
impl ToJson for Duration {
    fn to_json(&self) -> Value {
        Value::String(go_duration(self.duration.unwrap_or(0)))
    }
}

fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", trim_fraction(n, div));
    }
    let total_secs = n / 1_000_000_000;
    let (h, m) = (total_secs / 3600, (total_secs % 3600) / 60);
    let secs = trim_fraction(n % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

/// `value / div` with the fraction Go prints (trailing zeros trimmed).
fn trim_fraction(value: u64, div: u64) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names() {
        assert_eq!(json_name("generate_name"), "generateName");
        assert_eq!(json_name("r#type"), "type");
        assert_eq!(json_name("name"), "name");
    }

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"p@ss"), "cEBzcw==");
    }

    #[test]
    fn times_and_durations() {
        let t = Time {
            seconds: Some(1_700_000_000),
            nanos: Some(5),
        };
        assert_eq!(t.to_json(), Value::String("2023-11-14T22:13:20Z".into()));
        assert_eq!(
            Time {
                seconds: None,
                nanos: None
            }
            .to_json(),
            Value::Null
        );
        let m = MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(123_456_789),
        };
        assert_eq!(
            m.to_json(),
            Value::String("2023-11-14T22:13:20.123456Z".into())
        );
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(90_500_000_000), "1m30.5s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
    }

    #[test]
    fn int_or_string() {
        let i = IntOrString {
            r#type: Some(0),
            int_val: Some(8080),
            str_val: Some(String::new()),
        };
        assert_eq!(i.to_json(), Value::from(8080));
        let s = IntOrString {
            r#type: Some(1),
            int_val: Some(0),
            str_val: Some("http".into()),
        };
        assert_eq!(s.to_json(), Value::String("http".into()));
    }

    #[test]
    fn zero_values_follow_go_json() {
        assert_eq!(Some(0i32).field_json("hostPort"), None);
        assert_eq!(Some(0i32).field_json("replicas"), Some(Value::from(0)));
        assert_eq!(Some(false).field_json("stdin"), None);
        assert_eq!(
            Some(false).field_json("allowPrivilegeEscalation"),
            Some(Value::Bool(false))
        );
        assert_eq!(Some(String::new()).field_json("namespace"), None);
    }
}
