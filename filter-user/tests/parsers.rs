//! Fuzzing the host parsers an operator's input goes through: list files, CIDRs,
//! durations, port ranges and lists, served ports, rule names. A bounded proptest run
//! (fixed case counts, so CI time is fixed) plus the corpus in tests/corpus/parsers/,
//! replayed on every run. Properties: no panic; every error is one line of bounded
//! length with no control characters or terminal escapes in it; what parses round-trips
//! through its printed form.
//!
//! A failing input found by proptest belongs in the corpus: add it to the matching file.

use std::{path::PathBuf, time::Duration};

use filter_common::cidr::{self, parse_cidr, parse_list};
use filter_common::rules::Proto;
use floodgate::{
    duration::{BadDuration, parse_within},
    duration::{MAX_DURATION, format_duration, parse_duration},
    policy::{Served, parse_serve},
    portmap::{PortItem, parse_port_list, range_text},
    rules::{RuleSpec, parse_range},
    synproxy::parse_ports,
};
use ipnet::IpNet;
use proptest::prelude::*;

/// Longest error message accepted: the fixed text of the longest message plus an
/// echoed input of at most 80 characters, each escaped to at most 8 bytes.
const MAX_ERROR: usize = 1024;

#[track_caller]
fn check_error(what: &str, input: &str, msg: &str) {
    assert!(!msg.contains(['\n', '\r']), "{what}({input:?}): error spans lines: {msg:?}");
    assert!(
        !msg.chars().any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
        "{what}({input:?}): unescaped control character in {msg:?}"
    );
    assert!(msg.len() <= MAX_ERROR, "{what}({input:?}): {} bytes of error", msg.len());
    assert!(!msg.is_empty());
}

fn cidr_case(input: &str) {
    match parse_cidr(input) {
        Ok(net) => {
            assert_eq!(parse_cidr(&net.to_string()), Ok(net), "round trip of {input:?}");
            assert_eq!(net.trunc(), net, "{input:?} parsed with host bits");
            if let IpNet::V6(n) = net {
                assert!(
                    n.prefix_len() < 96 || n.network().to_ipv4_mapped().is_none(),
                    "{input:?}: IPv4-mapped left as IPv6"
                );
            }
        }
        Err(e) => check_error("parse_cidr", input, &e.to_string()),
    }
}

fn list_case(file: &str, text: &str) {
    match parse_list(file, text) {
        Ok(nets) => {
            // Printing the list and reading it back gives the same list.
            let printed: String = nets.iter().map(|n| format!("{n}\n")).collect();
            assert_eq!(parse_list(file, &printed), Ok(nets), "round trip of {text:?}");
        }
        Err(e) => {
            let msg = e.to_string();
            check_error("parse_list", text, &msg);
            assert!(msg.starts_with(&format!("{}:{}:{}: ", cidr::echo(file), e.line, e.column)), "{msg}");
            // The column is where the bad entry starts on its line.
            let line = text.strip_prefix('\u{feff}').unwrap_or(text).lines().nth(e.line - 1).unwrap();
            let rest: String = line.chars().skip(e.column - 1).collect();
            assert!(e.column == 1 || line.chars().nth(e.column - 2).unwrap().is_whitespace(), "{msg}");
            assert!(!rest.starts_with(char::is_whitespace), "{msg}");
        }
    }
}

fn duration_case(input: &str) {
    match parse_duration(input) {
        Ok(d) => {
            assert!(!d.is_zero() && d <= MAX_DURATION, "{input:?} gave {d:?}");
            let whole = Duration::from_secs(d.as_secs());
            if !whole.is_zero() {
                assert_eq!(parse_duration(&format_duration(whole)), Ok(whole), "round trip of {input:?}");
            }
        }
        Err(e) => check_error("parse_duration", input, &e.to_string()),
    }
}

fn ports_case(input: &str) {
    match parse_range(input) {
        Ok((lo, hi)) => {
            assert!(lo <= hi);
            assert_eq!(parse_range(&range_text(lo, hi)).ok(), Some((lo, hi)), "round trip of {input:?}");
        }
        Err(e) => check_error("parse_range", input, &e.to_string()),
    }
    match parse_ports(input) {
        Ok(ranges) => {
            let text: Vec<String> = ranges.iter().map(|&(lo, hi)| range_text(lo, hi)).collect();
            assert_eq!(parse_ports(&text.join(",")).unwrap(), ranges, "round trip of {input:?}");
        }
        Err(e) => check_error("parse_ports", input, &e.to_string()),
    }
    match parse_port_list(input) {
        Ok(items) => {
            assert!(!items.is_empty() && items.iter().all(|i| i.lo <= i.hi), "{input:?}");
            assert_eq!(parse_port_list(&port_list_text(&items)), Ok(items), "round trip of {input:?}");
        }
        Err(e) => check_error("parse_port_list", input, &e.to_string()),
    }
    let serve = format!("tcp/{input}");
    match parse_serve(&serve) {
        Ok(_) => {}
        Err(e) => check_error("parse_serve", &serve, &e.to_string()),
    }
    if let Err(e) = parse_serve(input) {
        check_error("parse_serve", input, &e.to_string());
    }
}

