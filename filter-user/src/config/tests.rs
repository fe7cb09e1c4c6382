//! Every error path of the config checker, each at the position it must point to.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use proptest::prelude::*;

use super::*;

/// A directory of its own per test, removed afterwards.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "floodgate-config-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The list files the cases name, next to the config.
fn fixture() -> Dir {
    let d = Dir::new();
    d.write("good.txt", "192.0.2.0/24\n2001:db8::/32\n");
    d.write("d/a.txt", "198.51.100.1\n");
    d.write("d/b.txt", "198.51.100.2\n");
    d.write("bad.txt", "# header\n192.0.2.1\n   203.0.113.7/24 ; host bits\n");
    std::fs::create_dir_all(d.0.join("adir")).unwrap();
    d
}

fn load_in(dir: &Dir, text: &str) -> Result<Config, ConfigErrors> {
    let path = dir.write("floodgate.toml", text);
    load(&path)
}

/// `text` with the marker `@@` where the one error must point, and what its reason
/// must contain.
#[track_caller]
fn one_error(text: &str, reason: &str) {
    let dir = fixture();
    let at = text.find("@@").unwrap_or_else(|| panic!("no marker in {text:?}"));
    let line = text[..at].matches('\n').count() + 1;
    let column = text[..at].rsplit('\n').next().unwrap().chars().count() + 1;
    let clean = text.replace("@@", "");
    let errs = load_in(&dir, &clean).expect_err(&format!("no error for {clean:?}"));
    assert_eq!(errs.len(), 1, "{clean}\ngave:\n{errs}");
    let e = &errs.0[0];
    assert_eq!(e.file, dir.0.join("floodgate.toml").display().to_string());
    assert_eq!((e.line, e.column), (line, column), "position of '{}' in\n{clean}", e.reason);
    assert!(e.reason.contains(reason), "'{}' lacks '{reason}' in\n{clean}", e.reason);
    assert!(!e.reason.contains('\n'), "{}", e.reason);
}

const IF: &str = "[interface.eth0]\n";

#[test]
fn syntax_errors() {
    one_error("[interface.eth0]\nmode = \"auto@@\n", "TOML syntax");
    one_error("[interface.eth0]\nmode = @@auto\n", "TOML syntax");
    one_error("x = [1,@@\n", "TOML syntax");
    // Duplicate interfaces and duplicate keys are TOML's own error.
    one_error("[interface.eth0]\n[interface.@@eth0]\n", "duplicate key 'eth0'");
    one_error("[interface.eth0]\nmode = \"auto\"\n@@mode = \"skb\"\n", "duplicate key 'mode'");
    // Several syntax errors are all reported.
    let errs = load_in(&fixture(), "a = \"x\"\nb = \nc = \"y\"\nd = ]\n").unwrap_err();
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 4], "{errs}");
}

#[test]
fn unknown_keys_at_every_level() {
    for (section, key) in [
        ("", "servce"),
        ("[service]\n", "statedir"),
        ("[metrics]\n", "listen_on"),
        ("[log]\n", "level"),
        (IF, "blocklst"),
        ("[interface.eth0.blocklist]\n", "entry"),
        ("[interface.eth0.allowlist]\n", "file"),
        ("[[interface.eth0.blocklist.url]]\nurl = \"https://example.com/drop.txt\"\n", "every"),
        ("[interface.eth0.limits]\npps = 10\n", "ppps"),
        ("[[interface.eth0.rule]]\nname = \"a\"\nproto = \"udp\"\n", "port"),
        ("[interface.eth0.policy]\n", "served"),
        ("[interface.eth0.synproxy]\nports = \"80\"\n", "above"),
        ("[interface.eth0.incidents]\npps = 10\n", "ppps"),
        ("[interface.eth0.incidents.dropped_pps]\nany = 10\n", "passed"),
        ("[interface.eth0.incidents]\npps = 10\n[interface.eth0.incidents.escalate]\n", "synproxy"),
    ] {
        one_error(&format!("{section}@@{key} = 1\n"), &format!("unknown key '{key}'"));
    }
    one_error(
        "[interface.eth0]\nblocklst = []\n".replace("blocklst", "@@blocklst").as_str(),
        "unknown key 'blocklst' in [interface.eth0]; expected one of mode, max_entries",
    );
    one_error(
        "[interface.eth0.blocklist]\nfiles = [{ path = \"good.txt\", @@optinal = true }]\n",
        "unknown key 'optinal'",
    );
    // Only reasons that drop have a dropped_pps.
    one_error(
        "[interface.eth0.incidents]\ndropped_pps = { @@passed = 5 }\n",
        "unknown key 'passed' in [interface.eth0.incidents.dropped_pps]; expected one of blocklist, \
         rate_limit, syn_limit, rule, policy, fragment, unchecked, any",
    );
    one_error(
        "[interface.eth0.incidents]\npps = 1\nescalate = { limits = { pps = 5, @@ban = \"1m\" } }\n",
        "unknown key 'ban' in [interface.eth0.incidents.escalate.limits]",
    );
}

