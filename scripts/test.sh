#!/usr/bin/env bash
# The README's test command: set the machine up (idempotent), then run every test on the real stack.
# The integration tests start their own hosts (t-a, t-b) and remove them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-hosts
mkdir -p .ferry
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.ferry/vitest.json "$@" || status=$?
# One plain summary line, for any reader of the log: "N passed, N failed".
node -e '
  const r = JSON.parse(require("fs").readFileSync(".ferry/vitest.json", "utf8"));
  // A suite that fails in a hook fails no single test; count it, so the line never hides a failure.
  const failed = r.numFailedTests > 0 ? r.numFailedTests : r.numFailedTestSuites;
  console.log(`tests: ${r.numPassedTests} passed, ${failed} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' || true
exit $status
