"""SQL behind organisation management: departments, crews, service types and staff accounts.

Functions take a connection and never decide policy; the engine (engine/org.py) validates, audits and owns the
transaction. Uniqueness is still decided by the database's unique indexes, so callers map UniqueViolationError.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from sync_server.domain.states import OPEN

_DEPARTMENT_SQL = "SELECT id, code, name, agency_code, created_at FROM departments"
_SERVICE_TYPE_SQL = """
SELECT s.id, s.code, s.name, d.code AS department, s.department_id, s.default_priority, s.resolution_codes,
       s.reason_codes, s.created_at
FROM service_types s JOIN departments d ON d.id = s.department_id
"""
_USER_SQL = """
SELECT u.id, u.name, u.role, d.code AS department, u.department_id, u.created_at, u.revoked_at
FROM users u LEFT JOIN departments d ON d.id = u.department_id
"""


async def list_departments(conn: asyncpg.Connection, department_id: int | None) -> list[asyncpg.Record]:
    """Departments in scope (None: all), by code."""
    return await conn.fetch(_DEPARTMENT_SQL + " WHERE $1::smallint IS NULL OR id = $1 ORDER BY code", department_id)


async def department_clash(conn: asyncpg.Connection, code: str, name: str) -> str | None:
    """Which unique field a new department would collide on ('code' or 'name'), checked before the insert."""
    row = await conn.fetchrow("SELECT code = $1 AS same_code FROM departments WHERE code = $1 OR name = $2 LIMIT 1",
                              code, name)
    if row is None:
        return None
    return "code" if row["same_code"] else "name"


async def insert_department(conn: asyncpg.Connection, code: str, name: str, agency_code: str | None) -> asyncpg.Record:
    """A new department row."""
    row = await conn.fetchrow(
        "INSERT INTO departments (code, name, agency_code) VALUES ($1, $2, $3)"
        " RETURNING id, code, name, agency_code, created_at",
        code, name, agency_code,
    )
    assert row is not None
    return row


async def department_by_code(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    """A department by its code only (names are for people; the API takes codes)."""
    return await conn.fetchrow(_DEPARTMENT_SQL + " WHERE code = $1", code)


async def insert_crew(conn: asyncpg.Connection, name: str, display_name: str | None, department_id: int) -> int:
    """A new, active crew; returns its id."""
    crew_id: int = await conn.fetchval(
        "INSERT INTO crews (name, display_name, department_id) VALUES ($1, $2, $3) RETURNING id",
        name, display_name, department_id,
    )
    return crew_id


async def crew_for_update(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    """A crew locked for retirement, so two retirements (or a retirement and an enrolment) serialise."""
    return await conn.fetchrow(
        "SELECT c.id, c.name, c.display_name, c.active, c.retired_at, c.department_id, d.code AS department"
        " FROM crews c JOIN departments d ON d.id = c.department_id WHERE c.name = $1 FOR UPDATE OF c",
        name,
    )


async def open_ticket_ids(conn: asyncpg.Connection, crew_id: int) -> list[asyncpg.Record]:
    """Tickets still open for this crew (assigned and not finished), oldest first: what retiring would orphan."""
    return await conn.fetch(
        "SELECT id, sr_number, status FROM tickets WHERE crew_id = $1 AND status = ANY($2::text[])"
        " ORDER BY requested_at, id",
        crew_id, sorted(s.value for s in OPEN),
    )


async def retire_crew(conn: asyncpg.Connection, crew_id: int) -> None:
    """Mark a crew retired: no new assignments, no new devices; its history and devices stay."""
    await conn.execute("UPDATE crews SET active = false, retired_at = COALESCE(retired_at, now()) WHERE id = $1", crew_id)


async def list_service_types(conn: asyncpg.Connection, department_id: int | None) -> list[asyncpg.Record]:
    """Service types in scope (None: all), by department then name."""
    return await conn.fetch(
        _SERVICE_TYPE_SQL + " WHERE $1::smallint IS NULL OR s.department_id = $1 ORDER BY d.code, s.name",
        department_id,
    )


async def service_type_clash(conn: asyncpg.Connection, code: str, name: str) -> str | None:
    """Which unique field a new service type would collide on ('code' or 'name')."""
    row = await conn.fetchrow("SELECT code = $1 AS same_code FROM service_types WHERE code = $1 OR name = $2 LIMIT 1",
                              code, name)
    if row is None:
        return None
    return "code" if row["same_code"] else "name"


async def insert_service_type(
    conn: asyncpg.Connection, code: str, name: str, department_id: int, default_priority: str,
    resolution_codes: Sequence[str] | None, reason_codes: Sequence[str] | None,
) -> asyncpg.Record:
    """A new service type; omitted code lists take the column defaults (today's codes)."""
    # Only the lists given become columns (fixed fragments, values always bound), so an omitted list gets the
    # migration's DEFAULT instead of a copy of it baked into Python.
    cols, args = ["code", "name", "department_id", "default_priority"], [code, name, department_id, default_priority]
    for col, codes in (("resolution_codes", resolution_codes), ("reason_codes", reason_codes)):
        if codes is not None:
            cols.append(col)
            args.append(list(codes))
    params = ", ".join(f"${i}" for i in range(1, len(args) + 1))
    new_id = await conn.fetchval(f"INSERT INTO service_types ({', '.join(cols)}) VALUES ({params}) RETURNING id", *args)
    out = await conn.fetchrow(_SERVICE_TYPE_SQL + " WHERE s.id = $1", new_id)
    assert out is not None
    return out


async def service_type_codes(conn: asyncpg.Connection, names: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
    """(resolution codes, reason codes) by service type name or code (self-reports may use either), for the push
    engine's per-mutation check."""
    rows = await conn.fetch(
        "SELECT name, code, resolution_codes, reason_codes FROM service_types"
        " WHERE name = ANY($1::text[]) OR code = ANY($1::text[])", list(names)
    )
    out: dict[str, tuple[list[str], list[str]]] = {}
    for r in rows:
        out[r["name"]] = out[r["code"]] = (list(r["resolution_codes"]), list(r["reason_codes"]))
    return out


class CodeCache:
    """Allowed codes by service type name or code, per app, so a push with code-carrying ops (most field pushes) needs
    no query for them. Never stale: a service type's codes are fixed when it is created (there is no update path), a
    type created since is a miss that queries; the admin API clears it on create anyway."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._codes: dict[str, tuple[list[str], list[str]]] = {}

    async def get(self, conn: asyncpg.Connection, names: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
        """`service_type_codes` for these names, from memory when known (unknown names are looked up every time)."""
        missing = [n for n in names if n not in self._codes]
        if missing:
            found = await service_type_codes(conn, missing)
            if len(self._codes) + len(found) > self.max_entries:
                self._codes.clear()
            self._codes.update(found)
        return {n: self._codes[n] for n in names if n in self._codes}

    def clear(self) -> None:
        """Forget everything (a service type was created through this process)."""
        self._codes.clear()


async def list_users(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every supervisor and admin (never token hashes), by name."""
    return await conn.fetch(_USER_SQL + " ORDER BY u.name")


async def user_for_update(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    """A user locked for disable/rotate, so concurrent changes to one account serialise."""
    if await conn.fetchval("SELECT id FROM users WHERE name = $1 FOR UPDATE", name) is None:
        return None
    return await conn.fetchrow(_USER_SQL + " WHERE u.name = $1", name)


async def disable_user(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record:
    """Set revoked_at once; auth reads it on every request, so the token fails at once."""
    await conn.execute("UPDATE users SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1", user_id)
    row = await conn.fetchrow(_USER_SQL + " WHERE u.id = $1", user_id)
    assert row is not None
    return row


async def set_user_token(conn: asyncpg.Connection, user_id: int, token_hash: bytes) -> None:
    """Replace a user's token hash: the old token stops working in the same commit."""
    await conn.execute("UPDATE users SET token_hash = $2 WHERE id = $1", user_id, token_hash)


async def count_active_admins(conn: asyncpg.Connection) -> int:
    """Admins that can still log in; disabling the last one would lock the city out of its own server."""
    n: int = await conn.fetchval("SELECT count(*) FROM users WHERE role = 'admin' AND revoked_at IS NULL")
    return n
