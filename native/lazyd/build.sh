#!/bin/sh
# Build native/lazyd/build/ferry-lazyd. Idempotent: does nothing if the binary is newer than every source file
# and was built with the same compiler command.   CC=... CFLAGS_EXTRA=... ./build.sh      FORCE=1 ./build.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/build/ferry-lazyd"
stamp="$here/build/.ferry-lazyd.cmd"
cc=${CC:-gcc}
srcs="src/log.c src/img.c src/main.c"
flags="-std=gnu11 -O2 -g -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral -D_FORTIFY_SOURCE=2 -fstack-protector-strong ${CFLAGS_EXTRA:-}"

if [ "$(uname -m)" != "x86_64" ]; then
	echo "ferry-lazyd: only x86_64 is supported (CRIU's page-server header is read as little-endian x86_64)" >&2
	exit 1
fi

cd "$here"
cmd="$cc $flags"
if [ -x "$out" ] && [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$cmd" ]; then
	stale=$(find src build.sh -newer "$out" -type f | head -n 1)
	[ -z "$stale" ] && exit 0
fi
mkdir -p build
# shellcheck disable=SC2086
$cc $flags -o "$out.tmp" $srcs
mv -f "$out.tmp" "$out"
printf '%s\n' "$cmd" >"$stamp"
echo "built $out" >&2
