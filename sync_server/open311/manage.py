"""Admin use cases for Open311: API keys, dispatch rules and service types' public face; one audited transaction
each (I9), refusals recorded like other organisation changes. Shared by the admin API and the CLI."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from protocol import ErrorCode, ProtocolError
from sync_server.auth import Principal, hash_token, new_token
from sync_server.domain.dispatch import validate_polygon
from sync_server.engine.org import _audited, require_admin
from sync_server.open311 import store
from sync_server.open311.params import check_attribute_definitions
from sync_server.open311.service import API_KEY_PREFIX
from sync_server.storage.tickets import audit


def _audit_row(who: Principal, action: str, after: dict[str, Any], before: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """An organisation-level audit row (no ticket, no department)."""
    return (who.actor_kind, who.name, action, None, None, before, after, None)


# ---- API keys -------------------------------------------------------------------------------------------------


async def issue_api_key(pool: asyncpg.Pool, who: Principal, name: str, rate: int) -> tuple[asyncpg.Record, str]:
    """A new key (returned once, stored as its SHA-256); a taken name is a 409."""
    request = {"name": name, "rate_per_minute": rate}

    async def body(conn: asyncpg.Connection) -> tuple[asyncpg.Record, str]:
        require_admin(who)
        key = new_token(API_KEY_PREFIX)
        try:
            async with conn.transaction():
                row = await store.insert_api_key(conn, name, hash_token(key), rate, who.name)
        except asyncpg.UniqueViolationError:
            raise ProtocolError(ErrorCode.CONFLICT, f"an API key named {name!r} exists", {"field": "name"}) from None
        await audit(conn, [_audit_row(who, "api_key_issue", request)])
        return row, key

    return await _audited(pool, who, "api_key_issue", request, body)


async def list_api_keys(pool: asyncpg.Pool, who: Principal) -> list[asyncpg.Record]:
    """Every key (admins only)."""
    require_admin(who)
    async with pool.acquire() as conn:
        return await store.api_keys(conn)


async def revoke_api_key(pool: asyncpg.Pool, who: Principal, name: str) -> asyncpg.Record:
    """Revoke a key: its next POST answers 403. Its requests and their trail stay."""
    request = {"name": name}

    async def body(conn: asyncpg.Connection) -> asyncpg.Record:
        require_admin(who)
        row = await store.revoke_api_key(conn, name)
        if row is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such API key {name!r}", {"name": name})
        await audit(conn, [_audit_row(who, "api_key_revoke", request)])
        return row

    return await _audited(pool, who, "api_key_revoke", request, body)


# ---- dispatch rules -------------------------------------------------------------------------------------------


async def add_rule(pool: asyncpg.Pool, who: Principal, spec: dict[str, Any]) -> asyncpg.Record:
    """Store a rule after checking it names one area, an existing service type, and an active crew of that type's
    department (a rule that could never fire is refused, not stored)."""

    async def body(conn: asyncpg.Connection) -> asyncpg.Record:
        require_admin(who)
        areas = [k for k in ("council_district", "zip", "polygon", "routing_area") if spec.get(k) is not None]
        if len(areas) > 1:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, "a rule names at most one area", {"field": areas[1]})
        polygon = None
        if spec.get("polygon") is not None:
            try:
                polygon = [list(p) for p in validate_polygon(spec["polygon"])]
            except (ValueError, TypeError) as exc:
                raise ProtocolError(ErrorCode.VALIDATION_FAILED, str(exc), {"field": "polygon"}) from None
        crew = await conn.fetchrow("SELECT id, department_id, active AND retired_at IS NULL AS active FROM crews"
                                   " WHERE name = $1", spec["crew"])
        if crew is None or not crew["active"]:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"no active crew {spec['crew']!r}", {"field": "crew"})
        st_id = None
        if spec.get("service_type") is not None:
            st = await conn.fetchrow("SELECT id, department_id FROM service_types WHERE code = $1", spec["service_type"])
            if st is None:
                raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"unknown service type {spec['service_type']!r}",
                                    {"field": "service_type"})
            if st["department_id"] != crew["department_id"]:
                raise ProtocolError(ErrorCode.VALIDATION_FAILED, "the crew belongs to another department than the "
                                    "service type", {"field": "crew"})
            st_id = st["id"]
        rid = await store.insert_rule(conn, spec.get("position", 100), st_id, spec.get("council_district"),
                                      spec.get("zip"), polygon, spec.get("routing_area"), crew["id"], who.name)
        await audit(conn, [(who.actor_kind, who.name, "dispatch_rule_add", None, crew["department_id"], None,
                            {**spec, "id": rid}, None)])
        row = await conn.fetchrow(store._RULES_SQL + " WHERE r.id = $1", rid)
        assert row is not None
        return row

    return await _audited(pool, who, "dispatch_rule_add", spec, body)


async def list_rules(pool: asyncpg.Pool, who: Principal) -> list[asyncpg.Record]:
    """Every rule in evaluation order (admins only)."""
    require_admin(who)
    async with pool.acquire() as conn:
        return await store.rule_rows(conn)


async def delete_rule(pool: asyncpg.Pool, who: Principal, rule_id: int) -> asyncpg.Record:
    """Remove a rule; tickets it routed keep their crew."""
    request = {"id": rule_id}

    async def body(conn: asyncpg.Connection) -> asyncpg.Record:
        require_admin(who)
        row = await store.delete_rule(conn, rule_id)
        if row is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such dispatch rule {rule_id}", {"id": rule_id})
        await audit(conn, [_audit_row(who, "dispatch_rule_delete", request, {"crew": row["crew"]})])
        return row

    return await _audited(pool, who, "dispatch_rule_delete", request, body)


# ---- service types' Open311 face ------------------------------------------------------------------------------

_CONFIG_SQL = ("SELECT code, open311_description, open311_group, open311_keywords, open311_attributes::text AS attributes,"
               " status_notes::text AS status_notes FROM service_types WHERE code = $1")


async def configure_service(pool: asyncpg.Pool, who: Principal, code: str, cfg: dict[str, Any]) -> asyncpg.Record:
    """Set a service type's description, group, keywords and attributes (and, when given, its public status notes)."""

    async def body(conn: asyncpg.Connection) -> asyncpg.Record:
        require_admin(who)
        try:
            check_attribute_definitions(cfg.get("attributes", []))
        except ValueError as exc:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, str(exc), {"field": "attributes"}) from None
        before = await conn.fetchrow(_CONFIG_SQL + " FOR UPDATE", code)
        if before is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no such service type {code!r}", {"service_type": code})
        notes = cfg.get("status_notes")
        await conn.execute(
            "UPDATE service_types SET open311_description = $2, open311_group = $3, open311_keywords = $4,"
            " open311_attributes = $5::jsonb, status_notes = coalesce($6::jsonb, status_notes) WHERE code = $1",
            code, cfg.get("description"), cfg.get("group"), cfg.get("keywords", []),
            json.dumps(cfg.get("attributes", [])), json.dumps(notes) if notes is not None else None)
        await audit(conn, [_audit_row(who, "service_type_open311", {"code": code, **cfg},
                                      {"attributes": json.loads(before["attributes"])})])
        row = await conn.fetchrow(_CONFIG_SQL, code)
        assert row is not None
        return row

    return await _audited(pool, who, "service_type_open311", {"code": code, **cfg}, body)
