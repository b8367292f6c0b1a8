#!/usr/bin/env bash
# Where a data-plane thread's time goes with `[host] threads = 1` to `4`: two host
# namespaces joined by a veth, a vmvpn daemon in each (default settings but `threads`),
# one iperf3 TCP stream VM to VM for 6 s, and each daemon thread's CPU over the stream
# (utime + stime from /proc/PID/task/*/stat), per Gbit/s carried. Interleaved rounds on the
# release build. On a machine with cores to spare the loop's share is what bounds one
# stream; on 2 shared cores the total is. Namespaces, links and processes are removed at
# the end (by PID), also on failure. Results: bench/threads-cpu.json and a table on stdout.
#   bash scripts/bench-threads.sh [ROUNDS]
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root bench-threads
prepare
rounds="${1:-3}"
cargo build -p vmvpn --bin vmvpn --release --locked --quiet
bin="$(realpath "${CARGO_TARGET_DIR:-target}/release/vmvpn")"
work="$(mktemp -d /tmp/vmvt-thr.XXXXXX)"
A=vmvthrA B=vmvthrB
cleanup() {
    for f in "$work"/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    sleep 0.3
    ip netns del $A 2>/dev/null || true
    ip netns del $B 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# One measurement: threads=$1, round $2; appends a JSON line to $work/runs.
measure() {
    local t=$1 round=$2 d="$work/t$1"
    rm -rf "$d" && mkdir -p "$d"
    ip netns add $A && ip netns add $B
    ip link add vmvthrA0 type veth peer name vmvthrB0
    ip link set vmvthrA0 netns $A && ip link set vmvthrB0 netns $B
    ip -n $A addr add 10.98.0.1/24 dev vmvthrA0 && ip -n $B addr add 10.98.0.2/24 dev vmvthrB0
    for n in $A $B; do ip -n $n link set lo up; done
    ip -n $A link set vmvthrA0 up && ip -n $B link set vmvthrB0 up
    "$bin" keygen > "$d/lan.key"
    local h ns me peer
    for spec in "a $A 10.98.0.1 10.98.0.2" "b $B 10.98.0.2 10.98.0.1"; do
        read -r h ns me peer <<<"$spec"
        cat > "$d/$h.toml" <<C
[host]
name = "thr$h"
address = "$me/24"
control_socket = "$d/$h.sock"
threads = $t

[[lan]]
name = "bench"
segment = "192.168.98.0/24"
tap = "vm0"
secret_file = "$d/lan.key"
peers = ["$peer:7401"]
C
        ip netns exec "$ns" "$bin" up --config "$d/$h.toml" > "$d/$h.log" 2>&1 &
        echo $! > "$work/$h.pid"
    done
    for _ in $(seq 100); do
        ip -n $A link show vm0 >/dev/null 2>&1 && ip -n $B link show vm0 >/dev/null 2>&1 && break
        sleep 0.1
    done
    ip -n $A addr add 192.168.98.1/24 dev vm0 && ip -n $A link set vm0 up
    ip -n $B addr add 192.168.98.2/24 dev vm0 && ip -n $B link set vm0 up
    ip netns exec $B iperf3 -s -1 -p 5202 >/dev/null 2>&1 &
    echo $! > "$work/srv.pid"
    for _ in $(seq 100); do
        ip netns exec $A ping -c1 -W1 192.168.98.2 >/dev/null 2>&1 && break
        sleep 0.1
    done
    snap() {
        for h in a b; do
            local p; p=$(cat "$work/$h.pid")
            for task in /proc/"$p"/task/*; do
                echo "$h/$(cat "$task/comm") $(awk '{print $14 + $15}' "$task/stat")"
            done
        done | sort
    }
    snap > "$d/before"
    ip netns exec $A iperf3 -c 192.168.98.2 -p 5202 -t 6 -J > "$d/iperf.json"
    snap > "$d/after"
    python3 - "$d" "$t" "$round" "$(getconf CLK_TCK)" >> "$work/runs" <<'PY'
import json, sys
d, t, rnd, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
gbps = json.load(open(f"{d}/iperf.json"))["end"]["sum_received"]["bits_per_second"] / 1e9
read = lambda f: {l.split()[0]: float(l.split()[1]) for l in open(f)}
b, a = read(f"{d}/before"), read(f"{d}/after")
secs = json.load(open(f"{d}/iperf.json"))["end"]["sum_received"]["seconds"]
cores = {k: (a[k] - b.get(k, 0)) / hz / secs for k in a if a[k] - b.get(k, 0) > 0}
print(json.dumps({"threads": t, "round": rnd, "gbps": gbps, "cores": cores}))
PY
    for f in "$work"/*.pid; do kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done
    sleep 0.3
    ip netns del $A && ip netns del $B
}

for r in $(seq "$rounds"); do
    for t in 1 2 3 4; do
        echo "round $r: threads = $t" >&2
        measure "$t" "$r"
    done
done
mkdir -p bench
python3 - "$work/runs" <<'PY'
import json, sys, statistics, datetime, os
runs = [json.loads(l) for l in open(sys.argv[1])]
out = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
       "kernel": os.uname().release, "cores": os.cpu_count(), "runs": runs}
json.dump(out, open("bench/threads-cpu.json", "w"), indent=1)
print(f"{out['date']} · kernel {out['kernel']} · {out['cores']} cores · one TCP stream, 6 s a run\n")
print("| threads | Gbit/s | sender loop, % of a core per Gbit/s | sender send thread | sender in all | receiver loop | receiver TAP writer | receiver open thread | receiver in all |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for t in (1, 2, 3, 4):
    mine = [r for r in runs if r["threads"] == t]
    per = lambda k: ", ".join(f"{100 * r['cores'].get(k, 0) / r['gbps']:.1f}" for r in mine)
    tot = lambda h: ", ".join(f"{100 * sum(v for k, v in r['cores'].items() if k.startswith(h)) / r['gbps']:.1f}" for r in mine)
    rates = ", ".join("%.2f" % r["gbps"] for r in mine)
    send = per("a/vmvpn-send") if t >= 2 else "-"
    tapw = per("b/vmvpn-tapw") if t >= 3 else "-"
    opener = per("b/vmvpn-open") if t >= 4 else "-"
    print(f"| {t} | {rates} | {per('a/dataplane')} | {send} | {tot('a/')} | {per('b/dataplane')} | {tapw} | {opener} | {tot('b/')} |")
PY
