//! The subset of Kubernetes JSONPath that printer columns use: `.a.b`, `.a[0].b`, `.a[*].b`,
//! `.a['b.c']`, `.a[-1]` and filters like `.a[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Vec<String>,
    op: Option<(String, Value)>,
}

/// A parsed JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    /// Parses `.a.b`-style paths; `{...}` braces and a leading `$` are accepted.
    pub fn parse(src: &str) -> Result<JsonPath, String> {
        let s = src.trim();
        let s = s
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(s)
            .trim();
        let s = s.strip_prefix('$').unwrap_or(s);
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        let mut steps = Vec::new();
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    let start = i;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    if name.is_empty() {
                        return Err(format!("unrecognized column definition {src:?}"));
                    }
                    if name == "*" {
                        steps.push(Step::Wildcard);
                    } else {
                        steps.push(Step::Field(name));
                    }
                }
                '[' => {
                    let end =
                        find_closing(&chars, i).ok_or_else(|| format!("unclosed [ in {src:?}"))?;
                    let inner: String = chars[i + 1..end].iter().collect();
                    steps.push(parse_bracket(inner.trim())?);
                    i = end + 1;
                }
                c => return Err(format!("unexpected {c:?} in JSONPath {src:?}")),
            }
        }
        Ok(JsonPath { steps })
    }

    /// Every value the path selects, in document order (missing keys select nothing).
    pub fn find<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for step in &self.steps {
            let mut next = Vec::new();
            for v in current {
                match step {
                    Step::Field(name) => {
                        if let Some(x) = v.get(name.as_str()) {
                            next.push(x);
                        }
                    }
                    Step::Index(i) => {
                        if let Value::Array(items) = v {
                            let idx = if *i < 0 { items.len() as i64 + i } else { *i };
                            if idx >= 0
                                && let Some(x) = items.get(idx as usize)
                            {
                                next.push(x);
                            }
                        }
                    }
                    Step::Wildcard => match v {
                        Value::Array(items) => next.extend(items.iter()),
                        Value::Object(map) => next.extend(map.values()),
                        _ => {}
                    },
                    Step::Filter(f) => {
                        if let Value::Array(items) = v {
                            next.extend(items.iter().filter(|item| f.matches(item)));
                        }
                    }
                }
            }
            current = next;
        }
        current
    }
}

fn find_closing(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (j, &c) in chars.iter().enumerate().skip(open) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"')))
    {
        Some(&s[1..s.len() - 1])
    } else {
        None
    }
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(name) = unquote(inner) {
        return Ok(Step::Field(name.to_string()));
    }
    if let Ok(i) = inner.parse::<i64>() {
        return Ok(Step::Index(i));
    }
    if let Some(expr) = inner.strip_prefix("?(").and_then(|x| x.strip_suffix(')')) {
        return parse_filter(expr.trim()).map(Step::Filter);
    }
    Err(format!("unsupported JSONPath subscript [{inner}]"))
}

fn parse_filter(expr: &str) -> Result<Filter, String> {
    const OPS: [&str; 6] = ["==", "!=", "<=", ">=", "<", ">"];
    let (lhs, op) = match OPS
        .iter()
        .find_map(|op| expr.find(op).map(|pos| (pos, *op)))
    {
        Some((pos, op)) => {
            let rhs = expr[pos + op.len()..].trim();
            let literal = match unquote(rhs) {
                Some(s) => Value::String(s.to_string()),
                None => serde_json::from_str(rhs)
                    .map_err(|_| format!("unsupported filter literal {rhs}"))?,
            };
            (&expr[..pos], Some((op.to_string(), literal)))
        }
        None => (expr, None),
    };
    let lhs = lhs.trim();
    let path = lhs
        .strip_prefix('@')
        .ok_or_else(|| format!("filter must start with @: {expr}"))?;
    let left: Vec<String> = path
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    Ok(Filter { left, op })
}

impl Filter {
    fn matches(&self, item: &Value) -> bool {
        let mut v = item;
        for seg in &self.left {
            match v.get(seg.as_str()) {
                Some(x) => v = x,
                None => return false,
            }
        }
        let Some((op, lit)) = &self.op else {
            return !v.is_null();
        };
        let ord = match (v, lit) {
            (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (a, b) => {
                if a == b {
                    Some(std::cmp::Ordering::Equal)
                } else {
                    None
                }
            }
        };
        match op.as_str() {
            "==" => ord == Some(std::cmp::Ordering::Equal),
            "!=" => ord != Some(std::cmp::Ordering::Equal),
            "<" => ord == Some(std::cmp::Ordering::Less),
            ">" => ord == Some(std::cmp::Ordering::Greater),
            "<=" => matches!(
                ord,
                Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
            ),
            ">=" => matches!(
                ord,
                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let doc = json!({"spec": {"type": "Access", "list": [{"n": 1}, {"n": 2}], "m": {"a.b": "x"}},
            "status": {"conditions": [{"type": "Accepted", "status": "True"}, {"type": "Ready", "status": "False"}]}});
        let find = |p: &str| {
            JsonPath::parse(p)
                .unwrap()
                .find(&doc)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(find(".spec.type"), vec![json!("Access")]);
        assert_eq!(find(".spec.list[1].n"), vec![json!(2)]);
        assert_eq!(find(".spec.list[-1].n"), vec![json!(2)]);
        assert_eq!(find(".spec.list[*].n"), vec![json!(1), json!(2)]);
        assert_eq!(find(".spec.m['a.b']"), vec![json!("x")]);
        assert_eq!(
            find(r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("False")]
        );
        assert_eq!(find(".spec.missing.x"), Vec::<Value>::new());
        assert!(JsonPath::parse(".spec[").is_err());
    }
}
