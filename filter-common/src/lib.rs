//! Types, map names and decision logic shared by floodgate's XDP program (no_std, bpf
//! target) and its controller (std, `user` feature).
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]`, built from fixed-width
//! integers and byte arrays, with no implicit padding, so the same bytes mean the same
//! thing on both sides.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

pub mod decide;
pub mod keys;
pub mod parse;

#[cfg(feature = "user")]
pub mod cidr;

pub use decide::{Lists, classify};
pub use keys::*;
pub use parse::{Frame, PacketView, Source};

/// Names of the maps in the XDP object. The eBPF crate must spell them the same way
/// (its `#[map(name = ...)]` attributes need literals); an integration test loads the
/// object and checks that every name here resolves.
pub mod map_names {
    /// Per-CPU `{packets, bytes}` per [`crate::Reason`].
    pub const COUNTERS: &str = "FG_COUNTERS";
    /// Active generation of each list ([`crate::ListKind`] index), read per packet.
    pub const ACTIVE: &str = "FG_ACTIVE";
    /// Controller bookkeeping ([`crate::Meta`]); never read by the data path.
    pub const META: &str = "FG_META";
    pub const BLOCK_V4_HOST: &str = "FG_BLK_V4_HOST";
    pub const BLOCK_V4_NET: &str = "FG_BLK_V4_NET";
    pub const BLOCK_V6_HOST: &str = "FG_BLK_V6_HOST";
    pub const BLOCK_V6_NET: &str = "FG_BLK_V6_NET";
    pub const ALLOW_V4_HOST: &str = "FG_ALW_V4_HOST";
    pub const ALLOW_V4_NET: &str = "FG_ALW_V4_NET";
    pub const ALLOW_V6_HOST: &str = "FG_ALW_V6_HOST";
    pub const ALLOW_V6_NET: &str = "FG_ALW_V6_NET";

    /// The eight list maps, sized by `attach --max-entries`.
    pub const LISTS: [&str; 8] = [
        BLOCK_V4_HOST,
        BLOCK_V4_NET,
        BLOCK_V6_HOST,
        BLOCK_V6_NET,
        ALLOW_V4_HOST,
        ALLOW_V4_NET,
        ALLOW_V6_HOST,
        ALLOW_V6_NET,
    ];

    /// Every map in the object.
    pub const ALL: [&str; 11] = [
        COUNTERS,
        ACTIVE,
        META,
        BLOCK_V4_HOST,
        BLOCK_V4_NET,
        BLOCK_V6_HOST,
        BLOCK_V6_NET,
        ALLOW_V4_HOST,
        ALLOW_V4_NET,
        ALLOW_V6_HOST,
        ALLOW_V6_NET,
    ];
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "floodgate";

/// Entries per list and address family when `attach` is given no `--max-entries`.
pub const DEFAULT_MAX_ENTRIES: u32 = 1_000_000;

/// Why a packet got its verdict. The discriminant indexes the counters map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No list matched: handed to the stack.
    Passed = 0,
    /// Source on the allowlist: handed to the stack, nothing else checked.
    Allowed = 1,
    /// Source on the blocklist: dropped.
    Blocklist = 2,
    /// Source over its rate limit: dropped (rate limiting is not built yet; stays 0).
    RateLimit = 3,
    /// An IP frame too short or inconsistent for its headers: passed, the stack drops it.
    Malformed = 4,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed untouched.
    NonIp = 5,
}

impl Reason {
    pub const COUNT: u32 = 6;
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Passed,
        Reason::Allowed,
        Reason::Blocklist,
        Reason::RateLimit,
        Reason::Malformed,
        Reason::NonIp,
    ];

    /// Whether packets with this reason are dropped in the driver.
    pub const fn drops(self) -> bool {
        matches!(self, Reason::Blocklist | Reason::RateLimit)
    }

    /// The key under which `stats --json` reports this counter.
    pub const fn key(self) -> &'static str {
        match self {
            Reason::Passed => "passed",
            Reason::Allowed => "allowed",
            Reason::Blocklist => "blocklist",
            Reason::RateLimit => "rate_limit",
            Reason::Malformed => "malformed",
            Reason::NonIp => "non_ip",
        }
    }
}

/// One counter slot: packets and bytes (whole frames, as the driver saw them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Which list a map or entry belongs to. The discriminant indexes [`map_names::ACTIVE`]
/// and [`Meta::counts`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    Block = 0,
    Allow = 1,
}

impl ListKind {
    pub const ALL: [ListKind; 2] = [ListKind::Block, ListKind::Allow];

    pub const fn name(self) -> &'static str {
        match self {
            ListKind::Block => "blocklist",
            ListKind::Allow => "allowlist",
        }
    }
}

/// IPv4 or IPv6; the discriminant indexes [`Meta::counts`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4 = 0,
    V6 = 1,
}

/// XDP attach mode, as recorded in [`Meta::mode`].
pub const MODE_NATIVE: u32 = 1;
pub const MODE_SKB: u32 = 2;

/// Bumped when the layout of the pinned maps changes, so a controller never
/// misreads maps pinned by another version.
pub const META_VERSION: u32 = 1;

/// Controller bookkeeping, one entry in [`map_names::META`]. Only controllers
/// read and write it, under the pin directory's lock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub version: u32,
    /// [`MODE_NATIVE`] or [`MODE_SKB`].
    pub mode: u32,
    pub ifindex: u32,
    /// Capacity of each list per address family (hosts and prefixes together).
    pub max_entries: u32,
    /// Entries in the active generation, by `[ListKind][Family]`.
    pub counts: [[u32; 2]; 2],
    /// CLOCK_REALTIME seconds at attach, for `status`.
    pub attached_at: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integer fields only, no padding (sizes asserted below).
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::Meta {}
    unsafe impl aya::Pod for super::HostV4 {}
    unsafe impl aya::Pod for super::HostV6 {}

    const _: () = assert!(core::mem::size_of::<super::Counter>() == 16);
    const _: () = assert!(core::mem::size_of::<super::Meta>() == 40);
    const _: () = assert!(core::mem::size_of::<super::HostV4>() == 8);
    const _: () = assert!(core::mem::size_of::<super::HostV6>() == 20);
}
