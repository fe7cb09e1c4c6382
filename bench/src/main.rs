//! `cargo xtask bench [--quick]`: floodgate measured side by side with the kernel's own
//! filters (nftables, iptables with ipset) and no filter, in one run on one machine.
//! Run as root; `cargo xtask bench` builds and starts this binary.
//!
//! 1. cost per packet with BPF_PROG_TEST_RUN (testrun.rs)
//! 2. live drop rate on a veth pair flooded by an XDP_TX generator (live.rs)
//! 3. loading a million prefixes: floodgate, ipset, nft (lists.rs)
//! 4. HTTP to nginx while floods run (legit.rs)
//! 6. the data path's log statements, level off against trace (bpflog.rs)
//! 7. the sampler and observe mode, off against on (observe.rs)
//! 8. CrowdSec: 100,000 decisions at startup from a real LAPI (crowdsec.rs)

mod bpflog;
mod crowdsec;
mod legit;
mod lists;
mod live;
mod obj;
mod observe;
mod report;
mod sys;
mod testrun;

use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, bail};
use clap::Parser;

#[derive(Parser)]
#[command(name = "floodgate-bench")]
struct Args {
    /// Fewer and shorter runs (a few minutes); lists stop at 1M entries.
    #[arg(long)]
    quick: bool,
    /// Where report.md and report.json go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The floodgate binary (part 3 times its CLI).
    #[arg(long, default_value = "target/release/floodgate")]
    floodgate: PathBuf,
    /// Only these parts (1-8, as in the report), e.g. `--parts 1,2`.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3, 4, 5, 6, 7, 8])]
    parts: Vec<u8>,
    /// Also write part 1's limiter figures here as soon as they are known.
    #[arg(long)]
    limiter_out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench loads XDP programs and creates network namespaces: run it as root");
    }
    sys::cleanup_leftovers();
    let t0 = Instant::now();
    let machine = report::machine();
    let mut sections = Vec::new();
    if args.parts.contains(&1) {
        let limiter_out = args.limiter_out.clone();
        let p1 = testrun::run(args.quick, |text| {
            println!("{text}");
            if let Some(p) = &limiter_out {
                let _ = std::fs::write(p, text);
            }
        })
        .context("part 1 (test_run costs)")?;
        sections.extend(p1.sections);
    }
    if args.parts.contains(&2) {
        sections.extend(live::run(args.quick).context("part 2 (live drop rate)")?);
    }
    if args.parts.contains(&3) {
        sections.extend(lists::run(args.quick, &args.floodgate).context("part 3 (list loading)")?);
    }
    if args.parts.contains(&4) || args.parts.contains(&5) {
        sections.extend(
            legit::run(args.quick, &args.parts).context("parts 4 and 5 (legitimate traffic under flood)")?,
        );
    }
    if args.parts.contains(&6) {
        sections.extend(bpflog::run(args.quick).context("part 6 (data-path logging)")?);
    }
    if args.parts.contains(&7) {
        sections.extend(observe::run(args.quick).context("part 7 (sampling and observe mode)")?);
    }
    if args.parts.contains(&8) {
        sections.extend(
            crowdsec::run(args.quick, &args.floodgate).context("part 8 (CrowdSec decisions at startup)")?,
        );
    }
    let md = report::write(&args.out, args.quick, &machine, &sections, t0.elapsed().as_secs_f64())?;
    println!("{md}");
    println!("bench: wrote {}/report.md and report.json", args.out.display());
    Ok(())
}
