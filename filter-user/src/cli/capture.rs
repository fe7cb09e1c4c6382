//! `capture`: sampled frames with their verdicts, written as a pcap file.

use std::{
    fs::File,
    io::BufWriter,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use filter_common::{Reason, sample::SAMPLE_BYTES};
use floodgate::{
    duration::{BadDuration, parse_within},
    sampler::{TapSettings, pcap::PcapWriter},
};

use super::{
    Target,
    tap::{AdhocTap, parse_reason},
};

/// Write sampled frames to a pcap file (the first 128 bytes of each, with its length).
///
/// The XDP program copies 1 in N frames (of the reasons given, or all) into a ring
/// buffer, at most --max-pps a second over all CPUs, while this runs; frames are
/// sampled whatever their verdict, dropped ones included, so this shows what the flood
/// looks like even when nothing of it reaches the host. Each frame's verdict is in
/// the summary printed at the end; open the file with `tcpdump -r FILE` or Wireshark.
/// Frames a check in observe mode would drop are sampled at the rate of that reason
/// (`--reason blocklist` takes the watchlist's too) and summed as would_drop.REASON.
/// Stops after --count frames, after --seconds, or on Ctrl-C. One capture or trace
/// per interface at a time; `floodgate run` samples for its incidents apart.
///
/// Examples:
///   floodgate capture -i eth0 --reason blocklist --count 1000 -w blocked.pcap
///   floodgate capture -i eth0 --every 100 --seconds 30s -w sample.pcap
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Where to write the pcap file.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub file: PathBuf,
    /// Only frames of this verdict reason (repeatable): passed, blocklist, rate_limit,
    /// syn_limit, rule, policy, ... as `floodgate stats` names them.
    #[arg(long, value_name = "REASON", value_parser = parse_reason)]
    pub reason: Vec<Reason>,
    /// Sample 1 in N frames (1: every frame, up to --max-pps).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub every: u32,
    /// Stop after this many frames.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 1000)]
    pub count: u64,
    /// Stop after this long (DURATION, up to 1d).
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    pub seconds: Option<Duration>,
    /// Samples per second at most, over all CPUs (1 to 100000).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_pps: u32,
}

fn parse_seconds(s: &str) -> Result<Duration, BadDuration> {
    parse_within(s, Duration::from_millis(100), Duration::from_secs(86_400))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.count == 0 {
        bail!("--count must be at least 1");
    }
    let file = File::create(&a.file).with_context(|| format!("creating {}", a.file.display()))?;
    let mut w = PcapWriter::new(BufWriter::new(file), SAMPLE_BYTES as u32)
        .with_context(|| format!("writing {}", a.file.display()))?;
    let settings =
        TapSettings { every: a.every, reasons: a.reason.clone(), max_pps: a.max_pps, trace: false };
    let mut tap = AdhocTap::start(a.target.name(), &settings, &[])?;
    eprintln!(
        "capturing on {} (1 in {} frames of {}; Ctrl-C stops) to {}",
        tap.iface,
        a.every,
        if a.reason.is_empty() { "every reason".to_string() } else { reasons(&a.reason) },
        a.file.display()
    );
    let deadline = a.seconds.map(|s| Instant::now() + s);
    let mut by_reason: Vec<(String, u64)> = Vec::new();
    let mut n = 0u64;
    tap.run(deadline, |c| {
        w.write(c.unix_ns, c.sample.frame_len, c.bytes())
            .with_context(|| format!("writing {}", a.file.display()))?;
        // A frame passed in observe mode counts under what it would have been.
        let key = match (c.sample.would_drop(), c.reason()) {
            (Some(w), _) => Some(format!("would_drop.{}", w.key())),
            (None, r) => r.map(|r| r.key().to_string()),
        };
        if let Some(key) = key {
            match by_reason.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => *v += 1,
                None => by_reason.push((key, 1)),
            }
        }
        n += 1;
        Ok(n < a.count)
    })?;
    w.flush().with_context(|| format!("writing {}", a.file.display()))?;
    let (capped, lost) = tap.missed();
    drop(tap);
    let summary: Vec<String> = by_reason.iter().map(|(r, v)| format!("{r} {v}")).collect();
    println!(
        "{n} frames written to {}{}",
        a.file.display(),
        if summary.is_empty() { String::new() } else { format!(" ({})", summary.join(", ")) }
    );
    if capped + lost > 0 {
        println!("left out: {capped} over --max-pps, {lost} with the ring buffer full");
    }
    Ok(())
}

fn reasons(r: &[Reason]) -> String {
    r.iter().map(|r| r.key()).collect::<Vec<_>>().join(", ")
}
