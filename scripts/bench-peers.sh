#!/usr/bin/env bash
# What batching across peers buys small frames: a VM on h1 sends 64-byte datagrams to the
# VMs of h2, h3 and h4 in turn, as fast as it can for 3 s, so h1's daemon holds runs of one
# datagram to peers in turn. They leave many to a sendmmsg (the default) and one per call
# (VMVPN_NO_MMSG=1), a fresh lab each, 3 interleaved rounds, on the release build.
# Namespaces only; everything is removed at the end. Results: bench/peers-cost.json and a
# markdown table on stdout.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root bench-peers
prepare
cargo build --workspace --bins --release --locked --quiet
mkdir -p bench
target="${CARGO_TARGET_DIR:-target}/release"
VMVPN_BIN="$target/vmvpn" "$target/vmvpn-lab" peers-cost bench/peers-cost.json
