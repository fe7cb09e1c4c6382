//! The integration tests inside QEMU, booting Debian's kernels.
//!
//! Per kernel: the Debian package is downloaded through a private apt configuration
//! and extracted under `target/vm/` (never installed), the uncompressed `vmlinux` is
//! cut out of its bzImage (decompressing under TCG costs seconds), and an initramfs is
//! written here in Rust: busybox for init, the static (musl) test binaries and
//! `floodgate`, the kernel modules they need and the host tools they call. One boot
//! runs every test binary; the result is an explicit marker line plus the exit status
//! the guest sets through isa-debug-exit.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{Tally, cpio::Cpio, workspace_root};

/// A kernel `integration-test vm` can boot: the newest `linux-image-amd64` of `suite`
/// whose version starts with `version_prefix`.
pub struct Kernel {
    /// What `--kernel` accepts.
    pub name: &'static str,
    pub suite: &'static str,
    pub version_prefix: &'static str,
}

/// The kernels `--kernel all` boots. To add one, add an entry: the suite is fetched
/// from the host's Debian mirror through the private apt configuration.
pub const KERNELS: &[Kernel] = &[
    Kernel { name: "6.1", suite: "bookworm", version_prefix: "6.1." },
    Kernel { name: "6.12", suite: "bookworm-backports", version_prefix: "6.12." },
];

/// Kernel modules the tests need (with their dependencies); ones built in are skipped.
/// nf_tables, nft_ct and nft_synproxy: `floodgate synproxy` completes handshakes with
/// an nftables `synproxy` rule.
const MODULES: &[&str] = &["veth", "virtio_net", "virtio_pci", "nf_tables", "nft_ct", "nft_synproxy"];

/// Host programs the tests and the lab helpers run (`Command::new`, `Netns::command`),
/// copied with the shared libraries `ldd` lists. A test calling a new program must
/// add it here.
const HOST_TOOLS: &[&str] = &["ip", "nsenter", "bpftool", "dnsmasq", "dig", "nft", "nginx", "curl", "nstat"];

/// MAC addresses of the guest's two virtio-net NICs; tests/tests/nic.rs finds its
/// NICs by these, so it never touches any other interface.
const NIC_MACS: [&str; 2] = ["52:54:00:f1:00:01", "52:54:00:f1:00:02"];

const MUSL: &str = "x86_64-unknown-linux-musl";
const MARKER: &str = "FLOODGATE-VM-DONE status=";

/// One kernel's run.
struct KernelRun {
    name: &'static str,
    ok: bool,
    /// Why the run failed as a whole (no marker, panic, timeout, exit status).
    problem: Option<String>,
    /// `binary::test` → ok / FAILED / ignored.
    results: BTreeMap<String, String>,
    boot: Option<Duration>,
    total: Duration,
    /// The console, for the tally of libtest summaries.
    lines: Vec<String>,
}

pub fn run(kernel: &str, filter: &[String], tally: &mut Tally) -> anyhow::Result<()> {
    let kernels: Vec<&Kernel> = if kernel == "all" {
        KERNELS.iter().collect()
    } else {
        let names: Vec<_> = KERNELS.iter().map(|k| k.name).collect();
        vec![
            KERNELS
                .iter()
                .find(|k| k.name == kernel)
                .with_context(|| format!("unknown kernel {kernel:?}: one of {names:?} or all"))?,
        ]
    };
    let dir = workspace_root().join("target/vm");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let started = Instant::now();
    let payload = build_payload()?;
    println!("xtask vm: built the musl test binaries in {:.0?}", started.elapsed());

    let mut guests = Vec::new();
    for k in kernels {
        let tree = fetch_kernel(k, &dir)?;
        let initrd = dir.join(format!("initramfs-{}.cpio", k.name));
        write_initramfs(&tree, &payload, filter, &initrd)?;
        guests.push((k, tree, initrd));
    }
    // The guests mostly wait (paced traffic, settling sinks), so running them side by
    // side nearly halves the wall time; FLOODGATE_VM_JOBS=1 runs one after the other.
    let jobs: usize =
        std::env::var("FLOODGATE_VM_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(2).max(1);
    let mut runs = Vec::new();
    for batch in guests.chunks(jobs) {
        let results: Vec<anyhow::Result<KernelRun>> = std::thread::scope(|s| {
            let handles: Vec<_> =
                batch.iter().map(|(k, tree, initrd)| s.spawn(move || boot(k, tree, initrd))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("boot panicked"))))
                .collect()
        });
        for r in results {
            let r = r?;
            for l in &r.lines {
                tally.add_line(l.trim());
            }
            runs.push(r);
        }
    }
    for (_, _, initrd) in &guests {
        let _ = fs::remove_file(initrd);
    }
    summary(&runs);
    let failed: Vec<_> = runs.iter().filter(|r| !r.ok).map(|r| r.name).collect();
    if !failed.is_empty() {
        bail!("integration tests failed in the VM on kernel(s) {}", failed.join(", "));
    }
    Ok(())
}

