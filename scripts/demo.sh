#!/usr/bin/env bash
# Set-up (idempotent), build, and run floodgate-demo (needs root): a flood that hurts
# a server and its legitimate users in network namespaces of its own, then floodgate's
# cure at runtime. Arguments go to floodgate-demo, e.g. `--scenario synflood`,
# `--duration 40s` (scenarios: blocklist, the default; botnet; synflood; reflection).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
# The demo runs floodgate itself (`floodgate run`), from next to floodgate-demo.
cargo build --release --package filter-user --bin floodgate
cargo build --release --package floodgate-lab --bin floodgate-demo
exec target/release/floodgate-demo "$@"
