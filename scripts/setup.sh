#!/bin/bash
# One call that gets this machine ready for Ferry's demo, tests and benchmarks:
#   install-host.sh -> npm ci (when needed) -> npm run build (when sources changed) -> build-images.sh -> hosts.sh up
#
#   scripts/setup.sh [HOST...]     default hosts: host-a host-b
#   scripts/setup.sh --no-hosts    everything but starting hosts (the integration tests start their own)
#
# Idempotent and fast on a prepared machine (well under 2 s). Progress goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
log() { printf 'setup: %s\n' "$*" >&2; }
START_HOSTS=1
if [ "${1:-}" = --no-hosts ]; then START_HOSTS=0; shift; fi
[ $# -gt 0 ] || set -- host-a host-b
T0=$(date +%s%N)
step() { log "$1 ($(( ($(date +%s%N) - T0) / 1000000 )) ms)"; }

bash "$HERE/install-host.sh"
step "host ready"

cd "$REPO"
# node_modules is stale when npm's own record (node_modules/.package-lock.json) is missing, or when the lock
# changed since the last install here: by content if we recorded it (.ferry-lock-hash), else by mtime.
LOCK_HASH=$(cat package.json package-lock.json | sha256sum | cut -c1-64)
STAMP_NM=node_modules/.ferry-lock-hash
need_npm=0
if [ ! -f node_modules/.package-lock.json ]; then need_npm=1
elif [ -f "$STAMP_NM" ]; then [ "$(cat "$STAMP_NM")" = "$LOCK_HASH" ] || need_npm=1
elif [ package-lock.json -nt node_modules/.package-lock.json ]; then need_npm=1
fi
if [ "$need_npm" = 1 ]; then
  log "npm ci"
  NPM_LOG=$(mktemp)
  if ! npm ci --no-audit --no-fund >"$NPM_LOG" 2>&1; then
    grep -E '^npm error (code|`npm ci`|Missing)' "$NPM_LOG" | head -8 >&2 || true
    # Seen here: registries/mirrors that lack other platforms' optional packages (e.g. msgpackr-extract-darwin-*)
    # make every lock written on this machine "out of sync" for npm ci. npm install honours the same lock.
    log "npm ci failed; falling back to npm install (same lock)"
    npm install --no-audit --no-fund >&2
    [ "$(cat package.json package-lock.json | sha256sum | cut -c1-64)" = "$LOCK_HASH" ] \
      || log "WARNING: npm install rewrote package-lock.json"
    LOCK_HASH=$(cat package.json package-lock.json | sha256sum | cut -c1-64)
  else
    grep -v '^npm warn' "$NPM_LOG" >&2 || true
  fi
  rm -f "$NPM_LOG"
  step "node_modules installed"
fi
[ -f "$STAMP_NM" ] && [ "$(cat "$STAMP_NM")" = "$LOCK_HASH" ] || echo "$LOCK_HASH" > "$STAMP_NM"

# Pre-copy's native dirty tracker (idempotent: a no-op when the binary is newer than its sources).
sh native/dirtytrack/build.sh
# Ferry's lazy-pages daemon, which ferry-runc starts for lazy restores (docs/lazyd.md). ferry-runc must not
# depend on the checkout, so the binary goes next to it; replaced only when it changed.
sh native/lazyd/build.sh
cmp -s native/lazyd/build/ferry-lazyd /opt/ferry/bin/ferry-lazyd 2>/dev/null \
  || install -m 755 native/lazyd/build/ferry-lazyd /opt/ferry/bin/ferry-lazyd
sh native/criu-tar/build.sh
cmp -s native/criu-tar/build/tar /opt/ferry/libexec/criu-path/tar 2>/dev/null \
  || install -D -m 755 native/criu-tar/build/tar /opt/ferry/libexec/criu-path/tar
sh native/criu-swrk/build.sh
cmp -s native/criu-swrk/build/ferry-criu-swrk /opt/ferry/libexec/ferry-criu-swrk 2>/dev/null \
  || install -D -m 755 native/criu-swrk/build/ferry-criu-swrk /opt/ferry/libexec/ferry-criu-swrk

# Build only when something tsc reads is newer than the last successful build.
STAMP=dist/.ferry-build-stamp
if [ ! -f "$STAMP" ] || [ -n "$(find src agent shim bench demos tsconfig.json package.json package-lock.json \
      -newer "$STAMP" \( -type f -o -type d \) -print -quit 2>/dev/null)" ]; then
  log "npm run build"
  npm run build --silent >&2
  touch "$STAMP"
  step "built"
fi

bash "$HERE/build-images.sh"
if [ "$START_HOSTS" = 1 ]; then
  bash "$HERE/hosts.sh" up "$@"
  step "hosts up: $*"
else
  step "done (no hosts started)"
fi
