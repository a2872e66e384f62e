# Sourced by ops/serve.sh and ops/test.sh: one place that creates .venv and installs FieldSync into it.
# shellcheck shell=bash

ensure_venv() {  # $1: pip requirement spec (".", ".[test]")
    local py="${PYTHON:-python3}"
    if ! command -v "$py" >/dev/null 2>&1; then
        echo "ops: $py not found: install Python 3.11+ (Debian: apt-get install python3 python3-venv)" >&2; exit 1
    fi
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "ops: FieldSync needs Python 3.11+, $py is $("$py" -V 2>&1)" >&2; exit 1
    fi
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        rm -rf .venv
        if ! "$py" -m venv .venv >/dev/null 2>&1 || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
            rm -rf .venv
            echo "ops: cannot create .venv: install the venv module (Debian: apt-get install python3-venv)" >&2; exit 1
        fi
    fi
    # Reinstall only when the dependency list changed; the package itself is editable.
    local stamp=".venv/.fieldsync-$1-$(cksum < pyproject.toml | cut -d' ' -f1)"
    if [ ! -e "$stamp" ]; then
        PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/python -m pip install --quiet --no-input -e "$1"
        touch "$stamp"
    fi
}
