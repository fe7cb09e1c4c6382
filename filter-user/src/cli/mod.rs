//! Command-line interface: the clap definitions and one module per subcommand.

mod attach;
mod capture;
mod completions;
mod config;
mod detach;
mod incidents;
mod limit;
mod lists;
mod manpage;
mod output;
mod policy;
mod reload;
mod rule;
mod run;
mod service;
mod session;
mod stats;
mod status;
mod synproxy;
mod tap;
mod top;
mod trace;
mod watchlist;

use clap::{Parser, Subcommand};

/// Ends the process with this status, having printed what it had to say (`config
/// check` on a bad file).
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct Exit(pub u8);

/// The attached interface a command acts on (every command but attach, detach, run).
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Attached interface to act on, e.g. eth0; may be left out when exactly one
    /// interface of this network namespace is attached.
    #[arg(short, long, value_name = "IFACE")]
    pub interface: Option<String>,
}

impl Target {
    pub fn name(&self) -> Option<&str> {
        self.interface.as_deref()
    }
}

/// The interface attach, detach and run act on: always named.
#[derive(clap::Args, Debug, Clone)]
pub struct Iface {
    /// Interface to act on, e.g. eth0 (looked up in the current network namespace).
    #[arg(short, long, value_name = "IFACE")]
    pub interface: String,
}

/// Text for people, or JSON for programs.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Format {
    /// Print JSON instead of text (fields: README, "JSON output"). Durations are
    /// numbers of seconds in fields named *_secs.
    #[arg(long)]
    pub json: bool,
}

/// What a `show` or `list` takes: the interface and the output format.
#[derive(clap::Args, Debug, Clone)]
pub struct Shown {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub format: Format,
}

const ABOUT: &str =
    "floodgate: drop flood traffic in the driver, before the network stack spends anything on it.";

const AFTER_HELP: &str = "\
Typical use:
  floodgate attach -i eth0                     # load the filter; it stays after floodgate exits
  floodgate blocklist add 203.0.113.0/24        # drop a source range, effective at once
  floodgate blocklist add 192.0.2.7 --ttl 1h    # a ban that lifts itself
  floodgate blocklist load drop.txt --replace   # swap in a whole list atomically
  floodgate allowlist add 198.51.100.53         # never drop your own resolvers or monitors
  floodgate limit set --pps 2000 --syn-pps 50   # per-source limits, effective at once
  floodgate stats --watch 1s                    # live counters: what was passed and dropped
  floodgate top --interval 2s                   # the heaviest sources right now
  floodgate rule preset reflection              # drop UDP floods from reflection ports
  floodgate policy set --serve tcp/443,tcp/80   # drop what is aimed at other ports
  floodgate synproxy enable --ports 80,443      # answer SYN floods with cookies in the driver
  floodgate incidents report ID -o DIR          # a flood's report, to send to your provider
  floodgate detach -i eth0                      # remove everything floodgate put in place

Formats used by many flags:
  DURATION  a number with a unit, run together or spaced: 500ms, 90s, 10m, 1h30m, 2d
  PORTS     [tcp/|udp/]PORT[-PORT][,...]: 80,443 or tcp/8000-8010,udp/53
  --json    JSON instead of text; durations are numbers of seconds in fields named *_secs

Pins live under /sys/fs/bpf/floodgate/netns-DEV-INO/IFACE/, per network namespace: a
command acts on the interfaces of its own namespace, so run it there with
`nsenter --net=/run/netns/NAME floodgate ...`.";

#[derive(Parser, Debug)]
#[command(name = "floodgate", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Attach(attach::Args),
    Detach(detach::Args),
    Run(run::Args),
    Reload(reload::Args),
    Status(status::Args),
    /// Sources whose packets are dropped in the driver.
    #[command(subcommand)]
    Blocklist(lists::ListCommand),
    /// Sources that are always passed, even when also on the blocklist.
    #[command(subcommand)]
    Allowlist(lists::ListCommand),
    /// Sources counted as the blocklist would drop them, and passed: a dry run of a
    /// feed before it goes on the blocklist.
    #[command(subcommand)]
    Watchlist(watchlist::WatchCommand),
    /// Per-source rate limits, SYN limits and auto-bans.
    #[command(subcommand)]
    Limit(limit::LimitCommand),
    /// Protocol and port rules: drop reflection floods, open or close ports.
    #[command(subcommand)]
    Rule(rule::RuleCommand),
    /// The served-ports policy: drop traffic to ports this host does not serve.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// SYN cookies answered in the driver: SYN floods never reach the listener.
    #[command(subcommand)]
    Synproxy(synproxy::SynProxyCommand),
    Stats(stats::Args),
    Top(top::Args),
    Capture(capture::Args),
    Trace(trace::Args),
    Completions(completions::Args),
    /// Write the man pages (for packagers).
    #[command(hide = true)]
    Manpage(manpage::Args),
    /// The service's config file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Incidents: floods detected by `floodgate run`, their evidence and reports.
    #[command(subcommand)]
    Incidents(incidents::IncidentsCommand),
}

impl Command {
    pub fn execute(self) -> anyhow::Result<()> {
        use filter_common::ListKind;
        match self {
            Command::Attach(a) => attach::run(a),
            Command::Detach(a) => detach::run(a),
            Command::Status(a) => status::run(a),
            Command::Blocklist(c) => lists::run(ListKind::Block, c),
            Command::Allowlist(c) => lists::run(ListKind::Allow, c),
            Command::Watchlist(c) => watchlist::run(c),
            Command::Limit(c) => limit::run(c),
            Command::Rule(c) => rule::run(c),
            Command::Policy(c) => policy::run(c),
            Command::Synproxy(c) => synproxy::run(c),
            Command::Stats(a) => stats::run(a),
            Command::Top(a) => top::run(a),
            Command::Capture(a) => capture::run(a),
            Command::Trace(a) => trace::run(a),
            Command::Run(a) => run::run(a),
            Command::Reload(a) => reload::run(a),
            Command::Completions(a) => completions::run(a),
            Command::Manpage(a) => manpage::run(a),
            Command::Config(c) => config::run(c),
            Command::Incidents(c) => incidents::run(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap checks argument definitions only when a subcommand is parsed in a debug
    /// build; this checks every subcommand at once.
    #[test]
    fn every_subcommand_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
