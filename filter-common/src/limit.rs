//! Per-source rate limiting: the GCRA ("virtual scheduling") form of a token bucket.
//!
//! Each bucket is one u64, its theoretical arrival time (TAT) in ns of
//! `bpf_ktime_get_ns`. A packet of cost `c` conforms when `TAT - now <= tolerance`;
//! it then advances TAT by `c` (and TAT is first pulled up to `now` if it lags, which
//! is how an idle bucket refills). With `c = interval = 1e9/rate` and
//! `tolerance = (burst - 1) * interval`, at most `burst + elapsed / interval` packets
//! conform in any window (proved by the property tests below).
//!
//! Sharing across CPUs: the XDP program keeps one bucket per source for all CPUs and
//! advances it with an atomic add, so every passed packet is accounted for exactly;
//! only the conformance test and the add are separate steps. Error bound: when the
//! CPUs race on the same bucket, each CPU can pass at most one packet on a stale
//! reading, so at any moment at most `ncpus - 1` packets beyond the bound above
//! (plus one per idle refill, whose plain store may hide a concurrent add). Over an
//! interval the passed rate is exact to within those few packets, independent of how
//! the traffic is spread over CPUs (per-CPU shares would drop far too much when one
//! source lands on one CPU, as RSS makes it do). Times use wrapping arithmetic: a
//! difference is read as signed, so the bucket is right across a wrap of the clock and
//! refills fully after any idle shorter than 292 years.

/// Fixed-point shift of the per-byte cost.
pub const BYTE_COST_SHIFT: u32 = 16;

/// How long after its last drop a source's over-limit episode is considered over.
pub const EPISODE_GAP_NS: u64 = 1_000_000_000;

/// One token bucket in GCRA form: the cost of one unit and the tolerated debt.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// ns per packet (or, for bytes, ns per byte << [`BYTE_COST_SHIFT`]); 0 = no limit.
    pub cost: u64,
    /// How far TAT may run ahead of now, in ns.
    pub tolerance: u64,
}

impl Bucket {
    /// A bucket passing `rate` units per second with bursts of `burst` units.
    pub const fn per_second(rate: u64, burst: u64) -> Self {
        if rate == 0 {
            return Bucket { cost: 0, tolerance: 0 };
        }
        let cost = 1_000_000_000 / rate;
        let cost = if cost == 0 { 1 } else { cost };
        let burst = if burst == 0 { 1 } else { burst };
        Bucket { cost, tolerance: (burst - 1).saturating_mul(cost) }
    }

    /// A byte bucket: `bytes_per_sec` with bursts of `burst_bytes`. The cost per byte is
    /// fixed-point so multi-gigabit rates keep their precision.
    pub const fn bytes_per_second(bytes_per_sec: u64, burst_bytes: u64) -> Self {
        if bytes_per_sec == 0 {
            return Bucket { cost: 0, tolerance: 0 };
        }
        let cost = (1_000_000_000u64 << BYTE_COST_SHIFT) / bytes_per_sec;
        let cost = if cost == 0 { 1 } else { cost };
        Bucket { cost, tolerance: (burst_bytes as u128 * 1_000_000_000 / bytes_per_sec as u128) as u64 }
    }

    pub const fn enabled(&self) -> bool {
        self.cost != 0
    }

    /// The ns a packet of `len` bytes costs in a byte bucket.
    #[inline(always)]
    pub const fn byte_cost(&self, len: u64) -> u64 {
        (len * self.cost) >> BYTE_COST_SHIFT
    }
}

/// The limiter's configuration, one of two slots in `FG_LIMITS`; the controller writes
/// the inactive slot and flips an index, so a packet never sees half a configuration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitConfig {
    /// 0: the limiter is off (no per-packet work beyond reading this).
    pub enabled: u32,
    /// IPv4 sources are aggregated to this prefix length (default 32).
    pub v4_prefix: u32,
    /// IPv6 sources are aggregated to this prefix length (default 64).
    pub v6_prefix: u32,
    /// Nonzero: observe mode. Frames over a limit are counted under
    /// `would_drop.rate_limit` / `would_drop.syn_limit` and passed; no auto-bans.
    pub observe: u32,
    /// Packets per source.
    pub packets: Bucket,
    /// Bytes per source (cost in fixed point, see [`Bucket::bytes_per_second`]).
    pub bytes: Bucket,
    /// TCP SYNs (SYN set, ACK clear) per source.
    pub syn: Bucket,
    /// TCP SYNs over all sources together.
    pub global_syn: Bucket,
    /// A source over its limit for this long is banned; 0 = no auto-ban.
    pub ban_after_ns: u64,
    /// How long an auto-ban lasts.
    pub ban_for_ns: u64,
    /// The rates as the operator gave them (packets/s, bits/s, SYNs/s, global SYNs/s;
    /// 0 = unset), for display: the buckets hold them rounded to whole ns.
    pub given: [u64; 4],
    /// Bumped by every `limit set`: a source state from an older epoch starts with
    /// full buckets, so debt run up under old limits does not outlive them.
    pub epoch: u64,
}

