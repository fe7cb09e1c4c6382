//! `packaging/floodgate.service` passes `systemd-analyze verify` without a single
//! warning (verify exits 0 even on unknown keys or values it ignores, so any output
//! fails the test). Verify wants ExecStart's binary to exist and runs `man` on every
//! Documentation= page: the unit is checked in a temp copy pointing at the binary
//! cargo built, with the man pages `floodgate manpage` writes on MANPATH.
//! Needs Debian's `systemd` package (systemd-analyze; no running systemd needed) and
//! `man-db`: scripts/setup.sh installs both.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const UNIT: &str = include_str!("../../packaging/floodgate.service");
const INSTALLED: &str = "/usr/local/bin/floodgate";

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e} (run scripts/setup.sh)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    // Every command of the unit runs the installed binary, so the copy runs ours.
    let commands: Vec<&str> = UNIT.lines().filter(|l| l.starts_with("Exec")).collect();
    assert!(commands.len() >= 2, "{commands:?}");
    for line in &commands {
        let (_, cmdline) = line.split_once('=').unwrap();
        assert!(cmdline.starts_with(&format!("{INSTALLED} ")), "{line}");
    }
    assert!(
        commands.contains(&"ExecStart=/usr/local/bin/floodgate run --config /etc/floodgate/floodgate.toml"),
        "{commands:?}"
    );

    let dir = TempDir(std::env::temp_dir().join(format!("floodgate-unit-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let man1 = dir.0.join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let bin = env!("CARGO_BIN_EXE_floodgate");
    let (ok, out) = run(Command::new(bin).arg("manpage").arg("--dir").arg(&man1));
    assert!(ok, "floodgate manpage: {out}");

    let unit = dir.0.join("floodgate.service");
    std::fs::write(&unit, UNIT.replace(INSTALLED, bin)).unwrap();
    let (ok, out) = verify(&unit, &dir.0.join("man"));
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify packaging/floodgate.service:\n{out}");

    // The check itself catches what it must: a key systemd ignores, a missing binary.
    let typo = dir.0.join("typo.service");
    std::fs::write(&typo, UNIT.replace(INSTALLED, bin).replace("ProtectHome=yes", "ProtectHom=yes")).unwrap();
    let (_, out) = verify(&typo, &dir.0.join("man"));
    assert!(out.contains("Unknown key 'ProtectHom'"), "{out}");
    let missing = dir.0.join("missing.service");
    std::fs::write(&missing, UNIT).unwrap();
    let (_, out) = verify(&missing, &dir.0.join("man"));
    assert!(out.contains("is not executable"), "{out}");
}

fn verify(unit: &Path, manpath: &Path) -> (bool, String) {
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit.file_name().unwrap())
        .current_dir(unit.parent().unwrap())
        .env("MANPATH", manpath))
}
