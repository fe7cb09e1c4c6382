//! SYN cookies in the driver on crafted frames (BPF_PROG_TEST_RUN, repeat 1, since a
//! repeat re-runs on the rewritten frame): every SYN-ACK is taken apart and checked:
//! addresses, ports, ack number, flags, options, both checksums, the frame length and
//! the counters.

use filter_common::{
    ListKind, Reason,
    limit::Bucket,
    synproxy::{SynProxyConfig, csum_add, csum_fold, pseudo_v4, pseudo_v6},
};
use integration_tests::{
    frames::{ip_frame, syn_l4},
    harness::{Harness, XDP_PASS},
};

const XDP_TX: u32 = 3;
const V4: &str = "192.0.2.40";
const V6: &str = "2001:db8:40::1";
const SEQ: u32 = 0x0102_0304;
const WSCALE: u8 = 10;

/// MSS 1460, SACK-permitted, timestamps (TSval 0x1234), window scale 7: Linux's order.
const LINUX: &[u8] = &[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7];

fn harness(ports: &[(u16, u16)], above_pps: u32) -> Harness {
    let mut h = Harness::new(64);
    let above = if above_pps == 0 { Bucket::default() } else { Bucket::per_second(above_pps as u64, 5) };
    let cfg = SynProxyConfig {
        enabled: 1,
        wscale: WSCALE,
        _pad: 0,
        above_pps,
        above,
        old_tcp_loose: -1,
        old_syncookies: 1,
    };
    h.maps.synproxy.write_synproxy(&cfg, ports).unwrap();
    h
}

fn syn(src: &str, dport: u16, opts: &[u8]) -> Vec<u8> {
    let proto = 6;
    ip_frame(src, proto, &syn_l4(40000, dport, SEQ, opts), &[], None)
}

/// The options of a TCP header, as (kind, body) pairs.
fn options(tcp: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let hlen = (tcp[12] >> 4) as usize * 4;
    let (mut i, mut out) = (20, Vec::new());
    while i < hlen {
        match tcp[i] {
            0 => break,
            1 => i += 1,
            k => {
                let l = tcp[i + 1] as usize;
                out.push((k, tcp[i + 2..i + l].to_vec()));
                i += l;
            }
        }
    }
    out
}

/// Runs a SYN that must be answered; checks everything but the options, returns the
/// SYN-ACK's TCP header.
fn answered(h: &mut Harness, frame: &[u8], what: &str) -> Vec<u8> {
    let (out, reply) = h.run_out(frame);
    assert_eq!(out.action, XDP_TX, "{what}: answered");
    assert_eq!(out.delta.get(Reason::SynProxy).packets, 1, "{what}: counted");
    assert_eq!(out.delta.get(Reason::SynProxy).bytes, frame.len() as u64, "{what}: bytes of the SYN");
    assert_eq!(out.delta.packets(), 1, "{what}: one counter");
    assert_eq!((&reply[..6], &reply[6..12]), (&frame[6..12], &frame[..6]), "{what}: MACs swapped");
    let v6 = frame[12..14] == [0x86, 0xdd];
    let (l4, pseudo) = if v6 {
        let ip = &reply[14..54];
        assert_eq!((ip[0] >> 4, ip[6], ip[7]), (6, 6, 64), "{what}: IPv6 header");
        assert_eq!((&ip[8..24], &ip[24..40]), (&frame[38..54], &frame[22..38]), "{what}: addresses swapped");
        let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        assert_eq!(reply.len(), 54 + plen, "{what}: payload length");
        let (s, d): ([u8; 16], [u8; 16]) = (ip[8..24].try_into().unwrap(), ip[24..40].try_into().unwrap());
        (54, pseudo_v6(&s, &d, plen))
    } else {
        let ip = &reply[14..34];
        assert_eq!((ip[0], ip[8], ip[9]), (0x45, 64, 6), "{what}: IPv4 header");
        assert_eq!((&ip[12..16], &ip[16..20]), (&frame[30..34], &frame[26..30]), "{what}: addresses swapped");
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        assert_eq!(reply.len(), 14 + total, "{what}: total length");
        let mut hdr = [0u8; 60];
        hdr[..20].copy_from_slice(ip);
        assert_eq!(csum_fold(csum_add(0, &hdr, 20)), 0, "{what}: IPv4 header checksum");
        (34, pseudo_v4(ip[12..16].try_into().unwrap(), ip[16..20].try_into().unwrap(), total - 20))
    };
    let tcp = reply[l4..].to_vec();
    let hlen = (tcp[12] >> 4) as usize * 4;
    assert_eq!(tcp.len(), hlen, "{what}: no payload");
    let mut buf = [0u8; 60];
    buf[..hlen].copy_from_slice(&tcp);
    assert_eq!(csum_fold(csum_add(pseudo, &buf, hlen)), 0, "{what}: TCP checksum");
    let req = &frame[l4..];
    assert_eq!((&tcp[0..2], &tcp[2..4]), (&req[2..4], &req[0..2]), "{what}: ports swapped");
    assert_eq!(u32::from_be_bytes(tcp[8..12].try_into().unwrap()), SEQ + 1, "{what}: ack");
    assert_eq!(tcp[13], 0x12, "{what}: SYN-ACK");
    tcp
}

