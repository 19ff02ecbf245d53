//! `x-kubernetes-validations`: CEL rules compiled once per schema node and evaluated like
//! apiextensions-apiserver (`pkg/apiserver/schema/cel/validation.go`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::common::types::{CelOptional, LIST_TYPE};
use cel::common::value::{CowVal, Val};
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, IdedExpr, Program};
use serde_json::Value;

use super::errors::{FieldError, FieldErrorKind};
use super::formats;
use super::node::{Additional, Node};

/// One compiled rule with the data needed to report its failure.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub rule: String,
    pub message: String,
    pub message_expression: Option<(String, Arc<Program>)>,
    /// `FieldValueInvalid` (default), `FieldValueForbidden`, `FieldValueRequired`, `FieldValueDuplicate`.
    pub reason: Option<String>,
    /// `fieldPath` without its leading dot, e.g. `spec.subject`.
    pub field_path: Option<String>,
    pub optional_old_self: bool,
    pub uses_old_self: bool,
    program: Arc<Program>,
}

/// The environment: CEL's standard library and macros, plus the extension libraries
/// Kubernetes enables (strings, lists) and a few Kubernetes list helpers.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // Registration only fails on duplicate declarations, which would be a programming error
    // caught by the tests; a partially extended environment still evaluates the rest.
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::lists);
    let _ = env.add_member_overload(
        "isSorted",
        "k8s_list_is_sorted",
        LIST_TYPE,
        vec![],
        is_sorted,
    );
    let _ = env.add_member_overload("sum", "k8s_list_sum", LIST_TYPE, vec![], sum);
    let _ = env.add_member_overload("min", "k8s_list_min", LIST_TYPE, vec![], list_min);
    let _ = env.add_member_overload("max", "k8s_list_max", LIST_TYPE, vec![], list_max);
    env.set_error_on_duplicate_map_keys(false);
    Arc::new(env)
});

const REASONS: [&str; 4] = [
    "FieldValueInvalid",
    "FieldValueForbidden",
    "FieldValueRequired",
    "FieldValueDuplicate",
];

impl CompiledRule {
    /// Compiles one `x-kubernetes-validations` entry declared on `node` at `path`.
    pub fn compile(raw: &Value, node: &Node, path: &str) -> Result<CompiledRule, Box<FieldError>> {
        let rule = raw
            .get("rule")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if rule.trim().is_empty() {
            return Err(Box::new(FieldError::required(format!("{path}.rule"), "")));
        }
        let program = ENV.compile(&rule).map_err(|e| {
            Box::new(FieldError::invalid(
                format!("{path}.rule"),
                Value::String(rule.clone()),
                format!(
                    "compilation failed: ERROR: <input>: {}",
                    one_line(&e.to_string())
                ),
            ))
        })?;
        if let Some(why) = check_fields(&program, node) {
            return Err(Box::new(FieldError::invalid(
                format!("{path}.rule"),
                Value::String(rule.clone()),
                format!("compilation failed: ERROR: {why}"),
            )));
        }
        let uses_old_self = program.references().has_variable("oldSelf");
        let message = raw
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        if message.contains('\n') {
            return Err(Box::new(FieldError::invalid(
                format!("{path}.message"),
                Value::String(message),
                "message must not contain line breaks",
            )));
        }
        let message_expression = match raw.get("messageExpression").and_then(Value::as_str) {
            Some(src) if !src.trim().is_empty() => {
                let p = ENV.compile(src).map_err(|e| {
                    Box::new(FieldError::invalid(
                        format!("{path}.messageExpression"),
                        Value::String(src.to_string()),
                        format!(
                            "messageExpression compilation failed: ERROR: <input>: {}",
                            one_line(&e.to_string())
                        ),
                    ))
                })?;
                if p.references().has_variable("oldSelf") {
                    return Err(Box::new(FieldError::invalid(
                        format!("{path}.messageExpression"),
                        Value::String(src.to_string()),
                        "messageExpression compilation failed: ERROR: <input>: undeclared reference to 'oldSelf'",
                    )));
                }
                Some((src.to_string(), Arc::new(p)))
            }
            _ => None,
        };
        let reason = raw.get("reason").and_then(Value::as_str).map(String::from);
        if let Some(r) = &reason
            && !REASONS.contains(&r.as_str())
        {
            return Err(Box::new(FieldError::not_supported(
                format!("{path}.reason"),
                Value::String(r.clone()),
                &REASONS.map(String::from),
            )));
        }
        let field_path = match raw.get("fieldPath").and_then(Value::as_str) {
            Some(fp) if !fp.is_empty() => Some(normalize_field_path(fp, node).map_err(|why| {
                Box::new(FieldError::invalid(
                    format!("{path}.fieldPath"),
                    Value::String(fp.to_string()),
                    why,
                ))
            })?),
            _ => None,
        };
        let optional_old_self = raw
            .get("optionalOldSelf")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if optional_old_self && !uses_old_self {
            return Err(Box::new(FieldError::invalid(
                format!("{path}.optionalOldSelf"),
                Value::Bool(true),
                "may not be set to true for non-transition rules",
            )));
        }
        Ok(CompiledRule {
            rule,
            message,
            message_expression,
            reason,
            field_path,
            optional_old_self,
            uses_old_self,
            program: Arc::new(program),
        })
    }

