/// Run a self-contained demonstration in network namespaces it creates and removes.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Length of the demonstration in seconds.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("demo: not yet")
}
