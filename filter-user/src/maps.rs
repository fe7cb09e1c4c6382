//! Where the XDP program's maps come from, and the small core group every command
//! shares: the bookkeeping map ([`Meta`]).
//!
//! The maps are grouped by feature, each group owned by the module that alone reads
//! and writes it: [`crate::store::ListMaps`] (the lists), [`crate::limits::LimiterMaps`]
//! (the limiter), [`crate::rules::RuleMaps`] and [`crate::policy::PolicyMaps`] (rules,
//! served ports), [`crate::synproxy::SynProxyMaps`] (SYN cookies) and
//! [`crate::stats::Counters`] (verdict counters). A command opens the groups it uses
//! from a [`MapSource`]: a freshly loaded object (attach, tests) or the pins of an
//! attached interface ([`Pinned`], every other command, from a separate process).
//!
//! `FG_ACTIVE` is an array of independent words, one per feature (the lists'
//! generations, the limiter's and the policy's slots): each group opens its own handle
//! and touches only its own words.

use std::{os::fd::AsFd as _, path::Path};

use crate::pins::{self, IfacePins};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, MapError},
};
use filter_common::{META_VERSION, Meta, map_names};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OpenError {
    #[error("map {0} is missing from the XDP object")]
    Missing(&'static str),
    #[error("opening pinned map {path}")]
    Pin {
        path: String,
        #[source]
        source: MapError,
    },
    #[error(
        "the pins of {iface} in {dir} were made by another floodgate version ({what}): \
         run `floodgate detach -i {iface}`, then `floodgate attach -i {iface}`"
    )]
    Incompatible { iface: String, dir: String, what: String },
    #[error("map {name} has an unexpected type or layout")]
    Type {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// Hands out the maps of one filter by name (as in [`map_names`]).
pub trait MapSource {
    /// A handle on the map `name`. Asking twice gives two handles on the same map.
    fn map(&mut self, name: &'static str) -> Result<Map, OpenError>;

    /// What a map of this source that is not as this floodgate made it means (for
    /// pins: another version made them, with the way out).
    fn refuse(&self, e: OpenError) -> OpenError {
        e
    }

    /// The map `name` as the typed handle `T`.
    fn typed<T: TryFrom<Map, Error = MapError>>(&mut self, name: &'static str) -> Result<T, OpenError>
    where
        Self: Sized,
    {
        T::try_from(self.map(name)?).map_err(|source| self.refuse(OpenError::Type { name, source }))
    }
}

/// A loaded object keeps its maps (so it can still pin them); each request gets its
/// own file descriptor on the map.
impl MapSource for Ebpf {
    fn map(&mut self, name: &'static str) -> Result<Map, OpenError> {
        let map = Ebpf::map(self, name).ok_or(OpenError::Missing(name))?;
        let fd = data(map)
            .ok_or(OpenError::Type { name, source: MapError::InvalidName { name: name.into() } })?
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| OpenError::Type { name, source: MapError::IoError(e) })?;
        MapData::from_fd(fd).and_then(Map::from_map_data).map_err(|source| OpenError::Type { name, source })
    }
}

/// The kernel map behind `map`, for the kinds of map floodgate uses.
fn data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(m)
        | Map::PerCpuArray(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuHashMap(m)
        | Map::LpmTrie(m)
        | Map::ProgramArray(m)
        | Map::RingBuf(m) => Some(m),
        _ => None,
    }
}

/// The maps pinned in a directory (one file per map, named as in the object), opened
/// without any check: for tests and for a caller that has just pinned them.
pub struct PinDir<'a>(pub &'a Path);

impl MapSource for PinDir<'_> {
    fn map(&mut self, name: &'static str) -> Result<Map, OpenError> {
        let path = self.0.join(name);
        MapData::from_pin(&path)
            .and_then(Map::from_map_data)
            .map_err(|source| OpenError::Pin { path: path.display().to_string(), source })
    }
}

/// An attached filter's pins, checked to be this floodgate's layout: every map a
/// command opens from here is refused (with the way out) when another version of
/// floodgate made it.
pub struct Pinned {
    pins: IfacePins,
}

impl Pinned {
    /// Checks the metadata's version and size first: a command that reads or writes
    /// maps never starts on another version's pins.
    pub fn open(pins: &IfacePins) -> Result<Self, OpenError> {
        check_layout(pins)?;
        Ok(Pinned { pins: pins.clone() })
    }
}

/// Each map's type and sizes are checked as it opens.
impl MapSource for Pinned {
    fn map(&mut self, name: &'static str) -> Result<Map, OpenError> {
        PinDir(&self.pins.dir).map(name).map_err(|e| self.refuse(e))
    }

    fn refuse(&self, e: OpenError) -> OpenError {
        incompatible(&self.pins, crate::loader::error_chain(&e))
    }
}

fn incompatible(pins: &IfacePins, what: String) -> OpenError {
    OpenError::Incompatible { iface: pins.iface.clone(), dir: pins.dir.display().to_string(), what }
}

