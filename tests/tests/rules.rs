//! Protocol/port rules, the served-ports policy, IPv6 extension headers and
//! fragments: the real XDP object on crafted frames with BPF_PROG_TEST_RUN, rules and
//! policy written through the controller's library. Every case checks the verdict and
//! that exactly one counter moved by exactly that frame.

use filter_common::{
    ListKind, Reason,
    rules::{PolicyConfig, Proto},
};
use floodgate::{
    policy::{Served, parse_serve},
    rules::{RuleSpec, reflection_preset},
};
use integration_tests::{
    frames::{Frag, icmp_l4, ip_frame, tcp, tcp_l4, udp, udp_l4},
    harness::Harness,
};

const V4: &str = "192.0.2.33";
const V6: &str = "2001:db8:33::1";

fn harness() -> Harness {
    Harness::new(1024)
}

fn rule(h: &mut Harness, proto: &str, src: Option<&str>, dst: Option<&str>, drop: bool, name: &str) -> u32 {
    let spec = RuleSpec::parse(proto, src, dst, drop, Some(name)).unwrap();
    h.maps.rules.add_rules(&[spec]).unwrap()[0].id
}

fn hits(h: &Harness, name: &str) -> u64 {
    h.maps.rules.rules().unwrap().into_iter().find(|r| r.spec.name == name).map(|r| r.hits.packets).unwrap()
}

fn policy(h: &mut Harness, serve: &str, eph: Option<(u16, u16)>, drop_fragments: bool) {
    let served: Vec<Served> = parse_serve(serve).unwrap();
    let cfg = PolicyConfig {
        enforce: !served.is_empty() as u8,
        drop_fragments: drop_fragments as u8,
        ephemeral: eph.is_some() as u8,
        observe: 0,
        eph_lo: eph.map_or(0, |e| e.0),
        eph_hi: eph.map_or(0, |e| e.1),
    };
    h.maps.policy.set_policy(cfg, &served).unwrap();
}

#[test]
fn source_port_rule_on_v4_and_v6() {
    let mut h = harness();
    rule(&mut h, "udp", Some("11211"), None, true, "memcached");
    for src in [V4, V6] {
        h.expect(&udp(src, 11211, 80), Reason::Rule, "udp from 11211");
        h.expect(&udp(src, 11210, 80), Reason::Passed, "udp from 11210");
        h.expect(&udp(src, 80, 11211), Reason::Passed, "udp to 11211 (other direction)");
        h.expect(&tcp(src, 11211, 80), Reason::Passed, "tcp from 11211 (other protocol)");
    }
    assert_eq!(hits(&h, "memcached"), 2);
}

#[test]
fn destination_port_range_at_its_edges() {
    let mut h = harness();
    rule(&mut h, "tcp", None, Some("6000-6063"), true, "x11");
    for src in [V4, V6] {
        for (port, reason) in
            [(5999, Reason::Passed), (6000, Reason::Rule), (6063, Reason::Rule), (6064, Reason::Passed)]
        {
            h.expect(&tcp(src, 40000, port), reason, &format!("tcp to {port}"));
        }
    }
    // The extreme ports index the table's ends.
    rule(&mut h, "udp", None, Some("65535"), true, "top");
    rule(&mut h, "udp", Some("0"), None, true, "zero");
    h.expect(&udp(V4, 1, 65535), Reason::Rule, "udp to 65535");
    h.expect(&udp(V6, 0, 1), Reason::Rule, "udp from 0");
    assert_eq!((hits(&h, "x11"), hits(&h, "top"), hits(&h, "zero")), (4, 1, 1));
}

