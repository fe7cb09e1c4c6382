//! Prometheus metrics of the service: what the filters' maps hold, read at every
//! scrape (no mirrored state, no lock, no write: see [`read`]), and what the service
//! itself reports (config reloads, URL list sources), served over HTTP ([`serve`]).
//!
//! The lead's side: build an [`Exporter`] from the interfaces ([`Target`]) and a shared
//! [`ServiceState`], keep the state up to date ([`ServiceState::record_reload`],
//! [`ServiceState::set_sources`]), and run [`serve`] on a listener bound to
//! `metrics.listen` (default [`DEFAULT_LISTEN`]).

pub mod encode;
pub mod read;
mod server;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

pub use encode::{ALL, Snapshot};
pub use read::{InterfaceSample, ReadError, read_interface};
pub use server::{CONTENT_TYPE, serve};

use crate::pins::{IfacePins, NetnsId};

/// The endpoint's port: in the exporters' range of Prometheus' port list. Loopback only
/// by default: the metrics name the interfaces and the lists' sizes.
pub const DEFAULT_PORT: u16 = 9669;
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);

/// One filtered interface: its name (the `interface` label) and its pins.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub pins: IfacePins,
}

impl Target {
    /// The interface `name` of the calling thread's network namespace.
    pub fn new(name: &str) -> Result<Self, crate::pins::PinsError> {
        Ok(Target { name: name.to_string(), pins: IfacePins::new(name)? })
    }
}

/// A URL list source as the service reports it (filled from the URL sources' own
/// status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceMetrics {
    /// The URL (the `source` label).
    pub source: String,
    /// `blocklist` or `allowlist`.
    pub list: String,
    pub interface: String,
    /// Whether the last fetch succeeded (a 304 counts as success).
    pub ok: bool,
    /// When the last good copy was fetched (Unix seconds); None: never.
    pub last_success_unix: Option<u64>,
    /// Entries of the last good copy (the one in force).
    pub entries: u64,
    /// A fetched copy that shrank beyond `max_shrink` waits for `reload --accept-shrink`.
    pub pending: bool,
    /// Failed fetches since the service started.
    pub failures: u64,
}

/// What the service reports beside the maps, as of one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSample {
    /// Whether the last load or reload applied; None before the first.
    pub last_reload_ok: Option<bool>,
    /// Unix time of the last load or reload that applied.
    pub last_success_unix: Option<f64>,
    /// Loads and reloads: `[applied, refused or failed]`.
    pub reloads: [u64; 2],
    pub sources: Vec<SourceMetrics>,
    /// The CrowdSec bouncer's state (with `[crowdsec]`).
    pub crowdsec: Option<crate::crowdsec::status::Status>,
}

/// Reads the URL sources' status at a scrape (the sources keep their own).
pub type SourceReader = Arc<dyn Fn() -> Vec<SourceMetrics> + Send + Sync>;

/// The service's own state for the metrics, shared with the tasks that change it.
/// Scrapes only copy it.
#[derive(Default)]
pub struct ServiceState {
    inner: Mutex<ServiceSample>,
    /// When set, the sources are read through it at each scrape instead of kept here.
    reader: Mutex<Option<SourceReader>>,
    crowdsec: Mutex<Option<Arc<Mutex<crate::crowdsec::status::Status>>>>,
}

impl std::fmt::Debug for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceState").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl ServiceState {
    fn lock(&self) -> std::sync::MutexGuard<'_, ServiceSample> {
        // A panic elsewhere while holding it leaves plain data: still worth showing.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a load or reload of the config file (the first load at start counts).
    pub fn record_reload(&self, ok: bool, at: SystemTime) {
        let mut s = self.lock();
        s.last_reload_ok = Some(ok);
        s.reloads[usize::from(!ok)] += 1;
        if ok {
            s.last_success_unix = Some(at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
        }
    }

    /// Replaces every URL source's status (sources a reload removed disappear).
    pub fn set_sources(&self, sources: Vec<SourceMetrics>) {
        self.lock().sources = sources;
    }

    /// Updates one source's status (found by interface, list and URL), or adds it.
    pub fn update_source(&self, source: SourceMetrics) {
        let mut s = self.lock();
        let same = |o: &SourceMetrics| {
            o.interface == source.interface && o.list == source.list && o.source == source.source
        };
        match s.sources.iter_mut().find(|o| same(o)) {
            Some(o) => *o = source,
            None => s.sources.push(source),
        }
    }

    /// Reads the sources through `reader` at each scrape from now on.
    pub fn set_source_reader(&self, reader: SourceReader) {
        *self.reader.lock().unwrap_or_else(PoisonError::into_inner) = Some(reader);
    }

    /// The CrowdSec bouncer's state, read at each scrape (None: no bouncer).
    pub fn set_crowdsec(&self, status: Option<Arc<Mutex<crate::crowdsec::status::Status>>>) {
        *self.crowdsec.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }

    pub fn sample(&self) -> ServiceSample {
        let reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut sample = self.lock().clone();
        if let Some(read) = reader {
            sample.sources = read();
        }
        if let Some(cs) = &*self.crowdsec.lock().unwrap_or_else(PoisonError::into_inner) {
            sample.crowdsec = Some(cs.lock().unwrap_or_else(PoisonError::into_inner).clone());
        }
        sample
    }
}

