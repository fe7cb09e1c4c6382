//! Opening an attached interface's maps for a command.

use anyhow::Context as _;
use floodgate::{
    maps::FilterMaps,
    pins::{self, IfacePins, Lock},
};

/// An interface's maps, opened from its pins: the filter of the interface named, in
/// this network namespace, made by this version of floodgate.
pub struct Session {
    pub pins: IfacePins,
    pub maps: FilterMaps,
    _lock: Option<Lock>,
}

impl Session {
    /// For commands that change the maps: waits (a bounded time) for the interface
    /// lock and holds it until dropped, and removes expired entries first (so expiry
    /// needs no long-running process: any writer cleans up).
    pub fn locked(iface: Option<&str>) -> anyhow::Result<Self> {
        Self::locked_within(iface, pins::LOCK_WAIT)
    }

    /// As [`Session::locked`], waiting at most `wait` for the lock.
    pub fn locked_within(iface: Option<&str>, wait: std::time::Duration) -> anyhow::Result<Self> {
        let pins = pins::resolve(iface)?;
        let lock = pins.lock_within(wait)?;
        let mut maps = FilterMaps::open_pins(&pins)?;
        maps.sweep().with_context(|| format!("removing expired entries on {}", pins.iface))?;
        Ok(Session { pins, maps, _lock: Some(lock) })
    }

    /// For commands that only read (`stats`, `list`, `top`, `show`): never takes the
    /// lock and never writes, so a stopped or slow writer cannot freeze them. Expired
    /// entries the data path already ignores are left for writers and `run` to sweep.
    pub fn read(iface: Option<&str>) -> anyhow::Result<Self> {
        let pins = pins::resolve(iface)?;
        let maps = FilterMaps::open_pins(&pins)?;
        Ok(Session { pins, maps, _lock: None })
    }
}