#[test]
fn icmp_rules_match_their_family_only_and_spare_neighbour_discovery() {
    let mut h = harness();
    rule(&mut h, "icmp", None, None, true, "icmp");
    h.expect(&ip_frame(V4, 1, &icmp_l4(8), &[], None), Reason::Rule, "icmp echo");
    h.expect(&ip_frame(V6, 58, &icmp_l4(128), &[], None), Reason::Passed, "icmpv6 echo under an icmp rule");
    rule(&mut h, "icmpv6", None, None, true, "icmp6");
    h.expect(&ip_frame(V6, 58, &icmp_l4(128), &[], None), Reason::Rule, "icmpv6 echo");
    for nd in 133..=137 {
        h.expect(&ip_frame(V6, 58, &icmp_l4(nd), &[], None), Reason::Passed, &format!("icmpv6 type {nd}"));
    }
    h.expect(&udp(V6, 1, 2), Reason::Passed, "udp under icmp rules");
    assert_eq!((hits(&h, "icmp"), hits(&h, "icmp6")), (1, 1));
}

#[test]
fn ports_are_found_behind_ipv4_options_and_ipv6_extension_headers() {
    let mut h = harness();
    rule(&mut h, "udp", None, Some("53"), true, "dns");
    // IPv4 with 40 bytes of options.
    let mut f = udp(V4, 1000, 53);
    let opts = vec![1u8; 40];
    f.splice(34..34, opts);
    f[14] = 0x4f;
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    h.expect(&f, Reason::Rule, "udp behind IPv4 options");
    // Each IPv6 extension header, then a chain of six (the limit), then seven.
    let l4 = udp_l4(1000, 53);
    for (name, exts) in [
        ("hop-by-hop", vec![(0, 8)]),
        ("routing", vec![(43, 24)]),
        ("destination options", vec![(60, 16)]),
        ("authentication", vec![(51, 24)]),
        ("six headers", vec![(0, 8), (60, 8), (43, 8), (51, 12), (60, 8), (60, 8)]),
    ] {
        h.expect(&ip_frame(V6, 17, &l4, &exts, None), Reason::Rule, name);
    }
    // Seven or twenty: the ports are out of reach while a rule is in force, so the
    // frame cannot be checked and is dropped (it used to be passed as malformed).
    h.expect(&ip_frame(V6, 17, &l4, &[(60, 8); 7], None), Reason::Unchecked, "seven headers");
    h.expect(&ip_frame(V6, 17, &l4, &[(60, 8); 20], None), Reason::Unchecked, "twenty headers");
    // A header longer than the payload.
    let mut f = ip_frame(V6, 17, &l4, &[(60, 8)], None);
    f[14 + 40 + 1] = 30;
    h.expect(&f, Reason::Malformed, "extension header beyond the payload");
    assert_eq!(hits(&h, "dns"), 6);
}

#[test]
fn fragments_first_matched_later_ones_decided_by_the_setting() {
    let mut h = harness();
    rule(&mut h, "udp", None, Some("53"), true, "dns");
    let first = Some(Frag { offset: 0, more: true });
    let later = Some(Frag { offset: 100, more: false });
    for src in [V4, V6] {
        let proto = 17;
        h.expect(&ip_frame(src, proto, &udp_l4(1, 53), &[], first), Reason::Rule, "first fragment, matching");
        h.expect(
            &ip_frame(src, proto, &udp_l4(1, 54), &[], first),
            Reason::Passed,
            "first fragment, other port",
        );
        // The later fragment's bytes where ports would be read as port 53: ignored.
        h.expect(&ip_frame(src, proto, &udp_l4(1, 53), &[], later), Reason::Passed, "later fragment, pass");
    }
    policy(&mut h, "", None, true);
    for src in [V4, V6] {
        h.expect(&ip_frame(src, 17, &udp_l4(1, 53), &[], later), Reason::Fragment, "later fragment, drop");
        h.expect(&ip_frame(src, 17, &udp_l4(1, 54), &[], first), Reason::Passed, "first fragment under drop");
    }
    // Behind another extension header too.
    h.expect(
        &ip_frame(V6, 17, &udp_l4(1, 54), &[(0, 8)], later),
        Reason::Fragment,
        "v6 later fragment after hbh",
    );
}