/// A port list as the grammar writes it.
fn port_list_text(items: &[PortItem]) -> String {
    let text: Vec<String> = items
        .iter()
        .map(|i| {
            let proto = i.proto.map(|p| format!("{}/", p.name())).unwrap_or_default();
            format!("{proto}{}", range_text(i.lo, i.hi))
        })
        .collect();
    text.join(",")
}

/// One grammar for every port list: what each command makes of a protocol.
#[test]
fn port_lists_mean_the_same_everywhere() {
    let served = |proto, lo, hi| Served { proto, lo, hi };
    // The policy: a bare port is served on TCP and UDP.
    assert_eq!(
        parse_serve("53,tcp/443,udp/6000-6010").unwrap(),
        vec![
            served(Proto::Tcp, 53, 53),
            served(Proto::Udp, 53, 53),
            served(Proto::Tcp, 443, 443),
            served(Proto::Udp, 6000, 6010)
        ]
    );
    // SYN cookies: TCP only, with or without the prefix; udp/ is refused by name.
    assert_eq!(parse_ports("80,tcp/443,8000-8010").unwrap(), vec![(80, 80), (443, 443), (8000, 8010)]);
    let err = parse_ports("80,udp/53").unwrap_err().to_string();
    assert!(err.contains("SYN cookies are for TCP ports only"), "{err}");
    // Errors name the grammar, the same for both commands.
    for err in
        [parse_ports("80;443").unwrap_err().to_string(), parse_serve("icmp/1").unwrap_err().to_string()]
    {
        assert!(err.contains("expected [tcp/|udp/]PORT[-PORT][,...]"), "{err}");
    }
    assert!(parse_ports("").is_err() && parse_ports(" , ").is_err());
    assert_eq!(parse_serve(" , ").unwrap(), vec![], "serves nothing (the CLI refuses it)");
}

/// Durations: humantime's form only; bare numbers (whose unit would be a guess),
/// zero, and values past the bounds are refused with the bound in the message.
#[test]
fn durations_take_one_form() {
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert!(matches!(parse_duration("1"), Err(BadDuration::Syntax(_))));
    assert!(matches!(parse_duration("0ms"), Err(BadDuration::Zero(_))));
    let (min, max) = (Duration::from_millis(100), Duration::from_secs(60));
    assert_eq!(parse_within("0.5s", min, max), Ok(Duration::from_millis(500)));
    let err = parse_within("90s", min, max).unwrap_err().to_string();
    assert_eq!(err, "'90s' is out of range: expected 100ms to 1m");
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
}

fn name_case(input: &str) {
    match RuleSpec::parse("udp", Some("53"), None, true, Some(input)) {
        Ok(spec) => {
            // (An empty name means none: the rule is named by its id.)
            assert!(input.len() < 32, "{input:?} accepted");
            assert_eq!(spec.name, input);
        }
        Err(e) => check_error("rule name", input, &e.to_string()),
    }
    if let Err(e) = RuleSpec::parse(input, None, Some(input), false, None) {
        check_error("rule proto", input, &e.to_string());
    }
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/parsers")
}

/// The lines of a corpus file, without its `#` comment lines and empty lines.
fn corpus_lines(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(corpus_dir().join(name)).expect("corpus file");
    let lines: Vec<String> =
        text.split('\n').filter(|l| !l.is_empty() && !l.starts_with("# ")).map(String::from).collect();
    assert!(lines.len() >= 10, "{name}: corpus too small");
    lines
}

#[test]
fn corpus_cidrs() {
    for line in corpus_lines("cidr.txt") {
        cidr_case(&line);
    }
    // A few outcomes pinned down.
    assert_eq!(parse_cidr("::ffff:198.51.100.9").unwrap().to_string(), "198.51.100.9/32");
    assert!(parse_cidr("\u{1b}[2J\u{1b}]0;title\u{7}").unwrap_err().to_string().contains("\\u{1b}[2J"));
}

