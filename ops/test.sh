#!/usr/bin/env bash
# Quick start: install FieldSync with its test extra into ./.venv (once) and run the whole test suite.
# Extra arguments go to pytest (e.g. tests/test_cli.py -x). A run that collects no tests fails (pytest exit 5).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=ops/venv.sh
. ops/venv.sh

ensure_venv ".[test]"
exec .venv/bin/python -m pytest "$@"