/// Checks the pinned metadata's size and version against this floodgate's, without
/// assuming either (an older floodgate may have pinned a different `Meta`).
pub fn check_layout(pins: &IfacePins) -> Result<(), OpenError> {
    let path = pins.map(map_names::META);
    let v = pins::pinned_array_value(&path)
        .map_err(|e| incompatible(pins, format!("no readable {} map: {e}", map_names::META)))?;
    let version = v.get(..4).map(|b| u32::from_ne_bytes(b.try_into().unwrap())).unwrap_or(0);
    if version != META_VERSION {
        return Err(incompatible(
            pins,
            format!("layout version {version}, this floodgate uses {META_VERSION}"),
        ));
    }
    if v.len() != std::mem::size_of::<Meta>() {
        return Err(incompatible(
            pins,
            format!("metadata of {} bytes, this floodgate uses {}", v.len(), std::mem::size_of::<Meta>()),
        ));
    }
    Ok(())
}

#[derive(Debug, Error)]
pub enum MetaError {
    #[error(
        "the pinned maps have layout version {found}, this floodgate expects {expected}: detach and attach again"
    )]
    Version { found: u32, expected: u32 },
    #[error("reading or writing floodgate's bookkeeping map")]
    Map(#[source] MapError),
}

/// The core group: the filter's bookkeeping ([`Meta`]: how and where it was attached,
/// the lists' capacity and counts). Attach writes it whole; the lists keep their
/// counts in it through [`crate::store::ListMaps`]; the rest only read it.
pub struct Core {
    /// The raw map (tests inspect and damage it).
    pub meta: Array<MapData, Meta>,
}

impl Core {
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        Ok(Core { meta: src.typed(map_names::META)? })
    }

    /// The bookkeeping as stored (counts unverified: see
    /// [`crate::store::ListMaps::read_meta`]), refused when another version wrote it.
    pub fn read(&self) -> Result<Meta, MetaError> {
        let meta = self.meta.get(&0, 0).map_err(MetaError::Map)?;
        if meta.version != META_VERSION {
            return Err(MetaError::Version { found: meta.version, expected: META_VERSION });
        }
        Ok(meta)
    }

    pub fn write(&mut self, meta: &Meta) -> Result<(), MetaError> {
        self.meta.set(0, meta, 0).map_err(MetaError::Map)
    }
}

/// Every group at once, for tests and the bench, which drive all features of one
/// loaded object. Commands open only the groups they use.
pub struct FilterMaps {
    pub core: Core,
    pub lists: crate::store::ListMaps,
    pub limiter: crate::limits::LimiterMaps,
    pub rules: crate::rules::RuleMaps,
    pub policy: crate::policy::PolicyMaps,
    pub synproxy: crate::synproxy::SynProxyMaps,
    pub counters: crate::stats::Counters,
    pub watch: crate::watch::WatchMaps,
}

impl FilterMaps {
    pub fn open(src: &mut impl MapSource) -> Result<Self, OpenError> {
        Ok(FilterMaps {
            core: Core::open(src)?,
            lists: crate::store::ListMaps::open(src)?,
            limiter: crate::limits::LimiterMaps::open(src)?,
            rules: crate::rules::RuleMaps::open(src)?,
            policy: crate::policy::PolicyMaps::open(src)?,
            synproxy: crate::synproxy::SynProxyMaps::open(src)?,
            counters: crate::stats::Counters::open(src)?,
            watch: crate::watch::WatchMaps::open(src)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the loader opens and sizes (`map_names::ALL`) against the maps the
    /// built object defines, both ways: a map renamed on one side only fails here,
    /// without root or a kernel.
    #[test]
    fn the_loader_knows_every_map_of_the_object_and_no_other() {
        let obj = aya_obj::Object::parse(crate::object::bytes()).expect("the XDP object parses");
        // Not ours: the compiler's maps ('.rodata', '.bss', ...), private to each load.
        // Everything else is floodgate's: the bench's helpers live in an object of
        // their own (bench-ebpf), so attach pins nothing of theirs.
        let mut in_object: Vec<&str> =
            obj.maps.keys().map(String::as_str).filter(|n| !n.starts_with('.')).collect();
        in_object.sort_unstable();
        let mut known = map_names::ALL.to_vec();
        known.sort_unstable();
        let missing: Vec<_> = known.iter().filter(|n| !in_object.contains(n)).collect();
        let unknown: Vec<_> = in_object.iter().filter(|n| !known.contains(n)).collect();
        assert!(missing.is_empty(), "named in map_names::ALL but not in the object: {missing:?}");
        assert!(unknown.is_empty(), "in the object but not in map_names::ALL: {unknown:?}");
        assert_eq!(in_object.len(), known.len(), "a name is listed twice in map_names::ALL");
        // And the programs are the entry and its tail calls, nothing else.
        let mut programs: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        programs.sort_unstable();
        let mut expected = vec![filter_common::PROGRAM_NAME];
        expected.extend(filter_common::TAIL_PROGRAMS);
        expected.sort_unstable();
        assert_eq!(programs, expected, "programs of floodgate's object");
    }
}
