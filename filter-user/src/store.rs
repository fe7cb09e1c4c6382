//! List operations on the maps: add, remove, atomic replace, listing.
//!
//! Callers hold the interface lock (see `pins::Lock`): these functions assume they are
//! the only writer. Every operation checks everything it can before it changes a
//! map, and undoes its own changes if the kernel refuses one midway, so a command
//! either applies whole or leaves the lists as they were.
//!
//! The same holds when the process is killed at any moment (SIGKILL included): a
//! change of one entry is one map write; a change of several is written into the
//! inactive generation and made visible by one write of the active index. The
//! bookkeeping (counts, expiry index) is marked while a change is under way, and the
//! next writer rebuilds it from the maps when a change was cut short (see [`CHANGING`]).

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::Duration,
};

use aya::maps::{MapError, lpm_trie::Key};
use filter_common::{
    EntryKey, Family, GEN_PREFIX_BITS, HostV4, HostV6, ListKind, ListValue, META_VERSION, Meta, net_v4,
    net_v6, split_net_v4, split_net_v6,
};
use ipnet::IpNet;
use thiserror::Error;

use crate::maps::FilterMaps;

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
    #[error(
        "the pinned maps have layout version {found}, this floodgate expects {expected}: detach and attach again"
    )]
    Version { found: u32, expected: u32 },
    #[error("{op} failed on the {list} maps")]
    Map {
        op: &'static str,
        list: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading or writing floodgate's bookkeeping map")]
    Meta(#[source] MapError),
    #[error("interrupted; the list was left as it was")]
    Interrupted,
    #[error("an entry count would go out of range; nothing was changed")]
    Count,
    #[error("a TTL of {0} s does not fit the data path's clock")]
    TtlTooLong(u64),
}

/// Where an entry lives: exact hosts in the hash maps, shorter prefixes in the tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    V4Host([u8; 4]),
    V4Net(u8, [u8; 4]),
    V6Host([u8; 16]),
    V6Net(u8, [u8; 16]),
}

