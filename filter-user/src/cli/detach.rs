use anyhow::Context as _;
use floodgate::{loader, pins};

/// Detach the filter from an interface and remove every pin it left.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(short, long, value_name = "IFACE")]
    pub interface: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let p = pins::resolve(Some(&args.interface))?;
    super::synproxy::cleanup(&args.interface)?;
    loader::detach(&p).with_context(|| format!("detaching from {}", args.interface))?;
    println!("detached from {}", args.interface);
    Ok(())
}
