//! Durations as written in Istio objects and on our command line: Go's `time.ParseDuration`
//! syntax (`900s`, `1.5s`, `100ms`, `1m`, `1h30m`, `250us`). One parser for both; the CLI
//! additionally reads a bare number as milliseconds (`--debounce 100`).
//!
//! The value is computed exactly (decimal digits to nanoseconds, no floating point), as Go
//! does; a leading `+` is allowed, a negative sign, exponents, `inf` and `nan` are rejected.

use std::time::Duration;

/// A duration that does not parse; the text is the (trimmed) input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad duration {0:?}")]
pub struct DurationError(pub String);

/// Nanoseconds per unit, longest suffix first where one is a prefix of another.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// A Go duration: one or more `<decimal><unit>` terms (`1h30m`, `1.5s`); `0` alone is zero.
pub fn parse_go(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    let bad = || DurationError(t.to_string());
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    // Go allows a sign; a negative duration is never meaningful here.
    let mut rest = t.strip_prefix('+').unwrap_or(t);
    let mut nanos: u128 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let (unit, per) = UNITS
            .iter()
            .filter(|(u, _)| tail.starts_with(u))
            .max_by_key(|(u, _)| u.len())
            .ok_or_else(bad)?;
        nanos = nanos
            .checked_add(decimal_times(num, *per).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = &tail[unit.len()..];
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// A CLI duration: Go syntax, or a bare number of milliseconds.
pub fn parse_cli(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let nanos = decimal_times(t, 1_000_000).ok_or_else(|| DurationError(t.to_string()))?;
        let secs =
            u64::try_from(nanos / 1_000_000_000).map_err(|_| DurationError(t.to_string()))?;
        return Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32));
    }
    parse_go(t)
}

/// `num` (decimal digits with at most one point, at least one digit) times `per` nanoseconds,
/// rounded down to a nanosecond.
fn decimal_times(num: &str, per: u128) -> Option<u128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let int_value: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int_value.checked_mul(per)?;
    let mut scale = per;
    for d in frac.chars() {
        let d = u128::from(d.to_digit(10)?);
        scale /= 10;
        if scale == 0 {
            break;
        }
        value = value.checked_add(d * scale)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go("900s"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_go("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_go("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_go("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_go(" 0.3s "), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go("+5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go(".5s"), Ok(Duration::from_millis(500)));
        for bad in [
            "x", "", "10", "-1s", "1e3s", "nans", "infs", "1..2s", ".s", "1sx",
        ] {
            assert!(parse_go(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_durations_read_bare_numbers_as_milliseconds() {
        assert_eq!(parse_cli("100"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_cli("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_cli("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_cli("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(
            parse_cli(" bogus ").map_err(|e| e.to_string()),
            Err("bad duration \"bogus\"".to_string())
        );
    }
}
