//! `cargo xtask bench [--quick]`: builds floodgate and the bench (release) and runs
//! it as root; the bench itself lives in the `floodgate-bench` crate (bench/).

use anyhow::{Context as _, bail};

use crate::{cargo, workspace_root};

pub fn run(quick: bool) -> anyhow::Result<()> {
    // Two builds: `--bin floodgate` would also filter floodgate-bench's binaries.
    cargo(&["build", "--release", "--package", "filter-user", "--bin", "floodgate"])?;
    cargo(&["build", "--release", "--package", "floodgate-bench"])?;
    let root = workspace_root();
    let release = root.join("target/release");
    let mut cmd = std::process::Command::new(release.join("floodgate-bench"));
    cmd.arg("--out").arg(root.join("target/bench")).arg("--floodgate").arg(release.join("floodgate"));
    if quick {
        cmd.arg("--quick");
    }
    let status = cmd.current_dir(&root).status().context("running floodgate-bench")?;
    if !status.success() {
        bail!("floodgate-bench failed ({status})");
    }
    Ok(())
}
