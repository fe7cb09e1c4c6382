//! Crafting Ethernet frames: UDP or TCP over IPv4 or IPv6, optionally VLAN-tagged,
//! with correct checksums (etherparse computes them) so the receiving stack accepts
//! them.

use std::net::IpAddr;

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv6Header, SingleVlanHeader, TcpHeader,
    TransportHeader, UdpHeader, VlanId, VlanPcp,
};

#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// VLAN tags, outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// Some(flags): a TCP segment (20-byte header, no options) instead of UDP.
    pub tcp_flags: Option<u8>,
    pub payload: Vec<u8>,
}

impl FrameSpec {
    pub fn udp(src: IpAddr, dst: IpAddr, dport: u16) -> Self {
        Self {
            src_mac: [0x02, 0, 0, 0, 0, 0x02],
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            vlans: Vec::new(),
            src,
            dst,
            sport: 40000,
            dport,
            tcp_flags: None,
            payload: vec![0u8; 18],
        }
    }

    /// A TCP segment with `flags` (e.g. 0x02 for a SYN) and no payload.
    pub fn tcp(src: IpAddr, dst: IpAddr, dport: u16, flags: u8) -> Self {
        Self { tcp_flags: Some(flags), payload: Vec::new(), ..Self::udp(src, dst, dport) }
    }
}

/// A TCP header with the flag bits of `flags` (FIN 0x01 ... CWR 0x80).
fn tcp_header(spec: &FrameSpec, flags: u8) -> TcpHeader {
    let mut h = TcpHeader::new(spec.sport, spec.dport, 0x1000_0000, 64240);
    let bit = |b: u8| flags & b != 0;
    (h.fin, h.syn, h.rst, h.psh) = (bit(0x01), bit(0x02), bit(0x04), bit(0x08));
    (h.ack, h.urg, h.ece, h.cwr) = (bit(0x10), bit(0x20), bit(0x40), bit(0x80));
    h
}

/// Builds the frame described by `spec`.
pub fn build(spec: &FrameSpec) -> Vec<u8> {
    let mut l4 = match spec.tcp_flags {
        None => TransportHeader::Udp(UdpHeader {
            source_port: spec.sport,
            destination_port: spec.dport,
            length: (UdpHeader::LEN + spec.payload.len()) as u16,
            checksum: 0,
        }),
        Some(flags) => TransportHeader::Tcp(tcp_header(spec, flags)),
    };
    let proto = if spec.tcp_flags.is_some() { IpNumber::TCP } else { IpNumber::UDP };
    let l4_len = (l4.header_len() + spec.payload.len()) as u16;
    let mut ip = Vec::with_capacity(Ipv6Header::LEN);
    let ip_type = match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(l4_len, 64, proto, s.octets(), d.octets()).expect("frame size");
            h.header_checksum = h.calc_header_checksum();
            l4.update_checksum_ipv4(&h, &spec.payload).expect("frame size");
            ip.extend_from_slice(&h.to_bytes());
            EtherType::IPV4
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = Ipv6Header {
                payload_length: l4_len,
                next_header: proto,
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
                ..Default::default()
            };
            l4.update_checksum_ipv6(&h, &spec.payload).expect("frame size");
            ip.extend_from_slice(&h.to_bytes());
            EtherType::IPV6
        }
        _ => panic!("source and destination must be of one family"),
    };

    let mut f = Vec::with_capacity(128);
    // Each header names the next: Ethernet the first tag's TPID, the last tag IP.
    let next: Vec<EtherType> = spec.vlans.iter().map(|(tpid, _)| EtherType(*tpid)).chain([ip_type]).collect();
    let eth = Ethernet2Header { source: spec.src_mac, destination: spec.dst_mac, ether_type: next[0] };
    f.extend_from_slice(&eth.to_bytes());
    for ((_, vid), ether_type) in spec.vlans.iter().zip(&next[1..]) {
        let vlan_id = VlanId::try_new(*vid).expect("VLAN id below 4096");
        let tag = SingleVlanHeader {
            pcp: VlanPcp::ZERO,
            drop_eligible_indicator: false,
            vlan_id,
            ether_type: *ether_type,
        };
        f.extend_from_slice(&tag.to_bytes());
    }
    f.extend_from_slice(&ip);
    l4.write(&mut f).expect("writing to a Vec");
    f.extend_from_slice(&spec.payload);
    f
}

#[cfg(test)]
mod tests {
    use filter_common::synproxy::{MAX_TCP_HLEN, csum_add, csum_fold, ipv4_csum, pseudo_v4};

    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let spec = FrameSpec::udp("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap(), 9);
        let f = build(&spec);
        assert_eq!(ipv4_csum(f[14..34].try_into().unwrap()), 0);
        assert_eq!(
            filter_common::parse::parse(&f[..]),
            filter_common::Frame::Ip(filter_common::Packet {
                src: filter_common::Source::V4([192, 0, 2, 1]),
                tcp_flags: 0,
                proto: 17,
                l4: filter_common::parse::L4::Head([0x9c, 0x40, 0, 9]),
            })
        );
    }

    #[test]
    fn tcp_syn_frames() {
        for (src, dst) in [("192.0.2.1", "198.51.100.1"), ("2001:db8::9", "2001:db8::1")] {
            let f = build(&FrameSpec::tcp(src.parse().unwrap(), dst.parse().unwrap(), 80, 0x02));
            match filter_common::parse::parse(&f[..]) {
                filter_common::Frame::Ip(p) => assert!(p.is_syn(), "{src}"),
                other => panic!("{other:?}"),
            }
        }
        let f =
            build(&FrameSpec::tcp("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap(), 80, 0x02));
        // IPv4 header checksum and TCP checksum (with pseudo-header) both verify.
        assert_eq!(ipv4_csum(f[14..34].try_into().unwrap()), 0);
        let mut th = [0u8; MAX_TCP_HLEN];
        th[..20].copy_from_slice(&f[34..]);
        let (s, d) = (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap());
        assert_eq!(csum_fold(csum_add(pseudo_v4(s, d, 20), &th, 20)), 0);
        assert_eq!(f[34 + 13], 0x02, "flags");
    }

    #[test]
    fn v6_and_vlan_frames_parse() {
        let mut spec = FrameSpec::udp("2001:db8::9".parse().unwrap(), "2001:db8::1".parse().unwrap(), 9);
        spec.vlans = vec![(0x88a8, 10), (0x8100, 20)];
        let f = build(&spec);
        assert!(matches!(
            filter_common::parse::parse(&f[..]),
            filter_common::Frame::Ip(filter_common::Packet { src: filter_common::Source::V6(_), .. })
        ));
    }
}
