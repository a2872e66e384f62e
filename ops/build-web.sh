#!/usr/bin/env bash
# Rebuild the crew web app (clients/js/app) into sync_server/web/app, the files the Python package ships: running the
# server never needs Node, only changing the app does (Node 20 + npm; dependencies pinned by package-lock.json).
#   bash ops/build-web.sh           # install (if needed), typecheck, build
#   bash ops/build-web.sh --check   # CI: clean install, typecheck, unit tests, build, and fail if the committed
#                                   # build differs from what the sources produce (the build is deterministic)
set -euo pipefail
cd "$(dirname "$0")/../clients/js"
check=0
[ "${1:-}" = "--check" ] && check=1
if ! command -v npm >/dev/null 2>&1; then
    echo "ops/build-web.sh: npm not found: install Node 20 (Debian: apt-get install nodejs npm)" >&2; exit 1
fi
if [ "$check" = 1 ] || [ ! -x node_modules/.bin/vite ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/tsc --noEmit -p .
if [ "$check" = 1 ]; then
    node_modules/.bin/vitest run --project unit
fi
VITE_CONFIG_NATIVE_IGNORE_WARNING=true node_modules/.bin/vite build --config app/vite.config.ts --logLevel warn
if [ "$check" = 1 ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    out=../../sync_server/web/app
    if ! git diff --quiet -- "$out" || [ -n "$(git ls-files --others --exclude-standard -- "$out")" ]; then
        echo "ops/build-web.sh: the committed crew app build differs from its sources; run bash ops/build-web.sh and commit:" >&2
        git status --short -- "$out" >&2
        exit 1
    fi
fi
