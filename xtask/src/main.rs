//! `cargo xtask`: build helpers and test drivers for floodgate.
//!
//! - `cargo xtask test`: everything CI runs: format and lint checks, host unit and
//!   property tests, then the integration tests on this kernel and in QEMU.
//! - `cargo xtask integration-test local`: the integration tests (real XDP object,
//!   real kernel, network namespaces) on this kernel, one test at a time, as root.
//! - `cargo xtask integration-test vm [--kernel 6.1|6.12|all]`: the same tests inside
//!   QEMU booting Debian's kernels.
//! - `cargo xtask bench [--quick]`: floodgate against the kernel's own filters (bench/).

mod bench;
mod cpio;
mod integration;
mod vm;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "floodgate's build and test driver")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every check and test: fmt, clippy, host tests, integration tests on this kernel
    /// and in QEMU on every kernel of xtask/src/vm.rs.
    Test,
    /// The integration tests (need root: CAP_BPF, CAP_NET_ADMIN).
    IntegrationTest {
        #[command(subcommand)]
        target: integration::Target,
    },
    /// floodgate against nftables, iptables/ipset and no filter (as root); writes
    /// target/bench/report.md and report.json.
    Bench {
        /// Fewer, shorter runs (under two minutes).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Test => {
            cargo(&["fmt", "--all", "--check"]).context("cargo fmt --check: run `cargo fmt`")?;
            cargo(&["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])?;
            let mut tally = Tally::default();
            cargo_test(
                &["test", "--workspace", "--exclude", "integration-tests", "--all-features"],
                &[],
                &mut tally,
            )?;
            integration::run(integration::Target::Local { filter: Vec::new() }, &mut tally)?;
            let vm = integration::Target::Vm { kernel: "all".into(), filter: Vec::new() };
            integration::run(vm, &mut tally)?;
            tally.print();
            // Keeps the bench command from rotting; its figures never fail the suite.
            bench::run(true).context("cargo xtask bench --quick")
        }
        Cmd::Bench { quick } => bench::run(quick),
        Cmd::IntegrationTest { target } => {
            let mut tally = Tally::default();
            integration::run(target, &mut tally)?;
            tally.print();
            Ok(())
        }
    }
}

/// Runs `cargo ARGS` from the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Test counts summed over every `cargo test` run of this invocation.
#[derive(Default)]
pub struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Adds the counts of a libtest summary line ("test result: ok. 5 passed; 0 failed; ...").
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }

    fn print(&self) {
        println!("xtask: {} passed, {} failed", self.passed, self.failed);
    }
}

/// Runs `cargo ARGS` (a `cargo test`), echoing its output and counting its results.
pub fn cargo_test(args: &[&str], env: &[(&str, &std::ffi::OsStr)], tally: &mut Tally) -> anyhow::Result<()> {
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        tally.add_line(line.trim());
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
