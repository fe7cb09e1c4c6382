//! Frames for test_run: valid ones from the lab builder, and their damaged variants.

use std::net::IpAddr;

use floodgate::lab::{FrameSpec, build};

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
    let plain = udp_from(src);
    let mut f = plain[..34].to_vec();
    f.extend(std::iter::repeat_n(1u8, opt_words * 4));
    f.extend_from_slice(&plain[34..]);
    let ihl = 5 + opt_words as u8;
    f[14] = 0x40 | ihl;
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c =
        floodgate::lab::packet::csum_fold(floodgate::lab::packet::csum_add(0, &f[14..14 + ihl as usize * 4]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// An Ethernet frame of another protocol (ARP, LLDP, ...), padded to 60 bytes.
pub fn non_ip(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.resize(60, 0);
    f
}
