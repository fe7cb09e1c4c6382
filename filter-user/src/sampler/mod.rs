//! The sampler's maps from the controller's side: turning a tap on and off, the
//! sources `trace` follows, the tap's counters, and reading its ring buffer (see
//! filter_common::sample for the data path's side).

pub mod decode;
pub mod pcap;

use std::{
    os::fd::AsFd as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key};
use filter_common::{
    Reason, map_names,
    sample::{Sample, SampleConfig, TAP_SERVICE, TapState},
};
use ipnet::IpNet;
use thiserror::Error;

use crate::maps::{MapSource, OpenError};

#[derive(Debug, Error)]
pub enum SamplerError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{what}")]
    Map {
        what: String,
        #[source]
        source: MapError,
    },
    #[error("trace takes at most {max} prefixes per address family")]
    TooManyTraced { max: u32 },
    #[error("waiting for samples: {0}")]
    Poll(#[source] std::io::Error),
}

fn map_err(what: impl Into<String>) -> impl FnOnce(MapError) -> SamplerError {
    let what = what.into();
    move |source| SamplerError::Map { what, source }
}

/// What a tap takes.
#[derive(Clone, Debug, PartialEq)]
pub struct TapSettings {
    /// 1 in this many frames of each reason in `reasons`.
    pub every: u32,
    /// Reasons sampled; empty: every reason.
    pub reasons: Vec<Reason>,
    /// Samples per second at most, over all CPUs.
    pub max_pps: u32,
    /// Sample every frame of the traced sources (besides the 1-in-N picks).
    pub trace: bool,
}

impl TapSettings {
    /// The data path's form, the cap shared among `cpus` CPUs (each gets at least one
    /// sample a second, so with more CPUs than the cap it may be exceeded by that).
    pub fn config(&self, cpus: u32) -> SampleConfig {
        let mut c = SampleConfig {
            on: 1,
            per_cpu_per_sec: (self.max_pps / cpus.max(1)).max(1),
            trace: u32::from(self.trace),
            ..Default::default()
        };
        for r in Reason::ALL {
            if self.reasons.is_empty() || self.reasons.contains(&r) {
                c.limit[r as usize] = filter_common::sample::pick_limit(self.every);
            }
        }
        c
    }
}

/// CPUs that run the program (online ones: the cap is divided among them).
pub fn cpus() -> u32 {
    aya::util::online_cpus().map_or(1, |c| c.len() as u32).max(1)
}

/// Both taps' settings and counters, and the trace tries.
pub struct SamplerMaps {
    config: Array<MapData, SampleConfig>,
    state: PerCpuArray<MapData, TapState>,
    trace_v4: LpmTrie<MapData, [u8; 4], u32>,
    trace_v6: LpmTrie<MapData, [u8; 16], u32>,
}

