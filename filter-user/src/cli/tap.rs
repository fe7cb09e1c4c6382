//! The ad-hoc tap `capture` and `trace` share: one user at a time (a lock file in the
//! runtime directory), turned off again however the command ends short of SIGKILL.

use std::{
    fs::{File, OpenOptions},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use filter_common::{Reason, sample::TAP_ADHOC};
use floodgate::sampler::{Captured, Reader, SamplerMaps, TapSettings, cpus};
use ipnet::IpNet;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::session::Session;

/// A `--reason` value: a verdict reason's key as `stats` shows it.
pub fn parse_reason(s: &str) -> Result<Reason, String> {
    Reason::ALL.iter().copied().find(|r| r.key() == s).ok_or_else(|| {
        let keys: Vec<&str> = Reason::ALL.iter().map(|r| r.key()).collect();
        format!("unknown reason {s:?}; one of: {}", keys.join(", "))
    })
}

pub struct AdhocTap {
    pub iface: String,
    maps: SamplerMaps,
    reader: Reader,
    stop: Arc<AtomicBool>,
    _lock: File,
}

impl AdhocTap {
    /// Takes the tap of `iface` (refused while another capture or trace holds it) and
    /// turns it on with `settings`, tracing `traced` if any.
    pub fn start(iface: Option<&str>, settings: &TapSettings, traced: &[IpNet]) -> anyhow::Result<Self> {
        let mut s = Session::read(iface)?;
        let iface = s.pins.iface.clone();
        let lock = lock(&iface)?;
        let mut maps = s.sampler()?;
        let reader = s.reader(TAP_ADHOC)?;
        maps.set_traced(traced).with_context(|| format!("setting the traced sources on {iface}"))?;
        maps.set(TAP_ADHOC, &settings.config(cpus()))
            .with_context(|| format!("turning the sampler on on {iface}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register(sig, stop.clone()).context("catching SIGINT and SIGTERM")?;
        }
        let mut tap = AdhocTap { iface, maps, reader, stop, _lock: lock };
        // Whatever an earlier user left in the ring is not this capture's.
        tap.reader.drain(&mut Vec::new());
        Ok(tap)
    }

    /// Calls `each` with the samples as they come, until it returns false, `deadline`
    /// passes or a signal stops it.
    pub fn run(
        &mut self,
        deadline: Option<Instant>,
        mut each: impl FnMut(&Captured) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let mut batch = Vec::new();
        loop {
            if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(());
            }
            self.reader.wait(left.unwrap_or(Duration::MAX).min(Duration::from_millis(200)))?;
            batch.clear();
            self.reader.drain(&mut batch);
            for c in &batch {
                if !each(c)? {
                    return Ok(());
                }
            }
        }
    }

    /// Samples the cap or a full ring left out so far.
    pub fn missed(&self) -> (u64, u64) {
        self.maps.counters(TAP_ADHOC).map_or((0, 0), |c| (c.capped, c.lost))
    }
}

impl Drop for AdhocTap {
    fn drop(&mut self) {
        let off = self.maps.off(TAP_ADHOC).and_then(|()| self.maps.clear_traced());
        if let Err(e) = off {
            eprintln!("warning: turning the sampler off on {} failed: {e}", self.iface);
        }
    }
}

/// The lock that keeps two users off one interface's ad-hoc tap (its ring has one
/// reader position: two readers would split the samples between them).
fn lock(iface: &str) -> anyhow::Result<File> {
    let dir = super::service::runtime_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{iface}.tap.lock"));
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("another `floodgate capture` or `floodgate trace` is running on {iface}; one at a time")
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}
