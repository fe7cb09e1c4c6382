//! Port bitmaps (the policy's served ports, the SYN-cookie ports) as the controller
//! writes and reads them, and the "P" / "LO-HI" text of a port range.

use filter_common::rules::{PORT_WORDS, port_bit};

/// The words of a bitmap with every port of `ranges` set.
pub fn bitmap(ranges: impl IntoIterator<Item = (u16, u16)>) -> Vec<u64> {
    let mut words = vec![0u64; PORT_WORDS as usize];
    for (lo, hi) in ranges {
        for p in lo..=hi {
            let (i, bit) = port_bit(p);
            words[i as usize] |= bit;
        }
    }
    words
}

/// The ranges of set ports in the bitmap whose words `word(i)` reads, in order.
pub fn ranges<E>(mut word: impl FnMut(u32) -> Result<u64, E>) -> Result<Vec<(u16, u16)>, E> {
    let mut out = Vec::new();
    let mut run: Option<(u16, u16)> = None;
    for i in 0..PORT_WORDS {
        let w = word(i)?;
        for b in 0..64u32 {
            let port = (i * 64 + b) as u16;
            if w & (1 << b) != 0 {
                run = Some(run.map_or((port, port), |(lo, _)| (lo, port)));
            } else if let Some(r) = run.take() {
                out.push(r);
            }
        }
    }
    out.extend(run);
    Ok(out)
}

/// "443" or "6000-6063".
pub fn range_text(lo: u16, hi: u16) -> String {
    if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_through_the_bitmap() {
        let want = vec![(0, 0), (53, 53), (63, 64), (8000, 8100), (65535, 65535)];
        let words = bitmap(want.iter().copied());
        let got = ranges(|i| Ok::<_, ()>(words[i as usize])).unwrap();
        assert_eq!(got, want);
        assert_eq!((range_text(80, 80), range_text(1, 2)), ("80".to_string(), "1-2".to_string()));
    }
}
