//! The limiter's configuration and state, as the controller reads and writes them.

use aya::maps::MapError;
use filter_common::{
    ACTIVE_LIMITS,
    limit::{Event, GLOBAL_SYN, LimitConfig, SourceKey, SourceState},
};

use crate::{maps::FilterMaps, store::StoreError};

/// One tracked source, for `top`.
#[derive(Debug, Clone, Copy)]
pub struct Tracked {
    pub key: SourceKey,
    pub state: SourceState,
    /// In FG_HEAVY: it went over its limit recently.
    pub over_limit: bool,
}

impl FilterMaps {
    /// The configuration packets see now.
    pub fn limits(&self) -> Result<LimitConfig, StoreError> {
        let slot = self.active.get(&ACTIVE_LIMITS, 0).map_err(StoreError::Meta)?;
        self.limits.get(&(slot & 1), 0).map_err(StoreError::Meta)
    }

    /// Installs a configuration: written to the unused slot, then switched to with one
    /// 4-byte write, so no packet sees half of the old and half of the new limits.
    /// Without auto-ban, existing bans are removed (they exist only while auto-ban is
    /// configured).
    pub fn set_limits(&mut self, cfg: &LimitConfig) -> Result<(), StoreError> {
        let slot = self.active.get(&ACTIVE_LIMITS, 0).map_err(StoreError::Meta)?;
        let next = (slot & 1) ^ 1;
        let epoch = self.limits()?.epoch.wrapping_add(1);
        self.limits.set(next, &LimitConfig { epoch, ..*cfg }, 0).map_err(StoreError::Meta)?;
        self.active.set(ACTIVE_LIMITS, &next, 0).map_err(StoreError::Meta)?;
        // Like the per-source buckets (see `epoch`), the global SYN bucket starts full.
        self.global.set(GLOBAL_SYN, &0, 0).map_err(StoreError::Meta)?;
        if cfg.ban_after_ns == 0 {
            self.clear_bans()?;
        }
        Ok(())
    }

    pub fn clear_bans(&mut self) -> Result<usize, StoreError> {
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

    /// Totals over CPUs of a per-CPU event counter.
    pub fn event(&self, e: Event) -> Result<u64, MapError> {
        Ok(self.events.get(&(e as u32), 0)?.iter().sum())
    }
}

/// A source key as a CIDR string.
pub fn key_cidr(k: &SourceKey) -> String {
    if k.family == 4 {
        format!("{}.{}.{}.{}/{}", k.addr[0], k.addr[1], k.addr[2], k.addr[3], k.prefix_len)
    } else {
        format!("{}/{}", std::net::Ipv6Addr::from(k.addr), k.prefix_len)
    }
}
