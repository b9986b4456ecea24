#!/usr/bin/env bash
# Benchmarks on the embedded cluster (started if needed). JSON on stdout; also kept in bench/results/.
#   scripts/bench.sh                 every benchmark
#   scripts/bench.sh precopy         one of them (stop-and-copy, precopy, tracker-overhead); BENCH_* variables narrow it further
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-hosts >&2
node bin/ferry.js up >&2
mkdir -p bench/results
for b in "${@:-stop-and-copy precopy tracker-overhead}"; do
  for name in $b; do
    node "dist/bench/$name.js" | tee "bench/results/$name-$(date +%Y%m%d-%H%M%S).json"
  done
done
