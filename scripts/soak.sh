#!/usr/bin/env bash
# Memory of a daemon with one LAN and 100 peers, idle and over a soak with traffic (release
# build). Namespaces only, traffic bounded (20 pings a second), everything removed at the
# end. Results: bench/soak.json.   bash scripts/soak.sh [MINUTES]   (default 10)
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root soak
prepare
cargo build --workspace --bins --release --locked --quiet
mkdir -p bench
target="${CARGO_TARGET_DIR:-target}/release"
VMVPN_BIN="$target/vmvpn" BULLETIN_BIN="$target/bulletin" \
  "$target/vmvpn-lab" soak bench/soak.json "${1:-10}"
