#!/bin/bash
# Builds Ferry's demo/test images as `docker load` archives in /var/cache/ferry/images/, without a registry and
# without a Docker daemon: the rootfs comes from Debian .debs, and the archive (manifest.json, config, one
# layer.tar) is written here, deterministically. Every host loads the same tarball, so every host has the same
# image ID, which a restore needs (same rootfs content on both sides).
#
#   ferry/busybox:1  busybox-static, CMD ["sh"]
#   ferry/redis:7    redis-server/redis-cli 7.0 from bookworm + the libraries ldd finds + busybox, CMD ["redis-server"]
#   ferry/pause:1    busybox, ENTRYPOINT sh -c 'trap "exit 0" TERM; while :; do sleep 3600 & wait; done': the CRI sandbox
#                    (pause) image of scripts/containerd.sh, which imports it as docker.io/ferry/pause:1
#   ferry/memhog:1   busybox + /usr/bin/memhog (static, from images/memhog/memhog.c), CMD memhog --mib 64 --rate 1000 --pattern sequential --port 28090
#                    (the same binary is also installed as /var/cache/ferry/memhog for runs outside Docker)
#
# Idempotent: an image is rebuilt only when its archive is missing or its inputs (this script, images/<name>/)
# changed; <name>.meta records the input hash and the image ID. hosts.sh loads every <name>.tar it finds.
set -euo pipefail

CACHE=${FERRY_IMAGE_CACHE:-/var/cache/ferry/images}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
IMAGES=(busybox redis memhog pause)
MEMHOG_BIN=$(dirname "$CACHE")/memhog   # the same static binary, for benchmarks that run it outside Docker
log() { printf 'build-images: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$CACHE" /run/lock
exec 9>/run/lock/ferry-build-images.lock
flock 9

ref_of() { case $1 in busybox) echo ferry/busybox:1 ;; redis) echo ferry/redis:7 ;; memhog) echo ferry/memhog:1 ;; pause) echo ferry/pause:1 ;; esac; }
inputs_hash() {
  { cat "${BASH_SOURCE[0]}"; echo "$1"; [ -d "$REPO/images/$1" ] && find "$REPO/images/$1" -type f | LC_ALL=C sort | xargs cat; } \
    | sha256sum | cut -c1-64
}
up_to_date() {
  [ -s "$CACHE/$1.tar" ] && [ -f "$CACHE/$1.meta" ] && grep -qx "inputs $(inputs_hash "$1")" "$CACHE/$1.meta" \
    && { [ "$1" != memhog ] || [ -x "$MEMHOG_BIN" ]; }
}

