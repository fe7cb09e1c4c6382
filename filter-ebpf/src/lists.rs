//! The allow and block lists as the data path sees them. Per list, one read of its
//! active word gives the generation and which parts hold entries; only those are
//! searched: the compiled IPv4 arrays (permanent IPv4 entries, two or three cache
//! lines per lookup whatever the list size), and an LPM trie per family (entries with
//! a TTL, single additions, IPv6), keyed by generation (see filter_common::keys).

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, LpmTrie, lpm_trie::Key},
};
use filter_common::{
    ACTIVE_ENTRIES, ACTIVE_GENERATION, ACTIVE_WATCH, DEFAULT_MAX_ENTRIES, EntryKey, GEN_PREFIX_BITS,
    HAS_COMPILED_V4, HAS_TRIE_V4, HAS_TRIE_V6, ListKind, ListValue, Lists, MAX_EXPIRED_HOPS, Meta, NetV4,
    NetV6, Source, WATCH_ENTRIES,
    compiled::{DIR_REGION, REGIONS, SHORT_WORDS, V4Table, contains_v4, dir_base, in_full_bucket},
    net_v4, net_v6,
};

use crate::clock::Clock;

/// Kernel capacity of each trie: room for both generations during a rewrite.
/// `attach --max-entries` overrides it; tries allocate per entry, so only stored
/// entries cost memory.
const MAP_CAPACITY: u32 = 2 * DEFAULT_MAX_ENTRIES;

#[map(name = "FG_ACTIVE")]
pub static ACTIVE: Array<u32> = Array::with_max_entries(ACTIVE_ENTRIES, 0);

// Read by the controller only; declared here so they are created and pinned with the rest.
#[map(name = "FG_META")]
static META: Array<Meta> = Array::with_max_entries(1, 0);
/// An LPM trie with full-length keys only: memory per stored entry, unlike a hash
/// map's bucket array sized for its capacity.
#[map(name = "FG_EXPIRY")]
static EXPIRY: LpmTrie<EntryKey, u64> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);
#[map(name = "FG_V4_SHORT")]
static V4_SHORT: Array<u64> = Array::with_max_entries(REGIONS * SHORT_WORDS, BPF_F_MMAPABLE);

// Written by the controller through mmap, a whole region at a time. Arrays of u32
// words stored two to a u64 element: the kernel gives every array element at least
// 8 bytes, so a u32 array would take twice the memory.
#[map(name = "FG_V4_DIR")]
static V4_DIR: Array<u64> = Array::with_max_entries(REGIONS * DIR_REGION / 2, BPF_F_MMAPABLE);
/// Sized for `4 * --max-entries` words by the loader.
#[map(name = "FG_V4_RANGES")]
static V4_RANGES: Array<u64> = Array::with_max_entries(REGIONS * DEFAULT_MAX_ENTRIES / 2, BPF_F_MMAPABLE);

/// Word `i` of an array of u32 words stored two to an element (little-endian).
#[inline(always)]
fn word(a: &Array<u64>, i: u32) -> Option<u32> {
    a.get(i >> 1).map(|&w| (w >> ((i & 1) * 32)) as u32)
}

#[map(name = "FG_BLK_V4_NET")]
static BLOCK_V4_NET: LpmTrie<NetV4, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);
#[map(name = "FG_BLK_V6_NET")]
static BLOCK_V6_NET: LpmTrie<NetV6, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);
#[map(name = "FG_ALW_V4_NET")]
static ALLOW_V4_NET: LpmTrie<NetV4, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);
#[map(name = "FG_ALW_V6_NET")]
static ALLOW_V6_NET: LpmTrie<NetV6, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);

/// The watchlist: a blocklist in observe mode. Plain tries (no generations): an
/// update is entry by entry, which costs a dry run at most a few frames counted
/// under the old or the new list.
#[map(name = "FG_WATCH_V4")]
static WATCH_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(WATCH_ENTRIES, 0);
#[map(name = "FG_WATCH_V6")]
static WATCH_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(WATCH_ENTRIES, 0);

// The lookups out of line, so that the verifier walks them once rather than through
// every path of the decision after them.
#[inline(never)]
fn watched_v4(a: u32) -> bool {
    WATCH_V4.get(&Key::new(32, a.to_ne_bytes())).is_some()
}

