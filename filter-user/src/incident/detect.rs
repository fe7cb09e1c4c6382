//! When a flood starts and ends: thresholds on the counters' rates, with a hold time
//! before an incident opens and a quiet time before it closes, so a one-second blip
//! opens nothing and a flood that pauses for a moment stays one incident.
//!
//! Pure: fed the counters' deltas once a second ([`Detector::feed`]), it returns what
//! changed; the service reads the maps, keeps the clock and acts.

use std::time::Duration;

use filter_common::Reason;

/// Verdict reasons counted per interval.
const REASONS: usize = Reason::COUNT as usize;

/// What crosses into an incident (any one is enough). Rates per second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Thresholds {
    /// Every frame the filter saw.
    pub pps: Option<u64>,
    pub bps: Option<u64>,
    /// Frames dropped for one reason, per reason.
    pub dropped_pps: Vec<(Reason, u64)>,
    /// Frames dropped for any reason, together (crossed as `dropped_pps.any`).
    pub dropped_any_pps: Option<u64>,
    /// TCP SYNs (those limited, answered with cookies, or passed).
    pub syn_pps: Option<u64>,
    /// How long a threshold must stay crossed before the incident opens.
    pub hold: Duration,
    /// How long every threshold must stay uncrossed before it closes.
    pub quiet: Duration,
}

impl Thresholds {
    /// Each threshold as `NAME > LIMIT` (`pps > 100000`, `dropped_pps.any > 50000`):
    /// for the record and for summaries.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut one = |name: &str, limit: Option<u64>| {
            if let Some(l) = limit {
                out.push(format!("{name} > {l}"));
            }
        };
        one("pps", self.pps);
        one("bps", self.bps);
        one("syn_pps", self.syn_pps);
        for (reason, l) in &self.dropped_pps {
            one(&format!("dropped_pps.{}", reason.key()), Some(*l));
        }
        one("dropped_pps.any", self.dropped_any_pps);
        out
    }

    /// Whether any threshold is set (without one, nothing ever opens).
    pub fn any(&self) -> bool {
        self.pps.is_some()
            || self.bps.is_some()
            || self.syn_pps.is_some()
            || !self.dropped_pps.is_empty()
            || self.dropped_any_pps.is_some()
    }
}

/// The counters' growth over one interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// End of the interval, in milliseconds (any clock that only moves forward).
    pub at_ms: u64,
    /// The interval's length in milliseconds (> 0).
    pub span_ms: u64,
    /// Frames and bytes per reason (indexed by `Reason as usize`).
    pub packets: [u64; REASONS],
    pub bytes: [u64; REASONS],
    pub syns: u64,
}

impl Delta {
    fn per_sec(&self, n: u64) -> u64 {
        (u128::from(n) * 1000 / u128::from(self.span_ms.max(1))) as u64
    }

    fn pps(&self) -> u64 {
        self.per_sec(self.packets.iter().sum())
    }

    fn bps(&self) -> u64 {
        self.per_sec(self.bytes.iter().sum::<u64>() * 8)
    }

    fn dropped_pps(&self) -> u64 {
        self.per_sec(Reason::ALL.iter().filter(|r| r.drops()).map(|r| self.packets[*r as usize]).sum())
    }
}

/// An incident as it stands (open) or ended (closed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Incident {
    /// When the first crossing interval of the opening run ended (ms).
    pub start_ms: u64,
    /// When the last crossing interval ended; the end once closed.
    pub last_over_ms: u64,
    pub peak_pps: u64,
    pub peak_bps: u64,
    /// Frames and bytes per reason from the start on.
    pub packets: [u64; REASONS],
    pub bytes: [u64; REASONS],
    /// Which thresholds were crossed at least once (for the record: "pps", "bps",
    /// "syn_pps", "dropped_pps.blocklist", ...).
    pub crossed: Vec<String>,
}

/// What a [`Detector::feed`] changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Opened(Incident),
    Closed(Incident),
}

