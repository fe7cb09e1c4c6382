//! Rules and the served-ports policy with real programs between namespaces: a DNS
//! server (dnsmasq) behind floodgate, `dig` as the client, a resolver in a third
//! namespace that the server itself queries, and a memcached-reflection flood.
//!
//! Topology: server (floodgate on its veth) <-> client, which routes on to the
//! resolver, so the resolver's answers reach the server through the filter.

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use floodgate_lab::{Netns, build, veth_pair};
use integration_tests::live::{Lab, SRV_V4, packets};
use serde_json::Value;

const RESOLVER: &str = "203.0.113.53";
const SINK_PORT: u16 = 5003;

/// A background program, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq answering `NAME -> ADDR` on `listen`, nothing else (no upstream, no files).
fn dnsmasq(ns: &Netns, listen: &str, name: &str, addr: &str) -> Proc {
    let child = ns
        .command("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            &format!("--pid-file=/tmp/fgt-dnsmasq-{}.pid", ns.name),
            &format!("--listen-address={listen}"),
            &format!("--address=/{name}/{addr}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsmasq (scripts/setup.sh installs dnsmasq-base)");
    Proc(child)
}

/// `dig @server name` from `ns`: the answer, or None after a 1-second timeout.
fn dig(ns: &Netns, server: &str, name: &str, tcp: bool) -> Option<String> {
    let mut c: Command = ns.command("dig");
    c.args([&format!("@{server}"), name, "+short", "+time=1", "+tries=1"]);
    if tcp {
        c.arg("+tcp");
    }
    let out = c.output().expect("dig (scripts/setup.sh installs bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty() && !text.starts_with(';')).then_some(text)
}

/// Waits up to 5 s for `dig` to get an answer (the server is starting).
fn wait_for_dns(ns: &Netns, server: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while dig(ns, server, name, false).is_none() {
        assert!(Instant::now() < deadline, "{server} does not answer for {name}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dns_server_keeps_answering_under_policy_and_reflection_rules() {
    let lab = Lab::new("dns");
    let res = Netns::create("fgt-dns-r").expect("resolver namespace");
    veth_pair((&lab.cli, "dnsr", &["203.0.113.254/24"]), (&res, "dnsx", &[&format!("{RESOLVER}/24")]))
        .unwrap();
    lab.cli.sysctl("net.ipv4.ip_forward", "1").unwrap();
    lab.srv.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"]).unwrap();
    res.ip(&["route", "add", "198.51.100.0/24", "via", "203.0.113.254"]).unwrap();
    let _server = dnsmasq(&lab.srv, SRV_V4, "www.example.test", "192.0.2.80");
    let _resolver = dnsmasq(&res, RESOLVER, "upstream.test", "192.0.2.99");
    wait_for_dns(&lab.cli, SRV_V4, "www.example.test");
    wait_for_dns(&lab.srv, RESOLVER, "upstream.test");

    lab.attach("native");
    let out = lab.ok(&["policy", "set", "--serve", "udp/53,tcp/53"]);
    assert!(out.contains("serving udp/53,tcp/53") && out.contains("ephemeral"), "{out}");
    let shown: Value = serde_json::from_str(&lab.ok(&["policy", "show", "--json"])).unwrap();
    assert_eq!(shown["enforced"], true);
    assert_eq!(shown["serve"], serde_json::json!(["tcp/53", "udp/53"]));
    // The namespace's own ephemeral range was read (Linux default unless changed).
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let want = range.split_whitespace().collect::<Vec<_>>().join("-");
    assert_eq!(shown["ephemeral"], want.as_str());

    // Clients get answers over UDP and TCP.
    for tcp in [false, true] {
        assert_eq!(
            dig(&lab.cli, SRV_V4, "www.example.test", tcp).as_deref(),
            Some("192.0.2.80"),
            "tcp {tcp}"
        );
    }
    // The server's own query: the answer comes back to an ephemeral port.
    assert_eq!(dig(&lab.srv, RESOLVER, "upstream.test", false).as_deref(), Some("192.0.2.99"));
    // UDP to a port nobody serves is dropped in the driver.
    let sink = lab.sink(SINK_PORT);
    let before = packets(&lab.stats(), "dropped.policy");
    lab.send(&[lab.frame("192.0.2.7", SINK_PORT)], 300, 10_000);
    sink.settle();
    assert_eq!(sink.total(), 0, "unserved port reached the server");
    assert_eq!(packets(&lab.stats(), "dropped.policy") - before, 300);
    // Without an ephemeral range the server's own lookups would fail: the range is
    // what keeps them working.
    lab.ok(&["policy", "set", "--serve", "udp/53,tcp/53", "--ephemeral", "none"]);
    assert_eq!(dig(&lab.srv, RESOLVER, "upstream.test", false), None, "reply passed without a range");
    lab.ok(&["policy", "clear"]);

    // A memcached reflection flood (UDP from port 11211) next to ordinary UDP.
    let mut flood = lab.spec("192.0.2.11".parse().unwrap(), SINK_PORT);
    flood.sport = 11211;
    let flood = build(&flood);
    let ordinary = lab.frame("192.0.2.12", SINK_PORT);
    lab.send(&[flood.clone(), ordinary.clone()], 200, 10_000);
    sink.settle();
    assert_eq!((sink.count("192.0.2.11"), sink.count("192.0.2.12")), (200, 200), "no rules yet");
    let out = lab.ok(&["rule", "preset", "reflection"]);
    assert!(out.contains("15 rules added"), "{out}");
    let out = lab.ok(&["rule", "preset", "reflection"]);
    assert!(out.contains("0 rules added, 15 present already"), "{out}");
    let before = packets(&lab.stats(), "dropped.rule");
    lab.send(&[flood, ordinary], 2_000, 20_000);
    sink.settle();
    assert_eq!(sink.count("192.0.2.11"), 200, "the reflection flood reached the server");
    assert_eq!(sink.count("192.0.2.12"), 2_200, "ordinary UDP was lost");
    assert_eq!(packets(&lab.stats(), "dropped.rule") - before, 2_000);
    let rules: Value = serde_json::from_str(&lab.ok(&["rule", "list", "--json"])).unwrap();
    let memcached = rules.as_array().unwrap().iter().find(|r| r["name"] == "reflection-memcached").unwrap();
    assert_eq!(memcached["src_port"], "11211");
    assert_eq!(memcached["matched"]["packets"], 2_000);
    let text = lab.ok(&["rule", "list"]);
    assert!(text.contains("reflection-ntp") && text.contains("udp from port 123"), "{text}");

    // The preset drops answers from port 53 too, until the resolver is allowlisted.
    assert_eq!(dig(&lab.srv, RESOLVER, "upstream.test", false), None, "resolver answer passed the preset");
    lab.ok(&["allowlist", "add", RESOLVER]);
    assert_eq!(dig(&lab.srv, RESOLVER, "upstream.test", false).as_deref(), Some("192.0.2.99"));

    // Rules outlive the process that made them and go by name.
    lab.ok(&["rule", "remove", "reflection-memcached"]);
    let err = lab.err(&["rule", "remove", "reflection-memcached"]);
    assert!(err.contains("no rule with name or id 'reflection-memcached'"), "{err}");
    let err = lab.err(&["rule", "add", "--proto", "udp", "--src-port", "120-125"]);
    assert!(err.contains("overlaps rule") && err.contains("reflection-ntp"), "{err}");
    let stats = lab.stats();
    for key in ["rule", "policy", "fragment"] {
        assert!(stats["dropped"][key]["bytes"].is_u64(), "dropped.{key} in {stats}");
    }
}
