//! List operations on the maps: add, remove, atomic replace, listing.
//!
//! Callers hold the interface lock (see `pins::Lock`): these functions assume they are
//! the only writer. Every operation checks everything it can before it changes a
//! map, and undoes its own changes if the kernel refuses one midway, so a command
//! either applies whole or leaves the lists as they were.
//!
//! Where entries live: a list's permanent IPv4 entries are compiled into arrays
//! ([`filter_common::compiled`]) that are written whole; entries with a TTL, IPv6
//! entries, and single additions (until the next rewrite folds them into the compiled
//! arrays) live in the list's LPM tries.
//!
//! The same holds when the process is killed at any moment (SIGKILL included): a
//! change of one entry in a trie is one map write; any other change is written into
//! the inactive generation and made visible by one write of the active index. The
//! bookkeeping (counts, expiry index) is marked while a change is under way, and the
//! next writer rebuilds it from the maps when a change was cut short (see [`CHANGING`]).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::Duration,
};

use aya::maps::{Array, LpmTrie, MapData, MapError, lpm_trie::Key};
use filter_common::{
    ACTIVE_GENERATION, EntryKey, Family, GEN_PREFIX_BITS, HAS_COMPILED_V4, HAS_TRIE_V4, HAS_TRIE_V6,
    ListKind, ListValue, Meta, NetV4, NetV6, SWITCH_SHIFT,
    compiled::{CompileError, PrefixV4, compile_v4, region},
    map_names, net_v4, net_v6, split_net_v4, split_net_v6,
};
use ipnet::IpNet;
use thiserror::Error;

use crate::{
    compiled::CompiledMaps,
    maps::{Core, MapSource, MetaError, OpenError},
};

/// The tries of one list (its compiled IPv4 part is in [`ListMaps::compiled`]).
pub struct ListTries {
    pub v4_net: LpmTrie<MapData, NetV4, ListValue>,
    pub v6_net: LpmTrie<MapData, NetV6, ListValue>,
}

/// Expiry times of list entries added with a TTL, by entry. An LPM trie used for
/// exact keys only: unlike a hash map it costs memory per stored entry, not per
/// entry of capacity.
pub struct ExpiryIndex(pub LpmTrie<MapData, EntryKey, u64>);

/// Every key of the expiry index has its full length.
const EXPIRY_BITS: u32 = (size_of::<EntryKey>() * 8) as u32;

impl ExpiryIndex {
    pub fn get(&self, k: &EntryKey, flags: u64) -> Result<u64, MapError> {
        self.0.get(&Key::new(EXPIRY_BITS, *k), flags)
    }

    pub fn insert(&mut self, k: &EntryKey, v: &u64, flags: u64) -> Result<(), MapError> {
        self.0.insert(&Key::new(EXPIRY_BITS, *k), v, flags)
    }

    pub fn remove(&mut self, k: &EntryKey) -> Result<(), MapError> {
        self.0.remove(&Key::new(EXPIRY_BITS, *k))
    }

    pub fn keys(&self) -> impl Iterator<Item = Result<EntryKey, MapError>> + '_ {
        self.0.keys().map(|k| k.map(|k| k.data()))
    }

    pub fn iter(&self) -> impl Iterator<Item = Result<(EntryKey, u64), MapError>> + '_ {
        self.0.iter().map(|r| r.map(|(k, v)| (k.data(), v)))
    }
}

/// The lists' group: both lists' tries and compiled arrays, their words in
/// `FG_ACTIVE`, the expiry index, and their counts in the bookkeeping. The fields are
/// the raw maps (tests inspect them); everything else goes through the methods.
pub struct ListMaps {
    pub core: Core,
    /// Only the lists' words ([`ListKind`] index) are touched here.
    pub active: Array<MapData, u32>,
    pub block: ListTries,
    pub allow: ListTries,
    /// Both lists' compiled IPv4 arrays, mapped into this process.
    pub compiled: CompiledMaps,
    pub expiry: ExpiryIndex,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "the {list} is full: it holds {have} {family} entries, its capacity is {capacity} \
         (set by `floodgate attach --max-entries`), and this would add {adding} more; nothing was changed"
    )]
    Full { list: &'static str, family: &'static str, have: u32, adding: u32, capacity: u32 },
    #[error("{} of the given entries {} not on the {list}: {sample}; nothing was removed",
        .missing, if *.missing == 1 { "is" } else { "are" })]
    NotPresent { list: &'static str, missing: usize, sample: String },
    #[error(transparent)]
    Core(#[from] MetaError),
    #[error("{op} failed on the {list} maps")]
    Map {
        op: &'static str,
        list: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading or writing the lists' active words")]
    Active(#[source] MapError),
    #[error("interrupted; the list was left as it was")]
    Interrupted,
    #[error("an entry count would go out of range; nothing was changed")]
    Count,
    #[error("a TTL of {0} s does not fit the data path's clock")]
    TtlTooLong(u64),
    #[error("the {list} changed during each of {tries} reads (a writer is busy with it)")]
    Busy { list: &'static str, tries: usize },
    #[error("the {list} cannot be compiled")]
    Compile {
        list: &'static str,
        #[source]
        source: CompileError,
    },
}

/// An entry: a prefix of either family (a host is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Slot {
    V4(u8, [u8; 4]),
    V6(u8, [u8; 16]),
}

impl Slot {
    fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(n) => Slot::V4(n.prefix_len(), n.network().octets()),
            IpNet::V6(n) => Slot::V6(n.prefix_len(), n.network().octets()),
        }
    }

    fn family(&self) -> Family {
        match self {
            Slot::V4(..) => Family::V4,
            Slot::V6(..) => Family::V6,
        }
    }

    fn net(&self) -> IpNet {
        let (addr, len) = match *self {
            Slot::V4(l, a) => (IpAddr::V4(Ipv4Addr::from(a)), l),
            Slot::V6(l, a) => (IpAddr::V6(Ipv6Addr::from(a)), l),
        };
        IpNet::new(addr, len).expect("valid prefix length")
    }

    fn prefix_len(&self) -> u32 {
        match *self {
            Slot::V4(l, _) | Slot::V6(l, _) => l as u32,
        }
    }

    /// The value stored with the entry: its own prefix length (see [`ListValue`]) and
    /// its expiry.
    fn value(&self, expires: u64) -> ListValue {
        ListValue { prefix_len: self.prefix_len(), _pad: 0, expires }
    }

    fn compiled(&self) -> Option<PrefixV4> {
        match *self {
            Slot::V4(l, a) => Some((u32::from_be_bytes(a), l)),
            Slot::V6(..) => None,
        }
    }

    fn from_compiled((a, l): PrefixV4) -> Self {
        Slot::V4(l, a.to_be_bytes())
    }

    /// The active-word flag of the trie this entry goes into.
    fn trie_flag(&self) -> u32 {
        match self {
            Slot::V4(..) => HAS_TRIE_V4,
            Slot::V6(..) => HAS_TRIE_V6,
        }
    }

    fn expiry_key(&self, kind: ListKind) -> EntryKey {
        let mut addr = [0u8; 16];
        match *self {
            Slot::V4(_, a) => addr[..4].copy_from_slice(&a),
            Slot::V6(_, a) => addr = a,
        }
        EntryKey {
            list: kind as u32,
            family: self.family().ip_version(),
            prefix_len: self.prefix_len(),
            addr,
        }
    }

    fn from_expiry_key(k: &EntryKey) -> Option<(ListKind, Slot)> {
        let kind = ListKind::try_from(k.list).ok()?;
        let mut a4 = [0u8; 4];
        a4.copy_from_slice(&k.addr[..4]);
        let slot = match (Family::from_ip_version(k.family)?, k.prefix_len) {
            (Family::V4, l) if l <= 32 => Slot::V4(l as u8, a4),
            (Family::V6, l) if l <= 128 => Slot::V6(l as u8, k.addr),
            _ => return None,
        };
        Some((kind, slot))
    }
}

/// Where an entry of a generation is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Trie,
    Compiled,
}

