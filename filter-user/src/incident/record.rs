//! An incident as it is kept on disk and shown: what crossed, when, how hard, from
//! where, and what floodgate did about it. Written by the service while the incident
//! runs (so a restart resumes it) and read by `floodgate incidents`.
//!
//! The per-source figures are estimates from the sampled frames (1 in N per verdict
//! reason, scaled by how many frames of that reason each sample stands for), kept in
//! Space-Saving summaries ([`super::sketch`]): `packets` is an upper bound and
//! `packets - error` a lower bound of what the key sent in the samples' estimate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The file format's version, bumped on incompatible changes.
pub const RECORD_VERSION: u32 = 1;

/// Points a timeline keeps; a longer incident merges neighbouring points (the step
/// doubles), so a day-long flood still fits in a few hundred kilobytes.
pub const MAX_TIMELINE_POINTS: usize = 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Closed,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

/// One entry of a top list: a source, prefix or port, with its estimated packets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Top {
    /// `203.0.113.7`, `203.0.113.0/24`, `2001:db8:bad::/48`, `udp/53`.
    pub key: String,
    /// Estimated packets (an upper bound: see the module's comment).
    pub packets: u64,
    /// How much of `packets` may belong to other keys.
    pub error: u64,
}

/// The incident's heaviest sources and what they sent, from the samples.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Frames sampled during the incident.
    pub samples: u64,
    /// Frames the samples stand for (the sum of their weights).
    pub estimated_packets: u64,
    /// Counters each summary keeps (its `k`): an estimate is off by at most
    /// `estimated_packets / sketch_capacity`.
    pub sketch_capacity: u32,
    pub sources: Vec<Top>,
    /// IPv4 /24 prefixes.
    pub prefixes_v4: Vec<Top>,
    /// IPv6 /48 prefixes.
    pub prefixes_v6: Vec<Top>,
    /// Destination ports, `tcp/80`, `udp/53`.
    pub ports: Vec<Top>,
    /// Estimated packets by protocol: `tcp`, `udp`, `icmp`, `icmpv6`, `other`.
    pub protocols: BTreeMap<String, u64>,
    /// Estimated packets by frame size bucket ([`SIZE_BUCKETS`] labels).
    pub sizes: BTreeMap<String, u64>,
    /// Estimated packets by IP TTL / hop limit (only values seen).
    pub ttls: BTreeMap<u8, u64>,
    /// Estimated packets by verdict reason ([`filter_common::Reason::key`]).
    pub reasons: BTreeMap<String, u64>,
}

/// Frame-size buckets: the upper bound of each (bytes, inclusive) and its label.
pub const SIZE_BUCKETS: [(u32, &str); 7] = [
    (64, "0-64"),
    (128, "65-128"),
    (256, "129-256"),
    (512, "257-512"),
    (1024, "513-1024"),
    (1518, "1025-1518"),
    (u32::MAX, "1519+"),
];

/// The label of the bucket a frame of `len` bytes falls in.
pub fn size_bucket(len: u32) -> &'static str {
    SIZE_BUCKETS.iter().find(|(max, _)| len <= *max).map_or("1519+", |(_, l)| l)
}

/// Something floodgate did for the incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// `hook.open`, `webhook.close`, `escalate.syn_cookies`, `undo.limits`, ...
    pub what: String,
    pub ok: bool,
    /// What happened: the exit status, the HTTP status, what was applied, the error.
    pub detail: String,
}

/// Packets per second per reason over one step of the timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Unix time in milliseconds at the end of the step.
    pub at_ms: u64,
    /// Packets per second by reason key (reasons with none left out).
    pub pps: BTreeMap<String, u64>,
}

/// Packets per second per reason, one point per `step_secs`, bounded
/// ([`MAX_TIMELINE_POINTS`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub step_secs: u64,
    pub points: Vec<Point>,
    /// Seconds folded into the last point so far (< step_secs).
    #[serde(default)]
    pub pending: u64,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline { step_secs: 1, points: Vec::new(), pending: 0 }
    }
}

