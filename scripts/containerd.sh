#!/bin/bash
# Ferry CRI "hosts": one standalone containerd 1.6 with the CRI plugin per host name, next to (never inside) the
# host's dockerd of hosts.sh. Kubelet's side is played by src/cri/kubelet.ts over the CRI gRPC socket.
#
#   containerd.sh up NAME... [--cluster FILE]   start the containerds that are not running, import the missing images
#   containerd.sh down NAME...                  kill pods, stop containerd and its shims, unmount, delete every dir
#   containerd.sh down-all                      down for every host found under /run/ferry/*/cri and /var/lib/ferry/hosts/*/cri
#   containerd.sh status                        one line per running containerd: NAME PID SOCKET STREAM-PORT
#
# Per host NAME (docs/containerd.md):
#   root   /var/lib/ferry/hosts/NAME/cri          state  /run/ferry/NAME/cri/state
#   grpc   /run/ferry/NAME/cri/containerd.sock    ttrpc  /run/ferry/NAME/cri/containerd.sock.ttrpc
#   config /run/ferry/NAME/cri/config.toml        pid    /run/ferry/NAME/cri/containerd.pid
#   runc   /run/ferry/NAME/cri/runc/<namespace>   log    /var/log/ferry/containerd-NAME.log
#   shim   /run/ferry/NAME/cri/ferry-shim.json (read by containerd-shim-ferry-v1, found next to -address)
#   pods' cgroups (kubelet --cgroup-root, src/cri/paths.ts): /sys/fs/cgroup/<controller>/ferry-cri/NAME
# hosts.sh's dockerd keeps its own containerd in /run/ferry/NAME/containerd; nothing here touches it.
set -euo pipefail

