//! The allow and block lists as the data path sees them: for each family an exact-host
//! hash map (one lookup however long the list) and an LPM trie for shorter prefixes,
//! both keyed by the list's active generation (see filter_common::keys).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, lpm_trie::Key},
};
use filter_common::{
    DEFAULT_MAX_ENTRIES, GEN_PREFIX_BITS, HostV4, HostV6, ListKind, ListValue, Lists, Meta, NetV4,
    NetV6, Source, net_v4, net_v6,
};

/// Kernel capacity of each list map: room for both generations during `--replace`.
/// `attach --max-entries` overrides it; NO_PREALLOC means only stored entries cost memory.
const MAP_CAPACITY: u32 = 2 * DEFAULT_MAX_ENTRIES;

#[map(name = "FG_ACTIVE")]
static ACTIVE: Array<u32> = Array::with_max_entries(2, 0);

/// Read by the controller only; declared here so it is created and pinned with the rest.
#[map(name = "FG_META")]
static META: Array<Meta> = Array::with_max_entries(1, 0);

#[map(name = "FG_BLK_V4_HOST")]
static BLOCK_V4_HOST: HashMap<HostV4, ListValue> =
    HashMap::with_max_entries(MAP_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FG_BLK_V4_NET")]
static BLOCK_V4_NET: LpmTrie<NetV4, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);
#[map(name = "FG_BLK_V6_HOST")]
static BLOCK_V6_HOST: HashMap<HostV6, ListValue> =
    HashMap::with_max_entries(MAP_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FG_BLK_V6_NET")]
static BLOCK_V6_NET: LpmTrie<NetV6, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);

#[map(name = "FG_ALW_V4_HOST")]
static ALLOW_V4_HOST: HashMap<HostV4, ListValue> =
    HashMap::with_max_entries(MAP_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FG_ALW_V4_NET")]
static ALLOW_V4_NET: LpmTrie<NetV4, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);
#[map(name = "FG_ALW_V6_HOST")]
static ALLOW_V6_HOST: HashMap<HostV6, ListValue> =
    HashMap::with_max_entries(MAP_CAPACITY, BPF_F_NO_PREALLOC);
#[map(name = "FG_ALW_V6_NET")]
static ALLOW_V6_NET: LpmTrie<NetV6, ListValue> = LpmTrie::with_max_entries(MAP_CAPACITY, 0);

#[inline(always)]
fn generation(kind: ListKind) -> Option<u32> {
    // One 4-byte read: the controller flips it as a whole.
    ACTIVE.get(kind as u32).copied()
}

// Map references are passed down rather than stored in a table: a static holding
// pointers to maps would need data relocations, which BPF loaders do not do.
#[inline(always)]
fn contains(
    generation: Option<u32>,
    src: &Source,
    v4: (&HashMap<HostV4, ListValue>, &LpmTrie<NetV4, ListValue>),
    v6: (&HashMap<HostV6, ListValue>, &LpmTrie<NetV6, ListValue>),
) -> bool {
    let Some(g) = generation else { return false };
    match src {
        Source::V4(a) => {
            v4.0.get_ptr(&HostV4::new(g, *a)).is_some()
                || v4
                    .1
                    .get(&Key::new(GEN_PREFIX_BITS + 32, net_v4(g, *a)))
                    .is_some()
        }
        Source::V6(a) => {
            v6.0.get_ptr(&HostV6::new(g, *a)).is_some()
                || v6
                    .1
                    .get(&Key::new(GEN_PREFIX_BITS + 128, net_v6(g, *a)))
                    .is_some()
        }
    }
}

pub struct MapLists;

impl Lists for MapLists {
    #[inline(always)]
    fn allowed(&self, src: &Source) -> bool {
        contains(
            generation(ListKind::Allow),
            src,
            (&ALLOW_V4_HOST, &ALLOW_V4_NET),
            (&ALLOW_V6_HOST, &ALLOW_V6_NET),
        )
    }

    #[inline(always)]
    fn blocked(&self, src: &Source) -> bool {
        contains(
            generation(ListKind::Block),
            src,
            (&BLOCK_V4_HOST, &BLOCK_V4_NET),
            (&BLOCK_V6_HOST, &BLOCK_V6_NET),
        )
    }
}
