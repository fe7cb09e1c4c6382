//! The service's CrowdSec side: a tokio task pulls the LAPI's decision stream and
//! hands each pull to the controller, which alone writes the blocklists; with
//! `[crowdsec.report]`, another task sends the auto-bans the controller finds at its
//! sweeps to the LAPI as alerts.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use filter_common::ListKind;
use floodgate::{
    config::CrowdSec,
    crowdsec::{
        Filter, Stream, Table,
        held::{self, HeldMap},
        lapi,
        report::{self, Queue},
        status::{ReportStatus, Status},
    },
    maps::Pinned,
    pins::IfacePins,
    store::{ListMaps, monotonic_ns},
};
use ipnet::IpNet;
use tokio::{
    runtime::Handle,
    sync::{mpsc, oneshot},
};

use super::Msg;

/// Pulls retry after a failure from `poll` doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Auto-bans waiting for the reporter's task (beyond: counted as dropped).
const REPORT_CHANNEL: usize = 4096;

pub type SharedStatus = Arc<Mutex<Status>>;

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The bouncer as the controller keeps it.
pub struct Bouncer {
    pub cfg: CrowdSec,
    filter: Filter,
    table: Table,
    /// A startup pull has been applied: the table is complete.
    synced: bool,
    /// Per interface: the blocklist entries the bouncer holds.
    held: HashMap<String, HeldMap>,
    /// Interfaces where applying a pull failed: the next pull puts every decision
    /// in force there again (a delta alone would miss what failed).
    dirty: HashSet<String>,
    runtime: PathBuf,
    pub status: SharedStatus,
    puller: tokio::task::JoinHandle<()>,
    reporter: Option<(mpsc::Sender<report::Ban>, tokio::task::JoinHandle<()>)>,
    /// Auto-bans the reporter's channel had no room for.
    overflow: Arc<AtomicU64>,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        self.puller.abort();
        if let Some((_, t)) = &self.reporter {
            t.abort();
        }
    }
}

impl Bouncer {
    /// Starts the pulls (and the reporter). Reads the key, certificates and machine
    /// credentials now: a file that cannot be read stops the start or the reload.
    pub fn start(
        cfg: &CrowdSec,
        runtime: &std::path::Path,
        rt: &Handle,
        tx: mpsc::Sender<Msg>,
    ) -> anyhow::Result<Self> {
        let client = lapi::Bouncer::new(cfg).context("the CrowdSec bouncer")?;
        let status = Arc::new(Mutex::new(Status {
            lapi_url: cfg.lapi_url.clone(),
            state: "starting".into(),
            report: cfg.report.as_ref().map(|_| ReportStatus::default()),
            ..Status::default()
        }));
        let overflow = Arc::new(AtomicU64::new(0));
        let reporter = match &cfg.report {
            Some(r) => {
                let creds = lapi::Credentials::read(&r.credentials_file).context("the CrowdSec reporter")?;
                let machine = lapi::Machine::new(cfg, creds).context("the CrowdSec reporter")?;
                let (btx, brx) = mpsc::channel(REPORT_CHANNEL);
                let task = rt.spawn(report_loop(
                    machine,
                    brx,
                    Queue::new(r.queue, r.max_alerts_per_minute),
                    Report {
                        status: status.clone(),
                        runtime: runtime.to_path_buf(),
                        overflow: overflow.clone(),
                    },
                ));
                Some((btx, task))
            }
            None => None,
        };
        let puller = rt.spawn(pull_loop(client, cfg.poll, tx, status.clone(), runtime.to_path_buf()));
        tracing::info!(lapi = cfg.lapi_url.as_str(), "CrowdSec bouncer started");
        Ok(Bouncer {
            cfg: cfg.clone(),
            filter: Filter::new(cfg),
            table: Table::default(),
            synced: false,
            held: HashMap::new(),
            dirty: HashSet::new(),
            runtime: runtime.to_path_buf(),
            status,
            puller,
            reporter,
            overflow,
        })
    }

    fn held_path(&self, iface: &str) -> PathBuf {
        self.runtime.join(format!("{iface}.crowdsec-held.json"))
    }

