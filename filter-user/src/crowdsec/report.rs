//! The reporter's queue: floodgate's auto-bans waiting to go to the LAPI as alerts.
//! Deduplicated (a source is reported once for as long as its reported ban runs,
//! whichever interface banned it), bounded (a full queue drops new bans and counts
//! them), rate-limited (a token bucket of `max_alerts_per_minute`) and sent in
//! batches. Bans that expire while queued are not sent.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;

use super::lapi::{Alert, AlertDecision, Source, go_duration};

/// The scenario of an auto-ban's alert.
pub const SCENARIO: &str = "floodgate/rate-limit";
/// Alerts per POST at most.
pub const BATCH: usize = 100;

/// One auto-ban to report.
#[derive(Clone, Debug, PartialEq)]
pub struct Ban {
    pub source: IpNet,
    pub interface: String,
    pub started: SystemTime,
    pub until: SystemTime,
    /// The source's packet rate at the last sweep before its ban, when the limiter
    /// still tracked it.
    pub pps: Option<u64>,
    /// The limits it went over ("1000 pps, ban after 5s for 600s").
    pub limit: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Already queued or reported for at least as long.
    Duplicate,
    /// The queue is full: dropped.
    Dropped,
}

pub struct Queue {
    cap: usize,
    items: VecDeque<Ban>,
    /// Sources queued or sent, and until when their reported ban runs.
    reported: HashMap<IpNet, SystemTime>,
    per_sec: f64,
    burst: f64,
    tokens: f64,
    /// Monotonic seconds of the last refill.
    refilled: Option<f64>,
    pub duplicates: u64,
    pub dropped: u64,
}

