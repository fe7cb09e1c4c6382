//! Sampled frames: the XDP program copies the first [`SAMPLE_BYTES`] of some frames,
//! with their verdict, into a BPF ring buffer.
//!
//! Two taps, each with its own configuration slot in [`crate::map_names::SAMPLE_CFG`]
//! and its own ring buffer, so two readers never take each other's samples:
//! [`TAP_SERVICE`] feeds `floodgate run`'s incidents, [`TAP_ADHOC`] feeds `floodgate
//! capture` and `floodgate trace`. A tap picks 1 in N frames per verdict reason at
//! random (no per-source state an attacker could steer), and each CPU sends at most
//! its share of the tap's per-second cap, so the cap holds across CPUs without a
//! shared counter. With both taps off the data path reads one array slot per tap and
//! does nothing else.

use crate::Reason;

/// Bytes of each frame copied: Ethernet, a VLAN tag or two, IPv6 with some extension
/// headers, and the transport header.
pub const SAMPLE_BYTES: usize = 128;

/// The service's tap (incidents).
pub const TAP_SERVICE: u32 = 0;
/// The ad-hoc tap (`capture`, `trace`).
pub const TAP_ADHOC: u32 = 1;
pub const TAPS: u32 = 2;

/// Ring buffer size of each tap: about 1,700 samples, over a second of the largest
/// per-second cap the service sets, read every 100 ms.
pub const RING_BYTES: u32 = 256 * 1024;

/// Entries of each trace trie (sources `trace` follows).
pub const TRACE_ENTRIES: u32 = 256;

/// One tap's configuration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleConfig {
    /// Nonzero: the tap samples at all (the one field read per frame when off).
    pub on: u32,
    /// Samples per second each CPU may send (the tap's cap divided among the CPUs).
    pub per_cpu_per_sec: u32,
    /// Nonzero: every frame from a source in the trace tries is sampled (flag
    /// [`FLAG_TRACED`]), besides the 1-in-N picks.
    pub trace: u32,
    pub _pad: u32,
    /// Per [`Reason`]: a frame is picked when a random u32 is at most this
    /// ([`pick_limit`] of "1 in N"); 0: none of that reason. A comparison, where a
    /// modulo would cost a division per frame.
    pub limit: [u32; Reason::COUNT as usize],
}

/// The [`SampleConfig::limit`] that picks 1 in `every` frames (0: none).
pub const fn pick_limit(every: u32) -> u32 {
    match u32::MAX.checked_div(every) {
        Some(limit) => limit,
        None => 0,
    }
}

impl SampleConfig {
    /// Whether a frame of `reason` is picked, given a random number.
    #[inline(always)]
    pub fn picks(&self, reason: Reason, random: u32) -> bool {
        self.picks_index(reason as u32, random)
    }

    /// [`SampleConfig::picks`] for a reason as its number.
    #[inline(always)]
    pub fn picks_index(&self, reason: u32, random: u32) -> bool {
        match self.limit.get(reason as usize) {
            Some(&0) | None => false,
            Some(&limit) => random <= limit,
        }
    }
}

/// A sample as it sits in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// `bpf_ktime_get_ns` when it was taken (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The whole frame's length.
    pub frame_len: u32,
    /// Bytes of `data` that hold the frame (`min(frame_len, SAMPLE_BYTES)`).
    pub cap_len: u16,
    /// [`Reason`] as u8.
    pub reason: u8,
    /// [`FLAG_TRACED`], and the reason a check in observe mode would have dropped
    /// the frame for ([`Sample::would_drop`]).
    pub flags: u8,
    pub data: [u8; SAMPLE_BYTES],
}

impl Default for Sample {
    fn default() -> Self {
        Sample { ts_ns: 0, frame_len: 0, cap_len: 0, reason: 0, flags: 0, data: [0; SAMPLE_BYTES] }
    }
}

/// The sample was taken because its source is traced, not as a 1-in-N pick.
pub const FLAG_TRACED: u8 = 1;

/// [`Sample::flags`] bits holding the would-drop reason plus one (0: none).
pub const WOULD_DROP_SHIFT: u32 = 4;

/// The flags bits that say a check in observe mode would have dropped the frame for
/// `reason` (every [`Reason`] fits: there are fewer than 15).
#[inline(always)]
pub const fn would_drop_flags(reason: Reason) -> u8 {
    ((reason as u8) + 1) << WOULD_DROP_SHIFT
}

impl Sample {
    /// The reason a check in observe mode would have dropped this frame for.
    pub fn would_drop(&self) -> Option<Reason> {
        match self.flags >> WOULD_DROP_SHIFT {
            0 => None,
            n => Reason::ALL.get(n as usize - 1).copied(),
        }
    }
}

/// Per CPU and tap: the cap's window and what happened to picks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapState {
    /// Start of the current one-second window (`bpf_ktime_get_ns`).
    pub window_ns: u64,
    /// Samples sent in the window.
    pub used: u32,
    pub _pad: u32,
    /// Samples sent into the ring buffer.
    pub sent: u64,
    /// Picks left out by the per-second cap.
    pub capped: u64,
    /// Picks lost because the ring buffer was full (its reader is behind or gone).
    pub lost: u64,
}

impl TapState {
    /// Counts a pick at `now` against the cap; whether it may be sent.
    #[inline(always)]
    pub fn admit(&mut self, now: u64, per_sec: u32) -> bool {
        if now.wrapping_sub(self.window_ns) >= 1_000_000_000 {
            self.window_ns = now;
            self.used = 0;
        }
        if self.used >= per_sec {
            self.capped += 1;
            return false;
        }
        self.used += 1;
        true
    }
}

/// A frame of `reason` in a sample's byte.
pub fn reason_of(byte: u8) -> Option<Reason> {
    Reason::ALL.get(usize::from(byte)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_holds_per_window() {
        let mut s = TapState::default();
        let t0 = 5_000_000_000;
        let sent = (0..100).filter(|i| s.admit(t0 + i * 1000, 10)).count();
        assert_eq!((sent, s.capped), (10, 90));
        assert!(s.admit(t0 + 1_000_000_000, 10), "a new window");
    }

    #[test]
    fn picks_one_in_n() {
        let mut c = SampleConfig { on: 1, ..Default::default() };
        c.limit[Reason::Blocklist as usize] = pick_limit(4);
        let picked =
            (0u32..4000).filter(|&r| c.picks(Reason::Blocklist, r.wrapping_mul(2_654_435_761))).count();
        assert!((950..=1050).contains(&picked), "{picked}");
        assert!(!c.picks(Reason::Passed, 0), "0: that reason is off");
        c.limit[Reason::Passed as usize] = pick_limit(1);
        assert!(c.picks(Reason::Passed, u32::MAX) && c.picks(Reason::Passed, 0), "1 in 1: every frame");
    }

    #[test]
    fn reasons_round_trip() {
        for r in Reason::ALL {
            assert_eq!(reason_of(r as u8), Some(r));
        }
        assert_eq!(reason_of(200), None);
    }

    #[test]
    fn the_would_drop_reason_round_trips_beside_the_traced_flag() {
        for r in Reason::ALL {
            let s = Sample { flags: would_drop_flags(r) | FLAG_TRACED, ..Default::default() };
            assert_eq!(s.would_drop(), Some(r));
            assert_eq!(s.flags & FLAG_TRACED, FLAG_TRACED);
        }
        assert_eq!(Sample { flags: FLAG_TRACED, ..Default::default() }.would_drop(), None);
    }
}