impl Slot {
    fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => Slot::V4Host(n.addr().octets()),
            IpNet::V4(n) => Slot::V4Net(n.prefix_len(), n.network().octets()),
            IpNet::V6(n) if n.prefix_len() == 128 => Slot::V6Host(n.addr().octets()),
            IpNet::V6(n) => Slot::V6Net(n.prefix_len(), n.network().octets()),
        }
    }

    fn family(&self) -> Family {
        match self {
            Slot::V4Host(_) | Slot::V4Net(..) => Family::V4,
            Slot::V6Host(_) | Slot::V6Net(..) => Family::V6,
        }
    }

    fn net(&self) -> IpNet {
        let (addr, len) = match *self {
            Slot::V4Host(a) => (IpAddr::V4(Ipv4Addr::from(a)), 32),
            Slot::V4Net(l, a) => (IpAddr::V4(Ipv4Addr::from(a)), l),
            Slot::V6Host(a) => (IpAddr::V6(Ipv6Addr::from(a)), 128),
            Slot::V6Net(l, a) => (IpAddr::V6(Ipv6Addr::from(a)), l),
        };
        IpNet::new(addr, len).expect("valid prefix length")
    }

    fn prefix_len(&self) -> u32 {
        match *self {
            Slot::V4Host(_) => 32,
            Slot::V6Host(_) => 128,
            Slot::V4Net(l, _) | Slot::V6Net(l, _) => l as u32,
        }
    }

    /// The value stored with the entry: its own prefix length (see [`ListValue`]) and
    /// its expiry.
    fn value(&self, expires: u64) -> ListValue {
        ListValue { prefix_len: self.prefix_len(), _pad: 0, expires }
    }

    fn expiry_key(&self, kind: ListKind) -> EntryKey {
        let mut addr = [0u8; 16];
        let family = match *self {
            Slot::V4Host(a) | Slot::V4Net(_, a) => {
                addr[..4].copy_from_slice(&a);
                4
            }
            Slot::V6Host(a) | Slot::V6Net(_, a) => {
                addr = a;
                6
            }
        };
        EntryKey { list: kind as u32, family, prefix_len: self.prefix_len(), addr }
    }

    fn from_expiry_key(k: &EntryKey) -> Option<(ListKind, Slot)> {
        let kind = match k.list {
            0 => ListKind::Block,
            1 => ListKind::Allow,
            _ => return None,
        };
        let mut a4 = [0u8; 4];
        a4.copy_from_slice(&k.addr[..4]);
        let slot = match (k.family, k.prefix_len) {
            (4, 32) => Slot::V4Host(a4),
            (4, l) if l < 32 => Slot::V4Net(l as u8, a4),
            (6, 128) => Slot::V6Host(k.addr),
            (6, l) if l < 128 => Slot::V6Net(l as u8, k.addr),
            _ => return None,
        };
        Some((kind, slot))
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`, which the data path
/// compares expiry times with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A list entry as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub net: IpNet,
    /// Monotonic ns when it stops matching, for entries added with a TTL.
    pub expires: Option<u64>,
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
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
/// index (see [`FilterMaps::recover`]). Readers recount in memory meanwhile.
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

impl FilterMaps {
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
        let meta = self.meta.get(&0, 0).map_err(StoreError::Meta)?;
        if meta.version != META_VERSION {
            return Err(StoreError::Version { found: meta.version, expected: META_VERSION });
        }
        Ok(meta)
    }

    /// Whether the stored counts cannot be trusted: a change was interrupted, or they
    /// are out of range (left by an older floodgate whose counts could wrap).
    fn unverified(meta: &Meta) -> bool {
        meta._pad != 0 || meta.counts.iter().flatten().any(|&c| c > meta.max_entries)
    }

    pub fn write_meta(&mut self, meta: &Meta) -> Result<(), StoreError> {
        self.meta.set(0, meta, 0).map_err(StoreError::Meta)
    }

    /// Entries of each list's active generation, by `[ListKind][Family]`.
    fn count_active(&self) -> Result<[[u32; 2]; 2], StoreError> {
        let mut counts = [[0u32; 2]; 2];
        for kind in ListKind::ALL {
            counts[kind as usize] = per_family(&self.slots(kind, self.generation(kind)?)?)?;
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
        let expires = self.lookup(kind, g, slot)?.map_or(0, |v| v.expires);
        let key = slot.expiry_key(kind);
        match self.expiry.get(&key, 0) {
            Ok(e) if e == expires => Ok(()),
            Err(_) if expires == 0 => Ok(()),
            _ => self.index_expiry(kind, slot, expires),
        }
    }

    fn generation(&self, kind: ListKind) -> Result<u32, StoreError> {
        self.active.get(&(kind as u32), 0).map(|g| g & 1).map_err(StoreError::Meta)
    }

    fn map_err(kind: ListKind, op: &'static str) -> impl Fn(MapError) -> StoreError {
        move |source| StoreError::Map { op, list: kind.name(), source }
    }

    /// The exact entry `slot` in generation `g`, if present.
    fn lookup(&self, kind: ListKind, g: u32, slot: &Slot) -> Result<Option<ListValue>, StoreError> {
        let m = self.list(kind);
        let found = match *slot {
            Slot::V4Host(a) => m.v4_host.get(&HostV4::new(g, a), 0),
            Slot::V6Host(a) => m.v6_host.get(&HostV6::new(g, a), 0),
            Slot::V4Net(l, a) => m.v4_net.get(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(g, a)), 0),
            Slot::V6Net(l, a) => m.v6_net.get(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(g, a)), 0),
        };
        match found {
            Ok(v) if v.prefix_len == slot.prefix_len() => Ok(Some(v)),
            Ok(_) | Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Self::map_err(kind, "lookup")(e)),
        }
    }

    fn insert(&mut self, kind: ListKind, g: u32, slot: &Slot, expires: u64) -> Result<(), StoreError> {
        let v = slot.value(expires);
        let m = self.list_mut(kind);
        match *slot {
            Slot::V4Host(a) => m.v4_host.insert(&HostV4::new(g, a), &v, 0),
            Slot::V6Host(a) => m.v6_host.insert(&HostV6::new(g, a), &v, 0),
            Slot::V4Net(l, a) => m.v4_net.insert(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(g, a)), &v, 0),
            Slot::V6Net(l, a) => m.v6_net.insert(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(g, a)), &v, 0),
        }
        .map_err(Self::map_err(kind, "insert"))
    }

    fn delete(&mut self, kind: ListKind, g: u32, slot: &Slot) -> Result<(), StoreError> {
        let m = self.list_mut(kind);
        match *slot {
            Slot::V4Host(a) => m.v4_host.remove(&HostV4::new(g, a)),
            Slot::V6Host(a) => m.v6_host.remove(&HostV6::new(g, a)),
            Slot::V4Net(l, a) => m.v4_net.remove(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(g, a))),
            Slot::V6Net(l, a) => m.v6_net.remove(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(g, a))),
        }
        .map_err(Self::map_err(kind, "delete"))
    }

    fn check_interrupt() -> Result<(), StoreError> {
        if INTERRUPT.load(Relaxed) { Err(StoreError::Interrupted) } else { Ok(()) }
    }

    /// Inserts `slots` into the inactive generation `g` (cleared beforehand by the
    /// caller); stops early when interrupted. The caller clears `g` on failure.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        kind: ListKind,
        g: u32,
        slots: &[Slot],
        expires: u64,
        done: &mut u64,
        total: u64,
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        for slot in slots {
            if expires != 0 {
                self.index_expiry(kind, slot, expires)?;
            }
            self.insert(kind, g, slot, expires)?;
            *done += 1;
            if done.is_multiple_of(4096) {
                Self::check_interrupt()?;
                progress(*done, total);
            }
        }
        Ok(())
    }

    /// Builds the inactive generation as the active one `g` without `drop` and with
    /// `set` (entries new or with a new expiry, all with `expires`), then switches
    /// packets to it with one 4-byte write. Until that write packets see exactly the
    /// old list; after it, exactly the new one: a process killed at any moment leaves
    /// one or the other. Returns the generation now active; the caller commits the
    /// bookkeeping, then clears the old generation.
    fn rewrite(
        &mut self,
        kind: ListKind,
        g: u32,
        set: &[Slot],
        expires: u64,
        drop: &HashSet<Slot>,
        progress: Progress<'_>,
    ) -> Result<u32, StoreError> {
        let n = g ^ 1;
        let result = self.build_next(kind, g, n, set, expires, drop, progress).and_then(|()| {
            Self::check_interrupt()?;
            self.active.set(kind as u32, &n, 0).map_err(StoreError::Meta)
        });
        if let Err(e) = result {
            // Nothing was switched: undo the inactive generation and any expiry the
            // index was told about, so the list and its index are as before.
            let _ = self.clear_generation(kind, n);
            for slot in set {
                let _ = self.fix_index(kind, g, slot);
            }
            return Err(e);
        }
        Ok(n)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_next(
        &mut self,
        kind: ListKind,
        g: u32,
        n: u32,
        set: &[Slot],
        expires: u64,
        drop: &HashSet<Slot>,
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        // A change that died halfway may have left entries in the inactive generation.
        self.clear_generation(kind, n)?;
        let replaced: HashSet<Slot> = set.iter().copied().collect();
        let old = self.slots(kind, g)?;
        let total = (old.len() + set.len()) as u64;
        let mut done = 0u64;
        for slot in &old {
            if !drop.contains(slot)
                && !replaced.contains(slot)
                && let Some(v) = self.lookup(kind, g, slot)?
            {
                self.insert(kind, n, slot, v.expires)?;
            }
            done += 1;
            if done.is_multiple_of(4096) {
                Self::check_interrupt()?;
                progress(done, total);
            }
        }
        self.fill(kind, n, set, expires, &mut done, total, progress)?;
        progress(total, total);
        Ok(())
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
                    family: family_name(f),
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
                Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                other => other,
            }
        } else {
            self.expiry.insert(&key, &expires, 0)
        };
        r.map_err(Self::map_err(kind, "expiry index"))
    }

    /// Changes one entry in place (one map write, atomic by itself), keeping the
    /// expiry index a superset of the expiring entries at every moment: the index is
    /// written before an expiring entry and cleared after a permanent one.
    fn set_one(&mut self, kind: ListKind, g: u32, slot: &Slot, expires: u64) -> Result<(), StoreError> {
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
    /// All or nothing, also when the process is killed: one changed entry is one map
    /// write; more are written into a new generation (a copy of the active one plus the
    /// additions) that packets switch to at once (see [`FilterMaps::rewrite`]).
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
        let unique = dedup(nets);
        let mut new = Vec::with_capacity(unique.len());
        let mut update = Vec::new();
        for slot in &unique {
            match self.lookup(kind, g, slot)? {
                None => new.push(*slot),
                Some(v) if v.expires != 0 && v.expires != expires => update.push(*slot),
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
        match changed.len() {
            0 => return Ok(result),
            1 => {
                self.mark(&mut meta)?;
                self.set_one(kind, g, &changed[0], expires)?;
                meta.counts[kind as usize] = counts;
                self.commit(&mut meta)?;
                progress(1, 1);
            }
            _ => {
                self.mark(&mut meta)?;
                match self.rewrite(kind, g, &changed, expires, &HashSet::new(), progress) {
                    Ok(_) => {}
                    Err(e) => {
                        self.commit(&mut meta)?;
                        return Err(e);
                    }
                }
                meta.counts[kind as usize] = counts;
                self.commit(&mut meta)?;
                self.clear_generation(kind, g)?;
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
    /// If any is missing, nothing is removed. All or nothing like [`FilterMaps::add`].
    pub fn remove(&mut self, kind: ListKind, nets: &[IpNet]) -> Result<usize, StoreError> {
        let mut meta = self.prepare()?;
        let g = self.generation(kind)?;
        let unique = dedup(nets);
        let mut missing = Vec::new();
        for slot in &unique {
            if self.lookup(kind, g, slot)?.is_none() {
                missing.push(slot.net().to_string());
            }
        }
        if !missing.is_empty() {
            let mut sample = missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if missing.len() > 5 {
                sample.push_str(", ...");
            }
            return Err(StoreError::NotPresent { list: kind.name(), missing: missing.len(), sample });
        }
        let removing = per_family(&unique)?;
        let mut counts = meta.counts[kind as usize];
        if adjust(&mut counts, removing, false).is_err() {
            // The stored count is lower than what is stored: recount, then check again.
            self.recover(&mut meta)?;
            counts = meta.counts[kind as usize];
            adjust(&mut counts, removing, false)?;
        }
        self.mark(&mut meta)?;
        if let [slot] = unique[..] {
            self.delete(kind, g, &slot)?;
        } else {
            let drop: HashSet<Slot> = unique.iter().copied().collect();
            if let Err(e) = self.rewrite(kind, g, &[], 0, &drop, &mut |_, _| {}) {
                self.commit(&mut meta)?;
                return Err(e);
            }
        }
        meta.counts[kind as usize] = counts;
        self.commit(&mut meta)?;
        if unique.len() > 1 {
            self.clear_generation(kind, g)?;
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
        let new = old ^ 1;
        let unique = dedup(nets);
        let counts = per_family(&unique)?;
        self.check_capacity(kind, &meta, [0, 0], counts)?;
        self.mark(&mut meta)?;
        let total = unique.len() as u64;
        let result = self.clear_generation(kind, new).and_then(|()| {
            let mut done = 0;
            self.fill(kind, new, &unique, 0, &mut done, total, progress)?;
            progress(total, total);
            Self::check_interrupt()?;
            self.active.set(kind as u32, &new, 0).map_err(StoreError::Meta)
        });
        if let Err(e) = result {
            let _ = self.clear_generation(kind, new);
            self.commit(&mut meta)?;
            return Err(e);
        }
        meta.counts[kind as usize] = counts;
        self.commit(&mut meta)?;
        // Packets that read the old index just before the flip finish within
        // microseconds; the scan below takes far longer before it deletes anything.
        self.clear_generation(kind, old)?;
        // The new list is permanent: forget the old list's expiry times.
        let stale: Vec<EntryKey> =
            self.expiry.keys().filter_map(Result::ok).filter(|k| k.list == kind as u32).collect();
        for k in stale {
            let _ = self.expiry.remove(&k);
        }
        Ok(unique.len())
    }

    /// Every entry of generation `g`, in map order.
    fn slots(&self, kind: ListKind, g: u32) -> Result<Vec<Slot>, StoreError> {
        let m = self.list(kind);
        let err = Self::map_err(kind, "listing");
        let mut out = Vec::new();
        for k in m.v4_host.keys() {
            let k = k.map_err(&err)?;
            if k.generation == g {
                out.push(Slot::V4Host(k.addr));
            }
        }
        for k in m.v6_host.keys() {
            let k = k.map_err(&err)?;
            if k.generation == g {
                out.push(Slot::V6Host(k.addr));
            }
        }
        for k in m.v4_net.keys() {
            let k = k.map_err(&err)?;
            let (kg, a) = split_net_v4(&k.data());
            if kg == g && k.prefix_len() >= GEN_PREFIX_BITS {
                out.push(Slot::V4Net((k.prefix_len() - GEN_PREFIX_BITS) as u8, a));
            }
        }
        for k in m.v6_net.keys() {
            let k = k.map_err(&err)?;
            let (kg, a) = split_net_v6(&k.data());
            if kg == g && k.prefix_len() >= GEN_PREFIX_BITS {
                out.push(Slot::V6Net((k.prefix_len() - GEN_PREFIX_BITS) as u8, a));
            }
        }
        Ok(out)
    }

    fn clear_generation(&mut self, kind: ListKind, g: u32) -> Result<(), StoreError> {
        // Collect first: deleting while walking makes the kernel restart the walk.
        for slot in self.slots(kind, g)? {
            self.delete(kind, g, &slot)?;
        }
        Ok(())
    }

    /// The live entries of a list (expired ones are left out even before the sweep
    /// deletes them), IPv4 before IPv6, each in address order.
    ///
    /// Readers take no lock: a writer may switch generations and clear the old one
    /// while this reads. A read is kept only if the generation it read was still the
    /// active one when it ended; otherwise it is read again (the new generation is
    /// complete from the moment of the switch).
    pub fn entries(&self, kind: ListKind) -> Result<Vec<Entry>, StoreError> {
        const TRIES: usize = 20;
        let mut last = Vec::new();
        for _ in 0..TRIES {
            let g = self.generation(kind)?;
            last = self.entries_of(kind, g)?;
            if self.generation(kind)? == g {
                break;
            }
        }
        Ok(last)
    }

    fn entries_of(&self, kind: ListKind, g: u32) -> Result<Vec<Entry>, StoreError> {
        let now = monotonic_ns();
        let mut out = Vec::new();
        for slot in self.slots(kind, g)? {
            let expires = if self.expiry.get(&slot.expiry_key(kind), 0).is_ok() {
                self.lookup(kind, g, &slot)?.map(|v| v.expires).unwrap_or(0)
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

    /// Deletes list entries whose TTL has passed, and expired auto-bans. Returns how
    /// many were removed. Cheap when nothing expires: it walks only the expiry index
    /// and the ban map, never whole lists, and writes nothing.
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
                if self.lookup(kind, g, &slot)?.is_some_and(|v| v.expires == exp) {
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
        let bans: Vec<_> =
            self.bans.iter().filter_map(Result::ok).filter(|(_, b)| b.expires <= now).collect();
        for (key, _) in bans {
            if self.bans.remove(&key).is_ok() {
                removed += 1;
            }
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

fn dedup(nets: &[IpNet]) -> Vec<Slot> {
    let mut seen = HashSet::with_capacity(nets.len());
    nets.iter().map(Slot::of).filter(|s| seen.insert(*s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_split_by_length() {
        for s in ["192.0.2.1/32", "192.0.2.0/24", "0.0.0.0/0", "2001:db8::1/128", "2001:db8::/32", "::/0"] {
            let n: IpNet = s.parse().unwrap();
            assert_eq!(Slot::of(&n).net(), n);
        }
        assert!(matches!(Slot::of(&"192.0.2.1/32".parse().unwrap()), Slot::V4Host(_)));
        assert!(matches!(Slot::of(&"192.0.2.0/31".parse().unwrap()), Slot::V4Net(31, _)));
        assert!(matches!(Slot::of(&"2001:db8::/127".parse().unwrap()), Slot::V6Net(127, _)));
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
        assert!(!FilterMaps::unverified(&meta));
        assert!(FilterMaps::unverified(&Meta { _pad: CHANGING, ..meta }));
        assert!(FilterMaps::unverified(&Meta { counts: [[u32::MAX, 0], [0, 0]], ..meta }));
    }

    #[test]
    fn dedup_keeps_first_occurrence_order() {
        let nets: Vec<IpNet> =
            ["192.0.2.1/32", "2001:db8::/32", "192.0.2.1/32"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(dedup(&nets).len(), 2);
    }
}
