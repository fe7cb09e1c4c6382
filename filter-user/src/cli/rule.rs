//! `rule add|remove|list|preset`: protocol and port rules.

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use filter_common::rules::Dir;
use floodgate::rules::{Rule, RuleSpec, reflection_preset};
use serde::Serialize;

use super::{
    Shown, Target,
    output::{Count, Report, emit, grouped, table},
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
    ///
    /// Example: floodgate rule add --proto udp --src-port 11211 --name memcached
    Add(AddArgs),
    /// Add a named set of rules; applying it twice adds nothing twice.
    ///
    /// reflection: drop UDP from the source ports of the well-known reflection and
    /// amplification vectors (dns 53, ntp 123, cldap 389, ssdp 1900, memcached 11211,
    /// chargen, qotd, portmap, netbios, snmp, ard, ws-discovery, mdns, coap, ubiquiti).
    /// It also drops answers from DNS and NTP servers you query yourself: allowlist
    /// your resolvers and time servers first.
    Preset {
        #[command(flatten)]
        target: Target,
        /// The set of rules to add.
        preset: Preset,
        /// Add them in observe mode (action observe): counted, not dropped.
        #[arg(long)]
        observe: bool,
    },
    /// Remove a rule by name or id.
    Remove {
        #[command(flatten)]
        target: Target,
        /// The rule's name or id, as `rule list` shows them (e.g. wsd or 3).
        #[arg(value_name = "NAME_OR_ID")]
        rule: String,
    },
    /// Every rule with the packets and bytes it matched.
    List(Shown),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// UDP from the source ports of reflection and amplification vectors.
    Reflection,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Action {
    /// Drop matching packets (counted as dropped.rule).
    Drop,
    /// Pass them, exempt from the served-ports policy.
    Pass,
    /// Dry run of drop: count matching packets (as would_drop.rule, and on the rule)
    /// and pass them, to see what a drop rule would hit before enforcing it.
    Observe,
}

/// The protocols a rule can match.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProtoArg {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl ProtoArg {
    fn name(self) -> &'static str {
        match self {
            ProtoArg::Tcp => "tcp",
            ProtoArg::Udp => "udp",
            ProtoArg::Icmp => "icmp",
            ProtoArg::Icmpv6 => "icmpv6",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    pub target: Target,
    /// The protocol to match.
    #[arg(long, value_enum)]
    pub proto: ProtoArg,
    /// Source port or range, e.g. 53 or 6000-6063 (tcp and udp only).
    #[arg(long, value_name = "PORT[-PORT]")]
    pub src_port: Option<String>,
    /// Destination port or range, e.g. 3389 or 6000-6063 (tcp and udp only).
    #[arg(long, value_name = "PORT[-PORT]")]
    pub dst_port: Option<String>,
    /// What to do with matching packets.
    #[arg(long, value_enum, default_value_t = Action::Drop)]
    pub action: Action,
    /// A name to remove it by: 1 to 31 letters, digits, '-', '_' or '.' [default: rule-ID].
    #[arg(long)]
    pub name: Option<String>,
}

/// One rule of `rule list --json`.
#[derive(Serialize)]
struct Listed {
    id: u32,
    name: String,
    proto: &'static str,
    src_port: Option<String>,
    dst_port: Option<String>,
    action: &'static str,
    matched: Count,
    /// What it matches, for the text table.
    #[serde(skip)]
    matches: String,
}

#[derive(Serialize)]
#[serde(transparent)]
struct RuleReport {
    rules: Vec<Listed>,
    #[serde(skip)]
    iface: String,
}

impl RuleReport {
    fn new(iface: &str, rules: &[Rule]) -> Self {
        let listed = |r: &Rule| {
            let ports = || floodgate::portmap::range_text(r.spec.lo, r.spec.hi);
            Listed {
                id: r.id,
                name: r.spec.name.clone(),
                proto: r.spec.proto.name(),
                src_port: (r.spec.dir == Dir::Src).then(ports),
                dst_port: (r.spec.dir == Dir::Dst).then(ports),
                action: r.spec.action(),
                matched: r.hits.into(),
                matches: r.spec.describe(),
            }
        };
        RuleReport { rules: rules.iter().map(listed).collect(), iface: iface.to_string() }
    }
}

impl Report for RuleReport {
    fn text(&self) -> String {
        if self.rules.is_empty() {
            return format!("no rules on {} (see `floodgate rule add --help`)\n", self.iface);
        }
        let mut t = table(&["id", "name", "match", "action", "packets", "bytes"], 4);
        if let Some(c) = t.column_mut(0) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
        for r in &self.rules {
            t.add_row(vec![
                r.id.to_string(),
                r.name.clone(),
                r.matches.clone(),
                r.action.to_string(),
                grouped(r.matched.packets),
                grouped(r.matched.bytes),
            ]);
        }
        format!("{t}\n")
    }
}

pub fn run(cmd: RuleCommand) -> anyhow::Result<()> {
    match cmd {
        RuleCommand::Add(a) => {
            let mut spec = RuleSpec::parse(
                a.proto.name(),
                a.src_port.as_deref(),
                a.dst_port.as_deref(),
                !matches!(a.action, Action::Pass),
                a.name.as_deref(),
            )?;
            spec.observe = matches!(a.action, Action::Observe);
            let mut s = Session::locked(a.target.name())?;
            let added = s.rules()?.add_rules(std::slice::from_ref(&spec))?;
            match added.first() {
                Some(r) => println!("{}: rule {} '{}': {}", s.pins.iface, r.id, r.spec.name, r.spec),
                None => println!("{}: an identical rule exists already; nothing added", s.pins.iface),
            }
        }
        RuleCommand::Preset { target, preset: Preset::Reflection, observe } => {
            let mut s = Session::locked(target.name())?;
            let mut specs = reflection_preset();
            for r in &mut specs {
                r.observe = observe;
            }
            let added =
                s.rules()?.add_rules(&specs).context("applying the reflection preset (nothing was added)")?;
            println!(
                "{}: reflection preset: {} rules added, {} present already",
                s.pins.iface,
                added.len(),
                specs.len() - added.len()
            );
        }
        RuleCommand::Remove { target, rule } => {
            let mut s = Session::locked(target.name())?;
            let r = s.rules()?.remove_rule(&rule)?;
            println!("{}: removed rule {} '{}': {}", s.pins.iface, r.id, r.spec.name, r.spec);
        }
        RuleCommand::List(Shown { target, format }) => {
            let mut s = Session::read(target.name())?;
            let rules = s.rules()?.rules()?;
            emit(&RuleReport::new(&s.pins.iface, &rules), format.json)?;
        }
    }
    Ok(())
}
