#!/bin/sh
# Build ferry-dirtytrack and its test workload, then run the real-process tests
# (root required). Last line of output: "N passed, M failed". Exit status != 0
# on any failure.   Options are passed to the driver: -v (verbose), -k NAME.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/build.sh"
wl="$here/build/dt-workload"
if [ ! -x "$wl" ] || [ -n "$(find "$here/test/workload.c" -newer "$wl")" ]; then
	gcc -std=gnu11 -O2 -Wall -Wextra -Werror -pthread -o "$wl.tmp" "$here/test/workload.c"
	mv -f "$wl.tmp" "$wl"
fi
exec /usr/bin/python3 "$here/test/test_dirtytrack.py" "$here/build" "$@"
