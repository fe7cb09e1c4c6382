//! The rate limiter, auto-bans and expiring entries in the real XDP object, on
//! crafted frames (BPF_PROG_TEST_RUN). Rates here are far below the speed of
//! back-to-back test runs, so a burst is exactly what passes.

use std::{thread::sleep, time::Duration};

use filter_common::{
    ListKind, Reason,
    limit::{Bucket, Event, SourceKey},
};
use floodgate_lab::{FrameSpec, build};
use integration_tests::{
    frames::udp_from,
    harness::{Harness, limits},
};

fn syn_from(src: &str, flags: u8) -> Vec<u8> {
    let src: std::net::IpAddr = src.parse().unwrap();
    let dst = if src.is_ipv4() { "198.51.100.1".parse().unwrap() } else { "2001:db8:1::1".parse().unwrap() };
    build(&FrameSpec::tcp(src, dst, 80, flags))
}

#[test]
fn off_until_configured() {
    let mut h = Harness::new(64);
    let t = h.tally(&udp_from("192.0.2.1"), 50);
    assert_eq!(t.get(&Reason::Passed), Some(&50));
    assert!(h.maps.limiter.tracked().is_empty(), "no state kept while off");
}

#[test]
fn a_source_gets_its_burst_then_is_limited() {
    let mut h = Harness::new(64);
    h.set_limits(&limits(1, 5));
    let frame = udp_from("192.0.2.1");
    for i in 0..5 {
        h.expect(&frame, Reason::Passed, &format!("burst packet {i}"));
    }
    for i in 0..5 {
        h.expect(&frame, Reason::RateLimit, &format!("over the limit {i}"));
    }
    // Other sources have buckets of their own, in both families.
    h.expect(&udp_from("192.0.2.2"), Reason::Passed, "another v4 source");
    h.expect(&udp_from("2001:db8:9::1"), Reason::Passed, "a v6 source");
    // The limited source is kept apart from the LRU once over its limit.
    let key = SourceKey::v4([192, 0, 2, 1], 32);
    let tracked = h.maps.limiter.tracked();
    let t = tracked.iter().find(|t| t.key == key).expect("tracked");
    assert!(t.over_limit);
    assert_eq!((t.state.passed, t.state.dropped), (5, 5));
}

#[test]
fn new_limits_apply_to_the_next_packet() {
    let mut h = Harness::new(64);
    h.set_limits(&limits(1, 2));
    let frame = udp_from("192.0.2.1");
    let t = h.tally(&frame, 6);
    assert_eq!((t[&Reason::Passed], t[&Reason::RateLimit]), (2, 4));
    h.set_limits(&limits(1_000_000, 1000));
    let t = h.tally(&frame, 20);
    assert_eq!(t.get(&Reason::Passed), Some(&20), "a higher limit applies at once");
    let mut off = limits(1, 1);
    off.enabled = 0;
    h.set_limits(&off);
    assert_eq!(h.tally(&frame, 20).get(&Reason::Passed), Some(&20));
}

#[test]
fn syn_limit_counts_only_syns() {
    let mut h = Harness::new(64);
    let mut cfg = limits(1_000_000, 1000);
    cfg.syn = Bucket::per_second(1, 3);
    h.set_limits(&cfg);
    for src in ["192.0.2.1", "2001:db8:9::1"] {
        let syn = syn_from(src, 0x02);
        for _ in 0..3 {
            h.expect(&syn, Reason::Passed, "SYN within burst");
        }
        h.expect(&syn, Reason::SynLimit, "SYN over the limit");
        h.expect(&syn_from(src, 0x12), Reason::Passed, "SYN-ACK is not a SYN");
        h.expect(&syn_from(src, 0x10), Reason::Passed, "ACK");
        h.expect(&udp_from(src), Reason::Passed, "UDP");
    }
}

#[test]
fn global_syn_budget_spans_sources() {
    let mut h = Harness::new(64);
    let mut cfg = limits(1_000_000, 1000);
    cfg.global_syn = Bucket::per_second(1, 4);
    h.set_limits(&cfg);
    let mut passed = 0;
    for i in 1..=10 {
        let o = h.run(&syn_from(&format!("192.0.2.{i}"), 0x02));
        if o.delta.get(Reason::Passed).packets == 1 {
            passed += 1;
        } else {
            assert_eq!(o.delta.get(Reason::SynLimit).packets, 1);
        }
    }
    assert_eq!(passed, 4, "the global burst, shared by ten sources");
    h.expect(&udp_from("192.0.2.1"), Reason::Passed, "non-SYN traffic is untouched");
    // Global drops are not the source's fault: nobody is kept as over-limit for them.
    assert!(h.maps.limiter.tracked().iter().all(|t| !t.over_limit));
}

