//! `packaging/floodgate.service`'s sandbox under a real systemd: a systemd-nspawn
//! container (its own network namespace: only `lo`; `/usr` from the host, read-only)
//! boots Debian's systemd, which runs a unit carrying every line of the shipped
//! [Service] section but its commands: instead of the service, a script of floodgate
//! commands (attach, lists, limits, rules, policy, SYN cookies with nft and sysctls,
//! status, stats, detach). Each must succeed under the unit's capability bounding set,
//! system-call filter and read-only file system. Needs systemd-nspawn (Debian's
//! `systemd-container`, from scripts/setup.sh); skipped in the VMs (no systemd there).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::live::floodgate_bin;

const UNIT: &str = include_str!("../../packaging/floodgate.service");

/// What the sandboxed script runs; every command must succeed (`set -e`).
const SCRIPT: &str = r#"set -e
grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status
if touch /etc/floodgate-probe 2>/dev/null; then echo "ETC-WRITABLE"; fi
F=/opt/fg/floodgate
$F attach -i lo --mode skb
$F blocklist add 192.0.2.0/24 2001:db8:bad::/48
$F blocklist add 198.51.100.7 --ttl 1h
$F allowlist add 192.0.2.53
$F limit set --pps 2000 --syn-pps 50
$F rule preset reflection
$F policy set --serve tcp/443,tcp/80
$F synproxy enable --ports 80,443
$F status --json
$F stats --json
$F synproxy disable
$F detach -i lo
echo SANDBOX-OK
"#;

/// The shipped unit with its commands replaced: a oneshot running [`SCRIPT`], its
/// output to `/out`, the container powered off when it ends either way.
fn test_unit() -> String {
    let mut out = String::new();
    for line in UNIT.lines() {
        let key = line.split('=').next().unwrap_or("");
        match key {
            "Type" | "NotifyAccess" | "ExecStart" | "ExecReload" | "Restart" | "RestartSec" => continue,
            "[Install]" => break,
            _ => {}
        }
        out.push_str(line);
        out.push('\n');
        if line == "[Unit]" {
            out.push_str("SuccessAction=poweroff-force\nFailureAction=poweroff-force\n");
        }
        if line == "[Service]" {
            out.push_str(
                "Type=oneshot\nExecStart=/bin/sh /opt/fg/check.sh\n\
                 StandardOutput=append:/out/result.log\nStandardError=append:/out/result.log\n",
            );
        }
    }
    out
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let bpf = self.0.join("bpf");
        let c = std::ffi::CString::new(bpf.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call; umount2 only reads it.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mount_bpffs(at: &Path) {
    let st = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(at).status().unwrap();
    assert!(st.success(), "mounting a bpffs at {}", at.display());
}

#[test]
fn the_units_sandbox_runs_every_floodgate_command() {
    if std::env::var_os("FLOODGATE_VM").is_some() {
        println!("service_sandbox: skipped: the VMs have no systemd");
        return;
    }
    let nspawn = Command::new("systemd-nspawn").arg("--version").stdout(Stdio::null()).status();
    assert!(nspawn.is_ok_and(|s| s.success()), "systemd-nspawn missing: run scripts/setup.sh");

    let dir = Dir(std::env::temp_dir().join(format!("fg-sandbox-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    for d in ["opt", "out", "bpf"] {
        std::fs::create_dir_all(dir.0.join(d)).unwrap();
    }
    // The container's own bpffs, so its pins never mix with the host's.
    mount_bpffs(&dir.0.join("bpf"));
    std::fs::copy(floodgate_bin(), dir.0.join("opt/floodgate")).unwrap();
    std::fs::write(dir.0.join("opt/check.sh"), SCRIPT).unwrap();
    let unit = dir.0.join("fgtest.service");
    std::fs::write(&unit, test_unit()).unwrap();

    let bind = |flag: &str, from: &Path, to: &str| format!("--{flag}={}:{to}", from.display());
    let mut child = Command::new("systemd-nspawn")
        .args(["--quiet", "--keep-unit", "--register=no", "--private-network", "--volatile=yes", "-D", "/"])
        .arg(format!("--machine=fg-sandbox-{}", std::process::id()))
        // The container may do all the unit allows; the unit does the restricting.
        .args(["--capability=all", "--system-call-filter=bpf"])
        .arg(bind("bind-ro", &dir.0.join("opt"), "/opt/fg"))
        .arg(bind("bind", &dir.0.join("out"), "/out"))
        .arg(bind("bind", &dir.0.join("bpf"), "/sys/fs/bpf"))
        .arg(bind("bind-ro", &unit, "/etc/systemd/system/fgtest.service"))
        .args(["--boot", "--", "systemd.unit=fgtest.service", "systemd.firstboot=off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the container did not power off within 180 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let log = std::fs::read_to_string(dir.0.join("out/result.log")).unwrap_or_default();
    println!("{log}");
    assert!(log.contains("SANDBOX-OK"), "a command failed in the unit's sandbox:\n{log}");
    // CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39): the unit's bounding set, and
    // nothing else, is what the commands had.
    assert!(log.contains("CapBnd:\t000000c000001000"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1") && log.contains("Seccomp:\t2"), "{log}");
    assert!(!log.contains("ETC-WRITABLE"), "ProtectSystem=strict left /etc writable");
}
