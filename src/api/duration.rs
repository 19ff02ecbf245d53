//! `Duration`: a length of time written the way people write it (`14d`, `36h`, `P1M`).
//!
//! Privacy deadlines are calendar deadlines ("one month", "three months"), so a duration keeps
//! its calendar units (a [`jiff::Span`]) instead of collapsing them to seconds: adding `P1M` to
//! 31 January gives the last day of February, as a lawyer would count it. All arithmetic is done
//! in UTC so the result does not depend on the operator's time zone.
//!
//! The accepted grammar is deliberately narrower than what jiff parses, and exactly the one the
//! CRD `pattern` enforces, so whatever the apiserver admits the controller can parse:
//! - friendly: one or more `<n><unit>` with units in descending order, no spaces:
//!   `y`, `mo`, `w`, `d`, `h`, `m` (minutes), `s`; e.g. `14d`, `36h`, `1y6mo`, `1d12h`;
//! - ISO 8601: `P[nY][nM][nW][nD][T[nH][nM][nS]]`, e.g. `P1M`, `P2M`, `PT36H`, `P1DT12H`.

use std::{borrow::Cow, cmp::Ordering, fmt, str::FromStr};

use jiff::{Span, Timestamp, tz::TimeZone};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What to write instead of an invalid duration.
pub const HELP: &str = "invalid duration: use a number and a unit such as 14d, 36h, 90m, 2w, 1mo, 1y (units in descending order, no spaces) or ISO 8601 such as P1M, P14D, PT36H";

/// The longest duration string accepted; keeps CEL cost estimates and error messages small.
pub const MAX_LEN: usize = 32;

/// A calendar-aware duration, serialised as the string the user wrote.
#[derive(Clone)]
pub struct Duration {
    raw: String,
    span: Span,
}

/// Why a duration string was refused, or why arithmetic with it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{HELP} (got {0:?})")]
    Syntax(String),
    #[error("invalid duration {raw:?}: {reason}")]
    OutOfRange { raw: String, reason: String },
    #[error("adding {duration} to {at} leaves the supported time range: {reason}")]
    Arithmetic {
        duration: String,
        at: Timestamp,
        reason: String,
    },
}

// Digits allowed per unit. Years are capped at four digits because jiff refuses more than
// 19,998 years; the other units stay far below jiff's limits with five digits.
const YEAR_DIGITS: usize = 4;
const UNIT_DIGITS: usize = 5;

/// Friendly units in the only order accepted, with their digit caps.
const FRIENDLY_UNITS: [(&str, usize); 7] = [
    ("y", YEAR_DIGITS),
    ("mo", UNIT_DIGITS),
    ("w", UNIT_DIGITS),
    ("d", UNIT_DIGITS),
    ("h", UNIT_DIGITS),
    ("m", UNIT_DIGITS),
    ("s", UNIT_DIGITS),
];
const ISO_DATE_UNITS: [(&str, usize); 4] = [
    ("Y", YEAR_DIGITS),
    ("M", UNIT_DIGITS),
    ("W", UNIT_DIGITS),
    ("D", UNIT_DIGITS),
];
const ISO_TIME_UNITS: [(&str, usize); 3] =
    [("H", UNIT_DIGITS), ("M", UNIT_DIGITS), ("S", UNIT_DIGITS)];

/// The regular expression (RE2 and ECMA compatible) published as the CRD `pattern`.
///
/// Every unit group is optional and ordered; a non-empty match therefore always contains at
/// least one unit, and the empty string and a bare `P` are excluded by `minLength: 2`. `PT`
/// (a time designator without units) is excluded by requiring a unit after `T`.
pub fn pattern() -> String {
    let group = |unit: &str, digits: usize| format!("(?:[0-9]{{1,{digits}}}{unit})?");
    let friendly: String = FRIENDLY_UNITS.iter().map(|(u, d)| group(u, *d)).collect();
    let date: String = ISO_DATE_UNITS.iter().map(|(u, d)| group(u, *d)).collect();
    // After `T` at least one time unit must follow: enumerate which unit comes first.
    let time_alternatives: Vec<String> = (0..ISO_TIME_UNITS.len())
        .map(|first| {
            let (u, d) = ISO_TIME_UNITS[first];
            let rest: String = ISO_TIME_UNITS[first + 1..]
                .iter()
                .map(|(u, d)| group(u, *d))
                .collect();
            format!("[0-9]{{1,{d}}}{u}{rest}")
        })
        .collect();
    format!(
        "^(?:{friendly}|P{date}(?:T(?:{}))?)$",
        time_alternatives.join("|")
    )
}

