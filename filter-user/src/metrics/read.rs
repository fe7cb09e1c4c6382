//! Reading one filter's maps for a scrape: through read-only file descriptors
//! (`BPF_F_RDONLY`: the kernel refuses any write through them) and without the pin
//! directory's lock, so a scrape never waits for a writer and never changes a map.
//!
//! The maps are opened again at every scrape (a few dozen syscalls): after a program
//! upgrade that replaced the pinned maps, the next scrape reads the new ones.

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use aya::{
    Pod,
    maps::{HashMap, IterableMap as _, Map, MapData, MapError},
};
use filter_common::{
    Counter, MODE_NATIVE, MODE_SKB,
    limit::{Event, SourceKey},
};
use thiserror::Error;

use crate::{
    limits::{LimitError, LimiterMaps},
    maps::{Core, MapSource, MetaError, OpenError, check_layout},
    pins::IfacePins,
    rules::{RuleError, RuleMaps},
    stats::{Counters, Totals},
    synproxy::{SynProxyError, SynProxyMaps},
};

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("floodgate is not attached to {0} (no pins in {1})")]
    NotAttached(String, String),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("reading {what}")]
    Map {
        what: &'static str,
        #[source]
        source: MapError,
    },
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error(transparent)]
    Limits(#[from] LimitError),
    #[error(transparent)]
    SynProxy(#[from] SynProxyError),
}

fn map_err(what: &'static str) -> impl Fn(MapError) -> ReadError {
    move |source| ReadError::Map { what, source }
}

/// An attached filter's pins, checked to be this floodgate's layout (as
/// [`crate::maps::Pinned`]), every map opened read-only.
pub struct ReadOnlyPins<'a> {
    pins: &'a IfacePins,
}

impl<'a> ReadOnlyPins<'a> {
    pub fn open(pins: &'a IfacePins) -> Result<Self, OpenError> {
        check_layout(pins)?;
        Ok(ReadOnlyPins { pins })
    }
}

impl MapSource for ReadOnlyPins<'_> {
    fn map(&mut self, name: &'static str) -> Result<Map, OpenError> {
        let path = self.pins.map(name);
        let pin = |source| OpenError::Pin { path: path.display().to_string(), source };
        let fd = obj_get_read_only(&path).map_err(|e| self.refuse(pin(MapError::IoError(e))))?;
        MapData::from_fd(fd).and_then(Map::from_map_data).map_err(|e| self.refuse(pin(e)))
    }

    fn refuse(&self, e: OpenError) -> OpenError {
        OpenError::Incompatible {
            iface: self.pins.iface.clone(),
            dir: self.pins.dir.display().to_string(),
            what: crate::loader::error_chain(&e),
        }
    }
}

/// `union bpf_attr` as BPF_OBJ_GET reads it, padded to the size the other calls use.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _rest: [u8; 108],
}

/// A read-only file descriptor on the object pinned at `path`.
fn obj_get_read_only(path: &Path) -> io::Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_F_RDONLY: u32 = 1 << 3;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: BPF_F_RDONLY,
        path_fd: 0,
        _rest: [0; 108],
    };
    // SAFETY: attr is a complete, zero-padded bpf_attr for BPF_OBJ_GET; the path it
    // points to lives until the call returns.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &mut attr as *mut ObjGetAttr, size_of::<ObjGetAttr>())
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// One rule's counters.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSample {
    pub id: u32,
    /// Its name, or `rule-ID` for an unnamed rule (as `rule list` shows it).
    pub name: String,
    /// "drop", "pass" or "observe".
    pub action: &'static str,
    pub hits: Counter,
}

/// The lists' entries (by `[ListKind][Family]`) and their capacity per list and family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListSample {
    pub capacity: u32,
    pub counts: [[u32; 2]; 2],
}

/// Entries and capacity of one of the limiter's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSample {
    /// `rate`, `heavy` or `bans`.
    pub table: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// Everything a scrape reports about one filter.
#[derive(Clone, Debug, PartialEq)]
pub struct InterfaceSample {
    pub interface: String,
    /// `native` or `skb`.
    pub mode: &'static str,
    pub ifindex: u32,
    /// CLOCK_REALTIME seconds at attach.
    pub attached_at: u64,
    pub totals: Totals,
    /// What checks in observe mode would have dropped, by reason.
    pub would_drop: Totals,
    pub rules: Vec<RuleSample>,
    /// None while a list change is under way (or was cut short): the stored counts are
    /// not to be trusted then, and recounting a million entries is not a scrape's job.
    pub lists: Option<ListSample>,
    pub tables: Vec<TableSample>,
    /// Distinct sources in the limiter's tables (`rate` and `heavy`).
    pub tracked_sources: u64,
    /// Auto-bans stored and not expired.
    pub autobans_active: u64,
    /// The limiter's event counters ([`Event`] index).
    pub events: [u64; Event::COUNT as usize],
    pub syncookies_enabled: bool,
    /// ACKs netfilter's SYNPROXY rule checked for this interface (its nftables counter),
    /// when SYN cookies are on and the rule is in this network namespace.
    pub syncookie_acks: Option<u64>,
}

pub fn mode_name(mode: u32) -> &'static str {
    match mode {
        MODE_NATIVE => "native",
        MODE_SKB => "skb",
        _ => "unknown",
    }
}

