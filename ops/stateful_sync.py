"""Long run of the stateful convergence machine: `python ops/stateful_sync.py --count 500 --seed 7`."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402

from sync_server.embedded_pg import EmbeddedPostgres  # noqa: E402
from sync_server.storage.migrate import migrate  # noqa: E402
from tests import stateful_sync  # noqa: E402


async def _template(pg: EmbeddedPostgres) -> None:
    admin = await asyncpg.connect(pg.dsn("postgres"))
    await admin.execute("DROP DATABASE IF EXISTS fs_template")
    await admin.execute("CREATE DATABASE fs_template")
    await admin.close()
    conn = await asyncpg.connect(pg.dsn("fs_template"))
    await migrate(conn)
    await conn.close()


def main() -> int:
    """Start a throwaway cluster, run N examples with a seed, report pass/fail."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=200, help="examples (each a fresh database and server)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=40, help="rules per example")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fs-stateful-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(root / "data")
    pg.start()
    loop = stateful_sync.LoopThread()
    try:
        asyncio.run(_template(pg))
        env = stateful_sync.Env(pg.dsn("postgres"), "fs_template", pg.dsn, loop, root)
        stateful_sync.run(env, max_examples=args.count, seed=args.seed, stateful_step_count=args.steps)
        sys.stdout.write(f"ok: {args.count} examples, seed {args.seed}, {args.steps} steps each\n")
        return 0
    finally:
        loop.close()
        pg.stop(force=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
