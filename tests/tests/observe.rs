//! Observe mode (dry run): the watchlist, rules with action observe, the policy and
//! the limits with --observe count what they would drop under `would_drop`, sample it
//! with the reason it would be dropped for, and pass it. On the real object
//! (BPF_PROG_TEST_RUN), then through the `floodgate` binary with live frames.

use std::time::Duration;

use filter_common::{
    Counter, ListKind, Reason,
    rules::{Dir, Proto},
    sample::TAP_SERVICE,
};
use floodgate::{
    policy::Served,
    rules::RuleSpec,
    sampler::{Captured, Reader, SamplerMaps, TapSettings},
    stats::Totals,
};
use integration_tests::{
    frames::{ip_frame, udp_from, udp_l4},
    harness::{self, Harness, XDP_DROP, XDP_PASS},
    live::{Lab, packets},
};
use ipnet::IpNet;
use serde_json::Value;

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// Runs `frame` and checks its action, its verdict counter and its would-drop counters.
#[track_caller]
fn expect(h: &mut Harness, frame: &[u8], reason: Reason, would: &[Reason]) {
    let before = h.maps.counters.would_drop().unwrap();
    h.expect(frame, reason, &format!("{reason:?} / would {would:?}"));
    let got = h.maps.counters.would_drop().unwrap().since(&before);
    let mut want = Totals::default();
    for w in would {
        want.0[*w as usize] = Counter { packets: 1, bytes: frame.len() as u64 };
    }
    assert_eq!(got, want, "would-drop counters for {reason:?} / {would:?}");
}

fn drain(r: &mut Reader) -> Vec<Captured> {
    let mut out = Vec::new();
    r.drain(&mut out);
    out
}

#[test]
fn a_watched_source_is_counted_sampled_and_passed_until_it_is_blocklisted() {
    let mut h = Harness::new(1024);
    let mut sampler = SamplerMaps::open(&mut h.ebpf).unwrap();
    let mut ring = Reader::open(&mut h.ebpf, TAP_SERVICE).unwrap();
    // Blocklist drops are sampled: so are frames the watchlist would drop.
    let tap = TapSettings { every: 1, reasons: vec![Reason::Blocklist], max_pps: 1000, trace: false };
    sampler.set(TAP_SERVICE, &tap.config(1)).unwrap();

    let v6 = "2001:db8:bad::9";
    let (watched, other) = (udp_from("203.0.113.9"), udp_from("192.0.2.1"));
    let watched6 = ip_frame(v6, 17, &udp_l4(4000, 53), &[], None);
    expect(&mut h, &watched, Reason::Passed, &[]);
    assert_eq!(h.maps.watch.add(&nets(&["203.0.113.0/24", "2001:db8:bad::/48"])).unwrap(), 2);
    expect(&mut h, &watched, Reason::Passed, &[Reason::Blocklist]);
    expect(&mut h, &watched6, Reason::Passed, &[Reason::Blocklist]);
    expect(&mut h, &other, Reason::Passed, &[]);
    let got = drain(&mut ring);
    assert_eq!(got.len(), 2, "the two watched frames, not the other one");
    for c in &got {
        assert_eq!(c.reason(), Some(Reason::Passed), "the verdict: passed");
        assert_eq!(c.sample.would_drop(), Some(Reason::Blocklist), "and what it would have been");
    }

    // The allowlist and the blocklist decide first, as they would once enforced.
    h.add(ListKind::Allow, &["203.0.113.0/28"]);
    expect(&mut h, &watched, Reason::Allowed, &[]);
    h.remove(ListKind::Allow, &["203.0.113.0/28"]);
    h.add(ListKind::Block, &["203.0.113.0/24"]);
    expect(&mut h, &watched, Reason::Blocklist, &[]);
    h.remove(ListKind::Block, &["203.0.113.0/24"]);

    // Removing the IPv4 entry leaves IPv6 watched; clearing stops all counting.
    assert_eq!(h.maps.watch.remove(&nets(&["203.0.113.0/24"])).unwrap(), 1);
    expect(&mut h, &watched, Reason::Passed, &[]);
    expect(&mut h, &watched6, Reason::Passed, &[Reason::Blocklist]);
    let err = h.maps.watch.remove(&nets(&["203.0.113.0/24", "2001:db8:bad::/48"])).unwrap_err();
    assert!(err.to_string().contains("not on the watchlist: 203.0.113.0/24"), "{err}");
    assert_eq!(h.maps.watch.entries().unwrap(), nets(&["2001:db8:bad::/48"]), "all or none");
    assert_eq!(h.maps.watch.replace(&[]).unwrap(), (0, 1));
    expect(&mut h, &watched6, Reason::Passed, &[]);
}