/// Per-source state in the limiter's maps. Every field is updated atomically or with
/// single aligned stores; see the module documentation for what races can cost.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    pub tat_packets: u64,
    pub tat_bytes: u64,
    pub tat_syn: u64,
    pub passed: u64,
    pub dropped: u64,
    /// Start of the current over-limit episode (0: not over its limit).
    pub over_since: u64,
    pub last_drop: u64,
    /// The [`LimitConfig::epoch`] this state was last charged under.
    pub epoch: u64,
}

/// Key of a source (after aggregation) in the limiter and ban maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// [`crate::Family::ip_version`]: 4 or 6.
    pub family: u32,
    pub prefix_len: u32,
    /// The address with bits past `prefix_len` cleared (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
}

/// An auto-ban: the source is dropped until `expires` (ns of `bpf_ktime_get_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ban {
    pub expires: u64,
    pub banned_at: u64,
}

/// Slots of the doorkeeper (`FG_DOOR`): a source is tracked from its second packet
/// on, so a flood of one-packet random sources never churns the limiter's table.
pub const DOOR_ENTRIES: u32 = 1 << 18;
/// `FG_GLOBAL` index of the global SYN bucket, and of the doorkeeper's hash seed
/// (random per attach, so nobody can aim sources at one slot).
pub const GLOBAL_SYN: u32 = 0;
pub const GLOBAL_SEED: u32 = 1;
/// `FG_GLOBAL` index of the number of sources in `FG_HEAVY` (kept by the data path,
/// the only writer of that map): while it is 0 the data path skips the lookup there,
/// which for random sources would touch a cold bucket on every packet.
pub const GLOBAL_HEAVY: u32 = 2;
pub const GLOBAL_ENTRIES: u32 = 3;

/// The doorkeeper hash of a source key: the slot is its low bits, the fingerprint
/// its high half (never 0, so an empty slot matches nothing).
#[inline(always)]
pub fn door_hash(k: &SourceKey, seed: u64) -> (u32, u32) {
    let a = &k.addr;
    let w0 = u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let w1 = u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    let mut h = seed ^ ((k.family as u64) << 32 | k.prefix_len as u64);
    for w in [w0, w1] {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    ((h as u32) & (DOOR_ENTRIES - 1), ((h >> 32) as u32) | 1)
}

/// Indexes of the per-CPU event counters in `FG_EVENTS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Sources put on the ban list by the data path.
    AutoBan = 0,
    /// Bans that could not be stored (ban map full).
    BanMapFull = 1,
    /// Over-limit sources that could not be pinned in the over-limit map (full): their
    /// state stays in the LRU map, where a random-source flood may evict it.
    HeavyMapFull = 2,
}

impl Event {
    pub const COUNT: u32 = 3;
}

/// Clears the bits of `addr` past `len`.
#[inline(always)]
pub fn mask_prefix<const N: usize>(mut addr: [u8; N], len: u32) -> [u8; N] {
    let mut i = 0;
    while i < N {
        let bit = (i as u32) * 8;
        if bit >= len {
            addr[i] = 0;
        } else if bit + 8 > len {
            addr[i] &= 0xffu8 << (8 - (len - bit));
        }
        i += 1;
    }
    addr
}

impl SourceKey {
    #[inline(always)]
    pub fn v4(addr: [u8; 4], prefix: u32) -> Self {
        let a = mask_prefix(addr, prefix);
        let mut k = SourceKey { family: crate::Family::V4.ip_version(), prefix_len: prefix, addr: [0; 16] };
        k.addr[0] = a[0];
        k.addr[1] = a[1];
        k.addr[2] = a[2];
        k.addr[3] = a[3];
        k
    }

    #[inline(always)]
    pub fn v6(addr: [u8; 16], prefix: u32) -> Self {
        SourceKey {
            family: crate::Family::V6.ip_version(),
            prefix_len: prefix,
            addr: mask_prefix(addr, prefix),
        }
    }

    pub const fn family(&self) -> Option<crate::Family> {
        crate::Family::from_ip_version(self.family)
    }
}