#[test]
fn wrong_types() {
    for (text, reason) in [
        ("[service]\nstate_dir = @@1\n", "service.state_dir: expected a string, found an integer"),
        ("[metrics]\nenabled = @@\"yes\"\n", "expected true or false, found a string"),
        ("service = @@1\n", "service: expected a table, found an integer"),
        ("interface = @@1\n", "expected a table of interfaces"),
        ("[interface]\neth0 = @@\"x\"\n", "interface.eth0: expected a table"),
        ("[interface.eth0]\nmode = @@1\n", "interface.eth0.mode: expected a string, found an integer"),
        ("[interface.eth0]\nmax_entries = @@\"10\"\n", "expected an integer, found a string"),
        ("[interface.eth0]\nmax_entries = @@1.5\n", "expected an integer, found a float"),
        ("[interface.eth0]\nrule_presets = @@\"reflection\"\n", "expected an array"),
        ("[interface.eth0]\nblocklist = @@[]\n", "expected a table, found an array"),
        ("[interface.eth0.blocklist]\nentries = @@\"192.0.2.1\"\n", "expected an array"),
        ("[interface.eth0.blocklist]\nentries = [@@1]\n", "expected a string, found an integer"),
        ("[interface.eth0.blocklist]\nfiles = [@@1]\n", "expected a path or { path"),
        ("[interface.eth0.blocklist]\nurl = @@\"https://x.example\"\n", "expected an array of tables"),
        ("[interface.eth0.blocklist]\nfiles = [{ path = \"good.txt\", optional = @@1 }]\n", "true or false"),
        ("[interface.eth0.limits]\npps = 10\nban_after = @@30\n", "expected a string"),
        (
            "[interface.eth0]\nrule = @@{ name = \"a\" }\n",
            "expected an array of tables ([[interface.eth0.rule]])",
        ),
        ("[interface.eth0]\nrule = [@@1]\n", "interface.eth0.rule[1]: expected a table"),
        ("[[interface.eth0.rule]]\nname = \"a\"\nproto = \"udp\"\nsrc_port = @@true\n", "a port or"),
        ("[interface.eth0]\nlimits = @@\"on\"\n", "expected a table, found a string"),
        ("[interface.eth0.policy]\nserve = @@[\"tcp/80\"]\n", "expected a string, found an array"),
        ("[interface.eth0.synproxy]\nports = @@80\n", "expected a string, found an integer"),
        (
            "[[interface.eth0.blocklist.url]]\nurl = \"https://x.example/\"\nmax_shrink = @@\"half\"\n",
            "a number",
        ),
        (
            "[interface.eth0]\nincidents = @@1\n",
            "interface.eth0.incidents: expected a table, found an integer",
        ),
        (
            "[interface.eth0.incidents]\npps = @@\"1000\"\n",
            "interface.eth0.incidents.pps: expected an integer, found a string",
        ),
        ("[interface.eth0.incidents]\nbps = @@1e9\n", "expected an integer, found a float"),
        ("[interface.eth0.incidents]\ndropped_pps = @@1000\n", "dropped_pps: expected a table"),
        ("[interface.eth0.incidents]\ndropped_pps = { any = @@\"1k\" }\n", "expected an integer"),
        ("[interface.eth0.incidents]\npps = 1\nhold = @@2\n", "hold: expected a string"),
        ("[interface.eth0.incidents]\npps = 1\nsample_every = @@\"64\"\n", "expected an integer"),
        ("[interface.eth0.incidents]\npps = 1\nhook = @@\"/bin/sh\"\n", "hook: expected an array"),
        (
            "[interface.eth0.incidents]\npps = 1\nhook = [\"/bin/sh\", @@1]\n",
            "expected a string, found an integer",
        ),
        ("[interface.eth0.incidents]\npps = 1\nwebhook = @@[]\n", "webhook: expected a string"),
        ("[interface.eth0.incidents]\npps = 1\nescalate = @@true\n", "escalate: expected a table"),
        (
            "[interface.eth0.incidents]\npps = 1\n[interface.eth0.incidents.escalate]\nsyn_cookies = @@80\n",
            "escalate.syn_cookies: expected TCP ports (e.g. \"80,443\") or true, found an integer",
        ),
        (
            "[interface.eth0.incidents]\npps = 1\n[interface.eth0.incidents.escalate]\npolicy = @@[\"tcp/80\"]\n",
            "escalate.policy: expected a string, found an array",
        ),
        (
            "[interface.eth0.incidents]\npps = 1\n[interface.eth0.incidents.escalate]\nlimits = @@\"on\"\n",
            "escalate.limits: expected a table",
        ),
    ] {
        one_error(text, reason);
    }
}

