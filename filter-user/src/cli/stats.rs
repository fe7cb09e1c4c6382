//! `stats`: what the filter passed and dropped, once or every interval.

use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use filter_common::{Reason, limit::Event};
use floodgate::{
    duration::{MAX_DURATION, format_exact, parse_within},
    limits::LimiterMaps,
    stats::Totals,
};
use serde::Serialize;

use super::{
    Shown,
    output::{Count, Report, emit, grouped, mode_name, table},
    session::Session,
};

/// What the filter passed and dropped: packets and bytes per reason.
///
/// Totals since attach. With --watch, refresh every interval with per-second rates until Ctrl-C (with
/// --json: one JSON object per line and interval, with "rates").
///
/// Example: floodgate stats --watch 1s
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub shown: Shown,
    /// Refresh every DURATION (at least 100ms, e.g. 1s or 500ms) with per-second rates.
    #[arg(long, value_name = "DURATION", value_parser = parse_watch)]
    pub watch: Option<Duration>,
}

fn parse_watch(s: &str) -> Result<Duration, floodgate::duration::BadDuration> {
    parse_within(s, Duration::from_millis(100), MAX_DURATION)
}

/// Limiter events since attach.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Limiter {
    ban_map_full: u64,
    heavy_map_full: u64,
}

/// The SYN-cookie counters, and the nftables SYNPROXY rule's (ACKs that completed or
/// failed a cookie handshake; present, possibly null, only while SYN cookies are on).
#[derive(Debug, Default, Serialize)]
struct SynProxyCounts {
    #[serde(flatten)]
    reasons: BTreeMap<&'static str, Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    synproxy_rule: Option<Option<Count>>,
}

/// Packets and bits per second of one reason over the last interval.
#[derive(Clone, Copy, Debug, Serialize)]
struct Rate {
    pps: f64,
    bps: f64,
}

/// `stats --json`: totals since attach; `dropped` groups the reasons that drop.
#[derive(Debug, Serialize)]
struct StatsReport {
    interface: String,
    mode: &'static str,
    auto_bans: u64,
    limiter: Limiter,
    /// Reasons that pass, by key, at the top level.
    #[serde(flatten)]
    passing: BTreeMap<&'static str, Count>,
    synproxy: SynProxyCounts,
    dropped: BTreeMap<&'static str, Count>,
    /// What checks in observe mode would have dropped, by reason, each check on its
    /// own (those frames were passed, or dropped by a later, enforcing check).
    would_drop: BTreeMap<&'static str, Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rates: Option<BTreeMap<&'static str, Rate>>,
    /// Per-second rates of `would_drop` over the last interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    would_drop_rates: Option<BTreeMap<&'static str, Rate>>,
    /// The watch interval, for the text header.
    #[serde(skip)]
    every: Option<Duration>,
}

fn is_synproxy(r: Reason) -> bool {
    r == Reason::SynProxy || r == Reason::AckRepaired
}

impl StatsReport {
    fn new(
        iface: &str,
        mode: u32,
        (t, would): (&Totals, &Totals),
        limiter: &LimiterMaps,
    ) -> anyhow::Result<Self> {
        let mut report = StatsReport {
            interface: iface.to_string(),
            mode: mode_name(mode),
            auto_bans: limiter.event(Event::AutoBan)?,
            limiter: Limiter {
                ban_map_full: limiter.event(Event::BanMapFull)?,
                heavy_map_full: limiter.event(Event::HeavyMapFull)?,
            },
            passing: BTreeMap::new(),
            synproxy: SynProxyCounts::default(),
            dropped: BTreeMap::new(),
            would_drop: Reason::OBSERVABLE.iter().map(|r| (r.key(), would.get(*r).into())).collect(),
            rates: None,
            would_drop_rates: None,
            every: None,
        };
        for r in Reason::ALL {
            let group = if is_synproxy(r) {
                &mut report.synproxy.reasons
            } else if r.drops() {
                &mut report.dropped
            } else {
                &mut report.passing
            };
            group.insert(r.key(), t.get(r).into());
        }
        Ok(report)
    }

    fn count(&self, r: Reason) -> Count {
        let group = if is_synproxy(r) {
            &self.synproxy.reasons
        } else if r.drops() {
            &self.dropped
        } else {
            &self.passing
        };
        group.get(r.key()).copied().unwrap_or(Count { packets: 0, bytes: 0 })
    }