/// Static binaries for the guest.
struct Payload {
    floodgate: PathBuf,
    /// (name, path) of each test executable of the integration-tests crate.
    tests: Vec<(String, PathBuf)>,
}

/// Cargo flags for the guest's binaries: their own profile, without debug info, so
/// the initramfs stays small and host builds are not invalidated.
const GUEST_PROFILE: &[&str] = &[
    "--target",
    MUSL,
    "--profile",
    "guest",
    "--config",
    "profile.guest.inherits=\"dev\"",
    "--config",
    "profile.guest.debug=0",
    "--config",
    "profile.guest.strip=\"debuginfo\"",
    // Unoptimized code is many times slower under TCG (a million-entry list load).
    "--config",
    "profile.guest.opt-level=2",
];

fn build_payload() -> anyhow::Result<Payload> {
    let mut args = vec!["build", "--package", "filter-user", "--bin", "floodgate"];
    args.extend_from_slice(GUEST_PROFILE);
    let floodgate = executables(&args)?
        .into_iter()
        .find(|(name, _, _)| name == "floodgate")
        .map(|(_, _, p)| p)
        .context("cargo built no floodgate executable")?;
    let mut args = vec!["test", "--no-run", "--package", "integration-tests"];
    args.extend_from_slice(GUEST_PROFILE);
    let tests: Vec<_> =
        executables(&args)?.into_iter().filter(|(_, test, _)| *test).map(|(n, _, p)| (n, p)).collect();
    if tests.is_empty() {
        bail!("cargo built no integration test executable");
    }
    Ok(Payload { floodgate, tests })
}

/// Runs a cargo build with JSON messages; returns (target name, is a test, executable).
fn executables(args: &[&str]) -> anyhow::Result<Vec<(String, bool, PathBuf)>> {
    let mut all = args.to_vec();
    all.push("--message-format=json-render-diagnostics");
    let out = Command::new(env!("CARGO"))
        .args(&all)
        .current_dir(workspace_root())
        // ring (rustls, for URL lists) compiles C and assembly: Debian's musl-tools
        // names its compiler musl-gcc, not the cross name cc looks for first.
        .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo {}", all.join(" ")))?;
    if !out.status.success() {
        bail!(
            "cargo {} failed ({}); are the musl target and musl-tools installed? run scripts/setup.sh",
            args.join(" "),
            out.status
        );
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(exe) = v["executable"].as_str() {
            let name = v["target"]["name"].as_str().unwrap_or("?").to_string();
            let test = v["profile"]["test"].as_bool().unwrap_or(false);
            found.push((name, test, PathBuf::from(exe)));
        }
    }
    Ok(found)
}

/// An extracted kernel package: `root` holds boot/ and lib/modules/KVER.
struct KernelTree {
    root: PathBuf,
    kver: String,
    vmlinux: PathBuf,
}

