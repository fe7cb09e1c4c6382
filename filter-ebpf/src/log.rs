//! The data path's rare events, reported through aya-log (read by `floodgate`'s
//! `bpflog` forwarder, target [`TARGET`]).
//!
//! aya-log's ring buffer holds 128 KiB and drops what does not fit, so nothing here
//! runs per packet: an auto-ban is logged once per ban, and the events that can
//! repeat for every packet (a full table, an empty tail-call slot) at most once per
//! [`EVERY_NS`] per CPU and kind. Every function first asks whether its level is on:
//! the loader sets that level as a constant (`aya_log::LEVEL`), so with logging off
//! the verifier prunes the whole call, rate limiter included.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};
use aya_log_ebpf::{
    error, info,
    macro_support::{Level, level_enabled},
    warn,
};
use filter_common::limit::SourceKey;

/// The `log` target of every record.
const TARGET: &str = "floodgate::bpf";

/// The least time between two records of one rate-limited kind on one CPU.
const EVERY_NS: u64 = 1_000_000_000;

/// The rate-limited kinds: slots of [`LOGGED_AT`].
#[derive(Clone, Copy)]
pub enum Kind {
    BanMapFull = 0,
    HeavyMapFull = 1,
    TailEmpty = 2,
}

impl Kind {
    const COUNT: u32 = 3;
}

/// When each kind was last logged on this CPU (`bpf_ktime_get_ns`).
#[map(name = "FG_LOG_AT")]
static LOGGED_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(Kind::COUNT, 0);

/// Whether a record of `kind` may go out now, and if so marks it sent.
#[inline(always)]
fn due(kind: Kind) -> bool {
    let Some(at) = LOGGED_AT.get_ptr_mut(kind as u32) else { return false };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot, valid while the program runs.
    unsafe {
        if *at != 0 && now.wrapping_sub(*at) < EVERY_NS {
            return false;
        }
        *at = now;
    }
    true
}

/// The data path banned `key` for `for_ns` (once per ban).
#[inline(always)]
pub fn auto_ban(key: &SourceKey, for_ns: u64) {
    if !level_enabled(Level::Info) {
        return;
    }
    let secs = for_ns / 1_000_000_000;
    let len = key.prefix_len;
    if key.family == 4 {
        let a = [key.addr[0], key.addr[1], key.addr[2], key.addr[3]];
        info!(&(), target: TARGET, "auto-ban {:i}/{} for {} s", a, len, secs);
    } else {
        info!(&(), target: TARGET, "auto-ban {:i}/{} for {} s", key.addr, len, secs);
    }
}

/// A map insert failed because the map is full.
#[inline(always)]
pub fn table_full(kind: Kind, map: &'static str) {
    if level_enabled(Level::Warn) && due(kind) {
        warn!(&(), target: TARGET, "table full: {} (at most one record per second per CPU)", map);
    }
}

/// The entry's tail call to fg_decide returned: its slot is empty. A message without
/// arguments, so nothing is kept across the tail call on the path every frame takes.
#[inline(always)]
pub fn decide_empty() {
    if level_enabled(Level::Error) && due(Kind::TailEmpty) {
        error!(&(), target: TARGET, "tail-call slot of fg_decide is empty: frames are dropped as unchecked (at most one record per second per CPU)");
    }
}

/// A tail call returned: program array slot `slot` is empty.
#[inline(always)]
pub fn tail_empty(slot: u32) {
    if level_enabled(Level::Error) && due(Kind::TailEmpty) {
        error!(&(), target: TARGET, "tail-call slot {} is empty (at most one record per second per CPU)", slot);
    }
}
