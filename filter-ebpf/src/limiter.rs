//! The rate limiter's maps and its side of filter_common::limit.
//!
//! State layout (see filter_common::limit for the arithmetic and its error bound):
//! one [`SourceState`] per source key, shared by all CPUs, updated with atomic adds.
//! New sources live in an LRU map, so a flood of random sources costs a bounded table
//! and a bounded amount of work per packet. A source that goes over its limit is copied
//! into FG_HEAVY, an ordinary hash that newcomers cannot evict, and is looked up there
//! first from then on: a known over-rate source cannot shed its debt by being pushed
//! out of the LRU. FG_HEAVY entries are dropped by the data path once their source has
//! been quiet for [`HEAVY_IDLE_NS`].
//!
//! A source enters the LRU on its second packet only: FG_DOOR, a direct-mapped array
//! of fingerprints, remembers the first. A random-source flood (one packet per
//! source) then costs a hash and an array write per packet instead of an LRU insert
//! and eviction, and cannot push tracked sources out. The first packet is charged
//! when the source is admitted. Under a flood of R new sources per second a slot
//! lives about DOOR_ENTRIES / R seconds, so a source slower than R / DOOR_ENTRIES
//! packets per second may stay untracked (i.e. unlimited) while the flood lasts.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_NO_PREALLOC, BPF_NOEXIST},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use filter_common::{
    ACTIVE_LIMITS, BAN_ENTRIES, DEFAULT_MAX_SOURCES, HEAVY_ENTRIES, Limiter, Packet, Reason, Source,
    limit::{
        Ban, Cell64, DOOR_ENTRIES, Event, GLOBAL_ENTRIES, GLOBAL_HEAVY, GLOBAL_SEED, GLOBAL_SYN, LimitConfig,
        LimitVerdict, SourceCells, SourceKey, SourceState, ban_due, door_hash, police, take,
    },
    map_names,
};

use crate::{clock::Clock, lists::ACTIVE, log};

/// An over-limit source leaves FG_HEAVY this long after its last drop.
const HEAVY_IDLE_NS: u64 = 60_000_000_000;

#[map(name = "FG_LIMITS")]
static LIMITS: Array<LimitConfig> = Array::with_max_entries(2, 0);
#[map(name = "FG_RATE")]
static RATE: LruHashMap<SourceKey, SourceState> = LruHashMap::with_max_entries(DEFAULT_MAX_SOURCES, 0);
// No prealloc: entries are freed after an RCU grace period, so deleting one while
// another CPU still updates it is safe.
#[map(name = "FG_HEAVY")]
static HEAVY: HashMap<SourceKey, SourceState> = HashMap::with_max_entries(HEAVY_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "FG_BANS")]
static BANS: HashMap<SourceKey, Ban> = HashMap::with_max_entries(BAN_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "FG_GLOBAL")]
static GLOBAL: Array<u64> = Array::with_max_entries(GLOBAL_ENTRIES, 0);
// Fingerprints of sources seen once; shared by all CPUs (racy writes only cost an
// extra packet before a source is tracked).
#[map(name = "FG_DOOR")]
static DOOR: Array<u32> = Array::with_max_entries(DOOR_ENTRIES, 0);
#[map(name = "FG_EVENTS")]
static EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Event::COUNT, 0);

/// A u64 in map memory shared by all CPUs.
pub struct Shared(pub *mut u64);

impl Cell64 for Shared {
    #[inline(always)]
    fn get(&self) -> u64 {
        // SAFETY: points into a live map value; aligned u64 loads do not tear.
        unsafe { core::ptr::read_volatile(self.0) }
    }
    #[inline(always)]
    fn set(&self, v: u64) {
        // SAFETY: as above, for stores.
        unsafe { core::ptr::write_volatile(self.0, v) }
    }
    #[inline(always)]
    fn add(&self, v: u64) {
        atomic_add(self.0, v);
    }
}

/// An atomic add whose result is unused: BPF's `lock *(u64 *)(rX) += rY`, which every
/// kernel with XDP supports. The bpf target has no compare-and-swap, so core's
/// AtomicU64 offers no fetch_add there; the intrinsic lowers to the same instruction.
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn atomic_add(p: *mut u64, v: u64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    // SAFETY: `p` points into a live map value, aligned to 8.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// Host build (clippy): same semantics through core's atomics.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: as above.
    unsafe {
        (*(p as *const core::sync::atomic::AtomicU64)).fetch_add(v, core::sync::atomic::Ordering::Relaxed)
    };
}

struct StateCells {
    packets: Shared,
    bytes: Shared,
    syn: Shared,
}