/// Downloads and extracts `k` into `dir/kernel-NAME` unless that is already there.
fn fetch_kernel(k: &Kernel, dir: &Path) -> anyhow::Result<KernelTree> {
    let kdir = dir.join(format!("kernel-{}", k.name));
    let ready = kdir.join("ready");
    let root = kdir.join("root");
    let vmlinux = kdir.join("vmlinux");
    if let Ok(kver) = fs::read_to_string(&ready) {
        return Ok(KernelTree { root, kver: kver.trim().to_string(), vmlinux });
    }
    let started = Instant::now();
    if kdir.exists() {
        fs::remove_dir_all(&kdir).with_context(|| format!("removing partial {}", kdir.display()))?;
    }
    fs::create_dir_all(&kdir)?;
    let apt = PrivateApt::new(dir)?;
    let (pkg, version) = apt.resolve(k)?;
    println!("xtask vm: downloading {pkg} {version} (kernel {})", k.name);
    apt.run("apt-get", &["download", &format!("{pkg}={version}")], &kdir)?;
    let deb = fs::read_dir(&kdir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::remove_file(&deb)?;

    // Debian ships modules under lib/ or usr/lib/ depending on the release.
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .with_context(|| format!("no lib/modules in {pkg}"))?;
    if !root.join("lib/modules").exists() {
        std::os::unix::fs::symlink(&modules, root.join("lib/modules")).ok();
    }
    let kver = fs::read_dir(&modules)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("empty lib/modules")?;
    run_ok(Command::new("depmod").arg("-b").arg(&root).arg(&kver))
        .context("depmod (package kmod; run scripts/setup.sh)")?;
    let bz = fs::read(root.join(format!("boot/vmlinuz-{kver}"))).context("reading the bzImage")?;
    fs::write(&vmlinux, extract_vmlinux(&bz)?)?;
    fs::write(&ready, &kver)?;
    println!("xtask vm: kernel {} ({kver}) ready in {:.0?}", k.name, started.elapsed());
    Ok(KernelTree { root, kver, vmlinux })
}

/// apt with its own source list, package lists and cache under target/vm/apt, so
/// suites the host lacks (bookworm-backports) are reachable without touching /etc/apt.
struct PrivateApt {
    opts: Vec<String>,
}

impl PrivateApt {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let adir = dir.join("apt");
        fs::create_dir_all(adir.join("lists/partial"))?;
        fs::create_dir_all(adir.join("cache/archives/partial"))?;
        // The host's bookworm mirror serves the other suites too.
        let out =
            run_ok(Command::new("apt-get").args(["indextargets", "--format", "$(REPO_URI) $(RELEASE)"]))?;
        let have: BTreeSet<&str> = out.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
        let mirror = out
            .lines()
            .find_map(|l| l.strip_suffix(" bookworm"))
            .context("no bookworm apt source on this host to fetch kernels from")?;
        let mut list = String::new();
        for suite in KERNELS.iter().map(|k| k.suite).collect::<BTreeSet<_>>() {
            if !have.contains(suite) {
                list.push_str(&format!("deb {mirror} {suite} main\n"));
            }
        }
        fs::write(adir.join("sources.list"), list)?;
        let d = |k: &str, p: &str| format!("{k}={}", adir.join(p).display());
        let opts = vec![
            // The host's own source parts stay in: the private list only adds suites.
            d("Dir::Etc::SourceList", "sources.list"),
            d("Dir::State::Lists", "lists"),
            d("Dir::Cache", "cache"),
            // _apt cannot write into root's target dir.
            "APT::Sandbox::User=root".to_string(),
        ];
        let apt = Self { opts };
        apt.run("apt-get", &["update", "-qq"], dir).context("apt-get update (private configuration)")?;
        Ok(apt)
    }

    fn run(&self, prog: &str, args: &[&str], cwd: &Path) -> anyhow::Result<String> {
        let mut c = Command::new(prog);
        for o in &self.opts {
            c.arg("-o").arg(o);
        }
        run_ok(c.args(args).current_dir(cwd))
    }

    /// The image package (and version) the newest matching metapackage depends on.
    fn resolve(&self, k: &Kernel) -> anyhow::Result<(String, String)> {
        let text = self.run("apt-cache", &["show", "linux-image-amd64"], Path::new("/"))?;
        let mut best: Option<(String, String)> = None;
        for stanza in text.split("\n\n") {
            let field = |f: &str| stanza.lines().find_map(|l| l.strip_prefix(f)).map(str::trim);
            let (Some(v), Some(dep)) = (field("Version:"), field("Depends:")) else { continue };
            if !v.starts_with(k.version_prefix) {
                continue;
            }
            // "linux-image-6.1.0-41-amd64 (= 6.1.158-1)"
            let mut parts = dep.split(',').next().unwrap_or("").split_whitespace();
            let pkg = parts.next().unwrap_or("").to_string();
            let ver = parts.nth(1).unwrap_or("").trim_end_matches(')').to_string();
            if pkg.is_empty() || ver.is_empty() {
                continue;
            }
            if best.as_ref().is_none_or(|(_, b)| newer(&ver, b)) {
                best = Some((pkg, ver));
            }
        }
        best.with_context(|| format!("no linux-image-amd64 {}* in {}", k.version_prefix, k.suite))
    }
}

