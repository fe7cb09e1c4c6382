//! Encodings that once smuggled a blocklisted source past the lists, sent live over
//! a veth pair to UDP sockets in the server namespace, in native and skb mode: three
//! priority tags (VLAN ID 0, which the kernel strips one by one) and IPv6 behind long
//! destination-options chains (which the stack walks to the end).

use integration_tests::live::{Lab, packets};

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
        lab.send(&[clean6.clone()], 50, 5_000);
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
        lab.send(&[clean6.clone()], 50, 5_000);
        sink.settle();
        assert_eq!(sink.count("2001:db8:feed::7"), 50, "{mode}: nothing more arrived");
        let after = lab.stats();
        assert_eq!(packets(&after, "dropped.unchecked") - packets(&before, "dropped.unchecked"), 50);
    }
}
