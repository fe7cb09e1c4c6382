//! Parsing of addresses, CIDR prefixes and list files, as the operator types them.

use std::net::IpAddr;

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

/// Parses `ADDR` (meaning /32 or /128) or `ADDR/LEN`. A prefix with bits set past its
/// length is refused, naming the prefix that was probably meant: silently widening
/// `203.0.113.7/24` to the whole /24 is not something to guess.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(CidrError::Empty);
    }
    let (addr_text, len_text) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| CidrError::BadAddress(s.to_string()))?;
    let max = match addr {
        IpAddr::V4(_) => 32u8,
        IpAddr::V6(_) => 128u8,
    };
    let len = match len_text {
        None => max,
        Some(l) => {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CidrError::BadPrefix(s.to_string()));
            }
            let len: u32 = l.parse().map_err(|_| CidrError::BadPrefix(s.to_string()))?;
            if len > u32::from(max) {
                let family = if max == 32 { "IPv4" } else { "IPv6" };
                return Err(CidrError::PrefixTooLong { given: s.to_string(), len, family, max });
            }
            len as u8
        }
    };
    let net = IpNet::new(addr, len).expect("prefix length checked above");
    if net.trunc() != net {
        return Err(CidrError::HostBits { given: s.to_string(), suggested: net.trunc() });
    }
    Ok(net)
}

/// A bad line in a list file: `FILE:LINE: reason`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{file}:{line}: {reason}{}", more_suffix(*.more))]
pub struct ListFileError {
    pub file: String,
    pub line: usize,
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

/// Parses a list file: one address or CIDR per line; blank lines, `#` comments and
/// `;` comments (Spamhaus DROP style, also as a suffix) are ignored. Fails on the
/// first bad line, counting the others, so nothing of a bad file is ever applied.
pub fn parse_list(file: &str, text: &str) -> Result<Vec<IpNet>, ListFileError> {
    let mut nets = Vec::new();
    let mut first_err: Option<ListFileError> = None;
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split(['#', ';']).next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_cidr(content) {
            Ok(net) if first_err.is_none() => nets.push(net),
            Ok(_) => {}
            Err(reason) => match &mut first_err {
                Some(e) => e.more += 1,
                None => {
                    first_err = Some(ListFileError { file: file.to_string(), line: i + 1, reason, more: 0 })
                }
            },
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(nets),
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
            "bad.txt:3: 'not-an-ip' is not an IPv4 or IPv6 address (and 1 more bad line)"
        );
        let err = parse_list("f", "1.2.3.4 5.6.7.8\n").unwrap_err();
        assert_eq!(err.to_string(), "f:1: '1.2.3.4 5.6.7.8' is not an IPv4 or IPv6 address");
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
        fn bad_line_position_is_exact(good in 0usize..50, after in 0usize..5) {
            let mut text = "192.0.2.1\n".repeat(good);
            text.push_str("192.0.2.256\n");
            text.push_str(&"bad\n".repeat(after));
            let err = parse_list("x", &text).unwrap_err();
            prop_assert_eq!(err.line, good + 1);
            prop_assert_eq!(err.more, after);
        }
    }
}
