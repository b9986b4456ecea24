#!/usr/bin/env bash
# Spot-notice demo: an emulated AWS interruption notice drains host-a onto host-b.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-hosts
node bin/ferry.js up
node dist/demos/spot-notice/run.js
