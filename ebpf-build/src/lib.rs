//! Builds an eBPF crate of this workspace (filter-ebpf, bench-ebpf) from the build
//! script of the crate that embeds its object, and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`.
//!
//! Without bpf-linker (or with AYA_BUILD_SKIP=1) empty stub objects are written so
//! that `cargo check` and `cargo clippy` still work; the build script's crate gets the
//! cfg [`STUB_CFG`] and should refuse to link then, so a real build names the set-up
//! command instead of producing a program-less binary.
use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};

const SETUP: &str = "scripts/setup.sh";

/// Set (`cfg(floodgate_stub_object)`) on the calling crate when only stubs were written.
pub const STUB_CFG: &str = "floodgate_stub_object";

/// Builds `package` (a directory of that name under the workspace root) for the bpf
/// target. `objects` are its bin target names: aya-build writes each as
/// `OUT_DIR/NAME`; the stub build writes them empty.
pub fn build(package: &str, objects: &[&str]) -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg({STUB_CFG})");
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=FLOODGATE_TOOLS");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().ok_or_else(|| anyhow!("no workspace root"))?;
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let skip = matches!(env::var("AYA_BUILD_SKIP").as_deref(), Ok("1") | Ok("true"));
    let linker = find_bpf_linker();
    let Some(linker) = linker.filter(|_| !skip) else {
        let why = if skip { "AYA_BUILD_SKIP is set" } else { "bpf-linker was not found" };
        println!(
            "cargo::warning={why}: using a stub eBPF object for {package} (check/clippy only); run {SETUP} for a real build"
        );
        println!("cargo::rustc-cfg={STUB_CFG}");
        for name in objects {
            fs::write(out.join(name), b"")?;
        }
        return Ok(());
    };
    println!("cargo::rerun-if-changed={}", linker.display());

    // aya-build runs `rustup run <toolchain> cargo build` for the bpf target; it inherits
    // this process's environment. bpf-linker must be on its PATH, and RUSTC_BOOTSTRAP=1
    // lets a stable toolchain build `core` for bpfel-unknown-none (-Z build-std).
    let dir = linker.parent().ok_or_else(|| anyhow!("bpf-linker has no directory"))?.to_path_buf();
    let path = env::var_os("PATH").unwrap_or_default();
    let new_path = env::join_paths(std::iter::once(dir).chain(env::split_paths(&path)))?;
    // SAFETY: the build script is single-threaded at this point.
    unsafe {
        env::set_var("PATH", new_path);
        env::set_var("RUSTC_BOOTSTRAP", "1");
    }
    let toolchain = pinned_toolchain(root)?;
    let dir = root.join(package);
    let dir = dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    // One eBPF build per package for the whole target directory, not one per OUT_DIR:
    // aya-build's inner cargo build (with `core` from source, about a minute) keeps its
    // target dir under OUT_DIR, and every profile and feature set of the calling crate
    // (check, clippy, test, release) has an OUT_DIR of its own. The eBPF build is the
    // same for all of them.
    let shared = shared_dir(&out).join(package);
    fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    // SAFETY: as above, single-threaded; aya-build reads OUT_DIR to place its build.
    unsafe { env::set_var("OUT_DIR", &shared) };
    let built = aya_build::build_ebpf(
        [aya_build::Package { name: package, root_dir: dir, ..Default::default() }],
        aya_build::Toolchain::Custom(&toolchain),
    );
    // SAFETY: as above.
    unsafe { env::set_var("OUT_DIR", &out) };
    built.with_context(|| format!("building the XDP object ({package})"))?;
    for name in objects {
        let (from, to) = (shared.join(name), out.join(name));
        fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// `ebpf/` in the target directory that holds OUT_DIR
/// (`TARGET/[TRIPLE/]PROFILE/build/CRATE-HASH/out`), the same for every host triple
/// and profile; OUT_DIR itself if the layout differs.
fn shared_dir(out: &Path) -> PathBuf {
    let up = |n| out.ancestors().nth(n);
    if !up(2).is_some_and(|b| b.ends_with("build")) {
        return out.to_path_buf();
    }
    // Cargo names the triple's directory after the build script's TARGET.
    let triple = env::var("TARGET").ok();
    let target = match up(4) {
        Some(dir) if triple.is_some_and(|t| dir.ends_with(t)) => up(5),
        other => other,
    };
    target.map_or_else(|| out.to_path_buf(), |t| t.join("ebpf"))
}

/// bpf-linker on PATH, or where scripts/setup.sh installs it.
fn find_bpf_linker() -> Option<PathBuf> {
    which::which("bpf-linker").ok().or_else(|| {
        let tools = env::var_os("FLOODGATE_TOOLS")
            .map(PathBuf::from)
            .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/floodgate-tools")))?;
        Some(tools.join("bin/bpf-linker")).filter(|p| p.is_file())
    })
}

/// The channel from rust-toolchain.toml, so the toolchain is named in one place.
fn pinned_toolchain(root: &Path) -> anyhow::Result<String> {
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
