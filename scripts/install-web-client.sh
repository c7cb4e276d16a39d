#!/usr/bin/env bash
# Installs the bundled web client (Converse.js, the exact version pinned in
# src/minimix/web/package.json) from the npm registry into src/minimix/web/node_modules.
# The HTTP listener serves it at /. Run by `make install` (and so by `make run`).
set -euo pipefail
cd "$(dirname "$0")/../src/minimix/web"

if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing npm (Debian package) for the web client"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  else
    echo "npm is not installed: install Node.js and npm, then run $0" >&2
    exit 1
  fi
fi

pinned=$(node -e 'console.log(require("./package.json").dependencies["converse.js"])')
installed=""
if [ -f node_modules/converse.js/package.json ]; then
  installed=$(node -e 'console.log(require("./node_modules/converse.js/package.json").version)')
fi
if [ "$installed" = "$pinned" ] && [ -f node_modules/converse.js/dist/converse.min.js ]; then
  exit 0
fi

echo "installing Converse.js $pinned from the npm registry"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
test -f node_modules/converse.js/dist/converse.min.js