/// Consumes `<digits><unit>` groups in the given order; returns the rest of the input and
/// whether at least one group was found. Mirrors [`pattern`] exactly.
fn eat_units<'a>(mut s: &'a str, units: &[(&str, usize)]) -> Option<(&'a str, bool)> {
    let mut any = false;
    for (unit, max_digits) in units {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            continue;
        }
        let after = &s[digits..];
        // `m` must not swallow the `m` of `mo`: the friendly units are tried in order, so `mo`
        // has already been consumed when we reach `m`; a digit run followed by `mo` here means
        // the units are out of order.
        if let Some(rest) = after.strip_prefix(unit)
            && !(*unit == "m" && rest.starts_with('o'))
        {
            if digits > *max_digits {
                return None;
            }
            s = rest;
            any = true;
        }
    }
    Some((s, any))
}

fn grammar_ok(s: &str) -> bool {
    if s.len() < 2 || s.len() > MAX_LEN {
        return false;
    }
    if let Some(iso) = s.strip_prefix('P') {
        let Some((rest, _)) = eat_units(iso, &ISO_DATE_UNITS) else {
            return false;
        };
        if rest.is_empty() {
            return true;
        }
        let Some(time) = rest.strip_prefix('T') else {
            return false;
        };
        matches!(eat_units(time, &ISO_TIME_UNITS), Some(("", true)))
    } else {
        matches!(eat_units(s, &FRIENDLY_UNITS), Some(("", true)))
    }
}

impl Duration {
    /// A whole number of days, written `<n>d`.
    pub fn days(n: u16) -> Self {
        Self::from_str(&format!("{n}d")).expect("a day count is a valid duration")
    }

    /// A whole number of hours, written `<n>h`.
    pub fn hours(n: u16) -> Self {
        Self::from_str(&format!("{n}h")).expect("an hour count is a valid duration")
    }

    /// A whole number of calendar months, written `P<n>M`.
    pub fn months(n: u16) -> Self {
        Self::from_str(&format!("P{n}M")).expect("a month count is a valid duration")
    }

    /// The text as written in the resource.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The calendar span (years and months stay calendar units).
    pub fn span(&self) -> Span {
        self.span
    }

    /// `at + self`, counted on the UTC calendar (P1M after 31 January is the end of February).
    pub fn after(&self, at: Timestamp) -> Result<Timestamp, DurationError> {
        at.to_zoned(TimeZone::UTC)
            .checked_add(self.span)
            .map(|z| z.timestamp())
            .map_err(|e| self.arith_error(at, e))
    }

    /// `at - self`, counted on the UTC calendar (e.g. the cut-off of "older than 180d").
    pub fn before(&self, at: Timestamp) -> Result<Timestamp, DurationError> {
        at.to_zoned(TimeZone::UTC)
            .checked_sub(self.span)
            .map(|z| z.timestamp())
            .map_err(|e| self.arith_error(at, e))
    }

    /// Compares two durations by where they land from the same starting point: `P1M` and `30d`
    /// compare differently depending on the month, so a reference time is required.
    pub fn compare_from(&self, other: &Duration, at: Timestamp) -> Result<Ordering, DurationError> {
        Ok(self.after(at)?.cmp(&other.after(at)?))
    }

    /// True for a zero-length duration such as `0d` or `PT0S`.
    pub fn is_zero(&self) -> bool {
        self.span.is_zero()
    }

