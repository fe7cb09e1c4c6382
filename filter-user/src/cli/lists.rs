//! `blocklist` and `allowlist`: the same commands over either list.

use std::{fs, io::Read as _, sync::atomic::Ordering::Relaxed, time::Duration};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use filter_common::{ListKind, Meta, cidr};
use floodgate::{
    duration::{format_duration, parse_duration},
    limits::key_cidr,
    store::{self, Added, monotonic_ns},
};
use ipnet::IpNet;
use serde::Serialize;
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use super::{
    Shown, Target,
    output::{Report, emit, grouped, progress_bar},
    session::Session,
};

#[derive(Subcommand, Debug)]
pub enum ListCommand {
    /// Add addresses or CIDR prefixes (a plain address means /32 or /128).
    ///
    /// Effective for the next packet. Entries already on the list are counted, not an
    /// error. A prefix with host bits set (203.0.113.7/24) is refused: floodgate says
    /// which prefix you probably meant instead of guessing.
    ///
    /// Example: floodgate blocklist add 203.0.113.0/24 2001:db8:bad::/48 --ttl 1h
    Add {
        #[command(flatten)]
        target: Target,
        /// Addresses or prefixes, e.g. 192.0.2.7 203.0.113.0/24 2001:db8::/32.
        #[arg(value_name = "ADDR_OR_CIDR", required = true)]
        entries: Vec<String>,
        /// Remove the entries after this long (DURATION: 90s, 10m, 1h, 2d). The data
        /// path stops matching them at that moment even if no floodgate process runs.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Load a list file: one address or CIDR per line; blank lines, `# comments` and
    /// Spamhaus-DROP style `; comments` are ignored. `-` reads standard input.
    ///
    /// The whole file is checked first: any bad line is reported as FILE:LINE and
    /// nothing is applied. Without --replace the entries are added to the list.
    ///
    /// Example: floodgate blocklist load drop.txt --replace
    Load {
        #[command(flatten)]
        target: Target,
        /// The list file, or - for standard input.
        #[arg(value_name = "FILE")]
        file: String,
        /// Make the file the whole list, atomically: packets see the old list until
        /// the new one is complete, never an empty or partial one.
        #[arg(long, conflicts_with = "ttl")]
        replace: bool,
        /// Added entries expire after this long (DURATION, e.g. 1h; not with --replace).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Remove exact entries. Removing 203.0.113.7 does not punch a hole in a listed
    /// 203.0.113.0/24. If any given entry is not on the list, nothing is removed.
    Remove {
        #[command(flatten)]
        target: Target,
        /// Entries exactly as listed, e.g. 203.0.113.0/24.
        #[arg(value_name = "ADDR_OR_CIDR", required = true)]
        entries: Vec<String>,
    },
    /// Print the entries, IPv4 then IPv6, with the remaining time of expiring ones
    /// (and, on the blocklist, the limiter's auto-bans).
    ///
    /// JSON: an array with a CIDR string per permanent entry and an object
    /// {"cidr", "expires_in_secs", "reason"} (reason "ttl" or "auto-ban") per expiring one.
    List(Shown),
}

/// One entry of `list`: a bare CIDR when permanent.
#[derive(Serialize)]
#[serde(untagged)]
enum Listed {
    Permanent(String),
    Expiring { cidr: String, expires_in_secs: u64, reason: &'static str },
}

#[derive(Serialize)]
#[serde(transparent)]
struct ListReport(Vec<Listed>);

impl Report for ListReport {
    fn text(&self) -> String {
        let mut out = String::with_capacity(self.0.len() * 20);
        for item in &self.0 {
            match item {
                Listed::Permanent(cidr) => out.push_str(cidr),
                Listed::Expiring { cidr, expires_in_secs, reason } => {
                    let what = if *reason == "auto-ban" { "auto-ban, " } else { "" };
                    let left = format_duration(Duration::from_secs(*expires_in_secs));
                    out.push_str(&format!("{cidr}  ({what}expires in {left})"));
                }
            }
            out.push('\n');
        }
        out
    }
}

pub(super) fn parse_all(entries: &[String]) -> anyhow::Result<Vec<IpNet>> {
    let mut nets = Vec::with_capacity(entries.len());
    for e in entries {
        let (net, mapped) = cidr::parse_cidr_noting(e)?;
        if mapped {
            eprintln!("floodgate: note: {} is IPv4-mapped IPv6; listed as {net}", cidr::echo(e.trim()));
        }
        nets.push(net);
    }
    Ok(nets)
}

/// Ctrl-C, SIGTERM or SIGHUP during a change: the change stops before it becomes
/// visible and leaves the list as it was, or, past that point, finishes (a SIGKILL
/// leaves one or the other too; see `store`). Installed once the lock is held: before
/// that, the default action (exit) changes nothing either, and stops a wait for it.
fn catch_interrupts() -> anyhow::Result<()> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("catching SIGINT, SIGTERM and SIGHUP")?;
    std::thread::spawn(move || {
        for _ in signals.forever() {
            store::INTERRUPT.store(true, Relaxed);
        }
    });
    Ok(())
}

fn summary(kind: ListKind, meta: &Meta) -> String {
    let c = meta.counts[kind as usize];
    format!(
        "{} now holds {} IPv4 and {} IPv6 entries (capacity {} per family)",
        kind.name(),
        grouped(c[0].into()),
        grouped(c[1].into()),
        grouped(meta.max_entries.into())
    )
}

fn added_line(name: &str, from: &str, r: &Added, meta: &Meta, kind: ListKind) -> String {
    let updated = if r.updated > 0 { format!(", {} expiry updated", r.updated) } else { String::new() };
    format!(
        "{name}: added {}{from}, {} already listed or repeated{updated}; {}",
        r.added,
        r.already_present,
        summary(kind, meta)
    )
}

pub fn run(kind: ListKind, cmd: ListCommand) -> anyhow::Result<()> {
    let name = kind.name();
    match cmd {
        ListCommand::Add { target, entries, ttl } => {
            // Everything is parsed before the maps are touched.
            let nets = parse_all(&entries)?;
            let mut s = Session::locked(target.name())?;
            let mut lists = s.lists()?;
            catch_interrupts()?;
            let r = lists
                .add(kind, &nets, ttl, &mut progress_bar("adding"))
                .with_context(|| format!("adding to the {name} of {}", s.pins.iface))?;
            println!("{}", added_line(name, "", &r, &lists.read_meta()?, kind));
        }
        ListCommand::Remove { target, entries } => {
            let nets = parse_all(&entries)?;
            let mut s = Session::locked(target.name())?;
            let mut lists = s.lists()?;
            catch_interrupts()?;
            let n = lists
                .remove(kind, &nets)
                .with_context(|| format!("removing from the {name} of {}", s.pins.iface))?;
            println!("{name}: removed {n}; {}", summary(kind, &lists.read_meta()?));
        }
        ListCommand::Load { target, file, replace, ttl } => {
            let text = read_input(&file)?;
            let (nets, mapped) = cidr::parse_list_noting(&file, &text)?;
            drop(text);
            if mapped > 0 {
                eprintln!(
                    "floodgate: note: {mapped} IPv4-mapped IPv6 entr{} (::ffff:a.b.c.d) listed as IPv4",
                    if mapped == 1 { "y" } else { "ies" }
                );
            }
            let mut s = Session::locked(target.name())?;
            let mut lists = s.lists()?;
            catch_interrupts()?;
            let file = cidr::echo(&file);
            let ctx = || format!("loading {file} into the {name} of {}", s.pins.iface);
            let mut bar = progress_bar("loading");
            if replace {
                let n = lists.replace(kind, &nets, &mut bar).with_context(ctx)?;
                println!(
                    "{name}: replaced with {n} entries from {file}; {}",
                    summary(kind, &lists.read_meta()?)
                );
            } else {
                let r = lists.add(kind, &nets, ttl, &mut bar).with_context(ctx)?;
                println!("{}", added_line(name, &format!(" from {file}"), &r, &lists.read_meta()?, kind));
            }
        }
        ListCommand::List(Shown { target, format }) => {
            let mut s = Session::read(target.name())?;
            let entries = match s.lists()?.entries(kind) {
                // Switched under every lock-free read: read once more between writers.
                Err(store::StoreError::Busy { .. }) => {
                    s = Session::locked(target.name())?;
                    s.lists()?.entries(kind)
                }
                other => other,
            }
            .with_context(|| format!("reading the {name} of {}", s.pins.iface))?;
            let now = monotonic_ns();
            // Whole seconds, rounded up: an entry is never shown as expired early.
            let left = |expires: u64| expires.saturating_sub(now).div_ceil(1_000_000_000);
            let mut items: Vec<Listed> = entries
                .iter()
                .map(|e| match e.expires {
                    None => Listed::Permanent(e.net.to_string()),
                    Some(at) => {
                        Listed::Expiring { cidr: e.net.to_string(), expires_in_secs: left(at), reason: "ttl" }
                    }
                })
                .collect();
            // Auto-bans only exist on the blocklist.
            if kind == ListKind::Block {
                for (key, ban) in s.limiter()?.bans() {
                    if ban.expires > now {
                        let (cidr, expires_in_secs) = (key_cidr(&key), left(ban.expires));
                        items.push(Listed::Expiring { cidr, expires_in_secs, reason: "auto-ban" });
                    }
                }
            }
            emit(&ListReport(items), format.json)?;
        }
    }
    Ok(())
}

pub(super) fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
        return Ok(s);
    }
    let bytes = fs::read(file).with_context(|| format!("reading {}", cidr::echo(file)))?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let line =
                e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            bail!("{}:{line}: not valid UTF-8 text", cidr::echo(file))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_all_parsed_before_anything_is_applied() {
        let err = parse_all(&["192.0.2.1".into(), "bad".into()]).unwrap_err();
        assert!(err.to_string().contains("'bad'"), "{err}");
        assert_eq!(parse_all(&["192.0.2.1".into()]).unwrap().len(), 1);
    }
}
