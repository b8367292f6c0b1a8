#!/usr/bin/env bash
# The namespace lab, kept running for you to explore: three hosts in two routed subnets
# (10.77.1.0/24: h1, h2; 10.77.2.0/24: h3), two VM namespaces per host on LAN lan1
# (192.168.100.0/24). It prints the namespace names; Ctrl-C removes everything.
# Run as root.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root lab
prepare --demo
cargo build --release --locked --quiet -p vmvpn --bin vmvpn -p bulletin --bin bulletin \
  -p vmvpn-tests --bin vmvpn-lab
target="${CARGO_TARGET_DIR:-target}/release"
VMVPN_BIN="$target/vmvpn" BULLETIN_BIN="$target/bulletin" exec "$target/vmvpn-lab" up
