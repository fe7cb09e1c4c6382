//! `limit set|show|clear`: the per-source rate limiter.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use filter_common::limit::{Bucket, LimitConfig};
use floodgate::duration::{format_exact, parse_duration};
use floodgate::limits::{BPS_RANGE, BadLimits, DEFAULT_V4_PREFIX, DEFAULT_V6_PREFIX, LimitParams, PPS_RANGE};
use serde::Serialize;

use super::{
    Shown, Target,
    output::{Report, emit},
    session::Session,
};

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
    ///
    /// Example: floodgate limit set --pps 200 --syn-pps 20 --ban-after 30s --ban-for 10m
    Set(SetArgs),
    /// Remove all limits, and the bans they made.
    Clear {
        #[command(flatten)]
        target: Target,
    },
    /// Show the limits in force.
    Show(Shown),
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    #[command(flatten)]
    pub target: Target,
    /// Packets per second per source.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(PPS_RANGE))]
    pub pps: Option<u64>,
    /// Packets a source may send at once above its rate [default: pps/10, at least 10].
    #[arg(long, value_name = "N", requires = "pps", value_parser = clap::value_parser!(u64).range(PPS_RANGE))]
    pub burst: Option<u64>,
    /// Bits per second per source (bursts of 100 ms of traffic, at least 10 full-size
    /// packets).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(BPS_RANGE))]
    pub bps: Option<u64>,
    /// Prefix length IPv4 sources are grouped by (32: each address on its own).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_V4_PREFIX, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub v4_prefix: u32,
    /// Prefix length IPv6 sources are grouped by (64: a typical customer subnet).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_V6_PREFIX, value_parser = clap::value_parser!(u32).range(0..=128))]
    pub v6_prefix: u32,
    /// TCP SYNs per second per source (bursts of syn-pps/10, at least 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(PPS_RANGE))]
    pub syn_pps: Option<u64>,
    /// TCP SYNs per second over all sources together: the backstop against SYN floods
    /// from random spoofed sources, which no per-source limit sees.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(PPS_RANGE))]
    pub global_syn_pps: Option<u64>,
    /// Ban a source that stays over its limit this long (DURATION, e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "ban_for")]
    pub ban_after: Option<Duration>,
    /// How long an auto-ban lasts (DURATION, e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "ban_after")]
    pub ban_for: Option<Duration>,
    /// Dry run: count what the limits would drop (would_drop.rate_limit and
    /// would_drop.syn_limit in `floodgate stats`) and pass it; no auto-bans. Set them
    /// again without --observe to enforce.
    #[arg(long)]
    pub observe: bool,
}

/// The configuration `set` installs (clap checked the ranges, `build` checks again).
pub fn config(a: &SetArgs) -> anyhow::Result<LimitConfig> {
    let params = LimitParams {
        pps: a.pps,
        burst: a.burst,
        bps: a.bps,
        syn_pps: a.syn_pps,
        global_syn_pps: a.global_syn_pps,
        v4_prefix: a.v4_prefix,
        v6_prefix: a.v6_prefix,
        ban_after: a.ban_after,
        ban_for: a.ban_for,
        observe: a.observe,
    };
    match params.build() {
        Err(BadLimits::Nothing) => {
            bail!("give at least one of --pps, --bps, --syn-pps, --global-syn-pps (or use `limit clear`)")
        }
        r => Ok(r?),
    }
}

/// Rate (as given) and burst of a packet bucket.
fn rate_burst(b: &Bucket, given: u64) -> Option<(u64, u64)> {
    b.enabled().then(|| (given, b.tolerance / b.cost + 1))
}

/// A packet bucket as given: per-second rate and burst.
#[derive(Serialize)]
struct RateBurst {
    per_second: u64,
    burst: u64,
}

#[derive(Serialize)]
struct Bits {
    bits_per_second: u64,
}

#[derive(Serialize)]
struct AutoBan {
    after_secs: f64,
    for_secs: f64,
}

