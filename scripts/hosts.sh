#!/bin/bash
# Ferry "hosts" on one machine: one dockerd (with its own containerd) per host name.
#
#   hosts.sh up NAME...     start the daemons that are not running, then load the cached images they lack
#   hosts.sh down NAME...   remove containers, stop the daemon, unmount and delete everything of that host
#   hosts.sh down-all       down for every host found under /run/ferry and /var/lib/ferry/hosts
#   hosts.sh status         one line per running host: NAME PID SOCKET
#
# Per host NAME: data-root /var/lib/ferry/hosts/NAME, exec-root /run/ferry/NAME, socket /run/ferry/NAME.sock,
# pidfile /run/ferry/NAME.pid, log /var/log/ferry/dockerd-NAME.log, TMPDIR /var/lib/ferry/hosts/NAME/tmp.
# Every daemon runs containers with /opt/ferry/bin/ferry-runc (install-host.sh), whose runc state lives in
# /run/ferry/NAME/runtime-ferry-runc/moby. Images come from /var/cache/ferry/images (build-images.sh).
set -euo pipefail

RUN=/run/ferry
DATA=/var/lib/ferry/hosts
LOGS=/var/log/ferry
CACHE=${FERRY_IMAGE_CACHE:-/var/cache/ferry/images}
FERRY_BIN=/opt/ferry/bin
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'hosts: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/host-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host-lib.sh"
[ "$(id -u)" = 0 ] || die "must run as root"

sock_of() { echo "$RUN/$1.sock"; }
dk() { local n=$1; shift; docker -H "unix://$RUN/$n.sock" "$@"; }

# Prints the pid of NAME's dockerd if it is running (a dockerd whose command line names our data-root).
daemon_pid() {
  local pid
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "--data-root $DATA/$1 " || return 1
  echo "$pid"
}

# Pids of this host's daemon-side processes that outlived dockerd: containerd, containerd-shims
# (-address /run/ferry/NAME/containerd/containerd.sock), runc, criu. A process qualifies only if its command
# line names this host's directories; clients (docker -H ..., Ferry's agent) are never touched.
host_pids() {
  local n=$1 p comm
  for p in /proc/[0-9]*; do
    comm=$(cat "$p/comm" 2>/dev/null) || continue
    case "$comm" in dockerd|containerd|containerd-shim*|runc|criu|ferry-runc) ;; *) continue ;; esac
    tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -qE -- "($RUN/$n/|$DATA/$n/)" && echo "${p#/proc/}"
  done
  return 0
}

# Mount points at or under the host's directories, deepest first.
host_mounts() { mounts_under "$RUN/$1" "$DATA/$1"; }


