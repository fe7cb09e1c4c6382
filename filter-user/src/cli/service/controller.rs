//! The controller: brings each interface of the config up (attach, or take over a
//! pinned filter), applies reloads, sweeps, and stops. Runs on one thread; every
//! change to the maps goes through it.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use aya::Ebpf;
use filter_common::{
    ListKind,
    limit::{Ban, SourceKey},
};
use floodgate::{
    bpflog::{self, Forwarder},
    config::{BpfLogLevel, Config, Incidents, Interface, ListName},
    incident::{
        record::Action,
        store::{Limits, Store},
    },
    loader::{self, Capacity, Mode},
    maps::{Core, Pinned},
    metrics::{Exporter, Target},
    pins::{self, IfacePins, Purpose},
    reconcile::{self, Desired, Owned},
    store::{ListMaps, monotonic_ns},
    takeover::{self, Outcome, TakeoverError},
};
use ipnet::IpNet;

use tokio::{runtime::Handle, sync::mpsc};

use super::{
    super::run::Args,
    super::session::Session,
    Msg,
    control::Reply,
    crowdsec::Bouncer,
    incidents::{ActionReport, Watcher},
    urls::{Key, Urls},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One interface the service keeps.
struct Filter {
    pins: IfacePins,
    /// The config applied last (None: `run -i`, no config).
    applied: Option<Interface>,
    owned: Owned,
    /// Forwards the running program's log records (when its log is on).
    log_task: Option<tokio::task::JoinHandle<()>>,
    /// The auto-bans seen at the last sweep (None before the first), to log each
    /// one's start and end.
    bans: Option<HashMap<SourceKey, Ban>>,
    /// The config as loaded, before any escalation (None: `run -i`).
    base: Option<Interface>,
    /// An incident's escalations are in force over `base`.
    escalated: bool,
    /// Packets of each over-limit source at the last sweep (with the CrowdSec
    /// reporter: its alerts carry the rate a source was banned at).
    heavy_seen: Option<(u64, HashMap<SourceKey, u64>)>,
    /// Detects incidents (with `[incidents]`). Declared last: dropped after the rest.
    watcher: Option<Watcher>,
}

impl Filter {
    fn new(
        pins: IfacePins,
        applied: Option<Interface>,
        owned: Owned,
        log_task: Option<tokio::task::JoinHandle<()>>,
    ) -> Self {
        let base = applied.clone();
        Filter {
            pins,
            applied,
            owned,
            log_task,
            bans: None,
            base,
            escalated: false,
            heavy_seen: None,
            watcher: None,
        }
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        // A filter replaced (takeover, new program) or given up: its program's
        // records are no longer this one's to read.
        if let Some(t) = &self.log_task {
            t.abort();
        }
    }
}

pub struct Controller {
    config_path: Option<PathBuf>,
    /// The process settings read at start (metrics listener, log format, state
    /// directory): a reload that changes them says they take a restart.
    started_with: Option<floodgate::config::Service>,
    /// URL list sources (with a config).
    urls: Option<Urls>,
    runtime: PathBuf,
    filters: BTreeMap<String, Filter>,
    detach_on_exit: bool,
    /// Per interface failing to sweep: when its failure was last logged.
    sweep_failing: HashMap<String, Instant>,
    /// What the metrics endpoint reads: told of every filter and reload.
    metrics: Arc<Exporter>,
    rt: Handle,
    /// `--bpf-log`, which overrides the config's `log.bpf`.
    bpf_log_arg: Option<Option<BpfLogLevel>>,
    /// The data path's log level programs are loaded with.
    bpf_log: Option<BpfLogLevel>,
    /// Where incidents are kept.
    incidents: Arc<Store>,
    /// `run -i`'s incident settings (from its flags).
    incidents_arg: Option<Incidents>,
    tx: mpsc::Sender<Msg>,
    /// The CrowdSec bouncer (with `[crowdsec]`).
    crowdsec: Option<Bouncer>,
}

impl Controller {
    /// Brings every interface up. Any failure stops the start (systemd then reports
    /// the service failed); filters already brought up stay in force.
    pub fn start(
        args: Args,
        config: Option<Config>,
        runtime: PathBuf,
        rt: Handle,
        tx: mpsc::Sender<Msg>,
        metrics: Arc<Exporter>,
    ) -> anyhow::Result<Self> {
        let state_dir = config.as_ref().map_or(args.state_dir.clone(), |c| c.service.state_dir.clone());
        let incidents = Arc::new(
            Store::open(&state_dir, Limits::default())
                .with_context(|| format!("opening the incident records in {}", state_dir.display()))?,
        );
        let mut ctl = Controller {
            incidents,
            incidents_arg: args.incidents()?,
            tx: tx.clone(),
            config_path: args.config.clone(),
            started_with: None,
            urls: None,
            runtime,
            filters: BTreeMap::new(),
            detach_on_exit: args.detach_on_exit,
            sweep_failing: HashMap::new(),
            metrics,
            rt: rt.clone(),
            bpf_log_arg: args.bpf_log.map(Into::into),
            bpf_log: args.bpf_log.and_then(Into::into),
            crowdsec: None,
        };
        match (config, &args.interface) {
            (Some(config), _) => {
                ctl.bpf_log = ctl.bpf_log_arg.unwrap_or(config.service.bpf_log);
                ctl.started_with = Some(config.service.clone());
                let mut urls = Urls::new(rt, &config.service.state_dir, tx)?;
                ctl.metrics.state().set_source_reader(urls.metrics_reader());
                urls.sync(&config);
                ctl.urls = Some(urls);
                for iface in &config.interfaces {
                    let want = ctl.desired(iface)?;
                    let f = ctl.bring_up(&iface.name, iface.mode, iface.capacity, Some(&want))?;
                    ctl.filters.insert(iface.name.clone(), f);
                    ctl.sync_watcher(&iface.name, iface.incidents.clone());
                }
                ctl.sync_crowdsec(config.crowdsec.as_ref())?;
            }
            (None, Some(name)) => {
                let cap = Capacity { entries: args.max_entries, sources: args.max_sources };
                let f = ctl.bring_up(name, args.mode.into(), cap, None)?;
                ctl.filters.insert(name.clone(), f);
                ctl.sync_watcher(name, ctl.incidents_arg.clone());
            }
            (None, None) => bail!("give --config FILE or -i IFACE"),
        }
        if ctl.config_path.is_some() {
            // The config's first load counts as one (floodgate_config_reloads_total).
            ctl.metrics.state().record_reload(true, SystemTime::now());
        }
        ctl.update_targets();
        Ok(ctl)
    }

    /// The metrics report every interface kept, from the next scrape on.
    fn update_targets(&self) {
        let targets = self
            .filters
            .iter()
            .map(|(name, f)| Target { name: name.clone(), pins: f.pins.clone() })
            .collect();
        self.metrics.set_targets(targets);
    }

    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.filters.keys().map(String::as_str).collect();
        format!("filtering {}", names.join(", "))
    }

    fn owned_path(&self, iface: &str) -> PathBuf {
        self.runtime.join(format!("{iface}.owned.json"))
    }

    /// Attaches `name` (filled with its config's desired state before the first
    /// packet), or takes over the filter pinned there (see `floodgate::takeover`), then
    /// applies it.
    fn bring_up(
        &self,
        name: &str,
        mode: Mode,
        cap: Capacity,
        desired: Option<&Desired<'_>>,
    ) -> anyhow::Result<Filter> {
        let pins = IfacePins::new(name)?;
        let owned_path = self.owned_path(name);
        let cfg = desired.map(|d| d.config);
        if !pins.exists() {
            let mut owned = Owned::default();
            let mut populate = |ebpf: &mut Ebpf| -> Result<(), BoxError> {
                if let Some(d) = desired {
                    owned = apply_logged(ebpf, name, d, None, &Owned::default())?;
                }
                Ok(())
            };
            let done = loader::attach_filled(name, mode, cap, self.bpf_log, &mut populate)
                .with_context(|| format!("attaching to {name}"))?;
            if let Some(why) = &done.native_error {
                tracing::warn!(interface = name, "native XDP is not available ({why}); attached in skb mode");
            }
            tracing::info!(
                interface = name,
                mode = filter_common::mode_name(done.mode),
                pins = %done.pins.dir.display(),
                "attached"
            );
            owned.save(&owned_path).with_context(|| format!("saving {}", owned_path.display()))?;
            let log_task = self.forward_log(&done.pins);
            return Ok(Filter::new(done.pins, cfg.cloned(), owned, log_task));
        }
        let pins = pins::resolve_for(Some(name), Purpose::Use)
            .with_context(|| format!("taking over the filter pinned for {name}"))?;
        let _lock = pins.lock()?;
        let owned = Owned::load(&owned_path).with_context(|| format!("reading {}", owned_path.display()))?;
        // The pinned capacity, or why the pins are not this floodgate's to read.
        let pinned_cap = Pinned::open(&pins)
            .map_err(|e| loader::error_chain(&e))
            .and_then(|mut src| {
                Core::open(&mut src)
                    .ok()
                    .and_then(|c| c.read().ok())
                    .ok_or_else(|| "unreadable metadata".into())
            })
            .map(|m| Capacity { entries: m.max_entries, sources: m.max_sources });
        let (outcome, owned) = match pinned_cap {
            Ok(have) if have == cap => match takeover::replace_program(&pins, have, self.bpf_log) {
                Err(TakeoverError::Load(e)) => {
                    let why =
                        format!("the pinned maps do not fit this floodgate: {}", loader::error_chain(&e));
                    self.rebuild(&pins, cap, why, desired, None)?
                }
                other => (other.with_context(|| format!("swapping the program of {name}"))?, owned),
            },
            Ok(have) => {
                let why = format!(
                    "capacity {} entries / {} sources -> {} / {}",
                    have.entries, have.sources, cap.entries, cap.sources
                );
                // Same layout: what operators added is readable, and carried over.
                self.rebuild(&pins, cap, why, desired, Some(&owned))?
            }
            Err(why) => self.rebuild(&pins, cap, why, desired, None)?,
        };
        let owned = match outcome {
            Outcome::Replaced { changed } => {
                tracing::info!(
                    interface = name,
                    "took over the pinned filter; program {} on the XDP link (no gap)",
                    if changed { "replaced" } else { "reloaded unchanged" }
                );
                match desired {
                    Some(d) => apply_logged(&mut Pinned::open(&pins)?, name, d, None, &owned)
                        .map_err(|e| anyhow::anyhow!(e))
                        .with_context(|| format!("applying the config to {name}"))?,
                    None => owned,
                }
            }
            Outcome::Rebuilt { why } => {
                tracing::info!(
                    interface = name,
                    "took over the pinned filter with new maps ({why}); program swapped on the XDP link (no gap); counters restart from zero"
                );
                owned
            }
        };
        owned.save(&owned_path).with_context(|| format!("saving {}", owned_path.display()))?;
        let log_task = self.forward_log(&pins);
        Ok(Filter::new(pins, cfg.cloned(), owned, log_task))
    }

    fn forward_log(&self, pins: &IfacePins) -> Option<tokio::task::JoinHandle<()>> {
        forward_log(&self.rt, self.bpf_log, pins)
    }

    /// New maps for `pins`, filled with the config (and, with `carry`, the entries the
    /// operator added, read from the old maps), then swapped in. Returns what the
    /// config owns in them.
    fn rebuild(
        &self,
        pins: &IfacePins,
        cap: Capacity,
        why: String,
        desired: Option<&Desired<'_>>,
        carry: Option<&Owned>,
    ) -> anyhow::Result<(Outcome, Owned)> {
        let carried = match carry {
            Some(owned) => Some((operator_entries(pins, owned)?, Settings::read(pins)?)),
            None => None,
        };
        let name = pins.iface.clone();
        let mut owned = Owned::default();
        let mut populate = |ebpf: &mut Ebpf| -> Result<(), BoxError> {
            // What was in force first; the config then applies over it.
            if let Some((entries, settings)) = &carried {
                settings.write(ebpf)?;
                let mut lists = ListMaps::open(ebpf)?;
                for (kind, net, ttl) in entries {
                    lists.add(*kind, &[*net], *ttl, &mut |_, _| {})?;
                }
            }
            if let Some(d) = desired {
                owned = apply_logged(ebpf, &name, d, None, &Owned::default())?;
            }
            Ok(())
        };
        let outcome = takeover::rebuild(pins, cap, self.bpf_log, why, &mut populate)?;
        Ok((outcome, owned))
    }

    pub fn reload(&mut self, accept_shrink: bool) -> Reply {
        let start = Instant::now();
        let Some(path) = self.config_path.clone() else {
            return Reply {
                ok: false,
                errors: vec!["this service runs without a config (run -i): nothing to reload".into()],
                ..Default::default()
            };
        };
        let config = match load_config(&path) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors {
                    tracing::error!("reload refused, the running state is kept: {e}");
                }
                self.metrics.state().record_reload(false, SystemTime::now());
                return Reply {
                    ok: false,
                    errors,
                    seconds: start.elapsed().as_secs_f64(),
                    ..Default::default()
                };
            }
        };
        self.bpf_log = self.bpf_log_arg.unwrap_or(config.service.bpf_log);
        if let Some(was) = &self.started_with {
            let now = &config.service;
            for (what, changed) in [
                ("metrics.listen", was.metrics_listen != now.metrics_listen),
                ("log.format", was.log_format != now.log_format),
                ("service.state_dir", was.state_dir != now.state_dir),
            ] {
                if changed {
                    tracing::warn!(
                        "{what} changed: it takes a restart of the service (`systemctl restart floodgate`)"
                    );
                }
            }
        }
        if let Some(urls) = &mut self.urls {
            urls.sync(&config);
            if accept_shrink {
                let n = urls.accept_pending();
                tracing::info!("accepted {n} list source(s) held back for shrinking");
            }
        }
        // Every interface's lists read and checked before anything changes: a missing
        // file or a list over capacity refuses the whole reload.
        let effective: Vec<Interface> = config.interfaces.iter().map(|i| self.effective(i)).collect();
        let mut wants = Vec::new();
        let mut errors = Vec::new();
        for iface in &effective {
            match self.desired(iface) {
                Ok(w) => wants.push(w),
                Err(e) => errors.push(format!("{}: {e:#}", iface.name)),
            }
        }
        if !errors.is_empty() {
            for e in &errors {
                tracing::error!("reload refused, the running state is kept: {e}");
            }
            self.metrics.state().record_reload(false, SystemTime::now());
            return Reply { ok: false, errors, seconds: start.elapsed().as_secs_f64(), ..Default::default() };
        }
        let mut reply = Reply { ok: true, ..Default::default() };
        for want in wants {
            let iface = want.config;
            match self.reload_one(want) {
                Ok(text) => reply.changes.push((iface.name.clone(), text)),
                Err(e) => {
                    let e = format!("{}: {e:#}", iface.name);
                    tracing::error!("reload: {e}");
                    reply.ok = false;
                    reply.errors.push(e);
                }
            }
        }
        for iface in &config.interfaces {
            if let Some(f) = self.filters.get_mut(&iface.name) {
                f.base = Some(iface.clone());
            }
            self.sync_watcher(&iface.name, iface.incidents.clone());
        }
        if let Err(e) = self.sync_crowdsec(config.crowdsec.as_ref()) {
            let e = format!("crowdsec: {e:#}");
            tracing::error!("reload: {e}");
            reply.ok = false;
            reply.errors.push(e);
        }
        for name in self.filters.keys() {
            if !config.interfaces.iter().any(|i| &i.name == name) {
                tracing::warn!(
                    interface = name.as_str(),
                    "no longer in the config: its filter is left as it is (`floodgate detach -i {name}` removes it)"
                );
            }
        }
        reply.seconds = start.elapsed().as_secs_f64();
        self.metrics.state().record_reload(reply.ok, SystemTime::now());
        self.update_targets();
        tracing::info!(ok = reply.ok, seconds = reply.seconds, "reload done");
        reply
    }

    fn reload_one(&mut self, want: Desired<'_>) -> anyhow::Result<String> {
        let iface = want.config;
        let name = iface.name.clone();
        let Some(f) = self.filters.get(&name) else {
            let f = self.bring_up(&name, iface.mode, iface.capacity, Some(&want))?;
            if let Some(b) = &mut self.crowdsec {
                b.reassert(&name, &f.pins, &[], true);
            }
            self.filters.insert(name, f);
            return Ok("attached".into());
        };
        if f.applied.as_ref().is_none_or(|a| a.capacity != iface.capacity) {
            let f = self.bring_up(&name, iface.mode, iface.capacity, Some(&want))?;
            if let Some(b) = &mut self.crowdsec {
                b.reassert(&name, &f.pins, &[], true);
            }
            self.filters.insert(name, f);
            return Ok("capacity changed: new maps swapped in".into());
        }
        if f.applied.as_ref().is_some_and(|a| a.mode != iface.mode) {
            tracing::warn!(
                interface = name.as_str(),
                "a new mode takes a detach and attach (`floodgate detach`, then restart the service); keeping the current one"
            );
        }
        let owned_path = self.owned_path(&name);
        let (bpf_log, rt) = (self.bpf_log, self.rt.clone());
        let f = self.filters.get_mut(&name).expect("checked");
        let lock = f.pins.lock()?;
        let mut notes = Vec::new();
        let loaded = Core::open(&mut Pinned::open(&f.pins)?)?.read()?;
        if bpflog::needs_reload(&loaded, bpf_log) {
            // The level is a constant of the loaded program: a new one goes in on the
            // link, over the same maps.
            takeover::replace_program(&f.pins, iface.capacity, bpf_log)
                .with_context(|| format!("loading {name}'s program with the new log level"))?;
            if let Some(t) = f.log_task.take() {
                t.abort();
            }
            f.log_task = forward_log(&rt, bpf_log, &f.pins);
            let level = bpf_log.map_or("off".into(), |l| format!("{l:?}").to_lowercase());
            notes.push(format!("data path log: {level} (program reloaded on the link)"));
        }
        let (owned, changes, result) =
            reconcile::apply(&mut Pinned::open(&f.pins)?, &want, f.applied.as_ref(), &f.owned);
        f.owned = owned;
        f.owned.save(&owned_path).with_context(|| format!("saving {}", owned_path.display()))?;
        tracing::info!(interface = name.as_str(), "reload: {changes}");
        result?;
        f.applied = Some(iface.clone());
        // The bouncer takes the lock itself.
        drop(lock);
        if let Some(b) = &mut self.crowdsec
            && !changes.handed_over.is_empty()
        {
            b.reassert(&name, &f.pins, &changes.handed_over, false);
        }
        notes.insert(0, changes.to_string());
        Ok(notes.join("; "))
    }

    /// A URL source's copy in force changed: its interface's lists converge again
    /// (the rest of its config is as applied).
    pub fn source_changed(&mut self, key: &Key) {
        let Some(applied) = self.filters.get(&key.iface).and_then(|f| f.applied.clone()) else { return };
        match self.desired(&applied).and_then(|want| self.reload_one(want)) {
            Ok(changes) => tracing::info!(
                interface = key.iface.as_str(),
                url = key.url.as_str(),
                "list source applied: {changes}"
            ),
            Err(e) => tracing::error!(
                interface = key.iface.as_str(),
                url = key.url.as_str(),
                "applying a fetched list failed, the previous one stays: {e:#}"
            ),
        }
    }

    /// An interface's config with its lists read: entries, list files (globs expanded
    /// again, so a file added to a directory counts), and the URL lists' copies in force.
    fn desired<'a>(&self, cfg: &'a Interface) -> anyhow::Result<Desired<'a>> {
        let read = |kind: ListName| -> anyhow::Result<Vec<IpNet>> {
            let spec = cfg.list(kind);
            let mut out = spec.entries.clone();
            out.extend(floodgate::sources::read_local(&spec.files, &spec.globs)?);
            if let Some(urls) = &self.urls {
                out.extend(urls.entries(&cfg.name, kind));
            }
            Ok(out)
        };
        let want = Desired {
            config: cfg,
            blocklist: read(ListName::Blocklist)?,
            allowlist: read(ListName::Allowlist)?,
            watchlist: read(ListName::Watchlist)?,
            keep: self.crowdsec.as_ref().map(|b| b.keep(&cfg.name)).unwrap_or_default(),
        };
        want.check_capacity().map_err(anyhow::Error::msg)?;
        Ok(want)
    }

    /// `iface` as it should be in force: its config, with the open incident's
    /// escalations over it.
    fn effective(&self, iface: &Interface) -> Interface {
        match self.filters.get(&iface.name) {
            Some(f) if f.escalated => escalated(iface),
            _ => iface.clone(),
        }
    }

    /// Starts, updates or stops the incident watcher of `name`.
    fn sync_watcher(&mut self, name: &str, settings: Option<Incidents>) {
        let (store, rt, tx) = (self.incidents.clone(), self.rt.clone(), self.tx.clone());
        let Some(f) = self.filters.get_mut(name) else { return };
        match (settings, &f.watcher) {
            (None, _) => f.watcher = None,
            (Some(s), Some(w)) => w.update(s),
            (Some(s), None) => match Watcher::start(f.pins.clone(), s, store, rt, tx) {
                Ok(w) => f.watcher = Some(w),
                Err(e) => tracing::error!(interface = name, "incident detection not started: {e:#}"),
            },
        }
    }

    /// Puts an incident's escalations in force (`on`) or takes them back to the
    /// config; reports each step to the incident's record.
    pub fn escalate(
        &mut self,
        name: &str,
        on: bool,
        id: &str,
        report: &std::sync::mpsc::Sender<ActionReport>,
    ) {
        let Some(f) = self.filters.get_mut(name) else { return };
        let Some(base) = f.base.clone() else { return };
        if f.escalated == on {
            return;
        }
        f.escalated = on;
        let want = if on { escalated(&base) } else { base };
        let what = if on { "escalate" } else { "undo" };
        let result = self.desired(&want).and_then(|w| self.reload_one(w));
        let action = Action {
            at_ms: SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            what: what.to_string(),
            ok: result.is_ok(),
            detail: match &result {
                Ok(changes) => changes.clone(),
                Err(e) => format!("{e:#}"),
            },
        };
        match &result {
            Ok(changes) => tracing::warn!(interface = name, id, "incident {what}: {changes}"),
            Err(e) => tracing::error!(interface = name, id, "incident {what} failed: {e:#}"),
        }
        let _ = report.send((id.to_string(), action));
    }

    /// Removes expired entries and bans. A failure is logged (once a minute for the
    /// same error) and retried next second: protection stays whatever happens here.
    pub fn sweep(&mut self) {
        let filters = self.pinned();
        if let Some(b) = &mut self.crowdsec {
            b.expire(&filters);
        }
        let names: Vec<String> = self.filters.keys().cloned().collect();
        for name in names {
            let result = Session::locked_within(Some(&name), Duration::from_millis(500)).and_then(|mut s| {
                s.sweep()?;
                Ok(s.limiter()?.bans())
            });
            match result {
                Ok(bans) => {
                    if let Some(f) = self.filters.get_mut(&name) {
                        log_bans(&name, f.bans.as_ref(), &bans);
                        if let Some(b) = self.crowdsec.as_ref().filter(|b| b.reports()) {
                            report_bans(b, &name, f, &bans);
                        }
                        f.bans = Some(bans.into_iter().collect());
                    }
                    if self.sweep_failing.remove(&name).is_some() {
                        tracing::info!(interface = name.as_str(), "sweeping works again");
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    // Once when the failures start, then once a minute while they last:
                    // one failure can show several texts (a map changing under the sweep).
                    let repeat = self
                        .sweep_failing
                        .get(&name)
                        .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
                    if !repeat {
                        tracing::warn!(
                            interface = name.as_str(),
                            "sweeping expired entries failed: {msg}; the filter stays attached, retrying every second"
                        );
                        self.sweep_failing.insert(name, Instant::now());
                    }
                }
            }
        }
    }

    /// The interfaces kept, with their pins (what the bouncer writes to).
    fn pinned(&self) -> Vec<(String, IfacePins)> {
        self.filters.iter().map(|(n, f)| (n.clone(), f.pins.clone())).collect()
    }

    /// A pull of CrowdSec decisions, applied to the blocklists it covers.
    pub fn decisions(
        &mut self,
        stream: &floodgate::crowdsec::Stream,
        startup: bool,
        started: Instant,
        fetched: Instant,
    ) {
        let filters = self.pinned();
        if let Some(b) = &mut self.crowdsec {
            b.apply_pull(stream, startup, &filters, (started, fetched));
        }
    }

    /// Starts, restarts (its section changed) or stops the CrowdSec bouncer. Entries
    /// it holds in an interface it no longer covers are lifted.
    fn sync_crowdsec(&mut self, want: Option<&floodgate::config::CrowdSec>) -> anyhow::Result<()> {
        if self.crowdsec.as_ref().map(|b| &b.cfg) == want {
            return Ok(());
        }
        let filters = self.pinned();
        if let Some(mut old) = self.crowdsec.take() {
            for (name, pins) in &filters {
                if want.is_none_or(|w| !w.covers(name)) && old.cfg.covers(name) {
                    old.lift_all(name, pins);
                }
            }
        }
        match want {
            None => {
                let _ = std::fs::remove_file(self.runtime.join(floodgate::crowdsec::status::FILE));
                self.metrics.state().set_crowdsec(None);
            }
            Some(cfg) => {
                let b = Bouncer::start(cfg, &self.runtime, &self.rt, self.tx.clone())?;
                self.metrics.state().set_crowdsec(Some(b.status.clone()));
                self.crowdsec = Some(b);
            }
        }
        Ok(())
    }

    pub fn stop(&mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        for (name, f) in &self.filters {
            if !self.detach_on_exit {
                tracing::info!(
                    interface = name.as_str(),
                    "leaving the filter in force (it needs no process)"
                );
                continue;
            }
            let cleaned = super::super::synproxy::cleanup(name);
            let detached = pins::resolve_for(Some(name), Purpose::Detach)
                .map_err(anyhow::Error::from)
                .and_then(|p| loader::detach(&p).with_context(|| format!("detaching from {name}")));
            match cleaned.and(detached) {
                Ok(()) => {
                    let _ = std::fs::remove_file(self.owned_path(name));
                    println!("detached from {name}");
                    tracing::info!(interface = name.as_str(), pins = %f.pins.dir.display(), "detached");
                }
                Err(e) => {
                    tracing::error!(interface = name.as_str(), "{e:#}");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Logs the auto-bans that started and ended since the last sweep (`seen`; None: the
/// first sweep, whose bans are reported as a count).
fn log_bans(iface: &str, seen: Option<&HashMap<SourceKey, Ban>>, now: &[(SourceKey, Ban)]) {
    let secs = |ns: u64| ns / 1_000_000_000;
    let Some(seen) = seen else {
        if !now.is_empty() {
            tracing::info!(interface = iface, bans = now.len(), "auto-bans in force");
        }
        return;
    };
    for (key, ban) in now {
        if seen.get(key) != Some(ban) {
            tracing::info!(
                interface = iface,
                source = floodgate::limits::key_cidr(key),
                seconds = secs(ban.expires.saturating_sub(ban.banned_at)),
                "auto-ban started"
            );
        }
    }
    let now_keys: std::collections::HashSet<&SourceKey> = now.iter().map(|(k, _)| k).collect();
    let at = monotonic_ns();
    for (key, ban) in seen {
        if !now_keys.contains(key) {
            let why = if ban.expires <= at { "expired" } else { "lifted" };
            tracing::info!(
                interface = iface,
                source = floodgate::limits::key_cidr(key),
                seconds = secs(at.saturating_sub(ban.banned_at)),
                "auto-ban ended ({why})"
            );
        }
    }
}

/// Hands the auto-bans that started since the last sweep to the CrowdSec reporter,
/// each with its source's packet rate at the last sweep (from the limiter's table of
/// over-limit sources) and the limits it went over.
fn report_bans(b: &Bouncer, iface: &str, f: &mut Filter, now: &[(SourceKey, Ban)]) {
    let at = monotonic_ns();
    let wall = SystemTime::now();
    let pins = f.pins.clone();
    let read = (|| -> anyhow::Result<_> {
        let mut src = Pinned::open(&pins)?;
        let limiter = floodgate::limits::LimiterMaps::open(&mut src)?;
        let heavy: HashMap<SourceKey, u64> =
            limiter.heavy.iter().filter_map(Result::ok).map(|(k, s)| (k, s.passed + s.dropped)).collect();
        Ok((heavy, limiter.limits()?))
    })();
    let Ok((heavy, limits)) = read else { return };
    let rates: HashMap<SourceKey, u64> = match &f.heavy_seen {
        Some((when, seen)) => {
            let secs = at.saturating_sub(*when) as f64 / 1e9;
            heavy
                .iter()
                .filter_map(|(k, n)| {
                    let before = seen.get(k)?;
                    (secs > 0.0).then(|| (*k, (n.saturating_sub(*before) as f64 / secs) as u64))
                })
                .collect()
        }
        None => HashMap::new(),
    };
    if let Some(seen) = &f.bans {
        for (key, ban) in now {
            if seen.get(key) == Some(ban) || ban.expires <= at {
                continue;
            }
            let Ok(source) = floodgate::limits::key_cidr(key).parse::<IpNet>() else { continue };
            let ago = Duration::from_nanos(at.saturating_sub(ban.banned_at));
            let left = Duration::from_nanos(ban.expires - at);
            b.report(floodgate::crowdsec::report::Ban {
                source,
                interface: iface.to_string(),
                started: wall.checked_sub(ago).unwrap_or(wall),
                until: wall + left,
                pps: rates.get(key).copied(),
                limit: reconcile::describe_limits(Some(&limits)),
            });
        }
    }
    f.heavy_seen = Some((at, heavy));
}

/// Forwards the log records of the program now attached under `pins` to the
/// service's log, when the data path's log is on. A failure costs the records only.
fn forward_log(
    rt: &Handle,
    level: Option<BpfLogLevel>,
    pins: &IfacePins,
) -> Option<tokio::task::JoinHandle<()>> {
    level?;
    let _rt = rt.enter();
    match Forwarder::for_pins(pins).and_then(Forwarder::spawn) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::warn!(
                interface = pins.iface.as_str(),
                "the data path's log records cannot be read: {}",
                loader::error_chain(&e)
            );
            None
        }
    }
}

/// Applies `want` to the maps of `src`, logging what changed; the owned record comes
/// back even when a section failed (what was applied is owned).
fn apply_logged(
    src: &mut impl floodgate::maps::MapSource,
    iface: &str,
    want: &Desired<'_>,
    prev: Option<&Interface>,
    owned: &Owned,
) -> Result<Owned, BoxError> {
    let (owned, changes, result) = reconcile::apply(src, want, prev, owned);
    tracing::info!(interface = iface, "config applied: {changes}");
    result.map_err(|e| Box::new(e) as BoxError)?;
    Ok(owned)
}

/// The single settings of a filter (limits, rules, policy, SYN cookies' data-path
/// side), carried into new maps of the same layout.
struct Settings {
    limits: filter_common::limit::LimitConfig,
    rules: Vec<floodgate::rules::RuleSpec>,
    policy: floodgate::policy::PolicyState,
    synproxy: (filter_common::synproxy::SynProxyConfig, Vec<(u16, u16)>),
}

impl Settings {
    fn read(pins: &IfacePins) -> anyhow::Result<Self> {
        let src = &mut Pinned::open(pins)?;
        let sp = floodgate::synproxy::SynProxyMaps::open(src)?;
        Ok(Settings {
            limits: floodgate::limits::LimiterMaps::open(src)?.limits()?,
            rules: floodgate::rules::RuleMaps::open(src)?.rules()?.into_iter().map(|r| r.spec).collect(),
            policy: floodgate::policy::PolicyMaps::open(src)?.policy_state()?,
            synproxy: (sp.synproxy_config()?, sp.synproxy_ports()?),
        })
    }

    fn write(&self, ebpf: &mut Ebpf) -> Result<(), BoxError> {
        if self.limits.enabled != 0 || self.limits.ban_after_ns != 0 {
            floodgate::limits::LimiterMaps::open(ebpf)?.set_limits(&self.limits)?;
        }
        if !self.rules.is_empty() {
            floodgate::rules::RuleMaps::open(ebpf)?.add_rules(&self.rules)?;
        }
        floodgate::policy::PolicyMaps::open(ebpf)?.set_policy(self.policy.config, &self.policy.served)?;
        let (cfg, ports) = &self.synproxy;
        floodgate::synproxy::SynProxyMaps::open(ebpf)?.write_synproxy(cfg, ports)?;
        Ok(())
    }
}

/// Entries in the pinned lists that the config did not put there, with what is left
/// of their TTL.
fn operator_entries(
    pins: &IfacePins,
    owned: &Owned,
) -> anyhow::Result<Vec<(ListKind, IpNet, Option<Duration>)>> {
    let lists = ListMaps::open(&mut Pinned::open(pins)?)?;
    let now = monotonic_ns();
    let mut out = Vec::new();
    for kind in ListKind::ALL {
        let mine = owned.list(kind);
        for e in lists.entries(kind)? {
            if mine.binary_search(&e.net).is_ok() {
                continue;
            }
            match e.expires {
                None => out.push((kind, e.net, None)),
                Some(t) if t > now => out.push((kind, e.net, Some(Duration::from_nanos(t - now)))),
                Some(_) => {}
            }
        }
    }
    Ok(out)
}

/// The config file, or every error in it (one per line, `FILE:LINE:COLUMN: reason`).
/// `iface` with its incident escalations applied: stricter limits and the policy
/// replace the config's; SYN cookie ports join the config's.
fn escalated(iface: &Interface) -> Interface {
    let mut out = iface.clone();
    let Some(esc) = iface.incidents.as_ref().map(|i| &i.escalate) else { return out };
    if let Some(l) = esc.limits {
        out.limits = Some(l);
    }
    if let Some(p) = &esc.policy {
        out.policy = Some(p.clone());
    }
    if let Some(sp) = &esc.syn_cookies {
        let mut merged = sp.clone();
        if let Some(have) = &iface.synproxy {
            for r in &have.ports {
                if !merged.ports.contains(r) {
                    merged.ports.push(*r);
                }
            }
        }
        out.synproxy = Some(merged);
    }
    out
}

pub fn load_config(path: &Path) -> Result<Config, Vec<String>> {
    floodgate::config::load(path).map_err(|e| e.to_string().lines().map(str::to_string).collect())
}
