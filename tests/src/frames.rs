//! Frames for test_run: valid ones from the lab builder, and their damaged variants.

use std::net::IpAddr;

use floodgate_lab::{FrameSpec, build};

pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// A UDP frame from `src` (v4 or v6) to a documentation address of the same family.
pub fn udp_from(src: &str) -> Vec<u8> {
    udp_tagged(src, &[])
}

/// As [`udp_from`], with VLAN tags (outermost first).
pub fn udp_tagged(src: &str, tpids: &[u16]) -> Vec<u8> {
    let src: IpAddr = src.parse().expect("test address");
    let dst: IpAddr =
        if src.is_ipv4() { "198.51.100.1".parse().unwrap() } else { "2001:db8:1::1".parse().unwrap() };
    let mut spec = FrameSpec::udp(src, dst, 9);
    spec.vlans = tpids.iter().enumerate().map(|(i, t)| (*t, 100 + i as u16)).collect();
    build(&spec)
}

/// Offset of the IP header in a frame with `tags` VLAN tags.
pub fn l3_offset(tags: usize) -> usize {
    14 + 4 * tags
}

/// An IPv4 UDP frame whose header carries `opt_words` 32-bit words of options
/// (NOPs), with lengths and checksum adjusted.
pub fn ipv4_with_options(src: &str, opt_words: usize) -> Vec<u8> {
    with_ipv4_options(&udp_from(src), l3_offset(0), opt_words)
}

/// `frame`, whose IPv4 header starts at `l3`, with `words` 32-bit words of NOP
/// options inserted after the fixed header; IHL, total length and checksum adjusted.
pub fn with_ipv4_options(frame: &[u8], l3: usize, words: usize) -> Vec<u8> {
    let mut f = frame[..l3 + 20].to_vec();
    f.extend(std::iter::repeat_n(1u8, words * 4));
    f.extend_from_slice(&frame[l3 + 20..]);
    f[l3] = 0x40 | (5 + words) as u8;
    let total = (f.len() - l3) as u16;
    f[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut f, l3);
    f
}

/// Recomputes the checksum of the IPv4 header at `l3`.
pub fn fix_ipv4_checksum(f: &mut [u8], l3: usize) {
    use filter_common::synproxy::{MAX_TCP_HLEN, csum_add, csum_fold};
    let ihl = (f[l3] & 0x0f) as usize * 4;
    f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    // An IPv4 header (60 bytes at most) fits the summing buffer of TCP headers.
    let mut h = [0u8; MAX_TCP_HLEN];
    h[..ihl].copy_from_slice(&f[l3..l3 + ihl]);
    let c = csum_fold(csum_add(0, &h, ihl));
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// An Ethernet frame of another protocol (ARP, LLDP, ...), padded to 60 bytes.
pub fn non_ip(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.resize(60, 0);
    f
}

/// How an IP packet is fragmented: `offset` in 8-byte units, `more` the MF flag.
#[derive(Clone, Copy, Debug)]
pub struct Frag {
    pub offset: u16,
    pub more: bool,
}

/// A frame carrying `l4` (transport header and payload) as protocol `proto` from
/// `src` to the documentation server address. IPv6 puts `exts` (type, length in
/// bytes) before it, then a fragment header if `frag` is given; IPv4 uses its own
/// fragment fields. Checksums are not filled in: XDP does not check them.
pub fn ip_frame(src: &str, proto: u8, l4: &[u8], exts: &[(u8, usize)], frag: Option<Frag>) -> Vec<u8> {
    let src: IpAddr = src.parse().expect("test address");
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    match src {
        IpAddr::V4(s) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let total = (20 + l4.len()) as u16;
            let frag_field = frag.map_or(0x4000, |fr| fr.offset | if fr.more { 0x2000 } else { 0 });
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 1]);
            f.extend_from_slice(&frag_field.to_be_bytes());
            f.extend_from_slice(&[64, proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&[198, 51, 100, 1]);
        }
        IpAddr::V6(s) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut chain: Vec<(u8, usize)> = exts.to_vec();
            if frag.is_some() {
                chain.push((44, 8));
            }
            let mut next: Vec<u8> = chain.iter().map(|e| e.0).collect();
            next.push(proto);
            let mut payload = Vec::new();
            for (i, (ty, len)) in chain.iter().enumerate() {
                let mut h = vec![0u8; *len];
                h[0] = next[i + 1];
                match *ty {
                    44 => {
                        let fr = frag.expect("fragment");
                        h[2..4].copy_from_slice(&((fr.offset << 3) | fr.more as u16).to_be_bytes());
                    }
                    51 => h[1] = (*len / 4 - 2) as u8,
                    _ => h[1] = (*len / 8 - 1) as u8,
                }
                payload.extend_from_slice(&h);
            }
            payload.extend_from_slice(l4);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            f.extend_from_slice(&[next[0], 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&"2001:db8:1::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
            f.extend_from_slice(&payload);
            return f;
        }
    }
    f.extend_from_slice(l4);
    f
}

/// A UDP header and 8 bytes of payload.
pub fn udp_l4(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = sport.to_be_bytes().to_vec();
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 16, 0, 0]);
    h.extend_from_slice(&[0xab; 8]);
    h
}

/// A TCP header with `flags`.
pub fn tcp_l4(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = sport.to_be_bytes().to_vec();
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    h
}

/// An ICMP or ICMPv6 header of `ty` (echo: 8 / 128) with 8 bytes of payload.
pub fn icmp_l4(ty: u8) -> Vec<u8> {
    let mut h = vec![ty, 0, 0, 0, 0, 1, 0, 1];
    h.extend_from_slice(&[0xcd; 8]);
    h
}

pub fn udp(src: &str, sport: u16, dport: u16) -> Vec<u8> {
    ip_frame(src, 17, &udp_l4(sport, dport), &[], None)
}

pub fn tcp(src: &str, sport: u16, dport: u16) -> Vec<u8> {
    ip_frame(src, 6, &tcp_l4(sport, dport, 0x10), &[], None)
}

/// A TCP SYN header from `sport` to `dport` with sequence number `seq` and `opts`
/// (padded with EOL to a multiple of 4 bytes).
pub fn syn_l4(sport: u16, dport: u16, seq: u32, opts: &[u8]) -> Vec<u8> {
    let mut o = opts.to_vec();
    o.resize(opts.len().div_ceil(4) * 4, 0);
    let mut h = sport.to_be_bytes().to_vec();
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, (((20 + o.len()) / 4) as u8) << 4, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    h.extend_from_slice(&o);
    h
}
