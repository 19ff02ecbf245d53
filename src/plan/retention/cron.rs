//! When a five-field cron schedule fires, in a time zone.
//!
//! The dialect is the one of Kubernetes CronJobs (robfig/cron v3, standard parser): minute,
//! hour, day of month, month, day of week; `*` and `?`; lists, ranges and steps; month and
//! weekday names; `N/step` meaning `N-max/step`; weekday 7 is Sunday like 0; the `@daily`
//! macros. Day of month and day of week combine like Vixie cron: when both are restricted
//! (neither starts with `*` or `?`), a day matching either one fires; otherwise both must
//! match.
//!
//! # Daylight-saving time
//!
//! The schedule is read as wall-clock time in the rule's zone. Kubernetes' cron library
//! silently skips a time that does not exist (robfig/cron#541); losing a retention run is worse
//! than running it late, so the rule here is the one of ISC cron, timed like RFC 5545 and
//! `jiff`'s "compatible" disambiguation:
//!
//! - **Spring forward (gap):** a wall-clock time that does not exist that day fires once, at the
//!   same wall-clock distance after the gap: 02:30 in Europe/Berlin on the last Sunday of
//!   March fires at 03:30 CEST. If that instant is also scheduled on its own, it is one run.
//! - **Fall back (fold):** a wall-clock time that occurs twice fires once, at its first
//!   occurrence (01:30 in America/New_York on the first Sunday of November fires at 01:30 EDT,
//!   not again at 01:30 EST), unless the hour field is `*` (hourly or finer schedules): those
//!   keep their rhythm through the repeated hour and fire at both occurrences, as ISC cron does
//!   for wildcard jobs.

use jiff::{
    Timestamp,
    civil::Date,
    tz::{AmbiguousOffset, TimeZone},
};

use crate::api::schedule::CronSchedule;

/// How far ahead (and back) a schedule is searched. Long enough for `0 0 29 2 *` to find a
/// leap day even across 2100 (not a leap year).
const SEARCH_DAYS: usize = 366 * 9;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    /// Day of month or day of week is unrestricted (`*`/`?`): days must match both fields.
    day_star: bool,
    /// The hour field is unrestricted: repeated wall-clock hours fire twice.
    hour_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field: its bits and whether it is unrestricted.
