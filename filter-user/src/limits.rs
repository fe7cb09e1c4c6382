//! The limiter's configuration and state, as the controller reads and writes them.

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use filter_common::{
    ACTIVE_LIMITS, Family,
    limit::{Ban, Event, GLOBAL_SEED, GLOBAL_SYN, LimitConfig, SourceKey, SourceState},
    map_names,
};
use thiserror::Error;

use crate::maps::{MapSource, OpenError};

#[derive(Debug, Error)]
#[error("{op} failed on the limiter's maps")]
pub struct LimitError {
    op: &'static str,
    #[source]
    source: MapError,
}

fn map_err(op: &'static str) -> impl Fn(MapError) -> LimitError {
    move |source| LimitError { op, source }
}

/// The limiter's group: its configuration slots and word in `FG_ACTIVE`, the tracked
/// sources, the bans, the global bucket and seed, and its event counters. The fields
/// are the raw maps (tests inspect them); everything else goes through the methods.
pub struct LimiterMaps {
    /// Only `ACTIVE_LIMITS` is touched here.
    pub active: Array<MapData, u32>,
    pub limits: Array<MapData, LimitConfig>,
    /// FG_RATE is an LRU hash; aya opens it as a HashMap (same syscalls).
    pub rate: HashMap<MapData, SourceKey, SourceState>,
    pub heavy: HashMap<MapData, SourceKey, SourceState>,
    pub bans: HashMap<MapData, SourceKey, Ban>,
    pub global: Array<MapData, u64>,
    pub events: PerCpuArray<MapData, u64>,
}

/// One tracked source, for `top`.
#[derive(Debug, Clone, Copy)]
pub struct Tracked {
    pub key: SourceKey,
    pub state: SourceState,
    /// In FG_HEAVY: it went over its limit recently.
    pub over_limit: bool,
}

impl LimiterMaps {
    /// Opens the limiter's maps. A writer then calls [`LimiterMaps::sweep`] first.
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        use map_names::*;
        Ok(LimiterMaps {
            active: src.typed(ACTIVE)?,
            limits: src.typed(LIMITS)?,
            rate: src.typed(RATE)?,
            heavy: src.typed(HEAVY)?,
            bans: src.typed(BANS)?,
            global: src.typed(GLOBAL)?,
            events: src.typed(EVENTS)?,
        })
    }

    /// The doorkeeper hashes sources with a secret seed, so that nobody can aim a
    /// flood at the slot of a source they want untracked: set once, at attach.
    pub fn init_seed(&mut self) -> Result<(), LimitError> {
        let mut seed = [0u8; 8];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = std::io::Read::read_exact(&mut f, &mut seed);
        }
        let seed = u64::from_ne_bytes(seed) ^ std::process::id() as u64;
        self.global.set(GLOBAL_SEED, &seed, 0).map_err(map_err("storing the doorkeeper's seed"))
    }

    /// The configuration packets see now.
    pub fn limits(&self) -> Result<LimitConfig, LimitError> {
        let slot = self.active.get(&ACTIVE_LIMITS, 0).map_err(map_err("reading the active slot"))?;
        self.limits.get(&(slot & 1), 0).map_err(map_err("reading the limits"))
    }

    /// Installs a configuration: written to the unused slot, then switched to with one
    /// 4-byte write, so no packet sees half of the old and half of the new limits.
    /// Without auto-ban, existing bans are removed (they exist only while auto-ban is
    /// configured).
    pub fn set_limits(&mut self, cfg: &LimitConfig) -> Result<(), LimitError> {
        let slot = self.active.get(&ACTIVE_LIMITS, 0).map_err(map_err("reading the active slot"))?;
        let next = (slot & 1) ^ 1;
        let epoch = self.limits()?.epoch.wrapping_add(1);
        self.limits.set(next, &LimitConfig { epoch, ..*cfg }, 0).map_err(map_err("writing the limits"))?;
        self.active.set(ACTIVE_LIMITS, &next, 0).map_err(map_err("switching the limits"))?;
        // Like the per-source buckets (see `epoch`), the global SYN bucket starts full.
        self.global.set(GLOBAL_SYN, &0, 0).map_err(map_err("resetting the global SYN bucket"))?;
        if cfg.ban_after_ns == 0 {
            self.clear_bans()?;
        }
        Ok(())
    }

    pub fn clear_bans(&mut self) -> Result<usize, LimitError> {
        let keys: Vec<SourceKey> = self.bans.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = self.bans.remove(k);
        }
        Ok(keys.len())
    }

    /// Every source the limiter tracks. A source in both maps is reported once, from
    /// FG_HEAVY, which holds its current state.
    pub fn tracked(&self) -> Vec<Tracked> {
        let mut out: Vec<Tracked> = self
            .heavy
            .iter()
            .filter_map(Result::ok)
            .map(|(key, state)| Tracked { key, state, over_limit: true })
            .collect();
        let heavy: std::collections::HashSet<SourceKey> = out.iter().map(|t| t.key).collect();
        out.extend(
            self.rate
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| !heavy.contains(k))
                .map(|(key, state)| Tracked { key, state, over_limit: false }),
        );
        out
    }

    /// The auto-bans stored (expired ones included until a sweep removes them).
    pub fn bans(&self) -> Vec<(SourceKey, Ban)> {
        self.bans.iter().filter_map(Result::ok).collect()
    }

    /// Deletes expired auto-bans; returns how many. Cheap when there are none: it
    /// walks only the ban map.
    pub fn sweep(&mut self) -> usize {
        let now = crate::store::monotonic_ns();
        let bans: Vec<_> =
            self.bans.iter().filter_map(Result::ok).filter(|(_, b)| b.expires <= now).collect();
        bans.into_iter().filter(|(key, _)| self.bans.remove(key).is_ok()).count()
    }

    /// Totals over CPUs of a per-CPU event counter.
    pub fn event(&self, e: Event) -> Result<u64, MapError> {
        Ok(self.events.get(&(e as u32), 0)?.iter().sum())
    }
}

/// A source key as a CIDR string.
pub fn key_cidr(k: &SourceKey) -> String {
    if k.family() == Some(Family::V4) {
        format!("{}.{}.{}.{}/{}", k.addr[0], k.addr[1], k.addr[2], k.addr[3], k.prefix_len)
    } else {
        format!("{}/{}", std::net::Ipv6Addr::from(k.addr), k.prefix_len)
    }
}
