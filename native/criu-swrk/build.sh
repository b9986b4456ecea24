#!/bin/sh
# Build native/criu-swrk/build/ferry-criu-swrk (see src/main.c). Idempotent: does nothing if the binary is newer
# than every source file and was built with the same compiler command.   FORCE=1 ./build.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/build/ferry-criu-swrk"
stamp="$here/build/.ferry-criu-swrk.cmd"
cc=${CC:-gcc}
flags="-std=gnu11 -O2 -static -Wall -Wextra -Werror -Wshadow -D_FORTIFY_SOURCE=2 -fstack-protector-strong ${CFLAGS_EXTRA:-}"
cd "$here"
cmd="$cc $flags"
if [ -x "$out" ] && [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$cmd" ]; then
	stale=$(find src build.sh -newer "$out" -type f | head -n 1)
	[ -z "$stale" ] && exit 0
fi
mkdir -p build
# shellcheck disable=SC2086
$cc $flags -o "$out.tmp" src/main.c
mv -f "$out.tmp" "$out"
printf '%s\n' "$cmd" >"$stamp"
echo "built $out" >&2