impl SamplerMaps {
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        Ok(SamplerMaps {
            config: src.typed(map_names::SAMPLE_CFG)?,
            state: src.typed(map_names::SAMPLE_STATE)?,
            trace_v4: src.typed(map_names::TRACE_V4)?,
            trace_v6: src.typed(map_names::TRACE_V6)?,
        })
    }

    pub fn set(&mut self, tap: u32, cfg: &SampleConfig) -> Result<(), SamplerError> {
        self.config.set(tap, cfg, 0).map_err(map_err("setting the sampler"))
    }

    pub fn off(&mut self, tap: u32) -> Result<(), SamplerError> {
        self.set(tap, &SampleConfig::default())
    }

    pub fn get(&self, tap: u32) -> Result<SampleConfig, SamplerError> {
        self.config.get(&tap, 0).map_err(map_err("reading the sampler's settings"))
    }

    /// The tap's counters over every CPU.
    pub fn counters(&self, tap: u32) -> Result<TapState, SamplerError> {
        let per_cpu = self.state.get(&tap, 0).map_err(map_err("reading the sampler's counters"))?;
        Ok(per_cpu.iter().fold(TapState::default(), |mut t, c| {
            t.sent += c.sent;
            t.capped += c.capped;
            t.lost += c.lost;
            t
        }))
    }

    /// Replaces the traced sources with `nets`.
    pub fn set_traced(&mut self, nets: &[IpNet]) -> Result<(), SamplerError> {
        let max = filter_common::sample::TRACE_ENTRIES;
        for v6 in [false, true] {
            if nets.iter().filter(|n| matches!(n, IpNet::V6(_)) == v6).count() > max as usize {
                return Err(SamplerError::TooManyTraced { max });
            }
        }
        self.clear_traced()?;
        for n in nets {
            let len = u32::from(n.prefix_len());
            match n.trunc() {
                IpNet::V4(n) => self.trace_v4.insert(&Key::new(len, n.addr().octets()), &1, 0),
                IpNet::V6(n) => self.trace_v6.insert(&Key::new(len, n.addr().octets()), &1, 0),
            }
            .map_err(map_err(format!("adding {n} to the traced sources")))?;
        }
        Ok(())
    }

    pub fn clear_traced(&mut self) -> Result<(), SamplerError> {
        let v4: Vec<_> = self.trace_v4.keys().filter_map(Result::ok).collect();
        for k in v4 {
            self.trace_v4.remove(&k).map_err(map_err("clearing the traced sources"))?;
        }
        let v6: Vec<_> = self.trace_v6.keys().filter_map(Result::ok).collect();
        for k in v6 {
            self.trace_v6.remove(&k).map_err(map_err("clearing the traced sources"))?;
        }
        Ok(())
    }
}

/// A sample read from a ring, with its wall-clock time.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Unix time in nanoseconds.
    pub unix_ns: u64,
    pub sample: Sample,
}

impl Captured {
    pub fn reason(&self) -> Option<Reason> {
        filter_common::sample::reason_of(self.sample.reason)
    }

    /// The captured bytes of the frame.
    pub fn bytes(&self) -> &[u8] {
        &self.sample.data[..usize::from(self.sample.cap_len).min(self.sample.data.len())]
    }
}

/// Reads one tap's ring buffer (one reader per ring: a second would take samples
/// from the first).
pub struct Reader {
    ring: RingBuf<MapData>,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns, to date the samples.
    offset_ns: i128,
}

impl Reader {
    pub fn open(src: &mut impl MapSource, tap: u32) -> Result<Self, OpenError> {
        let name = if tap == TAP_SERVICE { map_names::SAMPLES } else { map_names::CAPTURE };
        Ok(Reader { ring: src.typed(name)?, offset_ns: clock_offset() })
    }

    /// Every sample waiting now, appended to `out`.
    pub fn drain(&mut self, out: &mut Vec<Captured>) {
        while let Some(item) = self.ring.next() {
            if item.len() < std::mem::size_of::<Sample>() {
                continue;
            }
            // SAFETY: the item holds at least one Sample, written whole by the program;
            // Sample is plain integers and bytes, read unaligned.
            let sample: Sample = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let unix_ns = (i128::from(sample.ts_ns) + self.offset_ns).max(0) as u64;
            out.push(Captured { unix_ns, sample });
        }
    }

    /// Waits up to `timeout` for samples to arrive.
    pub fn wait(&self, timeout: Duration) -> Result<(), SamplerError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.ring.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as u32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(SamplerError::Poll(e.into())),
        }
    }
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC now (bpf_ktime_get_ns is CLOCK_MONOTONIC).
fn clock_offset() -> i128 {
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()));
    let real = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
    real - mono
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_share_the_cap_among_cpus() {
        let s = TapSettings { every: 10, reasons: vec![Reason::Blocklist], max_pps: 1000, trace: false };
        let c = s.config(4);
        assert_eq!((c.on, c.per_cpu_per_sec, c.trace), (1, 250, 0));
        assert_eq!(c.limit[Reason::Blocklist as usize], u32::MAX / 10);
        assert_eq!(c.limit[Reason::Passed as usize], 0);
        let all = TapSettings { reasons: vec![], ..s };
        assert!(all.config(64).limit.iter().all(|&e| e == u32::MAX / 10));
        assert_eq!(all.config(5000).per_cpu_per_sec, 1);
    }
}
