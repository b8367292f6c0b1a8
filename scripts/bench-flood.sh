#!/usr/bin/env bash
# Underlay cost of flooding (seed 004's experiment 3): datagrams and bytes on all hosts'
# underlay links per flooded frame, for 2 subnets x 5 hosts and 4 subnets x 10 hosts, with
# subnet multicast + designated forwarders (flood = "auto") and with unicast replication.
# Namespaces only; everything is removed at the end. Results: bench/flood-cost.json.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-flood: run as root (network namespaces)" >&2; exit 1; }
bash scripts/deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins --locked --quiet
mkdir -p bench
"${CARGO_TARGET_DIR:-target}/debug/vmvpn-lab" flood-cost bench/flood-cost.json