/// A u64 the limiter can read, overwrite and add to. The XDP program implements it
/// with atomics on map memory, host tests with plain cells.
pub trait Cell64 {
    fn get(&self) -> u64;
    fn set(&self, v: u64);
    fn add(&self, v: u64);
}

impl Cell64 for core::cell::Cell<u64> {
    fn get(&self) -> u64 {
        core::cell::Cell::get(self)
    }
    fn set(&self, v: u64) {
        core::cell::Cell::set(self, v)
    }
    fn add(&self, v: u64) {
        core::cell::Cell::set(self, core::cell::Cell::get(self).wrapping_add(v))
    }
}

/// How far `tat` is ahead of `now`, pulling a lagging `tat` up to `now` (refill).
#[inline(always)]
pub fn debt(tat: &impl Cell64, now: u64) -> u64 {
    let ahead = tat.get().wrapping_sub(now) as i64;
    if ahead < 0 {
        tat.set(now);
        0
    } else {
        ahead as u64
    }
}

/// Whether a unit of `cost` conforms to `b` now (without charging it).
#[inline(always)]
pub fn conforms(b: &Bucket, tat: &impl Cell64, now: u64) -> bool {
    !b.enabled() || debt(tat, now) <= b.tolerance
}

/// Checks and, if it conforms, charges one unit: the whole GCRA step.
#[inline(always)]
pub fn take(b: &Bucket, tat: &impl Cell64, now: u64, cost: u64) -> bool {
    if !conforms(b, tat, now) {
        return false;
    }
    if b.enabled() {
        tat.add(cost);
    }
    true
}

/// The cells of one source's state.
pub trait SourceCells {
    type C: Cell64;
    fn tat_packets(&self) -> &Self::C;
    fn tat_bytes(&self) -> &Self::C;
    fn tat_syn(&self) -> &Self::C;
}

/// What the limiter decided for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitVerdict {
    Pass,
    /// Over its packet or byte rate.
    RateLimit,
    /// A SYN over the per-source SYN rate.
    SynLimit,
    /// A SYN over the global SYN budget (not the source's own doing: never banned for it).
    GlobalSynLimit,
}

/// Decides one packet of `len` bytes against a source's buckets and the global SYN
/// bucket. A packet is charged to every bucket it touches only if it passes all of
/// them: a dropped packet consumes nothing.
#[inline(always)]
pub fn police<S: SourceCells, G: Cell64>(
    cfg: &LimitConfig,
    s: &S,
    global_syn: &G,
    now: u64,
    len: u64,
    syn: bool,
) -> LimitVerdict {
    if !conforms(&cfg.packets, s.tat_packets(), now) || !conforms(&cfg.bytes, s.tat_bytes(), now) {
        return LimitVerdict::RateLimit;
    }
    if syn {
        if !conforms(&cfg.syn, s.tat_syn(), now) {
            return LimitVerdict::SynLimit;
        }
        if !take(&cfg.global_syn, global_syn, now, cfg.global_syn.cost) {
            return LimitVerdict::GlobalSynLimit;
        }
        if cfg.syn.enabled() {
            s.tat_syn().add(cfg.syn.cost);
        }
    }
    if cfg.packets.enabled() {
        s.tat_packets().add(cfg.packets.cost);
    }
    if cfg.bytes.enabled() {
        s.tat_bytes().add(cfg.bytes.byte_cost(len));
    }
    LimitVerdict::Pass
}

/// Whether a drop at `now` makes the source due for an auto-ban, given when its
/// episode started (updated in place: a gap longer than [`EPISODE_GAP_NS`] since the
/// last drop starts a new episode).
#[inline(always)]
pub fn ban_due(cfg: &LimitConfig, over_since: &impl Cell64, last_drop: &impl Cell64, now: u64) -> bool {
    let since = over_since.get();
    let gap = now.wrapping_sub(last_drop.get());
    last_drop.set(now);
    let start = if since == 0 || gap > EPISODE_GAP_NS {
        over_since.set(now);
        now
    } else {
        since
    };
    cfg.ban_after_ns != 0 && now.wrapping_sub(start) >= cfg.ban_after_ns
}

#[cfg(test)]
mod door_tests {
    use super::*;

