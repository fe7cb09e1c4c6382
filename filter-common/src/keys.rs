//! Keys of the list maps.
//!
//! Each list (block, allow) keeps exact hosts (/32, /128) in a hash map, one lookup
//! whatever the list size, and shorter prefixes in an LPM trie. Every key starts with
//! a generation (0 or 1): `--replace` fills the inactive generation while packets
//! keep matching the active one, then flips [`crate::map_names::ACTIVE`] with one
//! 4-byte write, so packets see the old list or the new one, never a mixture.

/// Value stored with every list entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListValue {
    /// The entry's own prefix length. A trie lookup returns the value of the longest
    /// matching prefix; comparing this with the length looked up tells an exact entry
    /// from a covering shorter one.
    pub prefix_len: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` time after which the entry no longer matches; 0 = never.
    pub expires: u64,
}

impl ListValue {
    #[inline(always)]
    pub fn live(&self, now: u64) -> bool {
        self.expires == 0 || now < self.expires
    }
}

/// An entry of a list, for the controller's expiry index ([`crate::map_names::EXPIRY`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EntryKey {
    /// [`crate::ListKind`] as u32.
    pub list: u32,
    /// 4 or 6.
    pub family: u32,
    pub prefix_len: u32,
    pub addr: [u8; 16],
}

/// Nested expired prefixes the data path steps over before giving up on a trie hit
/// (an expired /24 inside a live /16 must still match the /16).
pub const MAX_EXPIRED_HOPS: usize = 4;

/// Bits the generation takes at the front of an LPM key.
pub const GEN_PREFIX_BITS: u32 = 8;

/// Exact IPv4 host key in a host hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostV4 {
    pub generation: u32,
    pub addr: [u8; 4],
}

/// Exact IPv6 host key in a host hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostV6 {
    pub generation: u32,
    pub addr: [u8; 16],
}

/// LPM trie data for IPv4: generation byte, then the address in network order.
pub type NetV4 = [u8; 5];
/// LPM trie data for IPv6: generation byte, then the address in network order.
pub type NetV6 = [u8; 17];

impl HostV4 {
    #[inline(always)]
    pub const fn new(generation: u32, addr: [u8; 4]) -> Self {
        Self { generation, addr }
    }
}

impl HostV6 {
    #[inline(always)]
    pub const fn new(generation: u32, addr: [u8; 16]) -> Self {
        Self { generation, addr }
    }
}

/// LPM data for an IPv4 address (or prefix) in a generation.
#[inline(always)]
pub const fn net_v4(generation: u32, a: [u8; 4]) -> NetV4 {
    [generation as u8, a[0], a[1], a[2], a[3]]
}

/// LPM data for an IPv6 address (or prefix) in a generation.
#[inline(always)]
pub const fn net_v6(generation: u32, a: [u8; 16]) -> NetV6 {
    let mut d = [0u8; 17];
    d[0] = generation as u8;
    let mut i = 0;
    while i < 16 {
        d[i + 1] = a[i];
        i += 1;
    }
    d
}

/// Splits LPM data back into generation and address.
pub fn split_net_v4(d: &NetV4) -> (u32, [u8; 4]) {
    (d[0] as u32, [d[1], d[2], d[3], d[4]])
}

/// Splits LPM data back into generation and address.
pub fn split_net_v6(d: &NetV6) -> (u32, [u8; 16]) {
    let mut a = [0u8; 16];
    a.copy_from_slice(&d[1..]);
    (d[0] as u32, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_keys_round_trip() {
        let a = [192, 0, 2, 7];
        assert_eq!(split_net_v4(&net_v4(1, a)), (1, a));
        let b: [u8; 16] = core::array::from_fn(|i| i as u8 * 3);
        assert_eq!(split_net_v6(&net_v6(0, b)), (0, b));
    }
}
