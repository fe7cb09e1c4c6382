//! floodgate as a CrowdSec bouncer and reporter.
//!
//! The bouncer pulls decisions from a CrowdSec Local API in stream mode (a startup
//! pull of every decision, then deltas), keeps the enforceable ones in a [`Table`],
//! and puts each banned prefix in the blocklist with the decision's remaining time as
//! its TTL ([`held`] decides what to write without touching anyone else's entries).
//! The reporter ([`report`]) sends floodgate's own auto-bans to the LAPI as alerts
//! carrying a ban decision, so every bouncer of the LAPI enforces them.
//!
//! The HTTP side is [`lapi`]; the service runs both in `floodgate run`.

pub mod held;
pub mod lapi;
pub mod report;
pub mod status;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{CrowdSec, Scope};

/// A decision as the LAPI's stream sends it (fields floodgate does not use are left
/// out; missing ones default, so a newer LAPI adding fields changes nothing).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Decision {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub value: String,
    /// Time left, in Go's duration syntax ("3h59m55.7s"; negative when expired).
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub scenario: String,
}

/// One answer of `GET /v1/decisions/stream`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Stream {
    /// Decisions new since the last pull (every live one for a startup pull).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub new: Vec<Decision>,
    /// Decisions deleted or expired since the last pull.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub deleted: Vec<Decision>,
}

/// The LAPI sends `null` for an empty array.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Decision>, D::Error> {
    Ok(Option::<Vec<Decision>>::deserialize(d)?.unwrap_or_default())
}

/// Why a decision is not enforced (counted per kind in the metrics).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// A type not in `types` (captcha, throttle, ...).
    Type(String),
    /// A scope not in `scopes` (Country, AS, ...).
    Scope(String),
    /// An origin in `skip_origins`.
    Origin(String),
    /// A value that is no address or prefix of its scope.
    Value,
}

impl Skip {
    /// (label name, label value) for the metrics.
    pub fn label(&self) -> (&'static str, String) {
        match self {
            Skip::Type(t) => ("type", t.clone()),
            Skip::Scope(s) => ("scope", s.clone()),
            Skip::Origin(o) => ("origin", o.clone()),
            Skip::Value => ("value", "invalid".into()),
        }
    }
}

/// Which decisions are enforced (from `[crowdsec]`).
#[derive(Clone, Debug)]
pub struct Filter {
    types: Vec<String>,
    scopes: Vec<Scope>,
    skip_origins: Vec<String>,
}

impl Filter {
    pub fn new(cfg: &CrowdSec) -> Self {
        Filter {
            types: cfg.types.clone(),
            scopes: cfg.scopes.clone(),
            skip_origins: cfg.skip_origins.clone(),
        }
    }

    /// The scope and prefix a decision bans, or why it is skipped.
    pub fn accept(&self, d: &Decision) -> Result<(Scope, IpNet), Skip> {
        let kind = d.kind.to_ascii_lowercase();
        if !self.types.contains(&kind) {
            return Err(Skip::Type(kind));
        }
        let scope = match d.scope.to_ascii_lowercase().as_str() {
            "ip" => Scope::Ip,
            "range" => Scope::Range,
            other => return Err(Skip::Scope(other.to_string())),
        };
        if !self.scopes.contains(&scope) {
            return Err(Skip::Scope(d.scope.to_ascii_lowercase()));
        }
        let origin = d.origin.to_ascii_lowercase();
        if self.skip_origins.contains(&origin) {
            return Err(Skip::Origin(origin));
        }
        parse_value(scope, &d.value).map(|n| (scope, n)).ok_or(Skip::Value)
    }
}

/// An `Ip` decision's address as a host prefix, a `Range` decision's prefix (host
/// bits cleared: the LAPI matches the range, and so does the blocklist).
pub fn parse_value(scope: Scope, value: &str) -> Option<IpNet> {
    let value = value.trim();
    match scope {
        // An IPv4-mapped IPv6 address is the IPv4 source the data path sees.
        Scope::Ip => value.parse::<IpAddr>().ok().map(|a| IpNet::from(a.to_canonical())),
        Scope::Range => value.parse::<IpNet>().ok().map(|n| n.trunc()),
    }
}

