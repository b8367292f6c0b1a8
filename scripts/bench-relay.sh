#!/usr/bin/env bash
# Cost of the relay of last resort: iperf3 TCP and ping between two VMs whose hosts sit
# behind masquerading routers, over a punched path (port-keeping NATs) and a relayed one
# (fully-random NATs, through a public relay host), in interleaved rounds of one run, on
# the release build; and the time each path took to open. Namespaces only; everything is
# removed at the end. Results: bench/relay-cost.json and a markdown table on stdout.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root bench-relay
prepare
cargo build --workspace --bins --release --locked --quiet
mkdir -p bench
target="${CARGO_TARGET_DIR:-target}/release"
VMVPN_BIN="$target/vmvpn" BULLETIN_BIN="$target/bulletin" \
  "$target/vmvpn-lab" relay-cost bench/relay-cost.json