    /// `ruleErrorString`: the message if set, else the rule.
    fn error_string(&self) -> &str {
        if self.message.is_empty() {
            self.rule.trim()
        } else {
            &self.message
        }
    }

    /// Evaluates the rule against `value` (never null) at `path` and returns its error, if any.
    /// Transition rules are skipped when there is no old value, unless `optionalOldSelf`.
    #[cfg(test)]
    pub fn evaluate(
        &self,
        node: &Node,
        value: &Value,
        old: Option<&Value>,
        resource_root: bool,
        path: &str,
    ) -> Option<FieldError> {
        let bindings = Bindings::new(node, value, old, resource_root);
        self.evaluate_with(node, &bindings, path)
    }

    /// Evaluates the rule with values converted once per schema node.
    pub fn evaluate_with(&self, node: &Node, b: &Bindings, path: &str) -> Option<FieldError> {
        if self.uses_old_self && b.old_val.is_none() && !self.optional_old_self {
            return None;
        }
        let type_label = Value::String(node.type_label());
        let self_val = &b.self_val;
        let mut ctx = Context::with_env(ENV.clone());
        ctx.add_variable_from_value("self", self_val.clone());
        if self.uses_old_self {
            if self.optional_old_self {
                let opt = match b.old_val.clone().map(Box::<dyn Val>::try_from) {
                    Some(Ok(v)) => CelOptional::of(v),
                    _ => CelOptional::none(),
                };
                ctx.add_variable_as_val("oldSelf", Box::new(opt));
            } else if let Some(o) = &b.old_val {
                ctx.add_variable_from_value("oldSelf", o.clone());
            }
        }
        let field = display_path(path);
        match self.program.execute(&ctx) {
            Err(e) => {
                let detail = match &e {
                    ExecutionError::NoSuchOverload(_) => format!(
                        "'no such overload': call arguments did not match a supported operator, function or macro signature for rule: {}",
                        self.error_string()
                    ),
                    other => format!(
                        "{} evaluating rule: {}",
                        cel_go_error(other),
                        self.error_string()
                    ),
                };
                Some(FieldError::invalid(field, type_label, detail))
            }
            Ok(cel::Value::Bool(true)) => None,
            Ok(_) => {
                let fld = match &self.field_path {
                    Some(fp) => child_path(path, fp),
                    None => path.to_string(),
                };
                let fld = display_path(&fld);
                let detail = self.eval_message_expression(self_val).unwrap_or_else(|| {
                    if self.message.is_empty() {
                        format!("failed rule: {}", self.rule.trim())
                    } else {
                        self.message.clone()
                    }
                });
                Some(match self.reason.as_deref() {
                    Some("FieldValueForbidden") => FieldError::forbidden(fld, detail),
                    Some("FieldValueRequired") => FieldError::required(fld, detail),
                    Some("FieldValueDuplicate") => {
                        FieldError::new(fld, FieldErrorKind::Duplicate, Some(type_label), "")
                    }
                    _ => FieldError::invalid(fld, type_label, detail),
                })
            }
        }
    }

