#!/usr/bin/env bash
# Where a ping waits under load: two namespaces joined by a veth, vmvpn in each (release
# build, the default config), one iperf3 TCP stream A -> B for 7 s with a ping A -> B every
# 50 ms beside it, in five set-ups of one run: the default; SCHED_FIFO (`realtime = true`)
# on the sender only, on the receiver only, on both; the TAPs' queues cut to 20 frames;
# no flow ports (`flow_ports = 0`, all data from the data port).
# The receive queue's wait (`vmvpn status`, `queue`) on B is read each second.
#   bash scripts/bench-latency.sh [ROUNDS]      results: bench/latency.md
# Namespaces, links and processes are removed at the end (by the PIDs recorded).
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root bench-latency
prepare
cargo build --release --locked --quiet -p vmvpn --bin vmvpn
BIN="$(pwd)/${CARGO_TARGET_DIR:-target}/release/vmvpn"
ROUNDS="${1:-1}"
A="lbA$$"; B="lbB$$"; D="$(mktemp -d)"
cleanup() {
  for p in $(cat "$D/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT

# one LABEL A_EXTRA B_EXTRA TXQLEN: one set-up, one line of the table.
one() {
  local label=$1 xa=$2 xb=$3 qlen=$4
  ip netns add "$A"; ip netns add "$B"
  ip link add vA netns "$A" type veth peer name vB netns "$B"
  ip -n "$A" addr add 10.98.0.1/24 dev vA; ip -n "$B" addr add 10.98.0.2/24 dev vB
  for n in "$A" "$B"; do ip -n "$n" link set lo up; done
  ip -n "$A" link set vA up; ip -n "$B" link set vB up
  "$BIN" keygen > "$D/k"; chmod 600 "$D/k"
  : > "$D/pids"
  for h in "A 10.98.0.1 10.98.0.2 $A" "B 10.98.0.2 10.98.0.1 $B"; do
    set -- $h
    local extra=$xa; [ "$1" = B ] && extra=$xb
    cat > "$D/$1.toml" <<EOF
[host]
name = "h$1"
address = "$2/24"
control_socket = "$D/$1.sock"
$extra

[[lan]]
name = "lat"
segment = "192.168.98.0/24"
tap = "vm0"
secret_file = "$D/k"
peers = ["$3:7401"]
EOF
    ip netns exec "$4" "$BIN" up --config "$D/$1.toml" > "$D/$1.log" 2>&1 &
    echo $! >> "$D/pids"
  done
  for _ in $(seq 50); do
    ip -n "$A" link show vm0 >/dev/null 2>&1 && ip -n "$B" link show vm0 >/dev/null 2>&1 && break
    sleep 0.1
  done
  ip -n "$A" addr add 192.168.98.1/24 dev vm0; ip -n "$B" addr add 192.168.98.2/24 dev vm0
  if [ -n "$qlen" ]; then
    ip -n "$A" link set vm0 txqueuelen "$qlen"; ip -n "$B" link set vm0 txqueuelen "$qlen"
  fi
  ip netns exec "$B" iperf3 -s -1 > /dev/null 2>&1 & echo $! >> "$D/pids"
  ip netns exec "$A" ping -c 5 -i 0.2 192.168.98.2 > /dev/null
  ip netns exec "$A" ping -n -c 120 -i 0.05 192.168.98.2 > "$D/ping.txt" 2>&1 &
  local pp=$!
  ip netns exec "$A" iperf3 -c 192.168.98.2 -t 7 -J > "$D/iperf.json" 2>&1 &
  local ip=$!
  : > "$D/queue.txt"
  for _ in 1 2 3 4 5 6; do
    sleep 1
    "$BIN" status --socket "$D/B.sock" --json >> "$D/queue.txt" 2>/dev/null || true
    echo >> "$D/queue.txt"
  done
  wait "$ip" || true; wait "$pp" || true
  python3 - "$label" "$D" <<'PY'
import json, re, sys
label, d = sys.argv[1:3]
try:
    gbps = json.load(open(f"{d}/iperf.json"))["end"]["sum_received"]["bits_per_second"] / 1e9
except Exception:
    gbps = float("nan")
r = sorted(float(x) for x in re.findall(r"time=([\d.]+)", open(f"{d}/ping.txt").read()))
q = lambda p: r[min(len(r) - 1, int(p * len(r)))] if r else float("nan")
waits = []
for chunk in open(f"{d}/queue.txt").read().split("\n\n"):
    try:
        waits.append(json.loads(chunk)["queue"]["rx_sojourn_max_ms"])
    except Exception:
        pass
w = max(waits) if waits else float("nan")
print(f"| {label} | {gbps:.2f} | {len(r)} | {q(.5):.2f} | {q(.9):.2f} | {q(.99):.2f} | {w:.1f} |")
PY
  for p in $(cat "$D/pids"); do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$A"; ip netns del "$B"
}

mkdir -p bench
{
  echo "$(date -u +%Y-%m-%dT%H:%MZ) · kernel $(uname -r) · $(nproc) cores · one TCP stream A -> B, ping A -> B every 50 ms"
  echo
  echo "| set-up | TCP Gbit/s | pings | ping p50 ms | p90 ms | p99 ms | B's receive queue, longest wait ms |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for _ in $(seq "$ROUNDS"); do
    one "default" "" "" ""
    one "realtime on the sender only" "realtime = true" "" ""
    one "realtime on the receiver only" "" "realtime = true" ""
    one "realtime on both" "realtime = true" "realtime = true" ""
    one "TAP queues of 20 frames" "" "" "20"
    one "flow_ports = 0 on both" "flow_ports = 0" "flow_ports = 0" ""
  done
} | tee bench/latency.md
