#!/usr/bin/env bash
# Quick start: install FieldSync into ./.venv (once) and run the server on its embedded PostgreSQL with demo data.
# Extra arguments go to `fieldsync serve` (e.g. --port 0, --data-dir /srv/fieldsync, --database-url ...).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=ops/venv.sh
. ops/venv.sh

ensure_venv "."
exec .venv/bin/fieldsync serve "$@"