    /// The message from `messageExpression`, or `None` to fall back to `message` (on any
    /// evaluation problem, as the apiserver does after logging it).
    fn eval_message_expression(&self, self_val: &cel::Value) -> Option<String> {
        let (_, program) = self.message_expression.as_ref()?;
        let mut ctx = Context::with_env(ENV.clone());
        ctx.add_variable_from_value("self", self_val.clone());
        match program.execute(&ctx) {
            Ok(cel::Value::String(s)) => {
                let t = s.trim();
                if t.is_empty() || t.contains('\n') || t.len() > 5 * 1024 {
                    None
                } else {
                    Some(t.to_string())
                }
            }
            _ => None,
        }
    }
}

/// The static part of cel-go's type check that catches most mistakes in rules: selecting a
/// field the schema does not declare on `self`/`oldSelf` (`undefined field 'x'`). Values the
/// schema leaves open (additionalProperties, preserve-unknown-fields) are not checked.
fn check_fields(program: &Program, node: &Node) -> Option<String> {
    let mut found = None;
    walk(program.expression(), node, &mut |id, field| {
        if found.is_none() {
            let pos = program
                .source_info()
                .offset_for(id)
                .map(|(start, _)| format!("<input>:1:{}", start + 1))
                .unwrap_or_else(|| "<input>".to_string());
            found = Some(format!("{pos}: undefined field '{field}'"));
        }
    });
    found
}

/// Visits `e`, reporting undefined fields; returns the schema node `e` denotes when known.
fn walk<'n>(e: &IdedExpr, root: &'n Node, report: &mut dyn FnMut(u64, &str)) -> Option<&'n Node> {
    match &e.expr {
        Expr::Ident(name) if name == "self" || name == "oldSelf" => Some(root),
        Expr::Select(sel) => {
            let parent = walk(&sel.operand, root, report)?;
            let closed = !parent.properties.is_empty()
                && parent.additional.is_none()
                && !parent.preserve_unknown;
            match parent.property(&sel.field) {
                Some(child) => Some(child),
                None => {
                    let meta = matches!(sel.field.as_str(), "apiVersion" | "kind" | "metadata");
                    if closed && !meta {
                        report(e.id, &sel.field);
                    }
                    None
                }
            }
        }
        Expr::Call(call) => {
            // Walked for its undefined fields only: no member function returns a schema node.
            if let Some(t) = call.target.as_deref() {
                walk(t, root, report);
            }
            let args: Vec<Option<&Node>> =
                call.args.iter().map(|a| walk(a, root, report)).collect();
            if call.func_name == "_[_]" {
                // Indexing a list or a map gives its items.
                let container = args.first().copied().flatten()?;
                return container.items.as_deref().or(match &container.additional {
                    Some(Additional::Schema(s)) => Some(s),
                    _ => None,
                });
            }
            None
        }
        Expr::Comprehension(c) => {
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                walk(x, root, report);
            }
            None
        }
        Expr::List(l) => {
            for x in &l.elements {
                walk(x, root, report);
            }
            None
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    walk(&me.key, root, report);
                    walk(&me.value, root, report);
                }
            }
            None
        }
        _ => None,
    }
}

/// `self` and `oldSelf` of the rules of one schema node, converted once.
pub struct Bindings {
    self_val: cel::Value,
    old_val: Option<cel::Value>,
}

impl Bindings {
    pub fn new(node: &Node, value: &Value, old: Option<&Value>, resource_root: bool) -> Self {
        Bindings {
            self_val: to_cel(value, Some(node), resource_root),
            old_val: old
                .filter(|o| !o.is_null())
                .map(|o| to_cel(o, Some(node), resource_root)),
        }
    }
}

/// The apimachinery rendering of a path: the root (no path) prints as `<nil>`.
pub fn display_path(path: &str) -> String {
    if path.is_empty() {
        "<nil>".to_string()
    } else {
        path.to_string()
    }
}

pub fn child_path(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_string()
    } else {
        format!("{path}.{child}")
    }
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// cel-go's wording of the common runtime errors (the rest keep cel-rust's text).
fn cel_go_error(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::DivisionByZero(_) => "division by zero".to_string(),
        ExecutionError::RemainderByZero(_) => "modulus by zero".to_string(),
        ExecutionError::Overflow(..) => "integer overflow".to_string(),
        ExecutionError::IndexOutOfBounds(i) => format!("index out of bounds: {}", cel_display(i)),
        ExecutionError::UndeclaredReference(r) => format!("no such attribute: {r}"),
        other => {
            let s = other.to_string();
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                None => s,
            }
        }
    }
}

