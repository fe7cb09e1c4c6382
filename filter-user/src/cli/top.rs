//! `top`: the heaviest sources the rate limiter sees right now.

use std::{collections::HashMap, time::Duration};

use anyhow::bail;
use filter_common::limit::SourceKey;
use floodgate::limits::{Tracked, key_cidr};
use serde_json::{Value, json};

use super::{
    output::{grouped, print_json},
    session::Session,
};

/// Show the heaviest current sources: their rate, and what the limiter passed and
/// dropped of them. Needs limits set (`floodgate limit set`); sources are grouped as
/// the limits say (--v4-prefix, --v6-prefix).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// How many sources to show.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub count: usize,
    /// Seconds between the two samples the rates come from.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(args.interval.is_finite() && args.interval >= 0.1 && args.interval <= 60.0) {
        bail!("--interval must be between 0.1 and 60 seconds, not {}", args.interval);
    }
    let mut s = Session::read(args.interface.as_deref())?;
    let limiter = s.limiter()?;
    let cfg = limiter.limits()?;
    if cfg.enabled == 0 {
        bail!(
            "no limits are set on {}: the limiter tracks no sources (see `floodgate limit set`)",
            s.pins.iface
        );
    }
    let before: HashMap<SourceKey, Tracked> = limiter.tracked().into_iter().map(|t| (t.key, t)).collect();
    std::thread::sleep(Duration::from_secs_f64(args.interval));
    let mut rows: Vec<(Tracked, f64, f64)> = limiter
        .tracked()
        .into_iter()
        .map(|t| {
            let (p0, d0) = before.get(&t.key).map(|b| (b.state.passed, b.state.dropped)).unwrap_or((0, 0));
            let pps = t.state.passed.saturating_sub(p0) as f64 / args.interval;
            let dps = t.state.dropped.saturating_sub(d0) as f64 / args.interval;
            (t, pps, dps)
        })
        .filter(|(_, p, d)| p + d > 0.0)
        .collect();
    rows.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
    rows.truncate(args.count);
    if args.json {
        let items: Vec<Value> = rows
            .iter()
            .map(|(t, pps, dps)| {
                json!({
                    "source": key_cidr(&t.key),
                    "pps": pps + dps,
                    "passed_pps": pps,
                    "dropped_pps": dps,
                    "passed": t.state.passed,
                    "dropped": t.state.dropped,
                    "over_limit": t.over_limit,
                })
            })
            .collect();
        return print_json(&Value::Array(items));
    }
    println!(
        "{:<44} {:>12} {:>12} {:>14} {:>14}  state",
        "source", "packets/s", "dropped/s", "passed", "dropped"
    );
    for (t, pps, dps) in &rows {
        println!(
            "{:<44} {:>12} {:>12} {:>14} {:>14}  {}",
            key_cidr(&t.key),
            grouped((pps + dps).round() as u64),
            grouped(dps.round() as u64),
            grouped(t.state.passed),
            grouped(t.state.dropped),
            if t.over_limit { "over limit" } else { "" }
        );
    }
    if rows.is_empty() {
        println!("(no traffic from tracked sources in the last {}s)", args.interval);
    }
    Ok(())
}
