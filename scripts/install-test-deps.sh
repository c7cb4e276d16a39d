#!/usr/bin/env bash
# Installs what the tests need beyond the Python packages of `pip install -e '.[test]'`:
#   - Debian's Chromium (/usr/bin/chromium), driven headless by Playwright in tests/browser;
#   - the Node.js test clients (tests/node: @xmpp/client, pinned), for the WebSocket tests;
#   - the bundled web client (Converse.js), which the browser tests log in with.
# Playwright itself comes from PyPI (the `test` extra) and uses Debian's Chromium: no browser
# download. Run as root on a Debian machine (CI is one); safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=""
apt_install() {
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install $* (needs root and apt-get): install it yourself" >&2
    return 1
  fi
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  # Packages with daemons (prosody, ejabberd) must not start them: the tests and benchmarks run
  # their own instances on loopback. policy-rc.d tells Debian's maintainer scripts so.
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  if [ -n "$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
}

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium for the browser tests"
  apt_install chromium
fi

# The peers the benchmark smoke test runs side by side with minimix.
for peer in prosody:prosody ejabberd:ejabberdctl; do
  if ! command -v "${peer#*:}" >/dev/null 2>&1 && [ ! -x "/usr/sbin/${peer#*:}" ]; then
    echo "installing Debian's ${peer%%:*} for the benchmark smoke test"
    apt_install "${peer%%:*}"
  fi
done

if ! command -v npm >/dev/null 2>&1; then
  echo "installing Node.js and npm for the WebSocket client tests"
  apt_install nodejs npm
fi

echo "installing the Node.js test clients (tests/node)"
(
  cd tests/node
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  else
    npm install --no-audit --no-fund --loglevel=error
  fi
)

./scripts/install-web-client.sh

if [ -x .venv/bin/python ] && ! .venv/bin/python -c "import playwright" 2>/dev/null; then
  .venv/bin/pip install --quiet playwright
fi