impl SourceCells for StateCells {
    type C = Shared;
    fn tat_packets(&self) -> &Shared {
        &self.packets
    }
    fn tat_bytes(&self) -> &Shared {
        &self.bytes
    }
    fn tat_syn(&self) -> &Shared {
        &self.syn
    }
}

#[inline(always)]
fn event(e: Event) {
    if let Some(c) = EVENTS.get_ptr_mut(e as u32) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
}

pub struct MapLimiter<'a> {
    cfg: Option<&'a LimitConfig>,
    clock: &'a Clock,
}

impl<'a> MapLimiter<'a> {
    #[inline(always)]
    pub fn new(clock: &'a Clock) -> Self {
        let slot = ACTIVE.get(ACTIVE_LIMITS).copied().unwrap_or(0);
        Self { cfg: LIMITS.get(slot & 1), clock }
    }

    #[inline(always)]
    fn key(cfg: &LimitConfig, src: &Source) -> SourceKey {
        match src {
            Source::V4(a) => SourceKey::v4(*a, cfg.v4_prefix),
            Source::V6(a) => SourceKey::v6(*a, cfg.v6_prefix),
        }
    }

    /// The state of `key`: FG_HEAVY first, then the LRU, creating it there on the
    /// source's second packet (the doorkeeper remembers the first). Returns the state
    /// and whether it is in FG_HEAVY; `None` for a source not tracked yet.
    #[inline(always)]
    fn state(
        &self,
        cfg: &LimitConfig,
        key: &SourceKey,
        pkt: &Packet,
        len: u64,
    ) -> Option<(*mut SourceState, bool)> {
        let heavies = GLOBAL.get_ptr_mut(GLOBAL_HEAVY);
        // SAFETY: live map value; a stale read only costs (or saves) one lookup.
        if let Some(n) = heavies
            && unsafe { core::ptr::read_volatile(n) } != 0
            && let Some(p) = HEAVY.get_ptr_mut(key)
        {
            // SAFETY: live map value.
            let last = unsafe { (*p).last_drop };
            if self.clock.now().wrapping_sub(last) < HEAVY_IDLE_NS {
                return Some((p, true));
            }
            if HEAVY.remove(key).is_ok() {
                atomic_add(n, u64::MAX);
            }
        }
        if let Some(p) = RATE.get_ptr_mut(key) {
            return Some((p, false));
        }
        // An LRU insert (with its eviction) costs several times a lookup: a random
        // source flood, one packet per source, must not pay it for every packet.
        let seed = GLOBAL.get(GLOBAL_SEED).copied().unwrap_or(0);
        let (slot, fp) = door_hash(key, seed);
        let door = DOOR.get_ptr_mut(slot)?;
        // SAFETY: live map value; a racing write by another CPU is harmless.
        unsafe {
            if core::ptr::read_volatile(door) != fp {
                core::ptr::write_volatile(door, fp);
                return None;
            }
            core::ptr::write_volatile(door, 0);
        }
        // Second packet: tracked from now on, with the first packet charged as if it
        // were this one (late, which is only stricter), so the buckets' bounds hold
        // from the first packet.
        let now = self.clock.now();
        let mut init = SourceState { epoch: cfg.epoch, passed: 1, ..SourceState::default() };
        if cfg.packets.enabled() {
            init.tat_packets = now.wrapping_add(cfg.packets.cost);
        }
        if cfg.bytes.enabled() {
            init.tat_bytes = now.wrapping_add(cfg.bytes.byte_cost(len));
        }
        if cfg.syn.enabled() && pkt.is_syn() {
            init.tat_syn = now.wrapping_add(cfg.syn.cost);
        }
        let _ = RATE.insert(key, &init, BPF_NOEXIST as u64);
        RATE.get_ptr_mut(key).map(|p| (p, false))
    }
}

