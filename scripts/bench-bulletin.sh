#!/usr/bin/env bash
# Bulletin load: registers simulated hosts against a real `bulletin serve` on loopback and
# measures registration rate, server CPU per heartbeat and lease-lapse → leave latency.
# Results: bench/bulletin-load-<hosts>.json. Usage: scripts/bench-bulletin.sh [HOSTS ...]
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
prepare
cargo build --release --locked --quiet -p bulletin
mkdir -p bench
for n in "${@:-2000 5000}"; do
  for hosts in $n; do
    echo "== $hosts hosts"
    "${CARGO_TARGET_DIR:-target}/release/bulletin-load" --hosts "$hosts" --json "bench/bulletin-load-$hosts.json"
  done
done
