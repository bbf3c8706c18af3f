# Sourced by scripts/test: start PostgreSQL and Redis on this machine if they are down.
# The commands are the ones the machine itself uses (see ../shared/DESIGN.md, section 3).
ensure_services() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
      echo "==> starting PostgreSQL" >&2
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
      for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    if command -v redis-server >/dev/null; then
      echo "==> starting Redis" >&2
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
      for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
    fi
  fi
}

# Sourced by scripts/test: install the command-line tools the tests need when they are missing,
# with apt-get when we are root (without recommended packages): Debian's docker-compose validates
# docker-compose.yml offline (tests/test_compose.py); Debian's chromium is the browser the page
# tests drive with Playwright (tests/api/test_docs_browser.py, tests/viewer/). No browser is
# downloaded: Playwright is pointed at /usr/bin/chromium.
ensure_tools() {
  local missing=()
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v jq >/dev/null 2>&1 || missing+=(jq)  # the README's curl examples use it
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${missing[*]} (apt-get)" >&2
    local install=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
    DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null; } \
      || echo "diffall: could not install ${missing[*]}; the tests that need them will fail" >&2
  fi
  # Chromium with its recommended packages (fonts), for the page tests.
  if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (apt-get)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "diffall: could not install chromium; the page tests will fail" >&2
  fi
}