#[test]
fn ipv4_sources_group_by_prefix() {
    let mut h = Harness::new(64);
    let mut cfg = limits(1, 3);
    cfg.v4_prefix = 24;
    h.set_limits(&cfg);
    h.expect(&udp_from("192.0.2.1"), Reason::Passed, ".1");
    h.expect(&udp_from("192.0.2.200"), Reason::Passed, ".200 shares the /24");
    h.expect(&udp_from("192.0.2.3"), Reason::Passed, ".3 shares the /24");
    h.expect(&udp_from("192.0.2.4"), Reason::RateLimit, "the /24's burst is spent");
    h.expect(&udp_from("192.0.3.1"), Reason::Passed, "another /24");
    assert!(h.maps.limiter.tracked().iter().any(|t| t.key == SourceKey::v4([192, 0, 2, 0], 24)));
}

#[test]
fn ipv6_sources_group_by_prefix() {
    let mut h = Harness::new(64);
    h.set_limits(&limits(1, 2)); // default /64
    h.expect(&udp_from("2001:db8:1:1::1"), Reason::Passed, "first");
    h.expect(&udp_from("2001:db8:1:1:ffff::2"), Reason::Passed, "same /64");
    h.expect(&udp_from("2001:db8:1:1::3"), Reason::RateLimit, "same /64, burst spent");
    h.expect(&udp_from("2001:db8:1:2::1"), Reason::Passed, "next /64");
    let mut cfg = limits(1, 2);
    cfg.v6_prefix = 128;
    h.set_limits(&cfg);
    h.expect(&udp_from("2001:db8:1:1::3"), Reason::Passed, "per address with /128");
}

#[test]
fn byte_limit() {
    let mut h = Harness::new(64);
    let mut cfg = limits(1_000_000, 1000);
    // 1 byte/s, bursts of 1,000 bytes: whole frames until the debt passes 1,000 s. So
    // slow a refill (one frame a minute) that a slow guest (TCG) cannot earn a frame
    // more between two test runs, as it did at 1,000 bytes/s.
    cfg.bytes = Bucket::bytes_per_second(1, 1000);
    h.set_limits(&cfg);
    let frame = udp_from("192.0.2.1");
    let fits = 1000 / frame.len() + 1;
    let t = h.tally(&frame, fits + 5);
    assert_eq!((t[&Reason::Passed], t[&Reason::RateLimit]), (fits, 5), "frame of {} bytes", frame.len());
}

#[test]
fn lists_come_before_the_limiter() {
    let mut h = Harness::new(64);
    h.set_limits(&limits(1, 1));
    h.add(ListKind::Allow, &["192.0.2.1"]);
    h.add(ListKind::Block, &["192.0.2.2"]);
    for _ in 0..5 {
        h.expect(&udp_from("192.0.2.1"), Reason::Allowed, "allowlisted: never limited");
        h.expect(&udp_from("192.0.2.2"), Reason::Blocklist, "blocklisted");
    }
    assert!(h.maps.limiter.tracked().is_empty(), "listed sources never reach the limiter");
}

#[test]
fn a_source_over_its_limit_long_enough_is_banned() {
    let mut h = Harness::new(64);
    let mut cfg = limits(1, 1);
    cfg.ban_after_ns = 20_000_000; // 20 ms
    cfg.ban_for_ns = 400_000_000; // 400 ms
    h.set_limits(&cfg);
    let frame = udp_from("192.0.2.9");
    h.expect(&frame, Reason::Passed, "burst");
    h.expect(&frame, Reason::RateLimit, "first drop starts the episode");
    sleep(Duration::from_millis(30));
    // Still over: this drop is 30 ms into the episode, so it bans.
    h.expect(&frame, Reason::RateLimit, "drop that triggers the ban");
    assert_eq!(h.maps.limiter.event(Event::AutoBan).unwrap(), 1);
    h.expect(&frame, Reason::Blocklist, "banned");
    h.expect(&udp_from("192.0.2.10"), Reason::Passed, "others are not");
    let bans: Vec<_> = h.maps.limiter.bans.keys().filter_map(Result::ok).collect();
    assert_eq!(bans, [SourceKey::v4([192, 0, 2, 9], 32)]);
    sleep(Duration::from_millis(450));
    // The ban has expired in the data path; the source is back under the limiter,
    // and a new episode has to last ban_after before the next ban.
    h.expect(&frame, Reason::RateLimit, "ban over, still over its limit");
    assert_eq!(h.maps.limiter.event(Event::AutoBan).unwrap(), 1, "no immediate re-ban");
    assert_eq!(h.maps.limiter.sweep(), 1, "the sweep removes the expired ban");
    assert!(h.maps.limiter.bans.keys().next().is_none());
    sleep(Duration::from_millis(30));
    h.expect(&frame, Reason::RateLimit, "20 ms into the new episode: banned again");
    assert_eq!(h.maps.limiter.event(Event::AutoBan).unwrap(), 2);
    // Limits without auto-ban remove the bans.
    h.set_limits(&limits(1, 1));
    assert!(h.maps.limiter.bans.keys().next().is_none());
}