#[derive(Clone, Debug, Default)]
pub struct Detector {
    thresholds: Thresholds,
    /// Before an incident: the crossing run so far (its deltas, to count them in).
    pending: Vec<Delta>,
    open: Option<Incident>,
}

impl Detector {
    pub fn new(thresholds: Thresholds) -> Self {
        Detector { thresholds, ..Default::default() }
    }

    /// The incident under way, if any.
    pub fn open(&self) -> Option<&Incident> {
        self.open.as_ref()
    }

    /// Takes up an incident already under way (a restart during it).
    pub fn resume(&mut self, incident: Incident) {
        self.pending.clear();
        self.open = Some(incident);
    }

    /// The thresholds `d` crosses.
    fn crossed(&self, d: &Delta) -> Vec<String> {
        let t = &self.thresholds;
        let mut out = Vec::new();
        if t.pps.is_some_and(|l| d.pps() > l) {
            out.push("pps".to_string());
        }
        if t.bps.is_some_and(|l| d.bps() > l) {
            out.push("bps".to_string());
        }
        if t.syn_pps.is_some_and(|l| d.per_sec(d.syns) > l) {
            out.push("syn_pps".to_string());
        }
        for (reason, l) in &t.dropped_pps {
            if d.per_sec(d.packets[*reason as usize]) > *l {
                out.push(format!("dropped_pps.{}", reason.key()));
            }
        }
        if t.dropped_any_pps.is_some_and(|l| d.dropped_pps() > l) {
            out.push("dropped_pps.any".to_string());
        }
        out
    }

    /// One interval's counters; returns the incident opened or closed by it.
    pub fn feed(&mut self, d: Delta) -> Option<Change> {
        let crossed = self.crossed(&d);
        match &mut self.open {
            Some(inc) => {
                count_in(inc, &d, &crossed);
                if !crossed.is_empty() {
                    inc.last_over_ms = d.at_ms;
                    return None;
                }
                if d.at_ms.saturating_sub(inc.last_over_ms) >= self.thresholds.quiet.as_millis() as u64 {
                    return self.open.take().map(Change::Closed);
                }
                None
            }
            None if crossed.is_empty() => {
                self.pending.clear();
                None
            }
            None => {
                self.pending.push(d);
                let first = &self.pending[0];
                let run_ms = self.pending.last().map_or(0, |l| l.at_ms) - first.at_ms + first.span_ms;
                if run_ms < self.thresholds.hold.as_millis() as u64 {
                    return None;
                }
                let mut inc = Incident { start_ms: first.at_ms - first.span_ms, ..Default::default() };
                for p in std::mem::take(&mut self.pending) {
                    let crossed = self.crossed(&p);
                    count_in(&mut inc, &p, &crossed);
                    inc.last_over_ms = p.at_ms;
                }
                self.open = Some(inc.clone());
                Some(Change::Opened(inc))
            }
        }
    }
}

