//! Frame parsing, written once against [`PacketView`] so that the host tests and the
//! XDP program run the same code: the eBPF side implements the view with
//! bounds-checked reads between `data` and `data_end`, the host side over a slice.

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_MIN_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// VLAN tags walked before giving up. A frame with more is [`Frame::TooDeep`] and
/// dropped: the kernel strips priority tags (VLAN ID 0) one after another and can
/// deliver what is behind them, so a stack the filter cannot see through is one it
/// cannot check.
pub const MAX_VLAN_TAGS: usize = 2;

/// Bounds-checked access to a frame.
pub trait PacketView {
    /// Length of the whole frame in bytes.
    fn len(&self) -> usize;

    /// `N` bytes at `offset`, or `None` if they are not all inside the frame.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A source address as the lists match it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Source {
    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        matches!(self, Source::V6(_))
    }
}

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
/// IPv4's version 4 and a 20-byte header (no options), in one byte.
pub const IPV4_PLAIN_VIHL: u8 = 0x45;
/// IPv4's More-Fragments flag and fragment offset: non-zero in any fragment.
pub const IPV4_FRAG_MASK: u16 = 0x3fff;
/// IPv4's fragment offset alone: non-zero in every fragment but the first.
pub const IPV4_FRAG_OFFSET: u16 = 0x1fff;
/// The fragment offset in an IPv6 Fragment header's second 16 bits.
const IPV6_FRAG_OFFSET: u16 = 0xfff8;
/// Bytes of a TCP header up to and including its flags.
const TCP_FLAGS_END: usize = 14;
const UDP_HLEN: usize = 8;
const ICMP_MIN: usize = 4;

/// IPv6 extension headers followed before giving up; behind a longer chain the
/// transport header is [`L4::Hidden`] (the source was still read from the fixed header).
pub const MAX_EXT_HEADERS: usize = 6;
const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_AUTH: u8 = 51;
const NEXT_DEST_OPTS: u8 = 60;

/// What of the transport header is visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// Its first four bytes: ports for TCP and UDP, type and code for ICMP.
    Head([u8; 4]),
    /// A fragment after the first: no transport header at all.
    LaterFragment,
    /// A protocol floodgate does not look into (or an ESP/no-next-header payload).
    None,
    /// Behind more IPv6 extension headers than the walk follows: the source is known,
    /// the transport header (and even the final protocol) is not.
    Hidden,
    /// The transport header (or an extension header before it) is cut short by the
    /// IP payload length or the frame: the stack drops such packets.
    Truncated,
}

/// A well-formed IP packet, as far as the filter needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: Source,
    /// TCP flags when this is TCP with its header visible (not a later fragment), else 0.
    pub tcp_flags: u8,
    /// The transport protocol (for IPv6: behind any extension headers).
    pub proto: u8,
    pub l4: L4,
}

impl Packet {
    /// A connection request: SYN set, ACK clear.
    #[inline(always)]
    pub fn is_syn(&self) -> bool {
        self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }
}

/// A [`Packet`] as plain, fully initialised bytes: the form in which the XDP entry
/// hands it to the decision program through a per-CPU map (an enum copied as is
/// would carry uninitialised padding, which the verifier refuses to store).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketRecord {
    pub addr: [u8; 16],
    pub head: [u8; 4],
    pub v6: u8,
    pub tcp_flags: u8,
    pub proto: u8,
    /// 0 Head, 1 LaterFragment, 2 None, 3 Hidden, 4 Truncated.
    pub l4: u8,
    /// Written by the decision, not the entry: the reason a check in observe mode
    /// would have dropped the packet for, plus one (0: none). Kept in this map value
    /// rather than on the stack so that the verifier does not walk the decision's
    /// paths once per possible note.
    pub would_drop: u32,
    /// The frame's length, for the would-drop counters (set by the entry).
    pub frame_len: u32,
}

impl Packet {
    #[inline(always)]
    pub fn record(&self) -> PacketRecord {
        let mut r = PacketRecord { tcp_flags: self.tcp_flags, proto: self.proto, ..PacketRecord::default() };
        match self.src {
            Source::V4(a) => r.addr[..4].copy_from_slice(&a),
            Source::V6(a) => {
                r.addr = a;
                r.v6 = 1;
            }
        }
        r.l4 = match self.l4 {
            L4::Head(h) => {
                r.head = h;
                0
            }
            L4::LaterFragment => 1,
            L4::None => 2,
            L4::Hidden => 3,
            L4::Truncated => 4,
        };
        r
    }
}

