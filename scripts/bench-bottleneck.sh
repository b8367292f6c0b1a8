#!/usr/bin/env bash
# A ping beside a bulk transfer through a slower underlay link with fair queueing: two
# namespaces joined by a veth whose A -> B side is shaped to RATE_MBIT and queues by flow,
# as a WAN uplink or a router with Linux's default qdisc (fq_codel) would. This kernel has
# neither fq_codel nor sfq, so the flow queueing is built as sfq is: htb, 256 classes
# sharing the rate round robin, the low 8 bits of the UDP source port choosing the class
# (u32), a FIFO of LIMIT packets in each (64: about 8 ms at 100 Mbit/s, near CoDel's 5 ms
# standing queue; but without CoDel, a FIFO that several flows share holds 64 packets at
# their share of the rate). vmvpn in each (release
# build, the default config), one iperf3 TCP stream VM A -> VM B for 8 s (or STREAMS
# streams), a ping VM A -> VM B every 20 ms beside it. Set-ups, interleaved per round:
# `flow_ports = 0` (all of a host's traffic to a peer is one UDP flow on the underlay) and
# the default (each VM flow from a flow port of its own, `[host] flow_ports = 15`).
#   bash scripts/bench-bottleneck.sh [ROUNDS] [RATE_MBIT] [STREAMS] [LIMIT]
# results: bench/bottleneck.md
# Namespaces, links and processes are removed at the end (by the PIDs recorded).
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root bench-bottleneck
prepare
cargo build --release --locked --quiet -p vmvpn --bin vmvpn
BIN="$(pwd)/${CARGO_TARGET_DIR:-target}/release/vmvpn"
ROUNDS="${1:-2}"
RATE="${2:-100}"
STREAMS="${3:-1}"
LIMIT="${4:-64}"
A="bnA$$"; B="bnB$$"; D="$(mktemp -d)"
cleanup() {
  for p in $(cat "$D/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT

# one LABEL EXTRA: one set-up, one line of the table.
one() {
  local label=$1 extra=$2
  ip netns add "$A"; ip netns add "$B"
  ip link add vA netns "$A" type veth peer name vB netns "$B"
  ip -n "$A" addr add 10.97.0.1/24 dev vA; ip -n "$B" addr add 10.97.0.2/24 dev vB
  for n in "$A" "$B"; do ip -n "$n" link set lo up; done
  ip -n "$A" link set vA up; ip -n "$B" link set vB up
  # The bottleneck: A's side of the link, RATE_MBIT in 256 flow queues (see the top).
  {
    echo "qdisc add dev vA root handle 1: htb default 100"
    echo "class add dev vA parent 1: classid 1:1 htb rate ${RATE}mbit quantum 1514"
    echo "filter add dev vA parent 1: prio 1 handle 2: protocol ip u32 divisor 256"
    for i in $(seq 0 255); do
      local c; c=$(printf '1%02x' "$i")
      echo "class add dev vA parent 1:1 classid 1:$c htb rate $((RATE * 1000 / 256))kbit ceil ${RATE}mbit quantum 1514"
      echo "qdisc add dev vA parent 1:$c pfifo limit $LIMIT"
      echo "filter add dev vA parent 1: prio 1 protocol ip u32 ht 2:$(printf '%x' "$i"): match u32 0 0 flowid 1:$c"
    done
    # UDP: the low 8 bits of the source port (bytes 20-21 of a 20-byte IPv4 header).
    echo "filter add dev vA parent 1: prio 1 protocol ip u32 ht 800:: match ip protocol 17 0xff hashkey mask 0x00ff0000 at 20 link 2:"
  } > "$D/tc.batch"
  tc -n "$A" -batch "$D/tc.batch"
  "$BIN" keygen > "$D/k"; chmod 600 "$D/k"
  : > "$D/pids"
  for h in "A 10.97.0.1 10.97.0.2 $A" "B 10.97.0.2 10.97.0.1 $B"; do
    set -- $h
    cat > "$D/$1.toml" <<EOF
[host]
name = "h$1"
address = "$2/24"
control_socket = "$D/$1.sock"
$extra

[[lan]]
name = "bn"
segment = "192.168.97.0/24"
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
  ip -n "$A" addr add 192.168.97.1/24 dev vm0; ip -n "$B" addr add 192.168.97.2/24 dev vm0
  ip netns exec "$B" iperf3 -s -1 > /dev/null 2>&1 & echo $! >> "$D/pids"
  ip netns exec "$A" ping -c 5 -i 0.2 192.168.97.2 > /dev/null
  ip netns exec "$A" iperf3 -c 192.168.97.2 -t 8 -P "$STREAMS" -J > "$D/iperf.json" 2>&1 &
  local ip=$!
  # The pings start once the stream has filled the queue.
  sleep 1.5
  ip netns exec "$A" ping -n -c 300 -i 0.02 192.168.97.2 > "$D/ping.txt" 2>&1 || true
  wait "$ip" || true
  tc -n "$A" -s qdisc show dev vA > "$D/qdisc.txt"
  "$BIN" status --socket "$D/A.sock" --json > "$D/statusA.json" 2>/dev/null || true
  python3 - "$label" "$D" <<'PY'
import json, re, sys
label, d = sys.argv[1:3]
try:
    mbps = json.load(open(f"{d}/iperf.json"))["end"]["sum_received"]["bits_per_second"] / 1e6
except Exception:
    mbps = float("nan")
text = open(f"{d}/ping.txt").read()
r = sorted(float(x) for x in re.findall(r"time=([\d.]+)", text))
q = lambda p: r[min(len(r) - 1, int(p * len(r)))] if r else float("nan")
qd = open(f"{d}/qdisc.txt").read()
# The FIFOs' drops, and how many of the 16 queues carried anything.
fifos = [b for b in qd.split("qdisc ")[1:] if b.startswith("pfifo")]
drops = sum(int(re.search(r"dropped (\d+)", b).group(1)) for b in fifos)
used = sum(1 for b in fifos if int(re.search(r"Sent (\d+) bytes", b).group(1)) > 0)
# Datagrams the sending daemon could not hand to its sockets (a full send buffer).
try:
    send_err = json.load(open(f"{d}/statusA.json"))["lans"][0]["drops"]["udp_send_error"]
except Exception:
    send_err = "?"
print(f"| {label} | {mbps:.0f} | {len(r)} | {q(.5):.2f} | {q(.9):.2f} | {q(.99):.2f} | {r[-1] if r else float('nan'):.2f} | {used} | {drops} | {send_err} |")
PY
  for p in $(cat "$D/pids"); do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  ip netns del "$A"; ip netns del "$B"
}

mkdir -p bench
{
  echo "$(date -u +%Y-%m-%dT%H:%MZ) · kernel $(uname -r) · $(nproc) cores · underlay A -> B $RATE Mbit/s in 256 flow queues of $LIMIT packets · $STREAMS TCP stream(s) VM A -> VM B, ping VM A -> VM B every 20 ms"
  echo
  echo "| set-up | TCP Mbit/s | pings | ping p50 ms | p90 ms | p99 ms | max ms | queues used | queue drops | A's send errors |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for _ in $(seq "$ROUNDS"); do
    one "flow_ports = 0 (one underlay flow)" "flow_ports = 0"
    one "default (flow_ports = 15)" ""
  done
} | tee bench/bottleneck.md
