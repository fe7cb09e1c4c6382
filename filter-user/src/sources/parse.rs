//! A fetched body to a list of prefixes. The format is told by the body itself:
//! Spamhaus' JSON lines (`{"cidr":..}` records, a metadata line last) when the first
//! line that is not blank opens a JSON object, else one address or CIDR per line with
//! `#` and `;` comments (Spamhaus DROP/EDROP text, FireHOL netset, plain lists).
//! A body is taken whole or not at all: one bad line refuses it.

use filter_common::cidr::{self, CidrError, ListFileError, echo};
use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;

/// Why a body is not a list. The line numbers count from 1 in the body as served.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("empty body")]
    Empty,
    #[error("the body holds no entries (only comments and blank lines)")]
    NoEntries,
    #[error("an HTML page ({0}), not a list: probably an error page served with 200")]
    Html(&'static str),
    #[error("not UTF-8 text (bad byte at offset {offset}, line {line})")]
    NotUtf8 { offset: usize, line: usize },
    /// A bad line of a text list (its message names the source and the line).
    #[error(transparent)]
    Text(#[from] ListFileError),
    #[error("{}:{line}: {reason}", echo(.source_name))]
    Json { source_name: String, line: usize, reason: String },
    #[error("{}: metadata says {expected} records, the body holds {found}: truncated?", echo(.source_name))]
    RecordCount { source_name: String, expected: u64, found: usize },
    #[error("{}: no metadata line at the end of a JSON lines list: truncated?", echo(.source_name))]
    NoMetadata { source_name: String },
}

/// The formats [`parse_body`] tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// One address or CIDR per line, `#`/`;` comments.
    Text,
    /// Spamhaus' JSON lines (`drop_v4.json`, `drop_v6.json`).
    JsonLines,
}

/// The prefixes of `body`, sorted and without duplicates, and the format it was in.
/// `source_name` (the URL) prefixes line errors; `content_type` is the response's
/// Content-Type, if any. Host bits set are refused, IPv4-mapped IPv6 becomes IPv4, as
/// for every list (`filter_common::cidr`).
pub fn parse_body(
    source_name: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(Vec<IpNet>, BodyFormat), BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        let offset = e.valid_up_to();
        let line = 1 + body[..offset].iter().filter(|&&b| b == b'\n').count();
        BodyError::NotUtf8 { offset, line }
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.trim_start();
    if content_type.is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("text/html")) {
        return Err(BodyError::Html("Content-Type text/html"));
    }
    if first.starts_with('<') {
        return Err(BodyError::Html("it starts with '<'"));
    }
    let (mut nets, format) = if first.starts_with('{') {
        (parse_json_lines(source_name, text)?, BodyFormat::JsonLines)
    } else {
        (cidr::parse_list(source_name, text)?, BodyFormat::Text)
    };
    if nets.is_empty() {
        return Err(BodyError::NoEntries);
    }
    nets.sort_by(crate::store::net_order);
    nets.dedup();
    Ok((nets, format))
}

#[derive(Deserialize)]
struct JsonLine {
    cidr: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    records: Option<u64>,
}

