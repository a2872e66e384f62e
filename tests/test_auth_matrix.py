"""Auth matrix over every registered route (iterating the route registry, so a new endpoint is covered the day it lands):
no/bad/revoked tokens are 401, a role the route does not admit is 403, another department's resource is 404."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from protocol import PROTOCOL_VERSION, VERSION_HEADER
from sync_server.api.registry import ROUTES, RouteDoc
from tests.conftest import Server
from tests.factories import World, make_tickets

PARAM = re.compile(r"\{([^}:]+)(:[^}]*)?\}")


def concrete(path: str, value: str) -> str:
    """Fill every path parameter with `value`; auth runs before routing cares what it is."""
    return PARAM.sub(value, path)


async def send(http: aiohttp.ClientSession, base: str, d: RouteDoc, path: str, token: str | None,
               body: Any = None) -> tuple[int, str | None]:
    """Call one route and return (status, error code or None)."""
    # What a real client always sends: the sync protocol version, and tus's own version on upload routes.
    headers = {VERSION_HEADER: str(PROTOCOL_VERSION), "Tus-Resumable": "1.0.0"}
    if token is not None:
        headers["Authorization"] = token if token.startswith("Basic ") else f"Bearer {token}"
    data = None
    if d.method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
        data = json.dumps(body if body is not None else {}).encode()
        headers["Content-Type"] = "application/json"
    async with http.request(d.method, base + path, data=data, headers=headers) as r:
        raw = await r.read()
        code = None
        if raw and r.content_type == "application/json":
            payload = json.loads(raw)
            code = payload.get("error", {}).get("code") if isinstance(payload, dict) else None
        return r.status, code


def protected(app_routes: list[RouteDoc]) -> list[RouteDoc]:
    """Routes that need a token (tus discovery OPTIONS is public by protocol)."""
    return [d for d in app_routes if d.roles and not (d.method == "OPTIONS" and d.path.startswith("/v1/uploads"))]


async def test_registry_covers_every_served_route(server: Server) -> None:
    """The matrix iterates the registry, so a handler added with add_route (bypassing it) would escape the matrix."""
    documented = {(d.method, d.path) for d in server.app[ROUTES]}
    served = {(r.method, r.resource.canonical) for r in server.app.router.routes() if r.resource is not None}
    # Console pages (/console) are HTML behind a session cookie, not API routes; tests/browser covers their auth.
    # The crew app's built files (/app) are public static files by design: tests/test_crew_app_route.py covers them.
    undocumented = {(m, p) for m, p in served
                    if m != "HEAD" and p != "/openapi.json" and not p.startswith(("/console", "/app"))} - documented
    assert undocumented == set()
    assert len(protected(server.app[ROUTES])) >= 16  # the supervisor/admin API alone has 16


async def test_tokens_and_roles_on_every_route(server: Server, world: World, pool: asyncpg.Pool) -> None:
    revoked_dev = world.device("san-2", 1)
    await pool.execute("UPDATE devices SET revoked_at = now() WHERE id = $1", revoked_dev.device_id)
    tokens = {"device": world.device("san-1").token, "supervisor": world.supervisors["sanitation"], "admin": world.admin}
    bad = [None, "garbage", "fsd_" + "A" * 43, "fsu_" + "A" * 43, "Basic dXNlcjpwYXNz", "x" * 300]
    failures: list[str] = []
    routes = protected(server.app[ROUTES])
    async with aiohttp.ClientSession() as http:
        for d in routes:
            path = concrete(d.path, str(uuid.uuid4()))
            for tok in bad:
                st, code = await send(http, server.url, d, path, tok)
                if (st, code) != (401, "unauthorized") and not (d.method == "HEAD" and st == 401):
                    failures.append(f"{d.method} {d.path} token={str(tok)[:12]!r}: {st} {code}")
            st, code = await send(http, server.url, d, path, revoked_dev.token)
            if (st, code) != (401, "token_revoked") and not (d.method == "HEAD" and st == 401):
                failures.append(f"{d.method} {d.path} revoked device: {st} {code}")
            for role, tok in tokens.items():
                if role in d.roles:
                    continue
                st, code = await send(http, server.url, d, path, tok)
                if (st, code) != (403, "forbidden") and not (d.method == "HEAD" and st == 403):
                    failures.append(f"{d.method} {d.path} as {role}: {st} {code} (want 403)")
        # a revoked supervisor token is refused everywhere too
        await pool.execute("UPDATE users SET revoked_at = now() WHERE name = 'sup-street_services'")
        for d in routes:
            st, code = await send(http, server.url, d, concrete(d.path, str(uuid.uuid4())), world.supervisors["street_services"])
            if st != 401 or (d.method != "HEAD" and code != "token_revoked"):
                failures.append(f"{d.method} {d.path} revoked user: {st} {code}")
    assert failures == [], "\n".join(failures)


# Routes whose path names one department-owned resource: how to make one in sanitation, and a valid body, so the
# request gets past decoding to the scope check. A new such route must be added here (the guard test says so).
Builder = Callable[[asyncpg.Pool, World], Awaitable[str]]


async def _ticket(pool: asyncpg.Pool, world: World) -> str:
    (t,) = await make_tickets(pool, world, 1)
    return str(t.ticket.id)


async def _device(pool: asyncpg.Pool, world: World) -> str:
    return world.device("san-1").device_id


async def _conflict(pool: asyncpg.Pool, world: World) -> str:
    tid = await _ticket(pool, world)
    cid = await pool.fetchval(
        "INSERT INTO conflicts (ticket_id, department_id, crew_id, kind, detail) VALUES ($1, $2, $3, 'field_conflict', 'x')"
        " RETURNING id", uuid.UUID(tid), world.departments["sanitation"], world.crews["san-1"])
    return str(cid)


async def _photo(pool: asyncpg.Pool, world: World) -> str:
    """A photo row on a sanitation ticket (metadata only: the bytes are the upload tests' business)."""
    tid = await _ticket(pool, world)
    sha = uuid.uuid4().hex * 2
    await pool.execute("INSERT INTO blobs (sha256, size, media_type) VALUES ($1, 3, 'image/jpeg')", sha)
    await pool.execute("INSERT INTO ticket_photos (ticket_id, sha256, kind, taken_at, added_by)"
                       " VALUES ($1, $2, 'before', now(), 'test')", uuid.UUID(tid), sha)
    return sha


# path prefix -> (builder, whether the owning department's identical request must then succeed)
SCOPED: dict[str, tuple[Builder, bool]] = {
    "/v1/tickets/": (_ticket, True), "/v1/devices/": (_device, True), "/v1/conflicts/": (_conflict, True),
    "/v1/photos/": (_photo, False),
}
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/tickets/{id}"): {"priority": "high"},
    ("POST", "/v1/tickets/{id}/assign"): {"crew": "san-2"},
    ("POST", "/v1/tickets/{id}/cancel"): {"reason": "x"},
    ("POST", "/v1/tickets/{id}/duplicate"): {"of": "SELF2"},
    ("POST", "/v1/tickets/{id}/close"): {},
    ("POST", "/v1/tickets/{id}/reopen"): {"reason": "x"},
    ("POST", "/v1/conflicts/{id}/resolve"): {"resolution": "x"},
}


