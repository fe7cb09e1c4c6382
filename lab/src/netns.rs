//! Network namespaces managed with iproute2, entered per thread with setns(2).

use std::{
    fs::File,
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

/// Runs `ip ARGS...`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

fn run(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out: Output = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {prog} (is iproute2 installed? scripts/setup.sh installs it)"))?;
    if !out.status.success() {
        bail!("{prog} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `name` with loopback up. A leftover namespace of that name (from a run
    /// that was killed) is replaced.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        if PathBuf::from("/run/netns").join(name).exists() {
            let _ = ip(&["netns", "del", name]);
        }
        ip(&["netns", "add", name])?;
        let ns = Self { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs a program inside the namespace (network only, as `nsenter --net` does).
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display())).arg("--").arg(prog);
        c
    }

    /// Writes a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.enter(|| std::fs::write(&path, value))?
            .with_context(|| format!("setting {key}={value} in {}", self.name))
    }

    /// Runs `f` on a thread inside the namespace. Sockets it creates stay in the
    /// namespace and can be used from any thread afterwards.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<T> {
                let fd = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                // Only this (scoped) thread moves.
                setns(fd, CloneFlags::CLONE_NEWNET).context("setns")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
        })
    }

    /// MAC address of an interface in this namespace.
    pub fn mac(&self, iface: &str) -> anyhow::Result<[u8; 6]> {
        let out = self.ip(&["-br", "link", "show", "dev", iface])?;
        let text = out.split_whitespace().nth(2).unwrap_or("");
        let mut mac = [0u8; 6];
        let parts: Vec<_> = text.split(':').collect();
        if parts.len() != 6 {
            bail!("no MAC address for {iface} in {}: {out}", self.name);
        }
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {text}"))?;
        }
        Ok(mac)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it (and their peers).
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// One end of a veth pair: its namespace, interface name and addresses.
pub type End<'a> = (&'a Netns, &'a str, &'a [&'a str]);

/// A veth pair between two ends, both up, with the given addresses. No default route
/// anywhere: traffic cannot leave the lab.
pub fn veth_pair(a: End, b: End) -> anyhow::Result<()> {
    veth_pair_queues(a, b, 1)
}

/// As [`veth_pair`], with `queues` RX/TX queues per end: frames sent from different
/// CPUs then reach the peer's XDP program on different CPUs.
pub fn veth_pair_queues(a: End, b: End, queues: u32) -> anyhow::Result<()> {
    let q = queues.to_string();
    let ((a_ns, a_dev, _), (b_ns, b_dev, _)) = (a, b);
    #[rustfmt::skip]
    ip(&[
        "link", "add", a_dev, "netns", &a_ns.name, "numtxqueues", &q, "numrxqueues", &q, "type", "veth",
        "peer", "name", b_dev, "netns", &b_ns.name, "numtxqueues", &q, "numrxqueues", &q,
    ])?;
    for (ns, dev, addrs) in [a, b] {
        for addr in addrs {
            // nodad: IPv6 addresses are usable at once, not after duplicate detection.
            let mut args = vec!["addr", "add", *addr, "dev", dev];
            if addr.contains(':') {
                args.push("nodad");
            }
            ns.ip(&args)?;
        }
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}