impl Queue {
    pub fn new(cap: u32, per_minute: u32) -> Self {
        let per_sec = f64::from(per_minute) / 60.0;
        // A burst of up to a batch (and at least one alert) goes at once.
        let burst = f64::from(per_minute).min(BATCH as f64).max(1.0);
        Queue {
            cap: cap as usize,
            items: VecDeque::new(),
            reported: HashMap::new(),
            per_sec,
            burst,
            tokens: burst,
            refilled: None,
            duplicates: 0,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(&mut self, ban: Ban) -> Pushed {
        let now = SystemTime::now();
        self.reported.retain(|_, until| *until > now);
        if self.reported.get(&ban.source).is_some_and(|u| *u >= ban.until) {
            self.duplicates += 1;
            return Pushed::Duplicate;
        }
        if self.items.len() >= self.cap {
            self.dropped += 1;
            return Pushed::Dropped;
        }
        self.reported.insert(ban.source, ban.until);
        self.items.push_back(ban);
        Pushed::Queued
    }

    /// The next batch the rate allows at monotonic second `now_s` (wall time `wall`):
    /// oldest first, at most [`BATCH`]; bans already over are dropped on the way.
    pub fn take(&mut self, now_s: f64, wall: SystemTime) -> Vec<Ban> {
        if let Some(last) = self.refilled {
            self.tokens = (self.tokens + (now_s - last).max(0.0) * self.per_sec).min(self.burst);
        }
        self.refilled = Some(now_s);
        let mut out = Vec::new();
        while out.len() < BATCH && self.tokens >= 1.0 {
            let Some(ban) = self.items.pop_front() else { break };
            if ban.until <= wall {
                continue;
            }
            self.tokens -= 1.0;
            out.push(ban);
        }
        out
    }

    /// A batch the LAPI did not take goes back to the front (its tokens are not
    /// returned: a failing LAPI is not hammered). Beyond the bound, the newest go.
    pub fn put_back(&mut self, batch: Vec<Ban>) {
        for ban in batch.into_iter().rev() {
            self.items.push_front(ban);
        }
        while self.items.len() > self.cap {
            if let Some(b) = self.items.pop_back() {
                self.reported.remove(&b.source);
                self.dropped += 1;
            }
        }
    }
}

/// The alert for an auto-ban, its decision lasting what is left of the ban at `now`.
pub fn alert(ban: &Ban, host: &str, now: SystemTime) -> Alert {
    let (scope, ip, range) = match ban.source {
        IpNet::V4(n) if n.prefix_len() == 32 => ("Ip", Some(n.addr().to_string()), None),
        IpNet::V6(n) if n.prefix_len() == 128 => ("Ip", Some(n.addr().to_string()), None),
        n => ("Range", None, Some(n.to_string())),
    };
    let value = ip.clone().or_else(|| range.clone()).unwrap_or_default();
    let left = ban.until.duration_since(now).unwrap_or(Duration::from_secs(1));
    let rate = match ban.pps {
        Some(p) => format!("{p} packets/s observed"),
        None => "rate not sampled".into(),
    };
    let message = format!(
        "floodgate auto-ban on {host} ({}): {value} over its limit ({}); {rate}",
        ban.interface, ban.limit
    );
    // The LAPI ends the decision at stop_at + duration: stop_at is now.
    let (start, stop) =
        (humantime::format_rfc3339_seconds(ban.started), humantime::format_rfc3339_seconds(now));
    Alert {
        scenario: SCENARIO.into(),
        scenario_hash: String::new(),
        scenario_version: env!("CARGO_PKG_VERSION").into(),
        message,
        events_count: 1,
        start_at: start.to_string(),
        stop_at: stop.to_string(),
        capacity: 0,
        leakspeed: "0".into(),
        simulated: false,
        events: Vec::new(),
        source: Source { scope: scope.into(), value: value.clone(), ip, range },
        decisions: vec![AlertDecision {
            // Whole seconds, at least one.
            duration: go_duration(Duration::from_secs(left.as_secs().max(1))),
            kind: "ban".into(),
            scope: scope.into(),
            value,
            origin: "floodgate".into(),
            scenario: SCENARIO.into(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(src: &str, secs: u64) -> Ban {
        let now = SystemTime::now();
        Ban {
            source: src.parse().unwrap(),
            interface: "eth0".into(),
            started: now,
            until: now + Duration::from_secs(secs),
            pps: Some(5000),
            limit: "1000 pps".into(),
        }
    }

    #[test]
    fn a_source_is_reported_once_while_its_ban_runs() {
        let mut q = Queue::new(10, 600);
        assert_eq!(q.push(ban("198.51.100.7/32", 600)), Pushed::Queued);
        // The same ban seen on another interface, or a shorter one: a duplicate.
        assert_eq!(q.push(ban("198.51.100.7/32", 300)), Pushed::Duplicate);
        // A longer one is news.
        assert_eq!(q.push(ban("198.51.100.7/32", 1200)), Pushed::Queued);
        assert_eq!((q.len(), q.duplicates), (2, 1));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut q = Queue::new(2, 600);
        for i in 1..=3 {
            let _ = q.push(ban(&format!("192.0.2.{i}/32"), 60));
        }
        assert_eq!((q.len(), q.dropped), (2, 1));
        // The batch that failed goes back in front; still bounded.
        let batch = q.take(0.0, SystemTime::now());
        assert_eq!(batch.len(), 2);
        let _ = q.push(ban("192.0.2.9/32", 60));
        q.put_back(batch);
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped, 2);
        assert_eq!(q.take(100.0, SystemTime::now())[0].source.to_string(), "192.0.2.1/32");
    }

    #[test]
    fn the_rate_is_bounded_and_expired_bans_are_not_sent() {
        // 60 a minute: one a second, a burst of 60.
        let mut q = Queue::new(1000, 60);
        for i in 0..200u32 {
            let _ = q.push(ban(&format!("10.0.{}.{}/32", i / 256, i % 256), 60));
        }
        let now = SystemTime::now();
        assert_eq!(q.take(0.0, now).len(), 60);
        assert_eq!(q.take(0.5, now).len(), 0);
        assert_eq!(q.take(10.5, now).len(), 10);
        // Everything left has expired by then.
        assert!(q.take(1000.0, now + Duration::from_secs(120)).is_empty());
        assert!(q.is_empty());
    }

    #[test]
    fn alerts_carry_the_scenario_source_rate_and_remaining_time() {
        let b = ban("198.51.100.7/32", 600);
        let a = alert(&b, "web1", b.started + Duration::from_secs(100));
        assert_eq!(a.scenario, SCENARIO);
        assert_eq!(
            a.source,
            Source {
                scope: "Ip".into(),
                value: "198.51.100.7".into(),
                ip: Some("198.51.100.7".into()),
                range: None
            }
        );
        assert_eq!(a.decisions[0].duration, "500s");
        assert_eq!((a.decisions[0].kind.as_str(), a.decisions[0].scope.as_str()), ("ban", "Ip"));
        assert!(a.message.contains("5000 packets/s observed"), "{}", a.message);
        let r = alert(&ban("2001:db8:1::/64", 60), "web1", SystemTime::now());
        assert_eq!((r.source.scope.as_str(), r.source.value.as_str()), ("Range", "2001:db8:1::/64"));
    }
}
