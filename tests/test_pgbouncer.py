"""The server through Debian's pgbouncer in transaction pooling mode (3 server connections for a 10-connection app
pool): concurrent pushes, pulls and the live feed work, because nothing keeps session state on a pooled connection
(transaction-level advisory locks, no prepared-statement cache) and LISTEN uses the direct DSN."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import asyncpg

from protocol.live import LiveEvent
from sync_server.settings import Settings
from tests.conftest import start_server
from tests.factories import World, make_tickets
from tests.infra import PG_BIN, PgBouncer, rmtree, run_owner, scratch
from tests.syncclient import DeviceClient
from tests.test_live import Live



def show_stats(bouncer: PgBouncer) -> dict[str, int]:
    """pgbouncer's admin console (simple protocol only, hence psql): counters for our database."""
    out = run_owner([str(PG_BIN / "psql"), "-X", "-A", "-F", "|", "-h", "127.0.0.1", "-p", str(bouncer.port),
                     "-U", bouncer.user, "-d", "pgbouncer", "-c", "SHOW STATS"], timeout=20).stdout.splitlines()
    header = out[0].split("|")
    for line in out[1:]:
        row = dict(zip(header, line.split("|")))
        if row.get("database") == bouncer.database:
            return {k: int(v) for k, v in row.items() if v.isdigit()}
    raise AssertionError(out)


async def test_push_pull_live_journey_through_pgbouncer_transaction_mode(
    settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World, tmp_path: Path
) -> None:
    tickets = await make_tickets(pool, world, 4)
    root = scratch("fs-pgbouncer-")
    bouncer = PgBouncer(root / "pgbouncer", db_dsn, pool_size=3)
    try:
        bouncer.start()
        # live_poll_s high: supervisor events must come from LISTEN/NOTIFY, not from the fallback poll
        s = settings.model_copy(update={"database_pgbouncer": True, "database_direct_url": db_dsn, "live_poll_s": 120.0})
        srv = await asyncio.wait_for(start_server(s, bouncer.dsn), 20)
        try:
            async with aiohttp.ClientSession() as http:
                sup = await Live.connect(http, srv.url, world.supervisors["sanitation"])
                await sup.ready()
                devs = [DeviceClient(http, srv.url, world.device("san-1", i).token) for i in range(2)]
                await asyncio.gather(*(d.pull() for d in devs))
                assert all(len(d.replica.tickets) == 4 for d in devs)

                async def work(d: DeviceClient, rounds: int) -> list[str]:
                    statuses = []
                    for r in range(rounds):
                        muts = [d.mutation("add_note", t.ticket.id, {"note_id": str(uuid.uuid4()), "text": f"r{r}"})
                                for t in tickets]
                        statuses += [x.status for x in (await d.push(muts)).results]
                        await d.pull()
                    return statuses

                # two devices of one crew on the same tickets: row locks and xact advisory locks through the pooler
                results = await asyncio.wait_for(asyncio.gather(work(devs[0], 5), work(devs[1], 5)), 60)
                assert results == [["applied"] * 20, ["applied"] * 20]
                seen = await asyncio.wait_for(sup.until(
                    lambda m: isinstance(m, LiveEvent) and m.ticket is not None
                    and sum(n.text == "r4" for n in m.ticket.notes) == 2), 30)
                assert any(isinstance(m, LiveEvent) for m in seen)
                for d in devs:
                    await d.pull()
                    assert d.replica.converged()
                    assert all(len(t.notes) == 10 for t in d.replica.tickets.values())
                await sup.close()
        finally:
            await srv.runner.cleanup()
        stats = show_stats(bouncer)
        # every push/pull/auth transaction went through pgbouncer (at least one per push of the 10 and per pull)
        assert stats["total_xact_count"] >= 30, stats
        rows = await pool.fetchval("SELECT count(*) FROM ticket_notes WHERE ticket_id = ANY($1::uuid[])",
                                   [t.ticket.id for t in tickets])
        assert rows == 40
    finally:
        bouncer.stop()
        rmtree(root)
