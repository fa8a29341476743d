#!/usr/bin/env bash
# Browser tests of the admin console: builds sessiond, starts it on a free loopback
# port (memory store, known tokens), drives /admin in headless Chromium with
# playwright-core, keeps screenshots in artifacts/console/, stops the server. Then
# nodes.test.mjs starts servers of its own: one restarted over a file store, and two
# nodes over Redis (a fresh namespace, removed afterwards) to show that a sign-in
# survives a restart and works on every node.
# Without node or /usr/bin/chromium it says so and skips, unless CI=true.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

missing=""
command -v node >/dev/null 2>&1 || missing="node"
[ -x /usr/bin/chromium ] || missing="${missing:+$missing and }/usr/bin/chromium"
if [ -n "$missing" ]; then
  # shellcheck source=../../scripts/lib/skip.sh
  . "$root/scripts/lib/skip.sh"
  skip "console browser tests" "$missing not installed (apt-get install chromium, and node)"
  exit 0
fi

if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
cargo build --quiet -p sessiond
bin="${CARGO_TARGET_DIR:-$root/target}/debug/sessiond"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
redis_url="${SESSIOND_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
namespace="sessiond_console_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

data=$(mktemp -d)
cat > "$data/sessiond.toml" <<TOML
admin_token = "console-test-admin-token-0001"
store = "memory:"
expiry_interval_ms = 200
[apps.gestan]
key = "gestan-console-test-key-0001"
seats = 5
heartbeat = { interval_s = 30, grace_s = 60 }
[apps.field]
key = "field-console-test-key-0001"
heartbeat = { interval_s = 1, grace_s = 1, lease_s = 60 }
[apps.shop]
key = "shop-console-test-key-00001"
# A webhook nobody answers: its deliveries become dead letters at once.
[apps.shop.hooks.billing]
url = "http://127.0.0.1:9/hook"
secret = "console-test-hook-secret-0001"
events = ["opened"]
max_tries = 1
allow_private = true
TOML
log="$data/server.log"
SESSIOND_LOG=info "$bin" serve --config "$data/sessiond.toml" --listen 127.0.0.1:0 --data-dir "$data" 2>"$log" &
pid=$!
forget_namespace() {
  command -v redis-cli >/dev/null 2>&1 || return 0
  redis-cli -u "$redis_url" --scan --pattern "$namespace:*" 2>/dev/null \
    | xargs -r redis-cli -u "$redis_url" del >/dev/null 2>&1 || true
}
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"; forget_namespace' EXIT
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*listen=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n 1)
  [ -n "${port:-}" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "console tests: the server did not start" >&2; cat "$log" >&2; exit 1; }

mkdir -p "$root/artifacts/console"
cd "$here"
SESSIOND_URL="http://127.0.0.1:$port" \
ADMIN_TOKEN="console-test-admin-token-0001" \
APP_KEY="gestan-console-test-key-0001" \
SHOP_KEY="shop-console-test-key-00001" \
FIELD_KEY="field-console-test-key-0001" \
ARTIFACTS="$root/artifacts/console" \
SESSIOND_BIN="$bin" \
REDIS_URL="$redis_url" \
REDIS_NAMESPACE="$namespace" \
  node --test --test-concurrency=1 console.test.mjs nodes.test.mjs
