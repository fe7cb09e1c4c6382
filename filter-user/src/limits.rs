//! The limiter's configuration and state, as the controller reads and writes them.

use std::{ops::RangeInclusive, time::Duration};

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use filter_common::{
    ACTIVE_LIMITS, Family,
    limit::{Ban, Bucket, Event, GLOBAL_SEED, GLOBAL_SYN, LimitConfig, SourceKey, SourceState},
    map_names,
};
use thiserror::Error;

use crate::{
    duration::nanos,
    maps::{MapSource, OpenError},
};

/// Accepted packet rates and bursts (`--pps`, `--burst`, `--syn-pps`, `--global-syn-pps`).
pub const PPS_RANGE: RangeInclusive<u64> = 1..=1_000_000_000;
/// Accepted bit rates (`--bps`): at least one byte per second.
pub const BPS_RANGE: RangeInclusive<u64> = 8..=1_000_000_000_000;
pub const V4_PREFIX_RANGE: RangeInclusive<u32> = 0..=32;
pub const V6_PREFIX_RANGE: RangeInclusive<u32> = 0..=128;
pub const DEFAULT_V4_PREFIX: u32 = 32;
pub const DEFAULT_V6_PREFIX: u32 = 64;

/// Limits as an operator gives them (`limit set`'s flags, a config file's `limits`
/// section); [`LimitParams::build`] turns them into what the data path reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitParams {
    pub pps: Option<u64>,
    pub burst: Option<u64>,
    pub bps: Option<u64>,
    pub syn_pps: Option<u64>,
    pub global_syn_pps: Option<u64>,
    pub v4_prefix: u32,
    pub v6_prefix: u32,
    pub ban_after: Option<Duration>,
    pub ban_for: Option<Duration>,
    /// Observe mode: what the limits would drop is counted and passed, no auto-bans.
    pub observe: bool,
}

impl Default for LimitParams {
    fn default() -> Self {
        LimitParams {
            pps: None,
            burst: None,
            bps: None,
            syn_pps: None,
            global_syn_pps: None,
            v4_prefix: DEFAULT_V4_PREFIX,
            v6_prefix: DEFAULT_V6_PREFIX,
            ban_after: None,
            ban_for: None,
            observe: false,
        }
    }
}

/// Limits that cannot be built. Names are the config file's keys; the CLI's flags are
/// the same with `--` and dashes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BadLimits {
    #[error("no limit given: give at least one of pps, bps, syn_pps, global_syn_pps")]
    Nothing,
    #[error("{name} is {value}, out of range {}..={}", .range.start(), .range.end())]
    OutOfRange { name: &'static str, value: u64, range: RangeInclusive<u64> },
    #[error("burst needs pps")]
    BurstWithoutPps,
    #[error("ban_after and ban_for go together: give both or neither")]
    HalfBan,
}

impl LimitParams {
    /// The configuration `limit set` installs; every value checked against the same
    /// ranges as the CLI's flags.
    pub fn build(&self) -> Result<LimitConfig, BadLimits> {
        let check = |name, value: Option<u64>, range: RangeInclusive<u64>| match value {
            Some(v) if !range.contains(&v) => Err(BadLimits::OutOfRange { name, value: v, range }),
            _ => Ok(()),
        };
        check("pps", self.pps, PPS_RANGE)?;
        check("burst", self.burst, PPS_RANGE)?;
        check("bps", self.bps, BPS_RANGE)?;
        check("syn_pps", self.syn_pps, PPS_RANGE)?;
        check("global_syn_pps", self.global_syn_pps, PPS_RANGE)?;
        let widen = |r: RangeInclusive<u32>| u64::from(*r.start())..=u64::from(*r.end());
        check("v4_prefix", Some(self.v4_prefix.into()), widen(V4_PREFIX_RANGE))?;
        check("v6_prefix", Some(self.v6_prefix.into()), widen(V6_PREFIX_RANGE))?;
        if self.pps.is_none() && self.bps.is_none() && self.syn_pps.is_none() && self.global_syn_pps.is_none()
        {
            return Err(BadLimits::Nothing);
        }
        if self.burst.is_some() && self.pps.is_none() {
            return Err(BadLimits::BurstWithoutPps);
        }
        if self.ban_after.is_some() != self.ban_for.is_some() {
            return Err(BadLimits::HalfBan);
        }
        let packets = self
            .pps
            .map(|r| Bucket::per_second(r, self.burst.unwrap_or((r / 10).max(10))))
            .unwrap_or_default();
        let bytes = self
            .bps
            .map(|bits| {
                let bytes = (bits / 8).max(1);
                Bucket::bytes_per_second(bytes, (bytes / 10).max(15_000))
            })
            .unwrap_or_default();
        let syn = self.syn_pps.map(|r| Bucket::per_second(r, (r / 10).max(5))).unwrap_or_default();
        let global_syn =
            self.global_syn_pps.map(|r| Bucket::per_second(r, (r / 10).max(5))).unwrap_or_default();
        Ok(LimitConfig {
            enabled: 1,
            v4_prefix: self.v4_prefix,
            v6_prefix: self.v6_prefix,
            observe: self.observe as u32,
            packets,
            bytes,
            syn,
            global_syn,
            ban_after_ns: self.ban_after.map(nanos).unwrap_or(0),
            ban_for_ns: self.ban_for.map(nanos).unwrap_or(0),
            given: [
                self.pps.unwrap_or(0),
                self.bps.unwrap_or(0),
                self.syn_pps.unwrap_or(0),
                self.global_syn_pps.unwrap_or(0),
            ],
            epoch: 0, // set_limits assigns the next epoch
        })
    }
}

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
        // The next install writes the slot just left: not while a program reads it.
        crate::grace::wait_for_readers();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_build_as_the_cli_did() {
        let p = LimitParams { pps: Some(200), syn_pps: Some(20), ..Default::default() };
        let c = p.build().unwrap();
        assert_eq!((c.enabled, c.v4_prefix, c.v6_prefix), (1, 32, 64));
        assert_eq!(c.given, [200, 0, 20, 0]);
        assert!(c.packets.enabled() && c.syn.enabled() && !c.bytes.enabled());
        assert_eq!(c.ban_after_ns, 0);
        let p = LimitParams {
            bps: Some(8_000_000),
            ban_after: Some(Duration::from_secs(30)),
            ban_for: Some(Duration::from_secs(600)),
            ..Default::default()
        };
        let c = p.build().unwrap();
        assert_eq!((c.ban_after_ns, c.ban_for_ns), (30_000_000_000, 600_000_000_000));
    }

    #[test]
    fn params_refused() {
        let d = LimitParams::default();
        assert_eq!(d.build(), Err(BadLimits::Nothing));
        let b = |p: LimitParams| p.build().unwrap_err();
        assert_eq!(b(LimitParams { bps: Some(8), burst: Some(5), ..d.clone() }), BadLimits::BurstWithoutPps);
        assert_eq!(
            b(LimitParams { pps: Some(1), ban_after: Some(Duration::from_secs(1)), ..d.clone() }),
            BadLimits::HalfBan
        );
        assert_eq!(
            b(LimitParams { pps: Some(0), ..d.clone() }).to_string(),
            "pps is 0, out of range 1..=1000000000"
        );
        assert!(matches!(
            b(LimitParams { bps: Some(7), ..d.clone() }),
            BadLimits::OutOfRange { name: "bps", .. }
        ));
        assert!(matches!(
            b(LimitParams { pps: Some(1), v6_prefix: 129, ..d.clone() }),
            BadLimits::OutOfRange { name: "v6_prefix", .. }
        ));
    }
}
