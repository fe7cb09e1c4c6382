//! Crafting Ethernet frames: UDP over IPv4 or IPv6, optionally VLAN-tagged, with
//! correct checksums so the receiving stack accepts them.

use std::net::IpAddr;

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

/// Ones' complement sum over 16-bit words, as in RFC 1071.
pub fn csum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    let (pairs, rest) = bytes.as_chunks::<2>();
    for c in pairs {
        sum += u32::from(u16::from_be_bytes(*c));
    }
    if let [last] = rest {
        sum += u32::from(*last) << 8;
    }
    sum
}

pub fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds the frame described by `spec`.
pub fn build(spec: &FrameSpec) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&spec.dst_mac);
    f.extend_from_slice(&spec.src_mac);
    for (tpid, vid) in &spec.vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    // The transport header and payload ("udp" also when it is TCP), its protocol number
    // and where its checksum goes.
    let (proto, csum_at, mut udp) = match spec.tcp_flags {
        None => {
            let len = (8 + spec.payload.len()) as u16;
            let mut h = Vec::with_capacity(len as usize);
            h.extend_from_slice(&spec.sport.to_be_bytes());
            h.extend_from_slice(&spec.dport.to_be_bytes());
            h.extend_from_slice(&len.to_be_bytes());
            h.extend_from_slice(&[0, 0]);
            (17u8, 6, h)
        }
        Some(flags) => {
            let mut h = Vec::with_capacity(20 + spec.payload.len());
            h.extend_from_slice(&spec.sport.to_be_bytes());
            h.extend_from_slice(&spec.dport.to_be_bytes());
            h.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // sequence
            h.extend_from_slice(&0u32.to_be_bytes()); // ack
            h.extend_from_slice(&[0x50, flags]); // data offset 5 words
            h.extend_from_slice(&64240u16.to_be_bytes()); // window
            h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            (6u8, 16, h)
        }
    };
    udp.extend_from_slice(&spec.payload);
    let udp_len = udp.len() as u16;
    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = 20 + udp_len;
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = csum_fold(csum_add(0, &h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&udp_len.to_be_bytes());
            set_csum(&mut udp, csum_at, &pseudo);
            f.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&udp_len.to_be_bytes());
            h.extend_from_slice(&[proto, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
            set_csum(&mut udp, csum_at, &pseudo);
            f.extend_from_slice(&h);
        }
        _ => panic!("source and destination must be of one family"),
    }
    f.extend_from_slice(&udp);
    f
}

fn set_csum(l4: &mut [u8], at: usize, pseudo: &[u8]) {
    let c = csum_fold(csum_add(csum_add(0, pseudo), l4));
    // 0 means "no checksum" in UDP; a computed 0 is sent as 0xffff (same sum for TCP).
    let c = if c == 0 { 0xffff } else { c };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let spec = FrameSpec::udp("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap(), 9);
        let f = build(&spec);
        let ip = &f[14..34];
        assert_eq!(csum_fold(csum_add(0, ip)), 0);
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
        assert_eq!(csum_fold(csum_add(0, &f[14..34])), 0);
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        assert_eq!(csum_fold(csum_add(csum_add(0, &pseudo), &f[34..])), 0);
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
