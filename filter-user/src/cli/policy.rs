//! `policy set|clear|show`: the served-ports policy and the fragment setting.

use clap::{Subcommand, ValueEnum};
use filter_common::rules::PolicyConfig;
use floodgate::policy::{Ephemeral, Served, parse_serve};
use serde_json::{Value, json};

use super::{output::print_json, session::Session};

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Drop TCP and UDP aimed at ports this host does not serve.
    ///
    /// With --serve, a TCP or UDP packet whose destination port is neither served nor
    /// in the ephemeral range is dropped in the driver (dropped.policy). Replies to
    /// this host's own outgoing connections (DNS lookups, package downloads, ...) land
    /// on ephemeral ports, so they keep working: --ephemeral auto reads
    /// net.ipv4.ip_local_port_range in the interface's network namespace when the
    /// policy is set (set it again after changing that sysctl). ICMP and ICMPv6
    /// always pass the policy, so path MTU discovery and neighbour discovery never
    /// break. Allowlisted sources and packets matching a pass rule are exempt.
    ///
    /// --fragments decides non-first fragments, which carry no ports: pass (default)
    /// or drop (dropped.fragment). It can be set without --serve.
    Set(SetArgs),
    /// Remove the policy: every port is open again, fragments pass.
    Clear {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
    },
    /// The policy in force.
    Show {
        #[arg(short, long, value_name = "IFACE")]
        interface: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fragments {
    Pass,
    Drop,
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    #[arg(short, long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Served ports: PROTO/PORT or PROTO/LO-HI, comma-separated (tcp/443,tcp/80,udp/53).
    #[arg(long, value_name = "LIST")]
    pub serve: Option<String>,
    /// Where replies to this host's own connections arrive: auto (the kernel's
    /// ip_local_port_range), LO-HI, or none.
    #[arg(long, value_name = "auto|LO-HI|none", default_value = "auto")]
    pub ephemeral: String,
    #[arg(long, value_enum, default_value_t = Fragments::Pass)]
    pub fragments: Fragments,
}

fn served_text(s: &Served) -> String {
    format!("{}/{}", s.proto.name(), floodgate::portmap::range_text(s.lo, s.hi))
}

fn describe(cfg: &PolicyConfig, served: &[Served]) -> Value {
    json!({
        "enforced": cfg.enforce != 0,
        "serve": served.iter().map(served_text).collect::<Vec<_>>(),
        "ephemeral": (cfg.ephemeral != 0).then(|| format!("{}-{}", cfg.eph_lo, cfg.eph_hi)),
        "fragments": if cfg.drop_fragments != 0 { "drop" } else { "pass" },
    })
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Set(a) => {
            let served = a.serve.as_deref().map(parse_serve).transpose()?.unwrap_or_default();
            if a.serve.is_some() && served.is_empty() {
                anyhow::bail!("--serve lists no ports; to stop enforcing, use `floodgate policy clear`");
            }
            let eph = Ephemeral::parse(&a.ephemeral)?.resolve()?;
            let cfg = PolicyConfig {
                enforce: a.serve.is_some() as u8,
                drop_fragments: (a.fragments == Fragments::Drop) as u8,
                ephemeral: eph.is_some() as u8,
                _pad: 0,
                eph_lo: eph.map_or(0, |e| e.0),
                eph_hi: eph.map_or(0, |e| e.1),
            };
            let mut s = Session::locked(a.interface.as_deref())?;
            s.policy()?.set_policy(cfg, &served)?;
            println!("{}: {}", s.pins.iface, human(&cfg, &served));
        }
        PolicyCommand::Clear { interface } => {
            let mut s = Session::locked(interface.as_deref())?;
            s.policy()?.set_policy(PolicyConfig::default(), &[])?;
            println!("{}: policy cleared: every port open, fragments pass", s.pins.iface);
        }
        PolicyCommand::Show { interface, json } => {
            let mut s = Session::read(interface.as_deref())?;
            let st = s.policy()?.policy_state()?;
            if json {
                return print_json(&describe(&st.config, &st.served));
            }
            println!("{}: {}", s.pins.iface, human(&st.config, &st.served));
        }
    }
    Ok(())
}

fn human(cfg: &PolicyConfig, served: &[Served]) -> String {
    let ports = if cfg.enforce == 0 {
        "every port open".to_string()
    } else {
        let list: Vec<_> = served.iter().map(served_text).collect();
        let eph = if cfg.ephemeral != 0 {
            format!("ephemeral {}-{}", cfg.eph_lo, cfg.eph_hi)
        } else {
            "no ephemeral range".to_string()
        };
        format!("serving {} ({eph}); other TCP/UDP ports dropped", list.join(","))
    };
    let frags = if cfg.drop_fragments != 0 { "non-first fragments dropped" } else { "fragments pass" };
    format!("{ports}; {frags}")
}
