//! Durations as operators type them: `90s`, `10m`, `1h30m`, `2d`, `500ms`.

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("'{0}' is not a duration (examples: 90s, 10m, 1h30m, 2d)")]
pub struct BadDuration(pub String);

/// Parses one or more `<number><unit>` parts (units ms, s, m, h, d); a bare number
/// means seconds. Zero is refused: a ban or TTL of nothing is a mistake.
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    let err = || BadDuration(text.to_string());
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = s.parse().map_err(|_| err())?;
        return if n == 0 { Err(err()) } else { Ok(Duration::from_secs(n)) };
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
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
        total = unit
            .checked_mul(u32::try_from(n).map_err(|_| err())?)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(err)?;
    }
    if total.is_zero() { Err(err()) } else { Ok(total) }
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
}
