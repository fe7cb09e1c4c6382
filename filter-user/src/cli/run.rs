//! `run`: attach in the foreground, keep the maps tidy, detach on SIGINT/SIGTERM.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use floodgate::{loader, pins};
use signal_hook::consts::{SIGINT, SIGTERM};

use super::{attach, output::mode_name, session::Session};

/// Attach, keep the maps tidy in the foreground, detach on Ctrl-C or SIGTERM.
///
/// Attaches as `attach` does, then removes expired entries and bans every second, and
/// detaches when stopped (Ctrl-C, SIGTERM: e.g. from systemd).
///
/// Example: floodgate run -i eth0 --mode native
#[derive(clap::Args, Debug)]
#[group(id = "run")]
pub struct Args {
    #[command(flatten)]
    pub attach: attach::Args,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("catching SIGINT and SIGTERM")?;
    }
    let iface = args.attach.iface.interface.clone();
    let done =
        loader::attach(&iface, args.attach.mode.into(), args.attach.capacity(), args.attach.bpf_log.into())
            .with_context(|| format!("attaching to {iface}"))?;
    if let Some(why) = &done.native_error {
        eprintln!("floodgate: warning: native XDP is not available on {iface} ({why}); using skb mode");
    }
    println!("attached to {iface} in {} mode; maintaining until SIGINT/SIGTERM", mode_name(done.mode));
    let result = maintain(&iface, &stop);
    let cleaned = super::synproxy::cleanup(&iface);
    let detached = pins::resolve_for(Some(&iface), pins::Purpose::Detach)
        .map_err(anyhow::Error::from)
        .and_then(|p| loader::detach(&p).with_context(|| format!("detaching from {iface}")));
    result?;
    cleaned?;
    detached?;
    println!("detached from {iface}");
    Ok(())
}

/// Sweeps every second until stopped. A sweep that fails (a map error, a lock held
/// too long, pins being replaced) is logged and retried: protection stays attached
/// whatever happens to the housekeeping. The same error is logged once a minute at
/// most, and its end once.
fn maintain(iface: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut next = Instant::now();
    let mut failing: Option<(String, Instant)> = None;
    while !stop.load(Relaxed) {
        if Instant::now() >= next {
            match sweep(iface) {
                Ok(()) => {
                    if failing.take().is_some() {
                        eprintln!("floodgate: {iface}: sweeping works again");
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let repeat = failing
                        .as_ref()
                        .is_some_and(|(m, at)| *m == msg && at.elapsed() < Duration::from_secs(60));
                    if !repeat {
                        eprintln!(
                            "floodgate: warning: {iface}: sweeping expired entries failed: {msg}; \
                             the filter stays attached, retrying every second"
                        );
                        failing = Some((msg, Instant::now()));
                    }
                }
            }
            next = Instant::now() + Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Sweeps expired entries and bans once it holds the lock. The wait for the lock is
/// short, so SIGTERM is answered promptly while another command holds it; the next
/// second tries again.
fn sweep(iface: &str) -> anyhow::Result<()> {
    Session::locked_within(Some(iface), Duration::from_millis(500))?.sweep()
}
