//! The allow and block lists as the data path sees them: for each family an exact-host
//! hash map (one lookup however long the list) and an LPM trie for shorter prefixes,
//! both keyed by the list's active generation (see filter_common::keys).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, lpm_trie::Key},
};
use filter_common::{
    ACTIVE_ENTRIES, DEFAULT_MAX_ENTRIES, EntryKey, GEN_PREFIX_BITS, HostV4, HostV6, ListKind, ListValue,
    Lists, MAX_EXPIRED_HOPS, Meta, NetV4, NetV6, Source, net_v4, net_v6,
};

use crate::clock::Clock;

/// Kernel capacity of each list map: room for both generations during `--replace`.
/// `attach --max-entries` overrides it; NO_PREALLOC means only stored entries cost memory.
const MAP_CAPACITY: u32 = 2 * DEFAULT_MAX_ENTRIES;

#[map(name = "FG_ACTIVE")]
pub static ACTIVE: Array<u32> = Array::with_max_entries(ACTIVE_ENTRIES, 0);

// Read by the controller only; declared here so they are created and pinned with the rest.
#[map(name = "FG_META")]
static META: Array<Meta> = Array::with_max_entries(1, 0);
#[map(name = "FG_EXPIRY")]
static EXPIRY: HashMap<EntryKey, u64> = HashMap::with_max_entries(MAP_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "FG_BLK_V4_HOST")]
static BLOCK_V4_HOST: HashMap<HostV4, ListValue> = HashMap::with_max_entries(MAP_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FG_BLK_V4_NET")]
static BLOCK_V4_NET: LpmTrie<NetV4, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);
#[map(name = "FG_BLK_V6_HOST")]
static BLOCK_V6_HOST: HashMap<HostV6, ListValue> = HashMap::with_max_entries(MAP_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FG_BLK_V6_NET")]
static BLOCK_V6_NET: LpmTrie<NetV6, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);

#[map(name = "FG_ALW_V4_HOST")]
static ALLOW_V4_HOST: HashMap<HostV4, ListValue> = HashMap::with_max_entries(MAP_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FG_ALW_V4_NET")]
static ALLOW_V4_NET: LpmTrie<NetV4, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);
#[map(name = "FG_ALW_V6_HOST")]
static ALLOW_V6_HOST: HashMap<HostV6, ListValue> = HashMap::with_max_entries(MAP_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FG_ALW_V6_NET")]
static ALLOW_V6_NET: LpmTrie<NetV6, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);

#[inline(always)]
fn generation(kind: ListKind) -> Option<u32> {
    // One 4-byte read: the controller flips it as a whole.
    ACTIVE.get(kind as u32).copied()
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

#[inline(always)]
fn host_hit(v: Option<*const ListValue>, clock: &Clock) -> bool {
    match v {
        // SAFETY: a pointer into a live map value, read once.
        Some(p) => {
            let v = unsafe { *p };
            v.expires == 0 || v.live(clock.now())
        }
        None => false,
    }
}

// Map references are passed down rather than stored in a table: a static holding
// pointers to maps would need data relocations, which BPF loaders do not do.
#[inline(always)]
fn contains(
    generation: Option<u32>,
    src: &Source,
    clock: &Clock,
    v4: (&HashMap<HostV4, ListValue>, &LpmTrie<NetV4, ListValue>),
    v6: (&HashMap<HostV6, ListValue>, &LpmTrie<NetV6, ListValue>),
) -> bool {
    let Some(g) = generation else { return false };
    match src {
        Source::V4(a) => {
            host_hit(v4.0.get_ptr(&HostV4::new(g, *a)), clock) || trie_hit(v4.1, net_v4(g, *a), 32, clock)
        }
        Source::V6(a) => {
            host_hit(v6.0.get_ptr(&HostV6::new(g, *a)), clock) || trie_hit(v6.1, net_v6(g, *a), 128, clock)
        }
    }
}

pub struct MapLists<'a> {
    pub clock: &'a Clock,
}

impl Lists for MapLists<'_> {
    #[inline(always)]
    fn allowed(&self, src: &Source) -> bool {
        contains(
            generation(ListKind::Allow),
            src,
            self.clock,
            (&ALLOW_V4_HOST, &ALLOW_V4_NET),
            (&ALLOW_V6_HOST, &ALLOW_V6_NET),
        )
    }

    #[inline(always)]
    fn blocked(&self, src: &Source) -> bool {
        contains(
            generation(ListKind::Block),
            src,
            self.clock,
            (&BLOCK_V4_HOST, &BLOCK_V4_NET),
            (&BLOCK_V6_HOST, &BLOCK_V6_NET),
        )
    }
}
