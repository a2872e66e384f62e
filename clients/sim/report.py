"""The run's report: one JSON document (stable keys, see README "Simulator"), a terminal table, an optional plot."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fleet import Fleet
    from .verdict import Verdict


def build(fleet: Fleet, verdict: Verdict, cpu_s: float, wall_s: float) -> dict[str, Any]:
    """Everything a reader needs to trust (or distrust) the run, in plain JSON types."""
    m, c = fleet.metrics, fleet.metrics.counters
    applied = c["status_applied"]
    merged = c["status_merged"]
    rejected = sum(m.rejected.values())
    duplicate_status = c["status_duplicate"]
    final = applied + merged + rejected + duplicate_status
    sent = sum(d.sent_max for d in fleet.devices)
    return {
        "ok": verdict.ok,
        "seed": fleet.config.seed,
        "server": fleet.transport.base,
        "devices": len(fleet.devices),
        "crews": len({d.creds.crew for d in fleet.devices}),
        "crew_sizes": dict(sorted(Counter(Counter(d.creds.crew for d in fleet.devices).values()).items())),
        "processes": 1,
        "duration_s": round(fleet.run_seconds, 2),
        "quiesce_s": round(fleet.quiesce_seconds, 2),
        "features": {"photos": fleet.uploads, "live": fleet.live},
        "settings": {"offline_fraction": fleet.config.offline_fraction, "photo_rate": fleet.config.photo_rate,
                     "supervisor_rate": fleet.config.supervisor_rate, "fault_rate": fleet.config.fault_rate},
        "mutations_created": c["mutations_created"],
        "mutations_sent": sent,
        "mutations_applied": applied,
        "mutations_merged": merged,
        "mutations_merged_by_reason": dict(sorted(m.merged.items())),
        "mutations_rejected": dict(sorted(m.rejected.items())),
        "mutations_rejected_total": rejected,
        "mutations_duplicate": duplicate_status,
        "duplicates_suppressed": c["replayed_results"] + duplicate_status,
        "replayed_results": c["replayed_results"],
        "unresolved": verdict.unresolved,
        "lost": verdict.lost,
        "duplicated": verdict.duplicated,
        "diverged_devices": verdict.diverged_devices,
        "broken_devices": verdict.broken_devices,
        "audit_missing": verdict.audit_missing,
        "conflicts": dict(sorted(verdict.conflicts.items())),
        "late_reports": dict(sorted(verdict.late_reports.items())),
        "late_reports_missing": verdict.late_reports_missing,
        "photos_uploaded": c["photos_uploaded"],
        "photos_verified": verdict.photos_verified,
        "photos_refused": c["photos_refused"],
        # still in a gallery after the quiesce: never delivered (e.g. the server kept deferring them)
        "photos_stuck": verdict.photos_stuck,
        "photo_failures": verdict.photo_failures,
        "bytes_up": m.bytes_up,
        "bytes_down": m.bytes_down,
        "push_latency_ms": m.latency_summary("push"),
        "pull_latency_ms": m.latency_summary("pull"),
        "upload_latency_ms": m.latency_summary("upload"),
        "supervisor_latency_ms": m.latency_summary("supervisor"),
        # push commit -> supervisor's live event, lower bound (event - push answered) and upper (event - push sent)
        "live_event_latency_ms": m.latency_summary("live_event"),
        "live_event_sent_latency_ms": m.latency_summary("live_event_sent"),
        "live_events_unmatched": c["live_events_unmatched"],
        # results received during the shift itself (the quiesce only drains what offline devices still hold)
        "throughput_mutations_per_s": round(sum(n for s, n in m.acked_per_s.items() if s < fleet.run_seconds)
                                            / fleet.run_seconds, 1) if fleet.run_seconds else None,
        # mutations the crews created per second of the nominal shift (the load asked for; the shift can overrun
        # while stuck requests settle, which the achieved rate above counts in)
        "offered_mutations_per_s": round(c["mutations_created"] / fleet.config.duration_s, 1),
        "mutations_final": final,
        "faults_injected": dict(sorted(fleet.metrics.faults.items())),
        "supervisor_actions": {k[len("supervisor_"):]: n for k, n in sorted(c.items()) if k.startswith("supervisor_")},
        "retries": c["retries"],
        "checksum_mismatches_during_run": c["checksum_mismatch"],
        "transient_errors": dict(sorted(m.errors.items())),
        "sim_cpu_s": round(cpu_s, 2),
        "sim_cpu_percent_of_one_core": round(100.0 * cpu_s / wall_s, 1) if wall_s else None,
        # during the shift only (setup and verdict excluded); summed over processes when merged
        "sim_shift_cpu_percent_of_one_core": round(100.0 * fleet.shift_cpu_s / fleet.run_seconds, 1)
        if fleet.run_seconds else None,
        "host_cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "server_side": fleet.probe.report() if fleet.probe is not None else {},
        "examples": {k: v for k, v in verdict.examples.items() if v},
    }


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items() if x is not None) or "-"
    return "-" if v is None else str(v)


def table(rep: dict[str, Any]) -> str:
    """A readable summary for the terminal: the verdict first, then volume, latency and cost."""
    rows = [
        ("verdict", "PASS" if rep["ok"] else "FAIL"),
        ("devices / shift", f"{rep['devices']} devices, {rep['duration_s']} s (+{rep['quiesce_s']} s quiesce)"),
        ("mutations", f"sent {rep['mutations_sent']}: applied {rep['mutations_applied']}, merged "
                      f"{rep['mutations_merged']}, rejected {rep['mutations_rejected_total']}, duplicate "
                      f"{rep['mutations_duplicate']}"),
        ("rejected by reason", _fmt(rep["mutations_rejected"])),
        ("merged by reason", _fmt(rep["mutations_merged_by_reason"])),
        ("lost / duplicated", f"{rep['lost']} / {rep['duplicated']}"),
        ("diverged / broken devices", f"{rep['diverged_devices']} / {rep['broken_devices']}"),
        ("unresolved / audit missing", f"{rep['unresolved']} / {rep['audit_missing']}"),
        ("duplicates suppressed", f"{rep['duplicates_suppressed']} (replayed results {rep['replayed_results']})"),
        ("conflicts", _fmt(rep["conflicts"])),
        ("late reports", f"{_fmt(rep['late_reports'])} (missing {rep['late_reports_missing']})"),
        ("photos", f"uploaded {rep['photos_uploaded']}, verified {rep['photos_verified']}, refused "
                   f"{rep['photos_refused']}, stuck {rep['photos_stuck']}, failures {rep['photo_failures']}"),
        ("push latency ms", _fmt(rep["push_latency_ms"])),
        ("pull latency ms", _fmt(rep["pull_latency_ms"])),
        ("push -> supervisor ms", f"after answer {_fmt(rep['live_event_latency_ms'])}; after send "
                                  f"{_fmt(rep['live_event_sent_latency_ms'])}; unmatched {rep['live_events_unmatched']}"),
        ("throughput", f"{rep['throughput_mutations_per_s']} mutations/s (offered {rep['offered_mutations_per_s']}/s)"),
        ("traffic", f"up {rep['bytes_up'] / 1e6:.2f} MB, down {rep['bytes_down'] / 1e6:.2f} MB"),
        ("faults injected", _fmt(rep["faults_injected"])),
        ("supervisor actions", _fmt(rep["supervisor_actions"])),
        ("simulator CPU", f"{rep['sim_cpu_s']} s ({rep['sim_cpu_percent_of_one_core']}% of one core, "
                          f"{rep['sim_shift_cpu_percent_of_one_core']}% during the shift, {rep['host_cpus']} cores)"),
        ("features", _fmt(rep["features"])),
        ("fleet", f"{rep['crews']} crews (devices per crew: {_fmt(rep['crew_sizes'])}), {rep['processes']} process(es)"),
        ("server side", _fmt(rep["server_side"])),
        ("load average", _fmt(rep["load_average"])),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    for kind, examples in rep["examples"].items():
        lines.append(f"{kind}:")
        lines.extend(f"  - {x}" for x in examples[:5])
    return "\n".join(lines)


def write(rep: dict[str, Any], path: Path) -> None:
    """The JSON report, pretty enough to read and diff."""
    path.write_text(json.dumps(rep, indent=2, sort_keys=False) + "\n")


def plot(fleet: Fleet, path: Path) -> str | None:
    """Throughput and push latency over time as a PNG; needs the optional `plot` extra (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: pip install 'fieldsync[plot]'"
    m = fleet.metrics
    horizon = max([*m.acked_per_s.keys(), *m.series.keys(), 0]) + 1
    xs = list(range(horizon))
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    ax1.plot(xs, [m.acked_per_s.get(x, 0) for x in xs])
    ax1.set_ylabel("mutations/s")
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        from .metrics import percentile

        ax2.plot(xs, [percentile(m.series.get(x, []), q) for x in xs], style, label=f"p{q}")
    ax2.set_ylabel("push latency ms")
    ax2.set_xlabel("seconds since start")
    ax2.legend()
    fig.suptitle(f"fieldsync-sim: {len(fleet.devices)} devices, seed {fleet.config.seed}")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