fn cel_display(v: &cel::Value) -> String {
    match v {
        cel::Value::Int(i) => i.to_string(),
        cel::Value::UInt(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}

/// Validates a rule's `fieldPath` against the schema and returns it without the leading dot
/// (`ValidFieldPath`): `.a.b`, `.a['b.c']`.
fn normalize_field_path(fp: &str, node: &Node) -> Result<String, String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = node;
    let bytes: Vec<char> = fp.chars().collect();
    let mut i = 0;
    let invalid = || "does not refer to a valid field".to_string();
    while i < bytes.len() {
        let name = match bytes[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < bytes.len() && bytes[i] != '.' && bytes[i] != '[' {
                    i += 1;
                }
                bytes[start..i].iter().collect::<String>()
            }
            '[' => {
                i += 1;
                if i >= bytes.len() || bytes[i] != '\'' {
                    return Err("expected single quoted string".to_string());
                }
                i += 1;
                let mut s = String::new();
                while i < bytes.len() && bytes[i] != '\'' {
                    if bytes[i] == '\\' && i + 1 < bytes.len() {
                        i += 1;
                    }
                    s.push(bytes[i]);
                    i += 1;
                }
                i += 1;
                if i >= bytes.len() || bytes[i] != ']' {
                    return Err("expected ]".to_string());
                }
                i += 1;
                s
            }
            c => return Err(format!("expected [ or . but got: {c}")),
        };
        if name.is_empty() {
            return Err("unexpected end of JSON path".to_string());
        }
        if let Some(p) = cur.properties.get(&name) {
            out.push(name);
            cur = p;
        } else if let Some(Additional::Schema(s)) = &cur.additional {
            let last = out.pop().unwrap_or_default();
            out.push(format!("{last}[{name}]"));
            cur = s;
        } else {
            return Err(invalid());
        }
    }
    Ok(out.join("."))
}

/// Converts a JSON value to a CEL value the way `UnstructuredToVal` types it by the schema:
/// `number` fields are doubles even when written as integers, `date-time`/`date` strings are
/// timestamps, `duration` strings durations, `byte` strings bytes. At a resource root only
/// `metadata.name` and `metadata.generateName` are visible.
pub fn to_cel(v: &Value, node: Option<&Node>, resource_root: bool) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            let is_number = node.is_some_and(|n| n.type_.as_deref() == Some("number"));
            if is_number {
                cel::Value::Float(n.as_f64().unwrap_or(0.0))
            } else if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => string_to_cel(s, node.and_then(|n| n.format.as_deref())),
        Value::Array(items) => {
            let item_node = node.and_then(|n| n.items.as_deref());
            cel::Value::List(Arc::new(
                items.iter().map(|i| to_cel(i, item_node, false)).collect(),
            ))
        }
        Value::Object(obj) => {
            let mut map: HashMap<Key, cel::Value> = HashMap::with_capacity(obj.len());
            for (k, val) in obj {
                let child = node.and_then(|n| n.property(k));
                let cv = if resource_root && k == "metadata" {
                    match val {
                        Value::Object(meta) => {
                            let mut m: HashMap<Key, cel::Value> = HashMap::new();
                            for f in ["name", "generateName"] {
                                if let Some(Value::String(s)) = meta.get(f) {
                                    m.insert(
                                        Key::String(Arc::new(f.to_string())),
                                        cel::Value::String(Arc::new(s.clone())),
                                    );
                                }
                            }
                            cel::Value::Map(Map { map: Arc::new(m) })
                        }
                        _ => cel::Value::Null,
                    }
                } else {
                    to_cel(val, child, child.is_some_and(|c| c.embedded_resource))
                };
                map.insert(Key::String(Arc::new(k.clone())), cv);
            }
            cel::Value::Map(Map { map: Arc::new(map) })
        }
    }
}

