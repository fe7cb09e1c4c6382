//! List operations on the maps: add, remove, atomic replace, listing.
//!
//! Callers hold the interface lock (see `pins::Lock`): these functions assume they are
//! the only writer. Every operation checks everything it can before it changes a
//! map, and undoes its own changes if the kernel refuses one midway, so a command
//! either applies whole or leaves the lists as they were.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{MapError, lpm_trie::Key};
use filter_common::{
    Family, GEN_PREFIX_BITS, HostV4, HostV6, ListKind, ListValue, META_VERSION, Meta, net_v4,
    net_v6, split_net_v4, split_net_v6,
};
use ipnet::IpNet;
use thiserror::Error;

use crate::maps::FilterMaps;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "the {list} is full: it holds {have} {family} entries, its capacity is {capacity} \
         (set by `floodgate attach --max-entries`), and this would add {adding} more; nothing was changed"
    )]
    Full {
        list: &'static str,
        family: &'static str,
        have: u32,
        adding: u32,
        capacity: u32,
    },
    #[error("{} of the given entries {} not on the {list}: {sample}; nothing was removed",
        .missing, if *.missing == 1 { "is" } else { "are" })]
    NotPresent {
        list: &'static str,
        missing: usize,
        sample: String,
    },
    #[error(
        "the pinned maps have layout version {found}, this floodgate expects {expected}: detach and attach again"
    )]
    Version { found: u32, expected: u32 },
    #[error("{op} failed on the {list} maps")]
    Map {
        op: &'static str,
        list: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading or writing floodgate's bookkeeping map")]
    Meta(#[source] MapError),
}

/// Where an entry lives: exact hosts in the hash maps, shorter prefixes in the tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    V4Host([u8; 4]),
    V4Net(u8, [u8; 4]),
    V6Host([u8; 16]),
    V6Net(u8, [u8; 16]),
}

impl Slot {
    fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => Slot::V4Host(n.addr().octets()),
            IpNet::V4(n) => Slot::V4Net(n.prefix_len(), n.network().octets()),
            IpNet::V6(n) if n.prefix_len() == 128 => Slot::V6Host(n.addr().octets()),
            IpNet::V6(n) => Slot::V6Net(n.prefix_len(), n.network().octets()),
        }
    }

    fn family(&self) -> Family {
        match self {
            Slot::V4Host(_) | Slot::V4Net(..) => Family::V4,
            Slot::V6Host(_) | Slot::V6Net(..) => Family::V6,
        }
    }

    fn net(&self) -> IpNet {
        let (addr, len) = match *self {
            Slot::V4Host(a) => (IpAddr::V4(Ipv4Addr::from(a)), 32),
            Slot::V4Net(l, a) => (IpAddr::V4(Ipv4Addr::from(a)), l),
            Slot::V6Host(a) => (IpAddr::V6(Ipv6Addr::from(a)), 128),
            Slot::V6Net(l, a) => (IpAddr::V6(Ipv6Addr::from(a)), l),
        };
        IpNet::new(addr, len).expect("valid prefix length")
    }

    /// The value stored with the entry: its own prefix length. A trie lookup returns
    /// the value of the longest matching prefix, so comparing it with the length looked
    /// up tells an exact entry from a covering shorter one.
    fn value(&self) -> ListValue {
        match *self {
            Slot::V4Host(_) => 32,
            Slot::V6Host(_) => 128,
            Slot::V4Net(l, _) | Slot::V6Net(l, _) => l as ListValue,
        }
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// What an `add` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub added: usize,
    pub already_present: usize,
}

/// Receives `(done, total)` as a long operation advances.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

impl FilterMaps {
    pub fn read_meta(&self) -> Result<Meta, StoreError> {
        let meta = self.meta.get(&0, 0).map_err(StoreError::Meta)?;
        if meta.version != META_VERSION {
            return Err(StoreError::Version {
                found: meta.version,
                expected: META_VERSION,
            });
        }
        Ok(meta)
    }

    pub fn write_meta(&mut self, meta: &Meta) -> Result<(), StoreError> {
        self.meta.set(0, meta, 0).map_err(StoreError::Meta)
    }

    fn generation(&self, kind: ListKind) -> Result<u32, StoreError> {
        self.active.get(&(kind as u32), 0).map_err(StoreError::Meta)
    }

    fn map_err(kind: ListKind, op: &'static str) -> impl Fn(MapError) -> StoreError {
        move |source| StoreError::Map {
            op,
            list: kind.name(),
            source,
        }
    }

