"""The server's pool learns every array codec once per connection, when it opens it: a request never pays asyncpg's
catalogue introspection (a recursive query that cost ~16 ms of planning each time, 80 times in one push benchmark)."""

from __future__ import annotations

import uuid

import asyncpg

from sync_server.app import create_pool
from sync_server.settings import Settings

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
