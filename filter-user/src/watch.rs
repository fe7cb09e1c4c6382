//! The watchlist: a blocklist in observe mode. Frames from its sources are counted
//! under `would_drop.blocklist` (and sampled) and passed, so an operator sees what a
//! new feed would hit before putting it on the blocklist.
//!
//! Two LPM tries, one per family, and a word in `FG_ACTIVE` that tells the data path
//! which of them hold entries: with nothing watched a frame costs one read of that
//! word. Changes are entry by entry (no generations as the blocklist has): a frame
//! racing an update is counted under the old or the new list, which is all a dry run
//! needs, and the word is set before the first entry of a family goes in and cleared
//! after its last one left.

use std::collections::BTreeSet;

use aya::maps::{Array, LpmTrie, MapData, MapError, lpm_trie::Key};
use filter_common::{ACTIVE_WATCH, HAS_TRIE_V4, HAS_TRIE_V6, WATCH_ENTRIES, map_names};
use ipnet::IpNet;
use thiserror::Error;

use crate::maps::{MapSource, OpenError};

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("{op} failed on the watchlist's maps")]
    Map {
        op: String,
        #[source]
        source: MapError,
    },
    #[error("the watchlist would hold {would} {family} entries, more than its {max}; nothing was changed")]
    Full { family: &'static str, would: usize, max: u32 },
    #[error("not on the watchlist: {}; nothing was removed", .0.join(", "))]
    NotListed(Vec<String>),
}

fn map_err(op: impl Into<String>) -> impl FnOnce(MapError) -> WatchError {
    let op = op.into();
    move |source| WatchError::Map { op, source }
}

pub struct WatchMaps {
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
    active: Array<MapData, u32>,
}

