//! `floodgate config check` as an operator runs it: the real binary, no root, no
//! attached filter; its exit status, its stdout and stderr.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn floodgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_floodgate")).args(args).output().expect("running floodgate")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/floodgate.toml")
}

/// A directory of its own, removed afterwards.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("floodgate-config-check-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn the_example_is_ok_with_a_summary_per_interface() {
    let path = example();
    let out = floodgate(&["config", "check", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(format!("{}: ok", path.display()).as_str()));
    let eth0 = lines.next().unwrap();
    assert!(eth0.starts_with("  eth0: mode auto; blocklist 2 entries + 1 file (3 entries)"), "{eth0}");
    assert!(
        eth0.ends_with(
            "limits on; policy on; synproxy on; incidents on (pps > 500000, dropped_pps.any > 50000)"
        ),
        "{eth0}"
    );

    let out = floodgate(&["config", "check", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["errors"].as_array().unwrap().len(), 0);
    assert_eq!(v["interfaces"][0]["name"], "eth0");
    assert_eq!(v["interfaces"][0]["blocklist"]["file_entries"], 3);
    assert_eq!(v["interfaces"][0]["limits"], true);
    let incidents = &v["interfaces"][0]["incidents"];
    assert_eq!(incidents["thresholds"], serde_json::json!(["pps > 500000", "dropped_pps.any > 50000"]));
    assert_eq!(
        (&incidents["hook"], &incidents["escalate"]),
        (&serde_json::json!(false), &serde_json::json!([]))
    );
}

#[test]
fn errors_one_per_line_and_exit_3() {
    let dir = Dir::new("bad");
    std::fs::write(dir.0.join("list.txt"), "192.0.2.0/24\n  192.0.2.300\n").unwrap();
    let cfg = dir.0.join("floodgate.toml");
    std::fs::write(
        &cfg,
        "[interface.eth0]\nmode = \"fast\"\n[interface.eth0.blocklist]\nfiles = [\"list.txt\"]\nblocklst = 1\n",
    )
    .unwrap();
    let out = floodgate(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let c = cfg.display();
    let l = dir.0.join("list.txt");
    let want = format!(
        "{c}:2:8: interface.eth0.mode: unknown value 'fast'; expected auto, native, skb\n\
         {c}:5:1: unknown key 'blocklst' in [interface.eth0.blocklist]; expected one of entries, files, url\n\
         {}:2:3: '192.0.2.300' is not an IPv4 or IPv6 address\n",
        l.display()
    );
    assert_eq!(stderr, want);

    let out = floodgate(&["config", "check", "--json", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[0]["file"], cfg.display().to_string());
    assert_eq!((errors[0]["line"].as_u64(), errors[0]["column"].as_u64()), (Some(2), Some(8)));
    assert_eq!(errors[2]["file"], l.display().to_string());
    assert!(errors[1]["reason"].as_str().unwrap().starts_with("unknown key 'blocklst'"));
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 0);
}

#[test]
fn a_missing_file_is_an_error_with_its_path() {
    let out = floodgate(&["config", "check", "/nonexistent/floodgate.toml"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("/nonexistent/floodgate.toml:1:1: cannot read the config file: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
    // A usage error stays clap's.
    assert_eq!(floodgate(&["config", "check"]).status.code(), Some(2));
}
