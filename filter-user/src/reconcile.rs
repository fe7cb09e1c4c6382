//! Making a filter's maps what a config says, and saying what changed.
//!
//! The config is the desired state of each section. Lists are shared with the
//! operator: what a config source put in a list leaves it when it leaves the source,
//! while entries added from the command line (with or without a TTL) and auto-bans
//! stay. So the service remembers what the config owns ([`Owned`], saved under the
//! runtime directory so that a restart of the service still knows it). Rules are
//! owned by name the same way. Limits, policy and SYN cookies are single settings:
//! the config's value is applied when it changed in the file (a reload), or when the
//! kernel differs from it (the service starting), so a reload of an unchanged file
//! leaves an operator's `limit set` during a flood alone.
//!
//! Sections are applied in order (lists, rules, limits, policy, SYN cookies), each
//! whole or not at all; a failure stops at that section and reports it.

use std::{
    collections::{BTreeSet, HashMap},
    fmt, io,
    path::Path,
};

use filter_common::{ListKind, limit::LimitConfig};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    config::{Interface, Policy, SynProxy},
    limits::{LimitError, LimiterMaps},
    maps::{MapSource, OpenError},
    policy::{PolicyError, PolicyMaps},
    rules::{RuleError, RuleMaps, RuleSpec},
    store::{ListMaps, StoreError},
    synproxy::{SynProxyError, SynProxyMaps},
    watch::{WatchError, WatchMaps},
};

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("the {0}")]
    List(&'static str, #[source] Box<StoreError>),
    #[error("the watchlist")]
    Watch(#[from] WatchError),
    #[error("rules")]
    Rules(#[from] RuleError),
    #[error("limits")]
    Limits(#[from] LimitError),
    #[error("served-ports policy")]
    Policy(#[from] PolicyError),
    #[error("SYN cookies")]
    SynProxy(#[from] SynProxyError),
}

/// What the config put in a filter: removed again when it leaves the config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    pub blocklist: Vec<IpNet>,
    pub allowlist: Vec<IpNet>,
    pub rules: Vec<String>,
    /// (Absent in records saved before the watchlist existed.)
    #[serde(default)]
    pub watchlist: Vec<IpNet>,
}

impl Owned {
    pub fn list(&self, kind: ListKind) -> &[IpNet] {
        match kind {
            ListKind::Block => &self.blocklist,
            ListKind::Allow => &self.allowlist,
        }
    }

    fn list_mut(&mut self, kind: ListKind) -> &mut Vec<IpNet> {
        match kind {
            ListKind::Block => &mut self.blocklist,
            ListKind::Allow => &mut self.allowlist,
        }
    }

    /// The record saved by [`Owned::save`], or an empty one when there is none (the
    /// config then owns nothing yet: every entry present is kept as the operator's).
    pub fn load(path: &Path) -> io::Result<Self> {
        Ok(crate::atomic::read_json(path)?.unwrap_or_default())
    }

    /// Written whole or not at all.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        crate::atomic::write_json(path, self)
    }
}

/// The state to converge to: an interface's config with its lists resolved (entries
/// written in the file, list files and fetched URL lists together).
pub struct Desired<'a> {
    pub config: &'a Interface,
    pub blocklist: Vec<IpNet>,
    pub allowlist: Vec<IpNet>,
    pub watchlist: Vec<IpNet>,
    /// Blocklist prefixes another source of the service (the CrowdSec bouncer) wants
    /// banned: one the config leaves stays listed, and is handed over to that source
    /// ([`Changes::handed_over`]), so it is never out of the list for a moment.
    pub keep: std::collections::HashSet<IpNet>,
}

impl Desired<'_> {
    fn list(&self, kind: ListKind) -> &[IpNet] {
        match kind {
            ListKind::Block => &self.blocklist,
            ListKind::Allow => &self.allowlist,
        }
    }

    /// A list's entries as the maps hold them: host bits cleared, each once, in order.
    fn distinct(&self, kind: ListKind) -> BTreeSet<IpNet> {
        self.list(kind).iter().map(IpNet::trunc).collect()
    }

    /// Refuses a list with more distinct entries in one address family than the
    /// interface's `max_entries`: checked before anything is applied, so such a file
    /// changes nothing rather than applying the sections before the list that fails.
    pub fn check_capacity(&self) -> Result<(), String> {
        let cap = self.config.capacity.entries as usize;
        for kind in ListKind::ALL {
            let distinct = self.distinct(kind);
            let v4 = distinct.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
            for (family, n) in [("IPv4", v4), ("IPv6", distinct.len() - v4)] {
                if n > cap {
                    return Err(format!(
                        "the {} holds {} {family} entries, more than max_entries ({}); raise max_entries \
                         (new maps, swapped in without a gap) or shorten the list",
                        kind.name(),
                        crate::human::grouped(n as u64),
                        crate::human::grouped(cap as u64),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What one application changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub lists: Vec<ListChange>,
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    /// (old, new), described.
    pub limits: Option<(String, String)>,
    pub policy: Option<(String, String)>,
    pub synproxy: Option<(String, String)>,
    /// Blocklist entries the config left that stay for the source that keeps them
    /// (see [`Desired::keep`]): still permanent, for that source to give its TTL.
    #[serde(skip)]
    pub handed_over: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListChange {
    pub list: &'static str,
    pub added: usize,
    pub removed: usize,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for l in &self.lists {
            parts.push(format!("{} +{}/-{}", l.list, l.added, l.removed));
        }
        if !self.rules_added.is_empty() {
            parts.push(format!("rules added: {}", self.rules_added.join(", ")));
        }
        if !self.rules_removed.is_empty() {
            parts.push(format!("rules removed: {}", self.rules_removed.join(", ")));
        }
        for (what, change) in
            [("limits", &self.limits), ("policy", &self.policy), ("synproxy", &self.synproxy)]
        {
            if let Some((old, new)) = change {
                parts.push(format!("{what} {old} -> {new}"));
            }
        }
        if parts.is_empty() { f.write_str("no change") } else { f.write_str(&parts.join("; ")) }
    }
}

/// Applies `want` to the filter whose maps `src` gives. `prev` is the config applied
/// before (None when the service starts: then settings are compared with the
/// kernel's); `owned` what the config put in the filter before. On success, returns
/// what the config owns now, and what changed. On failure, the sections before the
/// failing one are applied, and `owned` (as updated so far) is in the error's
/// companion: the caller keeps the returned record either way.
pub fn apply(
    src: &mut impl MapSource,
    want: &Desired<'_>,
    prev: Option<&Interface>,
    owned: &Owned,
) -> (Owned, Changes, Result<(), ReconcileError>) {
    let mut now = owned.clone();
    let mut changes = Changes::default();
    let result = apply_sections(src, want, prev, &mut now, &mut changes);
    (now, changes, result)
}

fn apply_sections(
    src: &mut impl MapSource,
    want: &Desired<'_>,
    prev: Option<&Interface>,
    owned: &mut Owned,
    changes: &mut Changes,
) -> Result<(), ReconcileError> {
    let mut lists = ListMaps::open(src)?;
    for kind in ListKind::ALL {
        let desired = want.distinct(kind);
        let before: BTreeSet<IpNet> = owned.list(kind).iter().copied().collect();
        let add: Vec<IpNet> = desired.iter().copied().collect();
        let (kept, drop): (Vec<IpNet>, Vec<IpNet>) = before
            .difference(&desired)
            .copied()
            .partition(|n| kind == ListKind::Block && want.keep.contains(n));
        let (added, removed) = lists
            .converge(kind, &add, &drop, &mut |_, _| {})
            .map_err(|e| ReconcileError::List(kind.name(), Box::new(e)))?;
        *owned.list_mut(kind) = add;
        changes.handed_over.extend(kept);
        if added + removed > 0 {
            changes.lists.push(ListChange { list: kind.name(), added, removed });
        }
    }
    drop(lists);

    // The watchlist the same way: the config's entries go in, the ones it no longer
    // names leave, the operator's stay.
    let desired: BTreeSet<IpNet> = want.watchlist.iter().map(IpNet::trunc).collect();
    let before: BTreeSet<IpNet> = owned.watchlist.iter().copied().collect();
    let add: Vec<IpNet> = desired.iter().copied().collect();
    let gone: Vec<IpNet> = before.difference(&desired).copied().collect();
    let (added, removed) = WatchMaps::open(src)?.converge(&add, &gone)?;
    owned.watchlist = add;
    if added + removed > 0 {
        changes.lists.push(ListChange { list: "watchlist", added, removed });
    }

    apply_rules(&mut RuleMaps::open(src)?, &want.config.rules, owned, changes)?;

    let w = want.config;
    if prev.is_none_or(|p| p.limits != w.limits) {
        let mut limiter = LimiterMaps::open(src)?;
        let current = limiter.limits()?;
        let old = describe_limits((current.enabled != 0).then_some(&current));
        let new = describe_limits(want.config.limits.as_ref());
        let same = match &want.config.limits {
            Some(l) => LimitConfig { epoch: current.epoch, ..*l } == current,
            None => current.enabled == 0 && current.ban_after_ns == 0,
        };
        if !same {
            match &want.config.limits {
                Some(l) => limiter.set_limits(l)?,
                None => {
                    let off = LimitConfig { enabled: 0, ban_after_ns: 0, ..current };
                    limiter.set_limits(&off)?;
                }
            }
            changes.limits = Some((old, new));
        }
    }
    if prev.is_none_or(|p| p.policy != w.policy) {
        let mut policy = PolicyMaps::open(src)?;
        let current = policy.policy_state()?;
        let want_state = want
            .config
            .policy
            .as_ref()
            .map(|p| crate::policy::PolicyState { config: p.config, served: p.served.clone() })
            .unwrap_or_default();
        if normalized(&current) != normalized(&want_state) {
            let old = describe_policy_state(&current);
            policy.set_policy(want_state.config, &want_state.served)?;
            changes.policy = Some((old, describe_policy(want.config.policy.as_ref())));
        }
    }
    if prev.is_none_or(|p| p.synproxy != w.synproxy) {
        let mut sp = SynProxyMaps::open(src)?;
        let cfg = sp.synproxy_config()?;
        let current = (cfg.enabled != 0).then(|| sp.synproxy_ports().map(|ports| (ports, cfg.above_pps)));
        let current = current.transpose()?;
        let want_sp = want.config.synproxy.as_ref().map(|s| (s.ports.clone(), s.above_pps));
        if current != want_sp {
            let old = describe_synproxy(
                current
                    .as_ref()
                    .map(|(ports, above)| SynProxy { ports: ports.clone(), above_pps: *above })
                    .as_ref(),
            );
            match &want.config.synproxy {
                Some(s) => {
                    sp.enable_synproxy(&s.ports, s.above_pps)?;
                }
                None => {
                    sp.disable_synproxy()?;
                }
            }
            changes.synproxy = Some((old, describe_synproxy(want.config.synproxy.as_ref())));
        }
    }
    Ok(())
}

/// Rules by name: the config's rules are added (or replaced when their match changed),
/// the ones it owned and no longer names are removed; rules added by hand stay.
fn apply_rules(
    maps: &mut RuleMaps,
    want: &[RuleSpec],
    owned: &mut Owned,
    changes: &mut Changes,
) -> Result<(), RuleError> {
    let present: HashMap<String, RuleSpec> =
        maps.rules()?.into_iter().map(|r| (r.spec.name.clone(), r.spec)).collect();
    let wanted: HashMap<&str, &RuleSpec> = want.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut remove: Vec<String> = owned
        .rules
        .iter()
        .filter(|n| present.contains_key(*n) && !wanted.contains_key(n.as_str()))
        .cloned()
        .collect();
    let mut add = Vec::new();
    for spec in want {
        match present.get(&spec.name) {
            Some(p) if p == spec => {}
            Some(_) => {
                remove.push(spec.name.clone());
                add.push(spec.clone());
            }
            None => add.push(spec.clone()),
        }
    }
    for name in &remove {
        maps.remove_rule(name)?;
        owned.rules.retain(|n| n != name);
    }
    if !add.is_empty() {
        maps.add_rules(&add)?;
    }
    owned.rules = want.iter().map(|r| r.name.clone()).collect();
    changes.rules_removed = remove.into_iter().filter(|n| !wanted.contains_key(n.as_str())).collect();
    changes.rules_added = add.into_iter().map(|r| r.name).collect();
    Ok(())
}

fn normalized(p: &crate::policy::PolicyState) -> (filter_common::rules::PolicyConfig, Vec<(u8, u16, u16)>) {
    let mut served: Vec<_> = p.served.iter().map(|s| (s.proto as u8, s.lo, s.hi)).collect();
    served.sort_unstable();
    (p.config, served)
}

/// "off", or "200/s burst 50, syn 20/s, ban after 30s for 10m".
pub fn describe_limits(l: Option<&LimitConfig>) -> String {
    let Some(l) = l else { return "off".into() };
    let mut parts = Vec::new();
    let [pps, bps, syn, gsyn] = l.given;
    if pps > 0 {
        parts.push(format!("{pps} pps"));
    }
    if bps > 0 {
        parts.push(format!("{bps} bps"));
    }
    if syn > 0 {
        parts.push(format!("{syn} syn/s"));
    }
    if gsyn > 0 {
        parts.push(format!("{gsyn} global syn/s"));
    }
    if l.ban_after_ns > 0 {
        parts.push(format!(
            "ban after {}s for {}s",
            l.ban_after_ns / 1_000_000_000,
            l.ban_for_ns / 1_000_000_000
        ));
    }
    if parts.is_empty() { "on".into() } else { parts.join(", ") }
}

fn describe_served(served: &[crate::policy::Served]) -> String {
    let mut items: Vec<String> = served.iter().map(ToString::to_string).collect();
    items.sort();
    items.join(",")
}

pub fn describe_policy(p: Option<&Policy>) -> String {
    match p {
        None => "off".into(),
        Some(p) => {
            describe_policy_state(&crate::policy::PolicyState { config: p.config, served: p.served.clone() })
        }
    }
}

fn describe_policy_state(p: &crate::policy::PolicyState) -> String {
    if p.config == Default::default() && p.served.is_empty() {
        return "off".into();
    }
    let mut s = format!("serve {}", describe_served(&p.served));
    if p.config.ephemeral != 0 {
        s.push_str(&format!(", ephemeral {}-{}", p.config.eph_lo, p.config.eph_hi));
    }
    if p.config.drop_fragments != 0 {
        s.push_str(", fragments drop");
    }
    s
}

pub fn describe_synproxy(s: Option<&SynProxy>) -> String {
    match s {
        None => "off".into(),
        Some(s) => {
            let ports = crate::portmap::ranges_text(&s.ports);
            if s.above_pps == 0 {
                format!("ports {ports}")
            } else {
                format!("ports {ports} above {}/s", s.above_pps)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn iface(max_entries: u32) -> Interface {
        let text = format!("[interface.x]\nmax_entries = {max_entries}\n");
        crate::config::load_str(Path::new("t.toml"), &text).unwrap().interfaces.remove(0)
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn capacity_counts_distinct_entries_per_family() {
        let cfg = iface(2);
        // Two IPv4 and two IPv6 entries (a repeat and a host-bits duplicate count once).
        let fits = Desired {
            config: &cfg,
            blocklist: nets(&[
                "192.0.2.1/32",
                "192.0.2.1/32",
                "198.51.100.0/24",
                "2001:db8::/48",
                "2001:db8::1/128",
            ]),
            allowlist: nets(&["203.0.113.0/24"]),
            watchlist: Vec::new(),
            keep: Default::default(),
        };
        assert_eq!(fits.check_capacity(), Ok(()));
        let over =
            Desired { allowlist: nets(&["2001:db8::/32", "2001:db8:1::/48", "2001:db8:2::/48"]), ..fits };
        let e = over.check_capacity().unwrap_err();
        assert!(e.starts_with("the allowlist holds 3 IPv6 entries, more than max_entries (2)"), "{e}");
    }
}