def staff_scoped(app_routes: list[RouteDoc]) -> list[RouteDoc]:
    """Supervisor routes with a path parameter: each names a resource that belongs to one department."""
    return [d for d in protected(app_routes) if "supervisor" in d.roles and PARAM.search(d.path)]


async def test_every_scoped_route_has_a_builder(server: Server) -> None:
    missing = [f"{d.method} {d.path}" for d in staff_scoped(server.app[ROUTES])
               if not any(d.path.startswith(p) for p in SCOPED)]
    assert missing == [], "add a resource builder to SCOPED for these routes"


@pytest.mark.rows_edited_by_hand  # sets ticket rows up (or pins SQL writers) without commit_changes
async def test_other_departments_resources_are_not_found(server: Server, world: World, pool: asyncpg.Pool) -> None:
    other = world.supervisors["street_services"]
    failures: list[str] = []
    async with aiohttp.ClientSession() as http:
        for d in staff_scoped(server.app[ROUTES]):
            prefix = next((p for p in SCOPED if d.path.startswith(p)), None)
            if prefix is None:
                continue  # reported by test_every_scoped_route_has_a_builder
            build, owner_succeeds = SCOPED[prefix]
            rid = await build(pool, world)
            body = BODIES.get((d.method, d.path))
            if body == {"of": "SELF2"}:
                body = {"of": await _ticket(pool, world)}
            snapshot = await pool.fetchrow(
                "SELECT (SELECT count(*) FROM changes) c, (SELECT count(*) FROM audit_log) a,"
                " (SELECT count(*) FROM devices WHERE revoked_at IS NOT NULL) r,"
                " (SELECT count(*) FROM conflicts WHERE resolved_at IS NOT NULL) k")
            st, code = await send(http, server.url, d, concrete(d.path, rid), other, body)
            if (st, code) != (404, "not_found"):
                failures.append(f"{d.method} {d.path}: {st} {code}")
            after = await pool.fetchrow(
                "SELECT (SELECT count(*) FROM changes) c, (SELECT count(*) FROM audit_log) a,"
                " (SELECT count(*) FROM devices WHERE revoked_at IS NOT NULL) r,"
                " (SELECT count(*) FROM conflicts WHERE resolved_at IS NOT NULL) k")
            if tuple(after) != tuple(snapshot):
                failures.append(f"{d.method} {d.path}: changed something")
            # the same request by the owning department succeeds, so the 404 above is about scope, not the request
            if owner_succeeds and (d.method in ("GET", "PATCH") or d.path.endswith(("/revoke", "/resolve", "/cancel", "/assign"))):
                st, code = await send(http, server.url, d, concrete(d.path, rid), world.supervisors["sanitation"], body)
                if st != 200:
                    failures.append(f"{d.method} {d.path} own department: {st} {code}")
    assert failures == []


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_public_paths_need_no_token(server: Server, path: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + path) as r:
            assert r.status == 200