#[test]
fn bad_values() {
    for (text, reason) in [
        ("[service]\nstate_dir = @@\"var/lib\"\n", "not an absolute path"),
        ("[metrics]\nlisten = @@\"localhost\"\n", "is not ADDRESS:PORT"),
        ("[metrics]\nlisten = @@\"127.0.0.1:0\"\n", "port 0"),
        ("[log]\nformat = @@\"xml\"\n", "log.format: unknown value 'xml'; expected text, json"),
        ("[log]\nbpf = @@\"loud\"\n", "expected off, error, warn, info, debug, trace"),
        ("[interface.@@\"a/b\"]\n", "a/b"),
        ("[interface.@@abcdefghijklmnop]\n", "abcdefghijklmnop"),
        ("[interface.eth0]\nmode = @@\"fast\"\n", "expected auto, native, skb"),
        ("[interface.eth0]\nmax_entries = @@0\n", "max_entries is 0, out of range 1..=268435456"),
        ("[interface.eth0]\nmax_entries = @@268435457\n", "out of range"),
        ("[interface.eth0]\nmax_sources = @@1023\n", "out of range 1024..="),
        ("[interface.eth0]\nmax_sources = @@-5\n", "out of range"),
        ("[interface.eth0]\nrule_presets = [@@\"amplification\"]\n", "expected reflection"),
        ("[interface.eth0]\nrule_presets = [\"reflection\", @@\"reflection\"]\n", "listed twice"),
        (
            "[interface.eth0.blocklist]\nentries = [\"192.0.2.1\", @@\"203.0.113.7/24\"]\n",
            "did you mean 203.0.113.0/24",
        ),
        ("[interface.eth0.allowlist]\nentries = [@@\"example.com\"]\n", "not an IPv4 or IPv6 address"),
        ("[interface.eth0.blocklist]\nentries = [@@\"10.0.0.0/33\"]\n", "prefix length 33"),
        (
            "[[interface.eth0.blocklist.url]]\nurl = @@\"ftp://x.example/l.txt\"\n",
            "is not http:// or https://",
        ),
        ("[[interface.eth0.blocklist.url]]\nurl = @@\"not a url\"\n", "is not a URL"),
        ("[[interface.eth0.blocklist.url]]\nurl = @@\"file:///etc/passwd\"\n", "not http"),
        ("@@[[interface.eth0.blocklist.url]]\nrefresh = \"1h\"\n", "has no 'url'"),
        (
            "[[interface.eth0.blocklist.url]]\nurl = \"https://x.example/\"\nrefresh = @@\"30s\"\n",
            "more often than every 1m",
        ),
        (
            "[[interface.eth0.blocklist.url]]\nurl = \"https://x.example/\"\nrefresh = @@\"soon\"\n",
            "not a duration",
        ),
        (
            "[[interface.eth0.blocklist.url]]\nurl = \"https://x.example/\"\nmax_shrink = @@1.5\n",
            "not a fraction from 0 to 1",
        ),
        (
            "[[interface.eth0.blocklist.url]]\nurl = \"https://x.example/\"\nmax_shrink = @@-1\n",
            "not a fraction",
        ),
        (
            "[[interface.eth0.blocklist.url]]\nurl = \"https://x.example/\"\nmax_shrink = @@nan\n",
            "not a fraction",
        ),
        (
            "[[interface.eth0.blocklist.url]]\nurl = \"https://x.example/\"\nformat = @@\"csv\"\n",
            "expected auto",
        ),
        ("@@[interface.eth0.limits]\nv4_prefix = 24\n", "sets no limit"),
        ("[interface.eth0.limits]\npps = @@0\n", "pps is 0, out of range 1..=1000000000"),
        ("[interface.eth0.limits]\npps = @@1_000_000_001\n", "out of range"),
        ("[interface.eth0.limits]\nbps = @@7\n", "bps is 7, out of range 8..="),
        ("[interface.eth0.limits]\nsyn_pps = @@-1\n", "out of range"),
        ("[interface.eth0.limits]\nglobal_syn_pps = @@0\n", "out of range"),
        ("[interface.eth0.limits]\npps = 1\nv4_prefix = @@33\n", "v4_prefix is 33, out of range 0..=32"),
        ("[interface.eth0.limits]\npps = 1\nv6_prefix = @@129\n", "out of range 0..=128"),
        ("[interface.eth0.limits]\nbps = 800\nburst = @@5\n", "burst needs pps"),
        ("[interface.eth0.limits]\npps = 1\nban_after = @@\"30s\"\n", "ban_after and ban_for go together"),
        ("[interface.eth0.limits]\npps = 1\nban_for = @@\"30s\"\n", "go together"),
        ("[interface.eth0.limits]\npps = 1\nban_after = @@\"0s\"\nban_for = \"1m\"\n", "is zero"),
        (
            "[interface.eth0.limits]\npps = 1\nban_after = \"1s\"\nban_for = @@\"3651d\"\n",
            "longer than the maximum",
        ),
        ("[interface.eth0.policy]\nserve = @@\"tcp/x\"\n", "bad port list 'tcp/x'"),
        ("[interface.eth0.policy]\nserve = @@\" , \"\n", "lists no ports"),
        ("[interface.eth0.policy]\nephemeral = @@\"5000\"\n", "bad ephemeral range '5000'"),
        ("[interface.eth0.policy]\nfragments = @@\"maybe\"\n", "expected pass, drop"),
        ("@@[interface.eth0.synproxy]\nabove_pps = 5\n", "has no 'ports'"),
        ("[interface.eth0.synproxy]\nports = @@\"udp/53\"\n", "SYN cookies are for TCP ports only"),
        ("[interface.eth0.synproxy]\nports = @@\"80-\"\n", "bad port list"),
        (
            "[interface.eth0.synproxy]\nports = \"80\"\nabove_pps = @@4294967296\n",
            "out of range 0..=4294967295",
        ),
        ("@@[[interface.eth0.rule]]\nproto = \"udp\"\n", "has no 'name'"),
        ("@@[[interface.eth0.rule]]\nname = \"a\"\n", "has no 'proto'"),
        ("[[interface.eth0.rule]]\nname = \"a\"\nproto = @@\"gre\"\n", "unknown protocol 'gre'"),
        ("[[interface.eth0.rule]]\nname = \"a\"\nproto = \"udp\"\nsrc_port = @@70000\n", "bad port '70000'"),
        ("[[interface.eth0.rule]]\nname = \"a\"\nproto = \"udp\"\ndst_port = @@\"9-3\"\n", "bad port '9-3'"),
        (
            "[[interface.eth0.rule]]\nname = \"a\"\nproto = \"udp\"\nsrc_port = 1\ndst_port = @@2\n",
            "not both",
        ),
        ("[[interface.eth0.rule]]\nname = \"a\"\nproto = \"icmp\"\ndst_port = @@2\n", "icmp has no ports"),
        ("[[interface.eth0.rule]]\nname = @@\"42\"\nproto = \"udp\"\n", "not usable"),
        ("[[interface.eth0.rule]]\nname = @@\"has space\"\nproto = \"udp\"\n", "not usable"),
        (
            "[[interface.eth0.rule]]\nname = \"a\"\nproto = \"udp\"\naction = @@\"reject\"\n",
            "expected drop, pass, observe",
        ),
        ("[interface.eth0.limits]\npps = 1\nobserve = @@\"yes\"\n", "expected true or false"),
        ("[interface.eth0.policy]\nserve = \"80\"\nobserve = @@1\n", "expected true or false"),
        ("[interface.eth0.watchlist]\nentries = [@@\"203.0.113.7/24\"]\n", "did you mean 203.0.113.0/24"),
    ] {
        one_error(text, reason);
    }
}

