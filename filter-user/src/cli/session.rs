//! Opening an attached interface's maps for a command: only the groups it uses.

use anyhow::Context as _;
use floodgate::{
    limits::LimiterMaps,
    maps::{Core, Pinned},
    pins::{self, IfacePins, Lock},
    policy::PolicyMaps,
    rules::RuleMaps,
    stats::Counters,
    store::ListMaps,
    synproxy::SynProxyMaps,
};

/// An interface's pins, checked to be this floodgate's layout: the filter of the
/// interface named, in this network namespace. Each command then opens the groups of
/// maps it uses.
pub struct Session {
    pub pins: IfacePins,
    src: Pinned,
    lock: Option<Lock>,
}

impl Session {
    /// For commands that change the maps: waits (a bounded time) for the interface
    /// lock and holds it until dropped. A group whose entries expire (lists, bans)
    /// removes the expired ones when it opens, so expiry needs no long-running
    /// process: any writer of that group cleans up.
    pub fn locked(iface: Option<&str>) -> anyhow::Result<Self> {
        Self::locked_within(iface, pins::LOCK_WAIT)
    }

    /// As [`Session::locked`], waiting at most `wait` for the lock.
    pub fn locked_within(iface: Option<&str>, wait: std::time::Duration) -> anyhow::Result<Self> {
        let pins = pins::resolve(iface)?;
        let lock = pins.lock_within(wait)?;
        let src = Pinned::open(&pins)?;
        Ok(Session { pins, src, lock: Some(lock) })
    }

    /// For commands that only read (`stats`, `list`, `top`, `show`): never takes the
    /// lock and never writes, so a stopped or slow writer cannot freeze them. Expired
    /// entries the data path already ignores are left for writers and `run` to sweep.
    pub fn read(iface: Option<&str>) -> anyhow::Result<Self> {
        let pins = pins::resolve(iface)?;
        let src = Pinned::open(&pins)?;
        Ok(Session { pins, src, lock: None })
    }

    pub fn lists(&mut self) -> anyhow::Result<ListMaps> {
        let mut lists = ListMaps::open(&mut self.src)?;
        if self.lock.is_some() {
            lists.sweep().with_context(|| format!("removing expired entries on {}", self.pins.iface))?;
        }
        Ok(lists)
    }

    pub fn limiter(&mut self) -> anyhow::Result<LimiterMaps> {
        let mut limiter = LimiterMaps::open(&mut self.src)?;
        if self.lock.is_some() {
            limiter.sweep();
        }
        Ok(limiter)
    }

    /// Removes expired list entries and bans (what `run` does every second).
    pub fn sweep(&mut self) -> anyhow::Result<()> {
        self.lists()?;
        self.limiter()?;
        Ok(())
    }

    pub fn core(&mut self) -> anyhow::Result<Core> {
        Ok(Core::open(&mut self.src)?)
    }

    pub fn rules(&mut self) -> anyhow::Result<RuleMaps> {
        Ok(RuleMaps::open(&mut self.src)?)
    }

    pub fn policy(&mut self) -> anyhow::Result<PolicyMaps> {
        Ok(PolicyMaps::open(&mut self.src)?)
    }

    pub fn synproxy(&mut self) -> anyhow::Result<SynProxyMaps> {
        Ok(SynProxyMaps::open(&mut self.src)?)
    }

    pub fn sampler(&mut self) -> anyhow::Result<floodgate::sampler::SamplerMaps> {
        Ok(floodgate::sampler::SamplerMaps::open(&mut self.src)?)
    }

    /// The reader of a tap's ring buffer.
    pub fn reader(&mut self, tap: u32) -> anyhow::Result<floodgate::sampler::Reader> {
        Ok(floodgate::sampler::Reader::open(&mut self.src, tap)?)
    }

    pub fn watchlist(&mut self) -> anyhow::Result<floodgate::watch::WatchMaps> {
        Ok(floodgate::watch::WatchMaps::open(&mut self.src)?)
    }

    pub fn counters(&mut self) -> anyhow::Result<Counters> {
        Ok(Counters::open(&mut self.src)?)
    }
}
