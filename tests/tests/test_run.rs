//! The real XDP object on crafted frames (BPF_PROG_TEST_RUN): verdicts and exact
//! counter deltas.

use filter_common::{ListKind, Reason, map_names};
use floodgate::loader;
use integration_tests::{
    frames::{ETH_P_8021AD, ETH_P_8021Q, ipv4_with_options, l3_offset, non_ip, udp_from, udp_tagged},
    harness::Harness,
};

const BLOCKED_V4: &str = "203.0.113.9";
const BLOCKED_V6: &str = "2001:db8:bad::9";

fn harness() -> Harness {
    Harness::new(1024)
}

#[test]
fn list_maps_get_the_requested_capacity() {
    let ebpf = loader::load(loader::Capacity::entries(3000), None).expect("load");
    for name in map_names::LISTS {
        let data = match ebpf.map(name).expect(name) {
            aya::maps::Map::HashMap(d) | aya::maps::Map::LpmTrie(d) => d,
            _ => panic!("{name} is not a hash map or LPM trie"),
        };
        // Room for both generations of a replace.
        assert_eq!(data.info().unwrap().max_entries(), 6000, "{name}");
    }
    // A region of ranges per list and generation.
    let ranges = ebpf.map(map_names::V4_RANGES).expect("ranges");
    let aya::maps::Map::Array(d) = ranges else { panic!("{} is not an array", map_names::V4_RANGES) };
    assert_eq!(d.info().unwrap().max_entries(), 6_000, "two u32 words to an element");
}

#[test]
fn clean_ipv4_and_ipv6_pass() {
    let mut h = harness();
    h.add(ListKind::Block, &["203.0.113.0/24", "2001:db8:bad::/48"]);
    h.expect(&udp_from("192.0.2.1"), Reason::Passed, "clean v4");
    h.expect(&udp_from("2001:db8:feed::1"), Reason::Passed, "clean v6");
}

#[test]
fn blocklisted_sources_drop_with_and_without_vlan_tags() {
    let mut h = harness();
    h.add(ListKind::Block, &["203.0.113.0/24", "2001:db8:bad::/48"]);
    for tags in [&[][..], &[ETH_P_8021Q], &[ETH_P_8021AD], &[ETH_P_8021AD, ETH_P_8021Q]] {
        h.expect(&udp_tagged(BLOCKED_V4, tags), Reason::Blocklist, &format!("v4 tags {tags:x?}"));
        h.expect(&udp_tagged(BLOCKED_V6, tags), Reason::Blocklist, &format!("v6 tags {tags:x?}"));
        h.expect(&udp_tagged("192.0.2.1", tags), Reason::Passed, &format!("clean v4 tags {tags:x?}"));
    }
}

/// Deeper VLAN stacks than the walk follows are dropped whoever sent them: the kernel
/// strips priority tags (VLAN ID 0) one by one and delivered such frames to a UDP
/// socket when they were passed as non-IP.
#[test]
fn vlan_stacks_deeper_than_the_walk_are_dropped() {
    let mut h = harness();
    h.add(ListKind::Block, &["203.0.113.0/24"]);
    for tags in [
        &[ETH_P_8021Q, ETH_P_8021Q, ETH_P_8021Q][..],
        &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
        &[ETH_P_8021Q; 5],
    ] {
        for src in [BLOCKED_V4, "192.0.2.1", BLOCKED_V6] {
            let mut f = udp_tagged(src, tags);
            // Priority tags: VLAN ID 0.
            for i in 0..tags.len() {
                f[14 + 4 * i..16 + 4 * i].copy_from_slice(&[0, 0]);
            }
            h.expect(&f, Reason::Unchecked, &format!("{src} behind {} tags", tags.len()));
        }
    }
}

#[test]
fn ipv4_options_are_skipped_by_ihl() {
    let mut h = harness();
    h.add(ListKind::Block, &["203.0.113.9"]);
    for words in [1, 3, 10] {
        h.expect(&ipv4_with_options(BLOCKED_V4, words), Reason::Blocklist, &format!("{words} option words"));
        h.expect(
            &ipv4_with_options("192.0.2.1", words),
            Reason::Passed,
            &format!("{words} option words, clean"),
        );
    }
}