/// A generation's entries, read once per command for its membership tests and its
/// rewrite (one read of each map rather than a syscall per entry tested).
struct Members {
    /// Sorted.
    compiled: Vec<Slot>,
    trie: HashMap<Slot, ListValue>,
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, which the data path
/// compares expiry times with.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux.
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// A list entry as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub net: IpNet,
    /// Monotonic ns when it stops matching, for entries added with a TTL.
    pub expires: Option<u64>,
}

/// How an entry is listed (see [`ListMaps::probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Absent,
    Permanent,
    /// Until this monotonic time (ns).
    Until(u64),
}

/// What an `add` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub added: usize,
    /// Entries already listed (or repeated in the input) and left as they were.
    pub already_present: usize,
    /// Entries already listed with a TTL whose expiry was changed (or removed).
    pub updated: usize,
}

/// Receives `(done, total)` as a long operation advances.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Set by a SIGINT/SIGTERM handler (see the `blocklist`/`allowlist` commands): a long
/// add, load, remove or replace checks it until the moment it makes its change
/// visible, and then stops with the list as it was ([`StoreError::Interrupted`]).
/// Past that moment it finishes.
pub static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// [`Meta`]'s spare word (`_pad`) holds this while a change is under way. A
/// controller killed midway (SIGKILL, a crash, a power cut of the process) leaves it
/// set; the next writer then repairs the bookkeeping from the maps themselves: it
/// clears the inactive generations, recounts the active ones and checks the expiry
/// index (see [`ListMaps::recover`]). Readers recount in memory meanwhile.
pub const CHANGING: u32 = 0x4647_4348;

/// `now + ttl` as a data-path expiry time, refused when it does not fit (never wraps
/// into an entry that is expired from the start).
pub fn expiry_after(now: u64, ttl: Duration) -> Result<u64, StoreError> {
    u64::try_from(ttl.as_nanos())
        .ok()
        .and_then(|ns| now.checked_add(ns))
        .filter(|&t| t != 0)
        .ok_or(StoreError::TtlTooLong(ttl.as_secs()))
}

/// `counts[family] + by` (or `- by`), refusing to wrap.
fn adjust(counts: &mut [u32; 2], by: [u32; 2], add: bool) -> Result<(), StoreError> {
    for f in 0..2 {
        let v = if add { counts[f].checked_add(by[f]) } else { counts[f].checked_sub(by[f]) };
        counts[f] = v.ok_or(StoreError::Count)?;
    }
    Ok(())
}

fn per_family(slots: &[Slot]) -> Result<[u32; 2], StoreError> {
    let mut n = [0u32; 2];
    for s in slots {
        let c = &mut n[s.family() as usize];
        *c = c.checked_add(1).ok_or(StoreError::Count)?;
    }
    Ok(n)
}

