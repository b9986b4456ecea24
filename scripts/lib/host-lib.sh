# Shared by hosts.sh and containerd.sh (sourced; both define log/die first): host names, process and mount
# teardown of one lab host's directories.

# Short names only: they end up in unix socket paths (108 characters at most).
check_name() {
  [[ $1 =~ ^[a-z0-9][a-z0-9_.-]{0,31}$ ]] || die "bad host name '$1' (use [a-z0-9_.-], at most 32 characters)"
}

# Mount points at or under directory A or B, deepest first.
mounts_under() {  # mounts_under A B
  awk -v a="$1" -v b="$2" '$2 == a || index($2, a "/") == 1 || $2 == b || index($2, b "/") == 1 { print length($2), $2 }' \
    /proc/self/mounts | sort -rn | cut -d' ' -f2-
}

# Unmounts everything under A and B (lazily if busy, a few passes for stacked mounts); dies if any remains.
unmount_under() {  # unmount_under WHAT A B
  local pass m mp
  for pass in 1 2 3 4 5; do
    m=$(mounts_under "$2" "$3"); [ -z "$m" ] && break
    while IFS= read -r mp; do umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true; done <<<"$m"
  done
  m=$(mounts_under "$2" "$3")
  [ -z "$m" ] || die "$1: still mounted: $(echo "$m" | tr '\n' ' ')"
}

wait_gone() {  # wait_gone SECONDS PID...
  local t=$(( $1 * 20 )); shift
  local p alive
  while [ "$t" -gt 0 ]; do
    alive=0; for p in "$@"; do [ -d "/proc/$p" ] && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.05; t=$((t - 1))
  done
  return 1
}
