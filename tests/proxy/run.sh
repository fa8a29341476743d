#!/usr/bin/env bash
# Forward-auth behind a real nginx (tests/proxy/forward_auth.py, with the configuration
# tests/proxy/nginx.conf.in that docs/PROXIES.md explains). Builds the server (debug) if
# needed; nginx comes from Debian (apt-get install nginx-light) and is started by the
# test on free loopback ports, as its own user's process (no root, no system service).
#
# Usage: tests/proxy/run.sh          (from anywhere in the repository)
# Env:   SESSIOND_BIN  the server binary (default: target/debug/sessiond, built here)
#        CI=true       a missing nginx or python3 fails the run instead of skipping
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../../scripts/lib/skip.sh
. "$root/scripts/lib/skip.sh"

nginx_bin=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
[ -n "$nginx_bin" ] || { skip "forward-auth behind nginx" "nginx not installed (apt-get install nginx-light)"; exit 0; }
command -v python3 >/dev/null 2>&1 || { skip "forward-auth behind nginx" "no python3"; exit 0; }

if [ -z "${SESSIOND_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet -p sessiond)
  SESSIOND_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/sessiond"
fi
PYTHONDONTWRITEBYTECODE=1 python3 "$here/forward_auth.py" "$SESSIOND_BIN" "$nginx_bin"
