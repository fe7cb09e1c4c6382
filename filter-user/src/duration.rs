//! Durations as operators type them: `90s`, `10m`, `1h30m`, `2d`, `500ms`.

use std::time::Duration;

use filter_common::cidr::echo;
use thiserror::Error;

/// The longest duration accepted (TTLs, bans): 3650 days, about ten years. Longer
/// values are refused rather than wrapped: the data path's clock is a u64 of
/// nanoseconds, and an expiry past it would have to wrap around into the past.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BadDuration {
    #[error("'{}' is not a duration (examples: 90s, 10m, 1h30m, 2d)", echo(.0))]
    Syntax(String),
    #[error("'{}' is longer than the maximum of 3650d (about 10 years)", echo(.0))]
    TooLong(String),
}

/// Parses one or more `<number><unit>` parts (units ms, s, m, h, d); a bare number
/// means seconds. Zero is refused: a ban or TTL of nothing is a mistake; so is
/// anything over [`MAX_DURATION`]. All arithmetic is checked.
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    let d = parse_any(text)?;
    if d > MAX_DURATION { Err(BadDuration::TooLong(text.to_string())) } else { Ok(d) }
}

fn parse_any(text: &str) -> Result<Duration, BadDuration> {
    let err = || BadDuration::Syntax(text.to_string());
    let too_long = || BadDuration::TooLong(text.to_string());
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = s.parse().map_err(|_| too_long())?;
        return if n == 0 { Err(err()) } else { Ok(Duration::from_secs(n)) };
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total = u32::try_from(n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .and_then(|d| total.checked_add(d))
            .ok_or_else(too_long)?;
    }
    if total.is_zero() { Err(err()) } else { Ok(total) }
}

/// Nanoseconds of `d`, for the maps; saturates (parsed durations are far below).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `1h2m3s`-style rendering for humans (whole seconds, at least `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        for (text, secs) in
            [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2d", 172_800), ("45", 45)]
        {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn refused_forms() {
        for bad in ["", "0", "0s", "s", "10x", "1.5h", "-5s", "10 m", "h1", "99999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(matches!(parse_duration("1.5h"), Err(BadDuration::Syntax(_))));
        assert_eq!(
            parse_duration("10x").unwrap_err().to_string(),
            "'10x' is not a duration (examples: 90s, 10m, 1h30m, 2d)"
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        for s in [1u64, 59, 61, 3600, 90_061] {
            assert_eq!(parse_duration(&format_duration(Duration::from_secs(s))), Ok(Duration::from_secs(s)));
        }
    }

    #[test]
    fn the_maximum_is_enforced_not_wrapped() {
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("315360000"), Ok(MAX_DURATION));
        // These once gave a 25-minute TTL and an already expired entry.
        for long in ["3650d1s", "213504d", "213503d23h34m", "3651d", "315360001", "99999999999999999999999s"]
        {
            assert_eq!(parse_duration(long), Err(BadDuration::TooLong(long.into())), "{long}");
        }
        assert_eq!(
            parse_duration("213504d").unwrap_err().to_string(),
            "'213504d' is longer than the maximum of 3650d (about 10 years)"
        );
        // Parts that overflow u32 or Duration on their own.
        for long in ["4294967296s", "18446744073709551615d", "5000000000ms1d"] {
            assert!(matches!(parse_duration(long), Err(BadDuration::TooLong(_))), "{long}");
        }
    }

    #[test]
    fn errors_quote_little_and_escape() {
        let long = format!("\u{1b}[31m{}", "9".repeat(100_000));
        let msg = parse_duration(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(!msg.contains('\u{1b}'), "{msg}");
        assert!(msg.contains("\\u{1b}[31m"), "{msg}");
    }
}
