//! `watchlist`: a blocklist in observe mode (see floodgate::watch).

use anyhow::Context as _;
use clap::Subcommand;
use filter_common::cidr;
use serde::Serialize;

use super::{
    Shown, Target,
    lists::{parse_all, read_input},
    output::{Report, emit},
    session::Session,
};

#[derive(Subcommand, Debug)]
pub enum WatchCommand {
    /// Watch addresses or CIDR prefixes: frames from them are counted under
    /// would_drop.blocklist (`floodgate stats`), sampled like blocklist drops
    /// (`floodgate capture --reason blocklist`), and passed.
    ///
    /// Checked after the blocklist and the allowlist: a source on the allowlist or the
    /// blocklist is decided by them, as it would be once the entries move to the
    /// blocklist.
    ///
    /// Example: floodgate watchlist add 203.0.113.0/24 2001:db8:bad::/48
    Add {
        #[command(flatten)]
        target: Target,
        /// Addresses or prefixes, e.g. 192.0.2.7 203.0.113.0/24 2001:db8::/32.
        #[arg(value_name = "ADDR_OR_CIDR", required = true)]
        entries: Vec<String>,
    },
    /// Load a list file (the blocklist's format: one address or CIDR per line,
    /// `#`/`;` comments); `-` reads standard input. The whole file is checked first:
    /// a bad line is reported as FILE:LINE and nothing is applied.
    ///
    /// Example: curl -s https://www.spamhaus.org/drop/drop.txt | floodgate watchlist load - --replace
    Load {
        #[command(flatten)]
        target: Target,
        /// The list file, or - for standard input.
        #[arg(value_name = "FILE")]
        file: String,
        /// Make the file the whole watchlist (without: add its entries).
        #[arg(long)]
        replace: bool,
    },
    /// Remove exact entries; if any is not watched, nothing is removed.
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(value_name = "ADDR_OR_CIDR", required = true)]
        entries: Vec<String>,
    },
    /// Remove every entry.
    Clear {
        #[command(flatten)]
        target: Target,
    },
    /// Print the entries, IPv4 then IPv6 (JSON: an array of CIDR strings).
    List(Shown),
}

#[derive(Serialize)]
#[serde(transparent)]
struct Listed(Vec<String>);

impl Report for Listed {
    fn text(&self) -> String {
        self.0.iter().map(|n| format!("{n}\n")).collect()
    }
}

fn summary(w: &floodgate::watch::WatchMaps) -> anyhow::Result<String> {
    let all = w.entries()?;
    let v4 = all.iter().filter(|n| matches!(n, ipnet::IpNet::V4(_))).count();
    Ok(format!("watchlist now holds {v4} IPv4 and {} IPv6 entries", all.len() - v4))
}

pub fn run(cmd: WatchCommand) -> anyhow::Result<()> {
    match cmd {
        WatchCommand::Add { target, entries } => {
            let nets = parse_all(&entries)?;
            let mut s = Session::locked(target.name())?;
            let mut w = s.watchlist()?;
            let n = w.add(&nets).with_context(|| format!("adding to the watchlist of {}", s.pins.iface))?;
            println!("watchlist: added {n}, {} already watched; {}", nets.len() - n, summary(&w)?);
        }
        WatchCommand::Load { target, file, replace } => {
            let text = read_input(&file)?;
            let (nets, _) = cidr::parse_list_noting(&file, &text)?;
            let mut s = Session::locked(target.name())?;
            let mut w = s.watchlist()?;
            let file = cidr::echo(&file);
            let ctx = || format!("loading {file} into the watchlist of {}", s.pins.iface);
            let (added, removed) = if replace {
                w.replace(&nets).with_context(ctx)?
            } else {
                (w.add(&nets).with_context(ctx)?, 0)
            };
            println!("watchlist: {added} added, {removed} removed from {file}; {}", summary(&w)?);
        }
        WatchCommand::Remove { target, entries } => {
            let nets = parse_all(&entries)?;
            let mut s = Session::locked(target.name())?;
            let mut w = s.watchlist()?;
            let n = w
                .remove(&nets)
                .with_context(|| format!("removing from the watchlist of {}", s.pins.iface))?;
            println!("watchlist: removed {n}; {}", summary(&w)?);
        }
        WatchCommand::Clear { target } => {
            let mut s = Session::locked(target.name())?;
            let mut w = s.watchlist()?;
            let (_, n) =
                w.replace(&[]).with_context(|| format!("clearing the watchlist of {}", s.pins.iface))?;
            println!("watchlist: removed {n}; it is empty");
        }
        WatchCommand::List(Shown { target, format }) => {
            let mut s = Session::read(target.name())?;
            let entries = s.watchlist()?.entries()?;
            emit(&Listed(entries.iter().map(ToString::to_string).collect()), format.json)?;
        }
    }
    Ok(())
}
