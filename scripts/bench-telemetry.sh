#!/usr/bin/env bash
# Cost of telemetry on throughput: iperf3 TCP between two VMs across two routed subnets,
# with probes and per-VM/flow accounting on (the default) and off, in interleaved rounds
# of one run, on the release build. Namespaces only; everything is removed at the end.
# Results: bench/telemetry-cost.json and a markdown table on stdout.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root bench-telemetry
prepare
cargo build --workspace --bins --release --locked --quiet
mkdir -p bench
target="${CARGO_TARGET_DIR:-target}/release"
VMVPN_BIN="$target/vmvpn" BULLETIN_BIN="$target/bulletin" \
  "$target/vmvpn-lab" telemetry-cost bench/telemetry-cost.json