#[test]
fn policy_passes_served_and_ephemeral_ports_only() {
    let mut h = harness();
    policy(&mut h, "tcp/443,tcp/80,udp/53,tcp/8000-8002", Some((32768, 60999)), false);
    for src in [V4, V6] {
        for (frame, reason, what) in [
            (tcp(src, 40000, 443), Reason::Passed, "tcp/443"),
            (tcp(src, 40000, 80), Reason::Passed, "tcp/80"),
            (udp(src, 40000, 53), Reason::Passed, "udp/53"),
            (tcp(src, 40000, 8002), Reason::Passed, "tcp/8002"),
            (tcp(src, 40000, 8003), Reason::Policy, "tcp/8003"),
            (tcp(src, 40000, 53), Reason::Policy, "tcp/53 (only udp/53 served)"),
            (udp(src, 40000, 443), Reason::Policy, "udp/443"),
            (udp(src, 53, 32768), Reason::Passed, "reply to ephemeral 32768"),
            (tcp(src, 443, 60999), Reason::Passed, "reply to ephemeral 60999"),
            (udp(src, 53, 61000), Reason::Policy, "61000, above the ephemeral range"),
            (udp(src, 53, 32767), Reason::Policy, "32767, below the ephemeral range"),
        ] {
            h.expect(&frame, reason, what);
        }
    }
    h.expect(&ip_frame(V4, 1, &icmp_l4(8), &[], None), Reason::Passed, "icmp passes the policy");
    h.expect(&ip_frame(V6, 58, &icmp_l4(135), &[], None), Reason::Passed, "neighbour solicitation");
    h.expect(&ip_frame(V4, 47, &[0u8; 16], &[], None), Reason::Passed, "gre passes the policy");
    // A pass rule opens a port past the policy; a drop rule closes a served one.
    rule(&mut h, "udp", None, Some("5353"), false, "mdns-in");
    rule(&mut h, "tcp", Some("0-1023"), None, true, "low-src");
    h.expect(&udp(V4, 5353, 5353), Reason::Passed, "pass rule past the policy");
    h.expect(&tcp(V4, 1000, 443), Reason::Rule, "drop rule on a served port");
    // Without an ephemeral range, replies are dropped too.
    policy(&mut h, "tcp/443", None, false);
    h.expect(&udp(V4, 53, 40000), Reason::Policy, "no ephemeral range");
    // Cleared: everything open.
    h.maps.policy.set_policy(PolicyConfig::default(), &[]).unwrap();
    h.expect(&udp(V4, 53, 40000), Reason::Passed, "policy cleared");
    assert_eq!(h.maps.policy.policy_state().unwrap().served, vec![]);
}

#[test]
fn allowlisted_sources_are_exempt_from_rules_policy_and_fragments() {
    let mut h = harness();
    rule(&mut h, "udp", Some("53"), None, true, "dns-src");
    policy(&mut h, "tcp/443", None, true);
    h.add(ListKind::Allow, &[V4, V6]);
    for src in [V4, V6] {
        h.expect(&udp(src, 53, 9999), Reason::Allowed, "allowlisted, rule would drop");
        h.expect(&tcp(src, 1, 22), Reason::Allowed, "allowlisted, policy would drop");
        let later = Some(Frag { offset: 9, more: false });
        h.expect(&ip_frame(src, 17, &udp_l4(1, 2), &[], later), Reason::Allowed, "allowlisted fragment");
    }
    h.expect(&udp("192.0.2.34", 53, 9999), Reason::Rule, "not allowlisted");
    h.expect(&tcp("192.0.2.34", 1, 22), Reason::Policy, "not allowlisted");
}

