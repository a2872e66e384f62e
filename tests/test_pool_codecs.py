"""The server's pool learns every array codec once per connection, when it opens it: a request never pays asyncpg's
catalogue introspection (a recursive query that cost ~16 ms of planning each time, 80 times in one push benchmark);
and by default it opens all its connections before the server serves anything."""

from __future__ import annotations

import uuid

import asyncpg

from sync_server import auth
from sync_server.app import create_pool
from sync_server.settings import Settings
from sync_server.storage import pull_sql

# One statement per array type, as the push path brings them one by one (each would introspect on a fresh connection).
STATEMENTS = [
    ("SELECT cardinality($1::uuid[])", [uuid.uuid4()]),
    ("SELECT cardinality($1::integer[])", [1, 2]),
    ("SELECT cardinality($1::smallint[])", [3]),
    ("SELECT cardinality($1::bigint[])", [4]),
    ("SELECT cardinality($1::bytea[])", [b"x"]),
]


def _introspections(log: list[str]) -> int:
    return sum("typeinfo_tree" in q for q in log)


async def _run_all(conn: asyncpg.Connection) -> list[str]:
    seen: list[str] = []
    conn.add_query_logger(lambda record: seen.append(record.query))
    for sql, arg in STATEMENTS:
        assert await conn.fetchval(sql, arg) == len(arg)
    return seen


async def test_a_new_pool_connection_never_introspects_types_inside_a_request(db_dsn: str, settings: Settings) -> None:
    pool = await create_pool(db_dsn, settings)
    try:
        async with pool.acquire() as conn:
            assert _introspections(await _run_all(conn)) == 0
    finally:
        await pool.close()


async def test_without_the_warm_up_each_new_array_type_costs_an_introspection(db_dsn: str) -> None:
    conn = await asyncpg.connect(db_dsn)  # a bare connection: what the pool did before
    try:
        assert _introspections(await _run_all(conn)) == len(STATEMENTS)
    finally:
        await conn.close()


async def test_the_pool_opens_every_connection_before_serving_unless_told_a_floor(db_dsn: str, tmp_path) -> None:
    """By default a server's pool is whole before the first request (a burst never waits for new backends); a
    configured pool_min_size opens only that many, and a floor above the maximum is the maximum."""
    whole = Settings(data_dir=tmp_path, pool_min_size=None, pool_max_size=4)
    assert Settings.model_fields["pool_min_size"].default is None and whole.pool_floor() == 4
    assert Settings(data_dir=tmp_path, pool_min_size=9, pool_max_size=3).pool_floor() == 3
    for settings, size in ((whole, 4), (Settings(data_dir=tmp_path, pool_min_size=2, pool_max_size=4), 2)):
        pool = await create_pool(db_dsn, settings)
        try:
            assert (pool.get_size(), pool.get_min_size()) == (size, size)
        finally:
            await pool.close()


async def test_a_new_pool_connection_has_the_first_pull_statements_planned(db_dsn: str, settings: Settings) -> None:
    """The burst of first pulls after a start finds the device login, snapshot and delta statements prepared with their
    generic plan on every connection (each backend's first planning was ~2 ms of PostgreSQL CPU inside that burst); a
    first pull then prepares nothing new."""
    pool = await create_pool(db_dsn, settings)
    try:
        async with pool.acquire() as conn:
            async def prepared() -> dict[str, int]:
                return {r["statement"]: r["generic_plans"] for r in await conn.fetch(
                    "SELECT statement, generic_plans FROM pg_prepared_statements")}
            before = await prepared()
            assert before.get(pull_sql._FIRST_SNAPSHOT_SQL[True], 0) >= 1
            assert before.get(pull_sql._FIRST_DELTAS_SQL[True], 0) >= 1
            assert before.get(auth._DEVICE_LOGIN, 0) >= 1
            first = await pull_sql.first_snapshot(conn, 1, 10, (b"<", b">", b","), True)
            assert (first.count, first.hashes, first.page) == (0, b"", b"")  # a fresh database: crew 1 holds nothing
            after = await prepared()
            assert set(after) == set(before) | {"SELECT statement, generic_plans FROM pg_prepared_statements"}
    finally:
        await pool.close()
