//! Values with units, written the way systemd writes them (`"128M"`, `"10s"`, `"50%"`), parsed
//! once at load time into typed values so nothing downstream handles strings.
//! Sizes use systemd's base-1024 suffixes (systemd.resource-control(5)); durations use the
//! suffixes of systemd.time(7).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A size in bytes: `"128M"`, `"1G"`, `"512K"`, or a plain integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

/// A wall-clock span: `"10s"`, `"500ms"`, `"1min 30s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

/// A share of one CPU in percent (`"50%"`, `"200%"` for two cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percent(pub u32);

/// Parses `"128M"` style sizes; the `Err` names what was wrong.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "{s:?} is not a size: expected a number with an optional K, M, G or T suffix, like \"128M\""
        ));
    }
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is too large"))?;
    let shift = match suffix.trim() {
        "" | "B" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => {
            return Err(format!(
                "{s:?} has an unknown size suffix {other:?}: use K, M, G or T (base 1024, as systemd does)"
            ))
        }
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses systemd.time(7) spans: a sequence of number+unit pairs; a bare number is seconds.
pub fn parse_span(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration: write it like \"10s\" or \"500ms\"".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let split = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let value: f64 =
            num.parse().map_err(|_| format!("{s:?} is not a duration: expected e.g. \"10s\", \"500ms\", \"2min\""))?;
        let after = after.trim_start();
        let unit_len = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        let scale = match unit {
            "us" | "usec" | "µs" => 1e-6,
            "ms" | "msec" => 1e-3,
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            other => return Err(format!("{s:?} has an unknown time unit {other:?}: use us, ms, s, min, h or d")),
        };
        total += Duration::from_secs_f64(value * scale);
        rest = tail;
    }
    Ok(total)
}

/// Parses `"50%"` into 50.
pub fn parse_percent(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let num = t
        .strip_suffix('%')
        .ok_or_else(|| format!("{s:?} is not a percentage: write it like \"50%\" (100% = one core)"))?;
    let n: u32 = num.trim().parse().map_err(|_| format!("{s:?} is not a percentage: write it like \"50%\""))?;
    if n == 0 {
        return Err(format!("{s:?}: a CPU share must be above 0%"));
    }
    Ok(n)
}

struct UnitVisitor<T> {
    what: &'static str,
    parse: fn(&str) -> Result<T, String>,
    from_int: Option<fn(u64) -> T>,
}

impl<T> Visitor<'_> for UnitVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match (self.from_int, u64::try_from(v)) {
            (Some(f), Ok(v)) => Ok(f(v)),
            _ => Err(E::custom(format!("expected {}, found the number {v}", self.what))),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            what: "a size like \"128M\"",
            parse: |s| parse_bytes(s).map(Bytes),
            from_int: Some(Bytes),
        })
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            what: "a duration like \"10s\"",
            parse: |s| parse_span(s).map(Span),
            from_int: None,
        })
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            what: "a percentage like \"50%\"",
            parse: |s| parse_percent(s).map(Percent),
            from_int: None,
        })
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let n = self.0;
        for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if n != 0 && n % (1 << shift) == 0 {
                return write!(f, "{}{suffix}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_base_1024() {
        assert_eq!(parse_bytes("128M"), Ok(128 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("16K"), Ok(16 << 10));
        assert!(parse_bytes("128Q").unwrap_err().contains("unknown size suffix \"Q\""));
        assert!(parse_bytes("M").is_err());
        assert!(parse_bytes("99999999999999T").unwrap_err().contains("too large"));
    }

    #[test]
    fn spans_follow_systemd_time() {
        assert_eq!(parse_span("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_span("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_span("1min 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_span("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_span("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_span("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_span("10 parsecs").unwrap_err().contains("unknown time unit"));
        assert!(parse_span("").is_err());
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("50%"), Ok(50));
        assert_eq!(parse_percent("200%"), Ok(200));
        assert!(parse_percent("50").is_err());
        assert!(parse_percent("0%").is_err());
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(Bytes(128 << 20).to_string(), "128M");
        assert_eq!(Bytes(1000).to_string(), "1000");
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1500ms");
    }
}