    /// The held map of `iface`, read from its file the first time (a restarted
    /// service knows what it held).
    fn held_of(&mut self, iface: &str) -> &mut HeldMap {
        if !self.held.contains_key(iface) {
            let path = self.held_path(iface);
            let map = held::load(&path).unwrap_or_else(|e| {
                tracing::warn!(
                    interface = iface,
                    "reading {}: {e}; starting with nothing held",
                    path.display()
                );
                HeldMap::new()
            });
            self.held.insert(iface.to_string(), map);
        }
        self.held.get_mut(iface).expect("inserted")
    }

    /// A pull, applied to every covered interface. Returns the entries written.
    pub fn apply_pull(
        &mut self,
        stream: &Stream,
        startup: bool,
        filters: &[(String, IfacePins)],
        (started, fetched): (Instant, Instant),
    ) -> u64 {
        let now = monotonic_ns();
        let delta = self.table.apply(stream, startup, &self.filter, now);
        if startup {
            self.synced = true;
        }
        let mut written = 0;
        let mut errors = Vec::new();
        for (name, pins) in filters {
            if !self.cfg.covers(name) {
                continue;
            }
            let mut nets: Vec<IpNet> = delta.touched.clone();
            let full = startup || self.dirty.contains(name);
            if full {
                // Every banned prefix, and whatever was held before (also by an earlier
                // run) that no decision bans any more.
                nets.extend(self.table.wanted(now).into_iter().map(|(n, _)| n));
                nets.extend(self.held_of(name).keys().copied());
                nets.sort_by(floodgate::store::net_order);
                nets.dedup();
            }
            match self.converge(name, pins, &nets, &[]) {
                Ok(n) => {
                    written += n;
                    self.dirty.remove(name);
                }
                Err(e) => {
                    errors.push(format!("{name}: {e:#}"));
                    self.dirty.insert(name.clone());
                }
            }
        }
        let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        s.pulls += 1;
        s.received += delta.received;
        s.deleted += delta.deleted;
        s.applied += written;
        for skip in &delta.skipped {
            let (k, v) = skip.label();
            *s.skipped.entry(format!("{k}={v}")).or_default() += 1;
        }
        self.counts_into(&mut s);
        if errors.is_empty() {
            s.state = "ok".into();
            s.last_error = None;
            s.failing_for = 0;
            s.last_pull_unix = Some(unix_now());
            s.last_pull_seconds = Some(started.elapsed().as_secs_f64());
        } else {
            s.state = "failing".into();
            s.last_error = Some(format!("applying decisions: {}", errors.join("; ")));
            for e in &errors {
                tracing::error!("CrowdSec decisions not applied, retried at the next pull: {e}");
            }
        }
        if delta.received + delta.deleted > 0 || startup {
            tracing::info!(
                startup,
                received = delta.received,
                deleted = delta.deleted,
                skipped = delta.skipped.len(),
                written,
                in_force = self.table.len(),
                pull_seconds = fetched.duration_since(started).as_secs_f64(),
                apply_seconds = fetched.elapsed().as_secs_f64(),
                seconds = started.elapsed().as_secs_f64(),
                "CrowdSec decisions applied"
            );
        }
        save_status(&s, &self.runtime);
        written
    }

    /// What the table and the held maps hold, into the status.
    fn counts_into(&self, s: &mut Status) {
        s.decisions = self.table.len() as u64;
        s.prefixes = self.table.prefixes() as u64;
        s.interfaces = self.held.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
    }

