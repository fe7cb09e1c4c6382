//! `synproxy enable|disable|show`: SYN cookies answered in the driver.

use anyhow::Context as _;
use clap::Subcommand;
use floodgate::portmap::ranges_text;
use floodgate::synproxy::{NFT_TABLE, parse_ports};
use serde::Serialize;

use super::{
    Shown, Target,
    output::{Count, Report, emit},
    session::Session,
};

#[derive(Subcommand, Debug)]
pub enum SynProxyCommand {
    /// Answer SYNs to these ports in the driver with SYN cookies.
    ///
    /// A TCP SYN to a protected port from a source that is not allowlisted is turned
    /// into a SYN-ACK carrying a cookie made with the kernel's own secret and sent
    /// straight back: a SYN flood from spoofed sources never reaches the listener or
    /// fills its queue. Clients that answer with a valid ACK are handed to the
    /// listener by netfilter's SYNPROXY: floodgate creates the nftables table
    /// `inet floodgate` for that, sets net.netfilter.nf_conntrack_tcp_loose=0 and
    /// (if off) net.ipv4.tcp_syncookies=1 in this namespace, and undoes all of it on
    /// `disable` or `detach`. The window scale announced is the listener's, computed
    /// from tcp_rmem and rmem_max as the kernel does (a listener that sets SO_RCVBUF
    /// itself may use another: leave such ports out). Without client timestamps a
    /// cookie carries only the MSS, as the kernel's own cookies do.
    ///
    /// Example: floodgate synproxy enable --ports 80,443 --above-pps 2000
    Enable {
        #[command(flatten)]
        target: Target,
        /// Protected TCP ports: [tcp/]PORT[-PORT][,...], e.g. 80,443,8000-8010 (udp/ is
        /// refused: SYN cookies are TCP's).
        #[arg(long, value_name = "PORTS")]
        ports: String,
        /// SYNs per second per port that still go to the listener as usual, so that
        /// without a flood connections keep every TCP option (0: answer all).
        #[arg(long, value_name = "N", default_value_t = 0)]
        above_pps: u32,
    },
    /// Stop answering SYNs; remove the nftables table and restore the sysctls.
    Disable {
        #[command(flatten)]
        target: Target,
    },
    /// What is protected, and whether floodgate's nftables table is in place.
    Show(Shown),
}

/// `synproxy show --json`. `nft_table`: this interface's chain is in place;
/// `leftover_chain`: it is there although SYN cookies are off (an `enable` or
/// `disable` cut short: `disable` removes it).
#[derive(Serialize)]
struct SynProxyReport {
    #[serde(skip)]
    iface: String,
    enabled: bool,
    ports: String,
    above_pps: u32,
    wscale: u8,
    nft_table: bool,
    leftover_chain: bool,
    synproxy_rule: Option<Count>,
}

impl SynProxyReport {
    fn new(s: &mut Session) -> anyhow::Result<Self> {
        let maps = s.synproxy()?;
        let cfg = maps.synproxy_config()?;
        let ports = maps.synproxy_ports()?;
        let counter = maps.synproxy_chain()?;
        Ok(SynProxyReport {
            iface: s.pins.iface.clone(),
            enabled: cfg.enabled != 0,
            ports: ranges_text(&ports),
            above_pps: cfg.above_pps,
            wscale: cfg.wscale,
            nft_table: cfg.enabled != 0 && counter.is_some(),
            leftover_chain: cfg.enabled == 0 && counter.is_some(),
            synproxy_rule: counter.map(|(packets, bytes)| Count { packets, bytes }),
        })
    }
}

impl Report for SynProxyReport {
    fn text(&self) -> String {
        let iface = &self.iface;
        if self.enabled {
            let above =
                if self.above_pps == 0 { String::new() } else { format!(" above {}/s", self.above_pps) };
            // new() listed the table already: no second nft run.
            let table = if self.nft_table { "in place" } else { "chain MISSING (run enable again)" };
            format!(
                "{iface}: SYN cookies for tcp port(s) {}{above}, window scale {}; nftables table {table}\n",
                self.ports, self.wscale
            )
        } else if self.leftover_chain {
            format!(
                "{iface}: SYN cookies off, but its chain in nftables table inet {NFT_TABLE} is still in place \
                 (an enable or disable was cut short): run `floodgate synproxy disable`\n"
            )
        } else {
            format!("{iface}: SYN cookies off\n")
        }
    }
}

pub fn run(cmd: SynProxyCommand) -> anyhow::Result<()> {
    match cmd {
        SynProxyCommand::Enable { target, ports, above_pps: above } => {
            let ports = parse_ports(&ports).context("--ports")?;
            let mut s = Session::locked(target.name())?;
            let cfg = s
                .synproxy()?
                .enable_synproxy(&ports, above)
                .with_context(|| format!("enabling SYN cookies on {} (nothing was changed)", s.pins.iface))?;
            let when =
                if above == 0 { "every SYN".to_string() } else { format!("SYNs above {above}/s per port") };
            println!(
                "{}: answering {when} to tcp port(s) {} with SYN cookies (window scale {}); \
                 nftables table inet {NFT_TABLE} completes the handshakes",
                s.pins.iface,
                ranges_text(&ports),
                cfg.wscale
            );
        }
        SynProxyCommand::Disable { target } => {
            let mut s = Session::locked(target.name())?;
            let done = s
                .synproxy()?
                .disable_synproxy()
                .with_context(|| format!("disabling SYN cookies on {} (run disable again)", s.pins.iface))?;
            if done {
                println!(
                    "{}: SYN cookies off; its chain in table inet {NFT_TABLE} removed (the table, and the \
                     sysctls' old values, go with the namespace's last protected interface)",
                    s.pins.iface
                );
            } else {
                println!("{}: SYN cookies were not enabled", s.pins.iface);
            }
        }
        SynProxyCommand::Show(Shown { target, format }) => {
            let mut s = Session::read(target.name())?;
            emit(&SynProxyReport::new(&mut s)?, format.json)?;
        }
    }
    Ok(())
}

/// Undoes `enable` before a detach (the table and sysctls would outlive the maps).
pub fn cleanup(iface: &str) -> anyhow::Result<()> {
    let mut s = Session::locked(Some(iface))?;
    s.synproxy()?.disable_synproxy().with_context(|| format!("removing the SYN-cookie set-up of {iface}"))?;
    Ok(())
}
