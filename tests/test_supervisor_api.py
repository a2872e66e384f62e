"""Supervisor/admin API over real HTTP and real PostgreSQL: every action, illegal transitions, all-or-nothing bulk, audit in the same transaction, keyset pages."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import msgpack
import pytest

from sync_server.engine.changes import commit_changes
from sync_server.storage.tickets import load_tickets, lock_tickets, update_tickets
from tests.conftest import Server
from tests.factories import World, make_tickets


class Api:
    """A thin client that returns (status, decoded body) so tests read like the wire."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   raw: bytes | None = None, headers: dict[str, str] | None = None,
                   params: Any = None) -> tuple[int, Any]:
        hdrs = {"Authorization": f"Bearer {token or self.token}", **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        async with self.http.request(method, self.url + path, data=data, headers=hdrs, params=params) as r:
            payload = await r.read()
            if r.content_type == "application/msgpack":
                return r.status, msgpack.unpackb(payload)
            return r.status, json.loads(payload) if payload else None


@pytest.fixture
async def api(server: Server, world: World) -> Any:
    """A client holding the sanitation supervisor's token."""
    async with aiohttp.ClientSession() as http:
        yield Api(http, server.url, world.supervisors["sanitation"])


async def version(pool: asyncpg.Pool, tid: UUID | str) -> int:
    """A ticket's stored version: unchanged means untouched."""
    return int(await pool.fetchval("SELECT version FROM tickets WHERE id = $1", UUID(str(tid))))


async def counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    """(tickets, change rows, audit rows): a refused request must leave all three alone."""
    row = await pool.fetchrow("SELECT (SELECT count(*) FROM tickets) t, (SELECT count(*) FROM changes) c,"
                              " (SELECT count(*) FROM audit_log) a")
    return row["t"], row["c"], row["a"]


async def force_status(pool: asyncpg.Pool, ids: list[UUID], status: str) -> None:
    """Move tickets as a crew would (the sync engine's job), through the one change pattern."""
    async with pool.acquire() as conn, conn.transaction():
        await lock_tickets(conn, ids)
        before = await load_tickets(conn, ids)
        await update_tickets(conn, sorted(ids), {"status": status})
        await commit_changes(conn, {t: before[t] for t in sorted(ids)}, actor_kind="device", actor="test", action=status)


def err(body: Any) -> str:
    """The error envelope's code."""
    return str(body["error"]["code"])


# ---- create ---------------------------------------------------------------------------------------------------


async def test_create_unassigned_and_assigned(api: Api, pool: asyncpg.Pool, world: World) -> None:
    st, t = await api.call("POST", "/v1/tickets", {"service_type": "Bulky Items", "address": "1 Main St",
                                                   "priority": "high", "due_at": "2030-01-02T10:00:00-08:00",
                                                   "service_date": "2030-01-02", "lat": 34.0, "lon": -118.2})
    assert st == 201, t
    assert (t["status"], t["crew"], t["priority"], t["department"]) == ("unassigned", None, "high", "sanitation")
    assert t["due_at"] == "2030-01-02T18:00:00.000000Z" and t["version"] == 1
    st, t2 = await api.call("POST", "/v1/tickets", {"service_type": "illegal_dumping", "address": "2 Main St",
                                                    "crew": "san-2", "sr_number": "1-000001"})
    assert st == 201, t2
    assert (t2["status"], t2["crew"], t2["service_type"], t2["sr_number"]) == ("assigned", "san-2", "Illegal Dumping Pickup", "1-000001")
    holder = await pool.fetchval("SELECT holder_crew_id FROM tickets WHERE id = $1", UUID(t2["id"]))
    assert holder == world.crews["san-2"]
    rows = await pool.fetch("SELECT actor_kind, actor, action FROM audit_log WHERE ticket_id = $1", UUID(t2["id"]))
    assert [tuple(r) for r in rows] == [("supervisor", "sup-sanitation", "create")]
    assert await pool.fetchval("SELECT count(*) FROM changes WHERE ticket_id = $1", UUID(t2["id"])) == 1


async def test_create_refusals_change_nothing(api: Api, pool: asyncpg.Pool, world: World) -> None:
    st, _ = await api.call("POST", "/v1/tickets", {"service_type": "Bulky Items", "address": "x", "sr_number": "1-9"})
    assert st == 201
    before = await counts(pool)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"service_type": "Pothole Repair", "address": "x"}, 422, "validation_failed"),   # other department's type
        ({"service_type": "No Such Type", "address": "x"}, 422, "validation_failed"),
        ({"service_type": "Bulky Items", "address": "x", "crew": "ss-1"}, 404, "not_found"),  # other department's crew
        ({"service_type": "Bulky Items", "address": "x", "crew": "nope"}, 404, "not_found"),
        ({"service_type": "Bulky Items", "address": "x", "sr_number": "1-9"}, 409, "conflict"),
        ({"service_type": "Bulky Items", "address": "x", "colour": "red"}, 422, "validation_failed"),
        ({"service_type": "Bulky Items", "address": 5}, 422, "validation_failed"),
        ({"service_type": "Bulky Items", "address": "x", "priority": "whenever"}, 422, "validation_failed"),
        ({"service_type": "Bulky Items", "address": "x", "lat": 91.0}, 422, "validation_failed"),
        ({"service_type": "Bulky Items", "address": "x", "due_at": "2030-01-01T00:00:00"}, 422, "validation_failed"),
    ]
    for body, status, code in cases:
        st, resp = await api.call("POST", "/v1/tickets", body)
        assert (st, err(resp)) == (status, code), body
    # the other department's crew and an unknown crew must be indistinguishable
    _, a = await api.call("POST", "/v1/tickets", {"service_type": "Bulky Items", "address": "x", "crew": "ss-1"})
    _, b = await api.call("POST", "/v1/tickets", {"service_type": "Bulky Items", "address": "x", "crew": "zz-9"})
    assert a["error"]["message"].replace("ss-1", "?") == b["error"]["message"].replace("zz-9", "?")
    assert await counts(pool) == before