#[test]
fn host_entries_match_exactly() {
    let mut h = harness();
    h.add(ListKind::Block, &["203.0.113.9", "2001:db8:bad::9"]);
    h.expect(&udp_from("203.0.113.9"), Reason::Blocklist, "v4 host");
    h.expect(&udp_from("203.0.113.8"), Reason::Passed, "v4 neighbour");
    h.expect(&udp_from("2001:db8:bad::9"), Reason::Blocklist, "v6 host");
    h.expect(&udp_from("2001:db8:bad::8"), Reason::Passed, "v6 neighbour");
}

#[test]
fn prefix_edges() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("0.0.0.0/0", &["0.0.0.0", "255.255.255.255", "192.0.2.1"], &["2001:db8::1"]),
        ("128.0.0.0/1", &["128.0.0.0", "255.255.255.255"], &["127.255.255.255", "0.0.0.1"]),
        ("192.0.2.0/31", &["192.0.2.0", "192.0.2.1"], &["192.0.2.2", "192.0.1.255"]),
        ("192.0.2.7/32", &["192.0.2.7"], &["192.0.2.6", "192.0.2.8"]),
        ("::/0", &["::1", "2001:db8::1", "ffff::1"], &["192.0.2.1"]),
        (
            "2001:db8::/127",
            &["2001:db8::", "2001:db8::1"],
            &["2001:db8::2", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"],
        ),
        ("2001:db8::7/128", &["2001:db8::7"], &["2001:db8::6", "2001:db8::8"]),
    ];
    for (prefix, inside, outside) in cases {
        let mut h = harness();
        h.add(ListKind::Block, &[prefix]);
        for a in *inside {
            h.expect(&udp_from(a), Reason::Blocklist, &format!("{a} inside {prefix}"));
        }
        for a in *outside {
            h.expect(&udp_from(a), Reason::Passed, &format!("{a} outside {prefix}"));
        }
    }
}

#[test]
fn allow_wins_over_block() {
    let mut h = harness();
    h.add(ListKind::Block, &["203.0.113.0/24", "2001:db8:bad::/48"]);
    h.add(ListKind::Allow, &["203.0.113.9", "2001:db8:bad::/64"]);
    h.expect(&udp_from(BLOCKED_V4), Reason::Allowed, "v4 on both");
    h.expect(&udp_from("203.0.113.10"), Reason::Blocklist, "v4 only blocked");
    h.expect(&udp_from(BLOCKED_V6), Reason::Allowed, "v6 on both");
    h.expect(&udp_from("2001:db8:bad:1::9"), Reason::Blocklist, "v6 only blocked");
    h.expect(&udp_from("192.0.2.1"), Reason::Passed, "neither");
    // Allowlisted without being blocked counts as allowed too.
    h.add(ListKind::Allow, &["192.0.2.1"]);
    h.expect(&udp_from("192.0.2.1"), Reason::Allowed, "allow only");
}

/// A source inside a listed /16 or shorter prefix is dropped by the entry program
/// itself (one directory read) only while the allowlist is empty; an allowlist entry,
/// of either family, sends it through the whole decision again.
#[test]
fn wide_prefixes_drop_in_the_entry_unless_the_allowlist_has_entries() {
    let mut h = harness();
    h.add(ListKind::Block, &["198.18.0.0/15"]);
    h.expect(&udp_from("198.19.7.7"), Reason::Blocklist, "inside the /15, empty allowlist");
    h.expect(&udp_from("198.20.0.1"), Reason::Passed, "just outside");
    h.add(ListKind::Allow, &["198.19.7.7"]);
    h.expect(&udp_from("198.19.7.7"), Reason::Allowed, "allowlisted inside the /15");
    h.expect(&udp_from("198.18.0.1"), Reason::Blocklist, "the rest of the /15");
    h.remove(ListKind::Allow, &["198.19.7.7"]);
    h.add(ListKind::Allow, &["2001:db8::1"]);
    h.expect(&udp_from("198.19.7.7"), Reason::Blocklist, "an IPv6 allowlist entry changes nothing here");
    h.expect(&udp_from("2001:db8::1"), Reason::Allowed, "the IPv6 entry");
}