fn count_in(inc: &mut Incident, d: &Delta, crossed: &[String]) {
    for r in 0..REASONS {
        inc.packets[r] += d.packets[r];
        inc.bytes[r] += d.bytes[r];
    }
    inc.peak_pps = inc.peak_pps.max(d.pps());
    inc.peak_bps = inc.peak_bps.max(d.bps());
    for c in crossed {
        if !inc.crossed.contains(c) {
            inc.crossed.push(c.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(t: u64, passed: u64, blocked: u64) -> Delta {
        let mut d = Delta { at_ms: t * 1000, span_ms: 1000, ..Default::default() };
        d.packets[Reason::Passed as usize] = passed;
        d.packets[Reason::Blocklist as usize] = blocked;
        d.bytes[Reason::Blocklist as usize] = blocked * 60;
        d
    }

    fn detector() -> Detector {
        Detector::new(Thresholds {
            dropped_pps: vec![(Reason::Blocklist, 1_000)],
            hold: Duration::from_secs(2),
            quiet: Duration::from_secs(3),
            ..Default::default()
        })
    }

    /// Feeds (passed, blocked) per second from t = 1 on; returns (t, change) pairs.
    fn run(d: &mut Detector, seconds: &[(u64, u64)]) -> Vec<(u64, Change)> {
        let mut out = Vec::new();
        for (i, &(p, b)) in seconds.iter().enumerate() {
            let t = i as u64 + 1;
            if let Some(c) = d.feed(second(t, p, b)) {
                out.push((t, c));
            }
        }
        out
    }

    #[test]
    fn a_blip_shorter_than_hold_opens_nothing() {
        let mut d = detector();
        assert_eq!(run(&mut d, &[(10, 0), (10, 50_000), (10, 0), (10, 0)]), []);
        assert!(d.open().is_none());
    }

    #[test]
    fn opens_after_hold_counts_from_the_start_and_closes_after_quiet() {
        let mut d = detector();
        // 2 s of flood open it (at t=3); a 1 s pause keeps it; 3 quiet seconds close it.
        let s =
            [(10, 0), (10, 20_000), (10, 30_000), (10, 0), (10, 40_000), (10, 0), (10, 0), (10, 0), (10, 0)];
        let changes = run(&mut d, &s);
        assert_eq!(changes.len(), 2, "{changes:?}");
        let (t_open, Change::Opened(opened)) = &changes[0] else { panic!("{changes:?}") };
        assert_eq!((*t_open, opened.start_ms), (3, 1_000));
        assert_eq!(opened.packets[Reason::Blocklist as usize], 50_000);
        let (t_close, Change::Closed(closed)) = &changes[1] else { panic!("{changes:?}") };
        assert_eq!(*t_close, 8, "3 s after the last flood second (t=5)");
        assert_eq!((closed.start_ms, closed.last_over_ms), (1_000, 5_000));
        assert_eq!(closed.packets[Reason::Blocklist as usize], 90_000);
        assert_eq!(closed.peak_pps, 40_010);
        assert_eq!(closed.peak_bps, 40_000 * 60 * 8);
        assert_eq!(closed.crossed, ["dropped_pps.blocklist"]);
    }

    #[test]
    fn dropped_any_sums_every_reason_that_drops() {
        let mut d = Detector::new(Thresholds {
            dropped_any_pps: Some(1_000),
            hold: Duration::from_secs(1),
            quiet: Duration::from_secs(1),
            ..Default::default()
        });
        let mut s = second(1, 5_000, 600);
        // Passed and SYN-cookie answers are not drops; 600 + 300 is under the limit.
        s.packets[Reason::SynProxy as usize] = 5_000;
        s.packets[Reason::RateLimit as usize] = 300;
        assert_eq!(d.feed(s.clone()), None);
        s.at_ms = 2_000;
        s.packets[Reason::Policy as usize] = 101;
        let Some(Change::Opened(inc)) = d.feed(s) else { panic!("1001 dropped/s opens") };
        assert_eq!(inc.crossed, ["dropped_pps.any"]);
        assert_eq!(inc.start_ms, 1_000);
    }

    #[test]
    fn describe_lists_every_threshold() {
        let t = Thresholds {
            pps: Some(100_000),
            dropped_pps: vec![(Reason::Blocklist, 10)],
            dropped_any_pps: Some(50_000),
            ..Default::default()
        };
        assert_eq!(t.describe(), ["pps > 100000", "dropped_pps.blocklist > 10", "dropped_pps.any > 50000"]);
        assert!(t.any() && !Thresholds::default().any());
    }

    #[test]
    fn resumed_incident_closes_as_usual() {
        let mut d = detector();
        d.resume(Incident { start_ms: 0, last_over_ms: 1_000, ..Default::default() });
        // Last over at t=1: quiet from t=4 on.
        let changes = run(&mut d, &[(1, 0), (1, 0), (1, 0), (1, 0)]);
        assert!(matches!(changes.as_slice(), [(4, Change::Closed(_))]), "{changes:?}");
    }
}