RUN=/run/ferry
DATA=/var/lib/ferry/hosts
LOGS=/var/log/ferry
CACHE=${FERRY_IMAGE_CACHE:-/var/cache/ferry/images}
FERRY_BIN=/opt/ferry/bin
CRI_BIN=/opt/ferry/cri-bin              # containerd-shim-ferry-v1 (install-host.sh links it)
SHIM_SOCKETS=/run/containerd/s          # runc-v2 puts every shim socket here, whatever containerd's state dir is
CGROUP_NS=ferry-cri                     # pods' cgroups: /sys/fs/cgroup/<controller>/ferry-cri/NAME/...
PAUSE_IMAGE=docker.io/ferry/pause:1     # what `ctr images import` names ferry/pause:1 from build-images.sh
STREAM_PORT_BASE=10010                  # containerd's classic stream port; one port per host from here up
log() { printf 'containerd: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=lib/host-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host-lib.sh"
[ "$(id -u)" = 0 ] || die "must run as root"

cri_run() { echo "$RUN/$1/cri"; }
cri_root() { echo "$DATA/$1/cri"; }
sock_of() { echo "$RUN/$1/cri/containerd.sock"; }
ctr_() { local n=$1; shift; ctr -a "$(sock_of "$n")" -n k8s.io "$@"; }

# Prints the pid of NAME's containerd if it runs (a containerd whose command line names our config).
daemon_pid() {
  local pid
  pid=$(cat "$(cri_run "$1")/containerd.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  [[ "$(tr '\0' ' ' < "/proc/$pid/cmdline")" == *"--config $(cri_run "$1")/config.toml "* ]] || return 1
  echo "$pid"
}

# Pids of this host's CRI-side processes: its containerd, the shims it started (`-address <our socket>`, also a
# Node shim whose comm is `node`), and runc/criu working in our dirs. Never a client, never hosts.sh's daemons.
host_pids() {
  local n=$1
  # One ps instead of reading /proc per process: this runs for every host hosts.sh takes down.
  ps -eo pid=,comm=,args= | awk -v run="$(cri_run "$n")/" -v root="$(cri_root "$n")/" -v sock="$(sock_of "$n")" '
    {
      pid = $1; comm = $2; cmd = $0; sub(/^ *[0-9]+ +[^ ]+ +/, "", cmd); padded = " " cmd " "
      if (comm == "containerd" || comm == "runc" || comm == "criu" || comm == "ferry-runc") {
        if (index(cmd, run) || index(cmd, root)) print pid
      } else if (index(cmd, "containerd-shim") || index(cmd, "shim/")) {
        # runc-v2 gets `-address SOCK`; a Node shim helper may carry it quoted (JSON arguments).
        if (index(padded, " -address " sock " ") || index(cmd, "\"" sock "\"")) print pid
      }
    }'
}

# Mount points at or under the host's CRI directories, deepest first.
host_mounts() { mounts_under "$(cri_run "$1")" "$(cri_root "$1")"; }

# Shim sockets in /run/containerd/s that belong to this host: the addresses containerd recorded in each bundle,
# the name runc-v2 derives (sha256 of "<containerd socket>/<namespace>/<id>"), and any socket a live shim of
# ours listens on (a proxying shim's own socket is not always in the bundle).
host_shim_sockets() {
  local n=$1 sock st b ns id p ino
  sock=$(sock_of "$n"); st=$(cri_run "$n")/state/io.containerd.runtime.v2.task
  for b in "$st"/*/*/; do
    [ -d "$b" ] || continue
    ns=$(basename "$(dirname "$b")"); id=$(basename "$b")
    [ -f "$b/address" ] && sed -n 's|^unix://||p' "$b/address"
    printf '%s/%s\n' "$SHIM_SOCKETS" "$(printf '%s/%s/%s' "$sock" "$ns" "$id" | sha256sum | cut -c1-64)"
  done
  for p in $(host_pids "$n"); do
    for ino in $(ls -l "/proc/$p/fd" 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\]$/\1/p'); do
      awk -v i="$ino" -v d="$SHIM_SOCKETS/" '$7 == i && index($8, d) == 1 { print $8 }' /proc/net/unix
    done
  done
  return 0
}


# Removes the host's pod cgroups (kubelet's cgroup root for this host), deepest first, in every v1 hierarchy
# and in the v2 tree. A cgroup with a process left in it cannot be removed: that is reported, not hidden.
remove_cgroups() {
  local n=$1 d left=""
  for d in /sys/fs/cgroup/*/"$CGROUP_NS/$n" /sys/fs/cgroup/"$CGROUP_NS/$n"; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$d" ] && left="$left $d"
    rmdir "$(dirname "$d")" 2>/dev/null || true   # ferry-cri itself, once no host uses it
  done
  [ -z "$left" ] || log "$n: cgroups still in use:$left"
}

host_down() {
  local n=$1 cr cd pid pids r id socks s
  check_name "$n"
  cr=$(cri_run "$n"); cd=$(cri_root "$n")
  # Nothing of ours there (hosts.sh calls this for every host): say nothing.
  if [ ! -e "$cr" ] && [ ! -e "$cd" ] && [ -z "$(host_mounts "$n")" ] && [ -z "$(host_pids "$n")" ]; then return 0; fi
  # Collect before anything dies: the bundles and the live shims name the sockets.
  socks=$(host_shim_sockets "$n" | sort -u)
  # Pods' containers first, through runc (Root = <cri>/runc, runc-v2 adds the namespace), so nothing is left
  # running once the shims are gone. runc delete --force kills the container's init (and its pid namespace).
  for r in "$cr"/runc/*/; do
    [ -d "$r" ] || continue
    for id in $(runc --root "$r" list -q 2>/dev/null); do runc --root "$r" delete --force "$id" >/dev/null 2>&1 || true; done
  done
  if pid=$(daemon_pid "$n"); then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone 10 "$pid" || { log "$n: containerd $pid ignored SIGTERM for 10 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; wait_gone 5 "$pid" || true; }
  fi
  # Shims outlive containerd by design (that is how containerd restarts keep containers).
  pids=$(host_pids "$n")
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true; wait_gone 5 $pids || { kill -KILL $pids 2>/dev/null || true; wait_gone 5 $pids || true; }
  fi
  # Sandbox /dev/shm tmpfs, container rootfs overlays, ...
  unmount_under "$n" "$(cri_run "$n")" "$(cri_root "$n")"
  remove_cgroups "$n"
  for s in $socks; do [[ $s == "$SHIM_SOCKETS"/* ]] && rm -f "$s"; done
  # --one-file-system: never delete through a mount that is still there.
  rm -rf --one-file-system "${cr:?}" "${cd:?}"
  # The host's parent dirs go too if nothing else (hosts.sh's dockerd) lives there.
  rmdir "$RUN/$n" "$DATA/$n" 2>/dev/null || true
  log "$n: down"
}

# A free-looking TCP port on 127.0.0.1 for NAME's stream server: the one it had, else the first unused one from
# STREAM_PORT_BASE that no other CRI host's config claims.
stream_port() {
  local n=$1 cfg port taken
  cfg=$(cri_run "$n")/config.toml
  port=$(sed -n 's/^ *stream_server_port = "\([0-9]*\)"/\1/p' "$cfg" 2>/dev/null || true)
  [ -n "$port" ] && { echo "$port"; return; }
  taken=$(cat "$RUN"/*/cri/config.toml 2>/dev/null | sed -n 's/^ *stream_server_port = "\([0-9]*\)"/\1/p')
  for port in $(seq "$STREAM_PORT_BASE" $((STREAM_PORT_BASE + 199))); do
    grep -qx "$port" <<<"$taken" && continue
    [ -n "$(ss -Htln "sport = :$port" 2>/dev/null)" ] && continue
    echo "$port"; return
  done
  die "$n: no free stream port in $STREAM_PORT_BASE..$((STREAM_PORT_BASE + 199))"
}

write_config() {
  local n=$1 port=$2 cr cd
  cr=$(cri_run "$n"); cd=$(cri_root "$n")
  cat > "$cr/config.toml.tmp" <<EOF
# containerd 1.6 with CRI for Ferry host $n (written by scripts/containerd.sh; docs/containerd.md)
version = 2
root = "$cd/root"
state = "$cr/state"
# Snapshotters this machine cannot use, and tracing: off, so start-up is quiet and fast.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$cr/containerd.sock"
[ttrpc]
  address = "$cr/containerd.sock.ttrpc"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$cd/opt"          # not the machine-wide /opt/containerd
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "$port"
  enable_tls_streaming = false
  # Without it every sandbox fails here: runc cannot lower oom_score_adj to -998 ("can't get final child's PID
  # from pipe: EOF"), docker.md §5.6.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  disable_cgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    # Empty on purpose: hostNetwork pods only (network NODE never calls CNI).
    bin_dir = "$cr/cni/bin"
    conf_dir = "$cr/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      pod_annotations = ["ferry.dev/*"]
      container_annotations = ["ferry.dev/*", "io.kubernetes.pod.terminationGracePeriod"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$FERRY_BIN/ferry-runc"
        Root = "$cr/runc"
        SystemdCgroup = false
    # containerd resolves io.containerd.ferry.v1 to containerd-shim-ferry-v1 on its PATH ($CRI_BIN first). It
    # reads ferry-shim.json next to the socket for the runc root and binary, so no options here.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.ferry]
      runtime_type = "io.containerd.ferry.v1"
      pod_annotations = ["ferry.dev/*"]
      container_annotations = ["ferry.dev/*", "io.kubernetes.pod.terminationGracePeriod"]
EOF
  mv "$cr/config.toml.tmp" "$cr/config.toml"
}

write_shim_json() {  # write_shim_json NAME CLUSTER-FILE-or-empty
  local n=$1 cluster=$2 cr c
  cr=$(cri_run "$n")
  if [ -n "$cluster" ]; then c="\"$cluster\""; else c=null; fi
  printf '{"host": "%s", "cluster": %s, "runcRoot": "%s", "runcBinary": "%s", "upstream": "%s", "log": "%s"}\n' \
    "$n" "$c" "$cr/runc" "$FERRY_BIN/ferry-runc" /usr/bin/containerd-shim-runc-v2 "$LOGS/shim-$n.log" > "$cr/ferry-shim.json.tmp"
  mv "$cr/ferry-shim.json.tmp" "$cr/ferry-shim.json"
}

start_daemon() {
  local n=$1 cr cd
  cr=$(cri_run "$n"); cd=$(cri_root "$n")
  mkdir -p "$cr/state" "$cr/runc" "$cr/cni/bin" "$cr/cni/conf" "$cd/root" "$cd/opt" "$cd/tmp" "$LOGS"
  # TMPDIR: containerd unpacks restored checkpoints into $TMPDIR. FERRY_HOST names the host for the shim and
  # ferry-runc. fd 9 (our lock) must not stay open in the daemon. Ferry's shim is `#!/usr/bin/env node`:
  # containerd's PATH must find the node that runs Ferry, wherever it is installed.
  local node_dir
  node_dir=$(dirname "$(command -v node)")
  env -i PATH="$CRI_BIN:$FERRY_BIN:$node_dir:/usr/sbin:/usr/bin:/sbin:/bin" TMPDIR="$cd/tmp" FERRY_HOST="$n" HOME=/root \
    setsid containerd --config "$cr/config.toml" \
      </dev/null >>"$LOGS/containerd-$n.log" 2>&1 9>&- &
  echo $! > "$cr/containerd.pid"
  echo $!
}

wait_ready() {  # wait_ready NAME PID
  local n=$1 pid=$2 t=600
  while [ "$t" -gt 0 ]; do
    # The CRI plugin loads after the socket exists; `ctr plugins ls` shows it ok only once it is serving.
    grep -qE 'io\.containerd\.grpc\.v1 +cri +[^ ]+ +ok' <<<"$(ctr -a "$(sock_of "$n")" plugins ls 2>/dev/null)" && return 0
    [ -d "/proc/$pid" ] || { tail -n 20 "$LOGS/containerd-$n.log" >&2; die "$n: containerd exited during start-up (log: $LOGS/containerd-$n.log)"; }
    sleep 0.05; t=$((t - 1))
  done
  tail -n 20 "$LOGS/containerd-$n.log" >&2
  die "$n: containerd not ready after 30 s"
}

# Imports each cached image NAME lacks into namespace k8s.io, where CRI looks. What was imported is recorded
# next to containerd's root (<cri root>/imported/<image>.id = the image ID from the .meta), so a re-run compares
# two small files instead of asking containerd, and the record goes whenever the content store goes.
import_images() {
  local n=$1 meta name id rec
  rec=$(cri_root "$n")/imported
  mkdir -p "$rec"
  for meta in "$CACHE"/*.meta; do
    [ -f "$meta" ] || continue
    name=$(basename "${meta%.meta}"); id=$(awk '$1 == "id" {print $2}' "$meta")
    [ "$(cat "$rec/$name.id" 2>/dev/null)" = "$id" ] && continue
    ctr_ "$n" images import "${meta%.meta}.tar" >/dev/null || die "$n: ctr images import ${meta%.meta}.tar failed"
    printf '%s\n' "$id" > "$rec/$name.id"
    log "$n: imported $(awk '$1 == "ref" {print $2}' "$meta")"
  done
  # Not `ctr | grep -q`: grep's early exit would make ctr die of SIGPIPE, and pipefail report a failure.
  grep -qx "$PAUSE_IMAGE" <<<"$(ctr_ "$n" images ls -q 2>/dev/null)" || die "$n: no $PAUSE_IMAGE after import (run scripts/build-images.sh)"
}

all_names() {
  local f
  { for f in "$RUN"/*/cri/ "$DATA"/*/cri/; do [ -d "$f" ] && basename "$(dirname "$f")"; done; } | sort -u
}

down_many() {
  local n pids=() rc=0
  for n in "$@"; do check_name "$n"; done
  for n in "$@"; do host_down "$n" & pids+=($!); done
  for n in "${pids[@]}"; do wait "$n" || rc=1; done
  return $rc
}

cmd=${1:-}; shift || true
mkdir -p "$RUN" /run/lock
exec 9>/run/lock/ferry-containerd.lock
flock 9
case "$cmd" in
  up)
    names=() cluster=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --cluster) [ $# -ge 2 ] || die "--cluster needs a file"; cluster=$(readlink -f "$2"); shift 2 ;;
        --cluster=*) cluster=$(readlink -f "${1#*=}"); shift ;;
        -*) die "unknown option $1" ;;
        *) names+=("$1"); shift ;;
      esac
    done
    [ ${#names[@]} -gt 0 ] || die "usage: containerd.sh up NAME... [--cluster FILE]"
    [ -x "$FERRY_BIN/ferry-runc" ] || die "run scripts/install-host.sh first"
    [ -f "$CACHE/pause.tar" ] || die "no $CACHE/pause.tar (run scripts/build-images.sh)"
    declare -A started=()
    for n in "${names[@]}"; do
      check_name "$n"
      if ! daemon_pid "$n" >/dev/null; then
        # A containerd that died (crash, kill -9) is started again on its own state, as a real node's would be:
        # its pods' shims and containers live on, and containerd reconnects to them (<bundle>/address). Only
        # `down` cleans a host.
        mkdir -p "$(cri_run "$n")"
        write_config "$n" "$(stream_port "$n")"
        started[$n]=$(start_daemon "$n")
      fi
      # Rewritten on every up: --cluster may name another file than last time (the shim reads it per call).
      write_shim_json "$n" "$cluster"
    done
    for n in "${!started[@]}"; do wait_ready "$n" "${started[$n]}"; log "$n: up (pid ${started[$n]}, $(sock_of "$n"))"; done
    jobs_=()
    for n in "${names[@]}"; do import_images "$n" & jobs_+=($!); done
    for j in "${jobs_[@]}"; do wait "$j"; done
    ;;
  down)
    [ $# -gt 0 ] || die "usage: containerd.sh down NAME..."
    down_many "$@"
    ;;
  down-all)
    # shellcheck disable=SC2046
    down_many $(all_names)
    ;;
  status)
    for n in $(all_names); do
      if pid=$(daemon_pid "$n"); then
        echo "$n $pid $(sock_of "$n") $(sed -n 's/^ *stream_server_port = "\([0-9]*\)"/\1/p' "$(cri_run "$n")/config.toml")"
      fi
    done
    ;;
  *) die "usage: containerd.sh up NAME... [--cluster FILE] | down NAME... | down-all | status" ;;
esac
