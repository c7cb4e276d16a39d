#!/usr/bin/env bash
# Installs the bundled web client (Converse.js, pinned) from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f src/minimix/web/package.json ] && command -v npm >/dev/null 2>&1; then
  (cd src/minimix/web && npm install --no-audit --no-fund --silent)
fi