#[test]
fn observed_rules_and_policy_count_what_they_would_drop() {
    let mut h = Harness::new(1024);
    let mut memcached = floodgate::rules::reflection_preset().into_iter().find(|r| r.lo == 11211).unwrap();
    memcached.observe = true;
    let x11 = RuleSpec {
        observe: true,
        ..RuleSpec::parse("udp", None, Some("6000-6063"), true, Some("x11")).unwrap()
    };
    let ids: Vec<u32> = h.maps.rules.add_rules(&[memcached, x11]).unwrap().iter().map(|r| r.id).collect();
    let reflected = ip_frame("192.0.2.5", 17, &udp_l4(11211, 5000), &[], None);
    expect(&mut h, &reflected, Reason::Passed, &[Reason::Rule]);
    let rules = h.maps.rules.rules().unwrap();
    let hits = |id| rules.iter().find(|r| r.id == id).unwrap().hits.packets;
    assert_eq!((hits(ids[0]), hits(ids[1])), (1, 0), "the rule's own counter moves too");
    assert_eq!(rules[0].spec.action(), "observe");

    // The policy in observe mode, serving udp/5000 only.
    let mut cfg = floodgate::policy::policy_config(true, Some((32768, 60999)), true);
    cfg.observe = 1;
    h.maps.policy.set_policy(cfg, &[Served { proto: Proto::Udp, lo: 5000, hi: 5000 }]).unwrap();
    let unserved = ip_frame("192.0.2.5", 17, &udp_l4(4000, 7), &[], None);
    expect(&mut h, &unserved, Reason::Passed, &[Reason::Policy]);
    expect(&mut h, &ip_frame("192.0.2.5", 17, &udp_l4(4000, 5000), &[], None), Reason::Passed, &[]);
    let frag = ip_frame(
        "192.0.2.5",
        17,
        &[0u8; 16],
        &[],
        Some(integration_tests::frames::Frag { offset: 8, more: false }),
    );
    expect(&mut h, &frag, Reason::Passed, &[Reason::Fragment]);
    // An observed rule and an observed policy on one frame: each counts it.
    expect(
        &mut h,
        &ip_frame("192.0.2.5", 17, &udp_l4(4000, 6001), &[], None),
        Reason::Passed,
        &[Reason::Rule, Reason::Policy],
    );

    // Enforced again, the same frames are dropped and nothing is "would".
    cfg.observe = 0;
    h.maps.policy.set_policy(cfg, &[Served { proto: Proto::Udp, lo: 5000, hi: 5000 }]).unwrap();
    expect(&mut h, &unserved, Reason::Policy, &[]);
    expect(&mut h, &frag, Reason::Fragment, &[]);
    let spec = RuleSpec::parse("udp", Some("11211"), None, true, None).unwrap();
    h.maps.rules.remove_rule(&ids[0].to_string()).unwrap();
    h.maps.rules.add_rules(&[RuleSpec { dir: Dir::Src, ..spec }]).unwrap();
    expect(&mut h, &reflected, Reason::Rule, &[]);
}

