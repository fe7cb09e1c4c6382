//! Keys of the list maps, and the word that says which generation of a list is active.
//!
//! Each list (block, allow) keeps its permanent IPv4 entries compiled into arrays
//! ([`crate::compiled`]), and everything else (entries with a TTL, single additions
//! until the next rewrite, IPv6) in an LPM trie per family. Every trie key starts with
//! a generation (0 or 1), and the arrays have a region per generation: a rewrite fills
//! the inactive generation while packets keep matching the active one, then flips
//! [`crate::map_names::ACTIVE`] with one 4-byte write, so packets see the old list or
//! the new one, never a mixture.

/// Bit 0 of a list's word in [`crate::map_names::ACTIVE`]: the active generation. The
/// other bits say which parts of that generation may hold entries, so the data path
/// does not probe what is empty: a flag may be set for an empty part, never clear for
/// a part with entries.
pub const ACTIVE_GENERATION: u32 = 1;
/// The compiled IPv4 arrays hold entries.
pub const HAS_COMPILED_V4: u32 = 1 << 1;
/// The IPv4 trie holds entries.
pub const HAS_TRIE_V4: u32 = 1 << 2;
/// The IPv6 trie holds entries.
pub const HAS_TRIE_V6: u32 = 1 << 3;
/// The bits above this count the list's switches (wrapping), so a reader that saw the
/// same word before and after reading a generation knows no switch happened between,
/// not even two (see the controller's `store::entries`).
pub const SWITCH_SHIFT: u32 = 8;

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
    /// [`crate::Family::ip_version`]: 4 or 6.
    pub family: u32,
    pub prefix_len: u32,
    pub addr: [u8; 16],
}

/// Nested expired prefixes the data path steps over before giving up on a trie hit
/// (an expired /24 inside a live /16 must still match the /16).
pub const MAX_EXPIRED_HOPS: usize = 4;

/// Bits the generation takes at the front of an LPM key.
pub const GEN_PREFIX_BITS: u32 = 8;

/// LPM trie data for IPv4: generation byte, then the address in network order.
pub type NetV4 = [u8; 5];
/// LPM trie data for IPv6: generation byte, then the address in network order.
pub type NetV6 = [u8; 17];

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
