"""Bounded growth: push results pruned by age but never below a device's latest N, the change log pruned in small
batches, and the audit archive (NDJSON file first, then bounded deletes, audited itself)."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from sync_server.storage.queries import revoke_device
from sync_server.engine.audit_archive import ArchiveRefused, archive
from sync_server.engine.maintenance import prune, prune_if_due
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient


async def test_results_pruned_by_age_keep_each_devices_latest(server: Server, pool: asyncpg.Pool, world: World) -> None:
    (rec,) = await make_tickets(pool, world, 1)
    tid = rec.ticket.id
    async with aiohttp.ClientSession() as http:
        dev = DeviceClient(http, server.url, world.device("san-1").token)
        other = DeviceClient(http, server.url, world.device("san-1", 1).token)
        await dev.pull()
        sent = [dev.mutation("add_note", tid, {"note_id": str(uuid.uuid4()), "text": f"n{i}"}) for i in range(5)]
        first = await dev.push(sent)
        await other.push([other.mutation("add_note", tid, {"note_id": str(uuid.uuid4()), "text": "o"})
                          for _ in range(3)])
        async with pool.acquire() as conn:
            await conn.execute("UPDATE mutation_results SET created_at = now() - interval '60 days'")
            await revoke_device(conn, world.device("san-1", 1).device_id)
            report = await prune(conn, timedelta(days=7), batch=2, keep_results=2)
            left = await conn.fetch("SELECT device_id, seq FROM mutation_results ORDER BY device_id, seq")
        # 60 days old is past 4 x 7 days: the live device keeps its latest two (4, 5), the revoked one nothing.
        assert [(r["device_id"], r["seq"]) for r in left] == [(world.device("san-1").device_id, 4),
                                                              (world.device("san-1").device_id, 5)]
        assert report.results == 6
        again = await dev.push(sent[3:])  # the lost answer of the last push: byte for byte, marked replayed
        assert [r.seq for r in again.results] == [4, 5] and all(r.replayed for r in again.results)
        assert [r.model_dump(exclude={"replayed"}) for r in again.results] == \
               [r.model_dump(exclude={"replayed"}) for r in first.results[3:]]
        expired = await dev.push(sent[:1])  # pruned: never applied twice, answered as expired
        (old,) = expired.results
        assert (old.seq, old.status, old.reason, old.replayed) == (1, "duplicate", "already_exists", True)
        async with pool.acquire() as conn:
            notes = await conn.fetchval("SELECT count(*) FROM ticket_notes WHERE ticket_id = $1", tid)
        assert notes == 5 + 3


async def test_change_log_prunes_in_small_batches(server: Server, pool: asyncpg.Pool, world: World) -> None:
    recs = await make_tickets(pool, world, 3)
    async with aiohttp.ClientSession() as http:
        dev = DeviceClient(http, server.url, world.device("san-1").token)
        await dev.pull()
        for r in recs:
            for _ in range(3):
                await dev.push([dev.mutation("add_note", r.ticket.id, {"note_id": str(uuid.uuid4()), "text": "x"})])
    async with pool.acquire() as conn:
        await conn.execute("UPDATE changes SET created_at = now() - interval '30 days'")
        report = await prune(conn, timedelta(days=7), batch=2)  # 9 superseded rows: five batches, the last short
        left = await conn.fetch("SELECT ticket_id, version FROM changes ORDER BY ticket_id")
        current = {r["id"]: r["version"] for r in await conn.fetch("SELECT id, version FROM tickets")}
    assert report.superseded == 9 and report.tombstones == 0
    assert sorted((r["ticket_id"], r["version"]) for r in left) == sorted(current.items())


async def test_background_prune_runs_once_per_interval(pool: asyncpg.Pool) -> None:
    first = await prune_if_due(pool, timedelta(days=7), 3600, 5000, 1000)
    second = await prune_if_due(pool, timedelta(days=7), 3600, 5000, 1000)  # another process, same hour
    assert first is not None and second is None
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT finished_at, report FROM maintenance_runs WHERE job = 'prune'")
    assert row["finished_at"] is not None
    assert json.loads(row["report"]) == {"superseded": 0, "tombstones": 0, "results": 0}


async def _audit_rows(conn: asyncpg.Connection, days_ago: list[int]) -> list[int]:
    ids = []
    for i, d in enumerate(days_ago):
        ids.append(await conn.fetchval(
            "INSERT INTO audit_log (at, actor_kind, actor, action, before, after, reason)"
            " VALUES (now() - make_interval(days => $1), 'supervisor', 'sup-sanitation', 'ticket.cancel',"
            " '{\"status\": \"assigned\"}', $2::jsonb, 'resident cancelled') RETURNING id",
            d, json.dumps({"status": "cancelled", "n": i})))
    return ids


@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz"])
async def test_audit_archive_writes_then_deletes_and_audits_itself(pool: asyncpg.Pool, tmp_path: Path,
                                                                   suffix: str) -> None:
    async with pool.acquire() as conn:
        ids = await _audit_rows(conn, [400, 390, 380, 370, 10, 2])
        before = datetime.now(timezone.utc) - timedelta(days=100)
        dest = tmp_path / f"audit-2025{suffix}"
        report = await archive(conn, before, dest, actor="cli:ops", batch=3)  # two batches
        kept = [r["id"] for r in await conn.fetch(
            "SELECT id FROM audit_log WHERE action = 'ticket.cancel' ORDER BY id")]
        own = await conn.fetch("SELECT actor_kind, actor, action, after FROM audit_log"
                               " WHERE action LIKE 'audit.%' ORDER BY id")
    raw = dest.read_bytes()
    text = gzip.decompress(raw) if suffix.endswith(".gz") else raw
    lines = [json.loads(x) for x in text.decode().splitlines()]
    assert [x["id"] for x in lines] == ids[:4] and kept == ids[4:]
    assert [x["after"]["n"] for x in lines] == [0, 1, 2, 3]
    assert lines[0]["actor"] == "sup-sanitation" and lines[0]["reason"] == "resident cancelled"
    assert lines[0]["before"] == {"status": "assigned"} and lines[0]["action"] == "ticket.cancel"
    assert (report.rows, report.first_id, report.last_id) == (4, ids[0], ids[3])
    assert report.sha256 == hashlib.sha256(raw).hexdigest()
    assert [(r["actor_kind"], r["actor"], r["action"]) for r in own] == [
        ("admin", "cli:ops", "audit.archive_started"), ("admin", "cli:ops", "audit.archived")]
    closing = json.loads(own[1]["after"])
    assert closing["rows"] == 4 and closing["sha256"] == hashlib.sha256(raw).hexdigest()
    assert closing["file"] == str(dest)


async def test_audit_archive_refuses_overwrite_and_recent_dates(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        await _audit_rows(conn, [400])
        dest = tmp_path / "a.ndjson"
        dest.write_text("earlier archive\n")
        with pytest.raises(ArchiveRefused):
            await archive(conn, datetime.now(timezone.utc) - timedelta(days=100), dest, actor="x")
        with pytest.raises(ArchiveRefused):
            await archive(conn, datetime.now(timezone.utc), tmp_path / "b.ndjson", actor="x")
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1  # nothing deleted, nothing audited
    assert dest.read_text() == "earlier archive\n" and not (tmp_path / "b.ndjson").exists()


async def test_audit_archive_cli(pool: asyncpg.Pool, db_dsn: str, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        ids = await _audit_rows(conn, [800, 3])
    dest = tmp_path / "audit.ndjson"
    day = (datetime.now(timezone.utc) - timedelta(days=400)).date().isoformat()
    out = subprocess.run([sys.executable, "-m", "sync_server.cli", "audit", "archive", "--database-url", db_dsn,
                          "--before", day, "--to", str(dest)],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr[-800:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rows"] == 1 and report["first_id"] == ids[0]
    assert [json.loads(x)["id"] for x in dest.read_text().splitlines()] == [ids[0]]
    again = subprocess.run([sys.executable, "-m", "sync_server.cli", "audit", "archive", "--database-url", db_dsn,
                            "--before", day, "--to", str(dest)],
                           capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert again.returncode != 0 and "exists" in again.stderr
