//! `reload`: make the running service re-read its config, and report the outcome.

use super::{Format, service};

/// Re-read the running service's config file and apply what changed.
///
/// Talks to the `floodgate run --config` of this network namespace over its control
/// socket and waits for the outcome. A bad file is refused whole (every error is
/// printed) and the running state is kept; a good one applies only what changed.
/// systemd's ExecReload runs this.
///
/// Example: floodgate reload --accept-shrink
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also apply fetched URL lists that were held back because they shrank by more
    /// than their max_shrink (a mirror serving a truncated list looks like that).
    #[arg(long)]
    pub accept_shrink: bool,
    #[command(flatten)]
    pub format: Format,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let reply = service::request(&service::Request { reload: true, accept_shrink: args.accept_shrink })?;
    if args.format.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        for (iface, change) in &reply.changes {
            println!("{iface}: {change}");
        }
        for e in &reply.errors {
            eprintln!("{e}");
        }
    }
    if !reply.ok {
        anyhow::bail!("reload refused or incomplete (the service keeps running; see its log)");
    }
    if !args.format.json {
        println!("reloaded in {:.3} s", reply.seconds);
    }
    Ok(())
}
