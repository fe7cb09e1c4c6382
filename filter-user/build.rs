//! Builds the XDP object (filter-ebpf) with aya-build and leaves it in OUT_DIR for
//! `include_bytes_aligned!`.
//!
//! Without bpf-linker (or with AYA_BUILD_SKIP=1) an empty stub object is written so
//! that `cargo check` and `cargo clippy` still work; the crate then refuses to link
//! (see `object.rs`), so a real build names the set-up command instead of producing a
//! controller with no program inside.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

const SETUP: &str = "scripts/setup.sh";

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(floodgate_stub_object)");
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=FLOODGATE_TOOLS");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().ok_or_else(|| anyhow!("no workspace root"))?;
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let skip = matches!(env::var("AYA_BUILD_SKIP").as_deref(), Ok("1") | Ok("true"));
    let linker = find_bpf_linker();
    if skip || linker.is_none() {
        let why = if skip { "AYA_BUILD_SKIP is set" } else { "bpf-linker was not found" };
        println!(
            "cargo::warning={why}: using a stub eBPF object (check/clippy only); run {SETUP} for a real build"
        );
        println!("cargo::rustc-cfg=floodgate_stub_object");
        fs::write(out.join("floodgate"), b"")?;
        return Ok(());
    }
    let linker = linker.unwrap();
    println!("cargo::rerun-if-changed={}", linker.display());

    // aya-build runs `rustup run <toolchain> cargo build` for the bpf target; it inherits
    // this process's environment. bpf-linker must be on its PATH, and RUSTC_BOOTSTRAP=1
    // lets a stable toolchain build `core` for bpfel-unknown-none (-Z build-std).
    let dir = linker.parent().unwrap().to_path_buf();
    let path = env::var_os("PATH").unwrap_or_default();
    let new_path = env::join_paths(std::iter::once(dir).chain(env::split_paths(&path)))?;
    // SAFETY: the build script is single-threaded at this point.
    unsafe {
        env::set_var("PATH", new_path);
        env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    let toolchain = pinned_toolchain(root)?;
    let ebpf_dir = root.join("filter-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "filter-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building the XDP program (filter-ebpf)")
}

/// bpf-linker on PATH, or where scripts/setup.sh installs it.
fn find_bpf_linker() -> Option<PathBuf> {
    let tools = env::var_os("FLOODGATE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/floodgate-tools")));
    let candidates = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(tools.map(|t| t.join("bin")));
    for dir in candidates {
        let p = dir.join("bpf-linker");
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// The channel from rust-toolchain.toml, so the toolchain is named in one place.
fn pinned_toolchain(root: &std::path::Path) -> anyhow::Result<String> {
    let file = root.join("rust-toolchain.toml");
    println!("cargo::rerun-if-changed={}", file.display());
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.split('"').nth(1))
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no channel in {}", file.display()))
}