/// Spamhaus' JSON lines: one object per line, `{"cidr":"192.0.2.0/24","sblid":..}`,
/// then a last line `{"type":"metadata",..,"records":N,..}`. The metadata line must be
/// there and its count (when given) must match: a body cut at a line boundary still
/// parses line by line, and this is what tells.
fn parse_json_lines(source_name: &str, text: &str) -> Result<Vec<IpNet>, BodyError> {
    let err =
        |line: usize, reason: String| BodyError::Json { source_name: source_name.to_string(), line, reason };
    let mut nets = Vec::new();
    let mut metadata: Option<Option<u64>> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if metadata.is_some() {
            return Err(err(i + 1, "a line after the metadata line".into()));
        }
        let rec: JsonLine = serde_json::from_str(line)
            .map_err(|e| err(i + 1, format!("not a JSON object of the list ({e}): '{}'", echo(line))))?;
        match (rec.cidr, rec.kind.as_deref()) {
            (Some(c), _) => {
                let net = cidr::parse_cidr(&c).map_err(|e: CidrError| err(i + 1, e.to_string()))?;
                nets.push(net);
            }
            (None, Some("metadata")) => metadata = Some(rec.records),
            _ => {
                return Err(err(
                    i + 1,
                    format!("neither a \"cidr\" record nor the metadata line: '{}'", echo(line)),
                ));
            }
        }
    }
    match metadata {
        None => Err(BodyError::NoMetadata { source_name: source_name.to_string() }),
        Some(Some(expected)) if expected != nets.len() as u64 => {
            Err(BodyError::RecordCount { source_name: source_name.to_string(), expected, found: nets.len() })
        }
        Some(_) => Ok(nets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn spamhaus_drop_text() {
        let body = b"; Spamhaus DROP List 2026/12/01 - (c) 2026 The Spamhaus Project SLU\n\
            ; https://www.spamhaus.org/drop/drop.txt\n\
            ; Last-Modified: Tue, 01 Dec 2026 05:17:00 GMT\n\
            198.51.100.0/24 ; SBL256893\n\
            192.0.2.0/24 ; SBL256894\n";
        let (nets, format) = parse_body("u", body, Some("text/plain")).unwrap();
        assert_eq!(format, BodyFormat::Text);
        assert_eq!(nets, vec![net("192.0.2.0/24"), net("198.51.100.0/24")]);
    }

    #[test]
    fn firehol_netset_with_plain_addresses_and_duplicates() {
        let body = b"#\n# firehol_level1\n#\n203.0.113.0/24\n198.51.100.7\n2001:db8::/32\n198.51.100.7\n";
        let (nets, format) = parse_body("u", body, None).unwrap();
        assert_eq!(format, BodyFormat::Text);
        assert_eq!(nets, vec![net("198.51.100.7/32"), net("203.0.113.0/24"), net("2001:db8::/32")]);
    }

    #[test]
    fn spamhaus_json_lines() {
        let body = br#"{"cidr":"192.0.2.0/24","sblid":"SBL1","rir":"arin"}
{"cidr":"2001:db8::/32","sblid":"SBL2","rir":"ripencc"}
{"type":"metadata","timestamp":1764550000,"size":123,"records":2,"copyright":"(c)","terms":"t"}
"#;
        let (nets, format) = parse_body("u", body, Some("application/json")).unwrap();
        assert_eq!(format, BodyFormat::JsonLines);
        assert_eq!(nets, vec![net("192.0.2.0/24"), net("2001:db8::/32")]);
    }

    #[test]
    fn json_lines_cut_short_are_refused() {
        let no_meta = b"{\"cidr\":\"192.0.2.0/24\",\"sblid\":\"SBL1\"}\n";
        assert_eq!(parse_body("u", no_meta, None), Err(BodyError::NoMetadata { source_name: "u".into() }));
        let short = b"{\"cidr\":\"192.0.2.0/24\"}\n{\"type\":\"metadata\",\"records\":3}\n";
        assert_eq!(
            parse_body("u", short, None),
            Err(BodyError::RecordCount { source_name: "u".into(), expected: 3, found: 1 })
        );
        let after = b"{\"cidr\":\"192.0.2.0/24\"}\n{\"type\":\"metadata\"}\n{\"cidr\":\"198.51.100.0/24\"}\n";
        assert!(matches!(parse_body("u", after, None), Err(BodyError::Json { line: 3, .. })));
        let bad = b"{\"cidr\":\"192.0.2.1/24\"}\n{\"type\":\"metadata\"}\n";
        assert_eq!(
            parse_body("u", bad, None).unwrap_err().to_string(),
            "u:1: '192.0.2.1/24' has host bits set; did you mean 192.0.2.0/24?"
        );
        let odd = b"{\"cidr\":\"192.0.2.0/24\"}\n{\"asn\":64496}\n";
        assert!(matches!(parse_body("u", odd, None), Err(BodyError::Json { line: 2, .. })));
    }

    #[test]
    fn refused_bodies_say_why_and_where() {
        assert_eq!(parse_body("u", b"", None), Err(BodyError::Empty));
        assert_eq!(parse_body("u", b" \n\n", None), Err(BodyError::Empty));
        assert_eq!(parse_body("u", b"# nothing listed today\n", None), Err(BodyError::NoEntries));
        assert_eq!(
            parse_body("u", b"<!DOCTYPE html><html><body>Bad gateway</body></html>", None),
            Err(BodyError::Html("it starts with '<'"))
        );
        assert_eq!(
            parse_body("u", b"192.0.2.0/24\n", Some("text/html; charset=utf-8")),
            Err(BodyError::Html("Content-Type text/html"))
        );
        assert_eq!(
            parse_body("http://x/l", b"192.0.2.0/24\n198.51.100.0/24\nOops, rate limited\n", None)
                .unwrap_err()
                .to_string(),
            "http://x/l:3:1: 'Oops, rate limited' is not an IPv4 or IPv6 address"
        );
        assert_eq!(
            parse_body("u", b"192.0.2.0/24\n\xff\xfe\n", None),
            Err(BodyError::NotUtf8 { offset: 13, line: 2 })
        );
    }
}
