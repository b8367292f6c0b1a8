#!/usr/bin/env bash
# The demo: install what is needed, build, then run three hosts in two routed subnets with
# two VMs each in network namespaces, ping all 30 VM pairs across the overlay, print
# `vmvpn status` of every host, and remove everything again. Run as root. Release build, so
# the demo's iperf3 shows the real speed; only what the demo runs is installed and built.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root demo
prepare --demo
echo "demo: building the release binaries (the first build takes a few minutes)"
cargo build --release --locked --quiet -p vmvpn --bin vmvpn -p bulletin --bin bulletin \
  -p vmvpn-tests --bin vmvpn-lab
target="${CARGO_TARGET_DIR:-target}/release"
VMVPN_BIN="$target/vmvpn" BULLETIN_BIN="$target/bulletin" exec "$target/vmvpn-lab" demo
