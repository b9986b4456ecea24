#!/bin/sh
# ferry-runc: the runc that every Ferry dockerd uses (dockerd --add-runtime ferry-runc=/opt/ferry/bin/ferry-runc
# --default-runtime ferry-runc). install-host.sh copies this file to /opt/ferry/bin/ferry-runc and writes the
# absolute path of the real runc into REAL_RUNC, so nothing here depends on the repository at run time.
#
# What it changes, and why:
#  * every call: `--criu /opt/ferry/bin/criu`, because only CRIU 4.2.x can dump inet sockets on kernels >= 6.16.
#  * checkpoint/restore: `--tcp-established` (Ferry keeps client connections) and
#    CRIU_CONFIG_FILE=/opt/ferry/etc/criu.conf (options runc never sets itself, e.g. the nftables network lock).
#  * restore: if the --image-path directory holds a file `ferry-images`, its first line replaces the image path.
#    Ferry places such a placeholder in <data-root>/containers/<id>/checkpoints/<name>/ so that
#    `docker start --checkpoint <name>` restores straight from Ferry's own image directory instead of pushing
#    the pages through containerd's content store (tar + sha256, ~50 MB/s, and a leaked copy per restore).
# Nothing is ever written to stdout: runc's stdout belongs to its caller (containerd-shim parses some of it).
# POSIX sh only (dash): the argument vector is rebuilt with `set --`, so values with spaces stay intact.

REAL_RUNC=/usr/sbin/runc        # rewritten by install-host.sh
CRIU=/opt/ferry/bin/criu
# Ferry's own lazy-pages daemon (native/lazyd, installed by setup.sh): same command line and protocol as
# `criu lazy-pages`, but it keeps copying in the background while the task faults (docs/lazyd.md). Without
# it, or when the image dir holds `ferry-criu-lazy` (benchmarks compare the two), CRIU's daemon runs.
LAZYD=/opt/ferry/bin/ferry-lazyd
CRIU_CONF=/opt/ferry/etc/criu.conf
LOG_DIR=/var/log/ferry

# Find the subcommand: the first argument that is neither a runc global flag nor the value of one.
sub="" root="" skip=0 prev="" pos=0 has_tcp=0
for a in "$@"; do [ "$a" = --tcp-established ] && has_tcp=1; done
for a in "$@"; do
  pos=$((pos + 1))
  if [ "$skip" = 1 ]; then skip=0; [ "$prev" = root ] && root=$a; continue; fi
  case "$a" in
    --root=*|-root=*) root=${a#*=} ;;
    --root|-root) skip=1; prev=root ;;
    --log|-log|--log-format|-log-format|--criu|-criu|--rootless|-rootless) skip=1; prev=other ;;
    -*) ;;
    *) sub=$a; break ;;
  esac
done

case "$sub" in
  checkpoint|restore) ;;
  *) exec "$REAL_RUNC" --criu "$CRIU" "$@" ;;
esac

# Prints the directory to restore from: the first line of DIR/ferry-images if that file exists and is not empty.
image_dir() {
  real=""
  [ -f "$1/ferry-images" ] && IFS= read -r real < "$1/ferry-images"
  if [ -n "$real" ]; then printf '%s' "$real"; else printf '%s' "$1"; fi
}