fn field(
    text: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for term in text.split(',') {
        let (range, step) = match term.split_once('/') {
            Some((r, s)) => (
                r,
                Some(
                    s.parse::<u32>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("invalid step in {term:?}"))?,
                ),
            ),
            None => (term, None),
        };
        let value = |v: &str| -> Result<u32, String> {
            if let Ok(n) = v.parse::<u32>() {
                return (lo..=hi)
                    .contains(&n)
                    .then_some(n)
                    .ok_or_else(|| format!("{n} is out of range {lo}-{hi}"));
            }
            names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(v))
                .map(|i| i as u32 + name_base)
                .ok_or_else(|| format!("{v:?} is not a number or name"))
        };
        let (start, end) = if range == "*" || range == "?" {
            // `*/2` is a restriction; a plain `*` (or `*/1`) is not.
            if step.is_none_or(|s| s == 1) {
                star = true;
            }
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // robfig: "N/step" is "N-max/step".
            (v, if step.is_some() { hi } else { v })
        };
        if start > end {
            return Err(format!("range {range:?} runs backwards"));
        }
        let step = step.unwrap_or(1);
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Cron {
    /// Parses a schedule the CRD accepted. Errors name the problem (the CRD pattern is looser
    /// than the meaning, e.g. `5-2` passes it).
    pub fn parse(schedule: &CronSchedule) -> Result<Cron, String> {
        let [m, h, dom, mon, dow] = schedule.fields();
        let bad = |what: &str, e: String| format!("schedule {schedule}: {what} field: {e}");
        let (minutes, _) = field(m, 0, 59, &[], 0).map_err(|e| bad("minute", e))?;
        let (hours, hour_star) = field(h, 0, 23, &[], 0).map_err(|e| bad("hour", e))?;
        let (days, dom_star) = field(dom, 1, 31, &[], 0).map_err(|e| bad("day-of-month", e))?;
        let (months, _) = field(mon, 1, 12, &MONTHS, 1).map_err(|e| bad("month", e))?;
        let (dow_bits, dow_star) =
            field(dow, 0, 7, &WEEKDAYS, 0).map_err(|e| bad("day-of-week", e))?;
        // 7 is Sunday too.
        let weekdays = ((dow_bits & 0x7f) | ((dow_bits >> 7) & 1)) as u8;
        Ok(Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays,
            day_star: dom_star || dow_star,
            hour_star,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.day_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Every instant the schedule fires on local day `d`, ascending.
    fn instants(&self, d: Date, tz: &TimeZone) -> Vec<Timestamp> {
        let mut out = Vec::new();
        for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
            for m in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                let dt = d.at(h, m, 0, 0);
                let amb = tz.to_ambiguous_zoned(dt);
                let fold = matches!(amb.offset(), AmbiguousOffset::Fold { .. });
                let both = fold && self.hour_star;
                let first = if fold {
                    amb.clone().earlier()
                } else {
                    amb.clone().compatible()
                };
                if let Ok(z) = first {
                    out.push(z.timestamp());
                }
                if both && let Ok(z) = amb.later() {
                    out.push(z.timestamp());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The first instant after `after` (exclusive) at which the schedule fires; `None` if it
    /// never fires in the next nine years (e.g. `0 0 30 2 *`).
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // Start a day early: a time in a gap on the previous local day may shift past `after`.
        let mut d = after.to_zoned(tz.clone()).date().yesterday().ok()?;
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(d)
                && let Some(t) = self.instants(d, tz).into_iter().find(|t| *t > after)
            {
                return Some(t);
            }
            d = d.tomorrow().ok()?;
        }
        None
    }

    /// The latest instant at or before `at` at which the schedule fired.
    pub fn prev(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut d = at.to_zoned(tz.clone()).date().tomorrow().ok()?;
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(d)
                && let Some(t) = self.instants(d, tz).into_iter().rev().find(|t| *t <= at)
            {
                return Some(t);
            }
            d = d.yesterday().ok()?;
        }
        None
    }

    /// How many times the schedule fires in `[from, to)`, counting at most `cap`.
    pub fn count(&self, from: Timestamp, to: Timestamp, tz: &TimeZone, cap: usize) -> usize {
        let mut n = 0;
        let Some(mut t) = from
            .checked_sub(jiff::SignedDuration::from_nanos(1))
            .ok()
            .and_then(|f| self.next(f, tz))
        else {
            return 0;
        };
        while t < to && n < cap {
            n += 1;
            match self.next(t, tz) {
                Some(next) => t = next,
                None => break,
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(s: &str) -> Cron {
        Cron::parse(&s.parse().unwrap()).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    /// The next `n` firings after `from`, as RFC 3339 instants in UTC.
    fn series(c: &Cron, from: &str, zone: &str, n: usize) -> Vec<String> {
        let z = tz(zone);
        let mut t = ts(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = c.next(t, &z).unwrap();
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn daily_in_utc() {
        assert_eq!(
            series(&cron("0 3 * * *"), "2024-01-01T03:00:00Z", "UTC", 2),
            ["2024-01-02T03:00:00Z", "2024-01-03T03:00:00Z"]
        );
        assert_eq!(
            series(&cron("@hourly"), "2024-01-01T03:10:00Z", "UTC", 1),
            ["2024-01-01T04:00:00Z"]
        );
    }

    #[test]
    fn berlin_spring_forward_runs_the_missing_time_once_shifted() {
        // 2024-03-31: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
        assert_eq!(
            series(
                &cron("30 2 * * *"),
                "2024-03-30T12:00:00Z",
                "Europe/Berlin",
                3
            ),
            [
                "2024-03-31T01:30:00Z", // 03:30 CEST: 02:30 does not exist that day
                "2024-04-01T00:30:00Z", // 02:30 CEST
                "2024-04-02T00:30:00Z",
            ]
        );
        // 02:30 (shifted to 03:30) and 03:30 the same day are one run.
        assert_eq!(
            series(
                &cron("30 2,3 * * *"),
                "2024-03-30T23:00:00Z",
                "Europe/Berlin",
                2
            ),
            ["2024-03-31T01:30:00Z", "2024-04-01T00:30:00Z"]
        );
    }

    #[test]
    fn berlin_fall_back_does_not_run_a_fixed_time_twice() {
        // 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 occurs twice.
        assert_eq!(
            series(
                &cron("30 2 * * *"),
                "2024-10-26T12:00:00Z",
                "Europe/Berlin",
                2
            ),
            ["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"]
        );
    }

    #[test]
    fn hourly_keeps_its_rhythm_through_the_repeated_hour() {
        assert_eq!(
            series(
                &cron("0 * * * *"),
                "2024-10-26T23:30:00Z",
                "Europe/Berlin",
                4
            ),
            [
                "2024-10-27T00:00:00Z", // 02:00 CEST
                "2024-10-27T01:00:00Z", // 02:00 CET (repeated hour)
                "2024-10-27T02:00:00Z", // 03:00 CET
                "2024-10-27T03:00:00Z",
            ]
        );
    }

    #[test]
    fn new_york_transitions() {
        // 2024-03-10: 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            series(
                &cron("30 2 * * *"),
                "2024-03-09T12:00:00Z",
                "America/New_York",
                2
            ),
            ["2024-03-10T07:30:00Z", "2024-03-11T06:30:00Z"] // 03:30 EDT, then 02:30 EDT
        );
        // 2024-11-03: 02:00 EDT becomes 01:00 EST; 01:30 occurs twice, runs once (EDT).
        assert_eq!(
            series(
                &cron("30 1 * * *"),
                "2024-11-02T12:00:00Z",
                "America/New_York",
                2
            ),
            ["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"]
        );
    }

    #[test]
    fn prev_is_the_latest_firing_at_or_before() {
        let c = cron("0 3 * * *");
        let z = tz("UTC");
        assert_eq!(
            c.prev(ts("2024-01-05T03:00:00Z"), &z),
            Some(ts("2024-01-05T03:00:00Z"))
        );
        assert_eq!(
            c.prev(ts("2024-01-05T02:59:59Z"), &z),
            Some(ts("2024-01-04T03:00:00Z"))
        );
        let berlin = tz("Europe/Berlin");
        assert_eq!(
            cron("30 2 * * *").prev(ts("2024-03-31T02:00:00Z"), &berlin),
            Some(ts("2024-03-31T01:30:00Z"))
        );
    }

    #[test]
    fn counts_and_impossible_dates() {
        let c = cron("*/15 * * * *");
        let z = tz("UTC");
        assert_eq!(
            c.count(
                ts("2024-01-01T00:00:00Z"),
                ts("2024-01-01T01:00:00Z"),
                &z,
                100
            ),
            4
        );
        assert_eq!(
            c.count(
                ts("2024-01-01T00:00:00Z"),
                ts("2024-02-01T00:00:00Z"),
                &z,
                100
            ),
            100
        );
        assert_eq!(
            cron("0 0 30 2 *").next(ts("2024-01-01T00:00:00Z"), &z),
            None
        );
        assert_eq!(
            cron("0 0 29 2 *").next(ts("2024-03-01T00:00:00Z"), &z),
            Some(ts("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn day_fields_combine_like_vixie_cron() {
        let z = tz("UTC");
        // 1st of the month OR a Monday.
        let either = cron("0 0 1 * mon");
        assert_eq!(
            either.next(ts("2024-01-01T00:00:00Z"), &z),
            Some(ts("2024-01-08T00:00:00Z"))
        );
        // `*` day of month: only Mondays.
        let mondays = cron("0 0 * * 1");
        assert_eq!(
            mondays.next(ts("2024-01-01T00:00:00Z"), &z),
            Some(ts("2024-01-08T00:00:00Z"))
        );
        // 7 is Sunday; names and steps.
        assert_eq!(cron("0 0 * * 7"), cron("0 0 * * SUN"));
        assert_eq!(
            cron("5/20 * * * *").next(ts("2024-01-01T00:06:00Z"), &z),
            Some(ts("2024-01-01T00:25:00Z"))
        );
        assert!(Cron::parse(&"0 0 * * 5-2".parse().unwrap()).is_err());
    }
}