#[test]
fn bad_incidents() {
    let inc = "[interface.eth0.incidents]\n";
    for (text, reason) in [
        (
            "@@[interface.eth0.incidents]\nhold = \"5s\"\nhook = [\"/bin/sh\"]\n".to_string(),
            "[interface.eth0.incidents] needs at least one threshold: pps, bps, dropped_pps or syn_pps",
        ),
        ("[interface.eth0]\nincidents = @@{}\n".into(), "needs at least one threshold"),
        (format!("{inc}pps = @@0\n"), "interface.eth0.incidents.pps is 0, out of range 1..=1000000000"),
        (format!("{inc}pps = @@1_000_000_001\n"), "out of range"),
        (format!("{inc}bps = @@0\n"), "bps is 0, out of range 1..=10000000000000"),
        (format!("{inc}syn_pps = @@-1\n"), "syn_pps is -1, out of range"),
        (format!("{inc}dropped_pps = @@{{}}\n"), "dropped_pps: names no reason"),
        (
            format!("{inc}dropped_pps = {{ blocklist = 5, any = @@0 }}\n"),
            "dropped_pps.any is 0, out of range",
        ),
        (format!("{inc}dropped_pps = {{ rate_limit = @@0 }}\n"), "dropped_pps.rate_limit is 0"),
        (format!("{inc}pps = 1\nhold = @@\"500ms\"\n"), "hold: '500ms' is out of range: expected 1s to 10m"),
        (format!("{inc}pps = 1\nhold = @@\"11m\"\n"), "expected 1s to 10m"),
        (format!("{inc}pps = 1\nhold = @@\"soon\"\n"), "hold: 'soon' is not a duration"),
        (format!("{inc}pps = 1\nquiet = @@\"2h\"\n"), "quiet: '2h' is out of range: expected 1s to 1h"),
        (format!("{inc}pps = 1\nsample_every = @@0\n"), "sample_every is 0, out of range 1..=1000000"),
        (format!("{inc}pps = 1\nsample_every = @@1000001\n"), "out of range"),
        (
            format!("{inc}pps = 1\nsample_max_pps = @@100001\n"),
            "sample_max_pps is 100001, out of range 1..=100000",
        ),
        (format!("{inc}pps = 1\nhook = @@[]\n"), "hook: empty: give the program and its arguments"),
        (
            format!("{inc}pps = 1\nhook = [@@\"notify\", \"x\"]\n"),
            "hook: 'notify' is not an absolute path (a hook is run without a PATH search)",
        ),
        (
            format!("{inc}pps = 1\nhook = [@@\"/nonexistent/notify\"]\n"),
            "hook: /nonexistent/notify: No such file or directory",
        ),
        (format!("{inc}pps = 1\nhook = [@@\"/\"]\n"), "hook: / is not a file"),
        (
            format!("{inc}pps = 1\nwebhook = @@\"ftp://x.example/\"\n"),
            "webhook: 'ftp://x.example/' is not http:// or https://",
        ),
        (format!("{inc}pps = 1\nwebhook = @@\"hooks.example\"\n"), "webhook: 'hooks.example' is not a URL"),
    ] {
        one_error(&text, reason);
    }
    // Not executable: a file of the fixture.
    let dir = fixture();
    let good = dir.0.join("good.txt").display().to_string();
    one_error_in(&dir, &format!("{inc}pps = 1\nhook = [@@\"{good}\"]\n"), "is not executable (chmod +x it)");
}

#[test]
fn bad_escalations() {
    let esc = "[interface.eth0.incidents]\npps = 1\n[interface.eth0.incidents.escalate]\n";
    let policy = |serve: &str| format!("[interface.eth0.policy]\nserve = \"{serve}\"\n");
    for (text, reason) in [
        (
            format!("{esc}syn_cookies = @@true\n"),
            "escalate.syn_cookies = true takes the TCP ports [interface.eth0.policy] serves, and there is \
             no [interface.eth0.policy]: name the ports",
        ),
        (format!("{}{esc}syn_cookies = @@true\n", policy("udp/53")), "and it serves none"),
        (format!("{esc}syn_cookies = @@\"udp/53\"\n"), "SYN cookies are for TCP ports only"),
        (format!("{esc}syn_cookies = @@\"80-\"\n"), "escalate.syn_cookies: bad port list"),
        (format!("{esc}syn_cookies_above_pps = @@5\n"), "escalate.syn_cookies_above_pps: needs syn_cookies"),
        (
            format!("{esc}syn_cookies = \"80\"\nsyn_cookies_above_pps = @@-1\n"),
            "syn_cookies_above_pps is -1, out of range 0..=4294967295",
        ),
        (format!("{esc}policy = @@\"tcp/x\"\n"), "escalate.policy: bad port list 'tcp/x'"),
        (format!("{esc}policy = @@\" , \"\n"), "escalate.policy: lists no ports"),
        (
            "[interface.eth0.incidents]\npps = 1\n@@[interface.eth0.incidents.escalate.limits]\nv4_prefix = 24\n"
                .into(),
            "[interface.eth0.incidents.escalate.limits] sets no limit",
        ),
        (format!("{esc}limits = {{ pps = @@0 }}\n"), "escalate.limits.pps is 0, out of range"),
        (format!("{esc}limits = {{ pps = 1, ban_after = @@\"1m\" }}\n"), "go together"),
        // A policy with errors is reported once, not again by what builds on it.
        (
            "[interface.eth0.policy]\nserve = @@\"tcp/x\"\n[interface.eth0.incidents]\npps = 1\n\
             [interface.eth0.incidents.escalate]\nsyn_cookies = true\npolicy = \"tcp/80\"\n"
                .into(),
            "interface.eth0.policy.serve: bad port list",
        ),
    ] {
        one_error(&text, reason);
    }
}

#[test]
fn duplicates_and_overlaps() {
    let rule = |name: &str, port: &str| {
        format!("[[interface.eth0.rule]]\nname = {name}\nproto = \"udp\"\nsrc_port = {port}\n")
    };
    one_error(
        &format!("{}{}", rule("\"a\"", "1"), rule("@@\"a\"", "2")),
        "interface.eth0.rule[2]: rule name 'a' is taken by the rule at line 1",
    );
    one_error(
        &format!("{}@@{}", rule("\"a\"", "\"100-200\""), rule("\"b\"", "150")),
        "rule 'b' (udp from port 150) overlaps rule 'a' (udp from ports 100-200) at line 1",
    );
    // The presets count: a rule overlapping one of theirs, or named like one.
    one_error(
        &format!("[interface.eth0]\nrule_presets = [\"reflection\"]\n@@{}", rule("\"mine\"", "53")),
        "overlaps rule 'reflection-dns'",
    );
    one_error(
        &format!(
            "[interface.eth0]\nrule_presets = [\"reflection\"]\n{}",
            rule("@@\"reflection-dns\"", "4000")
        ),
        "rule name 'reflection-dns' is taken by the rule at line 2",
    );
    // The same rule in another direction or protocol is fine.
    let dir = fixture();
    let ok = format!(
        "{}[[interface.eth0.rule]]\nname = \"b\"\nproto = \"udp\"\ndst_port = 150\n[[interface.eth0.rule]]\nname = \"c\"\nproto = \"tcp\"\nsrc_port = 150\n",
        rule("\"a\"", "150")
    );
    assert_eq!(load_in(&dir, &ok).unwrap().interfaces[0].rules.len(), 3);
    one_error(
        "[[interface.eth0.blocklist.url]]\nurl = \"https://x.example/\"\n@@[[interface.eth0.blocklist.url]]\nurl = \"https://x.example/\"\n",
        "'https://x.example/' is listed twice",
    );
}

