#!/usr/bin/env bash
# Runs every test: set-up (idempotent), then `cargo xtask test` (fmt, clippy, host
# tests, and the integration tests on this kernel, which need root).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
exec cargo xtask test "$@"
