#!/usr/bin/env bash
# Mutation testing of the pure rule modules against the fast tests only (tests/domain, tests/protocol): a rule
# change that no test notices shows up here as a surviving mutant. Too slow for CI; run it before changing a rule table.
#
#   bash ops/mutation.sh                       # every module below, one after the other
#   bash ops/mutation.sh protocol/canonical.py # one module
#
# Two tools per module: mutmut (function bodies) and ops/mutate_tables.py (the module-level rule tables, which mutmut
# does not touch: dropped rows, swapped enum members, shifted ranks). Each runs in a throwaway copy of the tree, niced, with
# MUTATION_JOBS workers (default 2) and at most MUTATION_TIMEOUT seconds (default 1800). Prints, per module,
# killed/total and every survivor with its diff; `MUTATION_KEEP=1` keeps the copies to inspect (`mutmut show NAME`),
# `MUTATION_TABLES=0` skips the table mutants.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=ops/venv.sh
. ops/venv.sh
ensure_venv ".[test,mutation]"

MODULES=("$@")
if [ ${#MODULES[@]} -eq 0 ]; then
    MODULES=(sync_server/domain/states.py sync_server/domain/conflicts.py sync_server/domain/catalog.py
             protocol/canonical.py protocol/cursor.py
             protocol/codec.py)
fi
JOBS="${MUTATION_JOBS:-2}"
LIMIT="${MUTATION_TIMEOUT:-1800}"
ROOT="$PWD"
WORK="$(mktemp -d -t fs-mutation-XXXXXX)"
if [ -z "${MUTATION_KEEP:-}" ]; then trap 'rm -rf "$WORK"' EXIT; fi

summary=()
for module in "${MODULES[@]}"; do
    [ -f "$module" ] || { echo "mutation: no such module $module" >&2; exit 2; }
    copy="$WORK/$(echo "$module" | tr '/.' '__')"
    mkdir -p "$copy"
    cp -r protocol sync_server tests pyproject.toml "$copy/"
    find "$copy" -name __pycache__ -prune -exec rm -rf {} +
    # Only the fast, pure tests: the point is that the rules are pinned where they are pure. The protocol tests never
    # import the domain, and the domain tests do not exercise protocol/'s codecs, so each side runs its own.
    case "$module" in
        sync_server/domain/*) fast='"tests/domain"' ;;
        *) fast='"tests/protocol"' ;;
    esac
    cat >> "$copy/pyproject.toml" <<TOML

[tool.mutmut]
source_paths = ["protocol", "sync_server"]
only_mutate = ["$module"]
pytest_add_cli_args_test_selection = [$fast]
# The contract test counts source lines, and mutmut's trampolines make every mutated module far longer than 500.
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-o", "addopts=",
                       "--deselect", "tests/protocol/test_protocol_contract.py::test_protocol_package_is_pure"]
TOML
    echo "== $module (mutmut, $JOBS workers, limit ${LIMIT}s)"
    status=0
    (cd "$copy" && timeout "$LIMIT" nice -n 10 "$ROOT/.venv/bin/mutmut" run --max-children "$JOBS" \
        > "$copy/run.log" 2>&1) || status=$?
    if [ "$status" -ne 0 ]; then
        # A failing clean run (or the time limit) leaves mutants unchecked: never report those as a score.
        echo "mutation: mutmut run ended with status $status (124 = time limit); see $copy/run.log" >&2
        tr '\r' '\n' < "$copy/run.log" | grep -E '^(FAILED|ERROR)|Failed to run' | head -5 >&2 || true
        summary+=("$module: mutmut run failed (status $status), no score")
        continue
    fi
    (cd "$copy" && "$ROOT/.venv/bin/mutmut" results --all true > "$copy/results.txt" 2>&1) || true
    total=$(grep -cE ': (killed|survived|timeout|suspicious|no tests|skipped|segfault|not checked|caught by type check)' "$copy/results.txt" || true)
    killed=$(grep -cE ': (killed|timeout|caught by type check)' "$copy/results.txt" || true)
    survivors=$(grep -E ': (survived|no tests|suspicious|not checked)' "$copy/results.txt" | sed 's/:.*//' | tr -d ' ' || true)
    for name in $survivors; do
        echo "-- survived: $name"
        (cd "$copy" && "$ROOT/.venv/bin/mutmut" show "$name" 2>/dev/null | grep -E '^[-+][^-+]' | head -8) || true
    done
    pct=$(python3 -c "import sys; k, t = int(sys.argv[1]), int(sys.argv[2]); print(f'{100 * k / t:.1f}' if t else 'n/a')" \
          "$killed" "$total")
    summary+=("$module: $killed/$total killed ($pct %)")
    echo "${summary[-1]}"
    # mutmut leaves module-level code alone, and the rules are tables: mutate those rows too.
    [ "${MUTATION_TABLES:-1}" = 0 ] && continue
    table=$(nice -n 10 "$ROOT/.venv/bin/python" ops/mutate_tables.py "$module" --tests "$(echo "$fast" | tr -d '"')" \
        --budget "$LIMIT" 2>&1) || true
    echo "$table" | grep -E '^-- survived' || true
    summary+=("$(echo "$table" | grep -E '\(tables\):' || echo "$module (tables): no result")")
    echo "${summary[-1]}"
done
echo "== mutation score (fast tests only)"
printf '  %s\n' "${summary[@]}"
