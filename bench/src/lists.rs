//! Part 3: loading a million IPv4 prefixes in issue 13's mix: `floodgate blocklist
//! load` (fresh, `--replace` of 1M over 1M, and 10M in the full run), `ipset restore`
//! into a hash:net set and `nft -f` into an interval set, each timed from the command
//! line. Kernel memory: each tool runs in its own memory cgroup (v1
//! `memory.kmem.usage_in_bytes`, or v2 `memory.stat` kernel); BPF maps, nft sets and
//! ipsets charge their memory to the cgroup of the process that created them.
//! floodgate is attached inside its cgroup too, so its figures hold all its maps cost;
//! peaks while a command runs are sampled (and read from v1's own max_usage).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use floodgate_lab::{Netns, ip};
use ipnet::IpNet;
use serde_json::json;

use crate::{
    live::ipset_script,
    obj::realistic_v4,
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
    /// Where memory cgroups go, and whether they are v1.
    fn base() -> (PathBuf, bool) {
        if Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists() {
            (PathBuf::from("/sys/fs/cgroup/memory"), true)
        } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
            (PathBuf::from("/sys/fs/cgroup/unified"), false)
        } else {
            (PathBuf::from("/sys/fs/cgroup"), false)
        }
    }

    /// How [`Memcg::kernel`] measures, for the report.
    fn method() -> &'static str {
        if Self::base().1 { "cgroup v1 memory.kmem.usage_in_bytes" } else { "cgroup v2 memory.stat kernel" }
    }

    /// Whether the cgroup keeps its own peak of kernel memory (v1 kmem.max_usage).
    fn has_max_usage() -> bool {
        Self::base().1
    }

    fn new(name: &str) -> anyhow::Result<Self> {
        let (base, v1) = Self::base();
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

impl Memcg {
    /// [`Memcg::run`], also returning the highest kernel memory charged while it ran:
    /// sampled every 2 ms, and on v1 also the cgroup's own peak (reset first).
    fn run_peak(&self, ns: &str, prog: &str, args: &[&str]) -> anyhow::Result<(f64, u64)> {
        let max_usage = self.dir.join("memory.kmem.max_usage_in_bytes");
        if self.v1 {
            // Writing 0 resets the peak to the current usage.
            let _ = std::fs::write(&max_usage, "0");
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let sampler = s.spawn(|| {
                let mut peak = self.kernel();
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(self.kernel());
                    std::thread::sleep(Duration::from_millis(2));
                }
                peak.max(self.kernel())
            });
            let r = self.run(ns, prog, args);
            stop.store(true, Ordering::Relaxed);
            let mut peak = sampler.join().unwrap_or(0);
            if self.v1 {
                let m = std::fs::read_to_string(&max_usage).unwrap_or_default();
                peak = peak.max(m.trim().parse().unwrap_or(0));
            }
            r.map(|t| (t, peak))
        })
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

/// What floodgate's CLI did to the time and its memory cgroup.
struct FgLoad {
    secs: f64,
    /// Kernel memory charged to floodgate's cgroup when the command ended, since before
    /// `floodgate attach`: every map floodgate made, empty or filled.
    total: u64,
    /// What the command itself added.
    added: u64,
    /// Highest charge while it ran, above the charge before it.
    peak_extra: u64,
    /// What the lists' own maps (compiled arrays, tries, expiry index) hold when the
    /// command ended, by the kernel's per-map accounting (`bpftool map show`'s memlock).
    lists: u64,
}

/// The kernel's memory accounting of floodgate's list maps on the bench interface.
fn list_maps_bytes() -> u64 {
    use filter_common::map_names::*;
    let Some(dir) = std::fs::read_dir("/sys/fs/bpf/floodgate")
        .ok()
        .and_then(|d| d.filter_map(Result::ok).map(|e| e.path().join(IFACE)).find(|p| p.exists()))
    else {
        return 0;
    };
    let mut total = 0;
    for name in LISTS.iter().chain(&[V4_DIR, V4_RANGES, V4_SHORT, EXPIRY]) {
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(dir.join(name))
            .output();
        let v: serde_json::Value = match out {
            Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or_default(),
            _ => continue,
        };
        total += v["bytes_memlock"].as_u64().unwrap_or(0);
    }
    total
}

/// `floodgate attach` in a fresh cgroup `name` (capacity `max`, or the default), then
/// `blocklist load` of `file`, and if given `blocklist load --replace` of `replace`;
/// detaches afterwards. Returns the attach's and the loads' figures.
fn floodgate_loads(
    ns: &str,
    bin: &Path,
    name: &str,
    max: Option<usize>,
    file: &Path,
    replace: Option<&Path>,
) -> anyhow::Result<(FgLoad, FgLoad, Option<FgLoad>)> {
    let binp = bin.to_str().context("non-UTF-8 path")?;
    let cg = Memcg::new(name)?;
    let m0 = cg.kernel();
    let max = max.map(|m| m.to_string());
    let mut attach = vec!["attach", "-i", IFACE, "--mode", "skb"];
    if let Some(m) = &max {
        attach.extend(["--max-entries", m.as_str()]);
    }
    let (t_attach, p_attach) = cg.run_peak(ns, binp, &attach)?;
    let _guard = Attached { bin, ns };
    let m1 = cg.kernel();
    let at = FgLoad {
        secs: t_attach,
        total: m1 - m0,
        added: m1 - m0,
        peak_extra: p_attach.saturating_sub(m0),
        lists: list_maps_bytes(),
    };
    let f = file.to_str().context("non-UTF-8 path")?;
    let (t_load, p_load) = cg.run_peak(ns, binp, &["blocklist", "load", "-i", IFACE, f])?;
    let m2 = cg.kernel();
    let load = FgLoad {
        secs: t_load,
        total: m2.saturating_sub(m0),
        added: m2.saturating_sub(m1),
        peak_extra: p_load.saturating_sub(m1),
        lists: list_maps_bytes(),
    };
    let rep = match replace {
        Some(r) => {
            let r = r.to_str().context("non-UTF-8 path")?;
            let (t, p) = cg.run_peak(ns, binp, &["blocklist", "load", "-i", IFACE, "--replace", r])?;
            let m3 = cg.kernel();
            Some(FgLoad {
                secs: t,
                total: m3.saturating_sub(m0),
                added: m3.saturating_sub(m2),
                peak_extra: p.saturating_sub(m2),
                lists: list_maps_bytes(),
            })
        }
        None => None,
    };
    drop(_guard);
    Ok((at, load, rep))
}

pub fn run(quick: bool, bin: &Path) -> anyhow::Result<Vec<Section>> {
    if !bin.exists() {
        bail!("{} is missing (cargo xtask bench builds it)", bin.display());
    }
    let t_start = Instant::now();
    let n = 1_000_000;
    let big = if quick { None } else { Some(10_000_000) };
    let dir = std::env::temp_dir().join("fgb-lists");
    std::fs::create_dir_all(&dir)?;
    let (a, b) = (realistic_v4(n, 11), realistic_v4(n, 12));
    let (fa, fb, fbig) = (dir.join("a.txt"), dir.join("b.txt"), dir.join("big.txt"));
    write_list(&fa, &a)?;
    write_list(&fb, &b)?;
    drop(b);
    if let Some(m) = big {
        write_list(&fbig, &realistic_v4(m, 13))?;
    }
    let ipset_file = dir.join("a.ipset");
    std::fs::write(&ipset_file, ipset_script("fgb-list", &a))?;
    let nft_file = dir.join("a.nft");
    std::fs::write(&nft_file, nft_set_script(&a))?;
    drop(a);

    let ns = Netns::create("fgb-list")?;
    ip(&["-n", &ns.name, "link", "add", IFACE, "type", "veth", "peer", "name", "fgbm"])?;
    ns.ip(&["link", "set", IFACE, "up"])?;

    // floodgate: attach in its cgroup (the maps are charged there), then load.
    let (fg_attach, fg_load, fg_replace) = floodgate_loads(&ns.name, bin, "floodgate", None, &fa, Some(&fb))?;
    let fg_replace = fg_replace.expect("replace ran");
    eprintln!("bench: floodgate 1M load {:.1} s, --replace {:.1} s", fg_load.secs, fg_replace.secs);
    let fg_big = match big {
        Some(m) => {
            let (at, load, _) = floodgate_loads(&ns.name, bin, "floodgate-10m", Some(m), &fbig, None)?;
            eprintln!("bench: floodgate 10M load {:.1} s", load.secs);
            Some((at, load))
        }
        None => None,
    };

    let ipset_cg = Memcg::new("ipset")?;
    let i0 = ipset_cg.kernel();
    let (t_ipset, ip_peak) =
        ipset_cg.run_peak(&ns.name, "ipset", &["restore", "-file", ipset_file.to_str().unwrap()])?;
    let i1 = ipset_cg.kernel();
    let ipset_own = run_in(&ns.name, "ipset", &["list", "-t", "fgb-list"])?
        .lines()
        .find_map(|l| l.strip_prefix("Size in memory:").map(|v| v.trim().parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);

    let nft_cg = Memcg::new("nft")?;
    let n0 = nft_cg.kernel();
    let (t_nft, nft_peak) = nft_cg.run_peak(&ns.name, "nft", &["-f", nft_file.to_str().unwrap()])?;
    let n1 = nft_cg.kernel();

    let mut sec = Section::new(
        &format!("3. Loading {} IPv4 prefixes (issue 13's mix)", count(n as f64)),
        &[
            "command",
            "time s",
            "vs floodgate load",
            "kernel memory after",
            "of it the lists' maps",
            "added by it",
            "peak extra while it ran",
            "own report",
            "goal",
        ],
    );
    let mut j = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let t_load = fg_load.secs;
    let mut fg_row = |sec: &mut Section, name: &str, l: &FgLoad, goal: String| {
        sec.rows.push(vec![
            name.into(),
            format!("{:.2}", l.secs),
            format!("{:.2}x", l.secs / t_load),
            mib(l.total),
            mib(l.lists),
            mib(l.added),
            mib(l.peak_extra),
            "-".into(),
            goal,
        ]);
        j.push(json!({"command": name, "seconds": l.secs, "kernel_bytes_total": l.total,
            "kernel_bytes_added": l.added, "kernel_bytes_peak_extra": l.peak_extra, "list_maps_bytes": l.lists}));
    };
    fg_row(&mut sec, "floodgate attach (empty maps, default capacity 1M per family)", &fg_attach, "-".into());
    let mib30 = 30 * 1024 * 1024;
    fg_row(
        &mut sec,
        "floodgate blocklist load 1M (fresh)",
        &fg_load,
        format!("<= 1.0 s: {}; <= 30 MiB: {}", verdict(fg_load.secs <= 1.0), verdict(fg_load.lists <= mib30)),
    );
    fg_row(
        &mut sec,
        "floodgate blocklist load --replace 1M over 1M",
        &fg_replace,
        format!(
            "<= 1.2x fresh: {}; peak extra <= fresh load's {}: {}",
            verdict(fg_replace.secs <= 1.2 * fg_load.secs),
            mib(fg_load.added),
            verdict(fg_replace.peak_extra <= fg_load.added)
        ),
    );
    if let Some((at, load)) = &fg_big {
        fg_row(&mut sec, "floodgate attach --max-entries 10M (empty maps)", at, "-".into());
        fg_row(
            &mut sec,
            "floodgate blocklist load 10M (fresh)",
            load,
            format!("<= 10 s: {}", verdict(load.secs <= 10.0)),
        );
    }
    let others: [(&str, f64, u64, u64, String); 2] = [
        (
            "ipset restore 1M (hash:net)",
            t_ipset,
            i1.saturating_sub(i0),
            ip_peak.saturating_sub(i0),
            mib(ipset_own),
        ),
        ("nft -f 1M (interval set)", t_nft, n1.saturating_sub(n0), nft_peak.saturating_sub(n0), "-".into()),
    ];
    for (name, t, mem, peak, own) in others {
        sec.rows.push(vec![
            name.into(),
            format!("{t:.2}"),
            format!("{:.2}x", t / t_load),
            mib(mem),
            "-".into(),
            mib(mem),
            mib(peak),
            own,
            "-".into(),
        ]);
        j.push(json!({"command": name, "seconds": t, "kernel_bytes_total": mem, "kernel_bytes_peak_extra": peak}));
    }
    sec.notes.push(format!(
        "Lists: disjoint IPv4 prefixes at random places in the unicast space, 2% /16, 8% /20, 30% /24, 60% /32; \
         --replace loads a different list of the same size{}. Times: wall time of the command (floodgate's includes \
         reading and parsing the file). Kernel memory: each tool runs in its own memory cgroup ({}), where BPF maps, \
         nft sets and ipsets are charged by the process that creates them. For floodgate \"kernel memory after\" counts \
         from before `floodgate attach`, so it holds everything its maps cost (the hash maps' bucket arrays, sized by \
         the capacity at attach, as well as the entries); \"added by it\" is the change the command made; \"peak extra\" \
         is the highest charge while the command ran above the charge before it (sampled every 2 ms{}). \"Of it the \
         lists' maps\" sums the kernel's own accounting (bpftool memlock) of the maps that hold lists: the compiled \
         IPv4 arrays (preallocated at attach for both lists and both generations, at the capacity), the tries and the \
         expiry index; the rest of floodgate's charge is the limiter's tables (FG_RATE alone is about 20 MiB at the \
         default --max-sources), rules and SYN cookies, which do not grow with lists. The 30 MiB goal is judged on the \
         lists' maps; --replace's goal on its peak extra against what the fresh load \
         added (the new list's memory). ipset's hash is not charged to a memory cgroup, so its own \"Size in memory\" \
         is shown too.",
        if quick { "" } else { "; 10M: /16 and /20 held at the 1M list's counts, the rest 2:1 /32 and /24" },
        Memcg::method(),
        if Memcg::has_max_usage() { ", and the cgroup's own max_usage counter" } else { "" },
    ));
    if quick {
        sec.notes.push("--quick leaves out the 10M load.".into());
    }
    sec.notes.push(format!("Part 3 took {:.0} s.", t_start.elapsed().as_secs_f64()));
    sec.json =
        json!({"entries": n, "rows": j, "ipset_size_in_memory": ipset_own, "memory_method": Memcg::method()});
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![sec])
}
