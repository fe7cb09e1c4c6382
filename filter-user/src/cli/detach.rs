use anyhow::Context as _;
use floodgate::{
    loader,
    maps::Pinned,
    pins::{self, Purpose},
    synproxy::SynProxyMaps,
};

use super::Iface;

/// Detach the filter from an interface and remove every pin it left.
///
/// Works on pins of
/// any floodgate version and on a filter whose interface is gone. Also undoes
/// `synproxy enable`.
///
/// Example: floodgate detach -i eth0
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub iface: Iface,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let iface = &args.iface.interface;
    let p = pins::resolve_for(Some(iface), Purpose::Detach)?;
    // The SYN-cookie set-up lives outside the maps (nftables, sysctls): undo it while
    // its state is readable, i.e. the pins are this version's. Only that group is
    // read: whatever else is pinned, the detach goes ahead.
    let synproxy = || Pinned::open(&p).and_then(|mut src| SynProxyMaps::open(&mut src));
    let readable = p.layout == pins::Layout::Scoped && synproxy().is_ok();
    if readable && matches!(p.state(), pins::State::Live(_)) {
        super::synproxy::cleanup(iface)?;
    } else if readable {
        // The interface is gone: no session can name it, so read the pins directly.
        let _lock = p.lock()?;
        synproxy()?
            .disable_synproxy()
            .with_context(|| format!("removing the SYN-cookie set-up of {iface}"))?;
    } else {
        eprintln!(
            "floodgate: warning: the pins in {} are not this version's: if SYN cookies were on, \
             check `nft list tables` and net.netfilter.nf_conntrack_tcp_loose by hand",
            p.dir.display()
        );
    }
    loader::detach(&p).with_context(|| format!("detaching from {iface}"))?;
    println!("detached from {iface} (removed {})", p.dir.display());
    Ok(())
}