/// Reads the filters and the service's state at each scrape.
#[derive(Debug)]
pub struct Exporter {
    targets: RwLock<Vec<Target>>,
    state: Arc<ServiceState>,
    /// The last read error per interface, so that a filter that stays unreadable is
    /// logged once, not at every scrape.
    errors: Mutex<HashMap<String, String>>,
}

impl Exporter {
    pub fn new(targets: Vec<Target>, state: Arc<ServiceState>) -> Self {
        Exporter { targets: RwLock::new(targets), state, errors: Mutex::default() }
    }

    /// The interfaces to report from the next scrape on (after a reload).
    pub fn set_targets(&self, targets: Vec<Target>) {
        *self.targets.write().unwrap_or_else(PoisonError::into_inner) = targets;
    }

    pub fn state(&self) -> &Arc<ServiceState> {
        &self.state
    }

    /// Reads every filter's maps and the service's state now.
    pub fn snapshot(&self) -> Snapshot {
        let targets = self.targets.read().unwrap_or_else(PoisonError::into_inner).clone();
        let start = Instant::now();
        let mut interfaces: Vec<(String, Result<InterfaceSample, String>)> = targets
            .iter()
            .map(|t| {
                let r = read_interface(&t.pins).map(|s| InterfaceSample { interface: t.name.clone(), ..s });
                (t.name.clone(), r.map_err(|e| crate::loader::error_chain(&e)))
            })
            .collect();
        self.syncookie_acks(&targets, &mut interfaces);
        let read_seconds = start.elapsed().as_secs_f64();
        self.log_errors(&interfaces);
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            interfaces,
            service: self.state.sample(),
            read_seconds,
        }
    }

    /// The SYNPROXY rules' counters, from one `nft list` for every interface with SYN
    /// cookies on, when its filter is in this thread's network namespace (netfilter
    /// state is per namespace).
    fn syncookie_acks(
        &self,
        targets: &[Target],
        interfaces: &mut [(String, Result<InterfaceSample, String>)],
    ) {
        let here = NetnsId::current().ok();
        let wanted = |t: &Target, r: &Result<InterfaceSample, String>| {
            t.pins.netns.is_some() && t.pins.netns == here && r.as_ref().is_ok_and(|s| s.syncookies_enabled)
        };
        if !targets.iter().zip(interfaces.iter()).any(|(t, (_, r))| wanted(t, r)) {
            return;
        }
        let Ok(table) = crate::synproxy::table_state() else { return };
        for (t, (_, r)) in targets.iter().zip(interfaces.iter_mut()) {
            if !wanted(t, r) {
                continue;
            }
            if let Ok(s) = r {
                let chain = crate::synproxy::chain_name(s.ifindex);
                s.syncookie_acks =
                    table.chains.iter().find(|(c, _)| *c == chain).map(|(_, n)| n.map_or(0, |(p, _)| p));
            }
        }
    }

    fn log_errors(&self, interfaces: &[(String, Result<InterfaceSample, String>)]) {
        let mut last = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, r) in interfaces {
            match r {
                Err(e) if last.get(name) != Some(e) => {
                    tracing::warn!(interface = %name, error = %e, "metrics: cannot read the filter's maps");
                    last.insert(name.clone(), e.clone());
                }
                Ok(_) if last.remove(name).is_some() => {
                    tracing::info!(interface = %name, "metrics: the filter's maps are readable again");
                }
                _ => {}
            }
        }
    }
}

/// One scrape's text (Prometheus' classic text format, [`CONTENT_TYPE`]).
pub fn render(exporter: &Exporter) -> String {
    encode::encode(exporter.snapshot())
}

#[cfg(test)]
mod tests;
