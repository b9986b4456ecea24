#!/usr/bin/env bash
# The README's first command: set the machine up (idempotent), start the embedded two-host cluster,
# and run the live Redis migration demo on it. The cluster stays up afterwards (`node bin/ferry.js down`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-hosts
node bin/ferry.js up
node dist/demos/redis-live/run.js
