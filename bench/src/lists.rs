//! Part 3: loading a million mixed IPv4 prefixes: `floodgate blocklist load` (fresh
//! and `--replace`), `ipset restore` into a hash:net set and `nft -f` into an
//! interval set, each timed from the command line. Kernel memory: each command runs
//! in its own memory cgroup (v1 `memory.kmem.usage_in_bytes`, or v2
//! `memory.stat` kernel); BPF maps, nft sets and ipsets charge their memory to the
//! cgroup of the process that created them.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use floodgate::lab::{Netns, ip};
use ipnet::IpNet;
use serde_json::json;

use crate::{
    live::{disjoint_v4, ipset_script},
    report::{Section, count},
    sys::run_in,
};

const IFACE: &str = "fgbl";

/// A memory cgroup for one tool, removed on drop.
struct Memcg {
    dir: PathBuf,
    v1: bool,
}

impl Memcg {
    fn new(name: &str) -> anyhow::Result<Self> {
        let (base, v1) = if Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists() {
            (PathBuf::from("/sys/fs/cgroup/memory"), true)
        } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
            (PathBuf::from("/sys/fs/cgroup/unified"), false)
        } else {
            (PathBuf::from("/sys/fs/cgroup"), false)
        };
        let dir = base.join(format!("fgb-bench-{name}"));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Memcg { dir, v1 })
    }

    /// Kernel memory charged to the cgroup, bytes.
    fn kernel(&self) -> u64 {
        if self.v1 {
            let s = std::fs::read_to_string(self.dir.join("memory.kmem.usage_in_bytes")).unwrap_or_default();
            return s.trim().parse().unwrap_or(0);
        }
        let s = std::fs::read_to_string(self.dir.join("memory.stat")).unwrap_or_default();
        s.lines().find_map(|l| l.strip_prefix("kernel ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    /// Runs `prog ARGS` in namespace `ns` inside this cgroup; returns wall seconds.
    fn run(&self, ns: &str, prog: &str, args: &[&str]) -> anyhow::Result<f64> {
        let procs = self.dir.join("cgroup.procs");
        let t = Instant::now();
        let out = Command::new("sh")
            .arg("-c")
            .arg("echo $$ > \"$0\" && ns=\"$1\" && shift && exec nsenter --net=\"$ns\" -- \"$@\"")
            .arg(&procs)
            .arg(format!("/run/netns/{ns}"))
            .arg(prog)
            .args(args)
            .output()
            .with_context(|| format!("running {prog}"))?;
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("{prog} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(secs)
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Detaches floodgate from the bench interface on drop (its pins live in the root
/// bpffs, which outlives the namespace).
struct Attached<'a> {
    bin: &'a Path,
    ns: &'a str,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        let _ = run_in(self.ns, self.bin.to_str().unwrap_or("floodgate"), &["detach", "-i", IFACE]);
    }
}

fn write_list(path: &Path, list: &[IpNet]) -> anyhow::Result<()> {
    let mut s = String::with_capacity(list.len() * 18);
    for p in list {
        let _ = writeln!(s, "{p}");
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn nft_set_script(list: &[IpNet]) -> String {
    let mut s =
        String::from("table inet fgbl {\n  set block { type ipv4_addr; flags interval; elements = { ");
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{p}");
    }
    s.push_str(" } }\n}\n");
    s
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

pub fn run(quick: bool, bin: &Path) -> anyhow::Result<Vec<Section>> {
    if !bin.exists() {
        bail!("{} is missing (cargo xtask bench builds it)", bin.display());
    }
    let n = if quick { 100_000 } else { 1_000_000 };
    let dir = std::env::temp_dir().join("fgb-lists");
    std::fs::create_dir_all(&dir)?;
    let (a, b) = (disjoint_v4(n, 11), disjoint_v4(n, 12));
    let (fa, fb) = (dir.join("a.txt"), dir.join("b.txt"));
    write_list(&fa, &a)?;
    write_list(&fb, &b)?;
    let ipset_file = dir.join("a.ipset");
    std::fs::write(&ipset_file, ipset_script("fgb-list", &a))?;
    let nft_file = dir.join("a.nft");
    std::fs::write(&nft_file, nft_set_script(&a))?;

    let ns = Netns::create("fgb-list")?;
    ip(&["-n", &ns.name, "link", "add", IFACE, "type", "veth", "peer", "name", "fgbm"])?;
    ns.ip(&["link", "set", IFACE, "up"])?;
    let binp = bin.to_str().context("non-UTF-8 path")?;
    let mut sec = Section::new(
        &format!("3. Loading {} mixed IPv4 prefixes", count(n as f64)),
        &["tool", "time s", "vs floodgate load", "kernel memory (memcg)", "own report"],
    );
    let mut j = Vec::new();

    // floodgate: attach in its cgroup (the maps are charged there), then load.
    let fg = Memcg::new("floodgate")?;
    let max = n.max(1000).to_string();
    fg.run(&ns.name, binp, &["attach", "-i", IFACE, "--mode", "skb", "--max-entries", &max])?;
    let _guard = Attached { bin, ns: &ns.name };
    let m0 = fg.kernel();
    let t_load = fg.run(&ns.name, binp, &["blocklist", "load", "-i", IFACE, fa.to_str().unwrap()])?;
    let m1 = fg.kernel();
    let t_replace =
        fg.run(&ns.name, binp, &["blocklist", "load", "-i", IFACE, "--replace", fb.to_str().unwrap()])?;
    let m2 = fg.kernel();
    drop(_guard);

    let ipset_cg = Memcg::new("ipset")?;
    let i0 = ipset_cg.kernel();
    let t_ipset = ipset_cg.run(&ns.name, "ipset", &["restore", "-file", ipset_file.to_str().unwrap()])?;
    let i1 = ipset_cg.kernel();
    let ipset_own = run_in(&ns.name, "ipset", &["list", "-t", "fgb-list"])?
        .lines()
        .find_map(|l| l.strip_prefix("Size in memory:").map(|v| v.trim().parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);

    let nft_cg = Memcg::new("nft")?;
    let n0 = nft_cg.kernel();
    let t_nft = nft_cg.run(&ns.name, "nft", &["-f", nft_file.to_str().unwrap()])?;
    let n1 = nft_cg.kernel();

    let rows: [(&str, f64, u64, String); 4] = [
        ("floodgate blocklist load (fresh)", t_load, m1.saturating_sub(m0), "-".into()),
        ("floodgate blocklist load --replace", t_replace, m2.saturating_sub(m0), "-".into()),
        ("ipset restore (hash:net)", t_ipset, i1.saturating_sub(i0), mib(ipset_own)),
        ("nft -f (interval set)", t_nft, n1.saturating_sub(n0), "-".into()),
    ];
    for (name, t, mem, own) in rows {
        sec.rows.push(vec![name.into(), format!("{t:.2}"), format!("{:.2}x", t / t_load), mib(mem), own]);
        j.push(json!({"tool": name, "seconds": t, "kernel_bytes": mem}));
    }
    sec.notes.push(format!(
        "Disjoint random prefixes (/20 to /32, half of them /32), {} per list; --replace loads a different list of \
         the same size. Times are wall time of the command. floodgate's memory is its maps' after the load (for \
         --replace: after the old generation is deleted); ipset's hash is not charged to a memory cgroup, so its \
         own \"Size in memory\" is shown too.",
        count(n as f64)
    ));
    if quick {
        sec.notes.push("--quick loads 100,000 prefixes; the full run 1,000,000.".into());
    }
    sec.json = json!({"entries": n, "rows": j, "ipset_size_in_memory": ipset_own});
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![sec])
}
