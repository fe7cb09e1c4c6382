//! Parsing of addresses, CIDR prefixes and list files, as the operator types them.
//!
//! Whatever of the input an error quotes goes through [`echo`]: at most
//! [`ECHO_MAX_CHARS`] characters, control characters and terminal escapes shown as
//! `\u{..}`, so a hostile or broken file can neither flood the terminal nor drive it.
//! IPv4-mapped IPv6 addresses and prefixes (`::ffff:198.51.100.9`, `::ffff:0:0/96`+n)
//! are normalised to IPv4 (`198.51.100.9`, /n): the data path sees IPv4 packets with
//! IPv4 headers, and an IPv6 entry for them would never match.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("empty address")]
    Empty,
    #[error("'{0}' is not an IPv4 or IPv6 address")]
    BadAddress(String),
    #[error("'{0}' has a bad prefix length (expected a number after '/')")]
    BadPrefix(String),
    #[error("'{given}' has prefix length {len}, but {family} allows 0 to {max}")]
    PrefixTooLong { given: String, len: u32, family: &'static str, max: u8 },
    #[error("'{given}' has host bits set; did you mean {suggested}?")]
    HostBits { given: String, suggested: IpNet },
}

/// Characters of the input an error message quotes at most.
pub const ECHO_MAX_CHARS: usize = 80;

/// `text` as an error message may quote it: control characters (C0, DEL, C1: ESC
/// and CSI among them), bidirectional overrides and BOMs escaped as `\u{..}` (a tab
/// as `\t`), and cut after [`ECHO_MAX_CHARS`] characters with `…`. The result is one
/// line of at most `ECHO_MAX_CHARS * 8 + 1` bytes whatever the input.
pub fn echo(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == ECHO_MAX_CHARS {
            out.push('…');
            break;
        }
        match c {
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c) =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// The IPv4 prefix an IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d/96+n`) stands for.
pub fn unmap(net: IpNet) -> Option<IpNet> {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => {
            let v4: Ipv4Addr = n.network().to_ipv4_mapped()?;
            Some(IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96).expect("96 + n <= 128"))
        }
        _ => None,
    }
}

/// Parses `ADDR` (meaning /32 or /128) or `ADDR/LEN`. A prefix with bits set past its
/// length is refused, naming the prefix that was probably meant: silently widening
/// `203.0.113.7/24` to the whole /24 is not something to guess. IPv4-mapped
/// addresses become IPv4 (see the module documentation).
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    parse_cidr_noting(text).map(|(net, _)| net)
}

/// As [`parse_cidr`], also telling whether the input was IPv4-mapped IPv6 that was
/// normalised to IPv4 (so the caller can say so).
pub fn parse_cidr_noting(text: &str) -> Result<(IpNet, bool), CidrError> {
    let net = parse_exact(text)?;
    Ok(match unmap(net) {
        Some(v4) => (v4, true),
        None => (net, false),
    })
}

fn parse_exact(text: &str) -> Result<IpNet, CidrError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(CidrError::Empty);
    }
    let (addr_text, len_text) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| CidrError::BadAddress(echo(s)))?;
    let max = match addr {
        IpAddr::V4(_) => 32u8,
        IpAddr::V6(_) => 128u8,
    };
    let len = match len_text {
        None => max,
        Some(l) => {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CidrError::BadPrefix(echo(s)));
            }
            let len: u32 = l.parse().map_err(|_| CidrError::BadPrefix(echo(s)))?;
            if len > u32::from(max) {
                let family = if max == 32 { "IPv4" } else { "IPv6" };
                return Err(CidrError::PrefixTooLong { given: echo(s), len, family, max });
            }
            len as u8
        }
    };
    let net = IpNet::new(addr, len).expect("prefix length checked above");
    if net.trunc() != net {
        let suggested = unmap(net.trunc()).unwrap_or(net.trunc());
        return Err(CidrError::HostBits { given: echo(s), suggested });
    }
    Ok(net)
}