fn newer(a: &str, b: &str) -> bool {
    Command::new("dpkg").args(["--compare-versions", a, "gt", b]).status().is_ok_and(|s| s.success())
}

/// The uncompressed ELF kernel inside a bzImage (as the kernel's
/// scripts/extract-vmlinux does): try each compressed payload's magic in turn.
fn extract_vmlinux(bz: &[u8]) -> anyhow::Result<Vec<u8>> {
    const FORMATS: &[(&[u8], &str)] =
        &[(b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x1f\x8b\x08", "gzip")];
    for (magic, tool) in FORMATS {
        for pos in bz.windows(magic.len()).enumerate().filter(|(_, w)| w == magic).map(|(i, _)| i) {
            let mut child = Command::new(tool)
                .arg("-dc")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("running {tool} (run scripts/setup.sh)"))?;
            let mut stdin = child.stdin.take().expect("piped");
            let data = bz[pos..].to_vec();
            // Trailing bytes after the payload make the tool fail late: ignore that.
            let writer = std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
            let out = child.wait_with_output()?;
            let _ = writer.join();
            if out.stdout.starts_with(b"\x7fELF") {
                return Ok(out.stdout);
            }
        }
    }
    bail!("no xz, zstd or gzip payload holding an ELF image in the bzImage")
}

/// Writes the guest's initramfs: busybox + init, test binaries, modules, tools.
fn write_initramfs(
    tree: &KernelTree,
    payload: &Payload,
    filter: &[String],
    out: &Path,
) -> anyhow::Result<()> {
    let mut c = Cpio::default();
    for d in ["dev", "proc", "sys", "run", "tmp", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin"] {
        c.dir(d);
    }
    let busybox = Path::new("/bin/busybox");
    let bb =
        fs::read(busybox).context("reading /bin/busybox (package busybox-static; run scripts/setup.sh)")?;
    let ldd = Command::new("ldd").arg(busybox).output()?;
    if ldd.status.success() && !String::from_utf8_lossy(&ldd.stdout).contains("statically linked") {
        bail!("/bin/busybox is dynamically linked: install busybox-static (scripts/setup.sh)");
    }
    c.file("bin/busybox", 0o755, &bb);
    c.file("init", 0o755, INIT.as_bytes());
    c.file(
        "etc/floodgate-vm-filter",
        0o644,
        filter.iter().map(|f| format!("{f}\n")).collect::<String>().as_bytes(),
    );
    // dnsmasq --user=root looks root up.
    // www-data and nobody: nginx (live_synproxy) looks up its default user at start.
    c.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\nnobody:x:65534:65534::/nonexistent:/bin/false\n",
    );
    c.file("etc/group", 0o644, b"root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n");

    c.file("usr/local/bin/floodgate", 0o755, &read(&payload.floodgate)?);
    for (name, path) in &payload.tests {
        c.file(&format!("tests/{name}"), 0o755, &read(path)?);
    }

    // Modules in load order, decompressed here (busybox insmod reads plain ELF).
    let show = run_ok(
        Command::new("modprobe")
            .arg("-d")
            .arg(&tree.root)
            .args(["-S", &tree.kver, "--show-depends", "-a"])
            .args(MODULES),
    )
    .context("modprobe --show-depends (package kmod; run scripts/setup.sh)")?;
    let mut order = Vec::new();
    for line in show.lines() {
        let Some(path) = line.strip_prefix("insmod ") else { continue };
        let path = Path::new(path.trim());
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        let (name, tool) = match file.rsplit_once(".ko") {
            Some((n, ".xz")) => (n.to_string(), Some("xz")),
            Some((n, ".zst")) => (n.to_string(), Some("zstd")),
            Some((n, "")) => (n.to_string(), None),
            _ => bail!("unexpected module file {}", path.display()),
        };
        if order.contains(&name) {
            continue;
        }
        let data = match tool {
            Some(t) => run_bytes(Command::new(t).arg("-dc").arg(path))?,
            None => read(path)?,
        };
        c.file(&format!("lib/modules/{name}.ko"), 0o644, &data);
        order.push(name);
    }
    c.file("etc/floodgate-vm-modules", 0o644, order.join("\n").as_bytes());

    // Host tools with their shared libraries, at the paths ldd names.
    let mut libs = BTreeSet::new();
    for tool in HOST_TOOLS {
        let path = which(tool).with_context(|| format!("{tool} not found (run scripts/setup.sh)"))?;
        c.file(&format!("usr/local/bin/{tool}"), 0o755, &read(&path)?);
        let out = run_ok(Command::new("ldd").arg(&path))?;
        for line in out.lines() {
            let lib = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next().filter(|l| l.starts_with('/')),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                libs.insert(lib.to_string());
            }
        }
    }
    for lib in libs {
        // fs::read follows symlinks: the guest gets the file under the name ldd used.
        c.file(lib.trim_start_matches('/'), 0o755, &read(Path::new(&lib))?);
    }
    fs::write(out, c.finish()).with_context(|| format!("writing {}", out.display()))
}

