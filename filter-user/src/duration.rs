//! Durations as operators type them and read them: humantime's form (`90s`, `10m`,
//! `1h30m`, `2d`, `500ms`), the same for every flag that takes a time.

use std::time::Duration;

use filter_common::cidr::echo;
use thiserror::Error;

/// The longest duration accepted (TTLs, bans): 3650 days, about ten years. Longer
/// values are refused rather than wrapped: the data path's clock is a u64 of
/// nanoseconds, and an expiry past it would have to wrap around into the past.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// The examples every duration error gives.
const EXAMPLES: &str = "a number with a unit, e.g. 500ms, 90s, 10m, 1h30m, 2d";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BadDuration {
    #[error("'{}' is not a duration: expected {EXAMPLES}", echo(.0))]
    Syntax(String),
    #[error("'{}' is zero: expected a positive duration, {EXAMPLES}", echo(.0))]
    Zero(String),
    #[error("'{}' is longer than the maximum of 3650d (about 10 years)", echo(.0))]
    TooLong(String),
    #[error("'{}' is out of range: expected {} to {}", echo(.text), format_exact(*.min), format_exact(*.max))]
    OutOfRange { text: String, min: Duration, max: Duration },
}

/// Parses a humantime duration (units ns, us, ms, s, m, h, d, w and their long
/// names; parts may be run together or separated by spaces). A bare number is
/// refused: its unit would be a guess. Zero is refused too (a ban or TTL of nothing
/// is a mistake), and so is anything over [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(BadDuration::Zero(text.to_string())),
        Ok(d) if d > MAX_DURATION => Err(BadDuration::TooLong(text.to_string())),
        Ok(d) => Ok(d),
        Err(humantime::DurationError::NumberOverflow) => Err(BadDuration::TooLong(text.to_string())),
        Err(_) => Err(BadDuration::Syntax(text.to_string())),
    }
}

/// [`parse_duration`], then checked against `min..=max` (intervals of `stats
/// --watch` and `top`).
pub fn parse_within(text: &str, min: Duration, max: Duration) -> Result<Duration, BadDuration> {
    let d = parse_duration(text)?;
    if d < min || d > max {
        return Err(BadDuration::OutOfRange { text: text.to_string(), min, max });
    }
    Ok(d)
}

/// Nanoseconds of `d`, for the maps; saturates (parsed durations are far below).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whole seconds of `d` in humantime's form (`1h 2m 5s`, at least `0s`): what
/// remains of a TTL or ban. [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    format_exact(Duration::from_secs(d.as_secs()))
}

/// `d` in humantime's form, to the nanosecond (an interval of `500ms`).
pub fn format_exact(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        for (text, secs) in
            [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("1h 30m", 5400), ("2d", 172_800)]
        {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn refused_forms() {
        for bad in ["", "0s", "s", "10x", "-5s", "h1", "45"] {
            assert!(
                matches!(parse_duration(bad), Err(BadDuration::Syntax(_) | BadDuration::Zero(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_duration("10x").unwrap_err().to_string(),
            "'10x' is not a duration: expected a number with a unit, e.g. 500ms, 90s, 10m, 1h30m, 2d"
        );
        assert_eq!(parse_duration("45"), Err(BadDuration::Syntax("45".into())));
        assert_eq!(parse_duration("0s"), Err(BadDuration::Zero("0s".into())));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_millis(3_725_400)), "1h 2m 5s");
        assert_eq!(format_exact(Duration::from_millis(500)), "500ms");
        for s in [1u64, 59, 61, 3600, 90_061, MAX_DURATION.as_secs()] {
            assert_eq!(parse_duration(&format_duration(Duration::from_secs(s))), Ok(Duration::from_secs(s)));
        }
    }

    #[test]
    fn ranges_are_checked() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(60));
        assert_eq!(parse_within("100ms", min, max), Ok(min));
        assert_eq!(parse_within("1m", min, max), Ok(max));
        let err = parse_within("50ms", min, max).unwrap_err().to_string();
        assert_eq!(err, "'50ms' is out of range: expected 100ms to 1m");
        assert!(parse_within("61s", min, max).is_err());
    }

    #[test]
    fn the_maximum_is_enforced_not_wrapped() {
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("315360000s"), Ok(MAX_DURATION));
        // These once gave a 25-minute TTL and an already expired entry.
        for long in ["3650d1s", "213504d", "213503d23h34m", "3651d", "315360001s", "99999999999999999999999s"]
        {
            assert_eq!(parse_duration(long), Err(BadDuration::TooLong(long.into())), "{long}");
        }
        assert_eq!(
            parse_duration("213504d").unwrap_err().to_string(),
            "'213504d' is longer than the maximum of 3650d (about 10 years)"
        );
        // Parts that overflow u64 or Duration on their own.
        for long in ["18446744073709551615d", "5000000000000000000000ms1d"] {
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