impl Limiter for MapLimiter<'_> {
    #[inline(always)]
    fn observing(&self) -> bool {
        self.cfg.is_some_and(|c| c.observe != 0)
    }

    #[inline(always)]
    fn banned(&self, src: &Source) -> bool {
        let Some(cfg) = self.cfg else { return false };
        // Bans exist only while auto-ban is configured (`limit set/clear` remove them).
        if cfg.ban_after_ns == 0 {
            return false;
        }
        match BANS.get_ptr(&Self::key(cfg, src)) {
            // SAFETY: live map value.
            Some(b) => self.clock.now() < unsafe { (*b).expires },
            None => false,
        }
    }

    #[inline(always)]
    fn police(&self, pkt: &Packet, len: u64) -> Reason {
        let Some(cfg) = self.cfg else { return Reason::Passed };
        if cfg.enabled == 0 {
            return Reason::Passed;
        }
        let key = Self::key(cfg, &pkt.src);
        let Some((state, heavy)) = self.state(cfg, &key, pkt, len) else {
            // Untracked (first packet): only the global SYN budget applies, which is
            // what stops a SYN flood from random sources.
            if pkt.is_syn() {
                let Some(global) = GLOBAL.get_ptr_mut(GLOBAL_SYN) else { return Reason::Passed };
                if !take(&cfg.global_syn, &Shared(global), self.clock.now(), cfg.global_syn.cost) {
                    return Reason::SynLimit;
                }
            }
            return Reason::Passed;
        };
        // SAFETY: field pointers into a live map value.
        unsafe {
            if (*state).epoch != cfg.epoch {
                // Limits changed since this source was last seen: start it afresh.
                for tat in [
                    addr_of_mut!((*state).tat_packets),
                    addr_of_mut!((*state).tat_bytes),
                    addr_of_mut!((*state).tat_syn),
                ] {
                    Shared(tat).set(0);
                }
                Shared(addr_of_mut!((*state).over_since)).set(0);
                Shared(addr_of_mut!((*state).epoch)).set(cfg.epoch);
            }
        }
        let Some(global) = GLOBAL.get_ptr_mut(GLOBAL_SYN) else { return Reason::Passed };
        let now = self.clock.now();
        // SAFETY: field pointers into a live map value.
        let cells = unsafe {
            StateCells {
                packets: Shared(addr_of_mut!((*state).tat_packets)),
                bytes: Shared(addr_of_mut!((*state).tat_bytes)),
                syn: Shared(addr_of_mut!((*state).tat_syn)),
            }
        };
        let verdict = police(cfg, &cells, &Shared(global), now, len, pkt.is_syn());
        // SAFETY: as above.
        let (passed, dropped) =
            unsafe { (Shared(addr_of_mut!((*state).passed)), Shared(addr_of_mut!((*state).dropped))) };
        match verdict {
            LimitVerdict::Pass => {
                passed.add(1);
                Reason::Passed
            }
            LimitVerdict::GlobalSynLimit => {
                dropped.add(1);
                Reason::SynLimit
            }
            LimitVerdict::RateLimit | LimitVerdict::SynLimit => {
                dropped.add(1);
                // SAFETY: as above.
                let due = unsafe {
                    ban_due(
                        cfg,
                        &Shared(addr_of_mut!((*state).over_since)),
                        &Shared(addr_of_mut!((*state).last_drop)),
                        now,
                    )
                };
                if !heavy {
                    // Inserted straight from the live map value: a copy would take 64
                    // bytes of a stack the sampler's calls share.
                    // SAFETY: a live map value, read by the helper.
                    match HEAVY.insert(&key, unsafe { &*state }, BPF_NOEXIST as u64) {
                        Ok(()) => {
                            if let Some(n) = GLOBAL.get_ptr_mut(GLOBAL_HEAVY) {
                                atomic_add(n, 1);
                            }
                        }
                        Err(_) if HEAVY.get_ptr(&key).is_none() => {
                            event(Event::HeavyMapFull);
                            log::table_full(log::Kind::HeavyMapFull, map_names::HEAVY);
                        }
                        Err(_) => {}
                    }
                }
                // Limits in observe mode only note what they would drop: no bans.
                if due && cfg.observe == 0 {
                    let ban = Ban { expires: now + cfg.ban_for_ns, banned_at: now };
                    // The next episode must last ban_after again before another ban.
                    // SAFETY: field pointer into a live map value.
                    unsafe { Shared(addr_of_mut!((*state).over_since)).set(0) };
                    match BANS.insert(&key, &ban, BPF_NOEXIST as u64) {
                        Ok(()) => {
                            event(Event::AutoBan);
                            log::auto_ban(&key, cfg.ban_for_ns);
                        }
                        Err(_) => {
                            // Present already (expired, or raced by another CPU) or full.
                            if BANS.get_ptr(&key).is_some() {
                                let _ = BANS.insert(&key, &ban, BPF_ANY as u64);
                                event(Event::AutoBan);
                                log::auto_ban(&key, cfg.ban_for_ns);
                            } else {
                                event(Event::BanMapFull);
                                log::table_full(log::Kind::BanMapFull, map_names::BANS);
                            }
                        }
                    }
                }
                if verdict == LimitVerdict::SynLimit { Reason::SynLimit } else { Reason::RateLimit }
            }
        }
    }
}
