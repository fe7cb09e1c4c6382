//! `rule add|remove|list|preset`: protocol and port rules.

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use floodgate::rules::{Rule, RuleSpec, reflection_preset};
use serde_json::{Value, json};

use super::{
    output::{counter_json, grouped, print_json},
    session::Session,
};

#[derive(Subcommand, Debug)]
pub enum RuleCommand {
    /// Add a rule on protocol and port, e.g. drop UDP from source port 11211.
    ///
    /// Rules are checked after the allowlist and blocklist and before the rate limiter:
    /// allowlisted sources are never touched by rules (allowlist your own resolvers
    /// before dropping UDP from port 53). A rule matches a source port, a destination
    /// port, or (with neither) every packet of its protocol. Rules may not overlap
    /// within a protocol and direction; when a source-port and a destination-port rule
    /// both match, drop wins. A pass rule exempts its packets from the served-ports
    /// policy, not from rate limits. ICMPv6 neighbour discovery is never dropped.
    /// Cost per packet does not grow with the number of rules.
    Add(AddArgs),
    /// Remove a rule by name or id.
    Remove {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
        #[arg(value_name = "NAME_OR_ID")]
        rule: String,
    },
    /// Every rule with the packets and bytes it matched.
    List {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add a named set of rules; applying it twice adds nothing twice.
    ///
    /// reflection: drop UDP from the source ports of the well-known reflection and
    /// amplification vectors (dns 53, ntp 123, cldap 389, ssdp 1900, memcached 11211,
    /// chargen, qotd, portmap, netbios, snmp, ard, ws-discovery, mdns, coap, ubiquiti).
    /// It also drops answers from DNS and NTP servers you query yourself: allowlist
    /// your resolvers and time servers first.
    Preset {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
        preset: Preset,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    Reflection,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Action {
    Drop,
    Pass,
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    #[arg(short, long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// tcp, udp, icmp or icmpv6.
    #[arg(long, value_name = "PROTO")]
    pub proto: String,
    /// Source port or range (P or P-Q), tcp and udp only.
    #[arg(long, value_name = "P[-Q]")]
    pub src_port: Option<String>,
    /// Destination port or range (P or P-Q), tcp and udp only.
    #[arg(long, value_name = "P[-Q]")]
    pub dst_port: Option<String>,
    #[arg(long, value_enum, default_value_t = Action::Drop)]
    pub action: Action,
    /// A name to remove it by [default: rule-ID].
    #[arg(long)]
    pub name: Option<String>,
}

fn rule_json(r: &Rule) -> Value {
    json!({
        "id": r.id,
        "name": r.spec.name,
        "proto": r.spec.proto.name(),
        "src_port": (r.spec.dir == filter_common::rules::Dir::Src).then(|| ports(r)),
        "dst_port": (r.spec.dir == filter_common::rules::Dir::Dst).then(|| ports(r)),
        "action": if r.spec.drop { "drop" } else { "pass" },
        "matched": counter_json(r.hits),
    })
}

fn ports(r: &Rule) -> String {
    floodgate::portmap::range_text(r.spec.lo, r.spec.hi)
}

pub fn run(cmd: RuleCommand) -> anyhow::Result<()> {
    match cmd {
        RuleCommand::Add(a) => {
            let spec = RuleSpec::parse(
                &a.proto,
                a.src_port.as_deref(),
                a.dst_port.as_deref(),
                matches!(a.action, Action::Drop),
                a.name.as_deref(),
            )?;
            let mut s = Session::locked(a.interface.as_deref())?;
            let added = s.rules()?.add_rules(std::slice::from_ref(&spec))?;
            match added.first() {
                Some(r) => println!("{}: rule {} '{}': {}", s.pins.iface, r.id, r.spec.name, r.spec),
                None => println!("{}: an identical rule exists already; nothing added", s.pins.iface),
            }
        }
        RuleCommand::Remove { interface, rule } => {
            let mut s = Session::locked(interface.as_deref())?;
            let r = s.rules()?.remove_rule(&rule)?;
            println!("{}: removed rule {} '{}': {}", s.pins.iface, r.id, r.spec.name, r.spec);
        }
        RuleCommand::Preset { interface, preset: Preset::Reflection } => {
            let mut s = Session::locked(interface.as_deref())?;
            let specs = reflection_preset();
            let added =
                s.rules()?.add_rules(&specs).context("applying the reflection preset (nothing was added)")?;
            println!(
                "{}: reflection preset: {} rules added, {} present already",
                s.pins.iface,
                added.len(),
                specs.len() - added.len()
            );
        }
        RuleCommand::List { interface, json } => {
            let mut s = Session::read(interface.as_deref())?;
            let rules = s.rules()?.rules()?;
            if json {
                return print_json(&Value::Array(rules.iter().map(rule_json).collect()));
            }
            if rules.is_empty() {
                println!("no rules on {} (see `floodgate rule add --help`)", s.pins.iface);
                return Ok(());
            }
            println!(
                "{:>4}  {:<26} {:<28} {:<6} {:>14} {:>16}",
                "id", "name", "match", "action", "packets", "bytes"
            );
            for r in &rules {
                println!(
                    "{:>4}  {:<26} {:<28} {:<6} {:>14} {:>16}",
                    r.id,
                    r.spec.name,
                    r.spec.describe(),
                    if r.spec.drop { "drop" } else { "pass" },
                    grouped(r.hits.packets),
                    grouped(r.hits.bytes)
                );
            }
        }
    }
    Ok(())
}
