"""The restore drill from docs/operations.md, end to end: a deployment with tickets, pushes and a verified photo is
backed up (pg_dump + a copy of the photo store), restored into a brand-new cluster, and `fieldsync check` passes
there; then damage that a bad restore causes (a missing photo, a ticket row edited behind the change log) fails it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import asyncpg

from sync_server.blobs import open_store
from sync_server.engine.check import check
from sync_server.settings import Settings
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.infra import PG_BIN, Cluster, rmtree, scratch
from tests.syncclient import DeviceClient
from tests.test_uploads_support import noise_jpeg, sha, upload

REPO = Path(__file__).resolve().parents[1]


def fieldsync_check(dsn: str, data_dir: Path) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDSYNC_")}
    res = subprocess.run([sys.executable, "-m", "sync_server.cli", "check", "--database-url", dsn,
                          "--data-dir", str(data_dir)], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=env, stdin=subprocess.DEVNULL)
    assert res.stdout.strip(), res.stderr[-2000:]
    return res.returncode, json.loads(res.stdout)


async def in_process_check(dsn: str, data_dir: Path) -> dict:
    """The same check without a process start (the CLI path is exercised on the restored cluster)."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    store = open_store(Settings(data_dir=data_dir, metrics_port=0))
    try:
        return (await check(pool, store)).as_dict()
    finally:
        await store.close()
        await pool.close()


async def test_dump_and_photo_copy_restore_into_new_cluster_and_check_passes(
    server: Server, settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World, tmp_path: Path
) -> None:
    tickets = await make_tickets(pool, world, 3)
    photo = noise_jpeg(seed=77)
    async with aiohttp.ClientSession() as http:
        dev = DeviceClient(http, server.url, world.device("san-1").token)
        await dev.pull()
        t = tickets[0].ticket.id
        r = await upload(http, server.url, dev.token, photo, t)
        assert r.status == 204
        resp = await dev.push([
            dev.mutation("acknowledge", t),
            dev.mutation("add_note", t, {"note_id": str(uuid.uuid4()), "text": "mattress by the curb"}),
            dev.mutation("attach_photo", t, {"sha256": sha(photo), "kind": "before",
                                             "taken_at": "2026-11-20T09:30:00Z"}),
        ])
        assert [x.status for x in resp.results] == ["applied"] * 3
    source_report = await in_process_check(db_dsn, settings.data_dir)
    assert source_report["ok"], source_report
    assert source_report["checked"] == {"tickets": 3, "photos": 1, "devices": 6}

    # backup: a logical dump of the database and a copy of the photo store
    dump = tmp_path / "fieldsync.dump"
    subprocess.run([str(PG_BIN / "pg_dump"), "-Fc", "-f", str(dump), "-d", db_dsn], check=True, timeout=60,
                   capture_output=True)
    restored_dir = tmp_path / "restored-data"
    shutil.copytree(settings.data_dir / "blobs", restored_dir / "blobs")

    root = scratch("fs-restore-")
    cluster = Cluster(root, "restored")
    try:
        cluster.init().start()
        cluster.psql("CREATE DATABASE fieldsync")
        target = cluster.dsn("fieldsync")
        res = subprocess.run([str(PG_BIN / "pg_restore"), "--no-owner", "--exit-on-error", "-d", target, str(dump)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr[-2000:]

        code, report = fieldsync_check(target, restored_dir)
        assert (code, report["ok"]) == (0, True), report
        assert report["checked"] == source_report["checked"]

        # a restore that forgot photos, or rows changed behind the change log, must fail the check
        victim = next((restored_dir / "blobs").rglob(sha(photo)))
        victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
        conn = await asyncpg.connect(target)
        try:
            await conn.execute("UPDATE tickets SET priority = 'urgent' WHERE id = $1", tickets[1].ticket.id)
        finally:
            await conn.close()
        report = await in_process_check(target, restored_dir)
        assert not report["ok"]
        assert report["problem_counts"] == {"photo_hash_mismatch": 1, "ticket_checksum_mismatch": 1,
                                            "change_log_behind_ticket": 1}
        victim.unlink()
        code, report = fieldsync_check(target, restored_dir)
        assert code == 1 and report["problem_counts"]["photo_missing"] == 1
    finally:
        cluster.stop()
        rmtree(root)
