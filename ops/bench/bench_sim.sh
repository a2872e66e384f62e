#!/usr/bin/env bash
# Simulator benchmark: a spawned server (embedded PostgreSQL, demo city) and a faulty fleet of N devices
# (crews of 2-4 devices created for the run). DEVICES may be a comma list: one run per fleet size (the curve).
# Usage: ops/bench/bench_sim.sh [DEVICES[,DEVICES...]] [SECONDS] [extra fieldsync-sim options, e.g. --processes 2]
# Writes sim-report-<devices>.json in the current directory, prints one summary row per run, and exits non-zero
# if any verdict failed.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
sizes="${1:-200}"
seconds="${2:-120}"
shift $(( $# > 2 ? 2 : $# ))
sim="$here/.venv/bin/fieldsync-sim"
py="$here/.venv/bin/python"
[ -x "$sim" ] || sim="fieldsync-sim"
[ -x "$py" ] || py="python3"
status=0
rows=()
for devices in ${sizes//,/ }; do
  "$sim" run --spawn --devices "$devices" --duration "$seconds" --fault-rate 0.05 --seed 1 \
    --report "sim-report-$devices.json" "$@" || status=$?
  rows+=("$("$py" - "sim-report-$devices.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r.get("server_side", {})
timeouts = sum(n for k, n in r["transient_errors"].items() if "Timeout" in k)
print(f"{r['devices']:>6} {r['processes']:>3} {r['offered_mutations_per_s']:>8.1f} "
      f"{r['throughput_mutations_per_s']:>8.1f} {r['push_latency_ms']['p50']:>8} {r['push_latency_ms']['p99']:>8} "
      f"{timeouts:>5} {s.get('server_cpu_percent_of_one_core', '-'):>6} {s.get('postgres_cpu_percent_of_one_core', '-'):>6} "
      f"{r['sim_shift_cpu_percent_of_one_core']:>6} {s.get('pool_waiting_max', '-'):>6} {'PASS' if r['ok'] else 'FAIL'} "
      f"load {r['load_average'][0] if r.get('load_average') else '-'}")
PY
)")
done
echo "devices procs offered/s achieved/s push_p50 push_p99 t/out srv%cpu pg%cpu sim%cpu poolwait verdict"
printf '%s\n' "${rows[@]}"
exit "$status"
