//! String formats the apiserver checks for CRDs (kube-openapi's `strfmt.Default` registry,
//! limited to the formats apiextensions keeps), and parsers shared with CEL.

use std::sync::LazyLock;

use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use regex::Regex;

/// Whether `s` is valid for `format`; unknown formats accept everything.
pub fn is_valid(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => parse_date_time(s).is_some(),
        "date" => parse_date(s).is_some(),
        "duration" => parse_duration(s).is_some(),
        "byte" => decode_base64(s).is_some(),
        "email" => EMAIL.is_match(s),
        "hostname" => s.len() <= 255 && HOSTNAME.is_match(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => is_cidr(s),
        "mac" => MAC.is_match(s),
        "uuid" => UUID.is_match(s),
        "uuid3" => UUID3.is_match(s),
        "uuid4" => UUID4.is_match(s),
        "uuid5" => UUID5.is_match(s),
        "uri" => url::Url::parse(s).is_ok() || (s.starts_with('/') && !s.contains(' ')),
        "bsonobjectid" => s.len() == 24 && s.chars().all(|c| c.is_ascii_hexdigit()),
        "hexcolor" => HEXCOLOR.is_match(s),
        "rgbcolor" => RGBCOLOR.is_match(s),
        "ssn" => SSN.is_match(s),
        "creditcard" => CREDITCARD.is_match(s),
        "isbn" => ISBN10.is_match(s) || ISBN13.is_match(s),
        "isbn10" => ISBN10.is_match(s),
        "isbn13" => ISBN13.is_match(s),
        _ => true,
    }
}

fn re(p: &str) -> Regex {
    // The patterns are constants checked by the unit tests.
    Regex::new(p).unwrap_or_else(|e| panic!("bad built-in format pattern {p}: {e}"))
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:[^<>@\s]+\s*<)?[^<>@\s]+@[^<>@\s]+>?$"));
static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$",
    )
});
static MAC: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){7}|[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){19}|[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4}){2}|[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4}){3}|[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4}){9})$",
    )
});
static UUID: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"));
static UUID3: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
});
static UUID4: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$")
});
static UUID5: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$")
});
static HEXCOLOR: LazyLock<Regex> = LazyLock::new(|| re(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"));
static RGBCOLOR: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^rgb\(\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*\)$",
    )
});
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"^\d{3}[- ]?\d{2}[- ]?\d{4}$"));
static CREDITCARD: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:4[0-9]{12}(?:[0-9]{3})?|5[1-5][0-9]{14}|6(?:011|5[0-9][0-9])[0-9]{12}|3[47][0-9]{13}|3(?:0[0-5]|[68][0-9])[0-9]{11}|(?:2131|1800|35\d{3})\d{11})$",
    )
});
static ISBN10: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:[0-9]{9}X|[0-9]{10})$"));
static ISBN13: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:[0-9]{13})$"));

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    if ip.parse::<std::net::Ipv4Addr>().is_ok() {
        bits <= 32
    } else {
        ip.parse::<std::net::Ipv6Addr>().is_ok() && bits <= 128
    }
}

/// RFC 3339 date-times, plus the reduced forms strfmt accepts (no seconds, no zone = UTC).
pub fn parse_date_time(s: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t);
    }
    let upper = s.replace('t', "T").replace('z', "Z");
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%dT%H:%M%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(&upper, fmt) {
            return Some(t);
        }
    }
    let no_zone = upper.strip_suffix('Z').unwrap_or(&upper);
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(no_zone, fmt) {
            return Some(Utc.from_utc_datetime(&t).fixed_offset());
        }
    }
    None
}

/// `YYYY-MM-DD`, as a timestamp at midnight UTC.
pub fn parse_date(s: &str) -> Option<DateTime<FixedOffset>> {
    if s.len() != 10 {
        return None;
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(
        Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)
            .fixed_offset(),
    )
}

/// Go durations (`1h30m`, `-2.5s`) and strfmt's unit forms (`3 days`, `2w`).
pub fn parse_duration(s: &str) -> Option<chrono::Duration> {
    parse_go_duration(s).or_else(|| parse_unit_duration(s))
}

fn parse_go_duration(s: &str) -> Option<chrono::Duration> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(chrono::Duration::zero());
    }
    if rest.is_empty() {
        return None;
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total_nanos += value * scale;
    }
    if total_nanos > i64::MAX as f64 {
        return None;
    }
    let d = chrono::Duration::nanoseconds(total_nanos.round() as i64);
    Some(if neg { -d } else { d })
}

fn parse_unit_duration(s: &str) -> Option<chrono::Duration> {
    static UNIT: LazyLock<Regex> = LazyLock::new(|| re(r"^(\d+)\s*([A-Za-zµ]+)$"));
    let caps = UNIT.captures(s.trim())?;
    let n: i64 = caps.get(1)?.as_str().parse().ok()?;
    let nanos_per: i64 = match caps.get(2)?.as_str() {
        "ns" | "nanosecond" | "nanoseconds" => 1,
        "us" | "µs" | "microsecond" | "microseconds" => 1_000,
        "ms" | "millisecond" | "milliseconds" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000_000,
        "d" | "day" | "days" => 86_400_000_000_000,
        "w" | "wk" | "wks" | "week" | "weeks" => 604_800_000_000_000,
        _ => return None,
    };
    Some(chrono::Duration::nanoseconds(n.checked_mul(nanos_per)?))
}

/// Standard base64 with padding, as Go's `base64.StdEncoding`.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        for (f, ok, bad) in [
            ("date-time", "2024-05-01T10:00:00Z", "yesterday"),
            (
                "date-time",
                "2024-05-01T10:00:00.123+02:00",
                "2024-13-01T10:00:00Z",
            ),
            ("date", "2024-05-01", "2024-5-1"),
            ("duration", "1h30m", "14x"),
            ("duration", "3 days", "d3"),
            ("byte", "aGVsbG8=", "not base64!"),
            ("email", "a@example.com", "no-at-sign"),
            ("hostname", "db.example.com", "-bad-"),
            ("ipv4", "10.0.0.1", "10.0.0"),
            ("uuid", "123e4567-e89b-12d3-a456-426614174000", "123"),
            ("uri", "https://example.com/x", "::"),
            ("cidr", "10.0.0.0/8", "10.0.0.0/33"),
            ("mac", "00:1a:2b:3c:4d:5e", "00:1a"),
        ] {
            assert!(is_valid(f, ok), "{f} {ok}");
            assert!(!is_valid(f, bad), "{f} {bad}");
        }
        assert_eq!(parse_duration("1h30m"), Some(chrono::Duration::minutes(90)));
        assert_eq!(parse_duration("2w"), Some(chrono::Duration::days(14)));
        // Force the lazily compiled patterns to prove they are valid.
        for r in [
            &*RGBCOLOR,
            &*SSN,
            &*CREDITCARD,
            &*ISBN10,
            &*ISBN13,
            &*HEXCOLOR,
            &*UUID3,
            &*UUID4,
            &*UUID5,
        ] {
            let _ = r.is_match("");
        }
    }
}
