#!/usr/bin/env bash
# Simulator benchmark: a spawned server (embedded PostgreSQL, demo city) and a faulty fleet of N devices.
# Usage: ops/bench/bench_sim.sh [DEVICES] [SECONDS] [extra fieldsync-sim options...]
# Writes sim-report-<devices>.json in the current directory and exits with the simulator's verdict.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
devices="${1:-200}"
seconds="${2:-120}"
shift $(( $# > 2 ? 2 : $# ))
sim="$here/.venv/bin/fieldsync-sim"
[ -x "$sim" ] || sim="fieldsync-sim"
exec "$sim" run --spawn --devices "$devices" --duration "$seconds" --fault-rate 0.05 --seed 1 \
  --report "sim-report-$devices.json" "$@"
