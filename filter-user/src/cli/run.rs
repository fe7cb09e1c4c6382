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
    let detached = pins::resolve(Some(&iface))
        .map_err(anyhow::Error::from)
        .and_then(|p| loader::detach(&p).with_context(|| format!("detaching from {iface}")));
    result?;
    cleaned?;
    detached?;
    println!("detached from {iface}");
    Ok(())
}

fn maintain(iface: &str) -> anyhow::Result<()> {
    let mut next = Instant::now();
    while !STOP.load(Relaxed) {
        if Instant::now() >= next {
            // Session::locked sweeps expired entries and bans.
            drop(Session::locked(Some(iface))?);
            next = Instant::now() + Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
