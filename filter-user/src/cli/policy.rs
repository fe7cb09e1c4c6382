//! `policy set|clear|show`: the served-ports policy and the fragment setting.

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use filter_common::rules::PolicyConfig;
use floodgate::policy::{Ephemeral, Served, parse_serve, policy_config};
use serde::Serialize;

use super::{
    Shown, Target,
    output::{Report, emit},
    session::Session,
};

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
        #[command(flatten)]
        target: Target,
    },
    /// The policy in force.
    Show(Shown),
}

/// What becomes of non-first fragments, which carry no ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fragments {
    /// Pass them (the default).
    Pass,
    /// Drop them (counted as dropped.fragment).
    Drop,
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    #[command(flatten)]
    pub target: Target,
    /// Served ports, the rest of TCP and UDP is dropped: [tcp/|udp/]PORT[-PORT][,...],
    /// e.g. tcp/443,tcp/80,udp/53; a port without tcp/ or udp/ is served on both.
    #[arg(long, value_name = "PORTS")]
    pub serve: Option<String>,
    /// Where replies to this host's own connections arrive: auto (the kernel's
    /// ip_local_port_range), a range LO-HI (e.g. 32768-60999), or none.
    #[arg(long, value_name = "auto|LO-HI|none", default_value = "auto")]
    pub ephemeral: String,
    /// Non-first fragments (no ports to check): pass or drop.
    #[arg(long, value_enum, default_value_t = Fragments::Pass)]
    pub fragments: Fragments,
    /// Dry run: count what the policy would drop (would_drop.policy and
    /// would_drop.fragment in `floodgate stats`) and pass it. Set it again without
    /// --observe to enforce.
    #[arg(long)]
    pub observe: bool,
}

/// `policy show --json`.
#[derive(Serialize)]
struct PolicyReport {
    #[serde(skip)]
    iface: String,
    enforced: bool,
    serve: Vec<String>,
    ephemeral: Option<String>,
    fragments: &'static str,
    /// Observe mode: what it would drop is counted and passed.
    observe: bool,
}

impl PolicyReport {
    fn new(iface: &str, cfg: &PolicyConfig, served: &[Served]) -> Self {
        PolicyReport {
            iface: iface.to_string(),
            enforced: cfg.enforce != 0,
            serve: served.iter().map(Served::to_string).collect(),
            ephemeral: (cfg.ephemeral != 0).then(|| format!("{}-{}", cfg.eph_lo, cfg.eph_hi)),
            fragments: if cfg.drop_fragments != 0 { "drop" } else { "pass" },
            observe: cfg.observe != 0,
        }
    }
}

impl Report for PolicyReport {
    fn text(&self) -> String {
        let ports = if !self.enforced {
            "every port open".to_string()
        } else {
            let eph = match &self.ephemeral {
                Some(range) => format!("ephemeral {range}"),
                None => "no ephemeral range".to_string(),
            };
            format!("serving {} ({eph}); other TCP/UDP ports dropped", self.serve.join(","))
        };
        let frags = if self.fragments == "drop" { "non-first fragments dropped" } else { "fragments pass" };
        if self.observe && (self.enforced || self.fragments == "drop") {
            let (ports, frags) = (ports.replace("dropped", "counted"), frags.replace("dropped", "counted"));
            return format!(
                "{}: OBSERVE MODE, nothing dropped: {ports}; {frags} (as would_drop in `floodgate stats`)\n",
                self.iface
            );
        }
        format!("{}: {ports}; {frags}\n", self.iface)
    }
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Set(a) => {
            let served =
                a.serve.as_deref().map(parse_serve).transpose().context("--serve")?.unwrap_or_default();
            if a.serve.is_some() && served.is_empty() {
                anyhow::bail!("--serve lists no ports; to stop enforcing, use `floodgate policy clear`");
            }
            let eph = Ephemeral::parse(&a.ephemeral).context("--ephemeral")?.resolve()?;
            let mut cfg = policy_config(a.serve.is_some(), eph, a.fragments == Fragments::Drop);
            cfg.observe = a.observe as u8;
            let mut s = Session::locked(a.target.name())?;
            s.policy()?.set_policy(cfg, &served)?;
            emit(&PolicyReport::new(&s.pins.iface, &cfg, &served), false)?;
        }
        PolicyCommand::Clear { target } => {
            let mut s = Session::locked(target.name())?;
            s.policy()?.set_policy(PolicyConfig::default(), &[])?;
            println!("{}: policy cleared: every port open, fragments pass", s.pins.iface);
        }
        PolicyCommand::Show(Shown { target, format }) => {
            let mut s = Session::read(target.name())?;
            let st = s.policy()?.policy_state()?;
            emit(&PolicyReport::new(&s.pins.iface, &st.config, &st.served), format.json)?;
        }
    }
    Ok(())
}