#[test]
fn list_files() {
    one_error("[interface.eth0.blocklist]\nfiles = [@@\"missing.txt\"]\n", "missing.txt: No such file");
    one_error(
        "[interface.eth0.blocklist]\nfiles = [@@\"/nonexistent/floodgate.txt\"]\n",
        "/nonexistent/floodgate.txt",
    );
    one_error("[interface.eth0.blocklist]\nfiles = [@@\"adir\"]\n", "adir is not a file");
    one_error("[interface.eth0.blocklist]\nfiles = [@@\"none/*.txt\"]\n", "'none/*.txt' matches no file");
    one_error("[interface.eth0.blocklist]\nfiles = [{ path = @@\"none/*.txt\" }]\n", "matches no file");
    one_error("[interface.eth0.blocklist]\nfiles = [@@\"d/[a.txt\"]\n", "bad glob 'd/[a.txt'");
    one_error("[interface.eth0.blocklist]\nfiles = [@@{ optional = true }]\n", "has no 'path'");
    one_error("[interface.eth0.blocklist]\nfiles = [@@\"\"]\n", "empty path");

    // Optional: nothing there is fine, for a glob and for a path.
    let dir = fixture();
    let text = "[interface.eth0.blocklist]\nfiles = [\"good.txt\", \"d/*.txt\", { path = \"none/*.txt\", optional = true }, { path = \"gone.txt\", optional = true }]\n";
    let cfg = load_in(&dir, text).unwrap();
    let l = &cfg.interfaces[0].blocklist;
    let names: Vec<_> = l.files.iter().map(|f| f.strip_prefix(&dir.0).unwrap().to_path_buf()).collect();
    assert_eq!(names, [Path::new("good.txt"), Path::new("d/a.txt"), Path::new("d/b.txt")]);
    assert_eq!(l.globs.len(), 2);
    assert!(l.globs[0].ends_with("/d/*.txt") && Path::new(&l.globs[0]).is_absolute(), "{:?}", l.globs);
    // A file named twice (path and glob) is one source.
    let cfg = load_in(&dir, "[interface.eth0.allowlist]\nfiles = [\"d/a.txt\", \"d/*.txt\"]\n").unwrap();
    assert_eq!(cfg.interfaces[0].allowlist.files.len(), 2);

    // A bad line inside a list file is reported at that file's line and column.
    let errs = load_in(&dir, "[interface.eth0.blocklist]\nfiles = [\"bad.txt\"]\n").unwrap_err();
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(
        errs.to_string(),
        format!(
            "{}:3:4: '203.0.113.7/24' has host bits set; did you mean 203.0.113.0/24?",
            dir.0.join("bad.txt").display()
        )
    );
    // Every bad line is reported, up to MAX_ERRORS_PER_FILE; the last says how many more.
    dir.write("many.txt", &"nope\n".repeat(MAX_ERRORS_PER_FILE + 5));
    let errs = load_in(&dir, "[interface.eth0.blocklist]\nfiles = [\"many.txt\"]\n").unwrap_err();
    assert_eq!(errs.len(), MAX_ERRORS_PER_FILE);
    assert_eq!(errs.0[1].line, 2);
    assert!(errs.0.last().unwrap().reason.ends_with("(and 5 more bad lines)"), "{errs}");
    // Not text.
    // Not text: reported where the first bad byte is.
    std::fs::write(dir.0.join("bin.txt"), b"192.0.2.1\n  \xc3\xa9x\xff\n").unwrap();
    let errs = load_in(&dir, "[interface.eth0.blocklist]\nfiles = [\"bin.txt\"]\n").unwrap_err();
    assert_eq!(errs.to_string(), format!("{}:2:5: not UTF-8 text", dir.0.join("bin.txt").display()));
    // Missing and unreadable list files are reported where the config names them.
    one_error_in(&dir, "[interface.eth0.blocklist]\nfiles = [\"good.txt\", @@\"gone.txt\"]\n", "gone.txt");
    // A port written in hex is that port.
    let cfg =
        load_in(&dir, "[[interface.eth0.rule]]\nname = \"a\"\nproto = \"udp\"\nsrc_port = 0x35\n").unwrap();
    assert_eq!((cfg.interfaces[0].rules[0].lo, cfg.interfaces[0].rules[0].hi), (53, 53));
}

/// [`one_error`] with the caller's directory.
#[track_caller]
fn one_error_in(dir: &Dir, text: &str, reason: &str) {
    let at = text.find("@@").unwrap();
    let column = text[..at].rsplit('\n').next().unwrap().chars().count() + 1;
    let errs = load_in(dir, &text.replace("@@", "")).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!((errs.0[0].line, errs.0[0].column), (text[..at].matches('\n').count() + 1, column));
    assert!(errs.0[0].reason.contains(reason), "{errs}");
}

