#!/usr/bin/env bash
# The demo: install what is needed, build, then run three hosts in two routed subnets with
# two VMs each in network namespaces, ping all 30 VM pairs across the overlay, print
# `vmvpn status` of every host, and remove everything again. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (network namespaces and TAP devices need it)" >&2; exit 1; }
bash scripts/deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
echo "demo: building (the first build takes a few minutes)"
cargo build --workspace --bins --locked --quiet
exec "${CARGO_TARGET_DIR:-target}/debug/vmvpn-lab" demo
