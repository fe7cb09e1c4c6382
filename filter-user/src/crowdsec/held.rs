//! What the bouncer may write in a blocklist it shares with the config, URL lists and
//! the operator. CrowdSec's entries are its own source: it adds a prefix nobody lists
//! (with the decision's TTL) and then holds it; it lifts only what it holds. A prefix
//! listed permanently by anyone else is left alone (and released if it was held: the
//! other source now keeps it). An operator's entry with a shorter TTL is lengthened to
//! the decision's and held, remembering the operator's expiry, which comes back when
//! the decision goes.

use std::collections::HashMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::store::Listed;

/// A prefix the bouncer holds in one blocklist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The expiry (monotonic ns) of the operator's own TTL entry this one lengthened;
    /// None: the bouncer added the entry.
    pub prior: Option<u64>,
}

/// The bouncer's entries in one interface's blocklist.
pub type HeldMap = HashMap<IpNet, Held>;

/// What to write for a set of prefixes, and how the held map changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Entries to list with this expiry (added when absent).
    pub set: Vec<(IpNet, u64)>,
    /// Entries to remove.
    pub gone: Vec<IpNet>,
    /// Held from now on.
    pub hold: Vec<(IpNet, Held)>,
    /// No longer held.
    pub release: Vec<IpNet>,
}

/// The plan for prefixes `nets`, each with the expiry CrowdSec wants (None: no
/// decision bans it any more) and how the blocklist lists it now; `now` in monotonic ns.
pub fn plan(nets: &[(IpNet, Option<u64>)], listed: &[Listed], held: &HeldMap, now: u64) -> Plan {
    let mut p = Plan::default();
    for ((net, want), listed) in nets.iter().zip(listed) {
        let mine = held.get(net);
        // An entry whose TTL passed is not listed for packets any more.
        let listed = match *listed {
            Listed::Until(t) if t <= now => Listed::Absent,
            l => l,
        };
        match (want.filter(|e| *e > now), listed, mine) {
            (Some(e), Listed::Absent, _) => {
                p.set.push((*net, e));
                p.hold.push((*net, Held { prior: None }));
            }
            (Some(_), Listed::Permanent, Some(_)) => p.release.push(*net),
            (Some(_), Listed::Permanent, None) => {}
            (Some(e), Listed::Until(t), Some(_)) => {
                if t != e {
                    p.set.push((*net, e));
                }
            }
            (Some(e), Listed::Until(t), None) => {
                if t < e {
                    p.set.push((*net, e));
                    p.hold.push((*net, Held { prior: Some(t) }));
                }
            }
            (None, Listed::Until(_), Some(h)) => {
                match h.prior.filter(|t| *t > now) {
                    Some(t) => p.set.push((*net, t)),
                    None => p.gone.push(*net),
                }
                p.release.push(*net);
            }
            (None, _, Some(_)) => p.release.push(*net),
            (None, _, None) => {}
        }
    }
    p
}

