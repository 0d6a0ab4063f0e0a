#!/usr/bin/env bash
# Installs the Debian packages Herald builds, runs and tests with, when any
# is missing. Safe to run again: it does nothing when all are present.
set -euo pipefail

PKGS=(
  build-essential pkg-config clang clang-format
  libhiredis-dev libuv1-dev libcurl4-openssl-dev libjansson-dev libssl-dev
  libsqlite3-dev
  libpq-dev postgresql-15  # the PostgreSQL Message Center and its tests
  libmicrohttpd-dev  # herald-api's HTTP server
  redis-server redis-tools
  python3 python3-aiosmtpd python3-yaml
  postfix            # smtp-sink / smtp-source for `make bench`
  dnsmasq            # DNS server of the SPF tests
  dovecot-imapd      # IMAP server of the scheme tests
  docker-compose     # `docker-compose config -q` in the tests
  sqlite3 openssl procps iproute2 curl tzdata
  faketime           # the unit tests run a second time three years ahead
)

# The console's browser test (tests/browser): Debian's chromium, driven by
# playwright-core from npm (pinned in tests/browser/package-lock.json; it
# downloads no browser). Any node >= 18 already installed will do.
PKGS+=(chromium)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PKGS+=(nodejs npm)
fi
browser_modules() {
  local dir
  dir="$(dirname "$0")/../tests/browser"
  [ -f "$dir/node_modules/playwright-core/package.json" ] && return 0
  echo "deps: npm ci in tests/browser" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then browser_modules; exit 0; fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# postfix asks questions on install; answer "no configuration" up front.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Installing a server package may start it on its default port; Herald's
# tests and demo start their own on free ports, so stop the system ones.
for svc in redis-server postfix dnsmasq dovecot postgresql; do
  if command -v service >/dev/null 2>&1; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi
done
browser_modules
