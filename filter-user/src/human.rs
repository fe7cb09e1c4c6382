//! Numbers as the CLI prints them for people.

use num_format::{Locale, ToFormattedString as _};

/// Thousands separators: `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    n.to_formatted_string(&Locale::en)
}

#[cfg(test)]
mod tests {
    #[test]
    fn grouped() {
        for (n, s) in [(0, "0"), (999, "999"), (1000, "1,000"), (1_234_567, "1,234,567")] {
            assert_eq!(super::grouped(n), s);
        }
    }
}
