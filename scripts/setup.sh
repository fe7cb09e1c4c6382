#!/usr/bin/env bash
# Idempotent set-up for building and testing floodgate on a fresh Debian machine.
# Installs: the pinned Rust toolchain with rust-src (the eBPF crate builds `core`
# itself), bpf-linker linked against that toolchain's libLLVM, and the Debian
# packages the tests and the demo call. Safe to run again: every step checks first.
set -euo pipefail

TOOLCHAIN=1.98.0
BPF_LINKER_VERSION=0.13.0
# Kept outside the repository so every clone shares one bpf-linker build.
TOOLS=${FLOODGATE_TOOLS:-$HOME/.cache/floodgate-tools}
APT_PACKAGES=(iproute2 ethtool bpftool nftables procps)

log() { printf 'setup: %s\n' "$*" >&2; }

# 1. The pinned toolchain and the components listed in rust-toolchain.toml
#    (rustup does not add components to an already installed toolchain).
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    log "installing Rust $TOOLCHAIN"
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
installed=$(rustup component list --installed --toolchain "$TOOLCHAIN")
for c in rust-src clippy rustfmt; do
    if ! grep -q "^$c" <<<"$installed"; then
        log "adding $c to $TOOLCHAIN"
        rustup component add "$c" --toolchain "$TOOLCHAIN"
    fi
done

# 2. bpf-linker. A plain `cargo install` finds Debian's older llvm-config; link it
#    against the toolchain's own libLLVM instead, through a prefix of symlinks.
sysroot=$(rustup run "$TOOLCHAIN" rustc --print sysroot)
libllvm=$(find "$sysroot/lib" -maxdepth 1 -name 'libLLVM.so.*' | head -n 1)
[ -n "$libllvm" ] || { log "no libLLVM.so.* in $sysroot/lib"; exit 1; }
llvm_major=$(basename "$libllvm" | sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/')
prefix="$TOOLS/llvm-prefix"
mkdir -p "$prefix/lib"
ln -sfn "$libllvm" "$prefix/lib/libLLVM.so"
ln -sfn "$libllvm" "$prefix/lib/$(basename "$libllvm")"
if ! "$TOOLS/bin/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    log "building bpf-linker $BPF_LINKER_VERSION against $(basename "$libllvm") (about a minute)"
    LLVM_PREFIX="$prefix" cargo "+$TOOLCHAIN" install bpf-linker --version "$BPF_LINKER_VERSION" \
        --locked --no-default-features --features "llvm-$llvm_major" --root "$TOOLS" --force
fi

# 3. Debian packages the tests and the demo use.
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "ok (bpf-linker in $TOOLS/bin)"
