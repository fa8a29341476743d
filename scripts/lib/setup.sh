# Sourced by scripts/test (and so by .ci/run): sets up on this machine what the suites
# need and can be set up here, and says exactly what to install where it cannot.
#
# - PostgreSQL and Redis: started if installed and not answering (PostgreSQL through
#   pg_ctlcluster, Redis as a daemon on 127.0.0.1:6379 keeping nothing on disk).
# - Debian packages the browser, proxy, terminal and packaging suites use (chromium,
#   chromium-driver, tmux, openssl, nginx-light, caddy, systemd): installed with apt-get
#   when running as root on a Debian system; otherwise listed in one apt-get line.
# - npm packages are installed by the suites themselves (npm ci, from the committed
#   lock files), Python ones into the suites' own virtual environments.
#
# Nothing here fails the run: a suite that still lacks something skips and says why,
# or with CI=true fails.

setup_services() {
  local started=""
  if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
      echo "starting PostgreSQL ($(ls /etc/postgresql) main)"
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
      started=1
    fi
  fi
  if command -v redis-server >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
    started=1
  fi
  # Wait only for what was just started (one not installed is not waited for).
  for _ in $(seq 1 50); do
    [ -n "$started" ] || break
    { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; } && break
    sleep 0.2
  done
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || echo "no PostgreSQL on 127.0.0.1:5432 (apt-get install postgresql): its suites will skip"
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || echo "no Redis on 127.0.0.1:6379 (apt-get install redis-server): its suites will skip"
}

setup_packages() {
  local need=""
  [ -x /usr/bin/chromium ] || need="$need chromium chromium-driver"
  command -v tmux >/dev/null 2>&1 || need="$need tmux"
  command -v openssl >/dev/null 2>&1 || need="$need openssl"
  [ -x /usr/sbin/nginx ] || need="$need nginx-light"
  command -v caddy >/dev/null 2>&1 || need="$need caddy"
  command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
  [ -n "$need" ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages the suites use:$need"
    # shellcheck disable=SC2086
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need; } \
      || echo "could not install them (no network, or dpkg busy); as root: apt-get install -y$need"
  else
    echo "some suites need Debian packages that are not installed; as root:"
    echo "  apt-get install -y$need"
  fi
}

setup_services
setup_packages