    /// Writes what the table wants for `nets` (and hands `handed` over: entries the
    /// config left that a decision still bans) into `iface`'s blocklist.
    fn converge(
        &mut self,
        iface: &str,
        pins: &IfacePins,
        nets: &[IpNet],
        handed: &[IpNet],
    ) -> anyhow::Result<u64> {
        if nets.is_empty() && handed.is_empty() {
            return Ok(0);
        }
        let now = monotonic_ns();
        let t0 = Instant::now();
        let _lock = pins.lock()?;
        let mut lists = ListMaps::open(&mut Pinned::open(pins)?)?;
        lists.sweep()?;
        let all: Vec<IpNet> = nets.iter().chain(handed).copied().collect();
        let want: Vec<(IpNet, Option<u64>)> = all.iter().map(|n| (*n, self.table.want(n, now))).collect();
        let mut listed = lists.probe(ListKind::Block, &all)?;
        let probed = t0.elapsed();
        // Handed over: listed permanently by nobody any more, so the bouncer's to time.
        for l in &mut listed[nets.len()..] {
            *l = floodgate::store::Listed::Absent;
        }
        let held = self.held_of(iface);
        let plan = held::plan(&want, &listed, held, now);
        if plan.is_empty() {
            return Ok(0);
        }
        let (_, removed) = lists.set_expiries(ListKind::Block, &plan.set, &plan.gone, &mut |_, _| {})?;
        let wrote = t0.elapsed();
        let written = (plan.set.len() + removed) as u64;
        plan.commit(held);
        let path = self.held_path(iface);
        let held = &self.held[iface];
        held::save(&path, held).with_context(|| format!("saving {}", path.display()))?;
        tracing::debug!(
            interface = iface,
            entries = all.len(),
            probe_seconds = probed.as_secs_f64(),
            write_seconds = (wrote - probed).as_secs_f64(),
            save_seconds = (t0.elapsed() - wrote).as_secs_f64(),
            "CrowdSec entries written"
        );
        Ok(written)
    }

    /// Takes over `handed` (entries the config left that a decision still bans) in
    /// `iface`'s blocklist and, with `all`, puts every banned prefix of the table back
    /// (new maps, or a filter taken over).
    pub fn reassert(&mut self, iface: &str, pins: &IfacePins, handed: &[IpNet], all: bool) {
        if !self.cfg.covers(iface) {
            return;
        }
        let now = monotonic_ns();
        let handed: Vec<IpNet> =
            handed.iter().filter(|n| self.table.want(n, now).is_some()).copied().collect();
        // Before the first pull the table is empty: what is held stays as it is.
        let mut nets: Vec<IpNet> = if all && self.synced {
            self.table.wanted(now).into_iter().map(|(n, _)| n).collect()
        } else {
            Vec::new()
        };
        nets.retain(|n| !handed.contains(n));
        if let Err(e) = self.converge(iface, pins, &nets, &handed) {
            tracing::error!(interface = iface, "putting CrowdSec's decisions in force: {e:#}");
        }
    }

    /// Prefixes the config must not take out of `iface`'s blocklist (a decision bans them).
    pub fn keep(&self, iface: &str) -> HashSet<IpNet> {
        if !self.cfg.covers(iface) {
            return HashSet::new();
        }
        self.table.wanted(monotonic_ns()).into_iter().map(|(n, _)| n).collect()
    }

    /// Forgets decisions whose time is up (the data path already ignores their
    /// entries; the sweep deletes them) and releases their entries.
    pub fn expire(&mut self, filters: &[(String, IfacePins)]) {
        let gone = self.table.expire(monotonic_ns());
        if gone.is_empty() {
            return;
        }
        for (name, pins) in filters {
            if self.cfg.covers(name)
                && let Err(e) = self.converge(name, pins, &gone, &[])
            {
                tracing::warn!(interface = name.as_str(), "releasing expired CrowdSec entries: {e:#}");
            }
        }
        let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        self.counts_into(&mut s);
        save_status(&s, &self.runtime);
    }

    /// Lifts every entry held in `iface` (the bouncer was removed from the config, or
    /// no longer covers it).
    pub fn lift_all(&mut self, iface: &str, pins: &IfacePins) {
        let nets: Vec<IpNet> = self.held_of(iface).keys().copied().collect();
        // With an empty table nothing is wanted: every held entry is lifted.
        let table = std::mem::take(&mut self.table);
        if let Err(e) = self.converge(iface, pins, &nets, &[]) {
            tracing::error!(interface = iface, "lifting CrowdSec's entries: {e:#}");
        }
        self.table = table;
    }

    /// Hands an auto-ban to the reporter (when there is one).
    pub fn report(&self, ban: report::Ban) {
        let Some((tx, _)) = &self.reporter else { return };
        if tx.try_send(ban).is_err() {
            self.overflow.fetch_add(1, Relaxed);
        }
    }

    pub fn reports(&self) -> bool {
        self.reporter.is_some()
    }
}

