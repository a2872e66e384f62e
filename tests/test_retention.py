"""Retention pruning keeps every ticket's latest state: snapshots and young cursors are unaffected."""

from __future__ import annotations

import uuid
from datetime import timedelta

import aiohttp
import asyncpg

from sync_server.engine.maintenance import prune
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient, SupervisorClient


async def test_prune_keeps_latest_state_and_drops_history(server: Server, pool: asyncpg.Pool, world: World) -> None:
    recs = await make_tickets(pool, world, 4)
    async with aiohttp.ClientSession() as http:
        dev = DeviceClient(http, server.url, world.device("san-1").token)
        await dev.pull()
        for r in recs[:2]:
            await dev.push([dev.mutation("start", r.ticket.id),
                            dev.mutation("add_note", r.ticket.id, {"note_id": str(uuid.uuid4()), "text": "x"})])
        sup = SupervisorClient(http, server.url, world.supervisors["sanitation"])
        await sup.cancel(recs[3].ticket.id)
        await dev.pull()
        before_checksum = dev.replica.checksum
        async with pool.acquire() as conn:
            total = await conn.fetchval("SELECT count(*) FROM changes")
            await conn.execute("UPDATE changes SET created_at = now() - interval '30 days'")
            report = await prune(conn, timedelta(days=7))
            left = await conn.fetch("SELECT ticket_id, count(*) AS n FROM changes GROUP BY ticket_id")
        assert report.superseded == total - 4 and report.tombstones == 1
        assert sorted(r["n"] for r in left) == [1, 1, 1]  # one latest row per live ticket, the cancelled one gone
        # a cursor taken before the prune still works and sees nothing new; a fresh snapshot is identical
        assert (await dev.pull())[0].changes == []
        fresh = DeviceClient(http, server.url, world.device("san-1", 1).token)
        await fresh.pull()
        assert fresh.replica.checksum == before_checksum and fresh.replica.tickets == dev.replica.tickets
        assert set(fresh.replica.tickets) == {r.ticket.id for r in recs[:3]}


async def test_prune_is_a_no_op_inside_the_window(pool: asyncpg.Pool, world: World) -> None:
    await make_tickets(pool, world, 3)
    async with pool.acquire() as conn:
        report = await prune(conn, timedelta(days=7))
        assert (report.superseded, report.tombstones, report.results) == (0, 0, 0)
        assert await conn.fetchval("SELECT count(*) FROM changes") == 3


def test_prune_cli_reports_counts(tmp_path) -> None:
    """`fieldsync prune` runs against the embedded default and prints one JSON report."""
    import json
    import subprocess
    import sys

    tmp_path.chmod(0o755)
    out = subprocess.run([sys.executable, "-m", "sync_server.cli", "prune", "--data-dir", str(tmp_path / "d"),
                          "--retention-days", "7"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) == {"retention_days", "superseded", "tombstones", "results"} and report["retention_days"] == 7
