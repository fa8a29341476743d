#!/usr/bin/env bash
# Browser tests in headless Chromium: the CRM example (tests/browser/crm.test.mjs) and
# the server-served browser heartbeat on pages of the Python example behind a real
# nginx (tests/browser/proxy.test.mjs, examples/python-signin).
#
# Builds the CRM and sessiond (debug), installs the npm dependencies if missing (npm ci,
# from the committed package-lock.json), starts two CRM servers and two copies of the
# Python example on free loopback ports with short timeouts, runs the tests with node's
# test runner, and stops everything. Screenshots go to artifacts/browser/.
#
# Usage: tests/browser/run.sh        (from anywhere in the repository)
# Needs: /usr/bin/chromium (apt-get install -y chromium), node >= 18 with npm, and for
#        the proxy tests python3 and nginx (apt-get install nginx-light).
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

echo "==> building the CRM example and sessiond"
(cd "$ROOT" && cargo build -p crm -p sessiond)
CRM_BIN="$ROOT/target/debug/crm"
TESTS=(crm.test.mjs)
NGINX="$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)"
if [ -n "$NGINX" ] && command -v python3 >/dev/null 2>&1; then
  TESTS+=(proxy.test.mjs)
else
  skip "the browser heartbeat behind nginx (proxy.test.mjs)" "python3 or nginx not found: apt-get install nginx-light"
fi

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

# example NAME FLAGS...: starts the Python example behind nginx; sets NAME_URL,
# NAME_SESSIOND and NAME_KEY from the file it writes once everything answers.
example() {
  local name="$1"
  shift
  SESSIOND_BIN="$ROOT/target/debug/sessiond" python3 "$ROOT/examples/python-signin/run.py" \
    --port 0 --ready-file "$WORK/$name.json" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 150); do
    [ -f "$WORK/$name.json" ] && break
    sleep 0.2
  done
  if [ ! -f "$WORK/$name.json" ]; then
    echo "the $name example did not start; its log:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
  fi
  read -r url sd key < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["url"], d["sessiond"], d["app_key"])' "$WORK/$name.json")
  printf -v "${name}_URL" '%s' "$url"
  printf -v "${name}_SESSIOND" '%s' "$sd"
  printf -v "${name}_KEY" '%s' "$key"
}

if [[ " ${TESTS[*]} " == *" proxy.test.mjs "* ]]; then
  echo "==> starting the Python example behind nginx, twice"
  ALLOWED_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  example PROXY --heartbeat-interval 2 --heartbeat-grace 1 --idle-timeout 30 \
    --allowed-origin "http://127.0.0.1:$ALLOWED_PORT"
  example PROXY_IDLE --heartbeat-interval 2 --heartbeat-grace 1 --idle-timeout 6
  echo "    $PROXY_URL (heartbeat 2 s + 1 s, idle 30 s), $PROXY_IDLE_URL (idle 6 s)"
  export PROXY_URL PROXY_SESSIOND PROXY_KEY PROXY_IDLE_URL PROXY_IDLE_SESSIOND PROXY_IDLE_KEY ALLOWED_PORT
fi

ARTIFACTS_DIR="$ROOT/artifacts/browser"
mkdir -p "$ARTIFACTS_DIR"
echo "==> running the browser tests (screenshots in artifacts/browser/)"
cd "$HERE"
status=0
CRM_URL="$CRM_URL" CRM_IDLE_URL="$CRM_IDLE_URL" ARTIFACTS_DIR="$ARTIFACTS_DIR" \
  node --test --test-reporter=spec "${TESTS[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "==> server logs" >&2
  tail -n 50 "$WORK"/*.log >&2 || true
fi
exit "$status"
