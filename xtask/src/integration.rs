//! Running the integration-test crate on the host kernel or in QEMU ([`crate::vm`]).

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::{Tally, cargo, cargo_test, workspace_root};

#[derive(Subcommand, Clone)]
pub enum Target {
    /// On this machine's kernel.
    Local {
        /// Only tests whose name contains one of these.
        filter: Vec<String>,
    },
    /// Inside QEMU, booting Debian's kernels (see xtask/src/vm.rs for the list).
    Vm {
        /// Which kernel: 6.1, 6.12 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Only tests whose name contains one of these.
        filter: Vec<String>,
    },
}

pub fn run(target: Target, tally: &mut Tally) -> anyhow::Result<()> {
    match target {
        Target::Local { filter } => local(&filter, tally),
        Target::Vm { kernel, filter } => crate::vm::run(&kernel, &filter, tally),
    }
}

fn local(filter: &[String], tally: &mut Tally) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("the integration tests load XDP programs and create network namespaces: run them as root");
    }
    cargo(&["build", "--package", "filter-user", "--bin", "floodgate"])?;
    // The demo's test runs it (it runs the floodgate next to it).
    cargo(&["build", "--package", "floodgate-lab", "--bin", "floodgate-demo"])?;
    let bin = workspace_root().join("target/debug/floodgate");
    let demo = workspace_root().join("target/debug/floodgate-demo");
    // One test at a time: the tests share the kernel's bpffs and XDP hooks.
    let mut args = vec!["test", "--package", "integration-tests", "--", "--test-threads=1"];
    args.extend(filter.iter().map(String::as_str));
    let env = [
        ("FLOODGATE_BIN", bin.as_os_str()),
        ("FLOODGATE_DEMO_BIN", demo.as_os_str()),
        ("RUST_BACKTRACE", "1".as_ref()),
    ];
    cargo_test(&args, &env, tally).context("integration tests failed")
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
