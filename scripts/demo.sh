#!/usr/bin/env bash
# The demo: install what is needed, build, then run three hosts in two routed subnets with
# two VMs each in network namespaces, ping all 30 VM pairs across the overlay, print
# `vmvpn status` of every host, and remove everything again. Run as root.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root demo
prepare
echo "demo: building (the first build takes a few minutes)"
cargo build --workspace --bins --locked --quiet
exec "${CARGO_TARGET_DIR:-target}/debug/vmvpn-lab" demo