# Rebuild argv: globals, subcommand, --tcp-established, then the subcommand's arguments (with --image-path
# redirected for restore). The for-list is expanded once, so appending to "$@" inside the loop is safe.
n=$# i=0 want_img=0 redirected=""
for a in "$@"; do
  i=$((i + 1))
  if [ "$i" -le "$pos" ]; then
    set -- "$@" "$a"
    [ "$i" = "$pos" ] && [ "$has_tcp" = 0 ] && set -- "$@" --tcp-established
    continue
  fi
  if [ "$sub" = restore ]; then
    if [ "$want_img" = 1 ]; then
      want_img=0; v=$a; a=$(image_dir "$v")
      [ "$a" = "$v" ] || redirected="$v -> $a"
    else
      case "$a" in
        --image-path|-image-path) want_img=1 ;;
        --image-path=*|-image-path=*)
          v=${a#*=}; r=$(image_dir "$v"); a=${a%%=*}=$r
          [ "$r" = "$v" ] || redirected="$v -> $r" ;;
      esac
    fi
  fi
  set -- "$@" "$a"
done
shift "$n"

# One line per checkpoint/restore. The host name comes from dockerd's environment (hosts.sh sets FERRY_HOST),
# else from the runc root (/run/ferry/<host>/runtime-ferry-runc/moby), else the caller's pid.
host=${FERRY_HOST:-}
if [ -z "$host" ]; then
  case "$root" in /run/ferry/*/*) host=${root#/run/ferry/}; host=${host%%/*} ;; *) host=pid$PPID ;; esac
fi
# In the background: every checkpoint and restore runs inside a container's freeze, and date(1) is a fork and
# exec (~6 ms on the 2-core test VM) that nothing here has to wait for.
{
  [ -d "$LOG_DIR" ] || mkdir -p "$LOG_DIR"
  printf '%s pid=%s %s%s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" "$$" "$sub" \
    "${redirected:+ (image-path $redirected)}" "$REAL_RUNC --criu $CRIU $*" >> "$LOG_DIR/runc-$host.log"
} 2>/dev/null </dev/null >/dev/null &

CRIU_CONFIG_FILE=$CRIU_CONF
export CRIU_CONFIG_FILE

# Lazy restore from the local image (Ferry writes `ferry-lazy` into the image directory to ask for it): a
# `criu lazy-pages` daemon serves the pages from the image files while the restored task already runs, so
# the restore no longer grows with memory size. The daemon must listen in the work dir runc gives CRIU
# before the restore starts; it exits by itself once every page is in. Its pid goes to <images>/lazy.pid so
# Ferry can wait for the fill to finish before it deletes the images.
if [ "$sub" = restore ]; then
  img="" work="" next=""
  for a in "$@"; do
    case "$next" in img) img=$a ;; work) work=$a ;; esac
    next=""
    case "$a" in
      --image-path|-image-path) next=img ;; --image-path=*|-image-path=*) img=${a#*=} ;;
      --work-path|-work-path) next=work ;; --work-path=*|-work-path=*) work=${a#*=} ;;
    esac
  done
  if [ -n "$img" ] && [ -n "$work" ] && [ -f "$img/ferry-lazy" ]; then
    # `ferry-lazy` may name the agent's page server ("127.0.0.1 PORT DEPTH BATCH_KIB"): then the pages come from
    # it (pre-copy's page store plus the final delta, or the source for post-copy), not from pages files that a
    # lazy dump never wrote; DEPTH and BATCH_KIB say how the daemon asks for the rest between faults.
    read -r ps_addr ps_port ps_depth ps_batch < "$img/ferry-lazy" || true
    # Plain sh (no arrays): the agent writes an IP and a port number, nothing that word-splitting could break.
    ps_args=""
    [ -n "${ps_port:-}" ] && ps_args="--page-server --address $ps_addr --port $ps_port"
    daemon=$CRIU
    [ -x "$LAZYD" ] && [ ! -f "$img/ferry-criu-lazy" ] && daemon=$LAZYD
    # Through a page server each request is a round trip; the agent says how many to keep in flight, and how big
    # (a fault waits behind them: answers come in order).
    if [ -n "${ps_port:-}" ]; then
      FERRY_LAZYD_DEPTH=${ps_depth:-6} FERRY_LAZYD_BATCH_KIB=${ps_batch:-1024}
      export FERRY_LAZYD_DEPTH FERRY_LAZYD_BATCH_KIB
    fi
    if [ "$daemon" = "$LAZYD" ]; then
      # ferry-lazyd makes the work dir, replaces a stale socket, leaves runc's session itself, and closes its
      # status fd once it listens: the command substitution returns then (its pipe's last writer is gone).
      # Before, mkdir, rm, setsid and a poll of sleep(1)s were ~6 fork+execs of ~6 ms each inside the freeze.
      # shellcheck disable=SC2086
      : "$("$daemon" lazy-pages --setsid --status-fd 3 $ps_args --images-dir "$img" --work-dir "$work" \
        -o "$img/lazy-pages.log" -v2 3>&1 </dev/null >/dev/null 2>&1 & echo $! > "$img/lazy.pid")"
    else
      mkdir -p "$work"
      rm -f "$work/lazy-pages.socket"
      # shellcheck disable=SC2086
      setsid "$daemon" lazy-pages $ps_args --images-dir "$img" --work-dir "$work" -o "$img/lazy-pages.log" -v2 </dev/null >/dev/null 2>&1 &
      echo $! > "$img/lazy.pid"
      i=0
      while [ ! -S "$work/lazy-pages.socket" ] && [ $i -lt 2000 ]; do sleep 0.001; i=$((i + 1)); done
    fi
    # Rebuild argv with --lazy-pages right after the subcommand.
    n=$# k=0
    for a in "$@"; do
      k=$((k + 1))
      set -- "$@" "$a"
      [ "$a" = restore ] && [ "$k" -le "$pos" ] && set -- "$@" --lazy-pages
    done
    shift "$n"
  fi
fi
if [ "$sub" = restore ] && [ -n "${work:-}" ]; then
  # containerd deletes the work dir of a failed restore, and with it CRIU's log: keep a copy for the post-mortem.
  rc=0
  "$REAL_RUNC" --criu "$CRIU" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    keep="$LOG_DIR/failed-restore/$(date -u +%Y%m%dT%H%M%S)-$$"
    mkdir -p "$keep" && cp "$work"/*.log "${img:-/nonexistent}"/*.log "$keep"/ 2>/dev/null || true
    # Only the newest few are worth keeping.
    ls -1dt "$LOG_DIR"/failed-restore/* 2>/dev/null | tail -n +11 | xargs -r rm -rf
  fi
  exit "$rc"
fi
exec "$REAL_RUNC" --criu "$CRIU" "$@"
