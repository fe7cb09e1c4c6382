#!/usr/bin/env bash
# Set-up (idempotent), build, and run floodgate-demo (needs root): a spoofed flood
# against a server in its own network namespaces, stopped at runtime by floodgate.
# Arguments go to floodgate-demo, e.g. `--duration 40s --flood-pps 50000`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
# The demo runs floodgate itself (`floodgate run`), from next to floodgate-demo.
cargo build --release --package filter-user --bin floodgate
cargo build --release --package floodgate-lab --bin floodgate-demo
exec target/release/floodgate-demo "$@"