    /// The observed reasons that counted anything, for the text output.
    fn observed(&self) -> impl Iterator<Item = (Reason, Count)> + '_ {
        Reason::OBSERVABLE.into_iter().filter_map(|r| {
            let c = self.would_drop.get(r.key()).copied()?;
            (c.packets != 0).then_some((r, c))
        })
    }
}

fn rates(d: &Totals, secs: f64, reasons: &[Reason]) -> BTreeMap<&'static str, Rate> {
    reasons
        .iter()
        .map(|r| {
            let c = d.get(*r);
            (r.key(), Rate { pps: c.packets as f64 / secs, bps: c.bytes as f64 * 8.0 / secs })
        })
        .collect()
}

fn label(r: Reason) -> String {
    if r.drops() { format!("dropped:{}", r.key()) } else { r.key().to_string() }
}

impl Report for StatsReport {
    fn text(&self) -> String {
        let Some(rates) = &self.rates else {
            let mut t = table(&["reason", "packets", "bytes"], 1);
            for r in Reason::ALL {
                let c = self.count(r);
                t.add_row(vec![label(r), grouped(c.packets), grouped(c.bytes)]);
            }
            for (r, c) in self.observed() {
                t.add_row(vec![format!("would_drop:{}", r.key()), grouped(c.packets), grouped(c.bytes)]);
            }
            return format!(
                "floodgate on {} ({} mode), totals since attach\n{t}\n",
                self.interface, self.mode
            );
        };
        let every = self.every.map(format_exact).unwrap_or_default();
        let mut t = table(&["reason", "packets/s", "Mbit/s", "packets", "bytes"], 1);
        for r in Reason::ALL {
            let (c, rate) =
                (self.count(r), rates.get(r.key()).copied().unwrap_or(Rate { pps: 0.0, bps: 0.0 }));
            t.add_row(vec![
                label(r),
                grouped(rate.pps.round() as u64),
                format!("{:.2}", rate.bps / 1e6),
                grouped(c.packets),
                grouped(c.bytes),
            ]);
        }
        let would_rates = self.would_drop_rates.as_ref();
        for (r, c) in self.observed() {
            let rate =
                would_rates.and_then(|w| w.get(r.key()).copied()).unwrap_or(Rate { pps: 0.0, bps: 0.0 });
            t.add_row(vec![
                format!("would_drop:{}", r.key()),
                grouped(rate.pps.round() as u64),
                format!("{:.2}", rate.bps / 1e6),
                grouped(c.packets),
                grouped(c.bytes),
            ]);
        }
        format!("floodgate on {} ({} mode), every {every}; Ctrl-C to stop\n{t}\n", self.interface, self.mode)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut s = Session::read(args.shown.target.name())?;
    let meta = s.core()?.read()?;
    let (counters, limiter, synproxy) = (s.counters()?, s.limiter()?, s.synproxy()?);
    let p = &s.pins;
    let read = || -> anyhow::Result<(Totals, Totals)> {
        let what = || format!("reading the counters of {}", p.iface);
        Ok((counters.totals().with_context(what)?, counters.would_drop().with_context(what)?))
    };
    let Some(every) = args.watch else {
        let (t, w) = read()?;
        let mut report = StatsReport::new(&p.iface, meta.mode, (&t, &w), &limiter)?;
        if args.shown.format.json && synproxy.synproxy_config()?.enabled != 0 {
            let rule = floodgate::synproxy::nft_counter().map(|(packets, bytes)| Count { packets, bytes });
            report.synproxy.synproxy_rule = Some(rule);
        }
        return emit(&report, args.shown.format.json);
    };
    let tty = std::io::stdout().is_terminal();
    let mut prev = read()?;
    let mut at = Instant::now();
    loop {
        std::thread::sleep(every);
        let now = read()?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let (d, dw) = (now.0.since(&prev.0), now.1.since(&prev.1));
        let mut report = StatsReport::new(&p.iface, meta.mode, (&now.0, &now.1), &limiter)?;
        prev = now;
        report.every = Some(every);
        report.rates = Some(rates(&d, secs, &Reason::ALL));
        report.would_drop_rates = Some(rates(&dw, secs, &Reason::OBSERVABLE));
        let mut out = std::io::stdout().lock();
        if args.shown.format.json {
            writeln!(out, "{}", serde_json::to_string(&report)?)?;
        } else {
            if tty {
                write!(out, "\x1b[H\x1b[2J")?;
            }
            write!(out, "{}", report.text())?;
            if !tty {
                writeln!(out)?;
            }
        }
        out.flush()?;
    }
}