impl Timeline {
    /// Adds one second's rates. Past [`MAX_TIMELINE_POINTS`], pairs of points merge
    /// into their mean and the step doubles.
    pub fn push_second(&mut self, at_ms: u64, pps: BTreeMap<String, u64>) {
        if self.pending > 0
            && let Some(last) = self.points.last_mut()
        {
            // Folds into the current point as a running mean.
            let n = self.pending;
            let keys: Vec<String> = last.pps.keys().chain(pps.keys()).cloned().collect();
            for k in keys {
                let old = last.pps.get(&k).copied().unwrap_or(0);
                let new = pps.get(&k).copied().unwrap_or(0);
                last.pps.insert(k, (old * n + new) / (n + 1));
            }
            last.at_ms = at_ms;
            self.pending = (n + 1) % self.step_secs;
            return;
        }
        self.points.push(Point { at_ms, pps });
        self.pending = 1 % self.step_secs;
        if self.points.len() > MAX_TIMELINE_POINTS {
            self.halve();
        }
    }

    fn halve(&mut self) {
        let old = std::mem::take(&mut self.points);
        for pair in old.chunks(2) {
            let mut p = Point { at_ms: pair[pair.len() - 1].at_ms, pps: BTreeMap::new() };
            for q in pair {
                for (k, v) in &q.pps {
                    *p.pps.entry(k.clone()).or_default() += v;
                }
            }
            for v in p.pps.values_mut() {
                *v /= pair.len() as u64;
            }
            self.points.push(p);
        }
        self.step_secs *= 2;
        self.pending = 0;
    }
}

/// An incident on one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub version: u32,
    /// `YYYYMMDD-HHMMSS-IFACE` of its start (UTC), unique per interface.
    pub id: String,
    pub interface: String,
    pub hostname: String,
    pub state: State,
    /// Unix time in milliseconds.
    pub started_ms: u64,
    /// Set once closed.
    pub ended_ms: Option<u64>,
    /// The thresholds as configured, for the record (`pps > 100000`, ...).
    pub thresholds: Vec<String>,
    /// Which of them were crossed (`pps`, `dropped_pps.blocklist`, ...).
    pub crossed: Vec<String>,
    pub peak_pps: u64,
    pub peak_bps: u64,
    /// Exact, from the verdict counters: per reason key.
    pub totals: BTreeMap<String, Totals>,
    pub timeline: Timeline,
    pub profile: Profile,
    pub actions: Vec<Action>,
    /// The samples' pcap file, relative to the incident's directory (None: none kept).
    pub pcap: Option<String>,
    /// Samples written to the pcap, and those left out once it reached its size cap.
    pub pcap_frames: u64,
    pub pcap_skipped: u64,
    /// The kernel's verdict counters as far as the totals account for them: a
    /// restart of the service adds what the data path counted while it was down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_to: Option<CountedTo>,
}

/// The verdict counters (summed over CPUs, per reason index) at a moment, and the
/// attach they belong to (counters restart with a new attach).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedTo {
    pub attached_at: u64,
    pub at_ms: u64,
    pub packets: Vec<u64>,
    pub bytes: Vec<u64>,
}

impl IncidentRecord {
    /// Dropped packets (exact) over every reason that drops.
    pub fn dropped(&self) -> u64 {
        filter_common::Reason::ALL
            .iter()
            .filter(|r| r.drops())
            .filter_map(|r| self.totals.get(r.key()))
            .map(|t| t.packets)
            .sum()
    }

    /// Every packet seen during the incident (exact).
    pub fn seen(&self) -> u64 {
        self.totals.values().map(|t| t.packets).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_stays_bounded_and_keeps_the_mean() {
        let mut t = Timeline::default();
        for s in 0..(3 * MAX_TIMELINE_POINTS as u64) {
            t.push_second(s * 1000, BTreeMap::from([("blocklist".to_string(), 100)]));
        }
        assert!(t.points.len() <= MAX_TIMELINE_POINTS, "{}", t.points.len());
        assert_eq!(t.step_secs, 4);
        assert!(t.points.iter().all(|p| p.pps["blocklist"] == 100));
        assert_eq!(t.points.last().unwrap().at_ms, (3 * MAX_TIMELINE_POINTS as u64 - 1) * 1000);
    }

    #[test]
    fn size_buckets() {
        assert_eq!(size_bucket(60), "0-64");
        assert_eq!(size_bucket(1514), "1025-1518");
        assert_eq!(size_bucket(9000), "1519+");
    }
}
