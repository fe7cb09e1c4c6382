use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use filter_common::Reason;
use floodgate::{maps::FilterMaps, pins, stats::Totals};
use serde_json::{Value, json};

use super::output::{counter_json, grouped, mode_name, print_json};

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

/// `stats --json`: totals since attach; `dropped` groups the reasons that drop.
pub fn stats_json(iface: &str, mode: u32, t: &Totals) -> Value {
    let mut v = json!({ "interface": iface, "mode": mode_name(mode) });
    let mut dropped = serde_json::Map::new();
    for r in Reason::ALL {
        if r.drops() {
            dropped.insert(r.key().to_string(), counter_json(t.get(r)));
        } else {
            v[r.key()] = counter_json(t.get(r));
        }
    }
    v["dropped"] = Value::Object(dropped);
    v
}

fn label(r: Reason) -> String {
    if r.drops() {
        format!("dropped:{}", r.key())
    } else {
        r.key().to_string()
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let p = pins::resolve(args.interface.as_deref())?;
    let maps = FilterMaps::from_pins(&p.dir)?;
    let meta = maps.read_meta()?;
    let read = || {
        maps.totals()
            .with_context(|| format!("reading the counters of {}", p.iface))
    };
    let Some(every) = args.watch else {
        let t = read()?;
        if args.json {
            return print_json(&stats_json(&p.iface, meta.mode, &t));
        }
        println!(
            "floodgate on {} ({} mode), totals since attach",
            p.iface,
            mode_name(meta.mode)
        );
        println!("{:<20} {:>16} {:>18}", "reason", "packets", "bytes");
        for r in Reason::ALL {
            let c = t.get(r);
            println!(
                "{:<20} {:>16} {:>18}",
                label(r),
                grouped(c.packets),
                grouped(c.bytes)
            );
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
            let mut v = stats_json(&p.iface, meta.mode, &now);
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
