"""SQL for device token rotation and the shared rate-limit counters."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def rotate_device_token(conn: asyncpg.Connection, device_id: str, presented: bytes, new: bytes,
                              grace_s: float) -> datetime | None:
    """Install `new` as the device's token and keep the presented one valid for `grace_s`; None if the presented
    token is no longer valid (revoked device, expired grace) — checked under the row lock, so two racing rotations
    with one old token both leave that token valid for the grace window."""
    return await conn.fetchval(  # type: ignore[no-any-return]
        "UPDATE devices SET token_hash = $3, prev_token_hash = $2,"
        " prev_token_expires_at = now() + make_interval(secs => $4::float8), token_rotated_at = now()"
        " WHERE id = $1 AND revoked_at IS NULL"
        " AND (token_hash = $2 OR (prev_token_hash = $2 AND prev_token_expires_at > now()))"
        " RETURNING prev_token_expires_at",
        device_id, presented, new, grace_s)


async def hit(conn: asyncpg.Connection, key: str, window_s: int, n: int = 1) -> tuple[int, float]:
    """Count `n` requests for `key` in the current fixed window (a process's lease, api/budget.py); (hits so far in it
    including these, seconds until it ends)."""
    row = await conn.fetchrow(
        "WITH w AS (SELECT to_timestamp(floor(extract(epoch FROM now()) / $2) * $2) AS start)"
        " INSERT INTO rate_limits AS r (key, window_start, hits) SELECT $1, w.start, $3 FROM w"
        " ON CONFLICT (key) DO UPDATE SET window_start = EXCLUDED.window_start,"
        "   hits = CASE WHEN r.window_start = EXCLUDED.window_start THEN r.hits + $3 ELSE $3 END"
        " RETURNING hits, extract(epoch FROM window_start + make_interval(secs => $2) - now())::float8 AS left_s",
        key, window_s, n)
    assert row is not None
    return int(row["hits"]), float(row["left_s"])


async def prune_rate_limits(conn: asyncpg.Connection, older_than_s: int) -> int:
    """Forget counters whose window ended long ago (addresses come and go)."""
    status = await conn.execute(
        "DELETE FROM rate_limits WHERE window_start < now() - make_interval(secs => $1::float8)", older_than_s)
    return int(status.split()[-1])