todo=()
for n in "${IMAGES[@]}"; do up_to_date "$n" || todo+=("$n"); done
if [ ${#todo[@]} -eq 0 ]; then
  log "all images up to date in $CACHE"
  exit 0
fi
log "building ${todo[*]}"

WORK=$(mktemp -d /var/tmp/ferry-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
T0=$SECONDS

# apt-get download needs current package lists; a fresh or cleaned machine may have none.
fetch() {
  (cd "$WORK/debs" && apt-get -q -o APT::Sandbox::User=root download "$@" >/dev/null 2>&1) && return 0
  log "apt-get download failed; running apt-get update and retrying"
  apt-get -q update >/dev/null
  (cd "$WORK/debs" && apt-get -q -o APT::Sandbox::User=root download "$@" >/dev/null)
}
extract() {  # extract PKG... into DIR (the .debs must have been fetched)
  local dir=$1; shift; mkdir -p "$dir"
  for p in "$@"; do dpkg-deb -x "$(ls "$WORK"/debs/"${p}"_*.deb | head -1)" "$dir"; done
}

debs=(busybox-static)
[[ " ${todo[*]} " == *" redis "* ]] && debs+=(redis-server redis-tools libjemalloc2 liblzf1 libatomic1 libssl3)
mkdir -p "$WORK/debs"; fetch "${debs[@]}"
extract "$WORK/bb" busybox-static

# A busybox root: /bin/busybox plus one symlink per applet (so /bin/sh, /bin/ls, /usr/bin/awk ... all exist),
# a root user, and the usual empty directories.
busybox_root() {
  local R=$1
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var/tmp,proc,sys,dev}
  chmod 1777 "$R/tmp" "$R/var/tmp"; chmod 700 "$R/root"
  cp "$WORK/bb/bin/busybox" "$R/bin/busybox"
  local a
  for a in $("$R/bin/busybox" --list-full); do
    [ -e "$R/$a" ] || [ -L "$R/$a" ] || ln -s /bin/busybox "$R/$a"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
  echo 'root:x:0:' > "$R/etc/group"
}

# Writes a `docker save`-format archive with one layer. Fixed mtimes, owners and order make it reproducible:
# the same inputs give the same layer digest and the same image ID.
TAR=(tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner)
write_image() {  # write_image NAME REF CMD-JSON ROOT [ENTRYPOINT-JSON]
  local name=$1 ref=$2 cmd=$3 root=$4 entry=${5:-} A="$WORK/archive-$1" diff config id
  mkdir -p "$A"
  "${TAR[@]}" -C "$root" -cf "$A/layer.tar" .
  diff=$(sha256sum "$A/layer.tar" | cut -c1-64)
  mkdir "$A/$diff"; mv "$A/layer.tar" "$A/$diff/layer.tar"
  config=$(printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],%s"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"ferry scripts/build-images.sh %s"}]}' \
    "${entry:+\"Entrypoint\":$entry,}" "$cmd" "$diff" "$name")
  id=$(printf '%s' "$config" | sha256sum | cut -c1-64)
  printf '%s' "$config" > "$A/$id.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$id" "$ref" "$diff" > "$A/manifest.json"
  printf '{"%s":{"%s":"%s"}}' "${ref%:*}" "${ref##*:}" "$id" > "$A/repositories"
  "${TAR[@]}" -C "$A" -cf "$CACHE/$name.tar.tmp" manifest.json repositories "$id.json" "$diff"
  mv "$CACHE/$name.tar.tmp" "$CACHE/$name.tar"
  printf 'ref %s\nid sha256:%s\ninputs %s\n' "$ref" "$id" "$(inputs_hash "$name")" > "$CACHE/$name.meta"
  log "$ref -> $CACHE/$name.tar ($(du -h "$CACHE/$name.tar" | cut -f1), id sha256:${id:0:12})"
}

build_busybox() {
  busybox_root "$WORK/root-busybox"
  write_image busybox "$(ref_of busybox)" '["sh"]' "$WORK/root-busybox"
}

build_redis() {
  local S=$WORK/stage-redis R=$WORK/root-redis l
  extract "$S" redis-server redis-tools libjemalloc2 liblzf1 libatomic1 libssl3
  busybox_root "$R"
  mkdir -p "$R/lib/x86_64-linux-gnu" "$R/lib64" "$R/data"
  cp -a "$S"/usr/bin/redis-{check-rdb,server,cli} "$R/usr/bin/"   # redis-server -> redis-check-rdb
  # Libraries: the downloaded ones first, the host's for the rest (libc, libsystemd ...); all must resolve.
  local deps
  deps=$(LD_LIBRARY_PATH=$S/usr/lib/x86_64-linux-gnu:$S/lib/x86_64-linux-gnu ldd "$S/usr/bin/redis-check-rdb" "$S/usr/bin/redis-cli")
  if grep -q 'not found' <<<"$deps"; then die "redis libraries missing: $(grep 'not found' <<<"$deps" | tr -s ' \t\n' ' ')"; fi
  for l in $(awk '/=> \//{print $3}' <<<"$deps" | sort -u); do cp -L "$l" "$R/lib/x86_64-linux-gnu/"; done
  cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"
  "$R/lib64/ld-linux-x86-64.so.2" --library-path "$R/lib/x86_64-linux-gnu" "$R/usr/bin/redis-server" --version >/dev/null \
    || die "redis-server does not run from its rootfs"
  write_image redis "$(ref_of redis)" '["redis-server"]' "$R"
}

build_memhog() {
  local R=$WORK/root-memhog
  if ! command -v gcc >/dev/null || [ ! -f /usr/lib/x86_64-linux-gnu/libc.a ]; then
    log "installing gcc libc6-dev (static build of memhog)"
    apt-get -q install -y --no-install-recommends gcc libc6-dev >/dev/null 2>&1 \
      || { apt-get -q update >/dev/null; apt-get -q install -y --no-install-recommends gcc libc6-dev >/dev/null; }
  fi
  busybox_root "$R"
  gcc -O2 -static -Wall -Wextra -Werror -o "$R/usr/bin/memhog" "$REPO/images/memhog/memhog.c"
  strip "$R/usr/bin/memhog"
  cp "$R/usr/bin/memhog" "$MEMHOG_BIN.tmp"; mv "$MEMHOG_BIN.tmp" "$MEMHOG_BIN"
  write_image memhog "$(ref_of memhog)" '["memhog","--mib","64","--rate","1000","--pattern","sequential","--port","28090"]' "$R"
}

# The pod sandbox: PID 1 of every CRI pod, which must exit promptly on SIGTERM (StopPodSandbox) and otherwise
# do nothing. `sleep & wait` keeps the shell interruptible: a trap runs only between commands.
build_pause() {
  busybox_root "$WORK/root-pause"
  write_image pause "$(ref_of pause)" 'null' "$WORK/root-pause" '["sh","-c","trap \"exit 0\" TERM; while :; do sleep 3600 & wait; done"]'
}

for n in "${todo[@]}"; do "build_$n"; done
log "done in $((SECONDS - T0)) s"
