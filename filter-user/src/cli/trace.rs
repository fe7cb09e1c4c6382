//! `trace`: every frame from some sources, with its verdict, as it happens.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use filter_common::cidr::parse_cidr;
use floodgate::{
    duration::{BadDuration, parse_within},
    sampler::{Captured, TapSettings, decode::decode},
};
use ipnet::IpNet;
use serde::Serialize;

use super::{Format, Target, tap::AdhocTap};

/// Print the verdict of every frame from these sources, live.
///
/// For "you are blocking me": shows each frame the named addresses or prefixes send
/// (up to --max-pps a second), with what floodgate decided and why, until Ctrl-C,
/// --count or --seconds. Tracing adds no cost to other sources' frames beyond one
/// lookup while it runs, and none once it stops. One capture or trace per interface
/// at a time.
///
/// Examples:
///   floodgate trace 198.51.100.23
///   floodgate trace 203.0.113.0/24 2001:db8:1::/48 --count 20 --json
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub format: Format,
    /// Addresses or CIDR prefixes (at most 256 per address family).
    #[arg(value_name = "ADDR_OR_CIDR", required = true, value_parser = parse_net)]
    pub sources: Vec<IpNet>,
    /// Stop after this many frames.
    #[arg(short = 'c', long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this long (DURATION, up to 1d).
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    pub seconds: Option<Duration>,
    /// Frames per second shown at most, over all CPUs (1 to 100000).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_pps: u32,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    parse_cidr(s).map_err(|e| e.to_string())
}

fn parse_seconds(s: &str) -> Result<Duration, BadDuration> {
    parse_within(s, Duration::from_millis(100), Duration::from_secs(86_400))
}

/// One line of `trace --json`.
#[derive(Serialize)]
struct Line {
    unix_ms: u64,
    src: Option<String>,
    dst: Option<String>,
    proto: &'static str,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    len: u32,
    reason: &'static str,
    dropped: bool,
    /// What a check in observe mode would have dropped it for (it was passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    would_drop: Option<&'static str>,
}

impl Line {
    fn of(c: &Captured) -> Line {
        let d = decode(c.bytes());
        let reason = c.reason();
        Line {
            unix_ms: c.unix_ns / 1_000_000,
            src: d.src.map(|a| a.to_string()),
            dst: d.dst.map(|a| a.to_string()),
            proto: d.proto_name(),
            src_port: d.src_port,
            dst_port: d.dst_port,
            len: c.sample.frame_len,
            reason: reason.map_or("unknown", |r| r.key()),
            dropped: reason.is_some_and(|r| r.drops()),
            would_drop: c.sample.would_drop().map(|r| r.key()),
        }
    }

    fn text(&self) -> String {
        let at =
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(self.unix_ms));
        let end = |a: &Option<String>, p: Option<u16>| match (a, p) {
            (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (Some(a), None) => a.clone(),
            (None, _) => "?".into(),
        };
        let would = self.would_drop.map_or(String::new(), |r| format!(", observe mode would drop: {r}"));
        format!(
            "{at} {} > {} {} {} bytes: {} ({}{would})",
            end(&self.src, self.src_port),
            end(&self.dst, self.dst_port),
            self.proto,
            self.len,
            self.reason,
            if self.dropped { "dropped" } else { "passed" }
        )
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let settings = TapSettings { every: 0, reasons: Vec::new(), max_pps: a.max_pps, trace: true };
    let mut tap = AdhocTap::start(a.target.name(), &settings, &a.sources)?;
    let names: Vec<String> = a.sources.iter().map(ToString::to_string).collect();
    eprintln!("tracing {} on {} (Ctrl-C stops)", names.join(" "), tap.iface);
    let deadline = a.seconds.map(|s| Instant::now() + s);
    let mut n = 0u64;
    tap.run(deadline, |c| {
        let line = Line::of(c);
        if a.format.json {
            println!("{}", serde_json::to_string(&line).context("writing JSON")?);
        } else {
            println!("{}", line.text());
        }
        n += 1;
        Ok(a.count.is_none_or(|max| n < max))
    })?;
    let (capped, lost) = tap.missed();
    if capped + lost > 0 {
        eprintln!("not shown: {capped} frames over --max-pps, {lost} with the ring buffer full");
    }
    Ok(())
}