fn string_to_cel(s: &str, format: Option<&str>) -> cel::Value {
    match format {
        Some("date-time" | "datetime") => {
            if let Some(ts) = formats::parse_date_time(s) {
                return cel::Value::Timestamp(ts);
            }
        }
        Some("date") => {
            if let Some(ts) = formats::parse_date(s) {
                return cel::Value::Timestamp(ts);
            }
        }
        Some("duration") => {
            if let Some(d) = formats::parse_duration(s) {
                return cel::Value::Duration(d);
            }
        }
        Some("byte") => {
            if let Some(b) = formats::decode_base64(s) {
                return cel::Value::Bytes(Arc::new(b));
            }
        }
        _ => {}
    }
    cel::Value::String(Arc::new(s.to_string()))
}

fn list_values(args: &[CowVal<'_, '_>]) -> Result<Vec<cel::Value>, ExecutionError> {
    let target = args
        .first()
        .ok_or_else(ExecutionError::missing_argument_or_target)?;
    match cel::Value::try_from(target.as_ref())? {
        cel::Value::List(items) => Ok(items.as_ref().clone()),
        other => Err(ExecutionError::unsupported_target_type(other)),
    }
}

fn owned<'b, 'v>(v: cel::Value) -> Result<CowVal<'b, 'v>, ExecutionError> {
    Ok(CowVal::Owned(Box::<dyn Val>::try_from(v)?))
}

fn compare(a: &cel::Value, b: &cel::Value) -> Result<std::cmp::Ordering, ExecutionError> {
    a.partial_cmp(b)
        .ok_or_else(|| ExecutionError::ValuesNotComparable(a.clone(), b.clone()))
}

fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = list_values(&args)?;
    for w in items.windows(2) {
        if compare(&w[0], &w[1])? == std::cmp::Ordering::Greater {
            return owned(cel::Value::Bool(false));
        }
    }
    owned(cel::Value::Bool(true))
}

fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = list_values(&args)?;
    let mut acc = cel::Value::Int(0);
    for (i, v) in items.into_iter().enumerate() {
        acc = match (acc, v) {
            (_, v) if i == 0 => v,
            (cel::Value::Int(a), cel::Value::Int(b)) => cel::Value::Int(
                a.checked_add(b)
                    .ok_or_else(|| ExecutionError::function_error("sum", "integer overflow"))?,
            ),
            (cel::Value::UInt(a), cel::Value::UInt(b)) => cel::Value::UInt(a.wrapping_add(b)),
            (cel::Value::Float(a), cel::Value::Float(b)) => cel::Value::Float(a + b),
            (cel::Value::Duration(a), cel::Value::Duration(b)) => cel::Value::Duration(a + b),
            (a, b) => return Err(ExecutionError::UnsupportedBinaryOperator("add", a, b)),
        };
    }
    owned(acc)
}

fn extreme<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
    want: std::cmp::Ordering,
    name: &str,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let items = list_values(&args)?;
    let mut best: Option<cel::Value> = None;
    for v in items {
        best = Some(match best {
            None => v,
            Some(b) => {
                if compare(&v, &b)? == want {
                    v
                } else {
                    b
                }
            }
        });
    }
    match best {
        Some(b) => owned(b),
        None => Err(ExecutionError::function_error(
            name,
            format!("{name} called on empty list"),
        )),
    }
}

fn list_min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme(args, std::cmp::Ordering::Less, "min")
}

