#!/usr/bin/env bash
# Underlay cost of flooding (the broadcast cost experiment of the VM-VPN design): datagrams and bytes on all hosts'
# underlay links per flooded frame, for 2 subnets x 5 hosts and 4 subnets x 10 hosts, with
# subnet multicast + designated forwarders (flood = "auto") and with unicast replication.
# Namespaces only; everything is removed at the end. Results: bench/flood-cost.json.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
need_root bench-flood
prepare
cargo build --workspace --bins --locked --quiet
mkdir -p bench
"${CARGO_TARGET_DIR:-target}/debug/vmvpn-lab" flood-cost bench/flood-cost.json