impl PacketRecord {
    #[inline(always)]
    pub fn packet(&self) -> Packet {
        let src = if self.v6 != 0 {
            Source::V6(self.addr)
        } else {
            Source::V4([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
        };
        let l4 = match self.l4 {
            0 => L4::Head(self.head),
            1 => L4::LaterFragment,
            2 => L4::None,
            3 => L4::Hidden,
            // Never written; the most cautious reading.
            _ => L4::Truncated,
        };
        Packet { src, tcp_flags: self.tcp_flags, proto: self.proto, l4 }
    }
}

/// What parsing found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A well-formed IPv4 or IPv6 packet.
    Ip(Packet),
    /// Not IP.
    NonIp,
    /// Claims to be IP (or is too short to be Ethernet) but its IP header does not
    /// fit or is inconsistent: the stack drops it, and its source is not trusted.
    Malformed,
    /// More VLAN tags than [`MAX_VLAN_TAGS`]: the IP header, if any, is out of reach.
    TooDeep,
}

impl PacketView for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses Ethernet, up to [`MAX_VLAN_TAGS`] 802.1Q/802.1ad tags, and the IPv4 or IPv6
/// header, checking what the stack would check before trusting the source address.
#[inline(always)]
pub fn parse<V: PacketView + ?Sized>(v: &V) -> Frame {
    let Some(eth) = v.bytes::<2>(12) else {
        return Frame::Malformed;
    };
    let mut proto = be16(eth);
    let mut l3 = ETH_HLEN;
    // Unrolled by the compiler: a constant bound keeps the verifier happy.
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        // The inner ethertype sits in the last two bytes of the tag.
        let Some(inner) = v.bytes::<2>(l3 + 2) else {
            return Frame::Malformed;
        };
        proto = be16(inner);
        l3 += VLAN_HLEN;
    }
    match proto {
        ETH_P_IP => parse_ipv4(v, l3),
        ETH_P_IPV6 => parse_ipv6(v, l3),
        ETH_P_8021Q | ETH_P_8021AD => Frame::TooDeep,
        _ => Frame::NonIp,
    }
}

/// The transport header of `proto` at `l4`, with `room` bytes of IP payload left:
/// its first four bytes and the TCP flags. A TCP, UDP or ICMP header that does not
/// fit is [`L4::Truncated`].
#[inline(always)]
fn transport<V: PacketView + ?Sized>(v: &V, src: Source, proto: u8, l4: usize, room: usize) -> Frame {
    let need = match proto {
        IPPROTO_TCP => TCP_FLAGS_END,
        IPPROTO_UDP => UDP_HLEN,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => ICMP_MIN,
        _ => return Frame::Ip(Packet { src, tcp_flags: 0, proto, l4: L4::None }),
    };
    let truncated = Frame::Ip(Packet { src, tcp_flags: 0, proto, l4: L4::Truncated });
    if room < need {
        return truncated;
    }
    let Some(head) = v.bytes::<4>(l4) else { return truncated };
    let tcp_flags = if proto == IPPROTO_TCP {
        let Some(f) = v.bytes::<1>(l4 + 13) else { return truncated };
        f[0]
    } else {
        0
    };
    Frame::Ip(Packet { src, tcp_flags, proto, l4: L4::Head(head) })
}

#[inline(always)]
fn parse_ipv4<V: PacketView + ?Sized>(v: &V, l3: usize) -> Frame {
    let Some(h) = v.bytes::<IPV4_MIN_HLEN>(l3) else {
        return Frame::Malformed;
    };
    if h[0] >> 4 != 4 {
        return Frame::Malformed;
    }
    let hlen = ((h[0] & 0x0f) as usize) * 4;
    let total = be16([h[2], h[3]]) as usize;
    let avail = v.len() - l3;
    if hlen < IPV4_MIN_HLEN || total < hlen || total > avail {
        return Frame::Malformed;
    }
    let src = Source::V4([h[12], h[13], h[14], h[15]]);
    let proto = h[9];
    // Only a first fragment (offset 0) carries the transport header; options are
    // skipped by IHL.
    if (be16([h[6], h[7]]) & IPV4_FRAG_OFFSET) != 0 {
        return Frame::Ip(Packet { src, tcp_flags: 0, proto, l4: L4::LaterFragment });
    }
    transport(v, src, proto, l3 + hlen, total - hlen)
}

