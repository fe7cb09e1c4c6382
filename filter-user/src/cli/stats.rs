use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use filter_common::{Reason, limit::Event};
use floodgate::{limits::LimiterMaps, stats::Totals};
use serde_json::{Value, json};

use super::{
    output::{counter_json, grouped, mode_name, print_json},
    session::Session,
};

/// Show what the filter passed and dropped: packets and bytes per reason since attach.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// One JSON object (with --watch: one JSON object per line and interval, with rates).
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECONDS with per-second rates, until Ctrl-C.
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<f64>,
}

/// Limiter events since attach.
#[derive(Clone, Copy, Debug, Default)]
pub struct Events {
    pub auto_bans: u64,
    pub ban_map_full: u64,
    pub heavy_map_full: u64,
}

fn events(maps: &LimiterMaps) -> anyhow::Result<Events> {
    Ok(Events {
        auto_bans: maps.event(Event::AutoBan)?,
        ban_map_full: maps.event(Event::BanMapFull)?,
        heavy_map_full: maps.event(Event::HeavyMapFull)?,
    })
}

/// `stats --json`: totals since attach; `dropped` groups the reasons that drop.
pub fn stats_json(iface: &str, mode: u32, t: &Totals, e: &Events) -> Value {
    let mut v = json!({
        "interface": iface,
        "mode": mode_name(mode),
        "auto_bans": e.auto_bans,
        "limiter": { "ban_map_full": e.ban_map_full, "heavy_map_full": e.heavy_map_full },
    });
    let mut dropped = serde_json::Map::new();
    for r in Reason::ALL {
        if r == Reason::SynProxy || r == Reason::AckRepaired {
            v["synproxy"][r.key()] = counter_json(t.get(r));
        } else if r.drops() {
            dropped.insert(r.key().to_string(), counter_json(t.get(r)));
        } else {
            v[r.key()] = counter_json(t.get(r));
        }
    }
    v["dropped"] = Value::Object(dropped);
    v
}

fn label(r: Reason) -> String {
    if r.drops() { format!("dropped:{}", r.key()) } else { r.key().to_string() }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut s = Session::read(args.interface.as_deref())?;
    let meta = s.core()?.read()?;
    let (counters, limiter, synproxy) = (s.counters()?, s.limiter()?, s.synproxy()?);
    let p = &s.pins;
    let read = || counters.totals().with_context(|| format!("reading the counters of {}", p.iface));
    let Some(every) = args.watch else {
        let t = read()?;
        let e = events(&limiter)?;
        if args.json {
            let mut v = stats_json(&p.iface, meta.mode, &t, &e);
            // The SYNPROXY rule's counters: ACKs that completed (or failed) a cookie
            // handshake; absent while SYN cookies are off.
            if synproxy.synproxy_config()?.enabled != 0 {
                let rule = floodgate::synproxy::nft_counter();
                v["synproxy"]["synproxy_rule"] =
                    rule.map_or(Value::Null, |(p, b)| json!({ "packets": p, "bytes": b }));
            }
            return print_json(&v);
        }
        println!("floodgate on {} ({} mode), totals since attach", p.iface, mode_name(meta.mode));
        println!("{:<20} {:>16} {:>18}", "reason", "packets", "bytes");
        for r in Reason::ALL {
            let c = t.get(r);
            println!("{:<20} {:>16} {:>18}", label(r), grouped(c.packets), grouped(c.bytes));
        }
        return Ok(());
    };
    if !(every.is_finite() && every >= 0.1) {
        bail!("--watch needs an interval of at least 0.1 seconds, not {every}");
    }
    let tty = std::io::stdout().is_terminal();
    let mut prev = read()?;
    let mut at = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs_f64(every));
        let now = read()?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let d = now.since(&prev);
        prev = now;
        let mut out = std::io::stdout().lock();
        if args.json {
            let mut v = stats_json(&p.iface, meta.mode, &now, &events(&limiter)?);
            let rates: serde_json::Map<String, Value> = Reason::ALL
                .iter()
                .map(|r| (r.key().to_string(), json!({ "pps": d.get(*r).packets as f64 / secs, "bps": d.get(*r).bytes as f64 * 8.0 / secs })))
                .collect();
            v["rates"] = Value::Object(rates);
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
        } else {
            if tty {
                write!(out, "\x1b[H\x1b[2J")?;
            }
            writeln!(
                out,
                "floodgate on {} ({} mode), every {every}s; Ctrl-C to stop",
                p.iface,
                mode_name(meta.mode)
            )?;
            writeln!(
                out,
                "{:<20} {:>12} {:>10} {:>16} {:>18}",
                "reason", "packets/s", "Mbit/s", "packets", "bytes"
            )?;
            for r in Reason::ALL {
                let (c, dc) = (now.get(r), d.get(r));
                writeln!(
                    out,
                    "{:<20} {:>12} {:>10.2} {:>16} {:>18}",
                    label(r),
                    grouped((dc.packets as f64 / secs).round() as u64),
                    dc.bytes as f64 * 8.0 / secs / 1e6,
                    grouped(c.packets),
                    grouped(c.bytes)
                )?;
            }
            if !tty {
                writeln!(out)?;
            }
        }
        out.flush()?;
    }
}
