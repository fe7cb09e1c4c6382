//! `blocklist` and `allowlist`: the same commands over either list.

use std::{fs, io::Read as _};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use filter_common::{ListKind, Meta, cidr};
use floodgate::{maps::FilterMaps, pins};
use ipnet::IpNet;
use serde_json::json;

use super::output::{grouped, print_json, progress_bar};

#[derive(Subcommand, Debug)]
pub enum ListCommand {
    /// Add addresses or CIDR prefixes (a plain address means /32 or /128).
    ///
    /// Effective for the next packet. Entries already on the list are counted, not an
    /// error. A prefix with host bits set (203.0.113.7/24) is refused: floodgate says
    /// which prefix you probably meant instead of guessing.
    Add {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
        #[arg(value_name = "ADDR_OR_CIDR", required = true)]
        entries: Vec<String>,
    },
    /// Remove exact entries. Removing 203.0.113.7 does not punch a hole in a listed
    /// 203.0.113.0/24. If any given entry is not on the list, nothing is removed.
    Remove {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
        #[arg(value_name = "ADDR_OR_CIDR", required = true)]
        entries: Vec<String>,
    },
    /// Load a list file: one address or CIDR per line; blank lines, `# comments` and
    /// Spamhaus-DROP style `; comments` are ignored. `-` reads standard input.
    ///
    /// The whole file is checked first: any bad line is reported as FILE:LINE and
    /// nothing is applied. Without --replace the entries are added to the list.
    Load {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
        #[arg(value_name = "FILE")]
        file: String,
        /// Make the file the whole list, atomically: packets see the old list until
        /// the new one is complete, never an empty or partial one.
        #[arg(long)]
        replace: bool,
    },
    /// Print the entries, IPv4 then IPv6.
    List {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
        /// A JSON array of CIDR strings.
        #[arg(long)]
        json: bool,
    },
}

fn parse_all(entries: &[String]) -> anyhow::Result<Vec<IpNet>> {
    let mut nets = Vec::with_capacity(entries.len());
    for e in entries {
        nets.push(cidr::parse_cidr(e)?);
    }
    Ok(nets)
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

pub fn run(kind: ListKind, cmd: ListCommand) -> anyhow::Result<()> {
    let name = kind.name();
    match cmd {
        ListCommand::Add { interface, entries } => {
            // Everything is parsed before the maps are touched.
            let nets = parse_all(&entries)?;
            let p = pins::resolve(interface.as_deref())?;
            let _lock = p.lock()?;
            let mut maps = FilterMaps::from_pins(&p.dir)?;
            let r = maps
                .add(kind, &nets, &mut progress_bar("adding"))
                .with_context(|| format!("adding to the {name} of {}", p.iface))?;
            let meta = maps.read_meta()?;
            println!(
                "{name}: added {}, {} already listed or repeated; {}",
                r.added,
                r.already_present,
                summary(kind, &meta)
            );
        }
        ListCommand::Remove { interface, entries } => {
            let nets = parse_all(&entries)?;
            let p = pins::resolve(interface.as_deref())?;
            let _lock = p.lock()?;
            let mut maps = FilterMaps::from_pins(&p.dir)?;
            let n = maps
                .remove(kind, &nets)
                .with_context(|| format!("removing from the {name} of {}", p.iface))?;
            let meta = maps.read_meta()?;
            println!("{name}: removed {n}; {}", summary(kind, &meta));
        }
        ListCommand::Load {
            interface,
            file,
            replace,
        } => {
            let text = read_input(&file)?;
            let nets = cidr::parse_list(&file, &text)?;
            let p = pins::resolve(interface.as_deref())?;
            let _lock = p.lock()?;
            let mut maps = FilterMaps::from_pins(&p.dir)?;
            let ctx = || format!("loading {file} into the {name} of {}", p.iface);
            let mut bar = progress_bar("loading");
            if replace {
                let n = maps.replace(kind, &nets, &mut bar).with_context(ctx)?;
                let meta = maps.read_meta()?;
                println!(
                    "{name}: replaced with {n} entries from {file}; {}",
                    summary(kind, &meta)
                );
            } else {
                let r = maps.add(kind, &nets, &mut bar).with_context(ctx)?;
                let meta = maps.read_meta()?;
                println!(
                    "{name}: added {} from {file}, {} already listed or repeated; {}",
                    r.added,
                    r.already_present,
                    summary(kind, &meta)
                );
            }
        }
        ListCommand::List { interface, json } => {
            let p = pins::resolve(interface.as_deref())?;
            let maps = FilterMaps::from_pins(&p.dir)?;
            let nets = maps
                .entries(kind)
                .with_context(|| format!("reading the {name} of {}", p.iface))?;
            if json {
                print_json(&json!(
                    nets.iter().map(|n| n.to_string()).collect::<Vec<_>>()
                ))?;
            } else {
                let mut out = String::with_capacity(nets.len() * 20);
                for n in &nets {
                    out.push_str(&n.to_string());
                    out.push('\n');
                }
                print!("{out}");
            }
        }
    }
    Ok(())
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        return Ok(s);
    }
    let bytes = fs::read(file).with_context(|| format!("reading {file}"))?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            bail!("{file}:{line}: not valid UTF-8 text")
        }
    }
}
