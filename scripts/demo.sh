#!/usr/bin/env bash
# Set-up (idempotent), build, and run `floodgate demo` (needs root): a spoofed flood
# against a server in its own network namespaces, stopped at runtime by floodgate.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
cargo build --release --package filter-user --bin floodgate
exec target/release/floodgate demo "$@"