/// PID 1 in the guest (busybox sh).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
# FLOODGATE_VM: tests that need the VM's devices fail, not skip, when they are missing.
export FLOODGATE_BIN=/usr/local/bin/floodgate RUST_BACKTRACE=1 FLOODGATE_VM=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
for m in $(cat /etc/floodgate-vm-modules); do
    insmod /lib/modules/$m.ko || echo "floodgate-vm: insmod $m failed"
done
ip link set lo up
set --
while read -r a; do set -- "$@" "$a"; done < /etc/floodgate-vm-filter
echo "=== floodgate-vm: start $(uname -r), $(nproc) CPUs"
status=0
for t in /tests/*; do
    echo "=== floodgate-vm: binary $(basename $t)"
    # RUSTC_BOOTSTRAP lets libtest print each test's time (--report-time).
    RUSTC_BOOTSTRAP=1 $t --test-threads=1 -Z unstable-options --report-time "$@" || status=1
done
echo "=== floodgate-vm: kernel warnings"
dmesg | grep -E -A 20 'WARNING:|BUG:|Oops|Call Trace' | head -60
echo "FLOODGATE-VM-DONE status=$status"
# isa-debug-exit at 0xf4: QEMU exits with (byte << 1) | 1.
if [ $status = 0 ]; then printf '\000'; else printf '\001'; fi | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
"#;

/// Boots `k` with `initrd`; echoes the console and collects the results.
fn boot(k: &'static Kernel, tree: &KernelTree, initrd: &Path) -> anyhow::Result<KernelRun> {
    let timeout = Duration::from_secs(
        std::env::var("FLOODGATE_VM_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(1500),
    );
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let kvm = Path::new("/dev/kvm").exists()
        && cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let mut cmd = Command::new("qemu-system-x86_64");
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"]);
    }
    cmd.args(["-M", "pc", "-smp", "2", "-m", "2048", "-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(&tree.vmlinux)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=5 mitigations=off"]);
    // Two NICs on one QEMU hub and nothing else: no host network at all.
    for (i, mac) in NIC_MACS.iter().enumerate() {
        cmd.args(["-netdev", &format!("hubport,id=nic{i},hubid=0")])
            .args(["-device", &format!("virtio-net-pci,netdev=nic{i},mac={mac}")]);
    }
    println!("xtask vm: booting kernel {} ({}) with {}", k.name, tree.kver, if kvm { "KVM" } else { "TCG" });
    let started = Instant::now();
    let mut child = Guard(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-x86_64 (package qemu-system-x86; run scripts/setup.sh)")?,
    );
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.0.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.0.stderr.take().expect("piped")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);

    let mut lines = Vec::new();
    let mut boot = None;
    let mut timed_out = false;
    let deadline = started + timeout;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                println!("[{}] {line}", k.name);
                if boot.is_none() && line.contains("=== floodgate-vm: start") {
                    boot = Some(started.elapsed());
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = if timed_out {
        let _ = child.0.kill();
        None
    } else {
        child.0.wait().ok()
    };
    let total = started.elapsed();

    let results = parse_results(&lines);
    let marker = lines.iter().find_map(|l| l.split_once(MARKER).map(|(_, s)| s.trim().to_string()));
    let crashed = lines.iter().find(|l| {
        ["Kernel panic", "Oops:", "BUG:", "general protection fault", "Call Trace:"]
            .iter()
            .any(|p| l.contains(p))
    });
    let problem = if timed_out {
        Some(format!("timed out after {timeout:?} (FLOODGATE_VM_TIMEOUT to change)"))
    } else if let Some(l) = crashed {
        Some(format!("kernel crash or warning: {l}"))
    } else if marker.is_none() {
        Some(format!("no {MARKER:?} line on the console (QEMU exited with {status:?})"))
    } else if status.and_then(|s| s.code()) != Some(1) || marker.as_deref() != Some("0") {
        Some(format!("guest reported status {marker:?}, QEMU exited with {status:?} (1 means success)"))
    } else if results.is_empty() && lines.iter().all(|l| !l.starts_with("running ")) {
        Some("no test binary ran".to_string())
    } else {
        None
    };
    if let Some(p) = &problem {
        println!("xtask vm: kernel {} FAILED: {p}\n--- console tail ---", k.name);
        for l in lines.iter().skip(lines.len().saturating_sub(40)) {
            println!("  {l}");
        }
        println!("--- end ---");
    }
    Ok(KernelRun { name: k.name, ok: problem.is_none(), problem, results, boot, total, lines })
}

/// Kills QEMU whatever way the run ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// libtest's `test NAME ... ok|FAILED|ignored` lines, keyed `binary::NAME`.
fn parse_results(lines: &[String]) -> BTreeMap<String, String> {
    let verdict = |s: &str| {
        let w = s.split_whitespace().next().unwrap_or("").trim_end_matches(',');
        ["ok", "FAILED", "ignored"].contains(&w).then(|| w.to_string())
    };
    let mut binary = String::from("?");
    let mut out = BTreeMap::new();
    // A kernel message can land between "test NAME ... " and its verdict, which then
    // starts a later line.
    let mut pending: Option<String> = None;
    for l in lines {
        if let Some(b) = l.strip_prefix("=== floodgate-vm: binary ") {
            binary = b.trim().to_string();
            pending = None;
        } else if let Some((name, result)) = l.strip_prefix("test ").and_then(|r| r.split_once(" ... ")) {
            let key = format!("{binary}::{name}");
            match verdict(result) {
                Some(v) => {
                    out.insert(key, v);
                }
                None => pending = Some(key),
            }
        } else if let Some(v) = verdict(l)
            && let Some(key) = pending.take()
        {
            out.insert(key, v);
        }
    }
    out
}

fn summary(runs: &[KernelRun]) {
    let names: BTreeSet<&String> = runs.iter().flat_map(|r| r.results.keys()).collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
    println!("\nxtask vm: results per kernel");
    print!("  {:width$}", "test");
    for r in runs {
        print!("  {:>7}", r.name);
    }
    println!();
    for n in &names {
        print!("  {n:width$}");
        for r in runs {
            print!("  {:>7}", r.results.get(*n).map(String::as_str).unwrap_or("-"));
        }
        println!();
    }
    for r in runs {
        let count = |w: &str| r.results.values().filter(|v| *v == w).count();
        let boot = r.boot.map(|b| format!("{:.1} s", b.as_secs_f64())).unwrap_or_else(|| "-".into());
        println!(
            "  kernel {}: {} ({} passed, {} failed, {} ignored); boot {boot}, boot + tests {:.1} s{}",
            r.name,
            if r.ok { "ok" } else { "FAILED" },
            count("ok"),
            count("FAILED"),
            count("ignored"),
            r.total.as_secs_f64(),
            r.problem.as_deref().map(|p| format!(": {p}")).unwrap_or_default(),
        );
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn read(p: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(p).with_context(|| format!("reading {}", p.display()))
}

fn run_bytes(c: &mut Command) -> anyhow::Result<Vec<u8>> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!("{c:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

fn run_ok(c: &mut Command) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&run_bytes(c)?).into_owned())
}
