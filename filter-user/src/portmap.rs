//! Port bitmaps (the policy's served ports, the SYN-cookie ports) as the controller
//! writes and reads them, the "P" / "LO-HI" text of a port range, and the one grammar
//! of port lists every command takes: [`PORT_LIST`].

use filter_common::{
    cidr::echo,
    rules::{PORT_WORDS, Proto, port_bit},
};
use thiserror::Error;

use crate::rules::parse_range;

/// The port-list grammar, as help and errors name it.
pub const PORT_LIST: &str = "[tcp/|udp/]PORT[-PORT][,...]";

#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad port list '{}': expected {PORT_LIST}, e.g. 80,443 or tcp/8000-8010,udp/53", echo(.0))]
pub struct BadPortList(pub String);

/// One item of a port list: a port or range, with the protocol when one is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortItem {
    pub proto: Option<Proto>,
    pub lo: u16,
    pub hi: u16,
}

/// Parses [`PORT_LIST`]: comma-separated items, each an optional `tcp/` or `udp/`
/// then a port or an inclusive range LO-HI. Blanks around items are ignored; an
/// empty list is an error. What an item without a protocol means is the command's
/// business (SYN cookies: tcp; the served-ports policy: both).
pub fn parse_port_list(text: &str) -> Result<Vec<PortItem>, BadPortList> {
    let bad = || BadPortList(text.to_string());
    let items: Vec<PortItem> = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (proto, ports) = match item.split_once('/') {
                Some((p, ports)) => match p.trim().to_ascii_lowercase().as_str() {
                    "tcp" => (Some(Proto::Tcp), ports),
                    "udp" => (Some(Proto::Udp), ports),
                    _ => return Err(bad()),
                },
                None => (None, item),
            };
            let (lo, hi) = parse_range(ports).map_err(|_| bad())?;
            Ok(PortItem { proto, lo, hi })
        })
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err(bad());
    }
    Ok(items)
}

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

/// Port ranges as written back: "80,443,8000-8010".
pub fn ranges_text(ranges: &[(u16, u16)]) -> String {
    ranges.iter().map(|&(lo, hi)| range_text(lo, hi)).collect::<Vec<_>>().join(",")
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

    #[test]
    fn the_port_list_grammar() {
        let item = |proto, lo, hi| PortItem { proto, lo, hi };
        assert_eq!(
            parse_port_list("80, tcp/443,udp/53,8000-8010, TCP/1-2,").unwrap(),
            vec![
                item(None, 80, 80),
                item(Some(Proto::Tcp), 443, 443),
                item(Some(Proto::Udp), 53, 53),
                item(None, 8000, 8010),
                item(Some(Proto::Tcp), 1, 2),
            ]
        );
        for bad in ["", ",", "icmp/1", "tcp/", "/80", "80-", "443-80", "65536", "tcp:80", "tcp/udp/80"] {
            assert_eq!(parse_port_list(bad), Err(BadPortList(bad.into())), "{bad}");
        }
        assert_eq!(
            parse_port_list("x").unwrap_err().to_string(),
            "bad port list 'x': expected [tcp/|udp/]PORT[-PORT][,...], e.g. 80,443 or tcp/8000-8010,udp/53"
        );
    }
}