/// The entry hands every IP frame to `fg_decide` by tail call. Should that slot ever be
/// empty, frames were never checked against the lists: dropped as unchecked, not passed.
#[test]
fn a_missing_decision_program_fails_closed() {
    let mut h = harness();
    h.add(ListKind::Block, &[BLOCKED_V4]);
    h.expect(&udp_from("192.0.2.1"), Reason::Passed, "clean source, decision in place");
    let map = h.ebpf.map_mut(map_names::TAILS).expect("tail map");
    let mut tails = aya::maps::ProgramArray::try_from(map).expect("program array");
    tails.clear_index(&filter_common::TAIL_DECIDE).expect("clear the decision's slot");
    h.expect(&udp_from(BLOCKED_V4), Reason::Unchecked, "listed source");
    h.expect(&udp_from("192.0.2.1"), Reason::Unchecked, "clean source");
    h.expect(&non_ip(0x0806), Reason::NonIp, "non-IP frames are decided in the entry");
}

#[test]
fn removal_takes_effect() {
    let mut h = harness();
    h.add(ListKind::Block, &["203.0.113.0/24", "203.0.113.9"]);
    h.remove(ListKind::Block, &["203.0.113.9"]);
    h.expect(&udp_from(BLOCKED_V4), Reason::Blocklist, "still inside the /24");
    h.remove(ListKind::Block, &["203.0.113.0/24"]);
    h.expect(&udp_from(BLOCKED_V4), Reason::Passed, "both removed");
}

#[test]
fn replace_switches_generations() {
    let mut h = harness();
    h.add(ListKind::Block, &["203.0.113.0/24", "192.0.2.5"]);
    h.replace(ListKind::Block, &["192.0.2.5", "2001:db8:bad::/48"]);
    h.expect(&udp_from("203.0.113.1"), Reason::Passed, "dropped from the list");
    h.expect(&udp_from("192.0.2.5"), Reason::Blocklist, "in both lists");
    h.expect(&udp_from(BLOCKED_V6), Reason::Blocklist, "new entry");
    assert_eq!(h.maps.lists.entries(ListKind::Block).unwrap().len(), 2);
    // Replacing again flips back to generation 0, which must have been emptied.
    h.replace(ListKind::Block, &["198.51.100.0/24"]);
    h.expect(&udp_from("192.0.2.5"), Reason::Passed, "old generation cleared");
    h.expect(&udp_from("198.51.100.3"), Reason::Blocklist, "second replace");
    h.replace(ListKind::Block, &[]);
    h.expect(&udp_from("198.51.100.3"), Reason::Passed, "replaced with nothing");
    assert!(h.maps.lists.entries(ListKind::Block).unwrap().is_empty());
}

#[test]
fn non_ip_frames_pass_untouched() {
    let mut h = harness();
    h.add(ListKind::Block, &["0.0.0.0/0", "::/0"]);
    for ethertype in [0x0806u16, 0x88cc, 0x8847, 0x0842] {
        h.expect(&non_ip(ethertype), Reason::NonIp, &format!("ethertype {ethertype:#06x}"));
    }
}

#[test]
fn truncation_at_every_length_is_malformed() {
    let mut h = harness();
    // Everything would be dropped if parsed: a truncated frame must not be.
    h.add(ListKind::Block, &["0.0.0.0/0", "::/0"]);
    let frames = [
        ("v4", udp_from(BLOCKED_V4), 0),
        ("v6", udp_from(BLOCKED_V6), 0),
        ("v4 one tag", udp_tagged(BLOCKED_V4, &[ETH_P_8021Q]), 1),
        ("v6 two tags", udp_tagged(BLOCKED_V6, &[ETH_P_8021AD, ETH_P_8021Q]), 2),
        ("v4 options", ipv4_with_options(BLOCKED_V4, 4), 0),
    ];
    for (name, full, tags) in frames {
        h.expect(&full, Reason::Blocklist, name);
        // BPF_PROG_TEST_RUN refuses frames under 14 bytes; shorter ones are covered by
        // filter-common's host tests of the same parser.
        let l3 = l3_offset(tags);
        let ip_total = u16::from_be_bytes([full[l3 + 2], full[l3 + 3]]) as usize;
        let v4 = full[l3] >> 4 == 4;
        let needed = if v4 {
            l3 + ip_total
        } else {
            l3 + 40 + u16::from_be_bytes([full[l3 + 4], full[l3 + 5]]) as usize
        };
        for cut in 14..needed {
            h.expect(&full[..cut], Reason::Malformed, &format!("{name} cut to {cut}"));
        }
    }
}

