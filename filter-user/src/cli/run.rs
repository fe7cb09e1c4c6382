//! `run`: the service. Converges the kernel to a config file (or keeps one interface
//! attached), then keeps it so: sweeps, reloads, list refreshes, metrics.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::ValueEnum;
use filter_common::{DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SOURCES, cidr::echo};
use floodgate::{
    config::{
        DEFAULT_HOLD, DEFAULT_QUIET, DEFAULT_SAMPLE_EVERY, DEFAULT_SAMPLE_MAX_PPS, DEFAULT_STATE_DIR,
        Escalate, HOLD_RANGE, Incidents, LogFormat, QUIET_RANGE, SAMPLE_EVERY_RANGE, THRESHOLD_BPS_RANGE,
        THRESHOLD_PPS_RANGE,
    },
    duration::{BadDuration, parse_within},
    incident::{
        actions::{BadProgram, check_program},
        detect::Thresholds,
    },
    sources::{BadUrl, parse_http_url},
};

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
/// given and keeps it swept, with no config. The --incident-* flags detect floods
/// there as a config's [interface.NAME.incidents] does: a threshold crossed for
/// --incident-hold opens an incident (sampled, recorded under --state-dir, told to the
/// hook and webhook), and --incident-quiet without any closes it.
///
/// Examples:
///   floodgate run --config /etc/floodgate/floodgate.toml
///   floodgate run -i eth0 --mode native --detach-on-exit
///   floodgate run -i eth0 --incident-dropped-pps 50000 --incident-hook /usr/local/bin/page-oncall
// The -i-only flags say `conflicts_with = "config"` besides `requires = "interface"`:
// clap counts a requirement met when the required arg conflicts with one present (-i
// with --config), so `requires` alone let --config take them and ignore them.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["config", "interface"])))]
pub struct Args {
    /// The config file (TOML; see packaging/floodgate.toml).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One interface to keep attached, without a config file.
    #[arg(short, long, value_name = "IFACE", conflicts_with = "config")]
    pub interface: Option<String>,
    /// With -i: where the program runs.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto, requires = "interface", conflicts_with = "config")]
    pub mode: ModeArg,
    /// With -i: capacity of each list per address family.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ENTRIES, requires = "interface", conflicts_with = "config")]
    pub max_entries: u32,
    /// With -i: sources the rate limiter tracks at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SOURCES, requires = "interface", conflicts_with = "config")]
    pub max_sources: u32,
    /// With -i: serve Prometheus metrics on ADDRESS:PORT (e.g. 127.0.0.1:9669); with a
    /// config, its [metrics] section says.
    #[arg(long, value_name = "ADDR", requires = "interface", conflicts_with = "config")]
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
    /// With -i: open an incident when the filter sees more than N frames per second,
    /// whatever their verdict, for --incident-hold. Any one --incident-* threshold is
    /// enough; without one, nothing is detected. Example: --incident-pps 500000
    #[arg(long, value_name = "N", requires = "interface", conflicts_with = "config",
          value_parser = clap::value_parser!(u64).range(THRESHOLD_PPS_RANGE))]
    pub incident_pps: Option<u64>,
    /// With -i: open an incident above N bits per second (all frames). Example:
    /// --incident-bps 4000000000 (4 Gbit/s)
    #[arg(long, value_name = "N", requires = "interface", conflicts_with = "config",
          value_parser = clap::value_parser!(u64).range(THRESHOLD_BPS_RANGE))]
    pub incident_bps: Option<u64>,
    /// With -i: open an incident when more than N frames per second are dropped, for
    /// any reason together (blocklist, limits, rules, policy...). Example:
    /// --incident-dropped-pps 50000
    #[arg(long, value_name = "N", requires = "interface", conflicts_with = "config",
          value_parser = clap::value_parser!(u64).range(THRESHOLD_PPS_RANGE))]
    pub incident_dropped_pps: Option<u64>,
    /// With -i: open an incident above N TCP SYNs per second. Example:
    /// --incident-syn-pps 20000
    #[arg(long, value_name = "N", requires = "interface", conflicts_with = "config",
          value_parser = clap::value_parser!(u64).range(THRESHOLD_PPS_RANGE))]
    pub incident_syn_pps: Option<u64>,
    /// With -i: how long a threshold stays crossed before an incident opens, 1s to 10m
    /// [default: 2s]. Example: --incident-hold 5s
    #[arg(long, value_name = "DURATION", requires = "interface", conflicts_with = "config", value_parser = parse_hold)]
    pub incident_hold: Option<Duration>,
    /// With -i: how long every threshold stays uncrossed before the incident closes,
    /// 1s to 1h [default: 10s]; a flood pausing for less stays one incident. Example:
    /// --incident-quiet 1m
    #[arg(long, value_name = "DURATION", requires = "interface", conflicts_with = "config", value_parser = parse_quiet)]
    pub incident_quiet: Option<Duration>,
    /// With -i: during an incident, sample 1 in N frames of each verdict (the pcap and
    /// the top sources), 1 to 1000000 [default: 64]. Example: --sample-every 16
    #[arg(long, value_name = "N", requires = "interface", conflicts_with = "config",
          value_parser = clap::value_parser!(u64).range(SAMPLE_EVERY_RANGE))]
    pub sample_every: Option<u64>,
    /// With -i: run PROGRAM (an absolute path, no arguments) when an incident opens and
    /// when it closes: the incident as JSON on stdin, FLOODGATE_EVENT (open, close),
    /// FLOODGATE_INCIDENT_ID, FLOODGATE_INTERFACE, FLOODGATE_PEAK_PPS, FLOODGATE_DROPPED,
    /// FLOODGATE_TOP_SOURCE, ... in its environment (all in packaging/floodgate.toml);
    /// killed if it runs too long. Example: --incident-hook /usr/local/bin/page-oncall
    #[arg(long, value_name = "PROGRAM", requires = "interface", conflicts_with = "config", value_parser = parse_hook)]
    pub incident_hook: Option<String>,
    /// With -i: POST the incident as JSON to URL when it opens and when it closes
    /// (http:// or https://; a connection error or a 5xx is retried once). Example:
    /// --incident-webhook https://hooks.example.com/floodgate
    #[arg(long, value_name = "URL", requires = "interface", conflicts_with = "config", value_parser = parse_webhook)]
    pub incident_webhook: Option<String>,
    /// With -i: where the service keeps its state, incident records among it (an
    /// absolute path); with a config, its service.state_dir says.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR, requires = "interface", conflicts_with = "config",
          value_parser = parse_state_dir)]
    pub state_dir: PathBuf,
}

