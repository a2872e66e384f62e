"""Admission to the pool: a request already served once (and the server's own loops) gets the next free connection
before a request still waiting for its first; past db_queue_limit waiters, or after db_queue_timeout_s in line, a new
request is refused with 503 service_unavailable + Retry-After (5 s) and changes nothing; a request that has begun is never
refused."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import msgpack
import pytest

from protocol import ErrorCode, ProtocolError
from sync_server.dbpool import Admission
from sync_server.keys import POOL
from sync_server.metrics import METRICS
from sync_server.settings import Settings
from tests.conftest import start_server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_served_requests_go_first_and_each_line_is_first_come_first_served() -> None:
    gate = Admission(1, max_waiting=10, max_wait_s=60)
    await gate.enter(first=False)  # the one slot is taken
    order: list[str] = []

    async def wait(name: str, first: bool) -> None:
        await gate.enter(first=first)
        order.append(name)

    tasks = []
    for name, first in (("new-1", True), ("again-1", False), ("new-2", True), ("again-2", False)):
        tasks.append(asyncio.create_task(wait(name, first)))
        await _settle()
    assert gate.waiting() == 4
    for _ in range(4):
        gate.leave()
        await _settle()
    await asyncio.gather(*tasks)
    assert order == ["again-1", "again-2", "new-1", "new-2"]
    gate.leave()
    assert gate.free == 1 and gate.waiting() == 0


async def test_a_new_request_past_the_limit_is_refused_but_a_served_one_still_waits() -> None:
    gate = Admission(1, max_waiting=2, max_wait_s=60)
    shed: list[int] = []
    gate.on_shed = lambda: shed.append(1)
    await gate.enter(first=False)
    waiters = [asyncio.create_task(gate.enter(first=True)) for _ in range(2)]
    await _settle()
    with pytest.raises(ProtocolError) as refused:
        await gate.enter(first=True)
    err = refused.value
    assert (err.code, err.http_status, err.details["retry_after"]) == (ErrorCode.SERVICE_UNAVAILABLE, 503, 5)
    assert shed == [1]
    served = asyncio.create_task(gate.enter(first=False))  # not refused: it waits, and goes first
    await _settle()
    assert gate.waiting() == 3
    gate.leave()
    await _settle()
    assert served.done() and not any(w.done() for w in waiters)
    for _ in range(3):
        gate.leave()
        await _settle()
    assert all(w.done() and w.exception() is None for w in waiters)
    assert gate.free == 1


async def test_a_new_request_waiting_too_long_is_refused_and_its_place_is_not_lost() -> None:
    gate = Admission(1, max_waiting=10, max_wait_s=0.05)
    await gate.enter(first=False)
    with pytest.raises(ProtocolError) as refused:
        await gate.enter(first=True)
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert gate.waiting() == 0
    gate.leave()
    assert gate.free == 1  # the refused waiter took nothing with it
    await gate.enter(first=True)
    assert gate.free == 0


async def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    gate = Admission(1, max_waiting=10, max_wait_s=60)
    await gate.enter(first=False)
    w1 = asyncio.create_task(gate.enter(first=True))
    w2 = asyncio.create_task(gate.enter(first=True))
    await _settle()
    gate.leave()  # handed to w1 ...
    w1.cancel()  # ... which is cancelled before it runs
    await _settle()
    assert w1.cancelled() and w2.done() and w2.exception() is None
    assert gate.free == 0 and gate.waiting() == 0
    gate.leave()
    assert gate.free == 1


def _body(mutations: list[dict[str, object]]) -> bytes:
    return msgpack.packb({"mutations": mutations})


async def test_over_the_line_a_push_is_refused_with_retry_after_and_applies_nothing(
    settings: Settings, db_dsn: str, pool: asyncpg.Pool, world: World
) -> None:
    small = settings.model_copy(update={"pool_min_size": 2, "pool_max_size": 2, "db_queue_limit": 1,
                                        "db_queue_timeout_s": 60.0})
    srv = await start_server(small, db_dsn)
    try:
        t1, t2 = await make_tickets(pool, world, 2, crew="san-1")
        async with aiohttp.ClientSession() as http:
            first = DeviceClient(http, srv.url, world.device("san-1").token)
            second = DeviceClient(http, srv.url, world.device("san-1", 1).token)
            await first.pull()
            await second.pull()  # both principals cached: each push needs exactly one connection
            app_pool = srv.app[POOL]
            held = [await app_pool.acquire() for _ in range(2)]  # every connection taken (not by a request)
            try:
                waiting = asyncio.create_task(first.push_raw([first.mutation("start", t1.ticket.id)]))
                for _ in range(200):
                    if app_pool.waiting() == 1:
                        break
                    await asyncio.sleep(0.01)
                assert app_pool.waiting() == 1
                async with http.post(srv.url + "/v1/sync/push", data=_body([second.mutation("start", t2.ticket.id)]),
                                     headers=second.headers()) as r:
                    status, retry_after, err = r.status, r.headers.get("Retry-After"), msgpack.unpackb(await r.read())
                assert (status, retry_after, err["error"]["code"]) == (503, "5", "service_unavailable")
                assert not waiting.done()
            finally:
                for conn in held:
                    await app_pool.release(conn)
            status, resp = await waiting
            assert status == 200 and [r.status.value for r in resp.results] == ["applied"]
            statuses = dict(await pool.fetch("SELECT id, status FROM tickets WHERE id = ANY($1::uuid[])",
                                             [t1.ticket.id, t2.ticket.id]))
            assert statuses == {t1.ticket.id: "in_progress", t2.ticket.id: "assigned"}
            # the refused push is simply sent again (same seq) and applied once
            status, resp = await second.push_raw([second.mutation("start", t2.ticket.id, seq=1)])
            assert status == 200 and [r.status.value for r in resp.results] == ["applied"]
            assert srv.app[METRICS].registry.get_sample_value("fieldsync_db_shed_total") == 1.0
    finally:
        await srv.runner.cleanup()
