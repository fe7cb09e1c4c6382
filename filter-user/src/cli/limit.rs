//! `limit set|show|clear`: the per-source rate limiter.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use filter_common::limit::{Bucket, LimitConfig};
use floodgate::duration::{format_duration, nanos, parse_duration};
use serde_json::{Value, json};

use super::{output::print_json, session::Session};

#[derive(Subcommand, Debug)]
pub enum LimitCommand {
    /// Set per-source limits; they replace the current ones for the next packet.
    ///
    /// Each source (IPv4 aggregated to --v4-prefix, IPv6 to --v6-prefix) gets token
    /// buckets: packets past its rate are dropped in the driver and counted as
    /// dropped.rate_limit; TCP SYNs past --syn-pps or the --global-syn-pps budget as
    /// dropped.syn_limit. Allowlisted and blocklisted sources never reach the limiter.
    /// With --ban-after, a source that stays over its limit that long is banned
    /// (dropped outright, listed by `blocklist list`) for --ban-for.
    Set(SetArgs),
    /// Show the limits in force.
    Show {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove all limits, and the bans they made.
    Clear {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    #[arg(short, long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Packets per second per source.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub pps: Option<u64>,
    /// Packets a source may send at once above its rate [default: pps/10, at least 10].
    #[arg(long, value_name = "N", requires = "pps", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub burst: Option<u64>,
    /// Bits per second per source (bursts of 100 ms of traffic, at least 10 full-size
    /// packets).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(8..=1_000_000_000_000))]
    pub bps: Option<u64>,
    /// Prefix length IPv4 sources are grouped by (32: each address on its own).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub v4_prefix: u32,
    /// Prefix length IPv6 sources are grouped by (64: a typical customer subnet).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=128))]
    pub v6_prefix: u32,
    /// TCP SYNs per second per source (bursts of syn-pps/10, at least 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub syn_pps: Option<u64>,
    /// TCP SYNs per second over all sources together: the backstop against SYN floods
    /// from random spoofed sources, which no per-source limit sees.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub global_syn_pps: Option<u64>,
    /// Ban a source that stays over its limit this long (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "ban_for")]
    pub ban_after: Option<Duration>,
    /// How long an auto-ban lasts (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "ban_after")]
    pub ban_for: Option<Duration>,
}

/// The configuration `set` installs.
pub fn config(a: &SetArgs) -> anyhow::Result<LimitConfig> {
    if a.pps.is_none() && a.bps.is_none() && a.syn_pps.is_none() && a.global_syn_pps.is_none() {
        bail!("give at least one of --pps, --bps, --syn-pps, --global-syn-pps (or use `limit clear`)");
    }
    let packets =
        a.pps.map(|r| Bucket::per_second(r, a.burst.unwrap_or((r / 10).max(10)))).unwrap_or_default();
    let bytes = a
        .bps
        .map(|bits| {
            let bytes = (bits / 8).max(1);
            Bucket::bytes_per_second(bytes, (bytes / 10).max(15_000))
        })
        .unwrap_or_default();
    let syn = a.syn_pps.map(|r| Bucket::per_second(r, (r / 10).max(5))).unwrap_or_default();
    let global_syn = a.global_syn_pps.map(|r| Bucket::per_second(r, (r / 10).max(5))).unwrap_or_default();
    Ok(LimitConfig {
        enabled: 1,
        v4_prefix: a.v4_prefix,
        v6_prefix: a.v6_prefix,
        _pad: 0,
        packets,
        bytes,
        syn,
        global_syn,
        ban_after_ns: a.ban_after.map(nanos).unwrap_or(0),
        ban_for_ns: a.ban_for.map(nanos).unwrap_or(0),
        given: [
            a.pps.unwrap_or(0),
            a.bps.unwrap_or(0),
            a.syn_pps.unwrap_or(0),
            a.global_syn_pps.unwrap_or(0),
        ],
        epoch: 0, // set_limits assigns the next epoch
    })
}

/// Rate (as given) and burst of a packet bucket.
fn rate_burst(b: &Bucket, given: u64) -> Option<(u64, u64)> {
    b.enabled().then(|| (given, b.tolerance / b.cost + 1))
}

pub fn describe(cfg: &LimitConfig) -> Value {
    if cfg.enabled == 0 {
        return json!({ "enabled": false });
    }
    let bucket = |b: &Bucket, given: u64| match rate_burst(b, given) {
        Some((rate, burst)) => json!({ "per_second": rate, "burst": burst }),
        None => Value::Null,
    };
    let bps = cfg.bytes.enabled().then(|| json!({ "bits_per_second": cfg.given[1] }));
    let ban = (cfg.ban_after_ns != 0).then(|| {
        json!({ "after_seconds": cfg.ban_after_ns as f64 / 1e9, "for_seconds": cfg.ban_for_ns as f64 / 1e9 })
    });
    json!({
        "enabled": true,
        "v4_prefix": cfg.v4_prefix,
        "v6_prefix": cfg.v6_prefix,
        "packets": bucket(&cfg.packets, cfg.given[0]),
        "bytes": bps,
        "syn": bucket(&cfg.syn, cfg.given[2]),
        "global_syn": bucket(&cfg.global_syn, cfg.given[3]),
        "auto_ban": ban,
    })
}

fn human(cfg: &LimitConfig) -> String {
    if cfg.enabled == 0 {
        return "no limits set".to_string();
    }
    let mut parts = vec![format!("sources grouped by IPv4 /{} and IPv6 /{}", cfg.v4_prefix, cfg.v6_prefix)];
    if let Some((r, b)) = rate_burst(&cfg.packets, cfg.given[0]) {
        parts.push(format!("{r} packets/s per source (burst {b})"));
    }
    if cfg.bytes.enabled() {
        parts.push(format!("{} bits/s per source", cfg.given[1]));
    }
    if let Some((r, b)) = rate_burst(&cfg.syn, cfg.given[2]) {
        parts.push(format!("{r} SYNs/s per source (burst {b})"));
    }
    if let Some((r, b)) = rate_burst(&cfg.global_syn, cfg.given[3]) {
        parts.push(format!("{r} SYNs/s in all (burst {b})"));
    }
    if cfg.ban_after_ns != 0 {
        parts.push(format!(
            "ban for {} after {} over the limit",
            format_duration(Duration::from_nanos(cfg.ban_for_ns)),
            format_duration(Duration::from_nanos(cfg.ban_after_ns))
        ));
    }
    parts.join("; ")
}

pub fn run(cmd: LimitCommand) -> anyhow::Result<()> {
    match cmd {
        LimitCommand::Set(a) => {
            let cfg = config(&a)?;
            let mut s = Session::locked(a.interface.as_deref())?;
            s.limiter()?.set_limits(&cfg).with_context(|| format!("setting limits on {}", s.pins.iface))?;
            println!("{}: {}", s.pins.iface, human(&cfg));
        }
        LimitCommand::Show { interface, json } => {
            let mut s = Session::read(interface.as_deref())?;
            let cfg = s.limiter()?.limits()?;
            if json {
                print_json(&describe(&cfg))?;
            } else {
                println!("{}: {}", s.pins.iface, human(&cfg));
            }
        }
        LimitCommand::Clear { interface } => {
            let mut s = Session::locked(interface.as_deref())?;
            let mut limiter = s.limiter()?;
            let mut off = limiter.limits()?;
            off.enabled = 0;
            off.ban_after_ns = 0;
            limiter.set_limits(&off)?;
            println!("{}: limits and auto-bans cleared", s.pins.iface);
        }
    }
    Ok(())
}