async def test_two_authorization_headers_are_refused_on_every_kind_of_route(server: Server, world: World) -> None:
    """A request carrying two Authorization headers (one valid) was answered as the first one's owner; a proxy or
    log reading the other would disagree on who asked. Sync, uploads, staff API and the live upgrade all refuse it."""
    from multidict import CIMultiDict

    good, other = world.device("san-1").token, world.supervisors["sanitation"]
    cases = [("POST", "/v1/sync/pull", good), ("GET", "/v1/tickets", other), ("HEAD", "/v1/uploads/x", good)]
    async with aiohttp.ClientSession() as http:
        for method, path, token in cases:
            for pair in ((token, "fsd_forged"), ("fsd_forged", token), (token, token)):
                headers = CIMultiDict({VERSION_HEADER: str(PROTOCOL_VERSION), "Tus-Resumable": "1.0.0",
                                       "Content-Type": "application/json"})
                for t in pair:
                    headers.add("Authorization", f"Bearer {t}")
                async with http.request(method, server.url + path, data=b"{}" if method == "POST" else None,
                                        headers=headers) as r:
                    assert r.status == 401, (method, path, pair, r.status)
                    if method != "HEAD":
                        assert (await r.json())["error"]["code"] == "unauthorized"
        headers = CIMultiDict()
        headers.add("Authorization", f"Bearer {good}")
        headers.add("Authorization", f"Bearer {good}")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.url.replace("http", "ws") + "/v1/live?encoding=json", headers=headers)
        assert refused.value.status == 401
        async with http.post(server.url + "/v1/sync/pull", json={"cursor": None},  # one header still works
                             headers={"Authorization": f"Bearer {good}", VERSION_HEADER: str(PROTOCOL_VERSION)}) as r:
            assert r.status == 200
