"""Coalesced live-feed wake-ups (engine/wakeups.py) against real PostgreSQL LISTEN: what is queued while the sender
is busy goes out as ONE NOTIFY carrying the newest xid and every department and crew; a broken connection loses a
wake-up (the feed's poll covers it) and the sender recovers on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sync_server.engine.wakeups import LiveWakeups

WAIT = 10.0  # upper bound for one expected notification; never a timing assertion


@pytest.fixture
async def heard(db_dsn: str) -> AsyncIterator[asyncio.Queue[str]]:
    """Payloads NOTIFYed on the live feed's channel, as a listener in another session receives them."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(db_dsn)
    await conn.add_listener("fieldsync_changes", lambda _c, _p, _ch, payload: queue.put_nowait(payload))
    try:
        yield queue
    finally:
        await conn.close()


async def test_wake_ups_queued_before_a_send_go_out_as_one_notify(db_dsn: str, heard: asyncio.Queue[str]) -> None:
    wakeups = LiveWakeups(db_dsn)
    wakeups.wake(10, [1], [3])
    wakeups.wake(12, [2], [5, 4])
    wakeups.wake(11, [1], [3])
    wakeups.start()
    try:
        assert await asyncio.wait_for(heard.get(), WAIT) == "12;d=1,2;c=3,4,5"
        wakeups.wake(13, [2], [6])
        assert await asyncio.wait_for(heard.get(), WAIT) == "13;d=2;c=6"  # nothing of the first batch again
        for _ in range(200):  # the listener may hear the NOTIFY before the sender has read its statement's answer
            if wakeups.sent == 2:
                break
            await asyncio.sleep(0.05)
        assert wakeups.sent == 2 and heard.empty()
    finally:
        await wakeups.close()


async def test_a_wake_up_queued_at_close_is_still_sent(db_dsn: str, heard: asyncio.Queue[str]) -> None:
    wakeups = LiveWakeups(db_dsn)  # never started: close sends what is queued
    wakeups.wake(7, [1], [2])
    await wakeups.close()
    assert await asyncio.wait_for(heard.get(), WAIT) == "7;d=1;c=2"


async def test_the_sender_reconnects_after_its_connection_is_killed(db_dsn: str, heard: asyncio.Queue[str]) -> None:
    wakeups = LiveWakeups(db_dsn)
    wakeups.start()
    try:
        wakeups.wake(1, [1], [1])
        assert await asyncio.wait_for(heard.get(), WAIT) == "1;d=1;c=1"
        admin = await asyncpg.connect(db_dsn)
        try:
            killed = await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                          " WHERE application_name = 'fieldsync-wakeups' AND datname = current_database()")
        finally:
            await admin.close()
        assert killed == 1
        # The next wake-ups either ride the dead connection (lost, logged) or a new one; within a bounded number of
        # tries one arrives, and it is the newest one queued at the time.
        for attempt in range(20):
            wakeups.wake(100 + attempt, [1], [9])
            try:
                payload = await asyncio.wait_for(heard.get(), 1.0)
            except TimeoutError:
                continue
            xid, rest = payload.split(";", 1)
            assert rest == "d=1;c=9" and 100 <= int(xid) <= 100 + attempt
            break
        else:
            raise AssertionError("no wake-up arrived after the sender's connection was killed")
    finally:
        await wakeups.close()
