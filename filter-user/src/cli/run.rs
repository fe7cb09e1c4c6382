//! `run`: the service. Converges the kernel to a config file (or keeps one interface
//! attached), then keeps it so: sweeps, reloads, list refreshes, metrics.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::ValueEnum;
use filter_common::{DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SOURCES};
use floodgate::config::LogFormat;

use super::{
    attach::{BpfLogArg, ModeArg},
    service,
};

/// Run as a service: put a config file in force and keep it so.
///
/// With --config: attaches to every interface of the file (or takes over a filter
/// already pinned there, swapping this floodgate's program in on the XDP link without
/// a gap), applies lists, limits, rules, policy and SYN cookies, tells systemd it is
/// ready, then sweeps expired entries, refreshes URL lists and serves metrics. SIGHUP
/// or `floodgate reload` re-reads the file: a bad file is refused whole and the running
/// state kept; a good one applies only what changed. Stopping (SIGTERM, Ctrl-C) leaves
/// the filter in force: it needs no process. `floodgate detach -i IFACE` removes it.
///
/// With -i instead: attaches (or takes over) that one interface with the options
/// given and keeps it swept, with no config.
///
/// Examples:
///   floodgate run --config /etc/floodgate/floodgate.toml
///   floodgate run -i eth0 --mode native --detach-on-exit
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["config", "interface"])))]
pub struct Args {
    /// The config file (TOML; see packaging/floodgate.toml).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One interface to keep attached, without a config file.
    #[arg(short, long, value_name = "IFACE", conflicts_with = "config")]
    pub interface: Option<String>,
    /// With -i: where the program runs.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto, requires = "interface")]
    pub mode: ModeArg,
    /// With -i: capacity of each list per address family.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ENTRIES, requires = "interface")]
    pub max_entries: u32,
    /// With -i: sources the rate limiter tracks at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SOURCES, requires = "interface")]
    pub max_sources: u32,
    /// With -i: serve Prometheus metrics on ADDRESS:PORT (e.g. 127.0.0.1:9669); with a
    /// config, its [metrics] section says.
    #[arg(long, value_name = "ADDR", requires = "interface")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Detach (and remove every pin) when stopped, instead of leaving the filter in force.
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Report the data path's rare events (auto-bans, full tables, missing tail calls)
    /// at this level and above; overrides the config's log.bpf. `off` lets the verifier
    /// remove the logging code.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub bpf_log: Option<BpfLogArg>,
    /// Log lines as text or JSON (one object per line); overrides the config's log.format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Read once: the log format comes from it (unless the command line says), and a
    // file that does not load stops the start before anything is touched.
    let config = args.config.as_deref().map(|path| (path, service::load_config(path)));
    let format = match (args.log_format, &config) {
        (Some(f), _) => f.into(),
        (None, Some((_, Ok(c)))) => c.service.log_format,
        _ => LogFormat::default(),
    };
    floodgate::logging::init(format, None).context("setting up the log")?;
    let config = match config {
        Some((path, Err(errors))) => {
            anyhow::bail!("{} is not valid:\n{}", path.display(), errors.join("\n"))
        }
        Some((_, Ok(c))) => Some(c),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("floodgate-rt")
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(service::serve(args, config))
}
