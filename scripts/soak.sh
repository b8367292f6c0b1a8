#!/usr/bin/env bash
# Soaks (release build, namespaces only, traffic bounded, everything removed at the end).
#   bash scripts/soak.sh [MINUTES]          RSS of a daemon with 100 peers, idle and over a
#                                           soak of pings (default 10). bench/soak.json
#   bash scripts/soak.sh --churn [MINUTES]  two stable hosts ping each other (20/s) while four
#                                           others join, leave and crash every 3 s through a
#                                           bulletin: loss of the stable pair, RSS of their
#                                           daemons and the bulletin. bench/soak-churn.json
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root soak
prepare
mode=soak
if [ "${1:-}" = --churn ]; then
  mode=soak-churn
  shift
fi
cargo build --workspace --bins --release --locked --quiet
mkdir -p bench
target="${CARGO_TARGET_DIR:-target}/release"
VMVPN_BIN="$target/vmvpn" BULLETIN_BIN="$target/bulletin" \
  "$target/vmvpn-lab" "$mode" "bench/$mode.json" "${1:-10}"
