#!/usr/bin/env bash
# vmvpn against direct veth, kernel VXLAN, tinc (switch mode), OpenVPN (tap) and n2n, in
# one run on this machine: two namespaces joined by a veth pair, release build, iperf3 TCP
# 1 and 4 streams, 64-byte UDP rate at <=1 % loss, ping RTT idle and under load, daemon CPU
# and RSS, interleaved rounds. Namespaces and processes are removed at the end.
# Results: bench/bench.json and bench/bench.md (the table the README shows).
#   bash scripts/bench.sh [--rounds N] [--seconds S] [--only "vmvpn,direct veth"]
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root bench
prepare
# The peer overlays, where Debian packages them (no service is started by installing).
need=()
command -v tincd >/dev/null 2>&1 || need+=(tinc)
command -v openvpn >/dev/null 2>&1 || need+=(openvpn)
command -v edge >/dev/null 2>&1 || need+=(n2n)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ((${#need[@]})); then
  echo "bench: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } \
    || echo "bench: could not install ${need[*]}; those systems are skipped (and fail under CI=true)" >&2
fi
cargo build --workspace --bins --release --locked --quiet
mkdir -p bench
target="${CARGO_TARGET_DIR:-target}/release"
VMVPN_BIN="$target/vmvpn" "$target/vmvpn-bench" bench/bench.json "$@" | tee bench/bench.md