#[test]
fn every_error_at_once_in_file_order() {
    let dir = fixture();
    let text = "\
[service]
state_dir = \"rel\"
[interface.eth0]
mode = \"fast\"
blocklst = 1
[interface.eth0.blocklist]
entries = [\"192.0.2.1/24\", \"ok\"]
files = [\"bad.txt\", \"missing.txt\"]
[interface.eth0.limits]
pps = 0
[[interface.eth0.rule]]
name = \"a\"
proto = \"gre\"
[interface.eth1.synproxy]
ports = \"udp/1\"
";
    let errs = load_in(&dir, text).unwrap_err();
    let got: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(
        got,
        [(2, 13), (4, 8), (5, 1), (7, 12), (7, 28), (8, 21), (10, 7), (13, 9), (15, 9), (3, 4)],
        "{errs}"
    );
    // The list file's error comes after the config file's.
    assert!(errs.0.last().unwrap().file.ends_with("bad.txt"));
    assert_eq!(errs.to_string().lines().count(), 10);
    let cfg_file = dir.0.join("floodgate.toml").display().to_string();
    assert!(errs.to_string().starts_with(&format!("{cfg_file}:2:13: service.state_dir: 'rel'")), "{errs}");
}

#[test]
fn the_config_file_itself() {
    let dir = Dir::new();
    let missing = dir.0.join("nope.toml");
    let errs = load(&missing).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs.to_string().starts_with(&format!("{}:1:1: cannot read the config file", missing.display())));
    std::fs::write(dir.0.join("bin.toml"), b"a = 1\nb = \xff").unwrap();
    let bin = dir.0.join("bin.toml");
    assert_eq!(load(&bin).unwrap_err().to_string(), format!("{}:2:5: not UTF-8 text", bin.display()));
}

#[test]
fn a_full_config_reads_into_the_model() {
    let dir = fixture();
    let text = r#"
[service]
state_dir = "/srv/fg"
[metrics]
listen = "[::1]:9700"
[log]
format = "json"
bpf = "warn"
[interface."eth0.5"]
mode = "skb"
max_entries = 5000
max_sources = 2048
rule_presets = ["reflection"]
[interface."eth0.5".blocklist]
entries = ["192.0.2.7", "::ffff:198.51.100.0/120"]
files = ["good.txt"]
[[interface."eth0.5".blocklist.url]]
url = "https://lists.example/drop.txt"
refresh = "2h"
max_shrink = 0
[interface."eth0.5".limits]
pps = 200
burst = 50
syn_pps = 20
ban_after = "30s"
ban_for = "10m"
[[interface."eth0.5".rule]]
name = "wsd-ish"
proto = "tcp"
dst_port = "6000-6063"
action = "pass"
[interface."eth0.5".policy]
serve = "tcp/443,53"
ephemeral = "32768-60999"
fragments = "drop"
[interface."eth0.5".synproxy]
ports = "443"
above_pps = 100
[interface.eth1]
[metrics2]
"#;
    // One unknown key, then without it.
    let errs = load_in(&dir, text).unwrap_err();
    assert!(errs.to_string().contains("unknown key 'metrics2' at the top level"), "{errs}");
    let cfg = load_in(&dir, &text.replace("[metrics2]\n", "")).unwrap();
    assert_eq!(cfg.service.state_dir, Path::new("/srv/fg"));
    assert_eq!(cfg.service.metrics_listen, Some("[::1]:9700".parse().unwrap()));
    assert_eq!((cfg.service.log_format, cfg.service.bpf_log), (LogFormat::Json, Some(BpfLogLevel::Warn)));
    let names: Vec<&str> = cfg.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["eth0.5", "eth1"], "file order");
    let i = &cfg.interfaces[0];
    assert_eq!((i.mode, i.capacity.entries, i.capacity.sources), (crate::loader::Mode::Skb, 5000, 2048));
    assert_eq!(i.blocklist.entries, ["192.0.2.7/32".parse().unwrap(), "198.51.100.0/24".parse().unwrap()]);
    assert_eq!(i.blocklist.files, [dir.0.join("good.txt")]);
    assert_eq!(
        i.blocklist.urls,
        [UrlSource {
            url: "https://lists.example/drop.txt".into(),
            refresh: Duration::from_secs(7200),
            max_shrink: 0.0,
            format: ListFormat::Auto
        }]
    );
    let l = i.limits.unwrap();
    assert_eq!((l.given, l.ban_after_ns, l.ban_for_ns), ([200, 0, 20, 0], 30_000_000_000, 600_000_000_000));
    assert_eq!(l.packets.tolerance / l.packets.cost + 1, 50, "burst");
    assert_eq!(i.rules.len(), crate::rules::REFLECTION.len() + 1);
    assert_eq!(i.rules.last().unwrap().name, "wsd-ish");
    assert!(!i.rules.last().unwrap().drop);
    let p = i.policy.as_ref().unwrap();
    assert_eq!(
        (p.config.enforce, p.config.drop_fragments, p.config.eph_lo, p.config.eph_hi),
        (1, 1, 32768, 60999)
    );
    assert_eq!(p.served.len(), 3, "tcp/443, tcp/53, udp/53");
    assert_eq!(i.synproxy, Some(SynProxy { ports: vec![(443, 443)], above_pps: 100 }));
    // A section left out is off; defaults elsewhere.
    let e = &cfg.interfaces[1];
    assert_eq!((e.limits, &e.policy, &e.synproxy, e.rules.len()), (None, &None, &None, 0));
    assert_eq!(e.capacity, crate::loader::Capacity::default());
    assert_eq!(e.blocklist, ListSpec::default());

    // Defaults of the service; metrics off.
    let cfg = load_in(&dir, "[metrics]\nenabled = false\n").unwrap();
    assert_eq!(cfg.service.metrics_listen, None);
    assert_eq!(cfg.service.state_dir, Path::new(DEFAULT_STATE_DIR));
    let cfg = load_in(&dir, "").unwrap();
    assert_eq!(cfg.service.metrics_listen, Some(DEFAULT_METRICS_LISTEN.parse().unwrap()));
    assert!(cfg.interfaces.is_empty());
    // Policy: fragments alone enforce no ports.
    let cfg = load_in(&dir, "[interface.eth0.policy]\nfragments = \"drop\"\nephemeral = \"none\"\n").unwrap();
    let p = cfg.interfaces[0].policy.as_ref().unwrap();
    assert_eq!((p.config.enforce, p.config.drop_fragments, p.config.ephemeral), (0, 1, 0));
}

#[test]
fn observe_mode_reads_into_the_model() {
    let dir = fixture();
    let text = r#"
[interface.eth0.watchlist]
entries = ["203.0.113.0/24", "2001:db8:bad::/48"]
[interface.eth0.limits]
pps = 100
observe = true
[interface.eth0.policy]
serve = "tcp/443"
observe = true
[[interface.eth0.rule]]
name = "memcached"
proto = "udp"
src_port = 11211
action = "observe"
"#;
    let cfg = load_in(&dir, text).unwrap();
    let i = &cfg.interfaces[0];
    assert_eq!(
        i.watchlist.entries,
        ["203.0.113.0/24".parse().unwrap(), "2001:db8:bad::/48".parse().unwrap()]
    );
    assert_eq!(i.blocklist, ListSpec::default(), "the watchlist is not the blocklist");
    assert_eq!(i.limits.unwrap().observe, 1);
    assert_eq!(i.policy.as_ref().unwrap().config.observe, 1);
    let r = &i.rules[0];
    assert!(r.drop && r.observe, "{r:?}");
    assert_eq!(r.action(), "observe");
    // Off unless asked for.
    let cfg =
        load_in(&dir, "[interface.eth0.limits]\npps = 1\n[interface.eth0.policy]\nserve = \"80\"\n").unwrap();
    let i = &cfg.interfaces[0];
    assert_eq!((i.limits.unwrap().observe, i.policy.as_ref().unwrap().config.observe), (0, 0));
}