/// Go's `time.Duration` text ("1h2m3.5s", "250ms", "-1.5s", "0s") as (negative,
/// magnitude); None when it is not that syntax.
pub fn parse_go_duration(text: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some((false, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some((negative && total > 0.0, Duration::try_from_secs_f64(total).ok()?))
}

/// The time a decision has left; None when it has expired or its duration is not
/// Go's syntax.
pub fn remaining(d: &Decision) -> Option<Duration> {
    match parse_go_duration(&d.duration)? {
        (false, t) if !t.is_zero() => Some(t),
        _ => None,
    }
}

/// The enforceable decisions in force, by scope and prefix. The LAPI's stream is
/// deduplicated by value: `new` carries one decision per value (the longest; a longer
/// one arriving later replaces it) and `deleted` names a value once no decision for it
/// is left, under an id that may differ from the one sent. So decisions are keyed by
/// what they ban, not by id; `Ip` 192.0.2.5 and `Range` 192.0.2.5/32 are kept apart
/// (the LAPI deletes them apart) and the prefix stays banned while either lasts.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Expiry (monotonic ns) per scope: [Ip, Range]; 0: none.
    by_net: HashMap<IpNet, [u64; 2]>,
}

/// What one pull changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    /// Prefixes whose wanted expiry may have changed (to apply: [`Table::want`]).
    pub touched: Vec<IpNet>,
    /// Enforceable decisions received (new).
    pub received: u64,
    /// Deletions received that ended a decision in the table.
    pub deleted: u64,
    pub skipped: Vec<Skip>,
}

impl Table {
    /// Applies a pull made at monotonic time `now` (ns). A startup pull replaces the
    /// table (its `deleted` lists every expired decision the LAPI still stores: not
    /// news).
    pub fn apply(&mut self, stream: &Stream, startup: bool, filter: &Filter, now: u64) -> Delta {
        let mut delta = Delta::default();
        let mut touched: HashSet<IpNet> = HashSet::new();
        if startup {
            touched.extend(self.by_net.keys().copied());
            self.by_net.clear();
        } else {
            for d in &stream.deleted {
                // Repeated deletions (the LAPI resends those of the last seconds) and
                // ones of decisions never taken change nothing.
                if let Ok((scope, net)) = filter.accept(d)
                    && self.set(scope, net, 0)
                {
                    touched.insert(net);
                    delta.deleted += 1;
                }
            }
        }
        for d in &stream.new {
            let (scope, net) = match filter.accept(d) {
                Ok(k) => k,
                Err(skip) => {
                    delta.skipped.push(skip);
                    continue;
                }
            };
            touched.insert(net);
            // An expired one only ends what was there.
            let expires = match remaining(d) {
                Some(left) => now.saturating_add(left.as_nanos().min(u128::from(u64::MAX)) as u64),
                None => 0,
            };
            self.set(scope, net, expires);
            delta.received += u64::from(expires != 0);
        }
        delta.touched = touched.into_iter().collect();
        delta.touched.sort_by(crate::store::net_order);
        delta
    }

    /// Sets (or with 0 ends) the decision of `scope` on `net`; whether it changed.
    fn set(&mut self, scope: Scope, net: IpNet, expires: u64) -> bool {
        let i = scope as usize;
        let slot = self.by_net.entry(net).or_default();
        let changed = slot[i] != expires;
        slot[i] = expires;
        if *slot == [0, 0] {
            self.by_net.remove(&net);
        }
        changed
    }

    /// Until when `net` is to be banned (the longer of its decisions), if it is.
    pub fn want(&self, net: &IpNet, now: u64) -> Option<u64> {
        self.by_net.get(net)?.iter().copied().filter(|e| *e > now).max()
    }

    /// Every banned prefix with its expiry (expired decisions left out).
    pub fn wanted(&self, now: u64) -> Vec<(IpNet, u64)> {
        let mut out: Vec<(IpNet, u64)> =
            self.by_net.keys().filter_map(|n| self.want(n, now).map(|e| (*n, e))).collect();
        out.sort_by(|a, b| crate::store::net_order(&a.0, &b.0));
        out
    }

    /// Drops decisions whose time is up (the data path stopped matching them already);
    /// returns the prefixes no decision bans any more.
    pub fn expire(&mut self, now: u64) -> Vec<IpNet> {
        let mut gone = Vec::new();
        self.by_net.retain(|net, slot| {
            for e in slot.iter_mut() {
                if *e <= now {
                    *e = 0;
                }
            }
            let keep = *slot != [0, 0];
            if !keep {
                gone.push(*net);
            }
            keep
        });
        gone.sort_by(crate::store::net_order);
        gone
    }

    /// Decisions in the table (one per scope and prefix).
    pub fn len(&self) -> usize {
        self.by_net.values().map(|s| s.iter().filter(|e| **e != 0).count()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_net.is_empty()
    }

    /// Distinct prefixes banned.
    pub fn prefixes(&self) -> usize {
        self.by_net.len()
    }
}

#[cfg(test)]
mod tests;
