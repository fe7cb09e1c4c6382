//! Typed handles on the XDP program's maps, opened either from a freshly loaded
//! object (attach, tests) or from the pins of an attached interface (every other
//! command, from a separate process).

use std::path::Path;

use crate::{
    compiled::CompiledMaps,
    pins::{self, IfacePins},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key},
};
use filter_common::{
    Counter, EntryKey, ListKind, ListValue, META_VERSION, Meta, NetV4, NetV6,
    limit::{Ban, LimitConfig, SourceKey, SourceState},
    map_names,
    rules::{PolicyConfig, RuleInfo},
    synproxy::SynProxyConfig,
};
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

/// The tries of one list (its compiled IPv4 part is in [`FilterMaps::compiled`]).
pub struct ListMaps {
    pub v4_net: LpmTrie<MapData, NetV4, ListValue>,
    pub v6_net: LpmTrie<MapData, NetV6, ListValue>,
}

/// Expiry times of list entries added with a TTL, by entry. An LPM trie used for
/// exact keys only: unlike a hash map it costs memory per stored entry, not per
/// entry of capacity.
pub struct ExpiryIndex(pub LpmTrie<MapData, EntryKey, u64>);

/// Every key of the expiry index has its full length.
const EXPIRY_BITS: u32 = (size_of::<EntryKey>() * 8) as u32;

impl ExpiryIndex {
    pub fn get(&self, k: &EntryKey, flags: u64) -> Result<u64, MapError> {
        self.0.get(&Key::new(EXPIRY_BITS, *k), flags)
    }

    pub fn insert(&mut self, k: &EntryKey, v: &u64, flags: u64) -> Result<(), MapError> {
        self.0.insert(&Key::new(EXPIRY_BITS, *k), v, flags)
    }

    pub fn remove(&mut self, k: &EntryKey) -> Result<(), MapError> {
        self.0.remove(&Key::new(EXPIRY_BITS, *k))
    }

    pub fn keys(&self) -> impl Iterator<Item = Result<EntryKey, MapError>> + '_ {
        self.0.keys().map(|k| k.map(|k| k.data()))
    }

    pub fn iter(&self) -> impl Iterator<Item = Result<(EntryKey, u64), MapError>> + '_ {
        self.0.iter().map(|r| r.map(|(k, v)| (k.data(), v)))
    }
}

pub struct FilterMaps {
    pub counters: PerCpuArray<MapData, Counter>,
    pub active: Array<MapData, u32>,
    pub meta: Array<MapData, Meta>,
    pub block: ListMaps,
    pub allow: ListMaps,
    /// Both lists' compiled IPv4 arrays, mapped into this process.
    pub compiled: CompiledMaps,
    pub expiry: ExpiryIndex,
    pub limits: Array<MapData, LimitConfig>,
    /// FG_RATE is an LRU hash; aya opens it as a HashMap (same syscalls).
    pub rate: HashMap<MapData, SourceKey, SourceState>,
    pub heavy: HashMap<MapData, SourceKey, SourceState>,
    pub bans: HashMap<MapData, SourceKey, Ban>,
    pub global: Array<MapData, u64>,
    pub events: PerCpuArray<MapData, u64>,
    pub port_rules: Array<MapData, u32>,
    pub proto_rules: Array<MapData, u32>,
    pub rules: Array<MapData, RuleInfo>,
    pub rule_counters: PerCpuArray<MapData, Counter>,
    pub policy: Array<MapData, PolicyConfig>,
    pub served: Array<MapData, u64>,
    pub synproxy: Array<MapData, SynProxyConfig>,
    pub syn_ports: Array<MapData, u64>,
}

impl FilterMaps {
    /// Takes the maps out of a loaded object (they can be pinned afterwards).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, OpenError> {
        Self::open(|name| ebpf.take_map(name).ok_or(OpenError::Missing(name)))
    }

    /// Opens the maps pinned in `dir` (one file per map, named as in the object).
    pub fn from_pins(dir: &Path) -> Result<Self, OpenError> {
        Self::open(|name| {
            let path = dir.join(name);
            MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .map_err(|source| OpenError::Pin { path: path.display().to_string(), source })
        })
    }

    /// Opens an attached filter's maps, refusing (with the way out) pins that another
    /// version of floodgate made: its metadata version and size first, then every map's
    /// type and sizes.
    pub fn open_pins(pins: &IfacePins) -> Result<Self, OpenError> {
        check_layout(pins)?;
        Self::from_pins(&pins.dir).map_err(|e| incompatible(pins, crate::loader::error_chain(&e)))
    }

    fn open(mut get: impl FnMut(&'static str) -> Result<Map, OpenError>) -> Result<Self, OpenError> {
        use map_names::*;
        fn typed<T: TryFrom<Map, Error = MapError>>(name: &'static str, map: Map) -> Result<T, OpenError> {
            T::try_from(map).map_err(|source| OpenError::Type { name, source })
        }
        let mut list = |n4, n6| -> Result<ListMaps, OpenError> {
            Ok(ListMaps { v4_net: typed(n4, get(n4)?)?, v6_net: typed(n6, get(n6)?)? })
        };
        let block = list(BLOCK_V4_NET, BLOCK_V6_NET)?;
        let allow = list(ALLOW_V4_NET, ALLOW_V6_NET)?;
        let compiled = CompiledMaps::new(get(V4_DIR)?, get(V4_RANGES)?, get(V4_SHORT)?)
            .map_err(|(name, source)| OpenError::Type { name, source })?;
        Ok(Self {
            counters: typed(COUNTERS, get(COUNTERS)?)?,
            active: typed(ACTIVE, get(ACTIVE)?)?,
            meta: typed(META, get(META)?)?,
            block,
            allow,
            compiled,
            expiry: ExpiryIndex(typed(EXPIRY, get(EXPIRY)?)?),
            limits: typed(LIMITS, get(LIMITS)?)?,
            rate: typed(RATE, get(RATE)?)?,
            heavy: typed(HEAVY, get(HEAVY)?)?,
            bans: typed(BANS, get(BANS)?)?,
            global: typed(GLOBAL, get(GLOBAL)?)?,
            events: typed(EVENTS, get(EVENTS)?)?,
            port_rules: typed(PORT_RULES, get(PORT_RULES)?)?,
            proto_rules: typed(PROTO_RULES, get(PROTO_RULES)?)?,
            rules: typed(RULES, get(RULES)?)?,
            rule_counters: typed(RULE_COUNTERS, get(RULE_COUNTERS)?)?,
            policy: typed(POLICY, get(POLICY)?)?,
            served: typed(SERVED, get(SERVED)?)?,
            synproxy: typed(SYNPROXY, get(SYNPROXY)?)?,
            syn_ports: typed(SYN_PORTS, get(SYN_PORTS)?)?,
        })
    }

    pub fn list(&self, kind: ListKind) -> &ListMaps {
        match kind {
            ListKind::Block => &self.block,
            ListKind::Allow => &self.allow,
        }
    }

    pub fn list_mut(&mut self, kind: ListKind) -> &mut ListMaps {
        match kind {
            ListKind::Block => &mut self.block,
            ListKind::Allow => &mut self.allow,
        }
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
