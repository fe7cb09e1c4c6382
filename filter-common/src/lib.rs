//! Types, map names and decision logic shared by floodgate's XDP program (no_std, bpf
//! target) and its controller (std, `user` feature).
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]`, built from fixed-width
//! integers and byte arrays, with no implicit padding, so the same bytes mean the same
//! thing on both sides.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

pub mod compiled;
pub mod decide;
pub mod keys;
pub mod limit;
pub mod parse;
pub mod rules;
pub mod sample;
pub mod synproxy;

#[cfg(feature = "user")]
pub mod cidr;

pub use decide::{Limiter, Lists, classify};
pub use keys::*;
pub use parse::{Frame, Packet, PacketView, Source};
pub use rules::Rules;

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
    /// Two [`crate::limit::LimitConfig`] slots; `ACTIVE[ACTIVE_LIMITS]` picks one.
    pub const LIMITS: &str = "FG_LIMITS";
    /// Limiter state of recently seen sources (LRU: bounded, evicts the least recent).
    pub const RATE: &str = "FG_RATE";
    /// Limiter state of sources that went over their limit; not evicted by newcomers.
    pub const HEAVY: &str = "FG_HEAVY";
    /// Auto-bans made by the data path.
    pub const BANS: &str = "FG_BANS";
    /// The global SYN bucket and the doorkeeper's seed.
    pub const GLOBAL: &str = "FG_GLOBAL";
    /// The limiter's doorkeeper: fingerprints of sources seen once.
    pub const DOOR: &str = "FG_DOOR";
    /// Per-CPU event counters ([`crate::limit::Event`]).
    pub const EVENTS: &str = "FG_EVENTS";
    /// Expiry times of list entries added with a TTL (controller only).
    pub const EXPIRY: &str = "FG_EXPIRY";
    /// Rule per (tcp/udp, source/destination, port) slot ([`crate::rules::port_slot`]).
    pub const PORT_RULES: &str = "FG_PORT_RULES";
    /// Whole-protocol rule per [`crate::rules::Proto`].
    pub const PROTO_RULES: &str = "FG_PROTO_RULES";
    /// [`crate::rules::RuleInfo`] per rule id (controller only).
    pub const RULES: &str = "FG_RULES";
    /// Per-CPU `{packets, bytes}` per rule id.
    pub const RULE_COUNTERS: &str = "FG_RULE_COUNTERS";
    /// Two [`crate::rules::PolicyConfig`] slots; `ACTIVE[ACTIVE_POLICY]` picks one.
    pub const POLICY: &str = "FG_POLICY";
    /// Served-port bitmaps per policy slot and protocol.
    pub const SERVED: &str = "FG_SERVED";
    /// [`crate::synproxy::SynProxyConfig`].
    pub const SYNPROXY: &str = "FG_SYNPROXY";
    /// Bitmap of the TCP ports whose SYNs are answered with cookies.
    pub const SYN_PORTS: &str = "FG_SYN_PORTS";
    /// Per-port SYN rate state for `synproxy enable --above`.
    pub const SYN_RATE: &str = "FG_SYN_RATE";
    /// Programs the XDP entry tail-calls ([`crate::TAIL_PROGRAMS`]).
    pub const TAILS: &str = "FG_TAILS";
    /// Per-CPU working memory of the SYN-cookie answerer.
    pub const SYN_SCRATCH: &str = "FG_SYN_SCRATCH";
    /// Per-CPU: the packet the entry parsed, for the decision it tail-calls.
    pub const PACKET: &str = "FG_PACKET";
    /// Zero-window probes seen per cookie handshake ([`crate::synproxy::ProbeKey`]).
    pub const PROBES: &str = "FG_PROBES";
    /// Per-CPU: when each rate-limited kind of data-path log record last went out.
    pub const LOG_AT: &str = "FG_LOG_AT";
    /// [`crate::sample::SampleConfig`] per tap.
    pub const SAMPLE_CFG: &str = "FG_SAMPLE_CFG";
    /// Per-CPU [`crate::sample::TapState`] per tap.
    pub const SAMPLE_STATE: &str = "FG_SAMPLE_ST";
    /// Ring buffers of sampled frames: the service's tap, the ad-hoc tap.
    pub const SAMPLES: &str = "FG_SAMPLES";
    pub const CAPTURE: &str = "FG_CAPTURE";
    /// Sources `floodgate trace` follows (LPM tries, address in network order).
    pub const TRACE_V4: &str = "FG_TRACE_V4";
    pub const TRACE_V6: &str = "FG_TRACE_V6";
    /// Per-CPU `{packets, bytes}` per [`crate::Reason`] that a check in observe mode
    /// would have dropped for (the frames were passed, or dropped by a later check).
    /// Each check counts on its own: a frame two of them would drop counts twice.
    pub const WOULD_DROP: &str = "FG_WOULD_DROP";
    /// The watchlist (a blocklist in observe mode): LPM tries, address in network
    /// order, value the entry's prefix length.
    pub const WATCH_V4: &str = "FG_WATCH_V4";
    pub const WATCH_V6: &str = "FG_WATCH_V6";
    /// aya-log's ring buffer of the data path's log records (its name is aya-log's).
    pub const LOGS: &str = "AYA_LOGS";
    pub const BLOCK_V4_NET: &str = "FG_BLK_V4_NET";
    pub const BLOCK_V6_NET: &str = "FG_BLK_V6_NET";
    pub const ALLOW_V4_NET: &str = "FG_ALW_V4_NET";
    pub const ALLOW_V6_NET: &str = "FG_ALW_V6_NET";
    /// The compiled IPv4 lists ([`crate::compiled`]): directory, ranges, and the
    /// bitmap of prefixes of /16 and shorter.
    pub const V4_DIR: &str = "FG_V4_DIR";
    pub const V4_RANGES: &str = "FG_V4_RANGES";
    pub const V4_SHORT: &str = "FG_V4_SHORT";

    /// The lists' tries (entries with a TTL, single additions, IPv6), sized by
    /// `attach --max-entries`.
    pub const LISTS: [&str; 4] = [BLOCK_V4_NET, BLOCK_V6_NET, ALLOW_V4_NET, ALLOW_V6_NET];

    /// Every map in the object.
    pub const ALL: [&str; 42] = [
        COUNTERS,
        WOULD_DROP,
        WATCH_V4,
        WATCH_V6,
        SAMPLE_CFG,
        SAMPLE_STATE,
        SAMPLES,
        CAPTURE,
        TRACE_V4,
        TRACE_V6,
        LOG_AT,
        LOGS,
        PACKET,
        SYN_SCRATCH,
        PROBES,
        SYNPROXY,
        SYN_PORTS,
        SYN_RATE,
        TAILS,
        DOOR,
        PORT_RULES,
        PROTO_RULES,
        RULES,
        RULE_COUNTERS,
        POLICY,
        SERVED,
        ACTIVE,
        META,
        LIMITS,
        RATE,
        HEAVY,
        BANS,
        GLOBAL,
        EVENTS,
        EXPIRY,
        BLOCK_V4_NET,
        BLOCK_V6_NET,
        ALLOW_V4_NET,
        ALLOW_V6_NET,
        V4_DIR,
        V4_RANGES,
        V4_SHORT,
    ];
}

/// Index of the limiter's configuration slot in [`map_names::ACTIVE`] (after the
/// two lists' generations).
pub const ACTIVE_LIMITS: u32 = 2;
/// Index of the policy's slot in [`map_names::ACTIVE`].
pub const ACTIVE_POLICY: u32 = 3;
/// Index of the watchlist's word in [`map_names::ACTIVE`]: [`HAS_TRIE_V4`] and
/// [`HAS_TRIE_V6`] while it holds entries of that family, so a source is looked up
/// only while something is watched.
pub const ACTIVE_WATCH: u32 = 4;
/// Entries of [`map_names::ACTIVE`].
pub const ACTIVE_ENTRIES: u32 = 5;
/// Entries of each watchlist trie.
pub const WATCH_ENTRIES: u32 = DEFAULT_MAX_ENTRIES;

/// Sources tracked by the limiter when `attach` is given no `--max-sources`.
pub const DEFAULT_MAX_SOURCES: u32 = 131_072;
/// Over-limit sources held apart from the LRU, and auto-bans held at once.
pub const HEAVY_ENTRIES: u32 = 65_536;
pub const BAN_ENTRIES: u32 = 65_536;

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "floodgate";
/// The programs reached by tail call, by their slot in `FG_TAILS`: the SYN-cookie
/// answerer, the repairer of zero-window probes after a lost handshake ACK, and the
/// decision the entry hands every parsed IP packet to.
pub const TAIL_PROGRAMS: [&str; 3] = ["fg_synproxy", "fg_ackprobe", "fg_decide"];
pub const TAIL_SYNPROXY: u32 = 0;
pub const TAIL_ACKPROBE: u32 = 1;
pub const TAIL_DECIDE: u32 = 2;

/// Entries per list and address family when `attach` is given no `--max-entries`.
pub const DEFAULT_MAX_ENTRIES: u32 = 1_000_000;

/// Why a packet got its verdict. The discriminant indexes the counters map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No list matched: handed to the stack.
    Passed = 0,
    /// Source on the allowlist: handed to the stack, nothing else checked.
    Allowed = 1,
    /// Source on the blocklist: dropped.
    Blocklist = 2,
    /// Source over its packet or byte rate: dropped.
    RateLimit = 3,
    /// An IP frame too short or inconsistent for its headers: passed, the stack drops it.
    Malformed = 4,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed untouched.
    NonIp = 5,
    /// A TCP SYN over its source's SYN rate or the global SYN budget: dropped.
    SynLimit = 6,
    /// Matched a protocol/port rule with action drop.
    Rule = 7,
    /// TCP/UDP to a port the served-ports policy neither serves nor treats as ephemeral.
    Policy = 8,
    /// A non-first fragment under `--fragments drop`.
    Fragment = 9,
    /// A TCP SYN to a protected port answered in the driver with a SYN cookie
    /// (`synproxy enable`): sent back with XDP_TX, never reaching the listener.
    SynProxy = 10,
    /// A client's zero-window probe standing in for its lost handshake ACK (the SYN-ACK
    /// announced window 0): passed with its sequence number moved up by one, so that
    /// SYNPROXY recognises the cookie and opens the connection (see `fg_ackprobe`).
    AckRepaired = 11,
    /// A frame that could not be checked and so is dropped: its IP header lies behind
    /// more VLAN tags than the walk follows, or its transport header behind more IPv6
    /// extension headers than the walk follows while rules, the policy, the fragment
    /// setting or SYN cookies would need it. (Its source passed the lists first.) Also
    /// every IP frame while the decision program is missing from its tail-call slot
    /// (never after a complete `attach`): unchecked frames never pass.
    Unchecked = 12,
    /// An IPv6 packet whose transport header lies behind more extension headers than
    /// the walk follows, passed because its source passed the lists and the limiter
    /// and nothing in force needed its ports.
    L4Unseen = 13,
}

impl Reason {
    pub const COUNT: u32 = 14;
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Passed,
        Reason::Allowed,
        Reason::Blocklist,
        Reason::RateLimit,
        Reason::Malformed,
        Reason::NonIp,
        Reason::SynLimit,
        Reason::Rule,
        Reason::Policy,
        Reason::Fragment,
        Reason::SynProxy,
        Reason::AckRepaired,
        Reason::Unchecked,
        Reason::L4Unseen,
    ];

    /// The reasons a check in observe mode can count under `would_drop`: the
    /// watchlist's, the limits', the rules', the policy's (served ports, fragments).
    pub const OBSERVABLE: [Reason; 6] = [
        Reason::Blocklist,
        Reason::RateLimit,
        Reason::SynLimit,
        Reason::Rule,
        Reason::Policy,
        Reason::Fragment,
    ];

    /// Whether packets with this reason are dropped in the driver.
    pub const fn drops(self) -> bool {
        matches!(
            self,
            Reason::Blocklist
                | Reason::RateLimit
                | Reason::SynLimit
                | Reason::Rule
                | Reason::Policy
                | Reason::Fragment
                | Reason::Unchecked
        )
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
            Reason::SynLimit => "syn_limit",
            Reason::Rule => "rule",
            Reason::Policy => "policy",
            Reason::Fragment => "fragment",
            Reason::SynProxy => "syn_answered",
            Reason::AckRepaired => "ack_repaired",
            Reason::Unchecked => "unchecked",
            Reason::L4Unseen => "l4_unseen",
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

/// A list as stored in a map ([`keys::EntryKey::list`]): 0 or 1.
impl TryFrom<u32> for ListKind {
    type Error = u32;

    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            0 => Ok(ListKind::Block),
            1 => Ok(ListKind::Allow),
            _ => Err(v),
        }
    }
}

/// IPv4 or IPv6; the discriminant indexes [`Meta::counts`]. Kernel-side keys
/// ([`limit::SourceKey`], [`keys::EntryKey`]) store it as the IP version, 4 or 6:
/// convert with [`Family::ip_version`] and [`Family::from_ip_version`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4 = 0,
    V6 = 1,
}

impl Family {
    /// The number a kernel-side key stores: 4 or 6.
    #[inline(always)]
    pub const fn ip_version(self) -> u32 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    pub const fn from_ip_version(v: u32) -> Option<Family> {
        match v {
            4 => Some(Family::V4),
            6 => Some(Family::V6),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// XDP attach mode, as recorded in [`Meta::mode`].
pub const MODE_NATIVE: u32 = 1;
pub const MODE_SKB: u32 = 2;

/// The name of an attach mode, as `status` and `attach` print it.
pub const fn mode_name(mode: u32) -> &'static str {
    match mode {
        MODE_NATIVE => "native",
        MODE_SKB => "skb",
        _ => "unknown",
    }
}

/// Bumped when the layout of the pinned maps changes, so a controller never
/// misreads maps pinned by another version.
pub const META_VERSION: u32 = 9;

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
    /// Capacity of the limiter's LRU map.
    pub max_sources: u32,
    pub _pad: u32,
    /// The aya-log level the program was loaded with ([`BPF_LOG_OFF`] or aya-log's
    /// level number, 1 = error .. 5 = trace): fixed at load time, so a different level
    /// needs a new load.
    pub bpf_log: u32,
    pub _reserved: u32,
}

/// [`Meta::bpf_log`] of a program loaded with the data path's logging off.
pub const BPF_LOG_OFF: u32 = 0;

#[cfg(feature = "user")]
mod pod {
    // SAFETY (every impl below): repr(C), integer fields only, no padding (sizes
    // asserted below).
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::Meta {}
    unsafe impl aya::Pod for super::ListValue {}
    unsafe impl aya::Pod for super::EntryKey {}
    unsafe impl aya::Pod for super::limit::LimitConfig {}
    unsafe impl aya::Pod for super::limit::SourceState {}
    unsafe impl aya::Pod for super::limit::SourceKey {}
    unsafe impl aya::Pod for super::limit::Ban {}
    unsafe impl aya::Pod for super::rules::RuleInfo {}
    unsafe impl aya::Pod for super::rules::PolicyConfig {}
    unsafe impl aya::Pod for super::synproxy::SynProxyConfig {}
    unsafe impl aya::Pod for super::sample::SampleConfig {}
    unsafe impl aya::Pod for super::sample::TapState {}

    const _: () = assert!(core::mem::size_of::<super::Counter>() == 16);
    const _: () = assert!(core::mem::size_of::<super::Meta>() == 56);
    const _: () = assert!(core::mem::size_of::<super::ListValue>() == 16);
    const _: () = assert!(core::mem::size_of::<super::EntryKey>() == 28);
    const _: () = assert!(core::mem::size_of::<super::limit::LimitConfig>() == 136);
    const _: () = assert!(core::mem::size_of::<super::limit::SourceState>() == 64);
    const _: () = assert!(core::mem::size_of::<super::limit::SourceKey>() == 24);
    const _: () = assert!(core::mem::size_of::<super::limit::Ban>() == 16);
    const _: () = assert!(core::mem::size_of::<super::rules::RuleInfo>() == 40);
    const _: () = assert!(core::mem::size_of::<super::rules::PolicyConfig>() == 8);
    const _: () = assert!(core::mem::size_of::<super::synproxy::SynProxyConfig>() == 32);
    const _: () = assert!(core::mem::size_of::<super::synproxy::ProbeKey>() == 40);
    const _: () = assert!(core::mem::size_of::<super::sample::SampleConfig>() == 16 + 4 * 14);
    const _: () = assert!(core::mem::size_of::<super::sample::TapState>() == 40);
    const _: () = assert!(core::mem::size_of::<super::sample::Sample>() == 16 + 128);
}
