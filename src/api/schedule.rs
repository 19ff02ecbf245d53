//! Cron schedules and time-zone names, as written in retention rules and consent sweeps.
//!
//! The CRD pattern checks the shape and field ranges of a five-field cron expression (the
//! dialect of Kubernetes CronJobs: minute hour day-of-month month day-of-week, with `*`, `?`,
//! lists, ranges, steps, month and weekday names, and the `@daily`-style macros), so a typo is
//! refused at apply time. Computing the next run is the scheduler's job.

use std::{borrow::Cow, fmt, sync::LazyLock};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A five-field cron expression or a macro such as `@daily`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CronSchedule(String);

const MACROS: &str = "@(yearly|annually|monthly|weekly|daily|midnight|hourly)";

/// Builds the pattern for one cron field from the pattern of a single value.
fn field(value: &str) -> String {
    // A term is `*` or `?` or a value or a range, optionally with a step; a field is a list of
    // terms. `?` is only meaningful in the day fields but robfig/cron accepts it anywhere.
    // `[*]` and `[?]` rather than `\\*` and `\\?`: the pattern is also embedded in a CEL string,
    // where a backslash would need escaping again.
    let term = format!("([*]|[?]|{value}(-{value})?)(/[1-9][0-9]?)?");
    format!("{term}(,{term})*")
}

/// The regular expression (RE2 and ECMA compatible) published as the CRD `pattern`.
pub fn pattern() -> String {
    let minute = field("[0-5]?[0-9]");
    let hour = field("([01]?[0-9]|2[0-3])");
    let dom = field("(0?[1-9]|[12][0-9]|3[01])");
    let month = field(
        "(0?[1-9]|1[0-2]|[Jj][Aa][Nn]|[Ff][Ee][Bb]|[Mm][Aa][Rr]|[Aa][Pp][Rr]|[Mm][Aa][Yy]|[Jj][Uu][Nn]|[Jj][Uu][Ll]|[Aa][Uu][Gg]|[Ss][Ee][Pp]|[Oo][Cc][Tt]|[Nn][Oo][Vv]|[Dd][Ee][Cc])",
    );
    let dow = field(
        "([0-7]|[Ss][Uu][Nn]|[Mm][Oo][Nn]|[Tt][Uu][Ee]|[Ww][Ee][Dd]|[Tt][Hh][Uu]|[Ff][Rr][Ii]|[Ss][Aa][Tt])",
    );
    format!("^({MACROS}|{minute} +{hour} +{dom} +{month} +{dow})$")
}

static PATTERN: LazyLock<String> = LazyLock::new(pattern);

impl CronSchedule {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The five fields, with macros expanded (`@daily` is `0 0 * * *`).
    pub fn fields(&self) -> [&str; 5] {
        let expanded = match self.0.as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let mut out = ["*"; 5];
        for (slot, f) in out.iter_mut().zip(expanded.split_whitespace()) {
            *slot = f;
        }
        out
    }
}

impl std::str::FromStr for CronSchedule {
    type Err = String;

    /// Accepts what the CRD pattern accepts. Without a regex engine at run time, this checks the
    /// same grammar by hand; a unit test keeps the two in agreement.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if valid(s) {
            Ok(CronSchedule(s.to_string()))
        } else {
            Err(format!(
                "{CRON_HELP} (got {:?})",
                s.chars().take(100).collect::<String>()
            ))
        }
    }
}

fn valid(s: &str) -> bool {
    if let Some(m) = s.strip_prefix('@') {
        return matches!(
            m,
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly"
        );
    }
    // Only spaces separate fields (the pattern uses ` +`).
    if s.contains(|c: char| c.is_whitespace() && c != ' ') {
        return false;
    }
    let fields: Vec<&str> = s.split(' ').filter(|f| !f.is_empty()).collect();
    if fields.len() != 5 || s.starts_with(' ') || s.ends_with(' ') {
        return false;
    }
    let months = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let limits: [(u32, u32, &[&str]); 5] = [
        (0, 59, &[]),
        (0, 23, &[]),
        (1, 31, &[]),
        (1, 12, &months),
        (0, 7, &days),
    ];
    fields
        .iter()
        .zip(limits)
        .all(|(f, (lo, hi, names))| f.split(',').all(|term| valid_term(term, lo, hi, names)))
}