#[test]
fn incidents_read_into_the_model() {
    use crate::incident::detect::Thresholds;
    use filter_common::{Reason, rules::Proto};

    let dir = fixture();
    let text = r#"
[interface.eth0.policy]
serve = "tcp/22,udp/53,8000-8010"
ephemeral = "32768-60999"
fragments = "drop"
[interface.eth0.incidents]
pps = 1_000_000
bps = 5_000_000_000
syn_pps = 20000
dropped_pps = { unchecked = 7, blocklist = 1000, any = 50000 }
hold = "5s"
quiet = "1m"
sample_every = 128
sample_max_pps = 500
hook = ["/bin/sh", "/etc/floodgate/hook.sh", "--page"]
webhook = "https://hooks.example/floodgate?team=net"
[interface.eth0.incidents.escalate]
syn_cookies = true
syn_cookies_above_pps = 100
policy = "tcp/443"
limits = { pps = 100, syn_pps = 5 }
[interface.eth1.incidents.dropped_pps]
any = 10
[interface.eth2.incidents]
pps = 10
escalate = { syn_cookies = "tcp/80,443", policy = "53" }
"#;
    let cfg = load_in(&dir, text).unwrap_or_else(|e| panic!("{e}"));
    let i = cfg.interfaces[0].incidents.as_ref().unwrap();
    assert_eq!(
        i.thresholds,
        Thresholds {
            pps: Some(1_000_000),
            bps: Some(5_000_000_000),
            dropped_pps: vec![(Reason::Blocklist, 1000), (Reason::Unchecked, 7)],
            dropped_any_pps: Some(50_000),
            syn_pps: Some(20_000),
            hold: Duration::from_secs(5),
            quiet: Duration::from_secs(60),
        }
    );
    assert_eq!((i.sample_every, i.sample_max_pps), (128, 500));
    assert_eq!(i.hook.as_deref().unwrap(), ["/bin/sh", "/etc/floodgate/hook.sh", "--page"]);
    assert_eq!(i.webhook.as_deref(), Some("https://hooks.example/floodgate?team=net"));
    // syn_cookies = true: the policy's TCP ports.
    let e = &i.escalate;
    assert_eq!(e.syn_cookies, Some(SynProxy { ports: vec![(22, 22), (8000, 8010)], above_pps: 100 }));
    // The escalated policy keeps the interface's ephemeral range and fragment setting.
    let p = e.policy.as_ref().unwrap();
    assert_eq!(
        (p.config.enforce, p.config.drop_fragments, p.config.eph_lo, p.config.eph_hi),
        (1, 1, 32768, 60999)
    );
    assert_eq!(p.served, [crate::policy::Served { proto: Proto::Tcp, lo: 443, hi: 443 }]);
    assert_eq!(e.limits.unwrap().given, [100, 0, 5, 0]);

    // Defaults.
    let i = cfg.interfaces[1].incidents.as_ref().unwrap();
    assert_eq!(i.thresholds.dropped_any_pps, Some(10));
    assert!(i.thresholds.dropped_pps.is_empty() && i.thresholds.pps.is_none());
    assert_eq!((i.thresholds.hold, i.thresholds.quiet), (DEFAULT_HOLD, DEFAULT_QUIET));
    assert_eq!((i.sample_every, i.sample_max_pps), (DEFAULT_SAMPLE_EVERY, DEFAULT_SAMPLE_MAX_PPS));
    assert_eq!((&i.hook, &i.webhook, &i.escalate), (&None, &None, &Escalate::default()));
    // No policy of its own: the escalated one has the defaults (ephemeral auto,
    // fragments pass).
    let e = &cfg.interfaces[2].incidents.as_ref().unwrap().escalate;
    assert_eq!(e.syn_cookies, Some(SynProxy { ports: vec![(80, 80), (443, 443)], above_pps: 0 }));
    let p = e.policy.as_ref().unwrap();
    assert_eq!((p.config.enforce, p.config.drop_fragments, p.served.len()), (1, 0, 2));
    assert_eq!(cfg.interfaces[2].policy, None);
    // No section, no incidents; syn_cookies = false is none.
    let cfg = load_in(
        &dir,
        "[interface.eth0]\n[interface.eth1.incidents]\npps = 1\nescalate.syn_cookies = false\n",
    )
    .unwrap();
    assert_eq!(cfg.interfaces[0].incidents, None);
    assert_eq!(cfg.interfaces[1].incidents.as_ref().unwrap().escalate, Escalate::default());
}

#[test]
fn the_shipped_example_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/floodgate.toml");
    let cfg = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.interfaces.len(), 1);
    let i = &cfg.interfaces[0];
    assert!(!i.blocklist.files.is_empty() && !i.allowlist.files.is_empty());
    assert!(i.limits.is_some() && i.policy.is_some() && i.synproxy.is_some());
    assert!(i.incidents.as_ref().is_some_and(|i| i.thresholds.any()));
    assert!(i.rules.len() > crate::rules::REFLECTION.len());
    // Every commented-out key of the example is a real key: uncommented (URL and all),
    // the file still passes.
    let text = std::fs::read_to_string(&path).unwrap();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(uncommented, text);
    // The CrowdSec files, made here; TLS files need an https LAPI.
    let uncommented = uncommented
        .replace("/etc/floodgate/", "")
        .replace("/etc/crowdsec/ssl/", "")
        .replace("lapi_url = \"http://", "lapi_url = \"https://");
    let dir = Dir::new();
    for f in [
        "crowdsec-bouncer.key",
        "ca.pem",
        "crowdsec-bouncer.pem",
        "crowdsec-bouncer-key.pem",
        "crowdsec-machine.yaml",
    ] {
        assert!(uncommented.contains(&format!("\"{f}\"")), "the example names {f}");
        dir.write(f, "x\n");
    }
    let copy = dir.write("floodgate.toml", &uncommented);
    for list in ["block-example.txt", "allow-example.txt"] {
        let from = path.parent().unwrap().join("lists").join(list);
        dir.write(&format!("lists/{list}"), &std::fs::read_to_string(from).unwrap());
    }
    let cfg = load(&copy).unwrap_or_else(|e| panic!("uncommented example: {e}"));
    assert_eq!(cfg.interfaces[0].blocklist.urls.len(), 1);
    assert!(cfg.crowdsec.as_ref().is_some_and(|c| c.report.is_some()));
    let inc = cfg.interfaces[0].incidents.as_ref().unwrap();
    assert!(inc.hook.is_some() && inc.webhook.is_some());
    assert!(
        inc.escalate.syn_cookies.is_some() && inc.escalate.policy.is_some() && inc.escalate.limits.is_some()
    );
}