async def test_admin_creates_in_any_department_msgpack(server: Server, world: World, pool: asyncpg.Pool) -> None:
    body = msgpack.packb({"service_type": "pothole_repair", "address": "9 Elm", "crew": "ss-1"})
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/tickets", data=body, headers={
            "Authorization": f"Bearer {world.admin}", "Content-Type": "application/msgpack"}) as r:
            assert r.status == 201 and r.content_type == "application/msgpack"
            t = msgpack.unpackb(await r.read())
    assert (t["department"], t["crew"], t["status"]) == ("street_services", "ss-1", "assigned")
    assert await pool.fetchval("SELECT actor_kind FROM audit_log WHERE ticket_id = $1", UUID(t["id"])) == "admin"


# ---- list and get ---------------------------------------------------------------------------------------------


async def test_pagination_walks_every_ticket_once(api: Api, pool: asyncpg.Pool, world: World) -> None:
    # Two batches: each shares one updated_at (transaction time), so the id tie-break is exercised.
    ids = {r.ticket.id for r in await make_tickets(pool, world, 13)}
    ids |= {r.ticket.id for r in await make_tickets(pool, world, 12, crew=None)}
    await make_tickets(pool, world, 3, crew="ss-1", service_type="Pothole Repair")  # another department's
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        st, page = await api.call("GET", "/v1/tickets", params=params)
        assert st == 200, page
        assert len(page["tickets"]) <= 7
        seen += [t["id"] for t in page["tickets"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 25
    assert {UUID(s) for s in seen} == ids
    _, all_admin = await api.call("GET", "/v1/tickets", token=world.admin, params={"limit": "500"})
    assert len(all_admin["tickets"]) == 28 and all_admin["next_cursor"] is None
    keys = [(t["updated_at"], t["id"]) for t in all_admin["tickets"]]
    assert keys == sorted(keys)


@pytest.mark.rows_edited_by_hand  # sets ticket rows up (or pins SQL writers) without commit_changes
async def test_list_filters(api: Api, pool: asyncpg.Pool, world: World) -> None:
    a = await make_tickets(pool, world, 3)
    b = await make_tickets(pool, world, 2, crew="san-2", service_type="Graffiti Removal")
    c = await make_tickets(pool, world, 2, crew=None)
    await force_status(pool, [c[0].ticket.id], "cancelled")

    async def ids(**params: Any) -> set[UUID]:
        st, page = await api.call("GET", "/v1/tickets", params=params)
        assert st == 200, page
        return {UUID(t["id"]) for t in page["tickets"]}

    assert await ids(crew="san-1") == {r.ticket.id for r in a}
    assert await ids(service_type="graffiti_removal") == {r.ticket.id for r in b}
    assert await ids(status="unassigned") == {c[1].ticket.id}
    both = [("status", "unassigned"), ("status", "cancelled")]
    assert await ids(status="unassigned,cancelled") == {r.ticket.id for r in c}
    st, page = await api.call("GET", "/v1/tickets", params=both)
    assert {UUID(t["id"]) for t in page["tickets"]} == {r.ticket.id for r in c}
    cutoff = c[0].ticket.updated_at  # c[0] was changed after everything else
    assert c[0].ticket.id in await ids(updated_since=cutoff.isoformat())
    assert await ids(updated_since="2099-01-01T00:00:00Z") == set()
    await pool.execute("UPDATE tickets SET sr_number = '1-42' WHERE id = $1", b[0].ticket.id)
    assert await ids(q="1-42") == {b[0].ticket.id}
    for params, code in [({"status": "bogus"}, "validation_failed"), ({"limit": "0"}, "validation_failed"),
                         ({"limit": "501"}, "validation_failed"), ({"colour": "red"}, "validation_failed"),
                         ({"crew": "ss-1"}, "not_found"), ({"service_type": "pothole_repair"}, "validation_failed"),
                         ({"cursor": "not-a-cursor"}, "cursor_invalid"), ({"updated_since": "yesterday"}, "validation_failed"),
                         ([("crew", "san-1"), ("crew", "san-2")], "validation_failed")]:
        st, resp = await api.call("GET", "/v1/tickets", params=params)
        assert err(resp) == code, params


async def test_get_ticket_with_history(api: Api, pool: asyncpg.Pool, world: World) -> None:
    (t,) = await make_tickets(pool, world, 1, crew=None)
    tid = str(t.ticket.id)
    assert (await api.call("POST", f"/v1/tickets/{tid}/assign", {"crew": "san-1"}))[0] == 200
    assert (await api.call("POST", f"/v1/tickets/{tid}/cancel", {"reason": "resident withdrew"}))[0] == 200
    st, d = await api.call("GET", f"/v1/tickets/{tid}")
    assert st == 200
    assert d["ticket"]["status"] == "cancelled" and d["history_truncated"] is False
    assert [h["action"] for h in d["history"]] == ["create", "assign", "cancel"]
    assign, cancel = d["history"][1], d["history"][2]
    assert assign["before"] == {"crew": None, "status": "unassigned"}
    assert assign["after"] == {"crew": "san-1", "status": "assigned"}
    assert (cancel["actor_kind"], cancel["actor"], cancel["reason"]) == ("supervisor", "sup-sanitation", "resident withdrew")
    other = world.supervisors["street_services"]
    assert (await api.call("GET", f"/v1/tickets/{tid}", token=other))[0] == 404
    st, resp = await api.call("GET", f"/v1/tickets/{uuid.uuid4()}")
    assert (st, err(resp)) == (404, "not_found")
    assert (await api.call("GET", "/v1/tickets/not-a-uuid"))[0] == 404


# ---- assign ---------------------------------------------------------------------------------------------------


async def test_assign_reassign_and_noop(api: Api, pool: asyncpg.Pool, world: World) -> None:
    (t,) = await make_tickets(pool, world, 1, crew=None)
    tid = str(t.ticket.id)
    st, a = await api.call("POST", f"/v1/tickets/{tid}/assign", {"crew": "san-1"})
    assert st == 200 and (a["status"], a["crew"], a["version"]) == ("assigned", "san-1", 2)
    st, b = await api.call("POST", f"/v1/tickets/{tid}/assign", {"crew": "san-2"})
    assert (b["crew"], b["version"]) == ("san-2", 3)
    last = await pool.fetchrow("SELECT holder_crew_id, prev_crew_id, removal_reason FROM changes"
                               " WHERE ticket_id = $1 ORDER BY id DESC LIMIT 1", t.ticket.id)
    assert tuple(last) == (world.crews["san-2"], world.crews["san-1"], "reassigned")
    before = await counts(pool)
    st, c = await api.call("POST", f"/v1/tickets/{tid}/assign", {"crew": "san-2"})
    assert st == 200 and c["version"] == 3
    assert await counts(pool) == before  # no version bump, no change row, no audit row


async def test_assign_keeps_progress_of_same_crew_and_refusals(api: Api, pool: asyncpg.Pool, world: World) -> None:
    t1, t2 = await make_tickets(pool, world, 2)
    await force_status(pool, [t1.ticket.id], "in_progress")
    st, a = await api.call("POST", f"/v1/tickets/{t1.ticket.id}/assign", {"crew": "san-1"})
    assert st == 200 and a["status"] == "in_progress"
    await force_status(pool, [t2.ticket.id], "completed")
    before, v = await counts(pool), await version(pool, t2.ticket.id)
    st, resp = await api.call("POST", f"/v1/tickets/{t2.ticket.id}/assign", {"crew": "san-2"})
    assert (st, err(resp)) == (409, "illegal_transition")
    assert resp["error"]["details"]["status"] == "completed" and resp["error"]["details"]["action"] == "assign"
    st, resp = await api.call("POST", f"/v1/tickets/{t1.ticket.id}/assign", {"crew": "ss-1"})
    assert (st, err(resp)) == (404, "not_found")  # supervisor: the other department's crew does not exist
    st, resp = await api.call("POST", f"/v1/tickets/{t1.ticket.id}/assign", {"crew": "ss-1"}, token=world.admin)
    assert (st, err(resp)) == (422, "validation_failed")  # admin: exists, but wrong department
    await pool.execute("UPDATE crews SET active = false WHERE name = 'san-2'")
    st, resp = await api.call("POST", f"/v1/tickets/{t1.ticket.id}/assign", {"crew": "san-2"})
    assert (st, err(resp)) == (422, "validation_failed")
    assert await counts(pool) == before and await version(pool, t2.ticket.id) == v


async def test_bulk_assign_all_or_nothing(api: Api, pool: asyncpg.Pool, world: World) -> None:
    ts = await make_tickets(pool, world, 4, crew=None)
    (foreign,) = await make_tickets(pool, world, 1, crew="ss-1", service_type="Pothole Repair")
    await force_status(pool, [ts[3].ticket.id], "cancelled")
    ids = [str(t.ticket.id) for t in ts]
    before = await counts(pool)
    st, resp = await api.call("POST", "/v1/tickets/assign", {"ticket_ids": ids, "crew": "san-2"})
    assert (st, err(resp)) == (409, "illegal_transition")
    assert [x["id"] for x in resp["error"]["details"]["tickets"]] == [ids[3]]
    ghost = str(uuid.uuid4())
    for extra in (ghost, str(foreign.ticket.id)):  # unknown and other department answer alike
        st, resp = await api.call("POST", "/v1/tickets/assign", {"ticket_ids": ids[:3] + [extra], "crew": "san-2"})
        assert (st, err(resp)) == (422, "validation_failed")
        assert resp["error"]["details"]["unknown_ids"] == [extra]
    st, resp = await api.call("POST", "/v1/tickets/assign", {"ticket_ids": [], "crew": "san-2"})
    assert st == 422
    st, resp = await api.call("POST", "/v1/tickets/assign", {"ticket_ids": [ids[0]] * 501, "crew": "san-2"})
    assert st == 422
    assert await counts(pool) == before
    assert [await version(pool, i) for i in ids[:3]] == [1, 1, 1]
    st, ok = await api.call("POST", "/v1/tickets/assign", {"ticket_ids": ids[:3] + [ids[0]], "crew": "san-2"})
    assert st == 200, ok
    assert sorted(ok["changed"]) == sorted(ids[:3]) and len(ok["tickets"]) == 3
    assert {t["crew"] for t in ok["tickets"]} == {"san-2"}
    st, again = await api.call("POST", "/v1/tickets/assign", {"ticket_ids": ids[:3], "crew": "san-2"})
    assert st == 200 and again["changed"] == []


# ---- fields ---------------------------------------------------------------------------------------------------


async def test_patch_fields(api: Api, pool: asyncpg.Pool, world: World) -> None:
    (t,) = await make_tickets(pool, world, 1)
    tid = str(t.ticket.id)
    st, p = await api.call("PATCH", f"/v1/tickets/{tid}", {"priority": "urgent", "due_at": "2030-05-01T12:00:00Z",
                                                            "service_date": "2030-05-01", "description": "two sofas"})
    assert st == 200, p
    assert (p["priority"], p["due_at"], p["service_date"], p["description"], p["version"]) == (
        "urgent", "2030-05-01T12:00:00.000000Z", "2030-05-01", "two sofas", 2)
    st, p = await api.call("PATCH", f"/v1/tickets/{tid}", {"due_at": None})
    assert p["due_at"] is None and p["priority"] == "urgent" and p["version"] == 3
    before = await counts(pool)
    st, p = await api.call("PATCH", f"/v1/tickets/{tid}", {"priority": "urgent"})
    assert st == 200 and p["version"] == 3 and await counts(pool) == before
    for body in ({}, {"priority": None}, {"crew": "san-2"}, {"status": "closed"}, {"priority": 3},
                 {"service_date": "2030-05-01T00:00:00Z"}):
        st, resp = await api.call("PATCH", f"/v1/tickets/{tid}", body)
        assert (st, err(resp)) == (422, "validation_failed"), body
    await force_status(pool, [t.ticket.id], "cancelled")
    before = await counts(pool)
    st, resp = await api.call("PATCH", f"/v1/tickets/{tid}", {"priority": "low"})
    assert (st, err(resp)) == (409, "illegal_transition")
    assert await counts(pool) == before


async def test_bulk_priority_all_or_nothing(api: Api, pool: asyncpg.Pool, world: World) -> None:
    ts = await make_tickets(pool, world, 3)
    ids = [str(t.ticket.id) for t in ts]
    await force_status(pool, [ts[2].ticket.id], "duplicate")
    before = await counts(pool)
    st, resp = await api.call("POST", "/v1/tickets/priority", {"ticket_ids": ids, "priority": "high"})
    assert (st, err(resp)) == (409, "illegal_transition")
    assert await counts(pool) == before
    st, ok = await api.call("POST", "/v1/tickets/priority", {"ticket_ids": ids[:2], "priority": "high"})
    assert st == 200 and sorted(ok["changed"]) == sorted(ids[:2])
    assert {t["priority"] for t in ok["tickets"]} == {"high"}
    rows = await pool.fetch("SELECT action, before, after FROM audit_log WHERE action = 'set_priority'")
    assert len(rows) == 2 and all(json.loads(r["after"]) == {"priority": "high"} for r in rows)


# ---- status actions -------------------------------------------------------------------------------------------


async def test_cancel_duplicate_close_reopen(api: Api, pool: asyncpg.Pool, world: World) -> None:
    a, b, c, d = await make_tickets(pool, world, 4)
    (foreign,) = await make_tickets(pool, world, 1, crew="ss-1", service_type="Pothole Repair")
    st, r = await api.call("POST", f"/v1/tickets/{a.ticket.id}/cancel", {"reason": "withdrawn"})
    assert st == 200 and r["status"] == "cancelled" and r["crew"] == "san-1"
    assert await pool.fetchval("SELECT holder_crew_id FROM tickets WHERE id = $1", a.ticket.id) is None
    last = await pool.fetchrow("SELECT prev_crew_id, removal_reason FROM changes WHERE ticket_id = $1 ORDER BY id DESC LIMIT 1",
                               a.ticket.id)
    assert tuple(last) == (world.crews["san-1"], "cancelled")

    before = await counts(pool)
    for body, code in [({"of": str(b.ticket.id)}, "validation_failed"),            # itself
                       ({"of": str(foreign.ticket.id)}, "validation_failed"),      # other department
                       ({"of": str(uuid.uuid4())}, "validation_failed"),           # unknown
                       ({"of": "nope"}, "validation_failed")]:
        st, resp = await api.call("POST", f"/v1/tickets/{b.ticket.id}/duplicate", body)
        assert err(resp) == code, body
    assert await counts(pool) == before
    st, r = await api.call("POST", f"/v1/tickets/{b.ticket.id}/duplicate", {"of": str(c.ticket.id), "reason": "same sofa"})
    assert st == 200 and r["status"] == "duplicate"
    _, detail = await api.call("GET", f"/v1/tickets/{b.ticket.id}")
    assert detail["duplicate_of"] == str(c.ticket.id)
    st, resp = await api.call("POST", f"/v1/tickets/{d.ticket.id}/duplicate", {"of": str(b.ticket.id)})
    assert st == 422  # b is itself a duplicate: point at its original

    st, resp = await api.call("POST", f"/v1/tickets/{c.ticket.id}/close", {})
    assert (st, err(resp), resp["error"]["details"]["status"]) == (409, "illegal_transition", "assigned")
    await force_status(pool, [c.ticket.id, d.ticket.id], "completed")
    st, r = await api.call("POST", f"/v1/tickets/{c.ticket.id}/close")  # no body at all
    assert st == 200 and r["status"] == "closed"
    st, r = await api.call("POST", f"/v1/tickets/{d.ticket.id}/close", {"reason": "verified"})
    assert st == 200 and r["status"] == "closed"
    st, resp = await api.call("POST", f"/v1/tickets/{c.ticket.id}/reopen", {})
    assert (st, err(resp)) == (422, "validation_failed")  # reason is required
    st, r = await api.call("POST", f"/v1/tickets/{c.ticket.id}/reopen", {"reason": "items still there"})
    assert st == 200 and (r["status"], r["crew"]) == ("reopened", "san-1")
    assert await pool.fetchval("SELECT holder_crew_id FROM tickets WHERE id = $1", c.ticket.id) == world.crews["san-1"]

    before = await counts(pool)
    illegal = [(a, "cancel", {"reason": "again"}), (a, "reopen", {"reason": "x"}), (c, "reopen", {"reason": "x"}),
               (a, "duplicate", {"of": str(c.ticket.id)}), (a, "assign", {"crew": "san-1"})]
    for t, action, body in illegal:
        st, resp = await api.call("POST", f"/v1/tickets/{t.ticket.id}/{action}", body)
        assert (st, err(resp)) == (409, "illegal_transition"), action
        assert resp["error"]["details"]["action"] in (action, "mark_duplicate")
    st, resp = await api.call("POST", f"/v1/tickets/{b.ticket.id}/cancel", {})
    assert st == 422  # cancel needs a reason
    assert await counts(pool) == before


async def test_audit_and_changes_share_the_transaction(api: Api, pool: asyncpg.Pool, world: World) -> None:
    ts = await make_tickets(pool, world, 3, crew=None)
    ids = [str(t.ticket.id) for t in ts]
    assert (await api.call("POST", "/v1/tickets/assign", {"ticket_ids": ids, "crew": "san-1"}))[0] == 200
    rows = await pool.fetch(
        "SELECT a.ticket_id, a.xid::text AS axid, c.xid::text AS cxid FROM audit_log a"
        " JOIN changes c ON c.ticket_id = a.ticket_id AND c.version = 2 WHERE a.action = 'assign'")
    assert len(rows) == 3
    assert len({r["axid"] for r in rows}) == 1  # one bulk action, one transaction
    assert all(r["axid"] == r["cxid"] for r in rows)
    # a request that fails after validation began leaves neither an audit row nor a change row
    before = await counts(pool)
    st, _ = await api.call("POST", "/v1/tickets/assign", {"ticket_ids": ids + [str(uuid.uuid4())], "crew": "san-2"})
    assert st == 422
    st, _ = await api.call("POST", f"/v1/tickets/{ids[0]}/close", {})
    assert st == 409
    assert await counts(pool) == before


async def test_bad_input_changes_nothing(api: Api, server: Server, pool: asyncpg.Pool, world: World) -> None:
    (t,) = await make_tickets(pool, world, 1)
    path = f"/v1/tickets/{t.ticket.id}/assign"
    before = await counts(pool)
    cases = [
        (b"{not json", {"Content-Type": "application/json"}, 400, "malformed_body"),
        (b'{"crew": "san-2", "crew": "san-1"}', {"Content-Type": "application/json"}, 400, "malformed_body"),
        (b'{"crew": 7}', {"Content-Type": "application/json"}, 422, "validation_failed"),
        (b'{"crew": "san-2"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"", {"Content-Type": "application/json"}, 400, "malformed_body"),
        (json.dumps({"crew": "san-2", "pad": "x" * (300 << 10)}).encode(), {"Content-Type": "application/json"},
         413, "body_too_large"),
    ]
    for raw, headers, status, code in cases:
        st, resp = await api.call("POST", path, raw=raw, headers=headers)
        assert (st, err(resp)) == (status, code), raw[:40]
    assert await counts(pool) == before and await version(pool, t.ticket.id) == 1


# ---- crews, devices, users ------------------------------------------------------------------------------------


async def test_crews_and_devices_listing(api: Api, pool: asyncpg.Pool, world: World) -> None:
    await make_tickets(pool, world, 2)
    st, body = await api.call("GET", "/v1/crews")
    assert st == 200
    assert [(c["name"], c["devices"], c["open_tickets"]) for c in body["crews"]] == [("san-1", 2, 2), ("san-2", 2, 0)]
    _, body = await api.call("GET", "/v1/crews", token=world.admin)
    assert {c["name"] for c in body["crews"]} == {"san-1", "san-2", "ss-1"}
    st, body = await api.call("GET", "/v1/devices", params={"crew": "san-2"})
    assert st == 200 and {d["id"] for d in body["devices"]} == {d.device_id for d in world.devices["san-2"]}
    assert all(set(d) == {"id", "crew", "department", "label", "enrolled_at", "last_seen_at", "revoked_at"}
               for d in body["devices"])
    _, body = await api.call("GET", "/v1/devices")
    assert len(body["devices"]) == 4 and {d["department"] for d in body["devices"]} == {"sanitation"}
    st, resp = await api.call("GET", "/v1/devices", params={"crew": "ss-1"})
    assert (st, err(resp)) == (404, "not_found")


async def test_enroll_and_revoke_device(api: Api, pool: asyncpg.Pool, world: World) -> None:
    st, dev = await api.call("POST", "/v1/devices", {"crew": "san-1", "label": "spare tablet"})
    assert st == 201 and dev["crew"] == "san-1" and dev["token"].startswith("fsd_")
    # The new token authenticates: a device is known, so a supervisor endpoint answers 403, not 401.
    st, resp = await api.call("GET", "/v1/crews", token=dev["token"])
    assert (st, err(resp)) == (403, "forbidden")
    stored = await pool.fetchval("SELECT token_hash FROM devices WHERE id = $1", dev["device_id"])
    assert stored is not None and dev["token"].encode() not in stored
    other = world.supervisors["street_services"]
    st, resp = await api.call("POST", f"/v1/devices/{dev['device_id']}/revoke", token=other)
    assert (st, err(resp)) == (404, "not_found")
    st, r = await api.call("POST", f"/v1/devices/{dev['device_id']}/revoke")
    assert st == 200 and r["revoked_at"] is not None
    st, resp = await api.call("GET", "/v1/crews", token=dev["token"])
    assert (st, err(resp)) == (401, "token_revoked")
    st, r2 = await api.call("POST", f"/v1/devices/{dev['device_id']}/revoke")
    assert st == 200 and r2["revoked_at"] == r["revoked_at"]
    rows = await pool.fetch("SELECT action, actor, ticket_id, department_id FROM audit_log"
                            " WHERE action LIKE 'device_%' ORDER BY id")
    assert [(r["action"], r["actor"], r["ticket_id"]) for r in rows] == [
        ("device_enroll", "sup-sanitation", None), ("device_revoke", "sup-sanitation", None)]
    assert rows[0]["department_id"] == world.departments["sanitation"]
    st, resp = await api.call("POST", "/v1/devices", {"crew": "ss-1"})
    assert (st, err(resp)) == (404, "not_found")
    _, crews = await api.call("GET", "/v1/crews")
    assert {c["name"]: c["devices"] for c in crews["crews"]}["san-1"] == 2  # revoked devices do not count


async def test_create_users(api: Api, pool: asyncpg.Pool, world: World) -> None:
    st, resp = await api.call("POST", "/v1/users", {"name": "boss", "role": "admin"})
    assert (st, err(resp)) == (403, "forbidden")  # supervisors may not create users
    st, u = await api.call("POST", "/v1/users", {"name": "sup2", "role": "supervisor", "department": "street_services"},
                           token=world.admin)
    assert st == 201 and (u["name"], u["role"], u["department"]) == ("sup2", "supervisor", "street_services")
    (t,) = await make_tickets(pool, world, 1, crew="ss-1", service_type="Pothole Repair")
    st, d = await api.call("GET", f"/v1/tickets/{t.ticket.id}", token=u["token"])
    assert st == 200 and d["ticket"]["department"] == "street_services"
    before = await counts(pool)
    for body, status in [({"name": "sup2", "role": "admin"}, 409),
                         ({"name": "x", "role": "supervisor"}, 422),
                         ({"name": "y", "role": "admin", "department": "sanitation"}, 422),
                         ({"name": "z", "role": "supervisor", "department": "nowhere"}, 422),
                         ({"name": "w", "role": "root"}, 422)]:
        st, resp = await api.call("POST", "/v1/users", body, token=world.admin)
        assert st == status, body
    assert await counts(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'user_create'") == 1


async def test_concurrent_overlapping_bulk_actions_all_commit(api: Api, pool: asyncpg.Pool, world: World) -> None:
    """Bulk actions lock in id order, so overlapping sets sent in opposite orders never deadlock or half-apply."""
    ts = await make_tickets(pool, world, 40, crew=None)
    ids = [str(t.ticket.id) for t in ts]
    crews = ["san-1", "san-2"]
    jobs = [api.call("POST", "/v1/tickets/assign", {"ticket_ids": ids if i % 2 else ids[::-1], "crew": crews[i % 2]})
            for i in range(6)]
    jobs += [api.call("POST", "/v1/tickets/priority", {"ticket_ids": ids[i * 10:(i + 2) * 10], "priority": "high"})
             for i in range(3)]
    results = await asyncio.gather(*jobs)
    assert [st for st, _ in results] == [200] * 9, [b for st, b in results if st != 200]
    rows = await pool.fetch("SELECT t.id, t.version, (SELECT count(*) FROM changes c WHERE c.ticket_id = t.id) n,"
                            " (SELECT count(*) FROM audit_log a WHERE a.ticket_id = t.id) a FROM tickets t")
    # every version bump has exactly one change row and one audit row (created at version 1)
    assert all(r["version"] == r["n"] == r["a"] for r in rows)
    assert sum(len(b["changed"]) for _, b in results) == sum(r["version"] - 1 for r in rows)


async def test_list_in_msgpack_and_requested_at(api: Api, server: Server, world: World) -> None:
    st, t = await api.call("POST", "/v1/tickets", {"service_type": "Bulky Items", "address": "3 Oak",
                                                   "requested_at": "2020-01-01T08:30:00-08:00"})
    assert st == 201 and t["requested_at"] == "2020-01-01T16:30:00.000000Z" and t["source"] == "supervisor"
    st, page = await api.call("GET", "/v1/tickets", headers={"Accept": "application/msgpack"})
    assert st == 200 and [x["id"] for x in page["tickets"]] == [t["id"]]


async def test_list_answers_each_ticket_as_its_current_document(api: Api, pool: asyncpg.Pool, world: World) -> None:
    """The page is written around the stored documents (not rendered per request): it must still be every ticket as
    the rows say, in both encodings, and follow a change at once."""
    recs = await make_tickets(pool, world, 3)
    moved = recs[0].ticket.id
    st, _ = await api.call("POST", f"/v1/tickets/{moved}/assign", {"crew": "san-2"})
    assert st == 200
    async with pool.acquire() as conn:
        rendered = await load_tickets(conn, [r.ticket.id for r in recs])  # rendered from the rows, the other way
    want = {str(t): r.ticket.model_dump(mode="json") for t, r in rendered.items()}
    for accept in ("application/json", "application/msgpack"):
        st, page = await api.call("GET", "/v1/tickets", headers={"Accept": accept}, params={"limit": "2"})
        assert st == 200 and len(page["tickets"]) == 2 and isinstance(page["next_cursor"], str)
        st, rest = await api.call("GET", "/v1/tickets", headers={"Accept": accept},
                                  params={"limit": "2", "cursor": page["next_cursor"]})
        assert st == 200 and rest["next_cursor"] is None
        got = {t["id"]: t for t in page["tickets"] + rest["tickets"]}
        assert got == want
        assert (got[str(moved)]["crew"], got[str(moved)]["version"]) == ("san-2", 2)