impl Plan {
    /// The held map after the plan was written.
    pub fn commit(&self, held: &mut HeldMap) {
        for n in &self.release {
            held.remove(n);
        }
        for (n, h) in &self.hold {
            held.insert(*n, *h);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.gone.is_empty() && self.hold.is_empty() && self.release.is_empty()
    }
}

/// The held map as saved between runs of the service (a JSON list: prefixes are not
/// JSON object keys).
pub fn save(path: &std::path::Path, held: &HeldMap) -> std::io::Result<()> {
    let mut list: Vec<(&IpNet, &Held)> = held.iter().collect();
    list.sort_by(|a, b| crate::store::net_order(a.0, b.0));
    crate::atomic::write_json(path, &list)
}

/// The held map saved by [`save`], or an empty one when there is none.
pub fn load(path: &std::path::Path) -> std::io::Result<HeldMap> {
    let list: Vec<(IpNet, Held)> = crate::atomic::read_json(path)?.unwrap_or_default();
    Ok(list.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    const NOW: u64 = 1_000;

    #[test]
    fn adds_what_nobody_lists_and_holds_it() {
        let p = plan(&[(n("192.0.2.5/32"), Some(5_000))], &[Listed::Absent], &HeldMap::new(), NOW);
        assert_eq!(p.set, vec![(n("192.0.2.5/32"), 5_000)]);
        assert_eq!(p.hold, vec![(n("192.0.2.5/32"), Held { prior: None })]);
        assert!(p.gone.is_empty() && p.release.is_empty());
    }

    #[test]
    fn leaves_permanent_entries_of_others_alone() {
        let net = n("198.51.100.0/24");
        // Not held: someone else's; nothing to write, whether the decision comes or goes.
        for want in [Some(5_000), None] {
            let p = plan(&[(net, want)], &[Listed::Permanent], &HeldMap::new(), NOW);
            assert!(p.is_empty(), "{p:?}");
        }
        // Held, then made permanent by another source (the config): released, not removed.
        let held = HeldMap::from([(net, Held::default())]);
        for want in [Some(5_000), None] {
            let p = plan(&[(net, want)], &[Listed::Permanent], &held, NOW);
            assert_eq!(p, Plan { release: vec![net], ..Plan::default() });
        }
    }

    #[test]
    fn lifts_only_what_it_holds() {
        let net = n("192.0.2.5/32");
        let held = HeldMap::from([(net, Held::default())]);
        let p = plan(&[(net, None)], &[Listed::Until(5_000)], &held, NOW);
        assert_eq!(p, Plan { gone: vec![net], release: vec![net], ..Plan::default() });
        // An operator's TTL entry that no decision lengthened: not the bouncer's.
        let p = plan(&[(net, None)], &[Listed::Until(5_000)], &HeldMap::new(), NOW);
        assert!(p.is_empty());
        // Held but removed by hand meanwhile: only forgotten.
        let p = plan(&[(net, None)], &[Listed::Absent], &held, NOW);
        assert_eq!(p, Plan { release: vec![net], ..Plan::default() });
    }

    #[test]
    fn lengthens_an_operator_ttl_and_gives_it_back() {
        let net = n("2001:db8::/48");
        let p = plan(&[(net, Some(9_000))], &[Listed::Until(3_000)], &HeldMap::new(), NOW);
        assert_eq!(p.set, vec![(net, 9_000)]);
        assert_eq!(p.hold, vec![(net, Held { prior: Some(3_000) })]);
        let mut held = HeldMap::new();
        p.commit(&mut held);
        // The decision goes while the operator's TTL still runs: back to it.
        let p = plan(&[(net, None)], &[Listed::Until(9_000)], &held, NOW);
        assert_eq!(p, Plan { set: vec![(net, 3_000)], release: vec![net], ..Plan::default() });
        // After the operator's TTL: removed.
        let p = plan(&[(net, None)], &[Listed::Until(9_000)], &held, 4_000);
        assert_eq!(p, Plan { gone: vec![net], release: vec![net], ..Plan::default() });
        // An operator TTL longer than the decision stays the operator's.
        let p = plan(&[(net, Some(2_000))], &[Listed::Until(3_000)], &HeldMap::new(), NOW);
        assert!(p.is_empty());
    }

    #[test]
    fn follows_the_decision_expiry_and_treats_expired_entries_as_absent() {
        let net = n("192.0.2.9/32");
        let held = HeldMap::from([(net, Held::default())]);
        let p = plan(&[(net, Some(7_000))], &[Listed::Until(5_000)], &held, NOW);
        assert_eq!(p, Plan { set: vec![(net, 7_000)], ..Plan::default() });
        let p = plan(&[(net, Some(7_000))], &[Listed::Until(7_000)], &held, NOW);
        assert!(p.is_empty());
        // Expired but not swept: written again, held afresh.
        let p = plan(&[(net, Some(7_000))], &[Listed::Until(500)], &HeldMap::new(), NOW);
        assert_eq!(p.set, vec![(net, 7_000)]);
        assert_eq!(p.hold, vec![(net, Held { prior: None })]);
        // A wanted expiry already past counts as no decision.
        let p = plan(&[(net, Some(900))], &[Listed::Until(5_000)], &held, NOW);
        assert_eq!(p, Plan { gone: vec![net], release: vec![net], ..Plan::default() });
    }

    #[test]
    fn held_map_round_trips_through_its_file() {
        let dir = std::env::temp_dir().join(format!("fg-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("held.json");
        assert!(load(&path).unwrap().is_empty());
        let held = HeldMap::from([
            (n("192.0.2.5/32"), Held { prior: None }),
            (n("2001:db8::/48"), Held { prior: Some(42) }),
        ]);
        save(&path, &held).unwrap();
        assert_eq!(load(&path).unwrap(), held);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