impl ListMaps {
    /// Opens the lists' maps. A writer then calls [`ListMaps::sweep`] first.
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        use map_names::*;
        let mut tries = |n4, n6| -> Result<ListTries, OpenError> {
            Ok(ListTries { v4_net: src.typed(n4)?, v6_net: src.typed(n6)? })
        };
        let block = tries(BLOCK_V4_NET, BLOCK_V6_NET)?;
        let allow = tries(ALLOW_V4_NET, ALLOW_V6_NET)?;
        let compiled = CompiledMaps::new(src.map(V4_DIR)?, src.map(V4_RANGES)?, src.map(V4_SHORT)?)
            .map_err(|(name, source)| src.refuse(OpenError::Type { name, source }))?;
        Ok(ListMaps {
            core: Core::open(src)?,
            active: src.typed(ACTIVE)?,
            block,
            allow,
            compiled,
            expiry: ExpiryIndex(src.typed(EXPIRY)?),
        })
    }

    pub fn list(&self, kind: ListKind) -> &ListTries {
        match kind {
            ListKind::Block => &self.block,
            ListKind::Allow => &self.allow,
        }
    }

    fn list_mut(&mut self, kind: ListKind) -> &mut ListTries {
        match kind {
            ListKind::Block => &mut self.block,
            ListKind::Allow => &mut self.allow,
        }
    }

    /// The bookkeeping, with counts recomputed from the maps (in memory only) when an
    /// interrupted change left them unverified. Never writes.
    pub fn read_meta(&self) -> Result<Meta, StoreError> {
        let mut meta = self.read_meta_raw()?;
        if Self::unverified(&meta) {
            meta.counts = self.count_active()?;
        }
        Ok(meta)
    }

    fn read_meta_raw(&self) -> Result<Meta, StoreError> {
        Ok(self.core.read()?)
    }

    /// Whether the stored counts cannot be trusted: a change was interrupted, or they
    /// are out of range (left by an older floodgate whose counts could wrap).
    fn unverified(meta: &Meta) -> bool {
        meta._pad != 0 || meta.counts.iter().flatten().any(|&c| c > meta.max_entries)
    }

    pub fn write_meta(&mut self, meta: &Meta) -> Result<(), StoreError> {
        Ok(self.core.write(meta)?)
    }

    /// Entries of each list's active generation, by `[ListKind][Family]`.
    fn count_active(&self) -> Result<[[u32; 2]; 2], StoreError> {
        let mut counts = [[0u32; 2]; 2];
        for kind in ListKind::ALL {
            let g = self.generation(kind)?;
            let slots: Vec<Slot> = self.slots(kind, g)?.into_iter().map(|(s, _)| s).collect();
            counts[kind as usize] = per_family(&slots)?;
        }
        Ok(counts)
    }

    /// The bookkeeping for a writer, repaired first if an earlier change was
    /// interrupted. Nothing is marked yet: a writer that finds nothing to do, or
    /// refuses, writes nothing.
    fn prepare(&mut self) -> Result<Meta, StoreError> {
        Self::check_interrupt()?;
        let mut meta = self.read_meta_raw()?;
        if Self::unverified(&meta) {
            self.recover(&mut meta)?;
        }
        Ok(meta)
    }

    /// Marks a change as under way (see [`CHANGING`]).
    fn mark(&mut self, meta: &mut Meta) -> Result<(), StoreError> {
        meta._pad = CHANGING;
        self.write_meta(meta)
    }

    /// Ends a change: the counts are those of what is stored.
    fn commit(&mut self, meta: &mut Meta) -> Result<(), StoreError> {
        meta._pad = 0;
        self.write_meta(meta)
    }

    /// Repairs what an interrupted change left: entries in the inactive generations
    /// (a rewrite that never flipped, or an old generation not yet cleared), counts
    /// that do not match the active generations, expiry-index keys that name no entry
    /// or an old expiry time. Afterwards the bookkeeping matches the maps exactly.
    pub fn recover(&mut self, meta: &mut Meta) -> Result<(), StoreError> {
        for kind in ListKind::ALL {
            let g = self.generation(kind)?;
            self.clear_generation(kind, g ^ 1)?;
        }
        meta.counts = self.count_active()?;
        let keys: Vec<EntryKey> = self.expiry.keys().filter_map(Result::ok).collect();
        for key in keys {
            match Slot::from_expiry_key(&key) {
                Some((kind, slot)) => {
                    let g = self.generation(kind)?;
                    self.fix_index(kind, g, &slot)?;
                }
                None => {
                    let _ = self.expiry.remove(&key);
                }
            }
        }
        self.commit(meta)
    }

    /// Makes the expiry index agree with the entry `slot` of generation `g`.
    fn fix_index(&mut self, kind: ListKind, g: u32, slot: &Slot) -> Result<(), StoreError> {
        let expires = self.trie_lookup(kind, g, slot)?.map_or(0, |v| v.expires);
        let key = slot.expiry_key(kind);
        match self.expiry.get(&key, 0) {
            Ok(e) if e == expires => Ok(()),
            Err(_) if expires == 0 => Ok(()),
            _ => self.index_expiry(kind, slot, expires),
        }
    }

    /// A list's word in the active map: generation and flags (see filter_common::keys).
    fn active_word(&self, kind: ListKind) -> Result<u32, StoreError> {
        self.active.get(&(kind as u32), 0).map_err(StoreError::Active)
    }

    fn generation(&self, kind: ListKind) -> Result<u32, StoreError> {
        Ok(self.active_word(kind)? & ACTIVE_GENERATION)
    }

    /// Sets flags in the active word, before entries they announce are written.
    fn announce(&mut self, kind: ListKind, flags: u32) -> Result<(), StoreError> {
        let w = self.active_word(kind)?;
        if w & flags != flags {
            self.active.set(kind as u32, &(w | flags), 0).map_err(StoreError::Active)?;
        }
        Ok(())
    }

    fn map_err(kind: ListKind, op: &'static str) -> impl Fn(MapError) -> StoreError {
        move |source| StoreError::Map { op, list: kind.name(), source }
    }

    /// The entries of generation `g`, for membership tests.
    fn members(&self, kind: ListKind, g: u32) -> Result<Members, StoreError> {
        let mut compiled: Vec<Slot> =
            self.compiled.read(region(kind as u32, g)).into_iter().map(Slot::from_compiled).collect();
        compiled.sort_unstable();
        let mut trie = HashMap::new();
        for slot in self.trie_slots(kind, g)? {
            if let Some(v) = self.trie_lookup(kind, g, &slot)? {
                trie.insert(slot, v);
            }
        }
        Ok(Members { compiled, trie })
    }

    /// The exact entry `slot` in generation `g`'s trie, if present.
    fn trie_lookup(&self, kind: ListKind, g: u32, slot: &Slot) -> Result<Option<ListValue>, StoreError> {
        let m = self.list(kind);
        let found = match *slot {
            Slot::V4(l, a) => m.v4_net.get(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(g, a)), 0),
            Slot::V6(l, a) => m.v6_net.get(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(g, a)), 0),
        };
        match found {
            Ok(v) if v.prefix_len == slot.prefix_len() => Ok(Some(v)),
            Ok(_) | Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Self::map_err(kind, "lookup")(e)),
        }
    }

    /// The entry `slot` in generation `g` and where it is stored, if present.
    fn lookup(m: &Members, slot: &Slot) -> Option<(Place, ListValue)> {
        if let Some(v) = m.trie.get(slot) {
            return Some((Place::Trie, *v));
        }
        m.compiled.binary_search(slot).is_ok().then(|| (Place::Compiled, slot.value(0)))
    }

    fn insert(&mut self, kind: ListKind, g: u32, slot: &Slot, expires: u64) -> Result<(), StoreError> {
        let v = slot.value(expires);
        let m = self.list_mut(kind);
        match *slot {
            Slot::V4(l, a) => m.v4_net.insert(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(g, a)), &v, 0),
            Slot::V6(l, a) => m.v6_net.insert(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(g, a)), &v, 0),
        }
        .map_err(Self::map_err(kind, "insert"))
    }

    fn delete(&mut self, kind: ListKind, g: u32, slot: &Slot) -> Result<(), StoreError> {
        let m = self.list_mut(kind);
        match *slot {
            Slot::V4(l, a) => m.v4_net.remove(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(g, a))),
            Slot::V6(l, a) => m.v6_net.remove(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(g, a))),
        }
        .map_err(Self::map_err(kind, "delete"))
    }

    fn check_interrupt() -> Result<(), StoreError> {
        if INTERRUPT.load(Relaxed) { Err(StoreError::Interrupted) } else { Ok(()) }
    }

    /// Writes generation `n` (cleared beforehand) from `entries`: permanent IPv4
    /// entries compiled, the rest into the tries. Returns the flags of what it holds.
    /// Stops early when interrupted; the caller clears `n` on failure.
    fn build(
        &mut self,
        kind: ListKind,
        n: u32,
        entries: &[(Slot, u64)],
        progress: Progress<'_>,
    ) -> Result<u32, StoreError> {
        let (compiled, trie): (Vec<_>, Vec<_>) =
            entries.iter().partition(|(s, expires)| *expires == 0 && s.compiled().is_some());
        let prefixes: Vec<PrefixV4> = compiled.iter().filter_map(|(s, _)| s.compiled()).collect();
        let c = compile_v4(&prefixes, self.compiled.capacity())
            .map_err(|source| StoreError::Compile { list: kind.name(), source })?;
        let mut flags = 0;
        if !prefixes.is_empty() {
            self.compiled.write(region(kind as u32, n), &c);
            flags |= HAS_COMPILED_V4;
        }
        let total = entries.len() as u64;
        let mut done = compiled.len() as u64;
        progress(done, total);
        // Expiry times go into their index on a thread of their own while the entries
        // go into the trie: two maps, two locks, and the syscalls of a long list of
        // expiring entries (a CrowdSec startup pull) take half the time. Nothing of
        // generation `n` is visible before the switch, so the order does not matter.
        let expiring: Vec<(Slot, u64)> =
            trie.iter().filter(|(_, e)| *e != 0).map(|(s, e)| (*s, *e)).collect();
        let index_err = Self::map_err(kind, "expiry index");
        let insert_err = Self::map_err(kind, "insert");
        let tries = match kind {
            ListKind::Block => &mut self.block,
            ListKind::Allow => &mut self.allow,
        };
        let expiry = &mut self.expiry;
        std::thread::scope(|scope| -> Result<(), StoreError> {
            let indexer = scope.spawn(|| -> Result<(), StoreError> {
                for (slot, expires) in &expiring {
                    expiry.insert(&slot.expiry_key(kind), expires, 0).map_err(&index_err)?;
                }
                Ok(())
            });
            let mut written = Ok(());
            for (slot, expires) in &trie {
                let v = slot.value(*expires);
                let r = match *slot {
                    Slot::V4(l, a) => {
                        tries.v4_net.insert(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(n, a)), &v, 0)
                    }
                    Slot::V6(l, a) => {
                        tries.v6_net.insert(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(n, a)), &v, 0)
                    }
                };
                if let Err(e) = r {
                    written = Err(insert_err(e));
                    break;
                }
                flags |= slot.trie_flag();
                done += 1;
                if done.is_multiple_of(4096) {
                    if let Err(e) = Self::check_interrupt() {
                        written = Err(e);
                        break;
                    }
                    progress(done, total);
                }
            }
            let indexed = indexer.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            written.and(indexed)
        })?;
        progress(total, total);
        Ok(flags)
    }

    /// Builds the inactive generation from `entries`, then switches packets to it with
    /// one 4-byte write. Until that write packets see exactly the old list; after it,
    /// exactly the new one: a process killed at any moment leaves one or the other.
    /// Returns the generation now active; the caller commits the bookkeeping, then
    /// clears the old generation.
    fn switch_to(
        &mut self,
        kind: ListKind,
        g: u32,
        entries: &[(Slot, u64)],
        progress: Progress<'_>,
    ) -> Result<u32, StoreError> {
        let n = g ^ 1;
        let result = self.clear_generation(kind, n).and_then(|()| {
            let flags = self.build(kind, n, entries, progress)?;
            Self::check_interrupt()?;
            let switches = (self.active_word(kind)? >> SWITCH_SHIFT).wrapping_add(1);
            self.active
                .set(kind as u32, &(n | flags | switches << SWITCH_SHIFT), 0)
                .map_err(StoreError::Active)
        });
        if let Err(e) = result {
            // Nothing was switched: undo the inactive generation and any expiry the
            // index was told about, so the list and its index are as before.
            let _ = self.clear_generation(kind, n);
            for (slot, _) in entries {
                let _ = self.fix_index(kind, g, slot);
            }
            return Err(e);
        }
        // The caller clears generation `g` next (and a later switch writes it again):
        // not before every program that may still search it has returned.
        crate::grace::wait_for_readers();
        Ok(n)
    }

    /// The active generation `g` (whose entries are `m`) without `drop` (sorted) and
    /// with `set` (entries new or with a new expiry, each with its own), written as the
    /// next generation (see [`ListMaps::switch_to`]). Permanent IPv4 entries added
    /// singly since the last rewrite move from the trie into the compiled arrays on the
    /// way.
    fn rewrite(
        &mut self,
        kind: ListKind,
        g: u32,
        m: &Members,
        set: &[(Slot, u64)],
        drop: &[Slot],
        progress: Progress<'_>,
    ) -> Result<u32, StoreError> {
        let mut replaced: Vec<Slot> = set.iter().map(|(s, _)| *s).collect();
        replaced.sort_unstable();
        let kept = |s: &Slot| drop.binary_search(s).is_err() && replaced.binary_search(s).is_err();
        // An entry in both places (re-added singly while compiled) is taken once, from the trie.
        let mut entries: Vec<(Slot, u64)> =
            m.trie.iter().filter(|(s, _)| kept(s)).map(|(s, v)| (*s, v.expires)).collect();
        entries.extend(m.compiled.iter().filter(|s| kept(s) && !m.trie.contains_key(s)).map(|s| (*s, 0)));
        entries.extend_from_slice(set);
        self.switch_to(kind, g, &entries, progress)
    }

    fn check_capacity(
        &self,
        kind: ListKind,
        meta: &Meta,
        counts: [u32; 2],
        adding: [u32; 2],
    ) -> Result<(), StoreError> {
        for f in [Family::V4, Family::V6] {
            let (have, add) = (counts[f as usize], adding[f as usize]);
            if u64::from(have) + u64::from(add) > u64::from(meta.max_entries) {
                return Err(StoreError::Full {
                    list: kind.name(),
                    family: f.name(),
                    have,
                    adding: add,
                    capacity: meta.max_entries,
                });
            }
        }
        Ok(())
    }

    /// Records (or, with `expires == 0`, forgets) an entry's expiry in the index the
    /// sweep walks, so expiring entries are found without scanning whole lists.
    fn index_expiry(&mut self, kind: ListKind, slot: &Slot, expires: u64) -> Result<(), StoreError> {
        let key = slot.expiry_key(kind);
        let r = if expires == 0 {
            match self.expiry.remove(&key) {
                Err(MapError::KeyNotFound) => Ok(()),
                Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else {
            self.expiry.insert(&key, &expires, 0)
        };
        r.map_err(Self::map_err(kind, "expiry index"))
    }

    /// Changes one trie entry in place (one map write, atomic by itself), keeping the
    /// expiry index a superset of the expiring entries at every moment: the index is
    /// written before an expiring entry and cleared after a permanent one.
    fn set_one(&mut self, kind: ListKind, g: u32, slot: &Slot, expires: u64) -> Result<(), StoreError> {
        self.announce(kind, slot.trie_flag())?;
        if expires != 0 {
            self.index_expiry(kind, slot, expires)?;
            self.insert(kind, g, slot, expires)
        } else {
            self.insert(kind, g, slot, 0)?;
            self.index_expiry(kind, slot, 0)
        }
    }

    /// Adds entries to the active generation, permanently or (with `ttl`) until they
    /// expire. Entries already present permanently stay so; entries present with a TTL
    /// take the new expiry (none, for a permanent add). Capacity is checked before
    /// anything is written.
    ///
    /// All or nothing, also when the process is killed: one changed entry is one trie
    /// write; more are written into a new generation (the active one plus the
    /// additions) that packets switch to at once (see [`ListMaps::switch_to`]).
    pub fn add(
        &mut self,
        kind: ListKind,
        nets: &[IpNet],
        ttl: Option<Duration>,
        progress: Progress<'_>,
    ) -> Result<Added, StoreError> {
        let mut meta = self.prepare()?;
        let g = self.generation(kind)?;
        let expires = match ttl {
            Some(t) => expiry_after(monotonic_ns(), t)?,
            None => 0,
        };
        let members = self.members(kind, g)?;
        let unique = dedup(nets);
        let mut new = Vec::with_capacity(unique.len());
        let mut update = Vec::new();
        for slot in &unique {
            match Self::lookup(&members, slot) {
                None => new.push(*slot),
                Some((_, v)) if v.expires != 0 && v.expires != expires => update.push(*slot),
                Some(_) => {}
            }
        }
        let adding = per_family(&new)?;
        self.check_capacity(kind, &meta, meta.counts[kind as usize], adding)?;
        let result = Added {
            added: new.len(),
            already_present: nets.len().saturating_sub(new.len() + update.len()),
            updated: update.len(),
        };
        let mut counts = meta.counts[kind as usize];
        adjust(&mut counts, adding, true)?;
        let mut changed = new;
        changed.extend_from_slice(&update);
        // A permanent IPv4 prefix of /16 or shorter (typically the range a flood comes
        // from) is compiled at once: the data path then drops its sources after one
        // directory read, in the entry program.
        let wide = |s: &Slot| expires == 0 && matches!(s, Slot::V4(l, _) if *l <= 16);
        match changed.len() {
            0 => return Ok(result),
            1 if !wide(&changed[0]) => {
                self.mark(&mut meta)?;
                self.set_one(kind, g, &changed[0], expires)?;
                meta.counts[kind as usize] = counts;
                self.commit(&mut meta)?;
                progress(1, 1);
            }
            _ => {
                let set: Vec<(Slot, u64)> = changed.iter().map(|s| (*s, expires)).collect();
                self.switch_rewritten(&mut meta, kind, g, &members, &set, &[], counts, progress)?;
                if expires == 0 {
                    for slot in &update {
                        self.index_expiry(kind, slot, 0)?;
                    }
                }
            }
        }
        Ok(result)
    }

    /// Removes exact entries (a prefix is not removed by removing an address inside it).
    /// If any is missing, nothing is removed. All or nothing like [`ListMaps::add`].
    pub fn remove(&mut self, kind: ListKind, nets: &[IpNet]) -> Result<usize, StoreError> {
        let mut meta = self.prepare()?;
        let g = self.generation(kind)?;
        let members = self.members(kind, g)?;
        let unique = dedup(nets);
        let mut missing = Vec::new();
        let mut in_trie = 0;
        for slot in &unique {
            match Self::lookup(&members, slot) {
                None => missing.push(slot.net().to_string()),
                Some((Place::Trie, _)) => in_trie += 1,
                Some((Place::Compiled, _)) => {}
            }
        }
        if !missing.is_empty() {
            let mut sample = missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if missing.len() > 5 {
                sample.push_str(", ...");
            }
            return Err(StoreError::NotPresent { list: kind.name(), missing: missing.len(), sample });
        }
        let counts = self.counts_without(&mut meta, kind, &unique)?;
        // One trie entry goes with one write; anything in the compiled arrays, or more
        // than one entry, takes a rewrite.
        if unique.len() == 1 && in_trie == 1 {
            self.mark(&mut meta)?;
            self.delete(kind, g, &unique[0])?;
            meta.counts[kind as usize] = counts;
            self.commit(&mut meta)?;
        } else {
            self.switch_rewritten(&mut meta, kind, g, &members, &[], &unique, counts, &mut |_, _| {})?;
        }
        for slot in &unique {
            let _ = self.index_expiry(kind, slot, 0);
        }
        Ok(unique.len())
    }

    /// Makes `nets` the whole list. The new entries are written into the inactive
    /// generation while packets keep matching the active one; one write to the active
    /// index then switches every CPU to the new list, and the old generation is deleted.
    /// So no packet ever sees an empty list, a partial list, or misses an entry present
    /// in both the old and the new list.
    pub fn replace(
        &mut self,
        kind: ListKind,
        nets: &[IpNet],
        progress: Progress<'_>,
    ) -> Result<usize, StoreError> {
        let mut meta = self.prepare()?;
        let old = self.generation(kind)?;
        let unique = dedup(nets);
        let counts = per_family(&unique)?;
        self.check_capacity(kind, &meta, [0, 0], counts)?;
        self.mark(&mut meta)?;
        let entries: Vec<(Slot, u64)> = unique.iter().map(|s| (*s, 0)).collect();
        if let Err(e) = self.switch_to(kind, old, &entries, progress) {
            self.commit(&mut meta)?;
            return Err(e);
        }
        meta.counts[kind as usize] = counts;
        self.commit(&mut meta)?;
        self.clear_generation(kind, old)?;
        // The new list is permanent: forget the old list's expiry times.
        let stale: Vec<EntryKey> =
            self.expiry.keys().filter_map(Result::ok).filter(|k| k.list == kind as u32).collect();
        for k in stale {
            let _ = self.expiry.remove(&k);
        }
        Ok(unique.len())
    }

    /// The list's per-family counts with `gone` taken out; a stored count lower than
    /// what is stored is recounted first.
    fn counts_without(
        &mut self,
        meta: &mut Meta,
        kind: ListKind,
        gone: &[Slot],
    ) -> Result<[u32; 2], StoreError> {
        let removing = per_family(gone)?;
        let mut counts = meta.counts[kind as usize];
        if adjust(&mut counts, removing, false).is_err() {
            self.recover(meta)?;
            counts = meta.counts[kind as usize];
            adjust(&mut counts, removing, false)?;
        }
        Ok(counts)
    }

    /// The list's per-family counts with `gone` taken out and `new` added, refused
    /// when `new` does not fit the capacity (checked before anything is written).
    fn counts_after(
        &mut self,
        meta: &mut Meta,
        kind: ListKind,
        gone: &[Slot],
        new: &[Slot],
    ) -> Result<[u32; 2], StoreError> {
        let mut counts = self.counts_without(meta, kind, gone)?;
        let adding = per_family(new)?;
        self.check_capacity(kind, meta, counts, adding)?;
        adjust(&mut counts, adding, true)?;
        Ok(counts)
    }

    /// One all-or-nothing change by a switch of generation: generation `g` (whose
    /// entries are `members`) is rewritten into the other one with `set` written at
    /// its expiry time and `gone` left out, packets switch to it with `counts`
    /// recorded, and `g` is cleared. A failed rewrite leaves `g` in force.
    #[allow(clippy::too_many_arguments)]
    fn switch_rewritten(
        &mut self,
        meta: &mut Meta,
        kind: ListKind,
        g: u32,
        members: &Members,
        set: &[(Slot, u64)],
        gone: &[Slot],
        counts: [u32; 2],
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        self.mark(meta)?;
        if let Err(e) = self.rewrite(kind, g, members, set, gone, progress) {
            self.commit(meta)?;
            return Err(e);
        }
        meta.counts[kind as usize] = counts;
        self.commit(meta)?;
        self.clear_generation(kind, g)
    }

    /// Adds `add` permanently and removes what of `drop` is listed, in one switch of
    /// generation (see [`ListMaps::replace`]): the service's way of making a list's
    /// config part what the config says, while entries added by hand (with or without
    /// a TTL) stay as they are. An entry of `add` listed with a TTL becomes permanent;
    /// an entry in both `add` and `drop` stays. Returns (added, removed).
    pub fn converge(
        &mut self,
        kind: ListKind,
        add: &[IpNet],
        drop: &[IpNet],
        progress: Progress<'_>,
    ) -> Result<(usize, usize), StoreError> {
        let mut meta = self.prepare()?;
        let g = self.generation(kind)?;
        let members = self.members(kind, g)?;
        let adding = dedup(add);
        let mut set = Vec::new();
        let mut new = Vec::new();
        for slot in &adding {
            match Self::lookup(&members, slot) {
                None => {
                    set.push(*slot);
                    new.push(*slot);
                }
                Some((_, v)) if v.expires != 0 => set.push(*slot),
                Some(_) => {}
            }
        }
        let mut gone: Vec<Slot> = dedup(drop)
            .into_iter()
            .filter(|s| adding.binary_search(s).is_err() && Self::lookup(&members, s).is_some())
            .collect();
        gone.sort_unstable();
        if set.is_empty() && gone.is_empty() {
            return Ok((0, 0));
        }
        let counts = self.counts_after(&mut meta, kind, &gone, &new)?;
        let timed: Vec<(Slot, u64)> = set.iter().map(|s| (*s, 0)).collect();
        self.switch_rewritten(&mut meta, kind, g, &members, &timed, &gone, counts, progress)?;
        for slot in set.iter().chain(&gone) {
            let _ = self.index_expiry(kind, slot, 0);
        }
        Ok((new.len(), gone.len()))
    }

    /// How each of `nets` is listed now in the active generation (exact entries; an
    /// entry whose TTL passed but that no sweep removed yet shows its old expiry). One
    /// trie lookup per entry, and one read of the compiled arrays when an IPv4 entry is
    /// not in the trie: no scan of the whole list.
    pub fn probe(&self, kind: ListKind, nets: &[IpNet]) -> Result<Vec<Listed>, StoreError> {
        let g = self.generation(kind)?;
        let mut compiled: Option<Vec<Slot>> = None;
        let mut out = Vec::with_capacity(nets.len());
        for net in nets {
            let slot = Slot::of(net);
            let listed = match self.trie_lookup(kind, g, &slot)? {
                Some(v) if v.expires == 0 => Listed::Permanent,
                Some(v) => Listed::Until(v.expires),
                None if slot.compiled().is_some() => {
                    let c = compiled.get_or_insert_with(|| {
                        let mut c: Vec<Slot> = self
                            .compiled
                            .read(region(kind as u32, g))
                            .into_iter()
                            .map(Slot::from_compiled)
                            .collect();
                        c.sort_unstable();
                        c
                    });
                    if c.binary_search(&slot).is_ok() { Listed::Permanent } else { Listed::Absent }
                }
                None => Listed::Absent,
            };
            out.push(listed);
        }
        Ok(out)
    }

    /// Gives each entry of `set` its own expiry (monotonic ns, never 0), adding the
    /// ones not listed, and removes the listed entries of `gone` (an entry in both is
    /// set): the way a source of expiring entries (the CrowdSec bouncer) keeps its part
    /// of a list. Capacity is checked before anything is written. A few changes are
    /// single trie writes, each atomic; more take one switch of generation, all or
    /// nothing. Permanent entries in `set` are the caller's to leave out: one stored
    /// compiled stays permanent. Returns (added, removed).
    pub fn set_expiries(
        &mut self,
        kind: ListKind,
        set: &[(IpNet, u64)],
        gone: &[IpNet],
        progress: Progress<'_>,
    ) -> Result<(usize, usize), StoreError> {
        /// Up to this many changes go as single writes: no rewrite of a long list for
        /// a few decisions.
        const SINGLE_WRITES: usize = 64;
        let mut timed: Vec<(Slot, u64)> = set.iter().map(|(n, e)| (Slot::of(n), (*e).max(1))).collect();
        timed.sort_unstable_by_key(|(s, _)| *s);
        // The last of an entry given twice wins.
        timed.reverse();
        timed.dedup_by_key(|(s, _)| *s);
        timed.reverse();
        let mut meta = self.prepare()?;
        let g = self.generation(kind)?;
        let gone: Vec<Slot> =
            dedup(gone).into_iter().filter(|s| timed.binary_search_by_key(s, |(t, _)| *t).is_err()).collect();
        if timed.is_empty() && gone.is_empty() {
            return Ok((0, 0));
        }
        if timed.len() + gone.len() <= SINGLE_WRITES {
            let nets: Vec<IpNet> =
                timed.iter().map(|(s, _)| s.net()).chain(gone.iter().map(Slot::net)).collect();
            let state = self.probe(kind, &nets)?;
            // A permanent entry may be compiled, which no single write changes.
            if !state.contains(&Listed::Permanent) {
                let (set_state, gone_state) = state.split_at(timed.len());
                let new: Vec<Slot> = timed
                    .iter()
                    .zip(set_state)
                    .filter(|(_, l)| **l == Listed::Absent)
                    .map(|((s, _), _)| *s)
                    .collect();
                let removing: Vec<Slot> = gone
                    .iter()
                    .zip(gone_state)
                    .filter(|(_, l)| **l != Listed::Absent)
                    .map(|(s, _)| *s)
                    .collect();
                let counts = self.counts_after(&mut meta, kind, &removing, &new)?;
                self.mark(&mut meta)?;
                for ((slot, expires), l) in timed.iter().zip(set_state) {
                    if *l != Listed::Until(*expires) {
                        self.set_one(kind, g, slot, *expires)?;
                    }
                }
                for slot in &removing {
                    self.delete(kind, g, slot)?;
                    self.index_expiry(kind, slot, 0)?;
                }
                meta.counts[kind as usize] = counts;
                self.commit(&mut meta)?;
                progress(1, 1);
                return Ok((new.len(), removing.len()));
            }
        }
        let members = self.members(kind, g)?;
        let new: Vec<Slot> =
            timed.iter().filter(|(s, _)| Self::lookup(&members, s).is_none()).map(|(s, _)| *s).collect();
        let removing: Vec<Slot> = gone.into_iter().filter(|s| Self::lookup(&members, s).is_some()).collect();
        let counts = self.counts_after(&mut meta, kind, &removing, &new)?;
        self.switch_rewritten(&mut meta, kind, g, &members, &timed, &removing, counts, progress)?;
        for slot in &removing {
            let _ = self.index_expiry(kind, slot, 0);
        }
        Ok((new.len(), removing.len()))
    }

    /// Every trie entry of generation `g`, in map order.
    fn trie_slots(&self, kind: ListKind, g: u32) -> Result<Vec<Slot>, StoreError> {
        let m = self.list(kind);
        let err = Self::map_err(kind, "listing");
        let mut out = Vec::new();
        for k in m.v4_net.keys() {
            let k = k.map_err(&err)?;
            let (kg, a) = split_net_v4(&k.data());
            if kg == g && k.prefix_len() >= GEN_PREFIX_BITS {
                out.push(Slot::V4((k.prefix_len() - GEN_PREFIX_BITS) as u8, a));
            }
        }
        for k in m.v6_net.keys() {
            let k = k.map_err(&err)?;
            let (kg, a) = split_net_v6(&k.data());
            if kg == g && k.prefix_len() >= GEN_PREFIX_BITS {
                out.push(Slot::V6((k.prefix_len() - GEN_PREFIX_BITS) as u8, a));
            }
        }
        Ok(out)
    }

    /// Every entry of generation `g` and where it is stored. An entry is in one place
    /// only, except a permanent IPv4 entry re-added singly while compiled (it is then
    /// reported once, from the trie).
    fn slots(&self, kind: ListKind, g: u32) -> Result<Vec<(Slot, Place)>, StoreError> {
        let trie = self.trie_slots(kind, g)?;
        let in_trie: HashSet<Slot> = trie.iter().copied().collect();
        let mut out: Vec<(Slot, Place)> = trie.into_iter().map(|s| (s, Place::Trie)).collect();
        out.extend(
            self.compiled
                .read(region(kind as u32, g))
                .into_iter()
                .map(Slot::from_compiled)
                .filter(|s| !in_trie.contains(s))
                .map(|s| (s, Place::Compiled)),
        );
        Ok(out)
    }

    /// Deletes generation `g`'s trie entries and empties its compiled region. A
    /// generation just switched away from is cleared only after [`ListMaps::switch_to`]
    /// waited out the programs that read the active word before the switch.
    fn clear_generation(&mut self, kind: ListKind, g: u32) -> Result<(), StoreError> {
        // Collect first: deleting while walking makes the kernel restart the walk.
        for slot in self.trie_slots(kind, g)? {
            self.delete(kind, g, &slot)?;
        }
        let r = region(kind as u32, g);
        if !self.compiled.is_empty(r) {
            self.compiled.clear(r);
        }
        Ok(())
    }

    /// The live entries of a list (expired ones are left out even before the sweep
    /// deletes them), IPv4 before IPv6, each in address order.
    ///
    /// Readers take no lock: a writer may switch generations and clear the old one
    /// while this reads. A read is kept only if the list's active word (generation and
    /// switch count) was the same when it ended; otherwise it is read again (the new
    /// generation is complete from the moment of the switch). A list that switches
    /// during every one of many reads gives [`StoreError::Busy`], never a partial list:
    /// the caller can then read under the interface lock.
    pub fn entries(&self, kind: ListKind) -> Result<Vec<Entry>, StoreError> {
        const TRIES: usize = 50;
        for _ in 0..TRIES {
            let w = self.active_word(kind)?;
            let read = self.entries_of(kind, w & ACTIVE_GENERATION)?;
            if self.active_word(kind)? >> SWITCH_SHIFT == w >> SWITCH_SHIFT {
                return Ok(read);
            }
        }
        Err(StoreError::Busy { list: kind.name(), tries: TRIES })
    }

    fn entries_of(&self, kind: ListKind, g: u32) -> Result<Vec<Entry>, StoreError> {
        let now = monotonic_ns();
        let mut out = Vec::new();
        for (slot, place) in self.slots(kind, g)? {
            let expires = if place == Place::Trie && self.expiry.get(&slot.expiry_key(kind), 0).is_ok() {
                self.trie_lookup(kind, g, &slot)?.map(|v| v.expires).unwrap_or(0)
            } else {
                0
            };
            if expires != 0 && expires <= now {
                continue;
            }
            out.push(Entry { net: slot.net(), expires: (expires != 0).then_some(expires) });
        }
        out.sort_by(|a, b| net_order(&a.net, &b.net));
        Ok(out)
    }

    /// Entries whose TTL has run out but that no writer has swept yet, by
    /// `[ListKind][Family]`: the data path ignores them already, so a reader can leave
    /// them out of its counts (and leave them for the next writer to sweep).
    pub fn expired(&self) -> [[u32; 2]; 2] {
        let now = monotonic_ns();
        let mut out = [[0u32; 2]; 2];
        for (key, exp) in self.expiry.iter().filter_map(Result::ok) {
            if exp <= now
                && let Some((kind, slot)) = Slot::from_expiry_key(&key)
            {
                out[kind as usize][slot.family() as usize] += 1;
            }
        }
        out
    }

    /// Deletes list entries whose TTL has passed (expired auto-bans are the limiter's:
    /// [`crate::limits::LimiterMaps::sweep`]). Returns how many were removed. Cheap
    /// when nothing expires: it walks only the expiry index, never whole lists, and
    /// writes nothing.
    pub fn sweep(&mut self) -> Result<usize, StoreError> {
        let now = monotonic_ns();
        let mut meta = self.prepare()?;
        let due: Vec<(EntryKey, u64)> =
            self.expiry.iter().filter_map(Result::ok).filter(|(_, exp)| *exp <= now).collect();
        let mut removed = 0;
        if !due.is_empty() {
            self.mark(&mut meta)?;
            for (key, exp) in due {
                let Some((kind, slot)) = Slot::from_expiry_key(&key) else {
                    let _ = self.expiry.remove(&key);
                    continue;
                };
                let g = self.generation(kind)?;
                // Only if the entry still carries that expiry (not re-added since).
                if self.trie_lookup(kind, g, &slot)?.is_some_and(|v| v.expires == exp) {
                    let mut counts = meta.counts[kind as usize];
                    let mut one = [0; 2];
                    one[slot.family() as usize] = 1;
                    adjust(&mut counts, one, false)?;
                    self.delete(kind, g, &slot)?;
                    meta.counts[kind as usize] = counts;
                    removed += 1;
                }
                // The entry first, then its index key: never an expiring entry the
                // index has lost.
                let _ = self.expiry.remove(&key);
            }
            self.commit(&mut meta)?;
        }
        Ok(removed)
    }
}

/// IPv4 before IPv6, then by address and length.
pub fn net_order(a: &IpNet, b: &IpNet) -> std::cmp::Ordering {
    match (a, b) {
        (IpNet::V4(_), IpNet::V6(_)) => std::cmp::Ordering::Less,
        (IpNet::V6(_), IpNet::V4(_)) => std::cmp::Ordering::Greater,
        _ => a.cmp(b),
    }
}

/// The entries, each once, sorted.
fn dedup(nets: &[IpNet]) -> Vec<Slot> {
    let mut slots: Vec<Slot> = nets.iter().map(Slot::of).collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip() {
        for s in ["192.0.2.1/32", "192.0.2.0/24", "0.0.0.0/0", "2001:db8::1/128", "2001:db8::/32", "::/0"] {
            let n: IpNet = s.parse().unwrap();
            let slot = Slot::of(&n);
            assert_eq!(slot.net(), n);
            assert_eq!(
                Slot::from_expiry_key(&slot.expiry_key(ListKind::Allow)),
                Some((ListKind::Allow, slot))
            );
            if let Some(p) = slot.compiled() {
                assert_eq!(Slot::from_compiled(p), slot);
            }
        }
    }

    #[test]
    fn expiry_times_and_counts_never_wrap() {
        let ten_years = crate::duration::MAX_DURATION;
        assert_eq!(expiry_after(1_000, Duration::from_secs(1)).unwrap(), 1_000_001_000);
        assert!(expiry_after(monotonic_ns(), ten_years).is_ok());
        assert!(matches!(
            expiry_after(u64::MAX - 5, Duration::from_nanos(6)),
            Err(StoreError::TtlTooLong(_))
        ));
        assert!(expiry_after(0, Duration::from_secs(u64::MAX)).is_err());
        let mut c = [1u32, 0];
        assert!(matches!(adjust(&mut c, [2, 0], false), Err(StoreError::Count)));
        assert!(matches!(adjust(&mut c, [0, 1], false), Err(StoreError::Count)));
        assert!(matches!(adjust(&mut [u32::MAX, 0], [1, 0], true), Err(StoreError::Count)));
        let mut c = [5u32, 7];
        adjust(&mut c, [2, 3], false).unwrap();
        assert_eq!(c, [3, 4]);
    }

    #[test]
    fn unverified_counts_are_noticed() {
        let meta = Meta { max_entries: 10, counts: [[3, 4], [0, 0]], ..Meta::default() };
        assert!(!ListMaps::unverified(&meta));
        assert!(ListMaps::unverified(&Meta { _pad: CHANGING, ..meta }));
        assert!(ListMaps::unverified(&Meta { counts: [[u32::MAX, 0], [0, 0]], ..meta }));
    }

    #[test]
    fn dedup_keeps_each_entry_once() {
        let nets: Vec<IpNet> =
            ["192.0.2.1/32", "2001:db8::/32", "192.0.2.1/32"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(dedup(&nets).len(), 2);
    }
}
