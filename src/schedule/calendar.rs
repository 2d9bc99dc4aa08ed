//! Calendar events as systemd.time(7) writes them (`hourly`, `Mon..Fri 09:00`, `*:0/15`,
//! `*-*-01 03:00 UTC`), parsed here and evaluated in civil time of the system's time zone (or
//! the one named at the end), so a schedule means what the same text means in a `.timer`.
//! The unit tests check the next elapses against `systemd-analyze calendar`.
//!
//! The subset: the shorthands (`minutely` … `semiannually`); `[WEEKDAYS] [DATE] [TIME] [ZONE]`
//! with weekday names, lists and ranges (`Mon,Wed`, `Mon..Fri`, `mon-fri`); a date
//! `[YEAR-]MONTH-DAY` and a time `HOUR:MINUTE[:SECOND]` whose fields are `*`, a value, a list,
//! a range `A..B`, or a repetition `A/N`, `A..B/N`; a zone `UTC` or an IANA name. Not
//! supported (and refused with a message): `~` (days from the end of the month), fractional
//! seconds, two-digit years.
//!
//! Around DST changes, as systemd does it: a time the clocks skip does not fire that day; a
//! time the clocks repeat fires once, at its first occurrence.

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

/// The last year looked at (systemd's limit as well).
const LAST_YEAR: i16 = 2199;

/// Why a calendar expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("calendar {text:?}: {why}")]
pub struct CalendarError {
    text: String,
    why: String,
}

/// One part of a field: `start..=end` every `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Component {
    start: u16,
    end: u16,
    step: u16,
}

/// A field: any of its components matches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field(Vec<Component>);

impl Field {
    fn any(min: u16, max: u16) -> Field {
        Field(vec![Component { start: min, end: max, step: 1 }])
    }

    fn one(v: u16) -> Field {
        Field(vec![Component { start: v, end: v, step: 1 }])
    }

    fn has(&self, v: u16) -> bool {
        self.0.iter().any(|c| c.start <= v && v <= c.end && (v - c.start) % c.step == 0)
    }

    /// Parses `*`, `A`, `A..B`, `A/N`, `A..B/N` and comma lists of them, within `min..=max`.
    fn parse(s: &str, name: &str, min: u16, max: u16) -> Result<Field, String> {
        let mut out = Vec::new();
        for part in s.split(',') {
            if part == "*" {
                out.push(Component { start: min, end: max, step: 1 });
                continue;
            }
            let (range, step) = match part.split_once('/') {
                Some((r, n)) => {
                    let n: u16 = n
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("{name} repetition {part:?} needs a positive whole step"))?;
                    (r, Some(n))
                }
                None => (part, None),
            };
            if range == "*" {
                return Err(format!(
                    "{name} {part:?}: write the start of a repetition, e.g. {min}/{}",
                    step.unwrap_or(1)
                ));
            }
            if range.contains('~') {
                return Err("\"~\" (days counted from the end of the month) is not supported".into());
            }
            if range.contains('.') && !range.contains("..") {
                return Err(format!("{name} {range:?}: fractional values are not supported"));
            }
            let value = |v: &str| -> Result<u16, String> {
                let n: u16 = v
                    .parse()
                    .map_err(|_| format!("{name} {v:?} is not a number, a range A..B, a repetition A/N or *"))?;
                if n < min || n > max {
                    return Err(format!("{name} {n} is outside {min}..{max}"));
                }
                Ok(n)
            };
            let (start, end) = match range.split_once("..") {
                Some((a, b)) => (value(a)?, value(b)?),
                None => {
                    let v = value(range)?;
                    (v, if step.is_some() { max } else { v })
                }
            };
            if start > end {
                return Err(format!("{name} range {range:?} runs backwards"));
            }
            out.push(Component { start, end, step: step.unwrap_or(1) });
        }
        Ok(Field(out))
    }
}

