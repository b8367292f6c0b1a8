#!/usr/bin/env bash
# What USO on the TAP buys a VM that sends with UDP_SEGMENT (as QUIC stacks do): a VM on
# h1 sends 1200-byte datagrams in sends of 40 to a VM on h2 (two subnets) for 3 s, with
# h1's TAP taking the sends whole and with the kernel cutting them before the TAP
# (`ethtool -K tap0 tx-udp-segmentation off`), in 3 interleaved rounds of one lab, on the
# release build. Namespaces only; everything is removed at the end. Results:
# bench/uso-cost.json and a markdown table on stdout.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root bench-uso
prepare
cargo build --workspace --bins --release --locked --quiet
mkdir -p bench
target="${CARGO_TARGET_DIR:-target}/release"
VMVPN_BIN="$target/vmvpn" "$target/vmvpn-lab" uso-cost bench/uso-cost.json
