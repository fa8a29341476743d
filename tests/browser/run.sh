#!/usr/bin/env bash
# Browser tests of the CRM example in headless Chromium (tests/browser/crm.test.mjs).
#
# Builds the CRM (debug), installs the npm dependencies if missing (npm ci, from the
# committed package-lock.json), starts two CRM servers on free loopback ports with short
# timeouts, runs the tests with node's test runner, and stops the servers. Screenshots
# go to artifacts/browser/.
#
# Usage: tests/browser/run.sh        (from anywhere in the repository)
# Needs: /usr/bin/chromium (apt-get install -y chromium) and node >= 18 with npm.
#        Without them it prints "SKIPPED: browser tests (...)" and exits 0, unless
#        CI=true, where a missing tool fails the run.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

# shellcheck source=../../scripts/lib/skip.sh
. "$ROOT/scripts/lib/skip.sh"
[ -x /usr/bin/chromium ] || { skip "CRM browser tests" "/usr/bin/chromium not found: apt-get install -y chromium"; exit 0; }
command -v node >/dev/null 2>&1 || { skip "CRM browser tests" "node not found"; exit 0; }
command -v npm >/dev/null 2>&1 || skip "npm not found"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
  || skip "node $(node --version) is older than 18"

echo "==> building the CRM example"
(cd "$ROOT" && cargo build -p crm)
CRM_BIN="$ROOT/target/debug/crm"

if [ ! -d "$HERE/node_modules/playwright-core" ]; then
  echo "==> installing npm dependencies"
  (cd "$HERE" && npm ci --no-audit --no-fund)
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  # start() runs in a command substitution (a subshell), so its pids are in a file.
  if [ -f "$WORK/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/pids"
    sleep 0.2
  fi
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME FLAGS...: starts a CRM on a free port (the OS picks it: --listen :0) and
# prints its base URL once it answers.
start() {
  local name="$1"
  shift
  "$CRM_BIN" --listen 127.0.0.1:0 --data-dir "$WORK/$name-data" --debug-endpoints \
    --expiry-every-ms 200 "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
  echo "$!" >>"$WORK/pids"
  local url=""
  for _ in $(seq 1 150); do
    url="$(sed -n 's|^crm listening on \(http://[0-9.:]*\)/.*|\1|p' "$WORK/$name.log" | head -n1)"
    if [ -n "$url" ] && curl -fsS -o /dev/null "$url/authenticate.shtml" 2>/dev/null; then
      echo "$url"
      return 0
    fi
    sleep 0.2
  done
  echo "the $name server did not start; its log:" >&2
  cat "$WORK/$name.log" >&2
  return 1
}

echo "==> starting the CRM servers"
CRM_URL="$(start crm --idle-timeout-s 30 --heartbeat-interval-s 2 --heartbeat-grace-s 1)"
CRM_IDLE_URL="$(start crm-idle --idle-timeout-s 6 --heartbeat-interval-s 2 --heartbeat-grace-s 1)"
echo "    $CRM_URL (heartbeat 2 s + 1 s, idle 30 s)"
echo "    $CRM_IDLE_URL (heartbeat 2 s + 1 s, idle 6 s)"

ARTIFACTS_DIR="$ROOT/artifacts/browser"
mkdir -p "$ARTIFACTS_DIR"
echo "==> running the browser tests (screenshots in artifacts/browser/)"
cd "$HERE"
status=0
CRM_URL="$CRM_URL" CRM_IDLE_URL="$CRM_IDLE_URL" ARTIFACTS_DIR="$ARTIFACTS_DIR" \
  node --test --test-reporter=spec crm.test.mjs || status=$?
if [ "$status" -ne 0 ]; then
  echo "==> server logs" >&2
  tail -n 50 "$WORK"/*.log >&2 || true
fi
exit "$status"
