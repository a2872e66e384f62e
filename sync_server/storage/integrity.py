"""SQL for `fieldsync check`: read-only, set-based scans in id order, so a whole deployment is verified in pages
without holding locks or one huge result in memory."""

from __future__ import annotations

from uuid import UUID

import asyncpg


async def ticket_page(conn: asyncpg.Connection, after: UUID | None, limit: int) -> list[asyncpg.Record]:
    """Tickets after an id (exclusive) with their stored checksum and their latest change-log row."""
    return list(await conn.fetch(
        "SELECT t.id, t.version, t.holder_crew_id, t.doc_hash, t.doc_json, t.doc_mp, c.version AS log_version,"
        " c.holder_crew_id AS log_holder, c.doc_hash AS log_hash,"
        " c.doc_json AS log_json"
        " FROM tickets t LEFT JOIN LATERAL (SELECT version, holder_crew_id, doc_hash, doc_json FROM changes"
        "   WHERE ticket_id = t.id ORDER BY id DESC LIMIT 1) c ON true"
        " WHERE $1::uuid IS NULL OR t.id > $1 ORDER BY t.id LIMIT $2", after, limit))


async def orphan_changes(conn: asyncpg.Connection, limit: int) -> list[UUID]:
    """Change-log rows naming a ticket that does not exist."""
    rows = await conn.fetch("SELECT DISTINCT c.ticket_id FROM changes c WHERE NOT EXISTS"
                            " (SELECT 1 FROM tickets t WHERE t.id = c.ticket_id) LIMIT $1", limit)
    return [r["ticket_id"] for r in rows]


# Children whose parent has no foreign key to guard it (migration 0017): the push writes them under the parent's lock.
_ORPHAN_CHILDREN = """
(SELECT 'result_without_device' AS kind, r.device_id AS parent FROM mutation_results r
 WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = r.device_id) LIMIT $1)
UNION ALL
(SELECT 'note_without_ticket', n.ticket_id::text FROM ticket_notes n
 WHERE NOT EXISTS (SELECT 1 FROM tickets t WHERE t.id = n.ticket_id) LIMIT $1)
UNION ALL
(SELECT 'item_without_ticket', i.ticket_id::text FROM ticket_items i
 WHERE NOT EXISTS (SELECT 1 FROM tickets t WHERE t.id = i.ticket_id) LIMIT $1)
"""


async def orphan_children(conn: asyncpg.Connection, limit: int) -> list[tuple[str, str]]:
    """(kind, parent id) of stored results without their device and notes or item lines without their ticket."""
    return [(r["kind"], r["parent"]) for r in await conn.fetch(_ORPHAN_CHILDREN, limit)]


async def blob_page(conn: asyncpg.Connection, after: str, limit: int) -> list[asyncpg.Record]:
    """Verified photos (a blobs row exists only once bytes were complete and checked) after a hash (exclusive)."""
    return list(await conn.fetch("SELECT sha256, size FROM blobs WHERE sha256 > $1 ORDER BY sha256 LIMIT $2",
                                 after, limit))


async def device_results(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per device: last applied seq, whether its result is stored, the highest stored seq and the result count."""
    return list(await conn.fetch(
        "SELECT d.id, d.last_seq, EXISTS (SELECT 1 FROM mutation_results r WHERE r.device_id = d.id"
        "   AND r.seq = d.last_seq) AS has_last,"
        " (SELECT max(seq) FROM mutation_results r WHERE r.device_id = d.id) AS max_seq,"
        " (SELECT count(*) FROM mutation_results r WHERE r.device_id = d.id) AS results"
        " FROM devices d ORDER BY d.id"))