fn mss(tcp: &[u8]) -> u16 {
    let o = options(tcp);
    let m = o.iter().find(|(k, _)| *k == 2).expect("MSS option");
    u16::from_be_bytes([m.1[0], m.1[1]])
}

#[test]
fn full_options_on_v4_and_v6() {
    let mut h = harness(&[(80, 80)], 0);
    for (src, want_mss) in [(V4, 1460), (V6, 1440)] {
        let mut opts = LINUX.to_vec();
        if src == V6 {
            opts[2..4].copy_from_slice(&1440u16.to_be_bytes());
        }
        let tcp = answered(&mut h, &syn(src, 80, &opts), src);
        let o = options(&tcp);
        let kinds: Vec<u8> = o.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [2, 4, 8, 3], "{src}: MSS, SACK-permitted, timestamps, window scale");
        assert_eq!(mss(&tcp), want_mss, "{src}: MSS from the cookie");
        let ts = &o[2].1;
        let tsval = u32::from_be_bytes(ts[..4].try_into().unwrap());
        assert_eq!(&ts[4..], &[0, 0, 0x12, 0x34], "{src}: TSecr echoes the client's TSval");
        assert_eq!(tsval & 0x1f, 0x10 | 7, "{src}: TSval carries wscale 7 and SACK");
        assert_eq!(o[3].1, [WSCALE], "{src}: the listener's window scale");
        assert_eq!(u16::from_be_bytes([tcp[14], tcp[15]]), 0, "window 0 until the listener answers");
    }
}

#[test]
fn without_timestamps_only_the_mss_survives() {
    let mut h = harness(&[(80, 80)], 0);
    for src in [V4, V6] {
        // MSS, SACK-permitted, window scale, no timestamps.
        let tcp = answered(&mut h, &syn(src, 80, &[2, 4, 5, 0xb4, 4, 2, 1, 3, 3, 7]), src);
        assert_eq!(options(&tcp).iter().map(|(k, _)| *k).collect::<Vec<_>>(), [2], "{src}");
        // No options at all: the default MSS class.
        let tcp = answered(&mut h, &syn(src, 80, &[]), src);
        assert!([536, 1220].contains(&mss(&tcp)), "{src}: {}", mss(&tcp));
    }
}

#[test]
fn timestamps_without_window_scale_or_sack() {
    let mut h = harness(&[(80, 80)], 0);
    let tcp =
        answered(&mut h, &syn(V4, 80, &[2, 4, 2, 0x18, 1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0]), "ts only");
    let o = options(&tcp);
    assert_eq!(o.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [2, 8]);
    assert_eq!(mss(&tcp), 536);
    let tsval = u32::from_be_bytes(o[1].1[..4].try_into().unwrap());
    assert_eq!(tsval & 0x1f, 0xf, "no window scale (0xf), no SACK");
    assert_eq!(&tcp[24..26], &[1, 1], "NOPs where SACK-permitted would be");
}