#[test]
fn bad_ip_headers_are_malformed() {
    let mut h = harness();
    h.add(ListKind::Block, &["0.0.0.0/0", "::/0"]);
    let base = udp_from(BLOCKED_V4);
    for ihl in [0u8, 1, 4] {
        let mut f = base.clone();
        f[14] = 0x40 | ihl;
        h.expect(&f, Reason::Malformed, &format!("IHL {ihl}"));
    }
    let mut f = base.clone();
    f[14] = 0x45 | 0x20; // version 6 in an IPv4 ethertype
    h.expect(&f, Reason::Malformed, "version mismatch");
    let mut f = base.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    h.expect(&f, Reason::Malformed, "total length below header");
    let mut f = base.clone();
    let too_long = (f.len() - 14 + 1) as u16;
    f[16..18].copy_from_slice(&too_long.to_be_bytes());
    h.expect(&f, Reason::Malformed, "total length beyond frame");
    let mut f = udp_from(BLOCKED_V6);
    let too_long = (f.len() - 14 - 40 + 1) as u16;
    f[18..20].copy_from_slice(&too_long.to_be_bytes());
    h.expect(&f, Reason::Malformed, "v6 payload length beyond frame");
    let mut f = udp_from(BLOCKED_V6);
    f[14] = 0x45;
    h.expect(&f, Reason::Malformed, "v6 version");
    // Ethernet padding after the IP packet is normal.
    let mut f = base.clone();
    f.extend_from_slice(&[0; 16]);
    h.expect(&f, Reason::Blocklist, "padded frame");
}

#[test]
fn counters_add_up_over_many_frames() {
    let mut h = harness();
    h.add(ListKind::Block, &["203.0.113.0/24"]);
    let frame = udp_from(BLOCKED_V4);
    let opts = aya::programs::TestRunOptions { data_in: Some(&frame), repeat: 10_000, ..Default::default() };
    let before = h.maps.counters.totals().unwrap();
    use aya::programs::TestRun as _;
    h.program().test_run(opts).unwrap();
    let d = h.maps.counters.totals().unwrap().since(&before);
    assert_eq!(d.get(Reason::Blocklist).packets, 10_000);
    assert_eq!(d.get(Reason::Blocklist).bytes, 10_000 * frame.len() as u64);
    assert_eq!(d.packets(), 10_000, "no other counter moved");
}

#[test]
fn full_list_is_an_error_and_changes_nothing() {
    let mut h = Harness::new(4);
    h.add(ListKind::Block, &["192.0.2.1", "192.0.2.2", "198.51.100.0/24", "2001:db8::/32"]);
    let nets: Vec<ipnet::IpNet> =
        ["192.0.2.3/32", "192.0.2.4/32", "192.0.2.5/32"].iter().map(|s| s.parse().unwrap()).collect();
    let err = h.maps.lists.add(ListKind::Block, &nets, None, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("full") && err.contains("capacity is 4"), "{err}");
    assert_eq!(h.maps.lists.entries(ListKind::Block).unwrap().len(), 4);
    h.expect(&udp_from("192.0.2.3"), Reason::Passed, "not half-added");
    // Re-adding present entries needs no room.
    h.add(ListKind::Block, &["192.0.2.1"]);
    let five: Vec<ipnet::IpNet> = (1..=5).map(|i| format!("192.0.2.{i}/32").parse().unwrap()).collect();
    let err = h.maps.lists.replace(ListKind::Block, &five, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("full"), "{err}");
    h.expect(&udp_from("192.0.2.1"), Reason::Blocklist, "old list intact after refused replace");
    h.expect(&udp_from("192.0.2.5"), Reason::Passed, "new list not applied");
}