/// A parsed calendar expression.
#[derive(Debug, Clone)]
pub struct Calendar {
    text: String,
    /// Bit 0 is Monday, as systemd counts.
    weekdays: u8,
    years: Field,
    months: Field,
    days: Field,
    hours: Field,
    minutes: Field,
    seconds: Field,
    /// None: the system's time zone, read when the next elapse is computed.
    zone: Option<TimeZone>,
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const WEEKDAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

fn weekday(name: &str) -> Option<u8> {
    let n = name.to_ascii_lowercase();
    WEEKDAYS.iter().position(|d| n.len() >= 3 && d.starts_with(&n) && (n.len() == 3 || n == *d)).map(|i| i as u8)
}

fn parse_weekdays(s: &str) -> Result<u8, String> {
    let mut mask = 0u8;
    for part in s.split(',') {
        let (a, b) = part.split_once("..").or_else(|| part.split_once('-')).unwrap_or((part, part));
        let bad = |d: &str| format!("{d:?} is not a weekday (Mon, Tue, … or Monday, …)");
        let (a, b) = (weekday(a).ok_or_else(|| bad(a))?, weekday(b).ok_or_else(|| bad(b))?);
        if a > b {
            return Err(format!("weekday range {part:?} runs backwards: write Mon..Fri, or a list"));
        }
        for d in a..=b {
            mask |= 1 << d;
        }
    }
    Ok(mask)
}

impl Calendar {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Calendar, CalendarError> {
        Self::parse_inner(text).map_err(|why| CalendarError { text: text.to_owned(), why })
    }

    fn parse_inner(text: &str) -> Result<Calendar, String> {
        let expanded = match text.trim().to_ascii_lowercase().as_str() {
            "minutely" => "*-*-* *:*:00",
            "hourly" => "*-*-* *:00:00",
            "daily" => "*-*-* 00:00:00",
            "weekly" => "Mon *-*-* 00:00:00",
            "monthly" => "*-*-01 00:00:00",
            "yearly" | "annually" => "*-01-01 00:00:00",
            "quarterly" => "*-01,04,07,10-01 00:00:00",
            "semiannually" => "*-01,07-01 00:00:00",
            _ => text,
        };
        let mut tokens: Vec<&str> = expanded.split_whitespace().collect();
        if tokens.is_empty() {
            return Err("it is empty".into());
        }
        let starts_alpha = |t: &str| t.starts_with(|c: char| c.is_ascii_alphabetic());
        let mut weekdays = 0x7f;
        if starts_alpha(tokens[0]) && weekday(tokens[0].split([',', '.', '-']).next().unwrap_or("")).is_some() {
            weekdays = parse_weekdays(tokens.remove(0))?;
        }
        let mut zone = None;
        if tokens.last().is_some_and(|t| starts_alpha(t)) {
            let name = tokens.pop().unwrap_or_default();
            zone = Some(if name.eq_ignore_ascii_case("utc") {
                TimeZone::UTC
            } else {
                TimeZone::get(name).map_err(|_| {
                    format!("{name:?} is not a time zone this host knows (UTC, or a name in /usr/share/zoneinfo)")
                })?
            });
        }
        let (mut date, mut time) = (None, None);
        for t in tokens {
            let slot = if t.contains(':') {
                &mut time
            } else if t.contains('-') {
                &mut date
            } else {
                &mut None
            };
            if slot.is_some() || !(t.contains(':') || t.contains('-')) {
                return Err(format!("{t:?} is neither a date (YEAR-MONTH-DAY) nor a time (HOUR:MINUTE[:SECOND])"));
            }
            *slot = Some(t);
        }
        let (years, months, days) = match date {
            None => (Field::any(1970, LAST_YEAR as u16), Field::any(1, 12), Field::any(1, 31)),
            Some(d) => {
                let parts: Vec<&str> = d.split('-').collect();
                let (y, m, dd) = match parts.as_slice() {
                    [y, m, d] => (Some(*y), *m, *d),
                    [m, d] => (None, *m, *d),
                    _ => return Err(format!("date {d:?} is not [YEAR-]MONTH-DAY")),
                };
                let years = match y {
                    None => Field::any(1970, LAST_YEAR as u16),
                    Some(y) => {
                        let short = y
                            .split(',')
                            .filter_map(|item| item.split('/').next())
                            .any(|range| range.split("..").any(|v| v != "*" && v.len() < 4));
                        if short {
                            return Err(format!("year {y:?}: write years with four digits"));
                        }
                        Field::parse(y, "year", 1970, LAST_YEAR as u16)?
                    }
                };
                (years, Field::parse(m, "month", 1, 12)?, Field::parse(dd, "day", 1, 31)?)
            }
        };
        let (hours, minutes, seconds) = match time {
            // A weekday or date alone means midnight.
            None => (Field::one(0), Field::one(0), Field::one(0)),
            Some(t) => {
                let parts: Vec<&str> = t.split(':').collect();
                let (h, m, s) = match parts.as_slice() {
                    [h, m] => (*h, *m, "0"),
                    [h, m, s] => (*h, *m, *s),
                    _ => return Err(format!("time {t:?} is not HOUR:MINUTE[:SECOND]")),
                };
                (Field::parse(h, "hour", 0, 23)?, Field::parse(m, "minute", 0, 59)?, Field::parse(s, "second", 0, 59)?)
            }
        };
        Ok(Calendar { text: text.trim().to_owned(), weekdays, years, months, days, hours, minutes, seconds, zone })
    }