#[test]
fn limits_in_observe_mode_pass_over_limit_sources_and_ban_nobody() {
    let mut h = Harness::new(1024);
    let mut cfg = harness::limits(10, 5);
    cfg.ban_after_ns = 1;
    cfg.ban_for_ns = 600_000_000_000;
    cfg.observe = 1;
    h.set_limits(&cfg);
    let f = udp_from("192.0.2.77");
    let before = h.maps.counters.would_drop().unwrap();
    let mut passed = 0;
    for _ in 0..200 {
        if h.run(&f).action == XDP_PASS {
            passed += 1;
        }
    }
    let would = h.maps.counters.would_drop().unwrap().since(&before).get(Reason::RateLimit).packets;
    assert_eq!(passed, 200, "nothing dropped in observe mode");
    assert!(would >= 150, "over its 10/s with a burst of 5, most frames would be dropped: {would}");
    assert!(h.maps.limiter.bans().is_empty(), "no auto-ban in observe mode");

    // Enforced: the same source is dropped, and banned.
    cfg.observe = 0;
    h.set_limits(&cfg);
    std::thread::sleep(Duration::from_millis(5));
    let drops = (0..200).filter(|_| h.run(&f).action == XDP_DROP).count();
    assert!(drops >= 150, "{drops}");
    assert!(!h.maps.limiter.bans().is_empty(), "enforced limits ban");
}

const PORT: u16 = 5007;

fn would(stats: &Value, reason: &str) -> u64 {
    packets(stats, &format!("would_drop.{reason}"))
}