/// A bad line in a list file: `FILE:LINE:COLUMN: reason`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{}:{line}:{column}: {reason}{}", echo(.file), more_suffix(*.more))]
pub struct ListFileError {
    pub file: String,
    pub line: usize,
    /// Where the bad entry starts on its line, in characters from 1.
    pub column: usize,
    pub reason: CidrError,
    /// Further bad lines after this one.
    pub more: usize,
}

fn more_suffix(more: usize) -> String {
    match more {
        0 => String::new(),
        1 => " (and 1 more bad line)".to_string(),
        n => format!(" (and {n} more bad lines)"),
    }
}

/// One entry of a list file: where it is (line and column from 1, the column in
/// characters) and what it parses to (with [`parse_cidr_noting`]'s flag).
#[derive(Debug, PartialEq, Eq)]
pub struct ListLine {
    pub line: usize,
    pub column: usize,
    pub parsed: Result<(IpNet, bool), CidrError>,
}

/// The entries of a list file, one per line that is not blank or a comment: the
/// grammar [`parse_list`] reads, for callers that want every bad line rather than the
/// first (`config check`).
pub fn list_lines(text: &str) -> impl Iterator<Item = ListLine> + '_ {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().enumerate().filter_map(|(i, raw)| {
        let before_comment = raw.split(['#', ';']).next().unwrap_or("");
        let content = before_comment.trim();
        if content.is_empty() {
            return None;
        }
        let lead = before_comment.len() - before_comment.trim_start().len();
        let column = before_comment[..lead].chars().count() + 1;
        Some(ListLine { line: i + 1, column, parsed: parse_cidr_noting(content) })
    })
}

/// Parses a list file: one address or CIDR per line; blank lines, `#` comments and
/// `;` comments (Spamhaus DROP style, also as a suffix) are ignored, and so is a UTF-8
/// byte-order mark at the start. Fails on the first bad line, counting the others, so
/// nothing of a bad file is ever applied.
pub fn parse_list(file: &str, text: &str) -> Result<Vec<IpNet>, ListFileError> {
    parse_list_noting(file, text).map(|(nets, _)| nets)
}