proptest! {
    /// Wherever a bad value sits (after lines of any text, indented, after multi-byte
    /// characters on its line), the error points at its first character.
    #[test]
    fn positions_point_at_the_token(
        before in proptest::collection::vec("[a-zé€😀 ]{0,12}", 0..6),
        indent in "[ \t]{0,4}",
        pad in "[a-zé€😀]{0,6}",
    ) {
        let dir = fixture();
        let mut text = String::from("[interface.eth0]\n");
        for l in &before {
            text.push_str(&format!("# {l}\n"));
        }
        text.push_str(&format!("[interface.eth0.limits]\n{indent}global_syn_pps = 5 # {pad}\n"));
        text.push_str(&format!("[interface.eth1.blocklist]\n{indent}entries = [\"192.0.2.1\", \"x{pad}\", \"y\"]\n"));
        let errs = load_in(&dir, &text).unwrap_err();
        let line = before.len() + 5;
        let first = indent.chars().count() + "entries = [\"192.0.2.1\", ".chars().count() + 1;
        let second = first + format!("\"x{pad}\", ").chars().count();
        let got: Vec<_> = errs.iter().map(|e| (e.line, e.column)).collect();
        prop_assert_eq!(got, vec![(line, first), (line, second)], "{}", errs);
    }

    #[test]
    fn bad_number_position(lines in 0usize..20, indent in "[ \t]{0,6}", lead in "[é€😀x]{0,5}") {
        let dir = fixture();
        let text = format!(
            "{}[interface.eth0]\nmax_entries = 5 # {lead}\n[interface.eth0.limits]\n{indent}pps = {{ }}\n",
            "\n".repeat(lines)
        );
        let errs = load_in(&dir, &text).unwrap_err();
        prop_assert_eq!(errs.len(), 1);
        let col = indent.chars().count() + "pps = ".len() + 1;
        prop_assert_eq!((errs.0[0].line, errs.0[0].column), (lines + 4, col));
    }
}

#[test]
fn crowdsec_section() {
    let dir = fixture();
    dir.write("bouncer.key", "k3y\n");
    dir.write("machine.yaml", "login: web1\npassword: p\n");
    let text = format!(
        "{IF}[interface.eth1]\n[crowdsec]\nlapi_url = \"http://127.0.0.1:8080\"\napi_key_file = \"bouncer.key\"\n\
         poll = \"5s\"\ntypes = [\"ban\", \"Captcha\"]\nscopes = [\"IP\"]\nskip_origins = [\"CAPI\"]\n\
         interfaces = [\"eth1\"]\n[crowdsec.report]\ncredentials_file = \"machine.yaml\"\nqueue = 50\n"
    );
    let cs = load_in(&dir, &text).unwrap().crowdsec.unwrap();
    assert_eq!(cs.lapi_url, "http://127.0.0.1:8080/");
    assert_eq!(cs.api_key_file, Some(dir.0.join("bouncer.key")));
    assert_eq!(cs.poll, Duration::from_secs(5));
    assert_eq!(cs.types, ["ban", "captcha"]);
    assert_eq!(cs.scopes, [Scope::Ip]);
    assert_eq!(cs.skip_origins, ["capi"]);
    assert!(cs.covers("eth1") && !cs.covers("eth0"));
    let r = cs.report.unwrap();
    assert_eq!((r.queue, r.max_alerts_per_minute), (50, DEFAULT_ALERTS_PER_MINUTE));
    // Defaults: bans on addresses and ranges, every interface, no reporter.
    let text = format!("{IF}[crowdsec]\nlapi_url = \"https://lapi.example/\"\napi_key_file = \"good.txt\"\n");
    let cs = load_in(&dir, &text).unwrap().crowdsec.unwrap();
    assert_eq!(
        (cs.types.as_slice(), cs.scopes.as_slice()),
        (&["ban".to_string()][..], &[Scope::Ip, Scope::Range][..])
    );
    assert!(cs.covers("eth0") && cs.report.is_none() && cs.poll == DEFAULT_POLL);
}

#[test]
fn crowdsec_errors() {
    let cs = "[crowdsec]\nlapi_url = \"http://127.0.0.1:8080/\"\n";
    let key = "api_key_file = \"good.txt\"\n";
    for (text, reason) in [
        (format!("{IF}@@[crowdsec]\napi_key_file = \"good.txt\"\n"), "[crowdsec] needs lapi_url"),
        (
            format!("{IF}[crowdsec]\nlapi_url = @@\"ftp://x/\"\n{key}"),
            "crowdsec.lapi_url: 'ftp://x/' is not http:// or https://",
        ),
        (format!("{IF}@@{cs}"), "[crowdsec] needs api_key_file"),
        (format!("{IF}{cs}api_key_file = @@\"missing.key\"\n"), "crowdsec.api_key_file:"),
        (format!("{IF}{cs}api_key_file = @@\"adir\"\n"), "is not a file"),
        (format!("{IF}{cs}{key}poll = @@\"0s\"\n"), "crowdsec.poll:"),
        (format!("{IF}{cs}{key}types = @@[]\n"), "crowdsec.types: empty"),
        (
            format!("{IF}{cs}{key}scopes = [\"ip\", @@\"country\"]\n"),
            "'country' cannot be enforced by source address",
        ),
        (format!("{IF}{cs}{key}interfaces = [@@\"eth9\"]\n"), "'eth9' is no [interface.NAME] of this file"),
        (format!("{IF}{cs}{key}@@lapi = 1\n"), "unknown key 'lapi' in [crowdsec]"),
        (format!("{IF}{cs}{key}@@[crowdsec.report]\n"), "[crowdsec.report] needs credentials_file"),
        (
            format!(
                "{IF}{cs}{key}[crowdsec.report]\ncredentials_file = \"good.txt\"\nmax_alerts_per_minute = @@0\n"
            ),
            "max_alerts_per_minute is 0, out of range",
        ),
        (
            format!("{IF}[crowdsec]\nlapi_url = @@\"http://x/\"\n{key}ca_file = \"good.txt\"\n"),
            "ca_file and cert_file need an https:// URL",
        ),
    ] {
        one_error(&text, reason);
    }
}
