//! Incidents in the service: per interface with `[incidents]`, a thread that reads the
//! verdict counters and the service tap's samples every second, feeds the detector,
//! keeps the open incident's record (profile, timeline, pcap) on disk, and starts the
//! actions: hook and webhook on the tokio runtime, escalations on the controller
//! thread (the only one that changes the maps). Actions report back through a
//! channel and land in the record of the incident they belong to.

use std::{
    fs::{File, OpenOptions},
    io::BufWriter,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use filter_common::{
    Reason,
    sample::{SAMPLE_BYTES, TAP_SERVICE},
};
use floodgate::{
    config::Incidents,
    incident::{
        actions::{self, Event},
        detect::{Change, Delta, Detector, Incident},
        profile::{Builder, weights},
        record::{Action, CountedTo, IncidentRecord, RECORD_VERSION, State, Timeline, Totals},
        store::Store,
    },
    maps::{Core, Pinned},
    pins::IfacePins,
    sampler::{Captured, Reader, SamplerMaps, TapSettings, cpus, decode::decode, pcap::PcapWriter},
    stats::Counters,
};
use tokio::{runtime::Handle, sync::mpsc};

use super::Msg;

/// Frames an incident's pcap keeps at most (about 15 MB of 144-byte records).
const PCAP_MAX_FRAMES: u64 = 100_000;
/// How often an open incident's record is written while it runs.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// How long a hook or webhook may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// An action's result on its way back: the incident it belongs to, and what happened.
pub type ActionReport = (String, Action);

/// The running watcher of one interface.
pub struct Watcher {
    settings: Arc<Mutex<Incidents>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `pins`' interface. `tx` reaches the controller (escalations).
    pub fn start(
        pins: IfacePins,
        settings: Incidents,
        store: Arc<Store>,
        rt: Handle,
        tx: mpsc::Sender<Msg>,
    ) -> anyhow::Result<Watcher> {
        let settings = Arc::new(Mutex::new(settings));
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Watch::new(pins, settings.clone(), store, rt, tx)?;
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fg-inc-{}", w.iface))
            .spawn(move || w.run(&s))
            .context("starting the incident watcher")?;
        Ok(Watcher { settings, stop, thread: Some(thread) })
    }

    /// New thresholds, sampling and actions (a reload); an open incident goes on.
    pub fn update(&self, settings: Incidents) {
        *self.settings.lock().expect("not poisoned") = settings;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One second's samples, kept while the detector waits out its hold time.
struct Second {
    at_ms: u64,
    pps: std::collections::BTreeMap<String, u64>,
    samples: Vec<(Captured, u64)>,
}

/// The open incident's record and what builds it.
struct Open {
    rec: IncidentRecord,
    profile: Builder,
    pcap: Option<PcapWriter<BufWriter<File>>>,
    saved: Instant,
}

struct Watch {
    iface: String,
    pins: IfacePins,
    settings: Arc<Mutex<Incidents>>,
    applied: Option<Incidents>,
    store: Arc<Store>,
    rt: Handle,
    tx: mpsc::Sender<Msg>,
    http: reqwest::Client,
    reports: (std_mpsc::Sender<ActionReport>, std_mpsc::Receiver<ActionReport>),
    detector: Detector,
    pending: Vec<Second>,
    open: Option<Open>,
    /// Last error logged, so a persisting one is logged once.
    failing: Option<String>,
}

impl Watch {
    fn new(
        pins: IfacePins,
        settings: Arc<Mutex<Incidents>>,
        store: Arc<Store>,
        rt: Handle,
        tx: mpsc::Sender<Msg>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("floodgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up the webhook client")?;
        let thresholds = settings.lock().expect("not poisoned").thresholds.clone();
        Ok(Watch {
            iface: pins.iface.clone(),
            pins,
            settings,
            applied: None,
            store,
            rt,
            tx,
            http,
            reports: std_mpsc::channel(),
            detector: Detector::new(thresholds),
            pending: Vec::new(),
            open: None,
            failing: None,
        })
    }

    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = self.watch(stop) {
                let msg = format!("{e:#}");
                if self.failing.as_ref() != Some(&msg) {
                    tracing::error!(
                        interface = self.iface.as_str(),
                        "incident detection stopped: {msg}; retrying every 5 s"
                    );
                    self.failing = Some(msg);
                }
                for _ in 0..50 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        self.collect_reports();
        if let Some(o) = &mut self.open {
            // Stopping is not the flood's end: the record stays open for the next start.
            if let Some(p) = &mut o.pcap {
                let _ = p.flush();
            }
            let _ = self.store.save(&o.rec);
        }
    }

    /// Watches until stopped or a map fails.
    fn watch(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut src = Pinned::open(&self.pins)?;
        let counters = Counters::open(&mut src)?;
        let attached_at = Core::open(&mut src)?.read()?.attached_at;
        let mut sampler = SamplerMaps::open(&mut src)?;
        let mut reader = Reader::open(&mut src, TAP_SERVICE)?;
        self.apply_settings(&mut sampler)?;
        if self.open.is_none() {
            self.resume();
        }
        let mut before = counters.totals()?;
        self.count_the_gap(attached_at, &before);
        let mut tick = Instant::now();
        let mut samples = Vec::new();
        if self.failing.take().is_some() {
            tracing::info!(interface = self.iface.as_str(), "incident detection works again");
        }
        while !stop.load(Ordering::Relaxed) {
            let left = Duration::from_secs(1).saturating_sub(tick.elapsed());
            if !left.is_zero() {
                reader.wait(left.min(Duration::from_millis(100)))?;
                reader.drain(&mut samples);
                continue;
            }
            let span_ms = tick.elapsed().as_millis() as u64;
            tick = Instant::now();
            let now = counters.totals()?;
            let delta = now.since(&before);
            before = now;
            self.apply_settings(&mut sampler)?;
            let at_ms = now_ms();
            self.second(at_ms, span_ms, &delta, std::mem::take(&mut samples));
            if let Some(o) = &mut self.open {
                o.rec.counted_to = Some(CountedTo {
                    attached_at,
                    at_ms,
                    packets: now.0.iter().map(|c| c.packets).collect(),
                    bytes: now.0.iter().map(|c| c.bytes).collect(),
                });
            }
            self.collect_reports();
        }
        Ok(())
    }

    /// Puts changed settings in force: the tap and the detector's thresholds.
    fn apply_settings(&mut self, sampler: &mut SamplerMaps) -> anyhow::Result<()> {
        let want = self.settings.lock().expect("not poisoned").clone();
        if self.applied.as_ref() == Some(&want) {
            return Ok(());
        }
        let tap = TapSettings {
            every: want.sample_every,
            reasons: Vec::new(),
            max_pps: want.sample_max_pps,
            trace: false,
        };
        sampler.set(TAP_SERVICE, &tap.config(cpus())).context("turning the service's sampler on")?;
        if self.applied.as_ref().is_some_and(|a| a.thresholds != want.thresholds) {
            let open = self.detector.open().cloned();
            self.detector = Detector::new(want.thresholds.clone());
            if let Some(inc) = open {
                self.detector.resume(inc);
            }
        }
        self.applied = Some(want);
        Ok(())
    }

    /// Takes up the record a previous run left open.
    fn resume(&mut self) {
        let Some(rec) = self.store.open_of(&self.iface) else { return };
        tracing::info!(interface = self.iface.as_str(), id = rec.id.as_str(), "resuming the open incident");
        let mut inc = Incident {
            start_ms: rec.started_ms,
            last_over_ms: rec.timeline.points.last().map_or(rec.started_ms, |p| p.at_ms),
            peak_pps: rec.peak_pps,
            peak_bps: rec.peak_bps,
            crossed: rec.crossed.clone(),
            ..Default::default()
        };
        for r in Reason::ALL {
            if let Some(t) = rec.totals.get(r.key()) {
                inc.packets[r as usize] = t.packets;
                inc.bytes[r as usize] = t.bytes;
            }
        }
        // Counted as over now: a restart in the flood's middle must not close it at once.
        inc.last_over_ms = inc.last_over_ms.max(now_ms());
        self.detector.resume(inc);
        let pcap = self.open_pcap(&rec.id, true);
        // The restart put the config back in force: the escalations engage again.
        let settings = self.settings.lock().expect("not poisoned").clone();
        self.escalate(true, &rec.id, &settings);
        self.open = Some(Open { profile: Builder::resume(&rec.profile), rec, pcap, saved: Instant::now() });
    }

    /// A resumed incident: what the data path counted while no service ran (from
    /// the counters its record accounts for to `now`) goes into it as one span, when
    /// the counters are the same attach's.
    fn count_the_gap(&mut self, attached_at: u64, now: &floodgate::stats::Totals) {
        let Some(mark) = self.open.as_ref().and_then(|o| o.rec.counted_to.clone()) else { return };
        let n = Reason::COUNT as usize;
        if mark.attached_at != attached_at || mark.packets.len() != n || mark.bytes.len() != n {
            return;
        }
        let mut gap = floodgate::stats::Totals::default();
        for (i, c) in now.0.iter().enumerate() {
            if c.packets < mark.packets[i] || c.bytes < mark.bytes[i] {
                return; // not the counters the mark was taken from
            }
            gap.0[i].packets = c.packets - mark.packets[i];
            gap.0[i].bytes = c.bytes - mark.bytes[i];
        }
        let at_ms = now_ms();
        let span_ms = at_ms.saturating_sub(mark.at_ms);
        tracing::info!(
            interface = self.iface.as_str(),
            packets = gap.packets(),
            seconds = span_ms / 1000,
            "counted what the data path saw while the service was down"
        );
        self.second(at_ms, span_ms, &gap, Vec::new());
    }

    /// One second of counters and samples.
    fn second(&mut self, at_ms: u64, span_ms: u64, delta: &floodgate::stats::Totals, samples: Vec<Captured>) {
        let packets: Vec<u64> = Reason::ALL.iter().map(|r| delta.get(*r).packets).collect();
        let w = weights(&packets, &samples);
        let weighted: Vec<(Captured, u64)> = samples
            .into_iter()
            .map(|c| {
                let weight = c.reason().map_or(1, |r| w[r as usize]);
                (c, weight)
            })
            .collect();
        let syns: u64 = weighted.iter().filter(|(c, _)| is_syn(c)).map(|(_, w)| *w).sum();
        let mut d = Delta { at_ms, span_ms: span_ms.max(1), syns, ..Default::default() };
        for r in Reason::ALL {
            d.packets[r as usize] = delta.get(r).packets;
            d.bytes[r as usize] = delta.get(r).bytes;
        }
        let pps = Reason::ALL
            .iter()
            .filter(|r| d.packets[**r as usize] > 0)
            .map(|r| (r.key().to_string(), d.packets[*r as usize] * 1000 / d.span_ms))
            .collect();
        let second = Second { at_ms, pps, samples: weighted };
        match self.detector.feed(d) {
            Some(Change::Opened(inc)) => {
                self.pending.push(second);
                self.opened(&inc);
            }
            Some(Change::Closed(inc)) => {
                self.fold(second);
                self.closed(&inc);
            }
            None if self.open.is_some() => {
                self.fold(second);
                if let Some(inc) = self.detector.open().cloned() {
                    self.update(&inc);
                }
            }
            None => {
                // Kept for the hold time, so an incident's record starts with the
                // flood's first second.
                self.pending.push(second);
                let hold = self.settings.lock().expect("not poisoned").thresholds.hold;
                let keep = hold.as_secs() as usize + 1;
                if self.pending.len() > keep {
                    self.pending.drain(..self.pending.len() - keep);
                }
            }
        }
    }

    fn fold(&mut self, s: Second) {
        let Some(o) = &mut self.open else { return };
        o.rec.timeline.push_second(s.at_ms, s.pps);
        for (c, w) in &s.samples {
            o.profile.add(c, *w);
            if o.rec.pcap_frames >= PCAP_MAX_FRAMES {
                o.rec.pcap_skipped += 1;
                continue;
            }
            if let Some(p) = &mut o.pcap {
                match p.write(c.unix_ns, c.sample.frame_len, c.bytes()) {
                    Ok(()) => o.rec.pcap_frames += 1,
                    Err(e) => {
                        tracing::warn!(
                            interface = self.iface.as_str(),
                            "writing the incident's pcap failed, no more samples go to it: {e}"
                        );
                        o.pcap = None;
                    }
                }
            }
        }
    }

    fn open_pcap(&self, id: &str, append: bool) -> Option<PcapWriter<BufWriter<File>>> {
        let path = self.store.pcap_path(id);
        let result = (|| -> std::io::Result<PcapWriter<BufWriter<File>>> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let exists = append && path.metadata().is_ok_and(|m| m.len() > 0);
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            let w = BufWriter::new(f);
            if exists { Ok(PcapWriter::resume(w)) } else { PcapWriter::new(w, SAMPLE_BYTES as u32) }
        })();
        match result {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(interface = self.iface.as_str(), path = %path.display(), "the incident's pcap cannot be written: {e}");
                None
            }
        }
    }

    fn opened(&mut self, inc: &Incident) {
        let settings = self.settings.lock().expect("not poisoned").clone();
        let id = self.store.unique_id(inc.start_ms, &self.iface);
        let rec = IncidentRecord {
            version: RECORD_VERSION,
            id: id.clone(),
            interface: self.iface.clone(),
            hostname: hostname(),
            state: State::Open,
            started_ms: inc.start_ms,
            ended_ms: None,
            thresholds: settings.thresholds.describe(),
            crossed: inc.crossed.clone(),
            peak_pps: inc.peak_pps,
            peak_bps: inc.peak_bps,
            totals: Default::default(),
            timeline: Timeline::default(),
            profile: Default::default(),
            actions: Vec::new(),
            pcap: None,
            pcap_frames: 0,
            pcap_skipped: 0,
            counted_to: None,
        };
        let pcap = self.open_pcap(&id, false);
        self.open = Some(Open { rec, profile: Builder::default(), pcap, saved: Instant::now() });
        if let Some(o) = &mut self.open
            && o.pcap.is_some()
        {
            o.rec.pcap = Some(
                self.store
                    .pcap_path(&id)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        for s in std::mem::take(&mut self.pending) {
            self.fold(s);
        }
        self.update(inc);
        let rec = &self.open.as_ref().expect("just opened").rec;
        tracing::warn!(
            interface = self.iface.as_str(),
            id = id.as_str(),
            crossed = inc.crossed.join(",").as_str(),
            peak_pps = inc.peak_pps,
            top_prefix = rec
                .profile
                .prefixes_v4
                .first()
                .or(rec.profile.prefixes_v6.first())
                .map_or("", |t| t.key.as_str()),
            "incident opened"
        );
        self.act(Event::Open, &settings);
        self.save(true);
    }

    fn closed(&mut self, inc: &Incident) {
        self.update(inc);
        let settings = self.settings.lock().expect("not poisoned").clone();
        if let Some(o) = &mut self.open {
            o.rec.state = State::Closed;
            o.rec.ended_ms = Some(inc.last_over_ms);
            tracing::warn!(
                interface = self.iface.as_str(),
                id = o.rec.id.as_str(),
                seconds = (inc.last_over_ms.saturating_sub(inc.start_ms)) / 1000,
                dropped = o.rec.dropped(),
                "incident closed"
            );
        }
        self.act(Event::Close, &settings);
        self.save(true);
        if let Some(mut o) = self.open.take()
            && let Some(p) = &mut o.pcap
        {
            let _ = p.flush();
        }
        match self.store.prune() {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(removed = gone.join(",").as_str(), "old incidents pruned")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("pruning old incidents failed: {e}"),
        }
    }

    /// The record follows the detector's totals and peaks, and the profile so far.
    fn update(&mut self, inc: &Incident) {
        let Some(o) = &mut self.open else { return };
        o.rec.peak_pps = inc.peak_pps;
        o.rec.peak_bps = inc.peak_bps;
        o.rec.crossed = inc.crossed.clone();
        o.rec.totals = Reason::ALL
            .iter()
            .filter(|r| inc.packets[**r as usize] > 0)
            .map(|r| {
                (
                    r.key().to_string(),
                    Totals { packets: inc.packets[*r as usize], bytes: inc.bytes[*r as usize] },
                )
            })
            .collect();
        o.rec.profile = o.profile.profile();
        if o.saved.elapsed() >= SAVE_EVERY {
            self.save(false);
        }
    }

    fn save(&mut self, now: bool) {
        let Some(o) = &mut self.open else { return };
        if !now && o.saved.elapsed() < SAVE_EVERY {
            return;
        }
        if let Some(p) = &mut o.pcap {
            let _ = p.flush();
        }
        o.saved = Instant::now();
        if let Err(e) = self.store.save(&o.rec) {
            tracing::error!(interface = self.iface.as_str(), "saving the incident's record failed: {e}");
        }
    }

    /// Starts the actions of `event`; their results come back through `reports`.
    fn act(&mut self, event: Event, settings: &Incidents) {
        let Some(o) = &self.open else { return };
        let rec = o.rec.clone();
        let id = rec.id.clone();
        self.escalate(matches!(event, Event::Open), &id, settings);
        if let Some(argv) = settings.hook.clone() {
            let (report, rec, id) = (self.reports.0.clone(), rec.clone(), id.clone());
            self.rt.spawn(async move {
                let a = actions::run_hook(&argv, event, &rec, ACTION_TIMEOUT).await;
                let _ = report.send((id, a));
            });
        }
        if let Some(url) = settings.webhook.clone() {
            let (report, client) = (self.reports.0.clone(), self.http.clone());
            self.rt.spawn(async move {
                let a = actions::post_webhook(&client, &url, event, &rec, ACTION_TIMEOUT).await;
                let _ = report.send((id, a));
            });
        }
    }

    /// Asks the controller to engage (`on`) or undo the escalations of incident `id`.
    fn escalate(&self, on: bool, id: &str, settings: &Incidents) {
        let esc = &settings.escalate;
        if esc.syn_cookies.is_none() && esc.policy.is_none() && esc.limits.is_none() {
            return;
        }
        let msg = Msg::Escalate {
            iface: self.iface.clone(),
            on,
            id: id.to_string(),
            report: self.reports.0.clone(),
        };
        if self.tx.blocking_send(msg).is_err() {
            tracing::error!(interface = self.iface.as_str(), "the controller is gone: no escalation");
        }
    }

    /// Files the actions that finished into their incidents' records.
    fn collect_reports(&mut self) {
        while let Ok((id, action)) = self.reports.1.try_recv() {
            if action.ok {
                tracing::info!(
                    interface = self.iface.as_str(),
                    id = id.as_str(),
                    what = action.what.as_str(),
                    "{}",
                    action.detail
                );
            } else {
                tracing::warn!(
                    interface = self.iface.as_str(),
                    id = id.as_str(),
                    what = action.what.as_str(),
                    "failed: {}",
                    action.detail
                );
            }
            match &mut self.open {
                Some(o) if o.rec.id == id => {
                    o.rec.actions.push(action);
                    self.save(true);
                }
                _ => match self.store.load(&id) {
                    Ok(mut rec) => {
                        rec.actions.push(action);
                        if let Err(e) = self.store.save(&rec) {
                            tracing::error!(id = id.as_str(), "saving the incident's record failed: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::error!(id = id.as_str(), "filing an action into its incident failed: {e}")
                    }
                },
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

fn is_syn(c: &Captured) -> bool {
    let d = decode(c.bytes());
    d.proto == Some(6) && d.tcp_flags.is_some_and(|f| f & 0x12 == 0x02)
}
