#!/usr/bin/env bash
# Bulletin load: registers simulated hosts against a real `bulletin serve` on loopback and
# measures registration rate, server CPU per heartbeat and lease-lapse → leave latency.
# Results: bench/bulletin-load-<hosts>.json. Usage: scripts/bench-bulletin.sh [HOSTS ...]
#   scripts/bench-bulletin.sh --dashboard   2000 hosts in 10 LANs reporting every 5 s, 1 %
#                                           churn a minute, 10 dashboard pages: CPU, RSS,
#                                           bytes per page, fan-out, view build time.
#                                           bench/bulletin-dashboard-2000.json
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
prepare
cargo build --release --locked --quiet -p bulletin
mkdir -p bench
load="${CARGO_TARGET_DIR:-target}/release/bulletin-load"
if [ "${1:-}" = --dashboard ]; then
  "$load" --mode dashboard --hosts 2000 --per-lan 200 --pages 10 --warmup-s 20 --steady-s 120 \
    --json bench/bulletin-dashboard-2000.json
  exit
fi
for n in "${@:-2000 5000}"; do
  for hosts in $n; do
    echo "== $hosts hosts"
    "$load" --hosts "$hosts" --json "bench/bulletin-load-$hosts.json"
  done
done
