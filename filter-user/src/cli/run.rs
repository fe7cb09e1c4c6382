//! `run`: attach in the foreground, keep the maps tidy, detach on SIGINT/SIGTERM.

use std::{
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use floodgate::{loader, pins};

use super::{attach, output::mode_name, session::Session};

/// Attach, then stay in the foreground removing expired entries and bans every
/// second, and detach when stopped (Ctrl-C, SIGTERM: e.g. from systemd).
#[derive(clap::Args, Debug)]
#[group(id = "run")]
pub struct Args {
    #[command(flatten)]
    pub attach: attach::Args,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Relaxed);
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let iface = args.attach.interface.clone();
    let done = loader::attach(&iface, args.attach.mode.into(), args.attach.capacity())
        .with_context(|| format!("attaching to {iface}"))?;
    if let Some(why) = &done.native_error {
        eprintln!("floodgate: warning: native XDP is not available on {iface} ({why}); using skb mode");
    }
    println!("attached to {iface} in {} mode; maintaining until SIGINT/SIGTERM", mode_name(done.mode));
    let result = maintain(&iface);
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
fn maintain(iface: &str) -> anyhow::Result<()> {
    let mut next = Instant::now();
    let mut failing: Option<(String, Instant)> = None;
    while !STOP.load(Relaxed) {
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
