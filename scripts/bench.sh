#!/usr/bin/env bash
# Benchmarks on the embedded cluster (started if needed). JSON on stdout; also kept in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-hosts >&2
node bin/ferry.js up >&2
mkdir -p bench/results
node dist/bench/stop-and-copy.js | tee "bench/results/stop-and-copy-$(date +%Y%m%d-%H%M%S).json"
