"""Seeding an empty database with the demo city and writing the credentials file tools and tests read."""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from sync_server.auth import Role, create_user, enroll_device
from sync_server.demo import generate
from sync_server.engine.intake import insert_tickets
from sync_server.ingest.mapping import DEPARTMENT_BY_CODE, DEPARTMENTS
from sync_server.ingest.upsert import ensure_catalog
from sync_server.passwords import hash_password

log = structlog.get_logger(__name__)

CREDENTIALS_FILE = "demo-credentials.json"
TICKET_BATCH = 500
_SEED_LOCK = 0x46534445  # 'FSDE': two servers starting on one empty database seed it once


async def is_empty(conn: asyncpg.Connection) -> bool:
    """No crews and no users: nobody has set this database up (an import alone only adds the catalog)."""
    return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM crews) OR EXISTS (SELECT 1 FROM users)")


async def seed(conn: asyncpg.Connection, *, tickets: int, seed: int, now: datetime | None = None) -> dict[str, Any] | None:
    """Seed the demo city in one transaction and return its credentials, or None if the database is already set up."""
    now = now or datetime.now(timezone.utc)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SEED_LOCK)
        if not await is_empty(conn):
            return None
        await ensure_catalog(conn)
        dept_ids = {r["code"]: r["id"] for r in await conn.fetch("SELECT id, code FROM departments")}
        crew_specs = generate.crews(seed)
        rows = await conn.fetch(
            "INSERT INTO crews (name, department_id) SELECT * FROM unnest($1::text[], $2::smallint[]) RETURNING id, name",
            [c.name for c in crew_specs], [dept_ids[c.department] for c in crew_specs],
        )
        crew_ids = {r["name"]: r["id"] for r in rows}
        devices = []
        for spec in crew_specs:
            for i in range(spec.devices):
                device_id, token = await enroll_device(conn, crew_ids[spec.name], f"{spec.name} phone {i + 1}", "demo")
                devices.append({"device_id": device_id, "crew": spec.name, "department": spec.department, "token": token})
        supervisors = []
        for d in DEPARTMENTS:
            name = f"{d.name} supervisor"
            token = await create_user(conn, name, Role.SUPERVISOR, dept_ids[d.code])
            # Console sign-in (/console/): a random demo password per supervisor, only ever written to the credentials file.
            password = secrets.token_urlsafe(12)
            await conn.execute("UPDATE users SET password_hash = $2, password_set_at = now() WHERE name = $1",
                               name, await hash_password(password))
            supervisors.append({"department": d.code, "token": token, "username": name, "password": password})
        admin = await create_user(conn, "admin", Role.ADMIN, None)
        new = generate.tickets(generate.load_slice(), tickets, seed, crew_ids, now)
        for start in range(0, len(new), TICKET_BATCH):
            await insert_tickets(conn, new[start:start + TICKET_BATCH], actor_kind="system", actor="demo", action="demo_seed")
    log.info("demo.seeded", departments=len(DEPARTMENT_BY_CODE), crews=len(crew_ids), devices=len(devices), tickets=len(new))
    return {"server": None, "admin": {"token": admin}, "supervisors": supervisors, "devices": devices}


def write_credentials(data_dir: Path, credentials: dict[str, Any]) -> Path:
    """Write the credentials file owner-only (it holds live tokens), atomically so a reader never sees half of it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CREDENTIALS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(credentials, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def update_server_url(data_dir: Path, url: str) -> dict[str, Any] | None:
    """On later starts only the URL changes (tokens are unknowable after seeding); None when there is no file."""
    path = data_dir / CREDENTIALS_FILE
    try:
        credentials: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    credentials["server"] = url
    write_credentials(data_dir, credentials)
    return credentials
