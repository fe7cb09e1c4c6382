//! `top`: the heaviest sources the rate limiter sees right now.

use std::{collections::HashMap, time::Duration};

use anyhow::bail;
use filter_common::limit::SourceKey;
use floodgate::{
    duration::{BadDuration, format_exact, parse_within},
    limits::{Tracked, key_cidr},
};
use serde::Serialize;

use super::{
    Shown,
    output::{Report, emit, grouped, table},
    session::Session,
};

/// The heaviest sources right now, with their rates.
///
/// Shows what the limiter passed and dropped of each source. Needs limits set (`floodgate limit set`); sources are grouped as
/// the limits say (--v4-prefix, --v6-prefix).
///
/// Example: floodgate top -n 20 --interval 2s
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub shown: Shown,
    /// How many sources to show.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10)]
    pub count: usize,
    /// Time between the two samples the rates come from (DURATION, 100ms to 1m).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
}

fn parse_interval(s: &str) -> Result<Duration, BadDuration> {
    parse_within(s, Duration::from_millis(100), Duration::from_secs(60))
}

/// One source of `top --json`.
#[derive(Serialize)]
struct Source {
    source: String,
    pps: f64,
    passed_pps: f64,
    dropped_pps: f64,
    passed: u64,
    dropped: u64,
    over_limit: bool,
}

#[derive(Serialize)]
#[serde(transparent)]
struct TopReport {
    sources: Vec<Source>,
    #[serde(skip)]
    interval: Duration,
    /// Limits in observe mode: the "dropped" counts are what they would drop.
    #[serde(skip)]
    observe: bool,
}

impl Report for TopReport {
    fn text(&self) -> String {
        let (per_sec, total) =
            if self.observe { ("would drop/s", "would drop") } else { ("dropped/s", "dropped") };
        let mut t = table(&["source", "packets/s", per_sec, "passed", total, "state"], 1);
        if let Some(c) = t.column_mut(5) {
            c.set_cell_alignment(comfy_table::CellAlignment::Left);
        }
        for s in &self.sources {
            t.add_row(vec![
                s.source.clone(),
                grouped(s.pps.round() as u64),
                grouped(s.dropped_pps.round() as u64),
                grouped(s.passed),
                grouped(s.dropped),
                (if s.over_limit { "over limit" } else { "" }).to_string(),
            ]);
        }
        let mut out = String::new();
        if self.observe {
            out.push_str(
                "limits in observe mode: nothing is dropped; the drop columns say what they would drop\n",
            );
        }
        out.push_str(&format!("{t}\n"));
        if self.sources.is_empty() {
            out.push_str(&format!(
                "(no traffic from tracked sources in the last {})\n",
                format_exact(self.interval)
            ));
        }
        out
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut s = Session::read(args.shown.target.name())?;
    let limiter = s.limiter()?;
    let cfg = limiter.limits()?;
    if cfg.enabled == 0 {
        bail!(
            "no limits are set on {}: the limiter tracks no sources (see `floodgate limit set`)",
            s.pins.iface
        );
    }
    let before: HashMap<SourceKey, Tracked> = limiter.tracked().into_iter().map(|t| (t.key, t)).collect();
    std::thread::sleep(args.interval);
    let secs = args.interval.as_secs_f64();
    let mut sources: Vec<Source> = limiter
        .tracked()
        .into_iter()
        .map(|t| {
            let (p0, d0) = before.get(&t.key).map(|b| (b.state.passed, b.state.dropped)).unwrap_or((0, 0));
            let passed_pps = t.state.passed.saturating_sub(p0) as f64 / secs;
            let dropped_pps = t.state.dropped.saturating_sub(d0) as f64 / secs;
            Source {
                source: key_cidr(&t.key),
                pps: passed_pps + dropped_pps,
                passed_pps,
                dropped_pps,
                passed: t.state.passed,
                dropped: t.state.dropped,
                over_limit: t.over_limit,
            }
        })
        .filter(|s| s.pps > 0.0)
        .collect();
    sources.sort_by(|a, b| b.pps.total_cmp(&a.pps));
    sources.truncate(args.count);
    emit(&TopReport { sources, interval: args.interval, observe: cfg.observe != 0 }, args.shown.format.json)
}
