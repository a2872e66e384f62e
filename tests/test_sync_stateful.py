"""CI-sized run of the stateful convergence machine (tests/stateful_sync.py); ops/stateful_sync.py runs it longer."""

from __future__ import annotations

from pathlib import Path

from sync_server.embedded_pg import EmbeddedPostgres
from tests import stateful_sync


def test_replicas_converge_under_faults(pg_cluster: EmbeddedPostgres, template_db: str, tmp_path: Path) -> None:
    loop = stateful_sync.LoopThread()
    try:
        env = stateful_sync.Env(admin_dsn=pg_cluster.dsn("postgres"), template=template_db, dsn_for=pg_cluster.dsn,
                                loop=loop, tmp=tmp_path)
        stateful_sync.run(env, max_examples=12, stateful_step_count=25)
    finally:
        loop.close()