    #[test]
    fn door_hash_spreads_neighbouring_sources_and_depends_on_the_seed() {
        let key = |i: u32| {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&i.to_be_bytes());
            SourceKey { family: crate::Family::V4.ip_version(), prefix_len: 32, addr }
        };
        let slots: std::collections::HashSet<u32> = (0..10_000).map(|i| door_hash(&key(i), 7).0).collect();
        assert!(slots.len() > 9_800, "{} distinct slots of 10,000 sources", slots.len());
        assert!((0..10_000).all(|i| door_hash(&key(i), 7).0 < DOOR_ENTRIES && door_hash(&key(i), 7).1 != 0));
        assert_ne!(door_hash(&key(1), 7), door_hash(&key(1), 8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use proptest::prelude::*;

    struct Cells {
        p: Cell<u64>,
        b: Cell<u64>,
        s: Cell<u64>,
    }
    impl SourceCells for Cells {
        type C = Cell<u64>;
        fn tat_packets(&self) -> &Cell<u64> {
            &self.p
        }
        fn tat_bytes(&self) -> &Cell<u64> {
            &self.b
        }
        fn tat_syn(&self) -> &Cell<u64> {
            &self.s
        }
    }
    fn cells(start: u64) -> Cells {
        Cells { p: Cell::new(start), b: Cell::new(start), s: Cell::new(start) }
    }

    fn cfg_pps(rate: u64, burst: u64) -> LimitConfig {
        LimitConfig {
            enabled: 1,
            v4_prefix: 32,
            v6_prefix: 64,
            packets: Bucket::per_second(rate, burst),
            ..Default::default()
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate() {
        let cfg = cfg_pps(10, 5);
        let s = cells(0);
        let g = Cell::new(0);
        let t0 = 1_000_000_000u64;
        let passed = (0..20).filter(|_| police(&cfg, &s, &g, t0, 64, false) == LimitVerdict::Pass).count();
        assert_eq!(passed, 5, "burst at one instant");
        // 100 ms later one more token.
        assert_eq!(police(&cfg, &s, &g, t0 + 100_000_000, 64, false), LimitVerdict::Pass);
        assert_eq!(police(&cfg, &s, &g, t0 + 100_000_000, 64, false), LimitVerdict::RateLimit);
    }

    #[test]
    fn twice_the_rate_loses_half() {
        let cfg = cfg_pps(1000, 10);
        let s = cells(0);
        let g = Cell::new(0);
        let mut passed = 0;
        // 2,000 pps for 10 s.
        for i in 0..20_000u64 {
            if police(&cfg, &s, &g, 5_000_000_000 + i * 500_000, 64, false) == LimitVerdict::Pass {
                passed += 1;
            }
        }
        assert!((10_000..=10_010).contains(&passed), "{passed}");
    }

    #[test]
    fn syn_limits_only_syns_and_dropped_packets_cost_nothing() {
        let mut cfg = cfg_pps(1000, 100);
        cfg.syn = Bucket::per_second(1, 2);
        let s = cells(0);
        let g = Cell::new(0);
        let t = 10_000_000_000;
        assert_eq!(police(&cfg, &s, &g, t, 60, true), LimitVerdict::Pass);
        assert_eq!(police(&cfg, &s, &g, t, 60, true), LimitVerdict::Pass);
        assert_eq!(police(&cfg, &s, &g, t, 60, true), LimitVerdict::SynLimit);
        let tat = s.p.get();
        assert_eq!(police(&cfg, &s, &g, t, 60, true), LimitVerdict::SynLimit);
        assert_eq!(s.p.get(), tat, "a dropped SYN consumed packet tokens");
        assert_eq!(police(&cfg, &s, &g, t, 60, false), LimitVerdict::Pass);
    }

    #[test]
    fn global_syn_budget_is_shared() {
        let mut cfg = LimitConfig { enabled: 1, ..Default::default() };
        cfg.global_syn = Bucket::per_second(10, 3);
        let g = Cell::new(0);
        let t = 1 << 40;
        let results: Vec<_> = (0..5).map(|i| police(&cfg, &cells(i), &g, t, 60, true)).collect();
        assert_eq!(results.iter().filter(|v| **v == LimitVerdict::Pass).count(), 3);
        assert_eq!(results[4], LimitVerdict::GlobalSynLimit);
    }

    #[test]
    fn byte_limit() {
        let mut cfg = LimitConfig { enabled: 1, ..Default::default() };
        cfg.bytes = Bucket::bytes_per_second(10_000, 3_000);
        let s = cells(0);
        let g = Cell::new(0);
        let t = 1 << 40;
        let passed = (0..10).filter(|_| police(&cfg, &s, &g, t, 1000, false) == LimitVerdict::Pass).count();
        // Tolerance 300 ms = 3,000 bytes of debt: packets pass while debt <= 3,000 bytes.
        assert_eq!(passed, 4);
        // 200 ms refill 2,000 bytes.
        let next = t + 200_000_000;
        let passed =
            (0..20).filter(|_| police(&cfg, &s, &g, next, 1000, false) == LimitVerdict::Pass).count();
        assert_eq!(passed, 2);
        // A long idle refills up to the burst, no more.
        let later = t + 60_000_000_000;
        let passed =
            (0..20).filter(|_| police(&cfg, &s, &g, later, 1000, false) == LimitVerdict::Pass).count();
        assert_eq!(passed, 4);
    }

    #[test]
    fn prefixes_are_masked() {
        assert_eq!(mask_prefix([192, 0, 2, 255], 24), [192, 0, 2, 0]);
        assert_eq!(mask_prefix([192, 0, 2, 255], 25), [192, 0, 2, 128]);
        assert_eq!(mask_prefix([255; 4], 0), [0; 4]);
        assert_eq!(mask_prefix([255; 4], 32), [255; 4]);
        let k = SourceKey::v6([0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 64);
        assert_eq!(k.addr[8..], [0; 8]);
        assert_eq!(k.addr[..8], [0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4]);
    }

    #[test]
    fn episodes_and_bans() {
        let cfg = LimitConfig { ban_after_ns: 3_000_000_000, ..Default::default() };
        let (since, last) = (Cell::new(0), Cell::new(0));
        let s = 100_000_000_000u64;
        assert!(!ban_due(&cfg, &since, &last, s));
        // A gap of 2 s since the last drop starts a new episode.
        assert!(!ban_due(&cfg, &since, &last, s + 2_000_000_000 - 1));
        assert_eq!(since.get(), s + 2_000_000_000 - 1);
        let start = since.get();
        let mut t = start;
        while t < start + 3_000_000_000 {
            assert!(!ban_due(&cfg, &since, &last, t));
            t += 500_000_000;
        }
        assert!(ban_due(&cfg, &since, &last, t));
        let off = LimitConfig::default();
        assert!(!ban_due(&off, &since, &last, t + 10_000_000_000_000));
    }

    proptest! {
        /// Never more than burst + elapsed/cost packets pass in any run of arrivals,
        /// whatever the arrival times, starting point and clock value (also across a
        /// wrap of the u64 clock).
        #[test]
        fn never_more_than_burst_plus_rate(
            rate in 1u64..100_000,
            burst in 1u64..200,
            start in any::<u64>(),
            gaps in proptest::collection::vec(0u64..5_000_000, 1..400),
        ) {
            let cfg = cfg_pps(rate, burst);
            let s = cells(start);
            let g = Cell::new(0);
            let mut now = start;
            let mut passed = 0u64;
            for gap in &gaps {
                now = now.wrapping_add(*gap);
                if police(&cfg, &s, &g, now, 64, false) == LimitVerdict::Pass {
                    passed += 1;
                }
            }
            let elapsed = now.wrapping_sub(start);
            prop_assert!(passed <= burst + elapsed / cfg.packets.cost, "{} > {} + {}", passed, burst, elapsed / cfg.packets.cost);
        }

        /// After any idle time the bucket is full again: exactly `burst` pass at once,
        /// also when the idle spans a wrap of the clock.
        #[test]
        fn refill_is_exact_after_idle(
            rate in 1u64..1_000_000,
            burst in 1u64..100,
            start in any::<u64>(),
            idle in 0u64..(1u64 << 62),
        ) {
            let cfg = cfg_pps(rate, burst);
            let s = cells(start);
            let g = Cell::new(0);
            // Drain the bucket at `start`.
            while police(&cfg, &s, &g, start, 64, false) == LimitVerdict::Pass {}
            let later = start.wrapping_add(idle).wrapping_add(burst * cfg.packets.cost + cfg.packets.cost);
            let mut n = 0;
            while police(&cfg, &s, &g, later, 64, false) == LimitVerdict::Pass {
                n += 1;
                prop_assert!(n <= burst);
            }
            prop_assert_eq!(n, burst);
        }

        /// Tokens come back at the configured rate: after draining, waiting k intervals
        /// gives back exactly k packets (up to the burst).
        #[test]
        fn refill_rate_is_exact(rate in 1u64..1_000_000, burst in 1u64..50, k in 0u64..50, start in any::<u64>()) {
            let cfg = cfg_pps(rate, burst);
            let s = cells(start);
            let g = Cell::new(0);
            while police(&cfg, &s, &g, start, 64, false) == LimitVerdict::Pass {}
            let later = start.wrapping_add(k * cfg.packets.cost);
            let mut n = 0;
            while police(&cfg, &s, &g, later, 64, false) == LimitVerdict::Pass {
                n += 1;
            }
            prop_assert_eq!(n, k.min(burst));
        }
    }
}