host_down() {
  local n=$1 pid ids r id pids
  check_name "$n"
  bash "$HERE/containerd.sh" down "$n"   # the host's CRI containerd (if any) lives in our dirs: it goes first
  if pid=$(daemon_pid "$n"); then
    ids=$(timeout 20 docker -H "unix://$(sock_of "$n")" ps -aq 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -n "$ids" ] && { timeout 60 docker -H "unix://$(sock_of "$n")" rm -f $ids >/dev/null 2>&1 || log "$n: docker rm -f failed"; }
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone 20 "$pid" || { log "$n: dockerd $pid ignored SIGTERM for 20 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; wait_gone 5 "$pid" || true; }
  fi
  # Containers that outlived their daemon (after a crash or SIGKILL): let runc kill and delete them.
  for r in "$RUN/$n"/runtime-*/moby; do
    [ -d "$r" ] || continue
    for id in $(runc --root "$r" list -q 2>/dev/null); do runc --root "$r" delete --force "$id" >/dev/null 2>&1 || true; done
  done
  # Left-over containerd and shims of this host only.
  pids=$(host_pids "$n")
  if [ -n "$pids" ]; then
    log "$n: stopping leftover processes $(echo $pids)"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true; wait_gone 5 $pids || { kill -KILL $pids 2>/dev/null || true; wait_gone 5 $pids || true; }
  fi
  # netns/default (nsfs), the overlay2 bind mount, container rootfs overlays, CRIU's cgroup yards ...
  unmount_under "$n" "$RUN/$n" "$DATA/$n"
  # --one-file-system: never delete through a mount that is still there.
  rm -rf --one-file-system "${DATA:?}/$n" "${RUN:?}/$n"
  rm -f "$RUN/$n.sock" "$RUN/$n.pid"
  # The shared run dir goes with the last host.
  rmdir "$RUN" 2>/dev/null || true
  log "$n: down"
}

start_daemon() {
  local n=$1
  mkdir -p "$DATA/$n/tmp" "$RUN" "$LOGS"
  # TMPDIR: containerd unpacks each restored checkpoint into $TMPDIR/ctrd-checkpoint* and never deletes it.
  # FERRY_HOST names the host in ferry-runc's log. fd 9 (our lock) must not stay open in the daemon.
  env PATH="$FERRY_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH" TMPDIR="$DATA/$n/tmp" FERRY_HOST="$n" \
    setsid dockerd --experimental \
      --data-root "$DATA/$n" --exec-root "$RUN/$n" \
      -H "unix://$RUN/$n.sock" --pidfile "$RUN/$n.pid" \
      --bridge=none --iptables=false --ip-masq=false \
      --add-runtime "ferry-runc=$FERRY_BIN/ferry-runc" --default-runtime ferry-runc \
      </dev/null >>"$LOGS/dockerd-$n.log" 2>&1 9>&- &
  echo $!
}

wait_ready() {  # wait_ready NAME PID
  local n=$1 pid=$2 t=600
  while [ "$t" -gt 0 ]; do
    dk "$n" version >/dev/null 2>&1 && return 0
    [ -d "/proc/$pid" ] || { tail -n 20 "$LOGS/dockerd-$n.log" >&2; die "$n: dockerd exited during start-up (log: $LOGS/dockerd-$n.log)"; }
    sleep 0.05; t=$((t - 1))
  done
  tail -n 20 "$LOGS/dockerd-$n.log" >&2
  die "$n: dockerd not ready after 30 s"
}

# Loads each cached image the daemon does not have with the same ID (same tarball everywhere = same image ID).
load_images() {
  local n=$1 meta ref id have
  for meta in "$CACHE"/*.meta; do
    [ -f "$meta" ] || continue
    ref=$(awk '$1 == "ref" {print $2}' "$meta"); id=$(awk '$1 == "id" {print $2}' "$meta")
    have=$(dk "$n" image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)
    [ "$have" = "$id" ] && continue
    dk "$n" load -q -i "${meta%.meta}.tar" >/dev/null || die "$n: docker load ${meta%.meta}.tar failed"
    log "$n: loaded $ref"
  done
}

all_names() {
  local f
  { for f in "$RUN"/*.pid "$RUN"/*.sock; do [ -e "$f" ] && basename "${f%.*}"; done
    for f in "$RUN"/*/ "$DATA"/*/ "$RUN"/*/cri/; do [ -d "$f" ] && basename "${f%/cri/}"; done; } | sort -u
}

# dockerd takes about 2.4 s to shut down; hosts go down in parallel.
down_many() {
  local n pids=() rc=0
  for n in "$@"; do check_name "$n"; done
  for n in "$@"; do host_down "$n" & pids+=($!); done
  for n in "${pids[@]}"; do wait "$n" || rc=1; done
  return $rc
}

cmd=${1:-}; shift || true
mkdir -p "$RUN" /run/lock
exec 9>/run/lock/ferry-hosts.lock
flock 9
case "$cmd" in
  up)
    [ $# -gt 0 ] || die "usage: hosts.sh up NAME..."
    [ -x "$FERRY_BIN/ferry-runc" ] && [ -x "$FERRY_BIN/criu" ] || die "run scripts/install-host.sh first"
    declare -A started=()
    for n in "$@"; do
      check_name "$n"
      daemon_pid "$n" >/dev/null && continue
      # Stale state from a crash (dead pid, mounts, dirs): clean it before starting afresh.
      if [ -e "$RUN/$n.pid" ] || [ -d "$RUN/$n" ] || [ -n "$(host_mounts "$n")" ]; then host_down "$n"; fi
      started[$n]=$(start_daemon "$n")
    done
    for n in "${!started[@]}"; do wait_ready "$n" "${started[$n]}"; log "$n: up (pid ${started[$n]}, $(sock_of "$n"))"; done
    # Loading is mostly disk and gzip-free tar work: one background job per host.
    jobs_=()
    for n in "$@"; do load_images "$n" & jobs_+=($!); done
    for j in "${jobs_[@]}"; do wait "$j"; done
    ;;
  down)
    [ $# -gt 0 ] || die "usage: hosts.sh down NAME..."
    down_many "$@"
    ;;
  down-all)
    # shellcheck disable=SC2046
    down_many $(all_names)
    ;;
  status)
    for n in $(all_names); do
      if pid=$(daemon_pid "$n"); then echo "$n $pid $(sock_of "$n")"; fi
    done
    ;;
  *) die "usage: hosts.sh up NAME... | down NAME... | down-all | status" ;;
esac
