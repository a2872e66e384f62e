#!/usr/bin/env bash
# Quick start: install FieldSync with its test extra into ./.venv (once) and run the whole test suite.
# Extra arguments go to pytest (e.g. tests/test_cli.py -x). A run that collects no tests fails (pytest exit 5).
# The suite runs on FIELDSYNC_TEST_WORKERS pytest-xdist workers (default 2, the CI machine's cores); each worker has
# its own PostgreSQL cluster, browser and ports. FIELDSYNC_TEST_WORKERS=0 (or passing -n yourself) runs it your way,
# e.g. serially in one process for pdb.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=ops/venv.sh
. ops/venv.sh

ensure_venv ".[test]"
workers="${FIELDSYNC_TEST_WORKERS:-2}"
for arg in "$@"; do
    case "$arg" in -n|-n[0-9]*|--numprocesses|--numprocesses=*|no:xdist) workers="" ;; esac
done
if [ -n "$workers" ]; then
    # loadgroup: the browser tests and the JS client tests each stay together on one worker (tests/conftest.py)
    exec .venv/bin/python -m pytest -n "$workers" --dist loadgroup "$@"
fi
exec .venv/bin/python -m pytest "$@"