fn save_status(s: &Status, runtime: &std::path::Path) {
    if let Err(e) = s.save(runtime) {
        tracing::debug!("saving the CrowdSec status: {e}");
    }
}

/// Startup pull, then deltas every `poll`; after a failure, a startup pull again
/// (the LAPI may have lost its record of this bouncer's pulls), backing off.
async fn pull_loop(
    client: lapi::Bouncer,
    poll: Duration,
    tx: mpsc::Sender<Msg>,
    status: SharedStatus,
    runtime: PathBuf,
) {
    let mut startup = true;
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let wait = match client.pull(startup).await {
            Ok(stream) => {
                let (done, applied) = oneshot::channel();
                let fetched = Instant::now();
                if tx.send(Msg::Decisions { stream, startup, started, fetched, done }).await.is_err() {
                    return;
                }
                let _ = applied.await;
                if failures > 0 {
                    tracing::info!("CrowdSec LAPI answers again after {failures} failed pulls");
                }
                startup = false;
                failures = 0;
                poll
            }
            Err(e) => {
                failures += 1;
                startup = true;
                let backoff = poll.saturating_mul(1 << (failures - 1).min(16)).min(MAX_BACKOFF.max(poll));
                // Logged when it starts failing, then every tenth time.
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(
                        failures,
                        retry_in = backoff.as_secs_f64(),
                        "CrowdSec pull failed, the decisions in force stay: {e}"
                    );
                }
                let mut s = status.lock().unwrap_or_else(PoisonError::into_inner);
                s.state = "failing".into();
                s.pull_errors += 1;
                s.failing_for = u64::from(failures);
                s.last_error = Some(e.to_string());
                save_status(&s, &runtime);
                backoff
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Takes auto-bans, sends them in batches once a second as the rate allows; a failed
/// send keeps them queued and backs off.
/// Where the reporter's task reports its own state.
struct Report {
    status: SharedStatus,
    runtime: PathBuf,
    overflow: Arc<AtomicU64>,
}

impl Report {
    fn update(&self, queue: &Queue, f: impl FnOnce(&mut ReportStatus)) {
        let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(r) = &mut s.report else { return };
        let before = r.clone();
        f(r);
        r.queued = queue.len() as u64;
        r.duplicates = queue.duplicates;
        r.dropped = queue.dropped + self.overflow.load(Relaxed);
        if *r != before {
            save_status(&s, &self.runtime);
        }
    }
}

async fn report_loop(
    mut machine: lapi::Machine,
    mut rx: mpsc::Receiver<report::Ban>,
    mut queue: Queue,
    out: Report,
) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or("localhost".into(), |h| h.trim().to_string());
    let origin = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failures: u32 = 0;
    let mut resume = Instant::now();
    loop {
        tokio::select! {
            ban = rx.recv() => match ban {
                Some(b) => { let _ = queue.push(b); }
                None => return,
            },
            _ = tick.tick() => {
                if Instant::now() < resume || queue.is_empty() {
                    out.update(&queue, |_| {});
                    continue;
                }
                let now = SystemTime::now();
                let batch = queue.take(origin.elapsed().as_secs_f64(), now);
                if batch.is_empty() {
                    out.update(&queue, |_| {});
                    continue;
                }
                let alerts: Vec<lapi::Alert> = batch.iter().map(|b| report::alert(b, &host, now)).collect();
                match machine.post(&alerts).await {
                    Ok(()) => {
                        failures = 0;
                        tracing::info!(alerts = alerts.len(), "auto-bans reported to the CrowdSec LAPI");
                        out.update(&queue, |r| {
                            r.sent += alerts.len() as u64;
                            r.last_sent_unix = Some(unix_now());
                            r.last_error = None;
                        });
                    }
                    Err(e) => {
                        failures += 1;
                        let backoff = Duration::from_secs(1 << failures.min(6));
                        resume = Instant::now() + backoff;
                        if failures == 1 || failures.is_multiple_of(10) {
                            tracing::warn!(queued = queue.len() + batch.len(), "reporting auto-bans to the CrowdSec LAPI failed, kept queued: {e}");
                        }
                        queue.put_back(batch);
                        out.update(&queue, |r| {
                            r.errors += 1;
                            r.last_error = Some(e.to_string());
                        });
                    }
                }
            }
        }
    }
}