#[test]
fn unusual_option_orders_and_truncated_lists() {
    let mut h = harness(&[(443, 443)], 0);
    // Window scale first, an unknown option (kind 30), timestamps, MSS, SACK last.
    let odd = [1, 3, 3, 6, 30, 4, 1, 2, 8, 10, 0, 0, 0, 5, 0, 0, 0, 0, 2, 4, 5, 0xb4, 4, 2];
    let tcp = answered(&mut h, &syn(V6, 443, &odd), "odd order");
    let o = options(&tcp);
    assert_eq!(o.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [2, 4, 8, 3]);
    let tsval = u32::from_be_bytes(o[2].1[..4].try_into().unwrap());
    assert_eq!(tsval & 0x1f, 0x10 | 6);
    // The list ends inside the timestamp option: MSS and SACK are kept, timestamps
    // (and so window scale and SACK in the reply) are not.
    let cut = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0];
    let tcp = answered(&mut h, &syn(V4, 443, &cut), "truncated");
    assert_eq!(options(&tcp).iter().map(|(k, _)| *k).collect::<Vec<_>>(), [2]);
    assert_eq!(mss(&tcp), 1460);
    // A zero-length option ends the list too.
    let tcp = answered(&mut h, &syn(V4, 443, &[2, 4, 5, 0xb4, 30, 0, 8, 10]), "zero length");
    assert_eq!(options(&tcp).iter().map(|(k, _)| *k).collect::<Vec<_>>(), [2]);
}

#[test]
fn what_is_not_answered() {
    let mut h = harness(&[(80, 80)], 0);
    h.expect(&syn(V4, 81, LINUX), Reason::Passed, "unprotected port");
    let ack = ip_frame(
        V4,
        6,
        &{
            let mut t = syn_l4(40000, 80, SEQ, &[]);
            t[13] = 0x10;
            t
        },
        &[],
        None,
    );
    h.expect(&ack, Reason::Passed, "an ACK");
    h.add(ListKind::Allow, &[V6]);
    h.expect(&syn(V6, 80, LINUX), Reason::Allowed, "allowlisted source");
    h.add(ListKind::Block, &[V4]);
    h.expect(&syn(V4, 80, LINUX), Reason::Blocklist, "blocklisted source");
    // SYN cookies off: passes.
    let mut off = h.maps.synproxy.synproxy_config().unwrap();
    off.enabled = 0;
    h.maps.synproxy.write_synproxy(&off, &[(80, 80)]).unwrap();
    h.expect(&syn("192.0.2.41", 80, LINUX), Reason::Passed, "disabled");
}

#[test]
fn below_the_threshold_syns_reach_the_listener() {
    // 10 SYNs/s with a burst of 5 go through; the rest of a burst is answered.
    let mut h = harness(&[(80, 80)], 10);
    let frame = syn(V4, 80, LINUX);
    let mut actions = Vec::new();
    for _ in 0..8 {
        actions.push(h.run_out(&frame).0.action);
    }
    assert_eq!(actions, [XDP_PASS, XDP_PASS, XDP_PASS, XDP_PASS, XDP_PASS, XDP_TX, XDP_TX, XDP_TX]);
}

/// The client's bare ACK (or `payload`) as Linux sends it after our SYN-ACK: NOP, NOP,
/// timestamps; with a correct TCP checksum, so a repair can be checked against it.
fn client_ack(src: &str, dport: u16, seq: u32, ack: u32, tsecr: u32, payload: &[u8]) -> Vec<u8> {
    let mut l4 = 40000u16.to_be_bytes().to_vec();
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[0x80, if payload.is_empty() { 0x10 } else { 0x18 }, 0, 63, 0, 0, 0, 0]);
    l4.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0x12, 0x40]);
    l4.extend_from_slice(&tsecr.to_be_bytes());
    l4.extend_from_slice(payload);
    let mut f = ip_frame(src, 6, &l4, &[], None);
    let c = tcp_checksum(&f);
    let at = l4_offset(&f) + 16;
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f
}

fn l4_offset(f: &[u8]) -> usize {
    if f[12..14] == [0x86, 0xdd] { 54 } else { 34 }
}

/// The TCP checksum over the frame's segment with its checksum field taken as zero.
fn tcp_checksum(f: &[u8]) -> u16 {
    let l4 = l4_offset(f);
    let len = f.len() - l4;
    let pseudo = if l4 == 54 {
        pseudo_v6(f[22..38].try_into().unwrap(), f[38..54].try_into().unwrap(), len)
    } else {
        pseudo_v4(f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap(), len)
    };
    let mut seg = f[l4..].to_vec();
    seg[16] = 0;
    seg[17] = 0;
    let mut sum = pseudo;
    for chunk in seg.chunks(2) {
        sum += u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]) as u32;
    }
    csum_fold(sum)
}

