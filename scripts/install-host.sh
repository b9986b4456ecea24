#!/bin/bash
# Installs what a Ferry host needs: Docker 20.10 from bookworm, CRIU 4.2.x in a private root, the ferry-runc
# wrapper, CRIU's config, and fs.pipe-max-size. Idempotent; a re-run that finds everything in place takes well
# under a second. Runs as root on Debian 12 without a terminal (CI). Details: docs/host-setup.md.
set -euo pipefail

FERRY=/opt/ferry
CRIU_ROOT=$FERRY/criu                 # private apt state, downloaded debs, extracted root
CRIU_BIN=$FERRY/bin/criu              # wrapper: runs CRIU through trixie's glibc loader
RUNC_WRAP=$FERRY/bin/ferry-runc
CRIU_CONF=$FERRY/etc/criu.conf
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# docker.io brings containerd, runc, tini and iptables; gcc + libc6-dev build memhog (build-images.sh);
# debian-archive-keyring signs the private trixie/forky sources.
PACKAGES=(docker.io gcc libc6-dev debian-archive-keyring nftables iproute2 procps)  # ss/ip: post-copy and lazyd tests; pgrep: CRIU clean-up

log() { printf 'install-host: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
export DEBIAN_FRONTEND=noninteractive

# Two setup.sh runs at once (parallel CI jobs) must not both run apt or rebuild CRIU.
mkdir -p /run/lock
exec 9>/run/lock/ferry-install-host.lock
flock 9

# ---- 1. Debian packages -------------------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt-get update first)"
  apt-get -q -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false update >/dev/null
  # The stock docker/containerd services must not start (Ferry runs one dockerd per host itself). Machine
  # images built by Docker ship a policy-rc.d that forbids service starts; provide one for the install if not.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get -q install -y --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
log "packages ok: ${PACKAGES[*]}"

# ---- 2. CRIU 4.2.x in a private root (docker.md §8 step 2) ---------------------------------------------------
# Bookworm's criu 3.17 cannot start on this kernel (vDSO) and trixie's 4.1.1 cannot dump inet sockets on
# kernels >= 6.16. 4.2.1 exists only in forky/sid; it runs on trixie's libraries through trixie's loader, so
# neither /etc/apt nor the system libc is touched.
criu_ok() { "$CRIU_BIN" --version 2>/dev/null | grep -q '^Version: 4\.2\.'; }
if criu_ok; then
  log "criu ok: $("$CRIU_BIN" --version | head -1)"
else
  log "installing CRIU 4.2.x into $CRIU_ROOT"
  APT=$CRIU_ROOT/apt
  rm -rf "$APT" "$CRIU_ROOT/debs" "$CRIU_ROOT/root.new"
  mkdir -p "$APT/sp" "$APT/pp" "$APT/lists/partial" "$APT/cache/archives/partial" "$CRIU_ROOT/debs" "$FERRY/bin"
  write_sources() {
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$*" > "$APT/sp/ferry.sources"
  }
  # Check-Valid-Until/Check-Date off: machine clocks here run ahead of the archive (forky's InRelease looked
  # "expired"); signatures are still verified against debian-archive-keyring.
  O=(-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APT/sp" -o Dir::State::Lists="$APT/lists"
     -o Dir::Cache="$APT/cache" -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts="$APT/pp"
     -o APT::Sandbox::User=root)
  write_sources trixie forky
  apt-get "${O[@]}" -q update >/dev/null
  cd "$CRIU_ROOT/debs"
  apt-get "${O[@]}" -q download libc6/trixie libbsd0/trixie libmd0/trixie libgnutls30t64/trixie libp11-kit0/trixie \
    libffi8/trixie libidn2-0/trixie libunistring5/trixie libtasn1-6/trixie libnettle8t64/trixie libhogweed6t64/trixie \
    libgmp10/trixie libnftables1/trixie libnftnl11/trixie libmnl0/trixie libjansson4/trixie libxtables12/trixie \
    libedit2/trixie libtinfo6/trixie libbpf1/trixie libelf1t64/trixie zlib1g/trixie libzstd1/trixie \
    libprotobuf-c1/trixie libuuid1/trixie >/dev/null
  # Forky is Debian testing and moves: take its criu only while it is 4.2.x, else the pinned 4.2.1-1 from sid.
  forky_ver=$(apt-cache "${O[@]}" madison criu 2>/dev/null | awk -F'|' '$3 ~ /forky/ {gsub(/ /,"",$2); print $2; exit}')
  if [[ $forky_ver == 4.2.* && -z ${FERRY_CRIU_FROM_SID:-} ]]; then   # FERRY_CRIU_FROM_SID=1 tests the fallback
    log "criu $forky_ver from forky"
    apt-get "${O[@]}" -q download criu/forky libcompel1/forky libnet9/forky libnl-3-200/forky >/dev/null
  else
    log "forky has criu '${forky_ver:-none}'; falling back to criu=4.2.1-1 from sid"
    write_sources trixie forky sid
    apt-get "${O[@]}" -q update >/dev/null
    apt-get "${O[@]}" -q download criu=4.2.1-1 libcompel1=4.2.1-1 libnet9/sid libnl-3-200/sid >/dev/null
  fi
  mkdir -p "$CRIU_ROOT/root.new"
  for d in "$CRIU_ROOT"/debs/*.deb; do dpkg-deb -x "$d" "$CRIU_ROOT/root.new"; done
  LPN=$CRIU_ROOT/root.new/usr/lib/x86_64-linux-gnu
  if "$LPN/ld-linux-x86-64.so.2" --library-path "$LPN" --list "$CRIU_ROOT/root.new/usr/sbin/criu" | grep 'not found' >&2; then
    die "CRIU's libraries are incomplete (see above)"
  fi
  rm -rf "$CRIU_ROOT/root"; mv "$CRIU_ROOT/root.new" "$CRIU_ROOT/root"
  rm -rf "$APT"   # 40 MB of package lists; the .debs stay in debs/ for reference
fi
# The wrapper is rewritten whenever its text changes (not only at install), like ferry-runc below.
KDAT=/run/criu.kdat
KDAT_BOOT=/run/ferry-criu-kdat.boot
LP=$CRIU_ROOT/root/usr/lib/x86_64-linux-gnu
CRIU_TAR_DIR=/opt/ferry/libexec/criu-path
CRIU_SWRK=/opt/ferry/libexec/ferry-criu-swrk
CRIU_RPC_CACHE=/run/ferry/criu-rpc
criu_wrapper=$(cat <<WRAP
#!/bin/sh
# CRIU 4.2.x from Debian forky/sid on trixie libraries (installed by ferry install-host.sh)
# $KDAT is CRIU's cache of its kernel probes (~25 ms per run). CRIU itself only writes it where /run is a
# tmpfs, so that a reboot drops it; where /run is not, install-host.sh writes it and notes the boot it belongs to
# in $KDAT_BOOT, and a cache from another boot (maybe another kernel) is removed before CRIU could trust it.
if [ -f $KDAT_BOOT ]; then
  read -r kb < $KDAT_BOOT; read -r cb < /proc/sys/kernel/random/boot_id
  [ "\$kb" = "\$cb" ] || rm -rf $KDAT $KDAT_BOOT $CRIU_RPC_CACHE
fi
# CRIU runs \`tar --gzip\` for every tmpfs in the container (three processes each, inside the freeze); the
# ferry-criu-tar shim found first on PATH drops the gzip (native/criu-tar, installed by setup.sh).
PATH=$CRIU_TAR_DIR:\$PATH
export PATH
# runc starts \`criu swrk\` just to ask for the version (and for a lazy dump, the features) before every
# checkpoint and restore; ferry-criu-swrk answers those from CRIU's own earlier answers (native/criu-swrk).
if [ "\${1:-}" = swrk ] && [ -x $CRIU_SWRK ]; then
  exec $CRIU_SWRK --identity $CRIU_ROOT/root/usr/sbin/criu -- $LP/ld-linux-x86-64.so.2 --library-path $LP $CRIU_ROOT/root/usr/sbin/criu "\$@"
fi
exec $LP/ld-linux-x86-64.so.2 --library-path $LP $CRIU_ROOT/root/usr/sbin/criu "\$@"
WRAP
)
if [ ! -x "$CRIU_BIN" ] || [ "$(cat "$CRIU_BIN")" != "$criu_wrapper" ]; then
  printf '%s\n' "$criu_wrapper" > "$CRIU_BIN.tmp"; chmod 755 "$CRIU_BIN.tmp"; mv "$CRIU_BIN.tmp" "$CRIU_BIN"
  criu_ok || die "$CRIU_BIN --version does not print 4.2.x"
  "$CRIU_BIN" check >&2 || die "criu check failed"
  log "installed $CRIU_BIN: $("$CRIU_BIN" --version | head -1)"
fi

# ---- 2b. CRIU's kernel-probe cache where /run is not a tmpfs ---------------------------------------------------
# Without the cache every CRIU run probes the kernel again: 24 ms of each dump and each restore, both inside the
# freeze (docs/platform-notes.md). CRIU saves it only on a tmpfs (and on this machine /run is ext4), and after
# one refused save leaves an empty criu.kdat.tmp that makes every later save give up (O_EXCL). So the probes run
# once per boot in a private mount namespace whose /run is a tmpfs, and the result is put where CRIU reads it.
if [ "$(stat -f -c %T /run)" != tmpfs ]; then
  boot=$(cat /proc/sys/kernel/random/boot_id)
  if [ ! -s "$KDAT" ] || [ "$(cat "$KDAT_BOOT" 2>/dev/null)" != "$boot" ]; then
    rm -f "$KDAT" "$KDAT.tmp" "$KDAT_BOOT"
    probe=$(mktemp -d)
    unshare --mount --propagation private sh -c "mount -t tmpfs -o size=1m ferry-kdat /run && '$CRIU_BIN' check >/dev/null 2>&1; cp /run/criu.kdat '$probe/kdat'" || true
    if [ -s "$probe/kdat" ]; then
      cp "$probe/kdat" "$KDAT.new" && chmod 600 "$KDAT.new" && mv "$KDAT.new" "$KDAT"
      printf '%s\n' "$boot" > "$KDAT_BOOT"
      log "criu kernel-probe cache written to $KDAT (for boot $boot)"
    else
      log "WARNING: CRIU wrote no kernel-probe cache; every CRIU run probes the kernel (~25 ms more)"
    fi
    rm -rf "$probe"
  fi
fi

# ---- 3. CRIU config read by checkpoint/restore through ferry-runc ---------------------------------------------
# nftables lock: 100 connections freeze for 0.18 s instead of 4.46 s with the iptables lock (criu.md §7).
# runc never sets the lock method itself, so the config file's value is the one CRIU uses. A kernel without
# nf_tables would make every dump fail with it, so it is written only where CRIU reports the feature.
mkdir -p "$FERRY/etc"
if "$CRIU_BIN" check --feature network_lock_nftables >/dev/null 2>&1; then
  conf='network-lock nftables'
else
  log "WARNING: CRIU reports no nftables support; keeping CRIU's default (iptables) network lock"
  conf='# network-lock nftables: not supported by this kernel (criu check --feature network_lock_nftables)'
fi
if [ ! -f "$CRIU_CONF" ] || [ "$(cat "$CRIU_CONF")" != "$conf" ]; then
  printf '%s\n' "$conf" > "$CRIU_CONF"
  log "wrote $CRIU_CONF"
fi

# ---- 4. ferry-runc wrapper ---------------------------------------------------------------------------------
real_runc=$(readlink -f "$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v runc)") \
  || die "runc not found"
mkdir -p "$FERRY/bin"
new=$(sed "s|^REAL_RUNC=.*|REAL_RUNC=$real_runc|" "$HERE/ferry-runc.sh")
if [ ! -x "$RUNC_WRAP" ] || [ "$(cat "$RUNC_WRAP")" != "$new" ]; then
  printf '%s\n' "$new" > "$RUNC_WRAP.tmp"; chmod 755 "$RUNC_WRAP.tmp"; mv "$RUNC_WRAP.tmp" "$RUNC_WRAP"
  log "installed $RUNC_WRAP (runc: $real_runc)"
fi
mkdir -p /var/log/ferry

# ---- 5. containerd-shim-ferry-v1 on the CRI containerds' PATH (scripts/containerd.sh) -------------------------
# containerd resolves runtime_type io.containerd.ferry.v1 to the binary containerd-shim-ferry-v1 on its PATH;
# /opt/ferry/cri-bin holds only that link, to the launcher in the checkout this script runs from.
CRI_BIN=$FERRY/cri-bin
SHIM_LINK=$CRI_BIN/containerd-shim-ferry-v1
shim_target=$(dirname "$HERE")/bin/containerd-shim-ferry-v1
mkdir -p "$CRI_BIN"
if [ "$(readlink "$SHIM_LINK" 2>/dev/null)" != "$shim_target" ]; then
  ln -sfn "$shim_target" "$SHIM_LINK.tmp" && mv -T "$SHIM_LINK.tmp" "$SHIM_LINK"
  log "linked $SHIM_LINK -> $shim_target"
fi

# ---- 6. fs.pipe-max-size -------------------------------------------------------------------------------------
# CRIU's page server tee()s 4 MiB pipes; root has no CAP_SYS_RESOURCE here, so without this lazy migration fails
# with "page-pipe: tee: Operation not permitted" (PLATFORM.md). Not persistent across reboots: re-run after boot.
if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt 4194304 ]; then
  if command -v sysctl >/dev/null; then sysctl -q -w fs.pipe-max-size=4194304; else echo 4194304 > /proc/sys/fs/pipe-max-size; fi
fi
log "ready: criu $CRIU_BIN, runc wrapper $RUNC_WRAP, fs.pipe-max-size=$(cat /proc/sys/fs/pipe-max-size)"
