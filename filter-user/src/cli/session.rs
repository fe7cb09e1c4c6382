//! Opening an attached interface's maps for a command.

use anyhow::Context as _;
use floodgate::{
    maps::FilterMaps,
    pins::{self, IfacePins, Lock},
};

/// An interface's maps, opened from its pins, with expired entries swept first (so
/// expiry needs no long-running process: any command cleans up).
pub struct Session {
    pub pins: IfacePins,
    pub maps: FilterMaps,
    _lock: Option<Lock>,
}

impl Session {
    fn open(iface: Option<&str>, hold: bool) -> anyhow::Result<Self> {
        let pins = pins::resolve(iface)?;
        let lock = pins.lock()?;
        let mut maps = FilterMaps::from_pins(&pins.dir)
            .with_context(|| format!("opening the maps of {} (detach and attach again?)", pins.iface))?;
        maps.sweep().with_context(|| format!("removing expired entries on {}", pins.iface))?;
        Ok(Session { pins, maps, _lock: hold.then_some(lock) })
    }

    /// For commands that change the maps: holds the interface lock until dropped.
    pub fn locked(iface: Option<&str>) -> anyhow::Result<Self> {
        Self::open(iface, true)
    }

    /// For commands that only read (and may run long, like `--watch`): the lock is
    /// held only while sweeping.
    pub fn read(iface: Option<&str>) -> anyhow::Result<Self> {
        Self::open(iface, false)
    }
}
