//! Numbers and times as floodgate prints them for people.

use std::time::{Duration, UNIX_EPOCH};

use num_format::{Locale, ToFormattedString as _};

/// Thousands separators: `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    n.to_formatted_string(&Locale::en)
}

/// A rate or count rounded with a decimal suffix: `950`, `12.3k`, `456k`, `1.2M`, `3.4G`.
pub fn si(n: u64) -> String {
    const UNITS: [(u64, &str); 4] =
        [(1_000_000_000_000, "T"), (1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")];
    let Some(&(base, unit)) = UNITS.iter().find(|(base, _)| n >= *base) else {
        return n.to_string();
    };
    let v = n as f64 / base as f64;
    // One decimal while it says something (12.3k), none from 100 on (456k).
    let text = if v >= 99.95 { format!("{v:.0}") } else { format!("{v:.1}") };
    format!("{}{unit}", text.strip_suffix(".0").unwrap_or(&text))
}

/// [`si`] with a unit after a space: `950 bit/s`, `12.3 kbit/s`, `4.2 GB`.
fn si_unit(n: u64, unit: &str) -> String {
    let s = si(n);
    match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => format!("{} {c}{unit}", &s[..i]),
        _ => format!("{s} {unit}"),
    }
}

/// Bits per second: `950 bit/s`, `12.3 kbit/s`, `9.6 Gbit/s`.
pub fn bits_per_sec(bps: u64) -> String {
    si_unit(bps, "bit/s")
}

/// Bytes, decimal: `512 B`, `1.5 kB`, `4.2 GB`.
pub fn bytes(n: u64) -> String {
    si_unit(n, "B")
}

/// A Unix time in milliseconds as ISO 8601 UTC to the second: `2026-03-04T05:06:07Z`.
pub fn utc(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn grouped() {
        for (n, s) in [(0, "0"), (999, "999"), (1000, "1,000"), (1_234_567, "1,234,567")] {
            assert_eq!(super::grouped(n), s);
        }
    }

    #[test]
    fn si() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1k"),
            (12_345, "12.3k"),
            (99_960, "100k"),
            (456_789, "457k"),
            (1_234_567, "1.2M"),
            (3_400_000_000, "3.4G"),
        ] {
            assert_eq!(super::si(n), s, "{n}");
        }
        assert_eq!(super::bits_per_sec(950), "950 bit/s");
        assert_eq!(super::bits_per_sec(9_600_000_000), "9.6 Gbit/s");
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(4_200_000_000), "4.2 GB");
    }

    #[test]
    fn utc() {
        assert_eq!(super::utc(1_772_600_767_500), "2026-03-04T05:06:07Z");
    }
}
