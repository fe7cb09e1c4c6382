use anyhow::Context as _;
use clap::ValueEnum;
use filter_common::{DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SOURCES};
use floodgate::{
    config::BpfLogLevel,
    loader::{self, Capacity, Mode},
};

use super::Iface;

/// Load the filter and attach it to an interface.
///
/// It stays attached after floodgate exits (link and maps are pinned under /sys/fs/bpf/floodgate/netns-DEV-INO/IFACE/,
/// per network namespace).
///
/// Example: floodgate attach -i eth0 --mode native --max-entries 2000000
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub iface: Iface,
    /// Where the program runs.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// Capacity of each list per address family (hosts and prefixes together). Entries
    /// cost memory only once stored; adding beyond this is refused, never dropped.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ENTRIES)]
    pub max_entries: u32,
    /// Sources the rate limiter tracks at once (least recently seen ones make room for
    /// new ones; sources over their limit are kept apart and never pushed out).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SOURCES)]
    pub max_sources: u32,
    /// Level of the data path's own log records (auto-bans, full tables, empty
    /// tail-call slots), fixed when the program is loaded. Off, the verifier removes
    /// the log statements. A running `floodgate run` forwards the records to its log.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = BpfLogArg::Off)]
    pub bpf_log: BpfLogArg,
}

impl Args {
    pub fn capacity(&self) -> Capacity {
        Capacity { entries: self.max_entries, sources: self.max_sources }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Native, falling back to skb with a warning.
    Auto,
    /// In the driver: fastest; fails where the driver has no XDP support.
    Native,
    /// Generic XDP: works on any interface, slower.
    Skb,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Native => Mode::Native,
            ModeArg::Skb => Mode::Skb,
        }
    }
}

/// `--bpf-log`: a data-path log level, or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BpfLogArg {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<BpfLogArg> for Option<BpfLogLevel> {
    fn from(l: BpfLogArg) -> Self {
        Some(match l {
            BpfLogArg::Off => return None,
            BpfLogArg::Error => BpfLogLevel::Error,
            BpfLogArg::Warn => BpfLogLevel::Warn,
            BpfLogArg::Info => BpfLogLevel::Info,
            BpfLogArg::Debug => BpfLogLevel::Debug,
            BpfLogArg::Trace => BpfLogLevel::Trace,
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let iface = &args.iface.interface;
    let done = loader::attach(iface, args.mode.into(), args.capacity(), args.bpf_log.into())
        .with_context(|| format!("attaching to {}", iface))?;
    if done.mounted_bpffs {
        eprintln!("floodgate: mounted a bpffs (mode 0700) at {}", floodgate::pins::BPFFS);
    }
    if let Some(why) = &done.native_error {
        eprintln!(
            "floodgate: warning: native XDP is not available on {} ({why}); attached in skb (generic) mode, which is slower",
            iface
        );
    }
    println!(
        "attached to {} in {} mode; lists hold up to {} entries per family; pins in {}",
        iface,
        super::output::mode_name(done.mode),
        args.max_entries,
        done.pins.dir.display()
    );
    Ok(())
}
