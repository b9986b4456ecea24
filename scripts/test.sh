#!/usr/bin/env bash
# The README's test command: set the machine up (idempotent), then run every test on the real stack.
# The integration tests start their own hosts (t-a, t-b) and remove them afterwards.
set -euo pipefail
# pipefail: a failing native suite must not hide behind tee
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-hosts
mkdir -p .ferry
status=0
# The native dirty tracker (pre-copy's building block) has its own suite: real ptrace/uffd on test workloads.
bash native/dirtytrack/test/run.sh 2>&1 | tee .ferry/native.log || status=$?
# So has the lazy-pages daemon: real CRIU dumps and lazy restores of memhog, compared with criu lazy-pages.
bash native/lazyd/test/run.sh 2>&1 | tee .ferry/lazyd.log || status=$?
# And the tar that CRIU's tmpfs dumps and restores go through (native/criu-tar): against GNU tar's own output.
sh native/criu-tar/test/run.sh 2>&1 | tee .ferry/criu-tar.log || status=$?
# And the front that answers runc's CRIU version and feature questions from CRIU's earlier answers.
sh native/criu-swrk/test/run.sh 2>&1 | tee .ferry/criu-swrk.log || status=$?
vstatus=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.ferry/vitest.json "$@" || vstatus=$?
[ "$vstatus" = 0 ] || status=$vstatus
# One plain summary line over both suites, for any reader of the log: "N passed, N failed".
node -e '
  const fs = require("fs");
  const r = JSON.parse(fs.readFileSync(".ferry/vitest.json", "utf8"));
  // A suite that fails in a hook fails no single test; count it, so the line never hides a failure.
  let passed = r.numPassedTests, failed = r.numFailedTests > 0 ? r.numFailedTests : r.numFailedTestSuites;
  for (const log of [".ferry/native.log", ".ferry/lazyd.log", ".ferry/criu-tar.log", ".ferry/criu-swrk.log"]) {
    const native = /^(\d+) passed, (\d+) failed$/m.exec(fs.readFileSync(log, "utf8"));
    if (native) { passed += Number(native[1]); failed += Number(native[2]); } else failed += 1;
  }
  console.log(`tests: ${passed} passed, ${failed} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' || true
exit $status
