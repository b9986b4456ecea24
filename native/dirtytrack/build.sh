#!/bin/sh
# Build native/dirtytrack/build/ferry-dirtytrack. Idempotent: does nothing if
# the binary is newer than every source file and was built with the same
# compiler command.   CC=... CFLAGS_EXTRA=... ./build.sh      FORCE=1 ./build.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/build/ferry-dirtytrack"
stamp="$here/build/.ferry-dirtytrack.cmd"
cc=${CC:-gcc}
srcs="src/common.c src/json.c src/inject.c src/track.c src/readmem.c src/main.c"
flags="-std=gnu11 -O2 -g -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral -D_FORTIFY_SOURCE=2 -fstack-protector-strong ${CFLAGS_EXTRA:-}"

if [ "$(uname -m)" != "x86_64" ]; then
	echo "ferry-dirtytrack: only x86_64 is supported (syscall injection is arch-specific)" >&2
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