/// `limit show --json`: `{"enabled": false}` when no limits are set.
#[derive(Serialize)]
struct LimitReport {
    #[serde(skip)]
    iface: String,
    enabled: bool,
    /// Observe mode: what the limits would drop is counted and passed.
    observe: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    limits: Option<Limits>,
}

#[derive(Serialize)]
struct Limits {
    v4_prefix: u32,
    v6_prefix: u32,
    packets: Option<RateBurst>,
    bytes: Option<Bits>,
    syn: Option<RateBurst>,
    global_syn: Option<RateBurst>,
    auto_ban: Option<AutoBan>,
}

impl LimitReport {
    fn new(iface: &str, cfg: &LimitConfig) -> Self {
        let bucket = |b: &Bucket, given: u64| {
            rate_burst(b, given).map(|(per_second, burst)| RateBurst { per_second, burst })
        };
        let limits = (cfg.enabled != 0).then(|| Limits {
            v4_prefix: cfg.v4_prefix,
            v6_prefix: cfg.v6_prefix,
            packets: bucket(&cfg.packets, cfg.given[0]),
            bytes: cfg.bytes.enabled().then(|| Bits { bits_per_second: cfg.given[1] }),
            syn: bucket(&cfg.syn, cfg.given[2]),
            global_syn: bucket(&cfg.global_syn, cfg.given[3]),
            auto_ban: (cfg.ban_after_ns != 0).then(|| AutoBan {
                after_secs: cfg.ban_after_ns as f64 / 1e9,
                for_secs: cfg.ban_for_ns as f64 / 1e9,
            }),
        });
        LimitReport { iface: iface.to_string(), enabled: limits.is_some(), observe: cfg.observe != 0, limits }
    }
}

impl Report for LimitReport {
    fn text(&self) -> String {
        let Some(l) = &self.limits else {
            return format!("{}: no limits set\n", self.iface);
        };
        let mut parts = vec![format!("sources grouped by IPv4 /{} and IPv6 /{}", l.v4_prefix, l.v6_prefix)];
        if let Some(b) = &l.packets {
            parts.push(format!("{} packets/s per source (burst {})", b.per_second, b.burst));
        }
        if let Some(b) = &l.bytes {
            parts.push(format!("{} bits/s per source", b.bits_per_second));
        }
        if let Some(b) = &l.syn {
            parts.push(format!("{} SYNs/s per source (burst {})", b.per_second, b.burst));
        }
        if let Some(b) = &l.global_syn {
            parts.push(format!("{} SYNs/s in all (burst {})", b.per_second, b.burst));
        }
        if let Some(ban) = &l.auto_ban {
            parts.push(format!(
                "ban for {} after {} over the limit",
                format_exact(Duration::from_secs_f64(ban.for_secs)),
                format_exact(Duration::from_secs_f64(ban.after_secs))
            ));
        }
        let mode = if self.observe {
            "OBSERVE MODE, nothing dropped and no bans (what they would drop is counted as would_drop in `floodgate stats`): "
        } else {
            ""
        };
        format!("{}: {mode}{}\n", self.iface, parts.join("; "))
    }
}

pub fn run(cmd: LimitCommand) -> anyhow::Result<()> {
    match cmd {
        LimitCommand::Set(a) => {
            let cfg = config(&a)?;
            let mut s = Session::locked(a.target.name())?;
            s.limiter()?.set_limits(&cfg).with_context(|| format!("setting limits on {}", s.pins.iface))?;
            emit(&LimitReport::new(&s.pins.iface, &cfg), false)?;
        }
        LimitCommand::Clear { target } => {
            let mut s = Session::locked(target.name())?;
            let mut limiter = s.limiter()?;
            let mut off = limiter.limits()?;
            off.enabled = 0;
            off.ban_after_ns = 0;
            limiter.set_limits(&off)?;
            println!("{}: limits and auto-bans cleared", s.pins.iface);
        }
        LimitCommand::Show(Shown { target, format }) => {
            let mut s = Session::read(target.name())?;
            let cfg = s.limiter()?.limits()?;
            emit(&LimitReport::new(&s.pins.iface, &cfg), format.json)?;
        }
    }
    Ok(())
}