    fn arith_error(&self, at: Timestamp, e: jiff::Error) -> DurationError {
        DurationError::Arithmetic {
            duration: self.raw.clone(),
            at,
            reason: e.to_string(),
        }
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !grammar_ok(s) {
            return Err(DurationError::Syntax(s.chars().take(MAX_LEN + 8).collect()));
        }
        let span: Span = s
            .parse()
            .map_err(|e: jiff::Error| DurationError::OutOfRange {
                raw: s.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Duration {
            raw: s.to_string(),
            span,
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({})", self.raw)
    }
}

// Equality is textual on purpose: it is what "did the spec change" means for a resource, and
// `Span` has no total equality (1mo vs 30d depend on the date).
impl PartialEq for Duration {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl Eq for Duration {}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // The CEL rule repeats the pattern so that the apiserver's answer says what to write,
        // not only which regular expression failed.
        json_schema!({
            "type": "string",
            "minLength": 2,
            "maxLength": MAX_LEN,
            "pattern": pattern(),
            "x-kubernetes-validations": [{
                "rule": format!("self.matches('{}')", pattern()),
                "message": HELP,
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn accepts_friendly_and_iso() {
        for ok in [
            "14d",
            "36h",
            "90m",
            "2y",
            "30s",
            "2w",
            "1mo",
            "1y6mo",
            "1d12h",
            "1h30m",
            "0d",
            "P1M",
            "P2M",
            "P14D",
            "PT36H",
            "P1DT12H",
            "P1Y2M3W4DT5H6M7S",
            "PT90M",
            "PT1M",
            "9999y",
        ] {
            assert!(ok.parse::<Duration>().is_ok(), "{ok} should parse");
        }
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "", "P", "PT", "14", "d", "14 d", "1d 2h", "2h1d", "14days", "-14d", "+14d", "1.5d",
            "p1m", "P1H", "PT1D", "P1MT", "14D", "1mo1y", "99999y", "123456d", "1m1mo", "P1M2Y",
            "1d1d",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn error_message_says_what_to_write() {
        let e = "two weeks".parse::<Duration>().unwrap_err().to_string();
        assert!(e.contains("14d") && e.contains("P1M"), "{e}");
    }

    #[test]
    fn pattern_agrees_with_parser() {
        let re = regex::Regex::new(&pattern()).unwrap();
        let corpus = [
            "14d",
            "36h",
            "90m",
            "2y",
            "1y6mo",
            "1d12h",
            "P1M",
            "PT36H",
            "P1DT12H",
            "",
            "P",
            "PT",
            "14",
            "1d 2h",
            "2h1d",
            "p1m",
            "P1H",
            "PT1D",
            "P1MT",
            "1mo1y",
            "99999y",
            "123456d",
            "1m1mo",
            "0s",
            "P0D",
            "PT0S",
            "1w2d",
            "2d1w",
            "P1W1D",
            "P1D1W",
            "5m",
            "5mo",
            "m",
            "mo",
            "1y2mo3w4d5h6m7s",
            "P12345M",
            "P123456M",
        ];
        for s in corpus {
            // minLength: 2 and maxLength are part of the schema next to the pattern.
            let schema_ok = re.is_match(s) && s.len() >= 2 && s.len() <= MAX_LEN;
            assert_eq!(
                schema_ok,
                s.parse::<Duration>().is_ok(),
                "schema and parser disagree on {s:?}"
            );
        }
    }

    #[test]
    fn month_end_is_clamped_like_a_calendar() {
        let one_month = Duration::from_str("P1M").unwrap();
        assert_eq!(
            one_month.after(ts("2024-01-31T10:00:00Z")).unwrap(),
            ts("2024-02-29T10:00:00Z")
        );
        assert_eq!(
            one_month.after(ts("2023-01-31T10:00:00Z")).unwrap(),
            ts("2023-02-28T10:00:00Z")
        );
        assert_eq!(
            "1mo"
                .parse::<Duration>()
                .unwrap()
                .after(ts("2023-03-31T00:00:00Z"))
                .unwrap(),
            ts("2023-04-30T00:00:00Z")
        );
        // Two months at once is not one month twice: 31 Jan + P2M = 31 Mar.
        assert_eq!(
            Duration::months(2)
                .after(ts("2023-01-31T00:00:00Z"))
                .unwrap(),
            ts("2023-03-31T00:00:00Z")
        );
        // Leap day plus a year lands on 28 February.
        assert_eq!(
            "1y".parse::<Duration>()
                .unwrap()
                .after(ts("2024-02-29T12:00:00Z"))
                .unwrap(),
            ts("2025-02-28T12:00:00Z")
        );
    }

    #[test]
    fn days_and_hours_are_exact() {
        let t0 = ts("2024-03-30T23:30:00Z");
        assert_eq!(
            Duration::days(14).after(t0).unwrap(),
            ts("2024-04-13T23:30:00Z")
        );
        assert_eq!(
            Duration::hours(36).after(t0).unwrap(),
            ts("2024-04-01T11:30:00Z")
        );
        assert_eq!(
            "180d"
                .parse::<Duration>()
                .unwrap()
                .before(ts("2024-07-01T00:00:00Z"))
                .unwrap(),
            ts("2024-01-03T00:00:00Z")
        );
        assert_eq!(
            "P1DT12H".parse::<Duration>().unwrap().after(t0).unwrap(),
            ts("2024-04-01T11:30:00Z")
        );
    }

    #[test]
    fn compare_depends_on_the_month() {
        let month = Duration::months(1);
        let thirty = Duration::days(30);
        assert_eq!(
            month
                .compare_from(&thirty, ts("2023-02-01T00:00:00Z"))
                .unwrap(),
            Ordering::Less
        );
        assert_eq!(
            month
                .compare_from(&thirty, ts("2023-03-01T00:00:00Z"))
                .unwrap(),
            Ordering::Greater
        );
    }

    #[test]
    fn serde_round_trip_keeps_the_text() {
        let d: Duration = serde_json::from_str("\"P1M\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"P1M\"");
        assert!(serde_json::from_str::<Duration>("\"1 month\"").is_err());
        assert_ne!(Duration::days(7), "1w".parse().unwrap());
        assert!("0d".parse::<Duration>().unwrap().is_zero());
    }

    #[test]
    fn constructors_never_panic() {
        for d in [
            Duration::days(u16::MAX),
            Duration::hours(u16::MAX),
            Duration::months(u16::MAX),
        ] {
            assert!(d.as_str().parse::<Duration>().is_ok());
        }
    }

    #[test]
    fn arithmetic_overflow_is_an_error() {
        let far = "9999y".parse::<Duration>().unwrap();
        assert!(far.after(ts("2024-01-01T00:00:00Z")).is_err());
    }
}