/// As [`parse_list`], also counting the IPv4-mapped entries normalised to IPv4.
pub fn parse_list_noting(file: &str, text: &str) -> Result<(Vec<IpNet>, usize), ListFileError> {
    let mut nets = Vec::new();
    let mut mapped = 0usize;
    let mut first_err: Option<ListFileError> = None;
    for entry in list_lines(text) {
        match entry.parsed {
            Ok((net, m)) if first_err.is_none() => {
                mapped += usize::from(m);
                nets.push(net)
            }
            Ok(_) => {}
            Err(reason) => match &mut first_err {
                Some(e) => e.more += 1,
                None => {
                    first_err = Some(ListFileError {
                        file: file.to_string(),
                        line: entry.line,
                        column: entry.column,
                        reason,
                        more: 0,
                    })
                }
            },
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok((nets, mapped)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn plain_addresses_are_hosts() {
        assert_eq!(parse_cidr("192.0.2.1"), Ok(net("192.0.2.1/32")));
        assert_eq!(parse_cidr(" 2001:db8::1 "), Ok(net("2001:db8::1/128")));
    }

    #[test]
    fn prefixes_at_their_edges() {
        for s in [
            "0.0.0.0/0",
            "128.0.0.0/1",
            "192.0.2.0/31",
            "192.0.2.1/32",
            "::/0",
            "2001:db8::/127",
            "2001:db8::1/128",
        ] {
            assert_eq!(parse_cidr(s), Ok(net(s)), "{s}");
        }
    }

    #[test]
    fn host_bits_suggest_the_prefix() {
        let err = parse_cidr("203.0.113.7/24").unwrap_err();
        assert_eq!(
            err,
            CidrError::HostBits { given: "203.0.113.7/24".into(), suggested: net("203.0.113.0/24") }
        );
        assert_eq!(err.to_string(), "'203.0.113.7/24' has host bits set; did you mean 203.0.113.0/24?");
        assert!(matches!(parse_cidr("2001:db8::1/64"), Err(CidrError::HostBits { .. })));
    }

    #[test]
    fn every_error_path() {
        assert_eq!(parse_cidr("  "), Err(CidrError::Empty));
        assert_eq!(parse_cidr("300.1.1.1"), Err(CidrError::BadAddress("300.1.1.1".into())));
        assert_eq!(parse_cidr("example.com"), Err(CidrError::BadAddress("example.com".into())));
        assert_eq!(parse_cidr("010.0.0.1"), Err(CidrError::BadAddress("010.0.0.1".into())));
        assert_eq!(parse_cidr("fe80::1%eth0"), Err(CidrError::BadAddress("fe80::1%eth0".into())));
        for bad in ["10.0.0.0/", "10.0.0.0/x", "10.0.0.0/+8", "10.0.0.0/-1", "10.0.0.0/8/8", "10.0.0.0/1000"]
        {
            assert_eq!(parse_cidr(bad), Err(CidrError::BadPrefix(bad.into())), "{bad}");
        }
        assert_eq!(
            parse_cidr("10.0.0.0/33").unwrap_err().to_string(),
            "'10.0.0.0/33' has prefix length 33, but IPv4 allows 0 to 32"
        );
        assert!(matches!(parse_cidr("::/129"), Err(CidrError::PrefixTooLong { max: 128, .. })));
    }

    #[test]
    fn list_files_accept_comments_and_spamhaus_suffixes() {
        let text = "; Spamhaus DROP List\n# comment\n\n192.0.2.0/24 ; SBL123\n  2001:db8::/32  \n198.51.100.7 # host\n";
        assert_eq!(
            parse_list("drop.txt", text),
            Ok(vec![net("192.0.2.0/24"), net("2001:db8::/32"), net("198.51.100.7/32")])
        );
        assert_eq!(parse_list("empty", ""), Ok(vec![]));
    }

    #[test]
    fn list_file_errors_name_file_and_line() {
        let text = "192.0.2.0/24\n\nnot-an-ip\n198.51.100.1/8\n";
        let err = parse_list("bad.txt", text).unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.more, 1);
        assert_eq!(
            err.to_string(),
            "bad.txt:3:1: 'not-an-ip' is not an IPv4 or IPv6 address (and 1 more bad line)"
        );
        let err = parse_list("f", "1.2.3.4 5.6.7.8\n").unwrap_err();
        assert_eq!(err.to_string(), "f:1:1: '1.2.3.4 5.6.7.8' is not an IPv4 or IPv6 address");
        // The column is the bad entry's first character, counted in characters.
        let err = parse_list("f", "192.0.2.1\n  \t é; x\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 5));
        assert_eq!(err.to_string(), "f:2:5: 'é' is not an IPv4 or IPv6 address");
    }

    #[test]
    fn ipv4_mapped_is_normalised_to_ipv4() {
        assert_eq!(parse_cidr("::ffff:198.51.100.9"), Ok(net("198.51.100.9/32")));
        assert_eq!(parse_cidr_noting("::ffff:198.51.100.9"), Ok((net("198.51.100.9/32"), true)));
        assert_eq!(parse_cidr_noting("198.51.100.9"), Ok((net("198.51.100.9/32"), false)));
        assert_eq!(parse_cidr("::FFFF:c633:6409/128"), Ok(net("198.51.100.9/32")));
        assert_eq!(parse_cidr("::ffff:198.51.100.0/120"), Ok(net("198.51.100.0/24")));
        assert_eq!(parse_cidr("::ffff:0.0.0.0/96"), Ok(net("0.0.0.0/0")));
        assert_eq!(
            parse_cidr("::ffff:198.51.100.9/120").unwrap_err().to_string(),
            "'::ffff:198.51.100.9/120' has host bits set; did you mean 198.51.100.0/24?"
        );
        // Not IPv4-mapped: NAT64, IPv4-compatible and shorter prefixes stay IPv6.
        for s in ["64:ff9b::c633:6409/128", "::c633:6409/128", "::/80", "::ffff:0:0:0/96"] {
            assert_eq!(parse_cidr_noting(s), Ok((net(s), false)), "{s}");
        }
        let (nets, mapped) =
            parse_list_noting("f", "::ffff:192.0.2.1\n192.0.2.2\n::ffff:192.0.2.0/120\n").unwrap();
        assert_eq!(nets, vec![net("192.0.2.1/32"), net("192.0.2.2/32"), net("192.0.2.0/24")]);
        assert_eq!(mapped, 2);
    }

    #[test]
    fn a_bom_at_the_start_is_ignored_elsewhere_refused() {
        assert_eq!(parse_list("f", "\u{feff}192.0.2.1\n"), Ok(vec![net("192.0.2.1/32")]));
        assert_eq!(parse_list("f", "\u{feff}\n# c\n"), Ok(vec![]));
        let err = parse_list("f", "192.0.2.1\n\u{feff}192.0.2.2\n").unwrap_err();
        assert_eq!(err.to_string(), "f:2:1: '\\u{feff}192.0.2.2' is not an IPv4 or IPv6 address");
    }

    #[test]
    fn echoed_input_is_capped_and_escaped() {
        // A 64 MiB bad line once came back whole in the error (8 MiB here, for speed).
        let huge = "x".repeat(8 << 20);
        let msg = parse_list("big.txt", &huge).unwrap_err().to_string();
        assert!(msg.len() < 200, "{} bytes", msg.len());
        assert!(msg.starts_with(&format!("big.txt:1:1: '{}…'", "x".repeat(ECHO_MAX_CHARS))), "{msg}");
        // Terminal escapes and other controls are shown, not sent.
        let evil = "\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{9b}31m\u{202e}1.2.3.4";
        let msg = parse_cidr(evil).unwrap_err().to_string();
        assert!(!msg.chars().any(|c| c.is_control() || c == '\u{202e}'), "{msg:?}");
        assert_eq!(
            msg,
            "'\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{d}\\u{9b}31m\\u{202e}1.2.3.4' is not an IPv4 or IPv6 address"
        );
        assert_eq!(echo("a\tb"), "a\\tb");
        assert_eq!(echo(&"é".repeat(100)).chars().count(), ECHO_MAX_CHARS + 1);
        // The file name is echoed the same way.
        let err = parse_list("\u{1b}[1mf", "bad\n").unwrap_err().to_string();
        assert!(err.starts_with("\\u{1b}[1mf:1:1: "), "{err}");
    }

    proptest! {
        #[test]
        fn any_truncated_prefix_round_trips(a in any::<u32>(), len in 0u8..=32) {
            let n = IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap().trunc();
            prop_assert_eq!(parse_cidr(&n.to_string()), Ok(n));
        }

        #[test]
        fn any_v6_prefix_with_host_bits_is_refused(a in any::<u128>(), len in 0u8..128) {
            let n = IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), len).unwrap();
            let r = parse_cidr(&n.to_string());
            if n.trunc() == n {
                prop_assert_eq!(r, Ok(n));
            } else {
                prop_assert_eq!(r, Err(CidrError::HostBits { given: n.to_string(), suggested: n.trunc() }));
            }
        }

        #[test]
        fn bad_line_position_is_exact(good in 0usize..50, after in 0usize..5, indent in 0usize..8) {
            let mut text = "192.0.2.1\n".repeat(good);
            text.push_str(&" ".repeat(indent));
            text.push_str("192.0.2.256\n");
            text.push_str(&"bad\n".repeat(after));
            let err = parse_list("x", &text).unwrap_err();
            prop_assert_eq!(err.line, good + 1);
            prop_assert_eq!(err.column, indent + 1);
            prop_assert_eq!(err.more, after);
        }
    }
}
