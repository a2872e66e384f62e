"""Where PostgreSQL's time goes in a device's first snapshot page: EXPLAIN (ANALYZE, BUFFERS) of the statement
(storage/pull_sql.first_snapshot) on bench_hotpath's seeded cluster (50 crews x 200 tickets), the stored documents'
sizes (inline or TOASTed, compressed or not), and the backend's CPU per statement measured from /proc/PID/schedstat:
on one warm connection, and for a new backend's first statements (what a pool that does not plan on connect pays
inside the first burst of pulls).

Run: .venv/bin/python ops/bench/explain_snapshot.py [--runs 400]
Loopback only; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg  # noqa: E402
from bench_hotpath import seed  # noqa: E402
from common import emit  # noqa: E402

from sync_server.app import session_settings  # noqa: E402
from sync_server.embedded_pg import EmbeddedPostgres  # noqa: E402
from sync_server.engine.pull import UPSERT_FRAME  # noqa: E402
from sync_server.settings import Settings  # noqa: E402
from sync_server.storage import pull_sql  # noqa: E402

_SIZES = """
SELECT round(avg(octet_length(doc_mp))) AS mp_bytes, round(avg(pg_column_size(doc_mp))) AS mp_stored,
       round(avg(octet_length(doc_json))) AS json_bytes, round(avg(pg_column_size(doc_json))) AS json_stored,
       pg_relation_size('tickets') AS heap_bytes,
       (SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'tickets') AS toast_bytes
FROM tickets
"""


def backend_cpu_ms(pid: int) -> float:
    """Milliseconds a backend has been on CPU (schedstat: ns, not 10-ms ticks)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6


async def run(runs: int) -> dict[str, Any]:
    """Seed, then explain and time the msgpack first-snapshot statement."""
    root = Path(tempfile.mkdtemp(prefix="fs-snapshot-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "data")
    dsn = pg.start()
    try:
        await seed(dsn)
        settings = session_settings(Settings(data_dir=root / "srv"))  # the server's sessions: generic plans, no JIT
        conn = await asyncpg.connect(dsn, server_settings=settings)
        try:
            await conn.execute("VACUUM ANALYZE tickets")
            crews = [r[0] for r in await conn.fetch("SELECT DISTINCT holder_crew_id FROM tickets ORDER BY 1")]
            sql, frame = pull_sql._FIRST_SNAPSHOT_SQL[True], UPSERT_FRAME[True]
            out: dict[str, Any] = {"sizes": {k: int(v) for k, v in (await conn.fetchrow(_SIZES)).items()}}
            # EXPLAIN cannot take bind parameters here: the plan with literals is the custom plan of the same shape
            literal = sql.replace("$1", str(crews[0])).replace("$2", "500")
            for i, part in ((3, frame[0]), (4, frame[1]), (5, frame[2])):
                literal = literal.replace(f"${i}::bytea", f"'\\x{part.hex()}'::bytea")
            out["explain"] = [r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + literal)]
            stmt = await conn.prepare(sql)
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            for c in crews[:5]:
                await stmt.fetch(c, 500, *frame)
            t0 = backend_cpu_ms(pid)
            for i in range(runs):
                await stmt.fetch(crews[i % len(crews)], 500, *frame)
            out["warm_pg_cpu_ms_per_page"] = round((backend_cpu_ms(pid) - t0) / runs, 3)
        finally:
            await conn.close()
        firsts: list[list[float]] = []
        for k in range(8):  # new backends: their first three snapshot statements, each
            fresh = await asyncpg.connect(dsn, server_settings=settings)
            try:
                pid = await fresh.fetchval("SELECT pg_backend_pid()")
                costs = []
                for i in range(3):
                    t0 = backend_cpu_ms(pid)
                    await fresh.fetch(sql, crews[(k + i) % len(crews)], 500, *frame)
                    costs.append(backend_cpu_ms(pid) - t0)
                firsts.append(costs)
            finally:
                await fresh.close()
        medians = [sorted(c[i] for c in firsts)[len(firsts) // 2] for i in range(3)]
        out["new_backend_pg_cpu_ms_first_three"] = [round(m, 3) for m in medians]
        return out
    finally:
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    return emit(asyncio.run(run(args.runs)), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
