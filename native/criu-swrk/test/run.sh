#!/bin/sh
# Tests of ferry-criu-swrk against the real CRIU 4.2.1 (/opt/ferry/bin/criu's binary), driven the way runc drives
# `criu swrk`: a SOCK_SEQPACKET socket, one request, one answer. A counting wrapper tells whether CRIU started.
# Last line: "N passed, M failed"; exit status != 0 on any failure.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
sh "$here/build.sh" || exit 1
client="$here/build/swrk-client"
if [ ! -x "$client" ] || [ "$here/test/client.c" -nt "$client" ]; then
  gcc -std=gnu11 -O2 -Wall -Wextra -Werror -o "$client.tmp" "$here/test/client.c" && mv -f "$client.tmp" "$client" || exit 1
fi
front="$here/build/ferry-criu-swrk"
LP=/opt/ferry/criu/root/usr/lib/x86_64-linux-gnu
CRIU_REAL=/opt/ferry/criu/root/usr/sbin/criu
tmp=$(mktemp -d /tmp/ferry-criu-swrk-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM
export FERRY_CRIU_RPC_CACHE_DIR="$tmp/cache"
# The CRIU behind the front, counting its starts.
cat > "$tmp/criu" <<WRAP
#!/bin/sh
echo start >> "$tmp/starts"
exec $LP/ld-linux-x86-64.so.2 --library-path $LP $CRIU_REAL "\$@"
WRAP
chmod +x "$tmp/criu"
cp "$CRIU_REAL" "$tmp/identity" 2>/dev/null || echo x > "$tmp/identity"
: > "$tmp/starts"
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "PASS $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1: $2"; }
starts() { wc -l < "$tmp/starts" | tr -d ' '; }
via_front() { "$client" "$1" "$front" --identity "$tmp/identity" -- "$tmp/criu"; }
direct() { "$client" "$1" "$tmp/criu"; }

VERSION=080a
FEAT_LAZY=08092a021001                    # FEATURE_CHECK, features { lazy_pages: true }
FEAT_LAZY_OPTS=08091204080710392a021001   # the same with criu_opts { images_dir_fd: 7, pid: 57 }, as runc sends
FEAT_MEM=08092a020801                     # FEATURE_CHECK, features { mem_track: true }
FEAT_NONE=0809                            # no features: CRIU answers success=false

want=$(direct $VERSION); s0=$(starts)
a1=$(via_front $VERSION); s1=$(starts); a2=$(via_front $VERSION); s2=$(starts)
if [ "$a1" = "$want" ] && [ "$a2" = "$want" ] && [ $((s1 - s0)) = 1 ] && [ "$s2" = "$s1" ]; then ok version-cached
else bad version-cached "answers '$a1' '$a2' (want '$want'), CRIU starts $((s1 - s0)) then $((s2 - s1))"; fi

want=$(direct $FEAT_LAZY); s0=$(starts)
a1=$(via_front $FEAT_LAZY_OPTS); s1=$(starts); a2=$(via_front $FEAT_LAZY); s2=$(starts)
if [ "$a1" = "$want" ] && [ "$a2" = "$want" ] && [ $((s1 - s0)) = 1 ] && [ "$s2" = "$s1" ]; then ok feature-check-cached-whatever-the-opts
else bad feature-check-cached-whatever-the-opts "answers '$a1' '$a2' (want '$want'), CRIU starts $((s1 - s0)) then $((s2 - s1))"; fi

want=$(direct $FEAT_MEM); s0=$(starts); a1=$(via_front $FEAT_MEM); s1=$(starts)
if [ "$a1" = "$want" ] && [ $((s1 - s0)) = 1 ]; then ok other-features-asked-again
else bad other-features-asked-again "answer '$a1' (want '$want'), CRIU starts $((s1 - s0))"; fi

s0=$(starts); via_front $FEAT_NONE >/dev/null; via_front $FEAT_NONE >/dev/null; s1=$(starts)
if [ $((s1 - s0)) = 2 ]; then ok failure-not-cached; else bad failure-not-cached "CRIU started $((s1 - s0)) times for two unsuccessful checks"; fi

# Any other request goes to CRIU untouched (CHECK: "Looks good." on stdout, then its answer).
s0=$(starts); a1=$(via_front 0803); rc=$?; s1=$(starts)
if [ $rc = 0 ] && [ $((s1 - s0)) = 1 ] && printf '%s' "$a1" | grep -q '08031001$'; then ok other-requests-pass-through
else bad other-requests-pass-through "rc $rc, answer '$a1', CRIU starts $((s1 - s0))"; fi

# Another CRIU binary (reinstalled: new mtime) never gets the old one's answers.
touch -d '@1600000000' "$tmp/identity"
s0=$(starts); a1=$(via_front $VERSION); s1=$(starts)
if [ $((s1 - s0)) = 1 ]; then ok new-criu-asked-again; else bad new-criu-asked-again "CRIU starts $((s1 - s0))"; fi

# A torn cache file is a miss, not an answer.
for f in "$tmp"/cache/*; do head -c 5 "$f" > "$f.t" && mv "$f.t" "$f"; done
want=$(direct $VERSION); s0=$(starts); a1=$(via_front $VERSION); s1=$(starts)
if [ "$a1" = "$want" ] && [ $((s1 - s0)) = 1 ]; then ok torn-cache-file-ignored
else bad torn-cache-file-ignored "answer '$a1' (want '$want'), CRIU starts $((s1 - s0))"; fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