impl WatchMaps {
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        Ok(WatchMaps {
            v4: src.typed(map_names::WATCH_V4)?,
            v6: src.typed(map_names::WATCH_V6)?,
            active: src.typed(map_names::ACTIVE)?,
        })
    }

    /// Every entry, IPv4 then IPv6, in address order.
    pub fn entries(&self) -> Result<Vec<IpNet>, WatchError> {
        let mut out = BTreeSet::new();
        for k in self.v4.keys() {
            let k = k.map_err(map_err("reading the watchlist"))?;
            out.insert(net(k.prefix_len(), IpAddrBytes::V4(k.data())));
        }
        for k in self.v6.keys() {
            let k = k.map_err(map_err("reading the watchlist"))?;
            out.insert(net(k.prefix_len(), IpAddrBytes::V6(k.data())));
        }
        let mut out: Vec<IpNet> = out.into_iter().collect();
        out.sort_by(crate::store::net_order);
        Ok(out)
    }

    /// Adds `add` and removes `drop` (entries missing or present already are fine):
    /// the capacity is checked first, so a change that does not fit changes nothing.
    /// Returns how many entries were added and removed.
    pub fn converge(&mut self, add: &[IpNet], drop: &[IpNet]) -> Result<(usize, usize), WatchError> {
        let have = self.entry_set()?;
        self.apply(have, add, drop)
    }

    /// [`WatchMaps::converge`] from the entries `have`, read once by the caller.
    fn apply(
        &mut self,
        have: BTreeSet<IpNet>,
        add: &[IpNet],
        drop: &[IpNet],
    ) -> Result<(usize, usize), WatchError> {
        let add: BTreeSet<IpNet> = add.iter().map(IpNet::trunc).filter(|n| !have.contains(n)).collect();
        let drop: BTreeSet<IpNet> =
            drop.iter().map(IpNet::trunc).filter(|n| have.contains(n) && !add.contains(n)).collect();
        for (family, v6) in [("IPv4", false), ("IPv6", true)] {
            let count = |s: &BTreeSet<IpNet>| s.iter().filter(|n| matches!(n, IpNet::V6(_)) == v6).count();
            let would = count(&have) + count(&add) - count(&drop);
            if would > WATCH_ENTRIES as usize {
                return Err(WatchError::Full { family, would, max: WATCH_ENTRIES });
            }
        }
        let after: BTreeSet<IpNet> = have.union(&add).filter(|n| !drop.contains(n)).copied().collect();
        // Flags on before entries go in, off only after the last has gone.
        self.set_flags(flags(&have) | flags(&after))?;
        for n in &add {
            self.insert(n)?;
        }
        for n in &drop {
            self.delete(n)?;
        }
        self.set_flags(flags(&after))?;
        Ok((add.len(), drop.len()))
    }

    /// Adds entries; returns how many were new (those present already are no error).
    pub fn add(&mut self, nets: &[IpNet]) -> Result<usize, WatchError> {
        self.converge(nets, &[]).map(|(added, _)| added)
    }

    /// Removes exact entries, all or none.
    pub fn remove(&mut self, nets: &[IpNet]) -> Result<usize, WatchError> {
        let have = self.entry_set()?;
        let missing: Vec<String> =
            nets.iter().map(IpNet::trunc).filter(|n| !have.contains(n)).map(|n| n.to_string()).collect();
        if !missing.is_empty() {
            return Err(WatchError::NotListed(missing));
        }
        self.apply(have, &[], nets).map(|(_, removed)| removed)
    }

    /// Makes `nets` the whole watchlist.
    pub fn replace(&mut self, nets: &[IpNet]) -> Result<(usize, usize), WatchError> {
        let have = self.entry_set()?;
        let gone: Vec<IpNet> = have.iter().copied().collect();
        self.apply(have, nets, &gone)
    }

    fn entry_set(&self) -> Result<BTreeSet<IpNet>, WatchError> {
        Ok(self.entries()?.into_iter().collect())
    }

    fn insert(&mut self, n: &IpNet) -> Result<(), WatchError> {
        let len = u32::from(n.prefix_len());
        match n {
            IpNet::V4(a) => self.v4.insert(&Key::new(len, a.addr().octets()), &len, 0),
            IpNet::V6(a) => self.v6.insert(&Key::new(len, a.addr().octets()), &len, 0),
        }
        .map_err(map_err(format!("adding {n}")))
    }

    fn delete(&mut self, n: &IpNet) -> Result<(), WatchError> {
        let len = u32::from(n.prefix_len());
        match n {
            IpNet::V4(a) => self.v4.remove(&Key::new(len, a.addr().octets())),
            IpNet::V6(a) => self.v6.remove(&Key::new(len, a.addr().octets())),
        }
        .map_err(map_err(format!("removing {n}")))
    }

    fn set_flags(&mut self, word: u32) -> Result<(), WatchError> {
        self.active.set(ACTIVE_WATCH, &word, 0).map_err(map_err("setting the watchlist's word"))
    }
}

/// The `FG_ACTIVE` word for a watchlist holding `nets`.
fn flags(nets: &BTreeSet<IpNet>) -> u32 {
    nets.iter().fold(0, |w, n| w | if matches!(n, IpNet::V4(_)) { HAS_TRIE_V4 } else { HAS_TRIE_V6 })
}

enum IpAddrBytes {
    V4([u8; 4]),
    V6([u8; 16]),
}

fn net(len: u32, a: IpAddrBytes) -> IpNet {
    let (addr, max) = match a {
        IpAddrBytes::V4(b) => (std::net::IpAddr::from(b), 32),
        IpAddrBytes::V6(b) => (std::net::IpAddr::from(b), 128),
    };
    // The kernel keeps what was inserted, so the length is in range.
    IpNet::new(addr, len.min(max) as u8).expect("prefix length in range")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_names_the_families_present() {
        let set = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<BTreeSet<IpNet>>();
        assert_eq!(flags(&set(&[])), 0);
        assert_eq!(flags(&set(&["192.0.2.0/24"])), HAS_TRIE_V4);
        assert_eq!(flags(&set(&["2001:db8::/32"])), HAS_TRIE_V6);
        assert_eq!(flags(&set(&["192.0.2.0/24", "2001:db8::/32"])), HAS_TRIE_V4 | HAS_TRIE_V6);
    }
}
