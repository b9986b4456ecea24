#!/bin/sh
# Tests of ferry-criu-tar with CRIU's own tar command lines (criu/mount.c tmpfs_dump and tmpfs_restore), the
# real GNU tar behind it, and the trees a Docker container's tmpfs mounts hold (device nodes, links, dirs).
# Last line: "N passed, M failed"; exit status != 0 on any failure. Root: mknod and chown.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
sh "$here/build.sh" || exit 1
shim_dir="$here/build"
real_tar=$(command -v tar)
tmp=$(mktemp -d /tmp/ferry-criu-tar-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "PASS $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1: $2"; }

# CRIU's argv, as criu/mount.c passes it (stdin: the mount's root; stdout: the image file).
create() { (cd "$1" && PATH="$shim_dir:$PATH" tar --create --gzip --no-unquote --no-wildcards --one-file-system \
  --check-links --preserve-permissions --sparse --numeric-owner --directory /proc/self/fd/0 . < "$1" > "$2"); }
extract() { PATH="$shim_dir:$PATH" tar --extract --gzip --no-unquote --no-wildcards --directory "$2" < "$1"; }
# What a tree looks like to a user: names, types, modes, owners, device numbers, link targets, contents.
listing() { (cd "$1" && find . -printf '%p %y %m %U:%G %D %l %s\n' | grep -v '^\. ' | sort; find . -type f -exec sha256sum {} + | sort); }
is_gzip() { [ "$(od -An -N2 -tx1 "$1" | tr -d ' ')" = 1f8b ]; }

# 1. An empty tmpfs (the masks on /proc/acpi, /sys/firmware): the shim's own archive is GNU tar's, byte for byte.
mkdir -m 0711 "$tmp/empty"; chown 12:34 "$tmp/empty"; touch -d @1700000000 "$tmp/empty"
create "$tmp/empty" "$tmp/empty.shim"
(cd "$tmp/empty" && "$real_tar" --create --no-unquote --no-wildcards --one-file-system --check-links \
  --preserve-permissions --sparse --numeric-owner --directory /proc/self/fd/0 . < "$tmp/empty" > "$tmp/empty.real")
if cmp -s "$tmp/empty.shim" "$tmp/empty.real"; then ok empty-dir-bytes; else bad empty-dir-bytes "differs from GNU tar: $(cmp "$tmp/empty.shim" "$tmp/empty.real")"; fi
mkdir "$tmp/empty.out"; chmod 0755 "$tmp/empty.out"
if extract "$tmp/empty.shim" "$tmp/empty.out" && [ "$(stat -c '%a %u:%g %Y' "$tmp/empty.out")" = "711 12:34 1700000000" ]; then
  ok empty-dir-extract; else bad empty-dir-extract "root is $(stat -c '%a %u:%g %Y' "$tmp/empty.out")"; fi

# 2. A /dev-like tree: device nodes, a symlink, a hard link, a subdir, a sparse file; uncompressed, restored exactly.
d="$tmp/dev"; mkdir -p "$d/pts" "$d/sub/deeper"
mknod -m 666 "$d/null" c 1 3; mknod -m 666 "$d/zero" c 1 5; mknod -m 620 "$d/tty0" c 4 0
ln -s /proc/self/fd "$d/fd"; echo hello > "$d/sub/file"; ln "$d/sub/file" "$d/sub/hard"; chown 5:6 "$d/sub/file"
truncate -s 3M "$d/sub/sparse"; printf x | dd of="$d/sub/sparse" bs=1 seek=2000000 conv=notrunc 2>/dev/null
create "$d" "$tmp/dev.img"
mkdir "$tmp/dev.out"
if is_gzip "$tmp/dev.img"; then bad dev-tree "archive is still gzip"
elif ! extract "$tmp/dev.img" "$tmp/dev.out"; then bad dev-tree "extract failed"
elif [ "$(listing "$d")" != "$(listing "$tmp/dev.out")" ]; then bad dev-tree "trees differ: $(listing "$d" | diff - "$(listing "$tmp/dev.out" > "$tmp/l2"; echo "$tmp/l2")" | head -5)"
elif [ "$(stat -c %i "$tmp/dev.out/sub/file")" != "$(stat -c %i "$tmp/dev.out/sub/hard")" ]; then bad dev-tree "hard link lost"
else ok dev-tree; fi

# 3. What a container's /dev and /sys/fs/cgroup hold (directories, symlinks, device nodes, a fifo): archived and
#    extracted by the shim itself, without the real tar, and interchangeable with GNU tar's archives both ways.
counting="$tmp/counting"; mkdir "$counting"
printf '#!/bin/sh\necho run >> "%s/real-tar-runs"\nexec "%s" "$@"\n' "$tmp" "$real_tar" > "$counting/tar"; chmod +x "$counting/tar"
: > "$tmp/real-tar-runs"
runs() { wc -l < "$tmp/real-tar-runs" | tr -d ' '; }
ncreate() { (cd "$1" && PATH="$shim_dir:$counting:$PATH" tar --create --gzip --no-unquote --no-wildcards --one-file-system \
  --check-links --preserve-permissions --sparse --numeric-owner --directory /proc/self/fd/0 . < "$1" > "$2"); }