    /// The first elapse strictly after `after`, or None if there is none up to 2199.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.zone {
            Some(zone) => self.next_in(after, zone),
            None => self.next_in(after, &TimeZone::system()),
        }
    }

    /// The first elapse after `after` in `local` time, unless the expression names its zone.
    fn next_in(&self, after: Timestamp, local: &TimeZone) -> Option<Timestamp> {
        let zone = self.zone.as_ref().unwrap_or(local);
        // Whole seconds: the first candidate is the second after `after`'s.
        let from = zone.to_datetime(after);
        let from = from.checked_add(jiff::SignedDuration::from_secs(1)).ok()?;
        let from =
            DateTime::new(from.year(), from.month(), from.day(), from.hour(), from.minute(), from.second(), 0).ok()?;
        let y0 = from.year().max(1970);
        for y in y0..=LAST_YEAR {
            if !self.years.has(y as u16) {
                continue;
            }
            let ty = y == from.year();
            for mo in if ty { from.month() } else { 1 }..=12 {
                if !self.months.has(mo as u16) {
                    continue;
                }
                let tm = ty && mo == from.month();
                let last = Date::new(y, mo, 1).ok()?.days_in_month();
                for d in if tm { from.day() } else { 1 }..=last {
                    let date = Date::new(y, mo, d).ok()?;
                    if !self.days.has(d as u16) || self.weekdays & (1 << date.weekday().to_monday_zero_offset()) == 0 {
                        continue;
                    }
                    let td = tm && d == from.day();
                    for h in if td { from.hour() } else { 0 }..24 {
                        if !self.hours.has(h as u16) {
                            continue;
                        }
                        let th = td && h == from.hour();
                        for mi in if th { from.minute() } else { 0 }..60 {
                            if !self.minutes.has(mi as u16) {
                                continue;
                            }
                            let tmi = th && mi == from.minute();
                            for s in if tmi { from.second() } else { 0 }..60 {
                                if !self.seconds.has(s as u16) {
                                    continue;
                                }
                                let dt = DateTime::new(y, mo, d, h, mi, s, 0).ok()?;
                                let ambiguous = zone.to_ambiguous_timestamp(dt);
                                if matches!(ambiguous.offset(), AmbiguousOffset::Gap { .. }) {
                                    continue;
                                }
                                match ambiguous.earlier() {
                                    Ok(ts) if ts > after => return Some(ts),
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(cal: &str, after: &str, zone: &str) -> Option<String> {
        let c = Calendar::parse(cal).unwrap();
        let tz = TimeZone::get(zone).unwrap();
        c.next_in(at(after), &tz).map(|t| t.to_string())
    }

    #[test]
    fn shorthands_and_fields() {
        let n = |cal, after| next(cal, after, "UTC");
        assert_eq!(n("hourly", "2026-11-30T16:20:48Z").as_deref(), Some("2026-11-30T17:00:00Z"));
        assert_eq!(n("daily", "2026-12-31T23:59:59Z").as_deref(), Some("2027-01-01T00:00:00Z"));
        assert_eq!(n("weekly", "2026-11-30T00:00:00Z").as_deref(), Some("2026-12-07T00:00:00Z"), "strictly after");
        assert_eq!(n("*:*:0/2", "2026-11-30T16:20:47.5Z").as_deref(), Some("2026-11-30T16:20:48Z"));
        assert_eq!(n("*:*:0/2", "2026-11-30T16:20:48Z").as_deref(), Some("2026-11-30T16:20:50Z"));
        assert_eq!(n("*:0/15", "2026-11-30T16:31:00Z").as_deref(), Some("2026-11-30T16:45:00Z"));
        assert_eq!(n("Mon..Fri 9:00", "2026-12-04T10:00:00Z").as_deref(), Some("2026-12-07T09:00:00Z"));
        assert_eq!(n("Sat *-*-1..7 18:00", "2026-11-30T00:00:00Z").as_deref(), Some("2026-12-05T18:00:00Z"));
        assert_eq!(n("*-02-29", "2026-11-30T00:00:00Z").as_deref(), Some("2028-02-29T00:00:00Z"));
        assert_eq!(n("quarterly", "2026-11-30T00:00:00Z").as_deref(), Some("2027-01-01T00:00:00Z"));
        assert_eq!(n("3/4-*", "2026-11-30T00:00:00Z").as_deref(), Some("2027-03-01T00:00:00Z"));
        assert_eq!(n("2027-*-* 3:4", "2026-11-30T00:00:00Z").as_deref(), Some("2027-01-01T03:04:00Z"));
        assert_eq!(n("*-02-30", "2026-11-30T00:00:00Z"), None, "never");
        assert_eq!(n("2025-01-01", "2026-11-30T00:00:00Z"), None, "in the past");
    }

    #[test]
    fn zones_and_dst() {
        // Named zone: midnight in Berlin is 23:00 UTC in winter.
        assert_eq!(
            next("2026-12-01 Europe/Berlin", "2026-11-30T00:00:00Z", "UTC").as_deref(),
            Some("2026-11-30T23:00:00Z")
        );
        // 2027-03-28 02:30 does not exist in Berlin: not that day, the next.
        assert_eq!(
            next("*-*-* 02:30", "2027-03-28T00:00:00Z", "Europe/Berlin").as_deref(),
            Some("2027-03-29T00:30:00Z")
        );
        assert_eq!(next("2027-03-28 02:30", "2026-11-30T00:00:00Z", "Europe/Berlin"), None);
        // 2026-10-25 02:30 happens twice in Berlin: the first, at 00:30 UTC; then the next day.
        assert_eq!(
            next("*-*-* 02:30", "2026-10-24T23:00:00Z", "Europe/Berlin").as_deref(),
            Some("2026-10-25T00:30:00Z")
        );
        assert_eq!(
            next("*-*-* 02:30", "2026-10-25T00:30:00Z", "Europe/Berlin").as_deref(),
            Some("2026-10-26T01:30:00Z")
        );
        // Hourly across the fall-back: 02:00 came at 00:00 UTC (CEST); the repeated 02:00 CET
        // does not fire again, 03:00 CET does.
        assert_eq!(next("hourly", "2026-10-25T00:00:00Z", "Europe/Berlin").as_deref(), Some("2026-10-25T02:00:00Z"));
    }

    #[test]
    fn errors_say_what() {
        let e = |t: &str| Calendar::parse(t).unwrap_err().to_string();
        assert_eq!(e(""), "calendar \"\": it is empty");
        assert_eq!(e("*-*-~1"), "calendar \"*-*-~1\": \"~\" (days counted from the end of the month) is not supported");
        assert_eq!(e("*:*/15"), "calendar \"*:*/15\": minute \"*/15\": write the start of a repetition, e.g. 0/15");
        assert_eq!(e("25:00"), "calendar \"25:00\": hour 25 is outside 0..23");
        assert_eq!(
            e("Fri..Mon"),
            "calendar \"Fri..Mon\": weekday range \"Fri..Mon\" runs backwards: write Mon..Fri, or a list"
        );
        assert_eq!(e("12-10-15 1:2"), "calendar \"12-10-15 1:2\": year \"12\": write years with four digits");
        assert_eq!(e("*:*:1.5"), "calendar \"*:*:1.5\": second \"1.5\": fractional values are not supported");
        assert!(e("daily Mars/Olympus").contains("is not a time zone this host knows"));
        assert!(e("soon").contains("is not a time zone"), "{}", e("soon"));
        assert!(e("1 2").contains("is neither a date"));
    }

    /// The same next elapses as systemd, for expressions of every shape, in this host's zone.
    #[test]
    fn agrees_with_systemd_analyze() {
        if std::env::var("FAAS_TEST_SKIP").unwrap_or_default().split(',').any(|w| w.trim() == "systemd-analyze") {
            eprintln!("SKIPPED agrees_with_systemd_analyze: FAAS_TEST_SKIP names systemd-analyze");
            return;
        }
        let exprs = [
            "minutely",
            "hourly",
            "daily",
            "weekly",
            "monthly",
            "yearly",
            "quarterly",
            "semiannually",
            "*:*:0/2",
            "*:0/15",
            "Mon..Fri 9:00",
            "mon-fri 17:30",
            "Sat,Sun 10,14:00",
            "Sat *-*-1..7 18:00",
            "*-02-29 12:00",
            "*-*-31",
            "0/6:00",
            "*-*-* 8..18/2:30:15",
            "2027-01,06-15 00:00 UTC",
            "23:59:59 UTC",
            "*-12-01/3",
            "3/4-*",
            "2027/2-03-01",
            "Tue *-*-* 04:00 Europe/Berlin",
            // DST: skipped and repeated times in Berlin and New York (2027).
            "2027-03-28 02:30",
            "2027-10-31 02:30",
            "2027-03-14 02:30",
            "2027-11-07 01:30",
            "2027-10-31 *:0/20",
        ];
        // This host's zone, and two with DST on either side of the Atlantic.
        for zone in ["", "Europe/Berlin", "America/New_York"] {
            compare_with_systemd(&exprs, zone);
        }
    }

    fn compare_with_systemd(exprs: &[&str], zone: &str) {
        let local = if zone.is_empty() { TimeZone::system() } else { TimeZone::get(zone).unwrap() };
        let mut cmd = std::process::Command::new("systemd-analyze");
        cmd.args(["calendar", "--iterations=3"]).args(exprs);
        if !zone.is_empty() {
            cmd.env("TZ", zone);
        }
        for attempt in 0..3 {
            let before = Timestamp::now();
            let out = cmd.output().unwrap_or_else(|e| {
                panic!("systemd-analyze could not run ({e}): install systemd, or set FAAS_TEST_SKIP=systemd-analyze")
            });
            let after = Timestamp::now();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            // Each block: "Original form: X", then "Next elapse:", "Iter. #2:", "Iter. #3:", each
            // followed by "(in UTC): … UTC" when the zone is not UTC.
            let mut got: Vec<(String, Vec<Timestamp>)> = Vec::new();
            for line in text.lines().map(str::trim) {
                if let Some(e) = line.strip_prefix("Original form: ") {
                    got.push((e.to_owned(), Vec::new()));
                } else if let Some(ts) = line.strip_prefix("(in UTC): ").or_else(|| {
                    (line.starts_with("Next elapse: ") || line.starts_with("Iter. #"))
                        .then_some(line)
                        .filter(|l| l.ends_with(" UTC"))
                        .map(|l| l.split_once(": ").map_or("", |(_, t)| t))
                }) {
                    // "Mon 2026-11-30 16:20:48 UTC"
                    let mut w = ts.split_whitespace().skip(1);
                    let stamp = format!("{}T{}Z", w.next().unwrap_or(""), w.next().unwrap_or(""));
                    let t: Timestamp = stamp.parse().unwrap_or_else(|e| panic!("{ts:?}: {e}"));
                    let list = &mut got.last_mut().expect("a block starts with Original form").1;
                    if list.last() != Some(&t) {
                        list.push(t);
                    }
                }
            }
            assert_eq!(got.len(), exprs.len(), "{text}");
            let mine = |from: Timestamp, e: &str| {
                let c = Calendar::parse(e).unwrap_or_else(|err| panic!("{err}"));
                let mut out = Vec::new();
                let mut t = from;
                while let Some(n) = c.next_in(t, &local).filter(|_| out.len() < 3) {
                    out.push(n);
                    t = n;
                }
                out
            };
            // A boundary between `before` and `after` may move systemd's first elapse: retry.
            let differs: Vec<String> = got
                .iter()
                .zip(exprs.iter().copied())
                .filter(|((_, theirs), e)| *theirs != mine(before, e) && *theirs != mine(after, e))
                .map(|((o, theirs), e)| format!("{e} ({o}): systemd {theirs:?}, faas {:?}", mine(before, e)))
                .collect();
            if differs.is_empty() {
                return;
            }
            assert!(attempt < 2, "next elapses differ from systemd-analyze (TZ={zone}):\n{}", differs.join("\n"));
        }
    }
}
