#!/usr/bin/env bash
# Simulator benchmark: a spawned server (embedded PostgreSQL, demo city) and a faulty fleet of N devices
# (crews of 2-4 devices created for the run). DEVICES may be a comma list: one run per fleet size (the curve).
# Usage: ops/bench/bench_sim.sh [DEVICES[,DEVICES...]] [SECONDS] [extra fieldsync-sim options, e.g. --processes 2]
# Writes sim-report-<devices>.json in the current directory, prints one summary row per run (offered vs achieved
# mutations/s, push p50/p99, 30-s timeouts, CPU % of one core of server / PostgreSQL / simulator, push -> supervisor
# event p99, pool waiters, event-loop lag, connection time held per push, CPU ms of server / PostgreSQL / simulator
# and server requests per achieved mutation), and exits non-zero if any verdict failed. `--server-workers N` runs
# the spawned server with N worker processes.
# The final curve, on a quiet machine: ops/bench/bench_sim.sh 100,300,1000,2000 120 --processes 2
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
live = r.get("live_event_latency_ms") or {}
live_sent = r.get("live_event_sent_latency_ms") or {}
push_route = (s.get("db_by_route") or {}).get("/v1/sync/push", {})
lag = s.get("event_loop_lag_max_seconds_max")
def f(v, spec=""):
    return "-" if v is None else format(v, spec)
# Cost per achieved mutation over the measured shift: far steadier than latency on a shared machine (CPU that other
# sessions take shows up as latency and run-queue wait, not as these seconds), so before/after pairs compare on it.
acked = (r["throughput_mutations_per_s"] or 0) * (s.get("measured_s") or 0)
def per_mut(x, scale=1000.0):
    return None if x is None or not acked else round(scale * x / acked, 2)
requests = sum(v.get("requests", 0) for v in (s.get("db_by_route") or {}).values())
sim_cpu = r["sim_shift_cpu_percent_of_one_core"]
sim_cpu_s = None if sim_cpu is None or s.get("measured_s") is None else sim_cpu / 100 * s["measured_s"]
print(f"{r['devices']:>7} {r['crews']:>5} {r['processes']:>5} {s.get('workers', 1):>3} {f(r['offered_mutations_per_s'], '.1f'):>8} "
      f"{f(r['throughput_mutations_per_s'], '.1f'):>8} {f(r['push_latency_ms']['p50']):>8} {f(r['push_latency_ms']['p99']):>8} "
      f"{timeouts:>5} {f(s.get('server_cpu_percent_of_one_core')):>6} {f(s.get('postgres_cpu_percent_of_one_core')):>6} "
      f"{f(r['sim_shift_cpu_percent_of_one_core']):>6} {f(live.get('p99')):>8} {f(live_sent.get('p99')):>8} "
      f"{f(s.get('pool_waiting_max')):>6} {f(lag if lag is None else round(1000 * lag)):>6} "
      f"{f(push_route.get('hold_ms_per_request')):>7} {f(per_mut(s.get('server_cpu_s'))):>6} "
      f"{f(per_mut(s.get('postgres_cpu_s'))):>6} {f(per_mut(sim_cpu_s)):>6} {f(per_mut(requests or None, 1.0)):>5} "
      f"{'PASS' if r['ok'] else 'FAIL':>7} {f(r['load_average'][0] if r.get('load_average') else None):>5}")
PY
)")
done
echo "                            -- mut/s --------  --- push ms ------       -- CPU % of a core  push->sup p99 ms  pool   loop conn ms  CPU ms per mutation  req/"
echo "devices crews procs wkr  offered achieved      p50      p99 t/out server     pg    sim    answer     sent  wait^ lag^ms per push server     pg    sim   mut verdict  load"
printf '%s\n' "${rows[@]}"
exit "$status"