#[test]
fn an_operator_observes_a_feed_rules_a_policy_and_limits_before_enforcing_them() {
    let lab = Lab::new("obs");
    lab.attach("native");
    let i = lab.srv_if.clone();
    let sink = lab.sink(PORT);
    // Bad input changes nothing and says what is wrong.
    let err = lab.err(&["watchlist", "add", "-i", &i, "203.0.113.0/24", "203.0.113.7/33"]);
    assert!(err.contains("203.0.113.7/33"), "{err}");
    assert!(lab.list("watchlist").is_empty());
    lab.ok(&["watchlist", "add", "-i", &i, "203.0.113.0/24", "2001:db8:bad::/48"]);
    assert_eq!(lab.list("watchlist"), ["203.0.113.0/24", "2001:db8:bad::/48"]);
    let err = lab.err(&["watchlist", "remove", "-i", &i, "198.51.100.0/24"]);
    assert!(err.contains("not on the watchlist: 198.51.100.0/24"), "{err}");
    let out =
        lab.ok(&["rule", "add", "-i", &i, "--proto", "udp", "--src-port", "11211", "--action", "observe"]);
    assert!(out.contains("(observe)"), "{out}");
    let out = lab.ok(&["policy", "set", "-i", &i, "--serve", &format!("udp/{PORT}"), "--observe"]);
    assert!(out.contains("OBSERVE MODE"), "{out}");
    let out = lab.ok(&[
        "limit",
        "set",
        "-i",
        &i,
        "--pps",
        "100",
        "--ban-after",
        "1s",
        "--ban-for",
        "1m",
        "--observe",
    ]);
    assert!(out.contains("OBSERVE MODE"), "{out}");
    let shown: Value = serde_json::from_str(&lab.ok(&["limit", "show", "-i", &i, "--json"])).unwrap();
    assert_eq!(shown["observe"], true);
    let top = lab.ok(&["top", "-i", &i, "--interval", "100ms"]);
    assert!(top.starts_with("limits in observe mode") && top.contains("would drop/s"), "{top}");
    let shown: Value = serde_json::from_str(&lab.ok(&["policy", "show", "-i", &i, "--json"])).unwrap();
    assert_eq!(shown["observe"], true);
    let rules: Value = serde_json::from_str(&lab.ok(&["rule", "list", "-i", &i, "--json"])).unwrap();
    assert_eq!(rules[0]["action"], "observe");

    // A watched feed, a reflection flood, traffic to an unserved port, and one source
    // far over its limit: everything reaches the server.
    let mut reflect = lab.spec("192.0.2.11".parse().unwrap(), PORT);
    reflect.sport = 11211;
    let frames = [
        lab.frame("203.0.113.9", PORT),
        lab.frame("2001:db8:bad::9", PORT),
        floodgate_lab::build(&reflect),
        lab.frame("192.0.2.12", PORT + 1),
    ];
    // `capture --reason blocklist` takes the frames the watchlist would drop, and
    // `trace` shows them passed with what observe mode would have done.
    let pcap = std::env::temp_dir().join(format!("fgt-obs-{}.pcap", std::process::id()));
    let (captured, traced) = std::thread::scope(|s| {
        let capture = s.spawn(|| {
            let w = pcap.to_str().unwrap();
            lab.ok(&[
                "capture",
                "-i",
                &i,
                "--reason",
                "blocklist",
                "--every",
                "1",
                "--count",
                "20",
                "--seconds",
                "10s",
                "-w",
                w,
            ])
        });
        std::thread::sleep(Duration::from_millis(500));
        let frames = lab.frame("203.0.113.9", PORT);
        lab.send(&[frames], 50, 500);
        let captured = capture.join().unwrap();
        let trace = s.spawn(|| lab.floodgate(&["trace", "-i", &i, "203.0.113.9", "--seconds", "3s"]));
        std::thread::sleep(Duration::from_millis(500));
        lab.send(&[lab.frame("203.0.113.9", PORT)], 3, 100);
        (captured, trace.join().unwrap())
    });
    let _ = std::fs::remove_file(&pcap);
    assert!(
        captured.contains("20 frames written") && captured.contains("would_drop.blocklist 20"),
        "{captured}"
    );
    assert!(traced.stdout.contains("passed, observe mode would drop: blocklist"), "{traced:?}");
    let (w0, s0) = (would(&lab.stats(), "blocklist"), sink.count("203.0.113.9"));
    assert_eq!((w0, s0), (53, 53), "the capture's and the trace's frames");

    lab.send(&frames, 300, 3000);
    sink.settle();
    assert_eq!(sink.count("203.0.113.9"), 353, "watched: passed");
    assert_eq!(sink.count("2001:db8:bad::9"), 300);
    assert_eq!(sink.count("192.0.2.11"), 300, "observed rule: passed");
    let stats = lab.stats();
    assert_eq!(would(&stats, "blocklist"), 653);
    assert_eq!(would(&stats, "rule"), 300);
    assert_eq!(would(&stats, "policy"), 300);
    // Each source sent 300 frames in about 0.4 s against 100/s with a burst of 10:
    // the limits would have dropped most of each.
    assert!(would(&stats, "rate_limit") >= 600, "{stats}");
    assert_eq!(packets(&stats, "dropped.blocklist") + packets(&stats, "dropped.rate_limit"), 0);
    assert!(!lab.ok(&["blocklist", "list", "-i", &i]).contains("auto-ban"), "observe mode bans nobody");
    let text = lab.ok(&["stats", "-i", &i]);
    assert!(text.contains("would_drop:blocklist") && text.contains("would_drop:rule"), "{text}");
    let metrics = lab.ok(&["stats", "-i", &i, "--json"]);
    assert!(metrics.contains("\"would_drop\""), "{metrics}");

    // Enforcing: the feed goes on the blocklist, the rest is set without --observe.
    lab.ok(&["watchlist", "clear", "-i", &i]);
    lab.ok(&["blocklist", "add", "-i", &i, "203.0.113.0/24", "2001:db8:bad::/48"]);
    lab.ok(&["policy", "set", "-i", &i, "--serve", &format!("udp/{PORT}")]);
    let before = lab.stats();
    lab.send(&frames[..2], 50, 2000);
    sink.settle();
    let after = lab.stats();
    assert_eq!(sink.count("203.0.113.9"), 353, "blocklisted now: nothing more arrives");
    assert_eq!(packets(&after, "dropped.blocklist") - packets(&before, "dropped.blocklist"), 100);
    assert_eq!(would(&after, "blocklist"), would(&before, "blocklist"), "no longer observed");
}
