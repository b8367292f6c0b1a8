#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, and the integration
# tests that run real daemons in network namespaces (root). `.ci/run` calls this.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
prepare

# Labs of a test run that was killed: stop their daemons by recorded PID, delete their
# namespaces (all named vmvt-<owner pid>-…). Labs whose owner still runs are left alone.
for d in /tmp/vmvt-*; do
  [ -d "$d" ] || continue
  prefix=$(basename "$d")
  owner=${prefix#vmvt-}
  owner=${owner%%-*}
  kill -0 "$owner" 2>/dev/null && continue
  for f in "$d"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    grep -qa vmvpn "/proc/$pid/cmdline" 2>/dev/null && kill "$pid" 2>/dev/null || true
  done
  ip netns list 2>/dev/null | awk '{print $1}' | grep "^$prefix-" | while read -r ns; do ip netns del "$ns"; done || true
  rm -rf "$d"
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# A 30-second smoke run of every fuzz target, two at a time; a crash fails the run.
bash scripts/fuzz.sh 30
# The integration tests start the real binaries: build them first.
cargo build --workspace --bins --locked
# The packaging test installs the .deb packages (release build, cargo-deb).
bash scripts/package.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's last line is a doc-test binary's).
awk '/^test result:/ {p += $4; f += $6} END {printf "total: %d passed, %d failed\n", p, f}' "$log"
exit "$rc"