fn list_max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme(args, std::cmp::Ordering::Greater, "max")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(schema: Value) -> Node {
        let mut errs = Vec::new();
        let n = Node::compile(&schema, "openAPIV3Schema", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        n
    }

    fn eval(schema: Value, value: Value, old: Option<Value>) -> Vec<String> {
        let n = node(schema);
        n.rules
            .iter()
            .filter_map(|r| r.evaluate(&n, &value, old.as_ref(), false, "spec"))
            .map(|e| e.message())
            .collect()
    }

    #[test]
    fn basic_rules() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}, "s": {"type": "string"}},
        "x-kubernetes-validations": [
            {"rule": "self.a > 1", "message": "a must exceed 1"},
            {"rule": "!has(self.s) || self.s.startsWith('x')"},
            {"rule": "self.a < 10", "messageExpression": "'a is ' + string(self.a)"},
            {"rule": "[1,2,3].isSorted() && [1,2].sum() == 3 && 'AB'.lowerAscii() == 'ab' && self.s.matches('^x')"}
        ]});
        assert_eq!(
            eval(schema.clone(), json!({"a": 5, "s": "xy"}), None),
            Vec::<String>::new()
        );
        assert_eq!(
            eval(schema, json!({"a": 11, "s": "y"}), None),
            vec![
                r#"spec: Invalid value: "object": failed rule: !has(self.s) || self.s.startsWith('x')"#,
                r#"spec: Invalid value: "object": a is 11"#,
                r#"spec: Invalid value: "object": failed rule: [1,2,3].isSorted() && [1,2].sum() == 3 && 'AB'.lowerAscii() == 'ab' && self.s.matches('^x')"#,
            ]
        );
    }

    #[test]
    fn transition_rules_need_old_value() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec is immutable once accepted"}]});
        assert!(eval(schema.clone(), json!({"a": "x"}), None).is_empty());
        assert!(eval(schema.clone(), json!({"a": "x"}), Some(json!({"a": "x"}))).is_empty());
        assert_eq!(
            eval(schema, json!({"a": "y"}), Some(json!({"a": "x"}))),
            vec![r#"spec: Invalid value: "object": spec is immutable once accepted"#]
        );
    }

    #[test]
    fn optional_old_self() {
        let schema = json!({"type": "string", "x-kubernetes-validations": [
            {"rule": "oldSelf.hasValue() ? oldSelf.value() == self : self == 'new'", "optionalOldSelf": true}]});
        assert!(eval(schema.clone(), json!("new"), None).is_empty());
        assert_eq!(eval(schema.clone(), json!("other"), None).len(), 1);
        assert!(eval(schema, json!("other"), Some(json!("other"))).is_empty());
    }

    #[test]
    fn evaluation_errors_and_reasons() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "x-kubernetes-validations": [
            {"rule": "self.b == 'x'"},
            {"rule": "false", "reason": "FieldValueForbidden", "message": "no", "fieldPath": ".a"}
        ]});
        assert_eq!(
            eval(schema, json!({"a": "x"}), None),
            vec![
                r#"spec: Invalid value: "object": no such key: b evaluating rule: self.b == 'x'"#,
                "spec.a: Forbidden: no",
            ]
        );
    }

    #[test]
    fn typed_values() {
        let schema = json!({"type": "object", "properties": {
                "d": {"type": "string", "format": "duration"},
                "t": {"type": "string", "format": "date-time"},
                "n": {"type": "number"}},
            "x-kubernetes-validations": [
                {"rule": "self.d > duration('1h') && self.t > timestamp('2020-01-01T00:00:00Z') && self.n == 2.0"}]});
        assert!(
            eval(
                schema,
                json!({"d": "2h", "t": "2024-05-01T10:00:00Z", "n": 2}),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn undefined_fields_are_compile_errors() {
        let mut errs = Vec::new();
        Node::compile(
            &json!({"type": "object", "properties": {
            "a": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "string"}}}},
            "m": {"type": "object", "additionalProperties": {"type": "string"}}},
            "x-kubernetes-validations": [
                {"rule": "self.a == 'x' && self.m.anything == 'y' && self.items.all(i, i.n != '')"},
                {"rule": "has(self.b)"},
                {"rule": "self.items[0].nope == 'x'"}
            ]}),
            "openAPIV3Schema",
            &mut errs,
        );
        let msgs: Vec<String> = errs.iter().map(FieldError::message).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].contains("x-kubernetes-validations[1].rule")
                && msgs[0].contains("undefined field 'b'"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].contains("x-kubernetes-validations[2].rule")
                && msgs[1].contains("undefined field 'nope'"),
            "{msgs:?}"
        );
    }

    #[test]
    fn compile_errors() {
        let mut errs = Vec::new();
        Node::compile(
            &json!({"type": "string", "x-kubernetes-validations": [{"rule": "self =="}, {"rule": "true", "reason": "Nope"}]}),
            "openAPIV3Schema",
            &mut errs,
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].message().starts_with(
            r#"openAPIV3Schema.x-kubernetes-validations[0].rule: Invalid value: "self ==": compilation failed"#
        ));
        assert!(errs[1].message().contains("Unsupported value: \"Nope\""));
    }
}
