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

# 3. An image from a CRIU without the shim (gzip) still restores through it.
(cd "$d" && "$real_tar" --create --gzip --numeric-owner --directory /proc/self/fd/0 . < "$d" > "$tmp/old.img")
mkdir "$tmp/old.out"
if extract "$tmp/old.img" "$tmp/old.out" && [ "$(listing "$d")" = "$(listing "$tmp/old.out")" ]; then ok gzip-image-still-restores
else bad gzip-image-still-restores "tree differs or extract failed"; fi

# 4. A gzip archive from a pipe (not seekable, cannot be peeked at) keeps its --gzip.
mkdir "$tmp/pipe.out"
if cat "$tmp/old.img" | PATH="$shim_dir:$PATH" tar --extract --gzip --no-unquote --no-wildcards --directory "$tmp/pipe.out" \
  && [ "$(listing "$d")" = "$(listing "$tmp/pipe.out")" ]; then ok gzip-from-pipe; else bad gzip-from-pipe "extract failed"; fi

# 5. Anything that is not CRIU's tmpfs call reaches the real tar unchanged (and the shim never finds itself).
if [ "$(PATH="$shim_dir:$PATH" tar --version | head -1)" = "$("$real_tar" --version | head -1)" ]; then ok pass-through
else bad pass-through "tar --version differs"; fi
(cd "$d" && PATH="$shim_dir:$PATH" tar --create --gzip --file "$tmp/file.tgz" .)
if is_gzip "$tmp/file.tgz"; then ok gzip-to-file-untouched; else bad gzip-to-file-untouched "a --file archive lost its gzip"; fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