#[test]
fn ttl_entries_stop_matching_when_they_expire() {
    let mut h = Harness::new(64);
    h.add(ListKind::Block, &["198.51.0.0/16"]);
    h.add_ttl(
        ListKind::Block,
        &["192.0.2.7", "2001:db8:bad::/48", "198.51.100.0/24"],
        Duration::from_millis(300),
    );
    h.expect(&udp_from("192.0.2.7"), Reason::Blocklist, "host with TTL");
    h.expect(&udp_from("2001:db8:bad::1"), Reason::Blocklist, "v6 prefix with TTL");
    let listed: Vec<_> = h.maps.lists.entries(ListKind::Block).unwrap();
    assert_eq!(listed.iter().filter(|e| e.expires.is_some()).count(), 3);
    sleep(Duration::from_millis(350));
    // No controller has run: the data path itself ignores the expired entries.
    h.expect(&udp_from("192.0.2.7"), Reason::Passed, "host expired");
    h.expect(&udp_from("2001:db8:bad::1"), Reason::Passed, "v6 prefix expired");
    h.expect(
        &udp_from("198.51.100.9"),
        Reason::Blocklist,
        "covered by the permanent /16 under the expired /24",
    );
    assert_eq!(h.maps.lists.entries(ListKind::Block).unwrap().len(), 1, "expired entries are not listed");
    assert_eq!(h.maps.lists.sweep().unwrap(), 3);
    assert_eq!(h.maps.lists.read_meta().unwrap().counts[ListKind::Block as usize], [1, 0]);
}

#[test]
fn re_adding_changes_a_ttl_but_never_shortens_a_permanent_entry() {
    let mut h = Harness::new(64);
    h.add(ListKind::Block, &["192.0.2.1"]);
    h.add_ttl(ListKind::Block, &["192.0.2.1", "192.0.2.2"], Duration::from_millis(200));
    // Permanent stays permanent; the new one expires.
    h.add(ListKind::Block, &["192.0.2.2"]); // now permanent too
    sleep(Duration::from_millis(250));
    h.expect(&udp_from("192.0.2.1"), Reason::Blocklist, "permanent");
    h.expect(&udp_from("192.0.2.2"), Reason::Blocklist, "made permanent by a plain add");
    assert_eq!(h.maps.lists.sweep().unwrap(), 0);
}

#[test]
fn one_packet_sources_are_not_tracked_and_cannot_evict_tracked_ones() {
    // A table of 64 sources; 256 random one-packet sources must not touch it. Few
    // enough that the flood takes well under the 1 s refill even under TCG.
    let mut h = Harness::new(64);
    let mut cfg = limits(1, 3);
    cfg.v6_prefix = 128;
    h.set_limits(&cfg);
    let heavy = udp_from("192.0.2.1");
    h.expect(&heavy, Reason::Passed, "heavy source, first packet");
    h.expect(&heavy, Reason::Passed, "heavy source, second packet: now tracked");
    for i in 0..256u32 {
        let src = format!("2001:db8:77::{:x}:{:x}", i >> 16, i & 0xffff);
        h.expect(&udp_from(&src), Reason::Passed, "one-packet source");
    }
    let tracked = h.maps.limiter.tracked();
    assert_eq!(tracked.len(), 1, "only the repeating source is tracked: {tracked:?}");
    assert_eq!(tracked[0].state.passed, 2, "its first packet was counted when it was admitted");
    // Its bucket kept its debt through the flood: one more passes (burst 3), then drops.
    h.expect(&heavy, Reason::Passed, "third packet, last of the burst");
    h.expect(&heavy, Reason::RateLimit, "over the limit");
}