nextract() { PATH="$shim_dir:$counting:$PATH" tar --extract --gzip --no-unquote --no-wildcards --directory "$2" < "$1"; }
# Everything a user of the restored /dev would see, mtimes included (atimes are the extraction's, as with tar).
attrs() { (cd "$1" && find . -exec stat -c '%n %F %a %u:%g %t:%T %N %Y' {} + | sort); }
n="$tmp/ndev"; mkdir -p "$n/pts" "$n/shm" "$n/cg/cpu,cpuacct" "$n/cg/memory"
mknod -m 666 "$n/null" c 1 3; mknod -m 620 "$n/tty" c 5 0; mknod -m 660 "$n/loop9" b 7 9; mkfifo -m 640 "$n/initctl"
mknod -m 755 "$n/setgid" c 1 5; chown 0:5 "$n/tty" "$n/setgid"; chmod 2755 "$n/setgid"
ln -s /proc/self/fd "$n/fd"; ln -s cpu,cpuacct "$n/cg/cpu"; chmod 1777 "$n/shm"; chmod 0555 "$n/cg"; chown 7:8 "$n/pts"
find "$n" -exec touch -h -d @1650000000 {} +
ncreate "$n" "$tmp/ndev.shim"; r1=$(runs)
mkdir "$tmp/ndev.by-tar"; "$real_tar" --extract --directory "$tmp/ndev.by-tar" < "$tmp/ndev.shim"
mkdir "$tmp/ndev.by-shim"; nextract "$tmp/ndev.shim" "$tmp/ndev.by-shim"; r2=$(runs)
(cd "$n" && "$real_tar" --create --numeric-owner --directory /proc/self/fd/0 . < "$n" > "$tmp/ndev.tar")
mkdir "$tmp/ndev.from-tar"; nextract "$tmp/ndev.tar" "$tmp/ndev.from-tar"; r3=$(runs)
want=$(attrs "$n")
if [ "$r3" != 0 ]; then bad native-dev-tree "the real tar ran $r3 times (after create $r1, after extract $r2)"
elif [ "$(attrs "$tmp/ndev.by-tar")" != "$want" ]; then bad native-dev-tree "GNU tar reads the shim's archive differently: $(attrs "$tmp/ndev.by-tar" | diff - "$(printf '%s\n' "$want" > "$tmp/w"; echo "$tmp/w")" | head -4)"
elif [ "$(attrs "$tmp/ndev.by-shim")" != "$want" ]; then bad native-dev-tree "shim to shim differs: $(attrs "$tmp/ndev.by-shim" | diff - "$tmp/w" | head -4)"
elif [ "$(attrs "$tmp/ndev.from-tar")" != "$want" ]; then bad native-dev-tree "GNU tar's archive extracted differently: $(attrs "$tmp/ndev.from-tar" | diff - "$tmp/w" | head -4)"
else ok native-dev-tree; fi
# A regular file anywhere in the tree: the real tar makes and reads the archive (contents, sparseness).
echo data > "$n/shm/seg"; touch -h -d @1650000000 "$n/shm/seg" "$n/shm"; want=$(attrs "$n")
ncreate "$n" "$tmp/ndev2.img"; mkdir "$tmp/ndev2.out"; nextract "$tmp/ndev2.img" "$tmp/ndev2.out"
if [ "$(runs)" = 2 ] && [ "$(attrs "$tmp/ndev2.out")" = "$want" ] && cmp -s "$n/shm/seg" "$tmp/ndev2.out/shm/seg"; then ok regular-file-goes-to-real-tar
else bad regular-file-goes-to-real-tar "real tar runs $(runs) (want 2), or the tree differs"; fi

# 4. An image from a CRIU without the shim (gzip) still restores through it.
(cd "$d" && "$real_tar" --create --gzip --numeric-owner --directory /proc/self/fd/0 . < "$d" > "$tmp/old.img")
mkdir "$tmp/old.out"
if extract "$tmp/old.img" "$tmp/old.out" && [ "$(listing "$d")" = "$(listing "$tmp/old.out")" ]; then ok gzip-image-still-restores
else bad gzip-image-still-restores "tree differs or extract failed"; fi

# 5. A gzip archive from a pipe (not seekable, cannot be peeked at) keeps its --gzip.
mkdir "$tmp/pipe.out"
if cat "$tmp/old.img" | PATH="$shim_dir:$PATH" tar --extract --gzip --no-unquote --no-wildcards --directory "$tmp/pipe.out" \
  && [ "$(listing "$d")" = "$(listing "$tmp/pipe.out")" ]; then ok gzip-from-pipe; else bad gzip-from-pipe "extract failed"; fi

# 6. Anything that is not CRIU's tmpfs call reaches the real tar unchanged (and the shim never finds itself).
if [ "$(PATH="$shim_dir:$PATH" tar --version | head -1)" = "$("$real_tar" --version | head -1)" ]; then ok pass-through
else bad pass-through "tar --version differs"; fi
(cd "$d" && PATH="$shim_dir:$PATH" tar --create --gzip --file "$tmp/file.tgz" .)
if is_gzip "$tmp/file.tgz"; then ok gzip-to-file-untouched; else bad gzip-to-file-untouched "a --file archive lost its gzip"; fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
