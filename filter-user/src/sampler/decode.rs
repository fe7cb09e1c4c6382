//! What a sample's header bytes say: addresses, protocol, ports, TTL. A sample holds
//! only the frame's first bytes, so this reads what is there and stops where the copy
//! ends, rather than checking lengths against the whole packet as the data path does.

use std::net::IpAddr;

/// The fields of a sampled frame that the reports and `trace` show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// IP protocol number (for IPv6, after the extension headers read).
    pub proto: Option<u8>,
    pub ttl: Option<u8>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// TCP flags, when TCP.
    pub tcp_flags: Option<u8>,
    /// A non-first fragment (no transport header).
    pub later_fragment: bool,
}

const ETH_LEN: usize = 14;
const VLAN_TAGS: usize = 4;

impl Decoded {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `other` or `non-ip`.
    pub fn proto_name(&self) -> &'static str {
        match self.proto {
            Some(6) => "tcp",
            Some(17) => "udp",
            Some(1) => "icmp",
            Some(58) => "icmpv6",
            Some(_) => "other",
            None if self.src.is_some() => "other",
            None => "non-ip",
        }
    }

    /// `tcp/80`, `udp/53` for TCP and UDP with a visible header.
    pub fn dst_port_key(&self) -> Option<String> {
        let port = self.dst_port?;
        matches!(self.proto, Some(6 | 17)).then(|| format!("{}/{port}", self.proto_name()))
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Decodes the captured bytes of a frame.
pub fn decode(b: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let mut at = 12;
    let mut ethertype = be16(b, at);
    for _ in 0..VLAN_TAGS {
        if !matches!(ethertype, Some(0x8100 | 0x88a8)) {
            break;
        }
        at += 4;
        ethertype = be16(b, at);
    }
    let l3 = at + 2;
    let l4 = match ethertype {
        Some(0x0800) => ipv4(b, l3, &mut d),
        Some(0x86dd) => ipv6(b, l3, &mut d),
        _ => None,
    };
    if let Some(l4) = l4 {
        d.src_port = be16(b, l4).filter(|_| matches!(d.proto, Some(6 | 17)));
        d.dst_port = be16(b, l4 + 2).filter(|_| matches!(d.proto, Some(6 | 17)));
        if d.proto == Some(6) {
            d.tcp_flags = b.get(l4 + 13).copied();
        }
    }
    debug_assert!(ETH_LEN <= l3);
    d
}

/// Reads an IPv4 header at `at`; the transport header's offset if it follows.
fn ipv4(b: &[u8], at: usize, d: &mut Decoded) -> Option<usize> {
    let h = b.get(at..at + 20)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    d.ttl = Some(h[8]);
    d.proto = Some(h[9]);
    d.src = Some(IpAddr::from([h[12], h[13], h[14], h[15]]));
    d.dst = Some(IpAddr::from([h[16], h[17], h[18], h[19]]));
    let frag_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    if frag_offset != 0 {
        d.later_fragment = true;
        return None;
    }
    Some(at + usize::from(h[0] & 0x0f) * 4)
}

/// Reads an IPv6 header and the extension headers that fit; the transport header's
/// offset if it is reached.
fn ipv6(b: &[u8], at: usize, d: &mut Decoded) -> Option<usize> {
    let h = b.get(at..at + 40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    d.ttl = Some(h[7]);
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);
    d.src = Some(IpAddr::from(src));
    d.dst = Some(IpAddr::from(dst));
    let mut next = h[6];
    let mut off = at + 40;
    loop {
        match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let e = b.get(off..off + 2)?;
                next = e[0];
                off += (usize::from(e[1]) + 1) * 8;
            }
            // Fragment: 8 bytes; a later fragment has no transport header.
            44 => {
                let e = b.get(off..off + 4)?;
                next = e[0];
                if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 {
                    d.proto = Some(next);
                    d.later_fragment = true;
                    return None;
                }
                off += 8;
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                let e = b.get(off..off + 2)?;
                next = e[0];
                off += (usize::from(e[1]) + 2) * 4;
            }
            p => {
                d.proto = Some(p);
                return Some(off);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    #[test]
    fn ipv4_udp_behind_a_vlan_tag() {
        let mut f = eth(0x8100);
        f.extend_from_slice(&[0, 5, 0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 57, 17, 0, 0, 203, 0, 113, 9, 10, 0, 0, 1]);
        f.extend_from_slice(&[0x00, 0x35, 0x1f, 0x90, 0, 8, 0, 0]);
        let d = decode(&f);
        assert_eq!(d.src, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(d.dst, Some("10.0.0.1".parse().unwrap()));
        assert_eq!((d.proto_name(), d.ttl, d.src_port, d.dst_port), ("udp", Some(57), Some(53), Some(8080)));
        assert_eq!(d.dst_port_key().as_deref(), Some("udp/8080"));
    }

    #[test]
    fn ipv6_tcp_behind_extension_headers() {
        let mut f = eth(0x86dd);
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        ip[6] = 0; // hop-by-hop
        ip.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
        ip.extend_from_slice(&"2001:db8:1::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop -> dest opts
        f.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]); // dest opts -> tcp
        let mut tcp = vec![0u8; 20];
        tcp[..4].copy_from_slice(&[0xc3, 0x50, 0, 80]);
        tcp[13] = 0x02;
        f.extend_from_slice(&tcp);
        let d = decode(&f);
        assert_eq!(d.src, Some("2001:db8::7".parse().unwrap()));
        assert_eq!((d.proto_name(), d.ttl, d.dst_port, d.tcp_flags), ("tcp", Some(64), Some(80), Some(0x02)));
    }

    #[test]
    fn cut_short_and_not_ip() {
        let mut f = eth(0x0800);
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0]);
        assert_eq!(decode(&f), Decoded::default());
        let arp = eth(0x0806);
        assert_eq!(decode(&arp).proto_name(), "non-ip");
        let mut frag = eth(0x0800);
        frag.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 10, 64, 17, 0, 0, 192, 0, 2, 1, 10, 0, 0, 1]);
        let d = decode(&frag);
        assert!(d.later_fragment && d.src_port.is_none());
    }
}
