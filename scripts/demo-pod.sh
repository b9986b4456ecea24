#!/usr/bin/env bash
# Pod-deletion demo: deleting a Redis pod on host-a live-migrates it into its replacement pod on host-b, through
# real containerd + CRI and Ferry's containerd shim (demos/pod-delete/run.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-hosts
node bin/ferry.js up
bash scripts/containerd.sh up host-a host-b --cluster "${FERRY_CLUSTER:-/var/lib/ferry/cluster.json}"
node dist/demos/pod-delete/run.js