/// Reads one filter's maps (read-only, no lock). The nftables counter is left to the
/// caller, which asks nft once for every interface.
pub fn read_interface(pins: &IfacePins) -> Result<InterfaceSample, ReadError> {
    if !pins.exists() {
        return Err(ReadError::NotAttached(pins.iface.clone(), pins.dir.display().to_string()));
    }
    let mut src = ReadOnlyPins::open(pins)?;
    let meta = Core::open(&mut src)?.read()?;
    // As ListMaps::read_meta finds them unverified; it would recount, a scrape skips.
    let changing = meta._pad != 0 || meta.counts.iter().flatten().any(|&c| c > meta.max_entries);
    let lists = (!changing).then_some(ListSample { capacity: meta.max_entries, counts: meta.counts });
    let counters = Counters::open(&mut src)?;
    let totals = counters.totals().map_err(map_err("the verdict counters"))?;
    let would_drop = counters.would_drop().map_err(map_err("the would-drop counters"))?;
    let rules = RuleMaps::open(&mut src)?
        .rules()?
        .into_iter()
        .map(|r| RuleSample {
            id: r.id,
            action: r.spec.action(),
            name: if r.spec.name.is_empty() { format!("rule-{}", r.id) } else { r.spec.name },
            hits: r.hits,
        })
        .collect();
    let limiter = LimiterMaps::open(&mut src)?;
    let (rate, heavy, bans, autobans_active) = limiter_tables(&limiter)?;
    let tracked_sources = (rate.0.len() + heavy.0.difference(&rate.0).count()) as u64;
    let mut events = [0u64; Event::COUNT as usize];
    for e in [Event::AutoBan, Event::BanMapFull, Event::HeavyMapFull] {
        events[e as usize] = limiter.event(e).map_err(map_err("the limiter's events"))?;
    }
    let syncookies_enabled = SynProxyMaps::open(&mut src)?.synproxy_config()?.enabled != 0;
    Ok(InterfaceSample {
        interface: pins.iface.clone(),
        mode: mode_name(meta.mode),
        ifindex: meta.ifindex,
        attached_at: meta.attached_at,
        totals,
        would_drop,
        rules,
        lists,
        tables: vec![
            TableSample { table: "rate", entries: rate.0.len() as u64, capacity: rate.1 },
            TableSample { table: "heavy", entries: heavy.0.len() as u64, capacity: heavy.1 },
            TableSample { table: "bans", entries: bans.0, capacity: bans.1 },
        ],
        tracked_sources,
        autobans_active,
        events,
        syncookies_enabled,
        syncookie_acks: None,
    })
}

type KeysAndCapacity = (HashSet<SourceKey>, u64);

/// The sources in FG_RATE and FG_HEAVY with each map's capacity, FG_BANS' entries and
/// capacity, and how many of its bans are still in force.
fn limiter_tables(l: &LimiterMaps) -> Result<(KeysAndCapacity, KeysAndCapacity, (u64, u64), u64), ReadError> {
    let rate = keys(&l.rate)?;
    let heavy = keys(&l.heavy)?;
    let bans = l.bans();
    let now = crate::store::monotonic_ns();
    let active = bans.iter().filter(|(_, b)| b.expires > now).count() as u64;
    Ok((rate, heavy, (bans.len() as u64, capacity(&l.bans)?), active))
}

fn capacity<V: Pod>(map: &HashMap<MapData, SourceKey, V>) -> Result<u64, ReadError> {
    Ok(map.map().info().map_err(map_err("a limiter table's size"))?.max_entries() as u64)
}

/// The distinct keys of a hash map the data path changes while we read it: in
/// batches ([`batch_keys`]), or where the kernel refuses those, key by key.
fn keys<V: Pod>(map: &HashMap<MapData, SourceKey, V>) -> Result<KeysAndCapacity, ReadError> {
    let info = map.map().info().map_err(map_err("a limiter table's size"))?;
    let cap = info.max_entries() as u64;
    let mut set = HashSet::new();
    if batch_keys(map.map().fd().as_fd(), info.value_size() as usize, &mut set).is_ok() {
        return Ok((set, cap));
    }
    // When the key the walk stands on is deleted (an LRU eviction), the kernel
    // restarts it from the first key: the set drops the repeats, and the walk is
    // bounded to twice the map's capacity so that churn cannot keep it going.
    set.clear();
    for k in map.keys().take(2 * cap as usize) {
        set.insert(k.map_err(map_err("a limiter table's keys"))?);
    }
    Ok((set, cap))
}

/// `union bpf_attr` as the BPF_MAP_*_BATCH calls read it.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Adds the keys of the hash map `fd` (keys [`SourceKey`], values `value_size` bytes)
/// to `into`, 4,096 at a time with BPF_MAP_LOOKUP_BATCH: a full 131,072-source table
/// in 32 syscalls rather than one per key, and a walk by bucket that does not restart
/// when the data path evicts the key it stands on.
fn batch_keys(fd: BorrowedFd<'_>, value_size: usize, into: &mut HashSet<SourceKey>) -> io::Result<()> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    const CHUNK: usize = 4096;
    let mut keys = vec![SourceKey::default(); CHUNK];
    let mut values = vec![0u8; CHUNK * value_size];
    // A hash map's batch token is a bucket index (u32); room for more costs nothing.
    let (mut token_in, mut token_out) = ([0u8; 64], [0u8; 64]);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: attr is a complete bpf_attr for the batch calls; the kernel writes at
        // most `count` keys (SourceKey: plain integers, any bytes valid) and values
        // (`value_size` bytes each) into buffers that large, a token of at most a key's
        // size into token_out, and the count back into attr.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        into.extend(&keys[..(attr.count as usize).min(CHUNK)]);
        match err {
            None => {}
            // The end of the map (with the last keys, if any).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}
