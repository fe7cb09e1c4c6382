//! Encodings that once smuggled a blocklisted source past the lists, sent live over
//! a veth pair to UDP sockets in the server namespace, in native and skb mode: three
//! priority tags (VLAN ID 0, which the kernel strips one by one) and IPv6 behind long
//! destination-options chains (which the stack walks to the end).

use integration_tests::{
    frames::{fix_ipv4_checksum, l3_offset, with_ipv4_options},
    live::{Lab, packets},
};

const PORT: u16 = 5003;

/// `frame` with `n` priority tags (802.1Q, VLAN ID 0) before its ethertype.
fn priority_tagged(frame: &[u8], tpids: &[u16]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for t in tpids {
        f.extend_from_slice(&t.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// An IPv6 frame with `n` destination-options headers (PadN) before its UDP header.
/// The UDP checksum does not cover extension headers, so it stays valid.
fn behind_dest_opts(frame: &[u8], n: usize) -> Vec<u8> {
    let l3 = 14;
    let mut f = frame[..l3 + 40].to_vec();
    let udp = &frame[l3 + 40..];
    let payload = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]) as usize + 8 * n;
    f[l3 + 4..l3 + 6].copy_from_slice(&(payload as u16).to_be_bytes());
    let first = f[l3 + 6];
    f[l3 + 6] = 60;
    for i in 0..n {
        let next = if i + 1 == n { first } else { 60 };
        f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    f.extend_from_slice(udp);
    f
}

#[test]
fn deep_vlan_stacks_and_long_extension_chains_do_not_smuggle_a_listed_source() {
    for (tag, mode) in [("bpn", "native"), ("bps", "skb")] {
        let lab = Lab::new(tag);
        lab.attach(mode);
        lab.ok(&["blocklist", "add", "-i", &lab.srv_if, "203.0.113.0/24", "2001:db8:bad::/48"]);
        let sink = lab.sink(PORT);

        // Control: the stack does deliver both encodings (a clean source behind a long
        // chain reaches the socket), so a zero below means the filter dropped them.
        let clean6 = behind_dest_opts(&lab.frame("2001:db8:feed::7", PORT), 7);
        let before = lab.stats();
        lab.send(std::slice::from_ref(&clean6), 50, 5_000);
        sink.settle();
        assert_eq!(sink.count("2001:db8:feed::7"), 50, "{mode}: a clean source behind 7 headers");
        let after = lab.stats();
        assert_eq!(packets(&after, "l4_unseen") - packets(&before, "l4_unseen"), 50, "{mode}");

        let v4 = lab.frame("203.0.113.7", PORT);
        let v6 = lab.frame("2001:db8:bad::7", PORT);
        let smuggled = [
            priority_tagged(&v4, &[0x8100, 0x8100, 0x8100]),
            priority_tagged(&v4, &[0x88a8, 0x8100, 0x8100]),
            priority_tagged(&lab.frame("192.0.2.7", PORT), &[0x8100, 0x8100, 0x8100]),
            behind_dest_opts(&v6, 7),
            behind_dest_opts(&v6, 20),
        ];
        let before = lab.stats();
        lab.send(&smuggled, 50, 10_000);
        sink.settle();
        assert_eq!(sink.count("203.0.113.7"), 0, "{mode}: listed v4 behind three priority tags");
        assert_eq!(sink.count("192.0.2.7"), 0, "{mode}: v4 behind three tags cannot be checked");
        assert_eq!(sink.count("2001:db8:bad::7"), 0, "{mode}: listed v6 behind long chains");
        let after = lab.stats();
        let delta = |k: &str| packets(&after, k) - packets(&before, k);
        assert_eq!(delta("dropped.unchecked"), 150, "{mode}: the tagged frames");
        assert_eq!(delta("dropped.blocklist"), 100, "{mode}: the chained frames, on their source");
        assert_eq!(delta("non_ip"), 0, "{mode}");
        assert_eq!(delta("malformed"), 0, "{mode}");

        // With a rule in force the clean source's ports would matter: dropped unseen.
        lab.ok(&["rule", "preset", "reflection", "-i", &lab.srv_if]);
        let before = lab.stats();
        lab.send(std::slice::from_ref(&clean6), 50, 5_000);
        sink.settle();
        assert_eq!(sink.count("2001:db8:feed::7"), 50, "{mode}: nothing more arrived");
        let after = lab.stats();
        assert_eq!(packets(&after, "dropped.unchecked") - packets(&before, "dropped.unchecked"), 50);
    }
}

/// The IPv4 datagram in `f` split into two fragments after 16 bytes of payload.
fn v4_fragments(f: &[u8], l3: usize) -> Vec<Vec<u8>> {
    let payload = &f[l3 + 20..];
    let piece = |data: &[u8], offset: u16, more: bool| {
        let mut p = f[..l3 + 20].to_vec();
        p.extend_from_slice(data);
        let total = (20 + data.len()) as u16;
        p[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        p[l3 + 4..l3 + 6].copy_from_slice(&0x1234u16.to_be_bytes());
        let flags = (offset / 8) | if more { 0x2000 } else { 0 };
        p[l3 + 6..l3 + 8].copy_from_slice(&flags.to_be_bytes());
        fix_ipv4_checksum(&mut p, l3);
        p
    };
    vec![piece(&payload[..16], 0, true), piece(&payload[16..], 16, false)]
}

/// IPv6 extension headers `exts` (0 hop-by-hop, 60 destination options, 44 an atomic
/// fragment header) inserted before the transport header.
fn with_v6_chain(f: &[u8], l3: usize, exts: &[u8]) -> Vec<u8> {
    let mut out = f[..l3 + 40].to_vec();
    let last = out[l3 + 6];
    if let Some(first) = exts.first() {
        out[l3 + 6] = *first;
    }
    for (i, ty) in exts.iter().enumerate() {
        let next = exts.get(i + 1).copied().unwrap_or(last);
        match ty {
            44 => out.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0x56, 0x78]),
            _ => out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
        }
    }
    out.extend_from_slice(&f[l3 + 40..]);
    let payload = (out.len() - l3 - 40) as u16;
    out[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
    out
}

/// The IPv6 packet in `f` split into two fragments after 16 bytes of UDP.
fn v6_fragments(f: &[u8], l3: usize) -> Vec<Vec<u8>> {
    let udp = &f[l3 + 40..];
    let piece = |data: &[u8], offset: u16, more: bool| {
        let mut p = f[..l3 + 40].to_vec();
        p[l3 + 6] = 44;
        let off = offset | u16::from(more);
        p.extend_from_slice(&[17, 0]);
        p.extend_from_slice(&off.to_be_bytes());
        p.extend_from_slice(&0x9abc_def0u32.to_be_bytes());
        p.extend_from_slice(data);
        let payload = (8 + data.len()) as u16;
        p[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
        p
    };
    vec![piece(&udp[..16], 0, true), piece(&udp[16..], 16, false)]
}

/// One way of encoding a datagram, for the address families in `families` (false:
/// IPv4, true: IPv6); `n` picks a variant (tag count, option length, chain length).
struct Encoding {
    name: &'static str,
    families: &'static [bool],
    make: Make,
}

type Make = fn(&Lab, &str, usize) -> Vec<Vec<u8>>;

const BOTH: &[bool] = &[false, true];

/// A UDP datagram from `src` to the sink behind `tags` priority tags (the outermost
/// 802.1ad when `qinq`); returns the frame and its IP header's offset.
fn tagged(lab: &Lab, src: &str, tags: usize, qinq: bool) -> (Vec<u8>, usize) {
    let mut spec = lab.spec(src.parse().unwrap(), PORT);
    spec.payload = vec![0x5a; 24];
    // VLAN ID 0: priority tags, which the kernel strips without a VLAN device.
    spec.vlans = (0..tags).map(|i| (if qinq && i == 0 { 0x88a8 } else { 0x8100 }, 0)).collect();
    (floodgate_lab::build(&spec), l3_offset(tags))
}

/// The datagram in two fragments, behind 0-2 priority tags.
fn fragmented(lab: &Lab, src: &str, n: usize) -> Vec<Vec<u8>> {
    let (f, l3) = tagged(lab, src, n % 3, false);
    if src.contains(':') { v6_fragments(&f, l3) } else { v4_fragments(&f, l3) }
}

/// `len` extension headers: hop-by-hop first, an atomic fragment header second (for
/// odd `n`), destination options after.
fn chain(lab: &Lab, src: &str, n: usize, tags: usize, len: usize) -> Vec<Vec<u8>> {
    let (f, l3) = tagged(lab, src, tags, false);
    let mut exts = vec![0u8];
    if n % 2 == 1 {
        exts.push(44);
    }
    exts.resize(len.max(exts.len()), 60);
    exts.truncate(len);
    vec![with_v6_chain(&f, l3, &exts)]
}

const ENCODINGS: [Encoding; 7] = [
    Encoding { name: "plain", families: BOTH, make: |l, s, _| vec![tagged(l, s, 0, false).0] },
    Encoding {
        name: "1-2 priority tags",
        families: BOTH,
        make: |l, s, n| vec![tagged(l, s, 1 + n % 2, n % 3 == 0).0],
    },
    Encoding {
        name: "3-5 priority tags",
        families: BOTH,
        make: |l, s, n| vec![tagged(l, s, 3 + n % 3, n % 2 == 0).0],
    },
    Encoding { name: "fragments", families: BOTH, make: fragmented },
    Encoding {
        name: "options",
        families: &[false],
        make: |l, s, n| {
            let (f, l3) = tagged(l, s, 0, false);
            vec![with_ipv4_options(&f, l3, 1 + n % 10)]
        },
    },
    Encoding {
        name: "1-6 extension headers",
        families: &[true],
        make: |l, s, n| chain(l, s, n, 0, 1 + n % 6),
    },
    Encoding {
        name: "7-20 extension headers",
        families: &[true],
        make: |l, s, n| chain(l, s, n, n % 3, 7 + n % 14),
    },
];

/// Each (encoding, family) with its own source address inside the listed ranges.
fn cases() -> Vec<(String, String, Make)> {
    let mut out = Vec::new();
    for (i, e) in ENCODINGS.iter().enumerate() {
        for &v6 in e.families {
            let (name, src) = if v6 {
                (format!("v6 {}", e.name), format!("2001:db8:bad::{:x}", 0x10 + i))
            } else {
                (format!("v4 {}", e.name), format!("203.0.113.{}", 10 + i))
            };
            out.push((name, src, e.make));
        }
    }
    out
}

/// Every encoding, 24 variants each; the stack delivers each of them when nothing
/// filters, and delivers none once the sources are blocklisted, in native and skb
/// mode, however deep the tags or long the chains.
#[test]
fn every_encoding_of_a_listed_source_is_dropped_though_the_stack_would_deliver_it() {
    const VARIANTS: usize = 24;
    let lab = Lab::new("bpe");
    let sink = lab.sink(PORT);
    let cases = cases();
    let mut frames = Vec::new();
    for (_, src, make) in &cases {
        for n in 0..VARIANTS {
            frames.extend(make(&lab, src, n));
        }
    }
    // Without a filter: what the stack delivers.
    lab.send(&frames, 1, 5_000);
    sink.settle();
    let mut report = String::new();
    for (name, src, _) in &cases {
        let got = sink.count(src);
        report.push_str(&format!("{name}: {got}/{VARIANTS}; "));
        // Otherwise the zero below would prove nothing.
        assert!(got > 0, "the stack delivered no '{name}' datagram even unfiltered: {report}");
    }
    eprintln!("unfiltered: {report}");
    let base: Vec<u64> = cases.iter().map(|(_, src, _)| sink.count(src)).collect();
    for mode in ["native", "skb"] {
        lab.attach(mode);
        lab.ok(&["blocklist", "add", "-i", &lab.srv_if, "203.0.113.0/24", "2001:db8:bad::/48"]);
        let before = lab.stats();
        lab.send(&frames, 1, 5_000);
        sink.settle();
        let after = lab.stats();
        for ((name, src, _), base) in cases.iter().zip(&base) {
            assert_eq!(sink.count(src) - base, 0, "{mode}: '{name}' from a listed source reached the socket");
        }
        let delta = |k: &str| packets(&after, k) - packets(&before, k);
        assert_eq!(
            delta("dropped.blocklist") + delta("dropped.unchecked"),
            frames.len() as u64,
            "{mode}: every frame dropped in the driver"
        );
        lab.ok(&["detach", "-i", &lab.srv_if]);
    }
}
