//! Commands, CPU accounting and clean-up shared by the parts.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// Prefix of every namespace the bench creates (the tests use `fgt-`).
pub const NS_PREFIX: &str = "fgb-";

/// Runs `prog ARGS`, failing with its stderr; returns stdout.
pub fn run(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {prog} (scripts/setup.sh installs it)"))?;
    if !out.status.success() {
        bail!("{prog} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `prog ARGS` inside namespace `ns` (network only).
pub fn run_in(ns: &str, prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let net = format!("--net=/run/netns/{ns}");
    let mut all = vec![net.as_str(), "--", prog];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// Namespaces of a killed earlier run (deleting one deletes its veths, nft tables,
/// iptables rules and XDP links with it; ipsets are per namespace too).
pub fn cleanup_leftovers() {
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(NS_PREFIX) {
                let _ = run("ip", &["netns", "del", &name]);
            }
        }
    }
}

pub use floodgate_lab::pin_to_cpu;

/// Busy and total time of one CPU from /proc/stat, in ns.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

pub fn cpu_times(cpu: usize) -> anyhow::Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").context("/proc/stat")?;
    let tag = format!("cpu{cpu} ");
    let line =
        stat.lines().find(|l| l.starts_with(&tag)).with_context(|| format!("no {tag}in /proc/stat"))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let to_ns = |t: u64| t * 1_000_000_000 / hz;
    Ok(CpuTimes { busy: to_ns(total - idle), total: to_ns(total) })
}

impl CpuTimes {
    pub fn since(&self, before: &CpuTimes) -> CpuTimes {
        CpuTimes { busy: self.busy - before.busy, total: self.total - before.total }
    }
}

/// Waits until `f` holds, up to `timeout`.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
