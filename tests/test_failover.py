"""Database failover without losing acknowledged work: a primary with a synchronous streaming standby, the server on
a multi-host DSN (target_session_attrs=read-write), devices pushing; SIGKILL the primary, promote the standby. Every
mutation acknowledged (before or after the kill) is on the new primary exactly once, devices only ever saw retryable
answers, and the pool and the LISTEN connection recover on their own."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import aiohttp
import asyncpg
import structlog

from sync_server.keys import POOL
from sync_server.settings import Settings
from sync_server.storage.migrate import migrate
from tests.conftest import start_server
from tests.factories import build_world, make_tickets
from tests.infra import Cluster, rmtree, scratch
from tests.syncclient import DeviceClient

log = structlog.get_logger("tests.failover")

RETRYABLE = {502, 503, 504}


@dataclass
class Tally:
    """What the devices saw."""

    acked: list[tuple[str, int, UUID, float]] = field(default_factory=list)  # device, seq, note id, when
    failures: list[tuple[float, str]] = field(default_factory=list)  # when, what (status or exception)


async def device_loop(http: aiohttp.ClientSession, url: str, token: str, device_id: str, ticket: UUID,
                      tally: Tally, stop: asyncio.Event, deadline: float) -> None:
    """Push one note per request like a phone's outbox: a seq is resent, byte-identical, until acknowledged."""
    dev = DeviceClient(http, url, token)
    seq = 0
    while not stop.is_set() and time.monotonic() < deadline:
        seq += 1
        note = uuid.uuid4()
        mut = dev.mutation("add_note", ticket, {"note_id": str(note), "text": f"{device_id} {seq}"}, seq=seq)
        while time.monotonic() < deadline:
            try:
                status, resp = await asyncio.wait_for(dev.push_raw([mut]), 5)
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.failures.append((time.monotonic(), type(exc).__name__))
                await asyncio.sleep(0.2)
                continue
            if status == 200:
                (r,) = resp.results
                assert r.status == "applied", r
                tally.acked.append((device_id, seq, note, time.monotonic()))
                break
            tally.failures.append((time.monotonic(), f"{status} {resp.get('error', {}).get('code')}"))
            assert status in RETRYABLE, resp  # devices must only ever see answers they retry
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.02)


async def test_failover_to_synchronous_standby_loses_no_acknowledged_mutation(
    settings: Settings, tmp_path: Path
) -> None:
    root = scratch("fs-failover-")
    primary = Cluster(root, "primary")
    standby = Cluster(root, "standby1")
    try:
        primary.init().start()
        standby.standby_of(primary).start()
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
        primary.psql("SELECT pg_reload_conf()")
        for _ in range(100):
            if primary.psql("SELECT sync_state FROM pg_stat_replication") == "sync":
                break
            await asyncio.sleep(0.1)
        assert primary.psql("SELECT sync_state FROM pg_stat_replication") == "sync"
        primary.psql("CREATE DATABASE fieldsync")
        setup = await asyncpg.create_pool(primary.dsn("fieldsync"), min_size=1, max_size=2)
        try:
            async with setup.acquire() as conn:
                await migrate(conn)
            world = await build_world(setup)
            tickets = {c: (await make_tickets(setup, world, 1, crew=c))[0].ticket.id for c in ("san-1", "ss-1")}
        finally:
            await setup.close()

        multi = (f"postgresql://{Cluster.SUPERUSER}@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/fieldsync"
                 "?target_session_attrs=read-write")
        srv = await start_server(settings.model_copy(update={"live_poll_s": 1.0}), multi)
        stop = asyncio.Event()
        tally = Tally()
        deadline = time.monotonic() + 90  # a bound for a loaded machine; the loops below end as soon as they can
        try:
            async with aiohttp.ClientSession() as http:
                devices = [(world.device(c, i), tickets[c]) for c in ("san-1", "ss-1") for i in range(2)]
                loops = [asyncio.create_task(device_loop(http, srv.url, d.token, d.device_id, t, tally, stop, deadline))
                         for d, t in devices]
                while len(tally.acked) < 40 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert len(tally.acked) >= 40, tally.failures[:5]
                killed_at = time.monotonic()
                primary.kill()
                await asyncio.sleep(0.5)  # what a failover manager's detection delay would be, shortened
                standby.promote()
                promoted_at = time.monotonic()
                # keep going until every device has had 5 acknowledgements after the promotion
                while time.monotonic() < deadline:
                    after = [a for a in tally.acked if a[3] > promoted_at]
                    if all(sum(a[0] == d.device_id for a in after) >= 5 for d, _ in devices):
                        break
                    await asyncio.sleep(0.05)
                stop.set()
                await asyncio.wait_for(asyncio.gather(*loops), 10)
            last_failure = max((f[0] for f in tally.failures), default=killed_at)
            first_after = min(a[3] for a in tally.acked if a[3] > last_failure)
            acked_before = [a for a in tally.acked if a[3] < killed_at]
            log.info("failover.figures", acked_before_kill=len(acked_before), acked_total=len(tally.acked),
                     failed_requests=len(tally.failures), seconds_to_recover=round(first_after - killed_at, 2),
                     seconds_after_promote=round(first_after - promoted_at, 2),
                     failure_kinds=sorted({f[1] for f in tally.failures}))
            assert all(f[0] > killed_at for f in tally.failures), "no failures before the primary died"
            # the pool reconnected to the new primary, and so did the live feed's LISTEN connection
            pool: asyncpg.Pool = srv.app[POOL]
            assert await pool.fetchval("SELECT NOT pg_is_in_recovery()")
            listening = 0
            for _ in range(100):  # the LISTEN loop reconnects with back-off (at most 5 s apart)
                listening = await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fieldsync-live'")
                if listening:
                    break
                await asyncio.sleep(0.1)
            assert listening == 1
        finally:
            stop.set()
            await srv.runner.cleanup()

        conn = await asyncpg.connect(standby.dsn("fieldsync"))
        try:
            assert await conn.fetchval("SELECT NOT pg_is_in_recovery()")
            notes = await conn.fetch("SELECT id, text FROM ticket_notes WHERE ticket_id = ANY($1::uuid[])",
                                     list(tickets.values()))
            on_server = {r["id"]: r["text"] for r in notes}
            assert len(on_server) == len(notes)
            lost = [a for a in tally.acked if a[2] not in on_server]
            assert lost == [], f"{len(lost)} acknowledged mutations missing on the new primary"
            for d, _ in devices:
                mine = sorted(a[1] for a in tally.acked if a[0] == d.device_id)
                assert mine == list(range(1, len(mine) + 1))  # gap-free, each seq acknowledged once
                last_seq = await conn.fetchval("SELECT last_seq FROM devices WHERE id = $1", d.device_id)
                texts = [t for t in on_server.values() if t.startswith(d.device_id + " ")]
                # nothing applied twice: one note per applied seq (an unacknowledged last seq may have committed)
                assert len(texts) == len(set(texts)) == last_seq
                assert last_seq in (len(mine), len(mine) + 1)
        finally:
            await conn.close()
    finally:
        standby.stop()
        primary.stop()
        rmtree(root)