fn valid_term(term: &str, lo: u32, hi: u32, names: &[&str]) -> bool {
    let (range, step) = match term.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (term, None),
    };
    // Steps are 1..=99 without a leading zero, as in the pattern `/[1-9][0-9]?`.
    if let Some(step) = step
        && (!(1..=2).contains(&step.len())
            || !step.bytes().all(|b| b.is_ascii_digit())
            || step.starts_with('0'))
    {
        return false;
    }
    let value_ok = |v: &str| {
        if !v.is_empty() && v.len() <= 2 && v.bytes().all(|b| b.is_ascii_digit()) {
            v.parse::<u32>().is_ok_and(|n| (lo..=hi).contains(&n))
        } else {
            names.contains(&v.to_ascii_lowercase().as_str())
        }
    };
    if range == "*" || range == "?" {
        return true;
    }
    match range.split_once('-') {
        Some((a, b)) => value_ok(a) && value_ok(b),
        None => value_ok(range),
    }
}

/// What to write instead of an invalid schedule.
pub const CRON_HELP: &str = "invalid cron schedule: use five fields \"minute hour day-of-month month day-of-week\" (e.g. \"0 3 * * *\" for 03:00 every day; minutes 0-59, hours 0-23, days 1-31, months 1-12 or JAN-DEC, weekdays 0-7 or SUN-SAT) or @hourly, @daily, @weekly, @monthly, @yearly";

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.0)
    }
}

impl Serialize for CronSchedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Cow::<str>::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for CronSchedule {
    fn schema_name() -> Cow<'static, str> {
        "CronSchedule".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // The CEL rule repeats the pattern so that the apiserver's answer says what to write,
        // not only which regular expression failed.
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": PATTERN.as_str(),
            "x-kubernetes-validations": [{
                "rule": format!("self.matches('{}')", PATTERN.as_str()),
                "message": CRON_HELP,
            }],
        })
    }
}

/// An IANA time-zone name such as `Europe/Berlin` or `UTC`. The schema checks the shape; the
/// scheduler checks the name against its time-zone database and reports an unknown zone in the
/// policy's conditions.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZoneName(pub String);

impl Default for TimeZoneName {
    fn default() -> Self {
        TimeZoneName("UTC".to_string())
    }
}

impl TimeZoneName {
    /// Looks the zone up in the time-zone database.
    pub fn resolve(&self) -> Result<jiff::tz::TimeZone, String> {
        jiff::tz::TimeZone::get(&self.0).map_err(|e| {
            format!(
                "unknown time zone {:?}: use an IANA name such as UTC, Europe/Berlin or America/New_York ({e})",
                self.0
            )
        })
    }
}

impl JsonSchema for TimeZoneName {
    fn schema_name() -> Cow<'static, str> {
        "TimeZoneName".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: [&str; 14] = [
        "0 3 * * *",
        "*/15 * * * *",
        "0 0 1 * *",
        "30 2 * * sun",
        "0 4 * JAN-MAR MON-FRI",
        "0,30 8-18/2 * * 1-5",
        "0 0 ? * 7",
        "59 23 31 12 6",
        "@daily",
        "@hourly",
        "@annually",
        "0  3 * * *",
        "5 4 1,15 * *",
        "0 0 29 2 *",
    ];
    const BAD: [&str; 17] = [
        "",
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 32 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
        "0 0 * * funday",
        "@every 1h",
        "@fortnightly",
        "0 0 * * * ",
        "0\t0 * * *",
        "*/100 * * * *",
        "*/0 * * * *",
        "every day at 3",
    ];

    #[test]
    fn parser_accepts_and_refuses() {
        for g in GOOD {
            assert!(g.parse::<CronSchedule>().is_ok(), "{g:?} should parse");
        }
        for b in BAD {
            let e = b.parse::<CronSchedule>().unwrap_err();
            assert!(e.contains("0 3 * * *"), "{e}");
        }
    }

    #[test]
    fn pattern_agrees_with_parser() {
        let re = regex::Regex::new(&pattern()).unwrap();
        for s in GOOD.iter().chain(BAD.iter()) {
            assert_eq!(
                re.is_match(s) && !s.is_empty(),
                s.parse::<CronSchedule>().is_ok(),
                "pattern and parser disagree on {s:?}"
            );
        }
    }

    #[test]
    fn macros_expand() {
        let c: CronSchedule = "@weekly".parse().unwrap();
        assert_eq!(c.fields(), ["0", "0", "*", "*", "0"]);
        let c: CronSchedule = "5 4 1,15 * *".parse().unwrap();
        assert_eq!(c.fields()[2], "1,15");
    }

    #[test]
    fn time_zones_resolve() {
        assert!(TimeZoneName("Europe/Berlin".into()).resolve().is_ok());
        assert!(TimeZoneName::default().resolve().is_ok());
        let e = TimeZoneName("Mars/Olympus".into()).resolve().unwrap_err();
        assert!(e.contains("IANA"), "{e}");
    }
}