#[test]
fn rule_cost_does_not_depend_on_the_rule_count() {
    // 1,000 single-port rules: the verdicts stay exact at the first, the last and
    // between them (the cost itself is measured by `cargo xtask bench`).
    let mut h = harness();
    let specs: Vec<RuleSpec> = (0..1000u16)
        .map(|i| RuleSpec::parse("udp", None, Some(&(10_000 + 2 * i).to_string()), true, None).unwrap())
        .collect();
    assert_eq!(h.maps.rules.add_rules(&specs).unwrap().len(), 1000);
    h.expect(&udp(V4, 1, 10_000), Reason::Rule, "first rule");
    h.expect(&udp(V4, 1, 11_998), Reason::Rule, "last rule");
    h.expect(&udp(V4, 1, 10_001), Reason::Passed, "between rules");
    assert_eq!(h.maps.rules.rules().unwrap().len(), 1000);
}

#[test]
fn overlaps_names_presets_and_removal() {
    let mut h = harness();
    rule(&mut h, "udp", Some("2000-2100"), None, true, "range");
    let overlap = RuleSpec::parse("udp", Some("2100"), None, false, Some("x")).unwrap();
    let err = h.maps.rules.add_rules(&[overlap]).unwrap_err().to_string();
    assert!(err.contains("overlaps rule 1 'range'"), "{err}");
    let whole = RuleSpec::parse("udp", None, None, true, None).unwrap();
    assert!(h.maps.rules.add_rules(&[whole]).unwrap_err().to_string().contains("'range'"));
    let dup_name = RuleSpec::parse("tcp", None, None, true, Some("range")).unwrap();
    assert!(h.maps.rules.add_rules(&[dup_name]).unwrap_err().to_string().contains("exists already"));
    // The preset goes in once; the second time adds nothing; with a conflicting rule
    // present it adds nothing at all.
    let n = reflection_preset().len();
    assert_eq!(h.maps.rules.add_rules(&reflection_preset()).unwrap().len(), n);
    assert_eq!(h.maps.rules.add_rules(&reflection_preset()).unwrap().len(), 0);
    assert_eq!(h.maps.rules.rules().unwrap().len(), n + 1);
    h.expect(&udp(V4, 11211, 80), Reason::Rule, "memcached reflection");
    h.expect(&udp(V6, 1900, 80), Reason::Rule, "ssdp reflection");
    assert_eq!(hits(&h, "reflection-memcached"), 1);
    // Removal by name and by id clears exactly the rule's ports.
    let removed = h.maps.rules.remove_rule("reflection-memcached").unwrap();
    assert_eq!(removed.spec.proto, Proto::Udp);
    h.expect(&udp(V4, 11211, 80), Reason::Passed, "removed rule");
    h.expect(&udp(V4, 2050, 80), Reason::Rule, "other rule intact");
    h.maps.rules.remove_rule("1").unwrap();
    h.expect(&udp(V4, 2050, 80), Reason::Passed, "removed by id");
    assert!(
        h.maps.rules.remove_rule("nope").unwrap_err().to_string().contains("no rule with name or id 'nope'")
    );
    // A reused id starts with zero counters.
    let id = rule(&mut h, "udp", Some("11211"), None, true, "again");
    assert!(id == 1 || id == removed.id);
    assert_eq!(hits(&h, "again"), 0);
    let mut h2 = harness();
    h2.maps
        .rules
        .add_rules(&[RuleSpec::parse("udp", Some("53"), None, false, Some("mine")).unwrap()])
        .unwrap();
    let err = h2.maps.rules.add_rules(&reflection_preset()).unwrap_err().to_string();
    assert!(err.contains("'mine'"), "{err}");
    assert_eq!(h2.maps.rules.rules().unwrap().len(), 1, "nothing of the preset was added");
}

#[test]
fn tcp_syn_and_rules_together() {
    // The SYN parse still works through the new transport step.
    let mut h = harness();
    rule(&mut h, "tcp", None, Some("22"), true, "ssh");
    let syn = ip_frame(V4, 6, &tcp_l4(40000, 22, 0x02), &[], None);
    h.expect(&syn, Reason::Rule, "syn to 22");
    let syn = ip_frame(V6, 6, &tcp_l4(40000, 80, 0x02), &[(0, 8)], None);
    h.expect(&syn, Reason::Passed, "v6 syn to 80 behind hop-by-hop");
}