fn parse_hold(s: &str) -> Result<Duration, BadDuration> {
    parse_within(s, HOLD_RANGE.0, HOLD_RANGE.1)
}

fn parse_quiet(s: &str) -> Result<Duration, BadDuration> {
    parse_within(s, QUIET_RANGE.0, QUIET_RANGE.1)
}

fn parse_hook(s: &str) -> Result<String, BadProgram> {
    check_program(s).map(|()| s.to_string())
}

fn parse_webhook(s: &str) -> Result<String, BadUrl> {
    parse_http_url(s).map(|_| s.to_string())
}

fn parse_state_dir(s: &str) -> Result<PathBuf, String> {
    match PathBuf::from(s) {
        p if p.is_absolute() => Ok(p),
        _ => Err(format!("'{}' is not an absolute path", echo(s))),
    }
}

impl Args {
    /// The -i interface's incident settings as the --incident-* flags give them, as a
    /// config's [interface.NAME.incidents] would; None without a threshold flag.
    pub fn incidents(&self) -> anyhow::Result<Option<Incidents>> {
        let thresholds = Thresholds {
            pps: self.incident_pps,
            bps: self.incident_bps,
            dropped_pps: Vec::new(),
            dropped_any_pps: self.incident_dropped_pps,
            syn_pps: self.incident_syn_pps,
            hold: self.incident_hold.unwrap_or(DEFAULT_HOLD),
            quiet: self.incident_quiet.unwrap_or(DEFAULT_QUIET),
        };
        if !thresholds.any() {
            let given = [
                ("--incident-hook", self.incident_hook.is_some()),
                ("--incident-webhook", self.incident_webhook.is_some()),
                ("--incident-hold", self.incident_hold.is_some()),
                ("--incident-quiet", self.incident_quiet.is_some()),
                ("--sample-every", self.sample_every.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
                anyhow::bail!(
                    "{flag} needs a threshold to open incidents: --incident-pps, --incident-bps, \
                     --incident-dropped-pps or --incident-syn-pps"
                );
            }
            return Ok(None);
        }
        Ok(Some(Incidents {
            thresholds,
            sample_every: self.sample_every.map_or(DEFAULT_SAMPLE_EVERY, |n| n as u32),
            sample_max_pps: DEFAULT_SAMPLE_MAX_PPS,
            hook: self.incident_hook.clone().map(|p| vec![p]),
            webhook: self.incident_webhook.clone(),
            escalate: Escalate::default(),
        }))
    }
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
    // -i's incident flags are refused before anything is touched, like a bad config.
    args.incidents()?;
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let cli = Cli::try_parse_from([&["floodgate", "run"], args].concat())?;
        match cli.command {
            Command::Run(a) => Ok(a),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn incident_flags_build_the_model() {
        let a = parse(&[
            "-i",
            "eth0",
            "--incident-pps",
            "500000",
            "--incident-dropped-pps",
            "50000",
            "--incident-syn-pps",
            "2000",
            "--incident-bps",
            "4000000000",
            "--incident-hold",
            "5s",
            "--incident-quiet",
            "1m",
            "--sample-every",
            "16",
            "--incident-hook",
            "/bin/sh",
            "--incident-webhook",
            "https://hooks.example/fg",
            "--state-dir",
            "/srv/fg",
        ])
        .unwrap();
        assert_eq!(a.state_dir, PathBuf::from("/srv/fg"));
        let i = a.incidents().unwrap().unwrap();
        assert_eq!(
            i.thresholds,
            Thresholds {
                pps: Some(500_000),
                bps: Some(4_000_000_000),
                dropped_pps: Vec::new(),
                dropped_any_pps: Some(50_000),
                syn_pps: Some(2000),
                hold: Duration::from_secs(5),
                quiet: Duration::from_secs(60),
            }
        );
        assert_eq!((i.sample_every, i.sample_max_pps), (16, DEFAULT_SAMPLE_MAX_PPS));
        assert_eq!(i.hook, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(i.webhook.as_deref(), Some("https://hooks.example/fg"));
        assert_eq!(i.escalate, Escalate::default());
    }

    #[test]
    fn defaults_and_none() {
        let a = parse(&["-i", "eth0", "--incident-dropped-pps", "10"]).unwrap();
        let i = a.incidents().unwrap().unwrap();
        assert_eq!((i.thresholds.hold, i.thresholds.quiet), (DEFAULT_HOLD, DEFAULT_QUIET));
        assert_eq!((i.sample_every, &i.hook, &i.webhook), (DEFAULT_SAMPLE_EVERY, &None, &None));
        assert_eq!(a.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(parse(&["-i", "eth0"]).unwrap().incidents().unwrap(), None);
        // The default state dir does not need -i.
        assert!(parse(&["--config", "/etc/floodgate/floodgate.toml"]).is_ok());
    }

    #[test]
    fn bad_incident_flags() {
        let err = |args: &[&str]| parse(args).unwrap_err().to_string();
        // Flags of -i only are refused with a config (which has its own keys).
        for flag in [&["--incident-pps", "5"][..], &["--mode", "native"], &["--state-dir", "/srv"]] {
            let e = err(&[&["-c", "x.toml"][..], flag].concat());
            assert!(e.contains(&format!("'--config <FILE>' cannot be used with '{}", flag[0])), "{e}");
        }
        assert!(err(&["-i", "eth0", "--incident-pps", "0"]).contains("0 is not in 1..=1000000000"));
        let e = err(&["-i", "eth0", "--incident-pps", "1", "--incident-hold", "500ms"]);
        assert!(e.contains("'500ms' is out of range: expected 1s to 10m"), "{e}");
        let e = err(&["-i", "eth0", "--incident-pps", "1", "--incident-hook", "notify"]);
        assert!(e.contains("'notify' is not an absolute path"), "{e}");
        let e = err(&["-i", "eth0", "--incident-pps", "1", "--incident-hook", "/nonexistent/x"]);
        assert!(e.contains("/nonexistent/x: No such file"), "{e}");
        let e = err(&["-i", "eth0", "--incident-pps", "1", "--incident-webhook", "ftp://x.example/"]);
        assert!(e.contains("is not http:// or https://"), "{e}");
        let e = err(&["-i", "eth0", "--state-dir", "var/lib"]);
        assert!(e.contains("'var/lib' is not an absolute path"), "{e}");
        // Told what to do without a threshold to act on.
        for flag in [
            ["--incident-hook", "/bin/sh"],
            ["--incident-webhook", "http://x.example/"],
            ["--sample-every", "2"],
        ] {
            let a = parse(&[&["-i", "eth0"][..], &flag].concat()).unwrap();
            let e = a.incidents().unwrap_err().to_string();
            assert!(e.starts_with(&format!("{} needs a threshold", flag[0])), "{e}");
        }
    }
}
