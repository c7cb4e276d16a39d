#!/usr/bin/env bash
# Installs what the tests need beyond Python packages (Debian packages, browsers).
set -euo pipefail
cd "$(dirname "$0")/.."
exit 0
