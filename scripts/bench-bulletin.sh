#!/usr/bin/env bash
# Bulletin load: registers simulated hosts against a real `bulletin serve` on loopback and
# measures registration rate, server CPU per heartbeat and lease-lapse → leave latency.
# Results: bench/bulletin-load-<hosts>.json. Usage: scripts/bench-bulletin.sh [HOSTS ...]
#   scripts/bench-bulletin.sh --dashboard   2000 hosts in 10 LANs reporting every 5 s, 1 %
#                                           churn a minute, 10 dashboard pages: CPU, RSS,
#                                           bytes per page, fan-out, view build time.
#                                           bench/bulletin-dashboard-2000.json
#   scripts/bench-bulletin.sh --etcd        2000 hosts on the in-memory registry and on etcd
#                                           (two bulletins): bench/bulletin-load-{memory,etcd}-2000.json
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
prepare
cargo build --release --locked --quiet -p bulletin
mkdir -p bench
load="${CARGO_TARGET_DIR:-target}/release/bulletin-load"
if [ "${1:-}" = --etcd ]; then
  # The same load on the in-memory registry (one bulletin) and on etcd (two bulletins,
  # hosts alternating between them), in one run: a single etcd member on loopback, its
  # data in a temporary directory, stopped by its PID at the end.
  command -v etcd >/dev/null || { echo "etcd missing: bash scripts/deps.sh" >&2; exit 1; }
  data=$(mktemp -d)
  etcd --data-dir "$data/etcd" --listen-client-urls http://127.0.0.1:23970 \
    --advertise-client-urls http://127.0.0.1:23970 --listen-peer-urls http://127.0.0.1:23980 \
    --initial-advertise-peer-urls http://127.0.0.1:23980 \
    --initial-cluster default=http://127.0.0.1:23980 >"$data/etcd.log" 2>&1 &
  etcd_pid=$!
  trap 'kill "$etcd_pid" 2>/dev/null; wait "$etcd_pid" 2>/dev/null || true; rm -rf "$data"' EXIT
  for _ in $(seq 50); do
    curl -sf --max-time 1 http://127.0.0.1:23970/health >/dev/null && break
    sleep 0.2
  done
  "$load" --hosts 2000 --json bench/bulletin-load-memory-2000.json
  "$load" --hosts 2000 --store etcd://127.0.0.1:23970 --bulletins 2 \
    --json bench/bulletin-load-etcd-2000.json
  exit 0
fi
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