#[test]
fn zero_window_probes_after_a_lost_handshake_ack_are_repaired() {
    let mut h = harness(&[(80, 80)], 0);
    for src in [V4, V6] {
        let synack = answered(&mut h, &syn(src, 80, LINUX), src);
        let cookie = u32::from_be_bytes(synack[4..8].try_into().unwrap());
        let ts = options(&synack)[2].1.clone();
        let tsval = u32::from_be_bytes(ts[..4].try_into().unwrap());
        assert_eq!((tsval >> 6) & 3, SEQ & 3, "{src}: TSval carries the ISN's low bits");
        let ack = |seq: u32, ack: u32, payload: &[u8]| client_ack(src, 80, seq, ack, tsval, payload);
        let untouched = |h: &mut Harness, f: &[u8], what: &str| {
            let (o, out) = h.run_out(f);
            assert_eq!(o.action, XDP_PASS, "{src} {what}");
            assert_eq!(
                (o.delta.get(Reason::Passed).packets, o.delta.packets()),
                (1, 1),
                "{src} {what}: passed; {:?}",
                o.delta
            );
            assert_eq!(out, f, "{src} {what}: unchanged");
        };

        // The handshake ACK itself goes to SYNPROXY as it is.
        untouched(&mut h, &ack(SEQ + 1, cookie.wrapping_add(1), &[]), "handshake ACK");
        // Its zero-window probes are one sequence number lower. The first is passed one
        // up (SYNPROXY then opens the connection), the second as it is (in case the
        // connection is open and only the window update was lost), and so on.
        let probe = ack(SEQ, cookie.wrapping_add(1), &[]);
        for n in 1..=4 {
            if n % 2 == 0 {
                untouched(&mut h, &probe, &format!("probe {n}"));
                continue;
            }
            let (o, out) = h.run_out(&probe);
            assert_eq!(o.action, XDP_PASS, "{src} probe {n}");
            assert_eq!(o.delta.get(Reason::AckRepaired).packets, 1, "{src} probe {n}: counted");
            assert_eq!(o.delta.packets(), 1, "{src} probe {n}: one counter");
            let l4 = l4_offset(&out);
            assert_eq!(u32::from_be_bytes(out[l4 + 4..l4 + 8].try_into().unwrap()), SEQ + 1, "{src}: seq");
            let field = u16::from_be_bytes([out[l4 + 16], out[l4 + 17]]);
            assert_eq!(field, tcp_checksum(&out), "{src} probe {n}: checksum updated");
            let mut rest = out.clone();
            rest[l4 + 4..l4 + 8].copy_from_slice(&probe[l4 + 4..l4 + 8]);
            rest[l4 + 16..l4 + 18].copy_from_slice(&probe[l4 + 16..l4 + 18]);
            assert_eq!(rest, probe, "{src} probe {n}: nothing else changed");
        }

        // What is not such a probe stays as it is.
        // (The low bits of a cookie hold the MSS index: off by one or two it may still
        // check out, so the wrong ACK number here is off by more.)
        untouched(&mut h, &ack(SEQ, cookie.wrapping_add(1 + (1 << 20)), &[]), "ACK number not a cookie");
        untouched(&mut h, &ack(SEQ.wrapping_sub(1), cookie.wrapping_add(1), &[]), "two lower");
        untouched(&mut h, &ack(SEQ, cookie.wrapping_add(1), b"GET /"), "carries data");
        untouched(&mut h, &ack(SEQ.wrapping_sub(4), cookie.wrapping_add(1), &[]), "four lower");
        let other = client_ack(src, 443, SEQ, cookie.wrapping_add(1), tsval, &[]);
        untouched(&mut h, &other, "port without cookies");
        // Without timestamps a probe cannot be told from the handshake ACK: left alone.
        let mut bare = ack(SEQ, cookie.wrapping_add(1), &[]);
        let l4 = l4_offset(&bare);
        bare[l4 + 20..l4 + 32].copy_from_slice(&[1; 12]);
        let c = tcp_checksum(&bare);
        bare[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        untouched(&mut h, &bare, "no timestamps");
    }
}
