#!/usr/bin/env bash
# Run every fuzz target (fuzz/fuzz_targets) for SECONDS each, two at a time (one per core),
# from a copy of its seed corpus; print executions, coverage and crashes per target.
#   bash scripts/fuzz.sh [SECONDS] [SUMMARY-JSON]     (default 30 s: the smoke run of CI)
#   FUZZ_TARGETS="engine_datagram control_request" bash scripts/fuzz.sh 1200
# Exits 1 if any target crashed; the crash input and log are kept under $FUZZ_OUT
# (default: a fresh directory under /tmp, named in the output, removed when all went well).
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
prepare
secs=${1:-30}
summary=${2:-}
# cargo-fuzz builds with -Z flags: only a stable toolchain exists here, so RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
out=${FUZZ_OUT:-$(mktemp -d /tmp/vmvpn-fuzz.XXXXXX)}
mkdir -p "$out"
cd fuzz
# Release code with debug assertions: overflow checks stay on, as in the test builds.
cargo fuzz build -O -a >"$out/build.log" 2>&1 || { tail -n 30 "$out/build.log"; exit 1; }
# FUZZ_TARGETS="a b" runs only those.
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}

run_one() {
  local t=$1
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
  [ -d "corpus/$t" ] && cp -r "corpus/$t/." "$out/corpus/$t/"
  if cargo fuzz run -O -a "$t" "$out/corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="$out/artifacts/$t/" -rss_limit_mb=4096 >"$out/$t.log" 2>&1; then
    echo ok >"$out/$t.rc"
  else
    echo crash >"$out/$t.rc"
  fi
}

running=0
for t in $targets; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge 2 ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=0
printf '%-18s %12s %8s %8s %s\n' target executions seconds coverage result
json="["
for t in $targets; do
  log="$out/$t.log"
  runs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -n 1 || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || true)
  result=$(cat "$out/$t.rc" 2>/dev/null || echo crash)
  [ "$result" = ok ] || failed=$((failed + 1))
  printf '%-18s %12s %8s %8s %s\n' "$t" "${runs:-?}" "$secs" "${cov:-?}" "$result"
  json+="{\"target\":\"$t\",\"executions\":${runs:-0},\"seconds\":$secs,\"coverage\":${cov:-0},\"result\":\"$result\"},"
  if [ "$result" != ok ]; then
    echo "--- $t: log $log, inputs in $out/artifacts/$t/"
    grep -E 'panicked|SUMMARY|ERROR' "$log" | head -n 5 || true
  fi
done
json="${json%,}]"
[ -n "$summary" ] && echo "$json" >"../$summary"
echo "fuzz: $(echo "$targets" | wc -w) targets for ${secs} s each, $failed crashed (logs in $out)"
if [ "$failed" = 0 ] && [ -z "${FUZZ_OUT:-}" ]; then
  rm -rf "$out"
fi
[ "$failed" = 0 ]