/// The IPv6 source is read from this CPU's parsed packet: a subprogram takes no
/// 16-byte argument.
#[inline(never)]
fn watched_v6() -> bool {
    match crate::PACKET.get(0).map(|r| r.packet().src) {
        Some(Source::V6(a)) => WATCH_V6.get(&Key::new(128, a)).is_some(),
        _ => false,
    }
}

struct Compiled;

impl V4Table for Compiled {
    #[inline(always)]
    fn dir(&self, i: u32) -> Option<u32> {
        word(&V4_DIR, i)
    }
    #[inline(always)]
    fn range(&self, i: u32) -> Option<u32> {
        word(&V4_RANGES, i)
    }
}

/// Whether `v` is a live hit in a trie of `bits`-long addresses, stepping over up to
/// [`MAX_EXPIRED_HOPS`] expired prefixes to the next shorter covering one.
#[inline(always)]
fn trie_hit<K: Copy>(trie: &LpmTrie<K, ListValue>, data: K, bits: u32, clock: &Clock) -> bool {
    let mut len = bits;
    for _ in 0..MAX_EXPIRED_HOPS {
        let Some(v) = trie.get(&Key::new(GEN_PREFIX_BITS + len, data)) else {
            return false;
        };
        if v.expires == 0 || v.live(clock.now()) {
            return true;
        }
        if v.prefix_len == 0 {
            return false;
        }
        len = v.prefix_len - 1;
    }
    false
}

// Map references are passed down rather than stored in a table: a static holding
// pointers to maps would need data relocations, which BPF loaders do not do.
#[inline(always)]
fn contains(
    kind: ListKind,
    src: &Source,
    clock: &Clock,
    v4: &LpmTrie<NetV4, ListValue>,
    v6: &LpmTrie<NetV6, ListValue>,
) -> bool {
    // One 4-byte read: the controller flips generation and flags as a whole.
    let Some(&word) = ACTIVE.get(kind as u32) else { return false };
    let g = word & ACTIVE_GENERATION;
    match src {
        Source::V4(a) => {
            (word & HAS_COMPILED_V4 != 0
                && contains_v4(&Compiled, dir_base(kind as u32, g), u32::from_be_bytes(*a)))
                || (word & HAS_TRIE_V4 != 0 && trie_hit(v4, net_v4(g, *a), 32, clock))
        }
        Source::V6(a) => word & HAS_TRIE_V6 != 0 && trie_hit(v6, net_v6(g, *a), 128, clock),
    }
}

/// Whether IPv4 source `a` is blocklisted by a /16 (or shorter) prefix of the
/// compiled list while the allowlist is empty: one directory read, so the entry
/// decides such frames (a flood from a listed range) without handing them on. Where
/// this answers true, `classify` says [`filter_common::Reason::Blocklist`] too.
#[inline(always)]
pub fn blocked_by_full_bucket(a: &[u8; 4]) -> bool {
    let (Some(&allow), Some(&block)) =
        (ACTIVE.get(ListKind::Allow as u32), ACTIVE.get(ListKind::Block as u32))
    else {
        return false;
    };
    if allow & (HAS_COMPILED_V4 | HAS_TRIE_V4 | HAS_TRIE_V6) != 0 || block & HAS_COMPILED_V4 == 0 {
        return false;
    }
    let base = dir_base(ListKind::Block as u32, block & ACTIVE_GENERATION);
    in_full_bucket(&Compiled, base, u32::from_be_bytes(*a))
}

pub struct MapLists<'a> {
    pub clock: &'a Clock,
}

impl Lists for MapLists<'_> {
    #[inline(always)]
    fn allowed(&self, src: &Source) -> bool {
        contains(ListKind::Allow, src, self.clock, &ALLOW_V4_NET, &ALLOW_V6_NET)
    }

    #[inline(always)]
    fn blocked(&self, src: &Source) -> bool {
        contains(ListKind::Block, src, self.clock, &BLOCK_V4_NET, &BLOCK_V6_NET)
    }

    #[inline(always)]
    fn watched(&self, src: &Source) -> bool {
        // One array read (the line holding the lists' words) while nothing is watched.
        let Some(&word) = ACTIVE.get(ACTIVE_WATCH) else { return false };
        match src {
            Source::V4(a) => word & HAS_TRIE_V4 != 0 && watched_v4(u32::from_ne_bytes(*a)),
            Source::V6(_) => word & HAS_TRIE_V6 != 0 && watched_v6(),
        }
    }
}