#[inline(always)]
fn parse_ipv6<V: PacketView + ?Sized>(v: &V, l3: usize) -> Frame {
    let Some(first) = v.bytes::<1>(l3) else {
        return Frame::Malformed;
    };
    let Some(lens) = v.bytes::<2>(l3 + 4) else {
        return Frame::Malformed;
    };
    let Some(src) = v.bytes::<16>(l3 + 8) else {
        return Frame::Malformed;
    };
    // The fixed header must be whole even though the source ends at byte 24.
    if v.len() < l3 + IPV6_HLEN || first[0] >> 4 != 6 {
        return Frame::Malformed;
    }
    // A payload length of 0 announces a jumbogram (hop-by-hop option); otherwise the
    // payload must fit in what was received.
    let payload = be16(lens) as usize;
    if payload > v.len() - l3 - IPV6_HLEN {
        return Frame::Malformed;
    }
    let Some(next) = v.bytes::<1>(l3 + 6) else {
        return Frame::Malformed;
    };
    let src = Source::V6(src);
    let (mut proto, mut off) = (next[0], 0usize);
    // From here on the source is trusted; what cannot be walked is Truncated/Hidden.
    let truncated = |proto| Frame::Ip(Packet { src, tcp_flags: 0, proto, l4: L4::Truncated });
    // Walk the extension headers (offsets relative to the end of the fixed header).
    // Constant bound: the loop unrolls and the verifier sees every path.
    for _ in 0..MAX_EXT_HEADERS {
        let len = match proto {
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS | NEXT_AUTH | NEXT_FRAGMENT => {
                let Some(h) = v.bytes::<4>(l3 + IPV6_HLEN + off) else {
                    return truncated(proto);
                };
                if proto == NEXT_FRAGMENT && (be16([h[2], h[3]]) & IPV6_FRAG_OFFSET) != 0 {
                    return Frame::Ip(Packet { src, tcp_flags: 0, proto: h[0], l4: L4::LaterFragment });
                }
                let len = match proto {
                    NEXT_FRAGMENT => 8,
                    NEXT_AUTH => (h[1] as usize + 2) * 4,
                    _ => (h[1] as usize + 1) * 8,
                };
                proto = h[0];
                len
            }
            _ => break,
        };
        off += len;
        if off > payload {
            return truncated(proto);
        }
    }
    if matches!(proto, NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS | NEXT_AUTH | NEXT_FRAGMENT) {
        // Longer chain than we follow: the lists still judge the source.
        return Frame::Ip(Packet { src, tcp_flags: 0, proto, l4: L4::Hidden });
    }
    transport(v, src, proto, l3 + IPV6_HLEN + off, payload - off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eth(proto: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&proto.to_be_bytes());
        f
    }

    fn ipv4(src: [u8; 4], ihl: u8, payload: usize) -> Vec<u8> {
        let hlen = ihl as usize * 4;
        let total = (hlen.max(20) + payload) as u16;
        let mut h = vec![0x40 | ihl, 0];
        h.extend_from_slice(&total.to_be_bytes());
        // Protocol 253 (experimental): no transport header to check.
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, 253, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&[198, 51, 100, 1]);
        h.resize(hlen.max(20), 1); // options: NOPs
        h.resize(hlen.max(20) + payload, 0xab);
        h
    }

    fn ipv6(src: [u8; 16], payload: usize) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload as u16).to_be_bytes());
        h.extend_from_slice(&[253, 64]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.resize(IPV6_HLEN + payload, 0xcd);
        h
    }

    fn frame(proto: u16, tags: &[u16], l3: &[u8]) -> Vec<u8> {
        // Outer ethertype first, then each tag's inner ethertype.
        let mut protos: Vec<u16> = tags.to_vec();
        protos.push(proto);
        let mut f = eth(protos[0]);
        for p in &protos[1..] {
            f.extend_from_slice(&[0x00, 0x64]); // TCI: VLAN 100
            f.extend_from_slice(&p.to_be_bytes());
        }
        f.extend_from_slice(l3);
        f
    }

    fn ip4(a: [u8; 4]) -> Frame {
        Frame::Ip(Packet { src: Source::V4(a), tcp_flags: 0, proto: 253, l4: L4::None })
    }
    fn ip6(a: [u8; 16]) -> Frame {
        Frame::Ip(Packet { src: Source::V6(a), tcp_flags: 0, proto: 253, l4: L4::None })
    }

    const SRC4: [u8; 4] = [203, 0, 113, 9];
    const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

    #[test]
    fn ipv4_with_and_without_vlan_tags() {
        for tags in [&[][..], &[ETH_P_8021Q], &[ETH_P_8021AD, ETH_P_8021Q]] {
            let f = frame(ETH_P_IP, tags, &ipv4(SRC4, 5, 8));
            assert_eq!(parse(&f[..]), ip4(SRC4), "tags {tags:?}");
        }
    }

    #[test]
    fn ipv6_with_and_without_vlan_tags() {
        for tags in [&[][..], &[ETH_P_8021AD], &[ETH_P_8021AD, ETH_P_8021Q]] {
            let f = frame(ETH_P_IPV6, tags, &ipv6(SRC6, 8));
            assert_eq!(parse(&f[..]), ip6(SRC6), "tags {tags:?}");
        }
    }

    #[test]
    fn ipv4_options_are_accepted() {
        let f = frame(ETH_P_IP, &[], &ipv4(SRC4, 15, 4));
        assert_eq!(parse(&f[..]), ip4(SRC4));
    }

    #[test]
    fn more_vlan_tags_than_walked_are_too_deep() {
        for tags in [&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q][..], &[ETH_P_8021Q; 5]] {
            let f = frame(ETH_P_IP, tags, &ipv4(SRC4, 5, 8));
            assert_eq!(parse(&f[..]), Frame::TooDeep, "{tags:?}");
            let f = frame(0x0806, tags, &[0u8; 28]);
            assert_eq!(parse(&f[..]), Frame::TooDeep, "ARP behind {tags:?}");
        }
    }

    #[test]
    fn non_ip_ethertypes() {
        for p in [0x0806u16, 0x88cc, 0x8847] {
            assert_eq!(parse(&frame(p, &[], &[0u8; 46])[..]), Frame::NonIp);
        }
    }

    #[test]
    fn bad_ipv4_headers_are_malformed() {
        let mut bad_version = ipv4(SRC4, 5, 0);
        bad_version[0] = 0x65;
        let mut total_too_big = ipv4(SRC4, 5, 0);
        total_too_big[3] = 21;
        let mut total_below_header = ipv4(SRC4, 6, 0);
        total_below_header[3] = 20;
        for (name, l3) in [
            ("ihl 4", ipv4(SRC4, 4, 8)),
            ("ihl 0", ipv4(SRC4, 0, 8)),
            ("version", bad_version),
            ("total length beyond frame", total_too_big),
            ("total length below ihl", total_below_header),
            ("options beyond frame", ipv4(SRC4, 15, 0)[..40].to_vec()),
        ] {
            assert_eq!(parse(&frame(ETH_P_IP, &[], &l3)[..]), Frame::Malformed, "{name}");
        }
    }

    #[test]
    fn bad_ipv6_headers_are_malformed() {
        let mut bad_version = ipv6(SRC6, 0);
        bad_version[0] = 0x40;
        let mut payload_too_big = ipv6(SRC6, 4);
        payload_too_big[5] = 5;
        for (name, l3) in [("version", bad_version), ("payload", payload_too_big)] {
            assert_eq!(parse(&frame(ETH_P_IPV6, &[], &l3)[..]), Frame::Malformed, "{name}");
        }
    }

    fn tcp4(flags: u8, frag: u16, tcp_len: usize) -> Vec<u8> {
        let mut l3 = ipv4(SRC4, 5, tcp_len);
        l3[9] = IPPROTO_TCP;
        l3[6..8].copy_from_slice(&frag.to_be_bytes());
        if tcp_len > 13 {
            l3[20 + 13] = flags;
        }
        frame(ETH_P_IP, &[], &l3)
    }

    fn tcp6(flags: u8, tcp_len: usize) -> Vec<u8> {
        let mut l3 = ipv6(SRC6, tcp_len);
        l3[6] = IPPROTO_TCP;
        if tcp_len > 13 {
            l3[40 + 13] = flags;
        }
        frame(ETH_P_IPV6, &[], &l3)
    }

    #[test]
    fn tcp_flags_and_syn() {
        for (flags, syn) in
            [(TCP_SYN, true), (TCP_SYN | TCP_ACK, false), (TCP_ACK, false), (TCP_SYN | 0x08, true)]
        {
            for f in [tcp4(flags, 0, 20), tcp6(flags, 20)] {
                match parse(&f[..]) {
                    Frame::Ip(p) => {
                        assert_eq!(p.tcp_flags, flags);
                        assert_eq!(p.is_syn(), syn, "flags {flags:#x}");
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn later_fragments_have_no_tcp_header() {
        // Offset 185 (x8 bytes): the bytes where flags would be are payload.
        let f = tcp4(TCP_SYN, 185, 20);
        let later = Packet { src: Source::V4(SRC4), tcp_flags: 0, proto: IPPROTO_TCP, l4: L4::LaterFragment };
        assert_eq!(parse(&f[..]), Frame::Ip(later));
        // More-fragments set on the first fragment: its header is there.
        let f = tcp4(TCP_SYN, 0x2000, 20);
        assert!(matches!(parse(&f[..]), Frame::Ip(p) if p.is_syn()));
    }

    fn truncated(src: Source, proto: u8) -> Frame {
        Frame::Ip(Packet { src, tcp_flags: 0, proto, l4: L4::Truncated })
    }

    #[test]
    fn tcp_header_cut_before_its_flags_is_truncated() {
        assert_eq!(parse(&tcp4(TCP_SYN, 0, 13)[..]), truncated(Source::V4(SRC4), IPPROTO_TCP));
        assert_eq!(parse(&tcp6(TCP_SYN, 13)[..]), truncated(Source::V6(SRC6), IPPROTO_TCP));
        assert!(matches!(parse(&tcp4(TCP_SYN, 0, 14)[..]), Frame::Ip(p) if p.is_syn()));
    }

    #[test]
    fn trailing_padding_is_fine() {
        // Ethernet pads short packets to 60 bytes: total length < frame is legal.
        let mut f = frame(ETH_P_IP, &[], &ipv4(SRC4, 5, 0));
        f.resize(60, 0);
        assert_eq!(parse(&f[..]), ip4(SRC4));
    }

    #[test]
    fn every_truncation_is_malformed() {
        let cases = [
            frame(ETH_P_IP, &[], &ipv4(SRC4, 5, 0)),
            frame(ETH_P_IP, &[ETH_P_8021AD, ETH_P_8021Q], &ipv4(SRC4, 6, 0)),
            frame(ETH_P_IPV6, &[], &ipv6(SRC6, 0)),
            frame(ETH_P_IPV6, &[ETH_P_8021Q], &ipv6(SRC6, 0)),
        ];
        for full in cases {
            assert!(matches!(parse(&full[..]), Frame::Ip(_)));
            for cut in 0..full.len() {
                assert_eq!(parse(&full[..cut]), Frame::Malformed, "cut at {cut} of {}", full.len());
            }
        }
    }

    /// A UDP datagram behind the extension headers `exts` (each `(type, length in
    /// bytes)`), from port 53 to 5353.
    fn udp6_behind(exts: &[(u8, usize)], frag_offset: u16) -> Vec<u8> {
        let mut payload = Vec::new();
        let mut types: Vec<u8> = exts.iter().map(|e| e.0).collect();
        types.push(IPPROTO_UDP);
        for (i, (ty, len)) in exts.iter().enumerate() {
            let mut h = vec![0u8; *len];
            h[0] = types[i + 1];
            h[1] = match *ty {
                NEXT_FRAGMENT => 0,
                NEXT_AUTH => (*len / 4 - 2) as u8,
                _ => (*len / 8 - 1) as u8,
            };
            if *ty == NEXT_FRAGMENT {
                h[2..4].copy_from_slice(&(frag_offset << 3).to_be_bytes());
            }
            payload.extend_from_slice(&h);
        }
        payload.extend_from_slice(&[0, 53, 0x14, 0xe9, 0, 8, 0, 0]);
        let mut l3 = ipv6(SRC6, payload.len());
        l3[6] = types[0];
        l3[IPV6_HLEN..].copy_from_slice(&payload);
        frame(ETH_P_IPV6, &[], &l3)
    }

    #[test]
    fn ipv6_extension_headers_are_followed() {
        let udp = L4::Head([0, 53, 0x14, 0xe9]);
        for exts in [
            &[][..],
            &[(NEXT_HOP_BY_HOP, 8)],
            &[(NEXT_ROUTING, 24)],
            &[(NEXT_DEST_OPTS, 16)],
            &[(NEXT_AUTH, 24)],
            &[(NEXT_FRAGMENT, 8)],
            &[
                (NEXT_HOP_BY_HOP, 8),
                (NEXT_DEST_OPTS, 8),
                (NEXT_ROUTING, 8),
                (NEXT_FRAGMENT, 8),
                (NEXT_AUTH, 12),
                (NEXT_DEST_OPTS, 8),
            ],
        ] {
            let f = udp6_behind(exts, 0);
            let want = Packet { src: Source::V6(SRC6), tcp_flags: 0, proto: IPPROTO_UDP, l4: udp };
            assert_eq!(parse(&f[..]), Frame::Ip(want), "{exts:?}");
        }
        // Longer chains than the walk: the source is still known, the ports are not.
        for n in [MAX_EXT_HEADERS + 1, 20] {
            let long = vec![(NEXT_DEST_OPTS, 8); n];
            let hidden =
                Packet { src: Source::V6(SRC6), tcp_flags: 0, proto: NEXT_DEST_OPTS, l4: L4::Hidden };
            assert_eq!(parse(&udp6_behind(&long, 0)[..]), Frame::Ip(hidden), "{n} headers");
        }
        // A later fragment has no ports; its protocol is the fragment header's next.
        let later = parse(&udp6_behind(&[(NEXT_FRAGMENT, 8)], 100)[..]);
        let want = Packet { src: Source::V6(SRC6), tcp_flags: 0, proto: IPPROTO_UDP, l4: L4::LaterFragment };
        assert_eq!(later, Frame::Ip(want));
        // A header claiming more than the payload holds.
        let mut f = udp6_behind(&[(NEXT_DEST_OPTS, 8)], 0);
        f[ETH_HLEN + IPV6_HLEN + 1] = 40;
        assert_eq!(parse(&f[..]), truncated(Source::V6(SRC6), IPPROTO_UDP));
    }

    #[test]
    fn transport_heads_and_short_transport_headers() {
        let mut l3 = ipv4(SRC4, 6, 8);
        l3[9] = IPPROTO_UDP;
        l3[24..28].copy_from_slice(&[0x2b, 0xcb, 0, 80]);
        let f = frame(ETH_P_IP, &[], &l3);
        let want = Packet {
            src: Source::V4(SRC4),
            tcp_flags: 0,
            proto: IPPROTO_UDP,
            l4: L4::Head([0x2b, 0xcb, 0, 80]),
        };
        assert_eq!(parse(&f[..]), Frame::Ip(want), "ports behind IPv4 options");
        for (proto, min) in [(IPPROTO_UDP, 8), (IPPROTO_ICMP, 4), (IPPROTO_TCP, 14)] {
            let mut ok = ipv4(SRC4, 5, min);
            ok[9] = proto;
            assert!(matches!(parse(&frame(ETH_P_IP, &[], &ok)[..]), Frame::Ip(_)), "{proto}");
            let mut short = ipv4(SRC4, 5, min - 1);
            short[9] = proto;
            assert_eq!(
                parse(&frame(ETH_P_IP, &[], &short)[..]),
                truncated(Source::V4(SRC4), proto),
                "{proto}"
            );
        }
    }

    proptest! {
        // Whatever the bytes, parsing never panics, and an IP verdict is only given
        // when the bytes really hold the IP header it names.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Frame::Ip(Packet { src: Source::V4(a), .. }) = parse(&bytes[..]) {
                prop_assert!(bytes.len() >= ETH_HLEN + IPV4_MIN_HLEN);
                prop_assert!(bytes.windows(4).any(|w| w == a));
            }
        }

        #[test]
        fn ipv4_payload_lengths(payload in 0usize..64, pad in 0usize..16, ihl in 5u8..=15) {
            let mut f = frame(ETH_P_IP, &[], &ipv4(SRC4, ihl, payload));
            f.resize(f.len() + pad, 0);
            prop_assert_eq!(parse(&f[..]), ip4(SRC4));
        }
    }
}