    fn contains(&self, kind: ListKind, g: u32, slot: &Slot) -> Result<bool, StoreError> {
        let m = self.list(kind);
        let found = match *slot {
            Slot::V4Host(a) => m.v4_host.get(&HostV4::new(g, a), 0),
            Slot::V6Host(a) => m.v6_host.get(&HostV6::new(g, a), 0),
            Slot::V4Net(l, a) => m
                .v4_net
                .get(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(g, a)), 0),
            Slot::V6Net(l, a) => m
                .v6_net
                .get(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(g, a)), 0),
        };
        match found {
            Ok(v) => Ok(v == slot.value()),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(Self::map_err(kind, "lookup")(e)),
        }
    }

    fn insert(&mut self, kind: ListKind, g: u32, slot: &Slot) -> Result<(), StoreError> {
        let v = slot.value();
        let m = self.list_mut(kind);
        match *slot {
            Slot::V4Host(a) => m.v4_host.insert(&HostV4::new(g, a), &v, 0),
            Slot::V6Host(a) => m.v6_host.insert(&HostV6::new(g, a), &v, 0),
            Slot::V4Net(l, a) => {
                m.v4_net
                    .insert(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(g, a)), &v, 0)
            }
            Slot::V6Net(l, a) => {
                m.v6_net
                    .insert(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(g, a)), &v, 0)
            }
        }
        .map_err(Self::map_err(kind, "insert"))
    }

    fn delete(&mut self, kind: ListKind, g: u32, slot: &Slot) -> Result<(), StoreError> {
        let m = self.list_mut(kind);
        match *slot {
            Slot::V4Host(a) => m.v4_host.remove(&HostV4::new(g, a)),
            Slot::V6Host(a) => m.v6_host.remove(&HostV6::new(g, a)),
            Slot::V4Net(l, a) => m
                .v4_net
                .remove(&Key::new(GEN_PREFIX_BITS + l as u32, net_v4(g, a))),
            Slot::V6Net(l, a) => m
                .v6_net
                .remove(&Key::new(GEN_PREFIX_BITS + l as u32, net_v6(g, a))),
        }
        .map_err(Self::map_err(kind, "delete"))
    }

    /// Inserts `slots` into generation `g`; on failure removes what it inserted.
    fn insert_all(
        &mut self,
        kind: ListKind,
        g: u32,
        slots: &[Slot],
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        let total = slots.len() as u64;
        for (i, slot) in slots.iter().enumerate() {
            if let Err(e) = self.insert(kind, g, slot) {
                for done in &slots[..i] {
                    let _ = self.delete(kind, g, done);
                }
                return Err(e);
            }
            if i.is_multiple_of(4096) {
                progress(i as u64, total);
            }
        }
        progress(total, total);
        Ok(())
    }

    fn check_capacity(
        &self,
        kind: ListKind,
        meta: &Meta,
        counts: [u32; 2],
        adding: [u32; 2],
    ) -> Result<(), StoreError> {
        for f in [Family::V4, Family::V6] {
            let (have, add) = (counts[f as usize], adding[f as usize]);
            if u64::from(have) + u64::from(add) > u64::from(meta.max_entries) {
                return Err(StoreError::Full {
                    list: kind.name(),
                    family: family_name(f),
                    have,
                    adding: add,
                    capacity: meta.max_entries,
                });
            }
        }
        Ok(())
    }

    /// Adds entries to the active generation. Entries already present are counted, not
    /// an error. Capacity is checked before anything is written.
    pub fn add(
        &mut self,
        kind: ListKind,
        nets: &[IpNet],
        progress: Progress<'_>,
    ) -> Result<Added, StoreError> {
        let mut meta = self.read_meta()?;
        let g = self.generation(kind)?;
        let unique = dedup(nets);
        let mut new = Vec::with_capacity(unique.len());
        let mut adding = [0u32; 2];
        for slot in &unique {
            if !self.contains(kind, g, slot)? {
                adding[slot.family() as usize] += 1;
                new.push(*slot);
            }
        }
        self.check_capacity(kind, &meta, meta.counts[kind as usize], adding)?;
        self.insert_all(kind, g, &new, progress)?;
        for (count, add) in meta.counts[kind as usize].iter_mut().zip(adding) {
            *count += add;
        }
        self.write_meta(&meta)?;
        Ok(Added {
            added: new.len(),
            already_present: nets.len() - new.len(),
        })
    }

    /// Removes exact entries (a prefix is not removed by removing an address inside it).
    /// If any is missing, nothing is removed.
    pub fn remove(&mut self, kind: ListKind, nets: &[IpNet]) -> Result<usize, StoreError> {
        let mut meta = self.read_meta()?;
        let g = self.generation(kind)?;
        let unique = dedup(nets);
        let mut missing = Vec::new();
        for slot in &unique {
            if !self.contains(kind, g, slot)? {
                missing.push(slot.net().to_string());
            }
        }
        if !missing.is_empty() {
            let mut sample = missing
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if missing.len() > 5 {
                sample.push_str(", ...");
            }
            return Err(StoreError::NotPresent {
                list: kind.name(),
                missing: missing.len(),
                sample,
            });
        }
        for (i, slot) in unique.iter().enumerate() {
            if let Err(e) = self.delete(kind, g, slot) {
                for done in &unique[..i] {
                    let _ = self.insert(kind, g, done);
                }
                return Err(e);
            }
            meta.counts[kind as usize][slot.family() as usize] -= 1;
        }
        self.write_meta(&meta)?;
        Ok(unique.len())
    }

    /// Makes `nets` the whole list. The new entries are written into the inactive
    /// generation while packets keep matching the active one; one write to the active
    /// index then switches every CPU to the new list, and the old generation is deleted.
    /// So no packet ever sees an empty list, a partial list, or misses an entry present
    /// in both the old and the new list.
    pub fn replace(
        &mut self,
        kind: ListKind,
        nets: &[IpNet],
        progress: Progress<'_>,
    ) -> Result<usize, StoreError> {
        let mut meta = self.read_meta()?;
        let old = self.generation(kind)?;
        let new = 1 - old;
        // A replace that died halfway may have left entries in the inactive generation.
        self.clear_generation(kind, new)?;
        let unique = dedup(nets);
        let mut counts = [0u32; 2];
        for slot in &unique {
            counts[slot.family() as usize] += 1;
        }
        self.check_capacity(kind, &meta, [0, 0], counts)?;
        self.insert_all(kind, new, &unique, progress)?;
        self.active
            .set(kind as u32, &new, 0)
            .map_err(StoreError::Meta)?;
        meta.counts[kind as usize] = counts;
        self.write_meta(&meta)?;
        // Packets that read the old index just before the flip finish within
        // microseconds; the scan below takes far longer before it deletes anything.
        self.clear_generation(kind, old)?;
        Ok(unique.len())
    }

    /// Every entry of generation `g`, in map order.
    fn slots(&self, kind: ListKind, g: u32) -> Result<Vec<Slot>, StoreError> {
        let m = self.list(kind);
        let err = Self::map_err(kind, "listing");
        let mut out = Vec::new();
        for k in m.v4_host.keys() {
            let k = k.map_err(&err)?;
            if k.generation == g {
                out.push(Slot::V4Host(k.addr));
            }
        }
        for k in m.v6_host.keys() {
            let k = k.map_err(&err)?;
            if k.generation == g {
                out.push(Slot::V6Host(k.addr));
            }
        }
        for k in m.v4_net.keys() {
            let k = k.map_err(&err)?;
            let (kg, a) = split_net_v4(&k.data());
            if kg == g {
                out.push(Slot::V4Net((k.prefix_len() - GEN_PREFIX_BITS) as u8, a));
            }
        }
        for k in m.v6_net.keys() {
            let k = k.map_err(&err)?;
            let (kg, a) = split_net_v6(&k.data());
            if kg == g {
                out.push(Slot::V6Net((k.prefix_len() - GEN_PREFIX_BITS) as u8, a));
            }
        }
        Ok(out)
    }

    fn clear_generation(&mut self, kind: ListKind, g: u32) -> Result<(), StoreError> {
        // Collect first: deleting while walking makes the kernel restart the walk.
        for slot in self.slots(kind, g)? {
            self.delete(kind, g, &slot)?;
        }
        Ok(())
    }

    /// The active entries of a list, IPv4 before IPv6, each in address order.
    pub fn entries(&self, kind: ListKind) -> Result<Vec<IpNet>, StoreError> {
        let g = self.generation(kind)?;
        let mut nets: Vec<IpNet> = self.slots(kind, g)?.iter().map(Slot::net).collect();
        nets.sort_by(|a, b| match (a, b) {
            (IpNet::V4(_), IpNet::V6(_)) => std::cmp::Ordering::Less,
            (IpNet::V6(_), IpNet::V4(_)) => std::cmp::Ordering::Greater,
            _ => a.cmp(b),
        });
        Ok(nets)
    }
}

fn dedup(nets: &[IpNet]) -> Vec<Slot> {
    let mut seen = HashSet::with_capacity(nets.len());
    nets.iter()
        .map(Slot::of)
        .filter(|s| seen.insert(*s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_split_by_length() {
        for s in [
            "192.0.2.1/32",
            "192.0.2.0/24",
            "0.0.0.0/0",
            "2001:db8::1/128",
            "2001:db8::/32",
            "::/0",
        ] {
            let n: IpNet = s.parse().unwrap();
            assert_eq!(Slot::of(&n).net(), n);
        }
        assert!(matches!(
            Slot::of(&"192.0.2.1/32".parse().unwrap()),
            Slot::V4Host(_)
        ));
        assert!(matches!(
            Slot::of(&"192.0.2.0/31".parse().unwrap()),
            Slot::V4Net(31, _)
        ));
        assert!(matches!(
            Slot::of(&"2001:db8::/127".parse().unwrap()),
            Slot::V6Net(127, _)
        ));
    }

    #[test]
    fn dedup_keeps_first_occurrence_order() {
        let nets: Vec<IpNet> = ["192.0.2.1/32", "2001:db8::/32", "192.0.2.1/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(dedup(&nets).len(), 2);
    }
}
