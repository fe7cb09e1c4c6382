//! Reading the per-CPU verdict counters.

use aya::maps::{MapData, MapError, PerCpuArray};
use filter_common::{Counter, Reason, map_names};

use crate::maps::{MapSource, OpenError};

/// The verdict counters' group: per CPU, `{packets, bytes}` per [`Reason`].
pub struct Counters {
    pub counters: PerCpuArray<MapData, Counter>,
    /// What checks in observe mode would have dropped, per [`Reason`].
    pub would_drop: PerCpuArray<MapData, Counter>,
}

/// Totals over all CPUs, indexed by [`Reason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals(pub [Counter; Reason::COUNT as usize]);

impl Totals {
    pub fn get(&self, r: Reason) -> Counter {
        self.0[r as usize]
    }

    /// Per-reason difference `self - earlier` (counters only grow while attached).
    pub fn since(&self, earlier: &Totals) -> Totals {
        let mut d = *self;
        for (c, e) in d.0.iter_mut().zip(earlier.0.iter()) {
            c.packets = c.packets.saturating_sub(e.packets);
            c.bytes = c.bytes.saturating_sub(e.bytes);
        }
        d
    }

    pub fn packets(&self) -> u64 {
        self.0.iter().map(|c| c.packets).sum()
    }
}

impl Counters {
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        Ok(Counters {
            counters: src.typed(map_names::COUNTERS)?,
            would_drop: src.typed(map_names::WOULD_DROP)?,
        })
    }

    /// Counters of each CPU separately, in CPU order.
    pub fn totals_per_cpu(&self) -> Result<Vec<Totals>, MapError> {
        let mut out: Vec<Totals> = Vec::new();
        for r in Reason::ALL {
            for (cpu, c) in self.counters.get(&(r as u32), 0)?.iter().enumerate() {
                if out.len() <= cpu {
                    out.resize(cpu + 1, Totals::default());
                }
                out[cpu].0[r as usize] = *c;
            }
        }
        Ok(out)
    }

    pub fn totals(&self) -> Result<Totals, MapError> {
        sum(&self.counters)
    }

    /// What checks in observe mode would have dropped (those frames were passed, or
    /// dropped by a later check), summed over CPUs.
    pub fn would_drop(&self) -> Result<Totals, MapError> {
        sum(&self.would_drop)
    }
}

fn sum(map: &PerCpuArray<MapData, Counter>) -> Result<Totals, MapError> {
    {
        let mut t = Totals::default();
        for r in Reason::ALL {
            for c in map.get(&(r as u32), 0)?.iter() {
                t.0[r as usize].packets += c.packets;
                t.0[r as usize].bytes += c.bytes;
            }
        }
        Ok(t)
    }
}
