//! The sampler on the real object (BPF_PROG_TEST_RUN): what a tap picks, what a sample
//! holds, the per-second cap, tracing, and the pcap and decoding of real samples.

use filter_common::{
    ListKind, Reason,
    sample::{FLAG_TRACED, SAMPLE_BYTES, TAP_ADHOC, TAP_SERVICE},
};
use floodgate::sampler::{Captured, Reader, SamplerMaps, TapSettings, decode::decode, pcap};
use integration_tests::{
    frames::{ip_frame, tcp_l4, udp_from},
    harness::Harness,
};

fn setup() -> (Harness, SamplerMaps) {
    let mut h = Harness::new(1024);
    let s = SamplerMaps::open(&mut h.ebpf).expect("sampler maps");
    (h, s)
}

fn drain(r: &mut Reader) -> Vec<Captured> {
    let mut out = Vec::new();
    r.drain(&mut out);
    out
}

fn tap(every: u32, reasons: &[Reason], max_pps: u32, trace: bool) -> filter_common::sample::SampleConfig {
    TapSettings { every, reasons: reasons.to_vec(), max_pps, trace }.config(1)
}

#[test]
fn off_taps_send_nothing() {
    let (mut h, s) = setup();
    let mut r = Reader::open(&mut h.ebpf, TAP_SERVICE).expect("ring");
    h.add(ListKind::Block, &["203.0.113.0/24"]);
    for _ in 0..50 {
        h.run(&udp_from("203.0.113.9"));
        h.run(&udp_from("192.0.2.1"));
    }
    assert!(drain(&mut r).is_empty());
    assert_eq!(s.counters(TAP_SERVICE).unwrap().sent, 0);
}

#[test]
fn every_frame_of_a_reason_with_its_verdict_and_headers() {
    let (mut h, mut s) = setup();
    let mut r = Reader::open(&mut h.ebpf, TAP_SERVICE).expect("ring");
    h.add(ListKind::Block, &["203.0.113.0/24"]);
    s.set(TAP_SERVICE, &tap(1, &[Reason::Blocklist], 1000, false)).unwrap();
    let big = ip_frame("203.0.113.9", 17, &[0u8; 400], &[], None);
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    for _ in 0..10 {
        assert_eq!(h.run(&big).action, integration_tests::harness::XDP_DROP);
        h.run(&udp_from("192.0.2.1")); // passed: not sampled
    }
    let got = drain(&mut r);
    assert_eq!(got.len(), 10, "one per blocklisted frame, none of the passed");
    for c in &got {
        assert_eq!(c.reason(), Some(Reason::Blocklist));
        assert_eq!(c.sample.frame_len as usize, big.len());
        assert_eq!(c.sample.cap_len as usize, SAMPLE_BYTES);
        assert_eq!(c.bytes(), &big[..SAMPLE_BYTES], "the frame's first bytes");
        assert_eq!(c.sample.flags, 0);
        assert!(c.unix_ns + 5_000_000_000 > before && c.unix_ns < before + 60_000_000_000, "dated now");
    }
    let d = decode(got[0].bytes());
    assert_eq!(d.src, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(d.proto_name(), "udp");
    let counters = s.counters(TAP_SERVICE).unwrap();
    assert_eq!((counters.sent, counters.capped, counters.lost), (10, 0, 0));

    // Short frames are copied whole.
    let small = udp_from("203.0.113.9");
    h.run(&small);
    let got = drain(&mut r);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].bytes(), &small[..]);
}

#[test]
fn one_in_n_is_about_one_in_n() {
    let (mut h, mut s) = setup();
    let mut r = Reader::open(&mut h.ebpf, TAP_SERVICE).expect("ring");
    s.set(TAP_SERVICE, &tap(10, &[], 100_000, false)).unwrap();
    for _ in 0..2000 {
        h.run(&udp_from("192.0.2.1"));
    }
    let n = drain(&mut r).len();
    // Binomial(2000, 0.1): mean 200, sd 13.4; 120..280 is six sd.
    assert!((120..280).contains(&n), "{n} samples of 2000 frames at 1 in 10");
}

#[test]
fn the_cap_holds_and_counts_what_it_left_out() {
    let (mut h, mut s) = setup();
    let mut r = Reader::open(&mut h.ebpf, TAP_SERVICE).expect("ring");
    s.set(TAP_SERVICE, &tap(1, &[], 7, false)).unwrap();
    for _ in 0..100 {
        h.run(&udp_from("192.0.2.1"));
    }
    let got = drain(&mut r).len();
    let c = s.counters(TAP_SERVICE).unwrap();
    // The test run may spread over a one-second window boundary: at most two windows.
    assert!(got == 7 || got == 14, "{got}");
    assert_eq!(c.sent + c.capped, 100);
    assert_eq!(c.sent, got as u64);
}

#[test]
fn traced_sources_are_sampled_whatever_their_verdict_on_the_adhoc_tap() {
    let (mut h, mut s) = setup();
    let mut adhoc = Reader::open(&mut h.ebpf, TAP_ADHOC).expect("ring");
    let mut service = Reader::open(&mut h.ebpf, TAP_SERVICE).expect("ring");
    h.add(ListKind::Block, &["203.0.113.0/24"]);
    s.set_traced(&["203.0.113.9/32".parse().unwrap(), "192.0.2.0/28".parse().unwrap()]).unwrap();
    s.set(TAP_ADHOC, &tap(0, &[], 1000, true)).unwrap();
    h.run(&udp_from("203.0.113.9"));
    h.run(&udp_from("203.0.113.10"));
    h.run(&udp_from("192.0.2.5"));
    h.run(&udp_from("192.0.2.17"));
    let syn = ip_frame("192.0.2.6", 6, &tcp_l4(40000, 80, 0x02), &[], None);
    h.run(&syn);
    let got = drain(&mut adhoc);
    let seen: Vec<(String, Option<Reason>)> = got
        .iter()
        .map(|c| {
            assert_eq!(c.sample.flags & FLAG_TRACED, FLAG_TRACED);
            (decode(c.bytes()).src.unwrap().to_string(), c.reason())
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("203.0.113.9".to_string(), Some(Reason::Blocklist)),
            ("192.0.2.5".to_string(), Some(Reason::Passed)),
            ("192.0.2.6".to_string(), Some(Reason::Passed)),
        ]
    );
    assert!(drain(&mut service).is_empty(), "the service's tap is off and traces nothing");
    s.clear_traced().unwrap();
    h.run(&udp_from("203.0.113.9"));
    assert!(drain(&mut adhoc).is_empty());
}

#[test]
fn samples_written_as_pcap_read_back() {
    let (mut h, mut s) = setup();
    let mut r = Reader::open(&mut h.ebpf, TAP_SERVICE).expect("ring");
    s.set(TAP_SERVICE, &tap(1, &[], 1000, false)).unwrap();
    let big = ip_frame("198.51.100.7", 17, &[0u8; 1000], &[], None);
    h.run(&big);
    let got = drain(&mut r);
    let mut w = pcap::PcapWriter::new(Vec::new(), SAMPLE_BYTES as u32).unwrap();
    for c in &got {
        w.write(c.unix_ns, c.sample.frame_len, c.bytes()).unwrap();
    }
    let recs = pcap::read(&w.into_inner()).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].1 as usize, big.len(), "the original length");
    assert_eq!(recs[0].2, &big[..SAMPLE_BYTES]);
}
