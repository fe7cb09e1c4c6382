#!/usr/bin/env bash
# Idempotent set-up for building and testing floodgate on a fresh Debian machine.
# Installs: the pinned Rust toolchain with rust-src (the eBPF crate builds `core`
# itself), bpf-linker linked against that toolchain's libLLVM, and the Debian
# packages the tests and the demo call. Safe to run again: every step checks first.
set -euo pipefail

TOOLCHAIN=1.98.0
BPF_LINKER_VERSION=0.13.0
# The CrowdSec whose Local API the bouncer tests talk to: bookworm's package.
CROWDSEC_VERSION=1.4.6
# Kept outside the repository so every clone shares one bpf-linker build.
TOOLS=${FLOODGATE_TOOLS:-$HOME/.cache/floodgate-tools}
# util-linux: nsenter; kmod: depmod/modprobe on the extracted kernels; xz/zstd: their
# compressed images and modules; systemd: systemd-analyze (verify of the unit, no running
# systemd needed); systemd-container: systemd-nspawn (the unit's sandbox under a real
# systemd); man-db, groff-base: the unit's man: links and the man page test; prometheus:
# prometheus and promtool for the metrics tests; musl-tools: musl-gcc, for ring's C in
# the VMs' static test binaries; fonts-dejavu-core: the font of incident reports' PNG
# charts (read at run time); libsqlite3-0: the extracted crowdsec and cscli link it (step 4).
APT_PACKAGES=(iproute2 ethtool bpftool nftables procps busybox-static util-linux kmod xz-utils zstd ipset iptables nginx-light dnsmasq-base bind9-dnsutils systemd systemd-container man-db groff-base prometheus musl-tools fonts-dejavu-core tcpdump libsqlite3-0)

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
# Static test binaries for the VM's initramfs.
if ! rustup target list --installed --toolchain "$TOOLCHAIN" | grep -qx x86_64-unknown-linux-musl; then
    log "adding target x86_64-unknown-linux-musl to $TOOLCHAIN"
    rustup target add x86_64-unknown-linux-musl --toolchain "$TOOLCHAIN"
fi

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
    # Debian starts the Prometheus it installs (on :9090); the tests run their own
    # on free ports. Stop the packaged one only when this run installed it.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

# 4. CrowdSec (crowdsec, cscli) for the Local API tests, unpacked into $TOOLS/crowdsec and
#    run from there: `apt-get install crowdsec` fails, its post-install script registers
#    with the online Central API, which these machines cannot reach.
#    `|| true`: a missing binary, or crowdsec killed by SIGPIPE once head has its line,
#    must read as "no version", not stop the script (set -e, pipefail).
crowdsec_version() { "$1" -version 2>&1 | head -n 1 || true; }
if ! grep -q "version: v$CROWDSEC_VERSION-" <<<"$(crowdsec_version "$TOOLS/crowdsec/usr/bin/crowdsec")"; then
    log "unpacking crowdsec $CROWDSEC_VERSION into $TOOLS/crowdsec"
    mkdir -p "$TOOLS"
    # In $TOOLS, so the final mv is a rename on one file system.
    tmp=$(mktemp -d "$TOOLS/crowdsec.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    # Sandbox user root: _apt cannot write into the private temp dir.
    download() { (cd "$tmp" && apt-get -qq -o APT::Sandbox::User=root download crowdsec); }
    # A fresh machine may have no package lists yet.
    download 2>/dev/null || { apt-get update -qq && download; }
    dpkg-deb -x "$tmp"/crowdsec_*.deb "$tmp/tree"
    got=$(crowdsec_version "$tmp/tree/usr/bin/crowdsec")
    grep -q "version: v$CROWDSEC_VERSION-" <<<"$got" || {
        log "apt's crowdsec is not $CROWDSEC_VERSION (${got:-does not run})"
        exit 1
    }
    # Replaced only once the new tree runs: an interrupted run leaves no half tree.
    rm -rf "$TOOLS/crowdsec"
    mv "$tmp/tree" "$TOOLS/crowdsec"
    rm -rf "$tmp"
    trap - EXIT
fi

# 5. QEMU from bookworm-backports (10.x): bookworm's 7.2 removes the preinstalled
#    backports qemu-utils and crashed the 6.12 kernel under TCG. When the host has no
#    backports source, a private apt configuration (its own source list and package
#    lists under $TOOLS/apt) adds one; /etc/apt stays untouched.
qemu_version=$(dpkg-query -W -f='${Status} ${Version}' qemu-system-x86 2>/dev/null || true)
if ! grep -q 'ok installed .*bpo' <<<"$qemu_version"; then
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=()
    if ! apt-cache policy qemu-system-x86 | grep -q bookworm-backports; then
        # Same mirror as the host's bookworm source.
        mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2 == "bookworm" { print $1; exit }')
        [ -n "$mirror" ] || { log "no bookworm apt source to derive bookworm-backports from"; exit 1; }
        apt_dir="$TOOLS/apt"
        mkdir -p "$apt_dir/lists/partial"
        {
            [ -f /etc/apt/sources.list ] && cat /etc/apt/sources.list
            echo "deb $mirror bookworm-backports main"
        } >"$apt_dir/sources.list"
        # Sandbox user root: the private lists sit under root's home, which _apt cannot reach.
        apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::State::Lists=$apt_dir/lists"
            -o APT::Sandbox::User=root)
        apt-get "${apt_opts[@]}" update -qq
    fi
    log "installing qemu-system-x86 from bookworm-backports"
    apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends -t bookworm-backports \
        qemu-system-x86 >/dev/null
fi

log "ok (bpf-linker in $TOOLS/bin, crowdsec in $TOOLS/crowdsec)"