#[test]
fn corpus_list_files() {
    let dir = corpus_dir().join("lists");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus lists") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).expect("UTF-8 corpus file");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        list_case(&name, &text);
        // The same content under a hostile file name.
        list_case("\u{1b}[31mevil\u{7}.txt", &text);
        n += 1;
    }
    assert!(n >= 10, "{n} list files");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(parse_list("f", &read("bom-crlf.txt")).unwrap().len(), 2);
    assert_eq!(
        parse_list("f", &read("mapped.txt")).unwrap().iter().filter(|n| n.addr().is_ipv4()).count(),
        3
    );
    assert_eq!(parse_list("f", &read("spamhaus.txt")).unwrap().len(), 2);
    assert_eq!(parse_list("f", &read("only-comments.txt")), Ok(vec![]));
    let long = parse_list("f", &read("long-line.txt")).unwrap_err().to_string();
    assert!(long.ends_with("…' is not an IPv4 or IPv6 address"), "{long}");
    let many = parse_list("f", &read("many-bad.txt")).unwrap_err().to_string();
    assert!(many.ends_with("(and 49 more bad lines)"), "{many}");
}

#[test]
fn corpus_durations() {
    for line in corpus_lines("durations.txt") {
        duration_case(&line);
    }
}

#[test]
fn corpus_ports() {
    for line in corpus_lines("ports.txt") {
        ports_case(&line);
    }
}

#[test]
fn corpus_rule_names() {
    for line in corpus_lines("rule-names.txt") {
        name_case(&line);
    }
}

/// Text mostly made of the characters the grammars use, so that generated inputs
/// get deep into the parsers, with some of anything else.
fn grammar_text(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop_oneof![8 => prop::sample::select(chars), 1 => any::<char>()], 0..max)
        .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_cidr(s in prop_oneof![grammar_text("0123456789abcdefABCDEF:./ \t%", 48), any::<String>()]) {
        cidr_case(&s);
    }

    #[test]
    fn fuzz_cidr_round_trip(a in any::<u128>(), v4 in any::<u32>(), len6 in 0u8..=128, len4 in 0u8..=32) {
        for net in [
            IpNet::new(std::net::Ipv6Addr::from(a).into(), len6).unwrap().trunc(),
            IpNet::new(std::net::Ipv4Addr::from(v4).into(), len4).unwrap().trunc(),
        ] {
            let parsed = parse_cidr(&net.to_string()).unwrap();
            prop_assert_eq!(parsed, cidr::unmap(net).unwrap_or(net));
        }
        // Every IPv4 prefix written as IPv4-mapped IPv6 is that IPv4 prefix.
        let n4 = IpNet::new(std::net::Ipv4Addr::from(v4).into(), len4).unwrap().trunc();
        let mapped = format!("::ffff:{}/{}", n4.addr(), 96 + u32::from(len4));
        prop_assert_eq!(parse_cidr(&mapped), Ok(n4));
    }

    #[test]
    fn fuzz_list_file(
        lines in prop::collection::vec(
            prop_oneof![
                4 => grammar_text("0123456789abcdef:./ \t#;", 40),
                1 => any::<String>(),
                1 => Just("\u{feff}192.0.2.1".to_string()),
                1 => Just(String::new()),
            ],
            0..40,
        ),
        crlf in any::<bool>(),
        name in grammar_text("abc./-", 12),
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        list_case(&name, &text);
    }

    #[test]
    fn fuzz_duration(s in prop_oneof![grammar_text("0123456789smhd", 24), any::<String>()]) {
        duration_case(&s);
    }

    #[test]
    fn fuzz_duration_round_trip(secs in 1u64..=MAX_DURATION.as_secs()) {
        let d = Duration::from_secs(secs);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn fuzz_ports(s in prop_oneof![grammar_text("0123456789-, ", 24), grammar_text("0123456789-,tcpudp/", 24), any::<String>()]) {
        ports_case(&s);
    }

    #[test]
    fn fuzz_port_round_trip(a in any::<u16>(), b in any::<u16>()) {
        let (lo, hi) = (a.min(b), a.max(b));
        prop_assert_eq!(parse_range(&range_text(lo, hi)).ok(), Some((lo, hi)));
    }

    #[test]
    fn fuzz_rule_names(s in prop_oneof![grammar_text("abz09-_.", 40), any::<String>()]) {
        name_case(&s);
    }
}
