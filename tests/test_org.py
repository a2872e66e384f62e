"""Organisation management over real HTTP and PostgreSQL: departments, crews, service types, staff accounts; bad
input is a typed 4xx that changes nothing but leaves a `_refused` audit row; retiring a crew moves or names tickets."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient
from tests.test_supervisor_api import Api


@pytest.fixture
async def admin(server: Server, world: World) -> Any:
    """A client holding the admin's token."""
    async with aiohttp.ClientSession() as http:
        yield Api(http, server.url, world.admin)


async def org_state(pool: asyncpg.Pool) -> tuple[Any, ...]:
    """Everything an organisation change could touch, to prove a refusal changed nothing."""
    return tuple([await pool.fetchval(q) for q in (
        "SELECT array_agg(code ORDER BY code) FROM departments",
        "SELECT array_agg((name, active, department_id)::text ORDER BY name) FROM crews",
        "SELECT array_agg((code, department_id, resolution_codes)::text ORDER BY code) FROM service_types",
        "SELECT array_agg((name, revoked_at IS NULL, token_hash)::text ORDER BY name) FROM users",
        "SELECT array_agg((id, crew_id, version)::text ORDER BY id) FROM tickets",
        "SELECT count(*) FROM changes",
    )])


async def refused_actions(pool: asyncpg.Pool) -> list[tuple[str, str, str]]:
    """(actor, action, reason) of every refused organisation change, oldest first."""
    rows = await pool.fetch("SELECT actor, action, reason FROM audit_log WHERE action LIKE '%\\_refused' ORDER BY id")
    return [(r["actor"], r["action"], r["reason"]) for r in rows]


async def test_an_admin_sets_up_departments_crews_and_service_types(admin: Api, pool: asyncpg.Pool, world: World) -> None:
    status, dept = await admin.call("POST", "/v1/departments", {"code": "parks", "name": "Recreation and Parks",
                                                                 "agency_code": "RAP"})
    assert status == 201 and (dept["code"], dept["name"], dept["agency_code"]) == ("parks", "Recreation and Parks", "RAP")
    status, crew = await admin.call("POST", "/v1/crews", {"name": "rap-1", "display_name": "Griffith Park crew",
                                                           "department": "parks"})
    assert status == 201
    assert (crew["name"], crew["display_name"], crew["department"], crew["active"], crew["devices"]) == (
        "rap-1", "Griffith Park crew", "parks", True, 0)
    status, st = await admin.call("POST", "/v1/service-types", {
        "code": "tree_trimming", "name": "Tree Trimming", "department": "parks", "default_priority": "low",
        "resolution_codes": ["trimmed", "removed"], "reason_codes": ["no_access"]})
    assert status == 201
    assert (st["department"], st["default_priority"], st["resolution_codes"], st["reason_codes"]) == (
        "parks", "low", ["trimmed", "removed"], ["no_access"])
    # Omitted code lists are the standard ones the migration seeds (what field apps use today).
    status, plain = await admin.call("POST", "/v1/service-types", {"code": "litter", "name": "Litter", "department": "parks"})
    assert status == 201 and "collected" in plain["resolution_codes"] and "no_access" in plain["reason_codes"]

    status, body = await admin.call("GET", "/v1/departments")
    assert [d["code"] for d in body["departments"]] == ["parks", "sanitation", "street_services"]
    status, body = await admin.call("GET", "/v1/service-types", params={"department": "parks"})
    assert [s["code"] for s in body["service_types"]] == ["litter", "tree_trimming"]
    # A supervisor reads only its own department: the new one is invisible to sanitation.
    status, body = await admin.call("GET", "/v1/departments", token=world.supervisors["sanitation"])
    assert [d["code"] for d in body["departments"]] == ["sanitation"]
    status, body = await admin.call("GET", "/v1/service-types", token=world.supervisors["sanitation"])
    assert {s["department"] for s in body["service_types"]} == {"sanitation"}

    # The new crew is usable at once: enrol a device, assign a ticket, the device pulls it.
    status, enrolled = await admin.call("POST", "/v1/devices", {"crew": "rap-1"})
    assert status == 201
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log WHERE actor = 'admin' ORDER BY id")]
    assert actions == ["department_create", "crew_create", "service_type_create", "service_type_create", "device_enroll"]


async def test_bad_organisation_input_is_typed_changes_nothing_and_is_audited(admin: Api, pool: asyncpg.Pool,
                                                                              world: World) -> None:
    before = await org_state(pool)
    cases: list[tuple[str, str, dict[str, Any], int, str, str | None]] = [
        ("POST", "/v1/departments", {"code": "sanitation", "name": "Other name"}, 409, "conflict", "code"),
        ("POST", "/v1/departments", {"code": "sanitation2", "name": "Sanitation"}, 409, "conflict", "name"),
        ("POST", "/v1/crews", {"name": "san-1", "department": "sanitation"}, 409, "conflict", "name"),
        ("POST", "/v1/crews", {"name": "x-1", "department": "no_such_dept"}, 422, "validation_failed", "department"),
        ("POST", "/v1/service-types", {"code": "bulky_items", "name": "New", "department": "sanitation"}, 409,
         "conflict", "code"),
        ("POST", "/v1/service-types", {"code": "weeds", "name": "Weeds", "department": "no_such_dept"}, 422,
         "validation_failed", "department"),
        ("POST", "/v1/service-types", {"code": "weeds", "name": "Weeds", "department": "sanitation",
                                       "resolution_codes": ["cut", "cut"]}, 422, "validation_failed", "resolution_codes"),
        ("POST", "/v1/users/admin/disable", {}, 409, "conflict", None),  # the last active admin
        ("POST", "/v1/users/nobody/rotate-token", {}, 404, "not_found", None),
    ]
    for method, path, body, want, code, field in cases:
        status, err = await admin.call(method, path, body)
        assert (status, err["error"]["code"]) == (want, code), (path, body, err)
        if field is not None:
            assert err["error"]["details"]["field"] == field, (path, body, err)
    # A supervisor may read the organisation but not change it (refused by role before the body is read).
    status, err = await admin.call("POST", "/v1/crews", {"name": "san-9", "department": "sanitation"},
                                   token=world.supervisors["sanitation"])
    assert (status, err["error"]["code"]) == (403, "forbidden")
    status, err = await admin.call("GET", "/v1/users", token=world.supervisors["sanitation"])
    assert (status, err["error"]["code"]) == (403, "forbidden")
    assert await org_state(pool) == before
    refused = await refused_actions(pool)
    assert [a for _, a, _ in refused] == [
        "department_create_refused", "department_create_refused", "crew_create_refused", "crew_create_refused",
        "service_type_create_refused", "service_type_create_refused", "service_type_create_refused",
        "user_disable_refused", "user_rotate_token_refused"]
    assert refused[3][2].startswith("validation_failed: unknown department") and {a for a, _, _ in refused} == {"admin"}


async def test_retiring_a_crew_with_open_tickets_names_them_or_moves_them_with_to(
    admin: Api, server: Server, pool: asyncpg.Pool, world: World,
) -> None:
    recs = await make_tickets(pool, world, 3, crew="san-1")
    async with aiohttp.ClientSession() as http:
        dev = DeviceClient(http, server.url, world.device("san-1").token)
        await dev.pull()
        assert set(dev.replica.tickets) == {r.ticket.id for r in recs}
        before = await org_state(pool)
        status, err = await admin.call("POST", "/v1/crews/san-1/retire", {})
        assert (status, err["error"]["code"]) == (409, "conflict")
        assert err["error"]["details"]["count"] == 3
        assert {t["id"] for t in err["error"]["details"]["tickets"]} == {str(r.ticket.id) for r in recs}
        # --to must be another active crew of the same department
        for to in ("ss-1", "san-1", "nope"):
            status, err = await admin.call("POST", "/v1/crews/san-1/retire", {"to": to})
            assert (status, err["error"]["code"], err["error"]["details"]["field"]) == (422, "validation_failed", "to")
        assert await org_state(pool) == before

        status, done = await admin.call("POST", "/v1/crews/san-1/retire", {"to": "san-2"})
        assert status == 200 and done["active"] is False and done["moved_to"] == "san-2"
        assert sorted(done["moved"]) == sorted(str(r.ticket.id) for r in recs)
        # Through the assignment path: the old crew's device gets removals, the new crew's device the tickets.
        pages = await dev.pull()
        removals = [c for p in pages for c in p.changes if c.kind == "remove"]
        assert {(c.ticket_id, c.reason.value) for c in removals} == {(r.ticket.id, "reassigned") for r in recs}
        other = DeviceClient(http, server.url, world.device("san-2").token)
        await other.pull()
        assert {t.crew for t in other.replica.tickets.values()} == {"san-2"} and len(other.replica.tickets) == 3
    audit = await pool.fetch("SELECT action, ticket_id, reason FROM audit_log WHERE actor = 'admin' AND action <> "
                             "'crew_retire_refused' ORDER BY id")
    assert [(a["action"], a["reason"]) for a in audit] == [("assign", "crew san-1 retired")] * 3 + [("crew_retire", None)]
    # A retired crew takes no new work and no new devices; retiring again is a no-op.
    status, err = await admin.call("POST", "/v1/devices", {"crew": "san-1"})
    assert (status, err["error"]["code"]) == (422, "validation_failed")
    status, err = await admin.call("POST", f"/v1/tickets/{recs[0].ticket.id}/assign", {"crew": "san-1"})
    assert (status, err["error"]["code"]) == (422, "validation_failed")
    status, again = await admin.call("POST", "/v1/crews/san-1/retire", {})
    assert status == 200 and again["moved"] == []
    status, crews = await admin.call("GET", "/v1/crews")
    san1 = next(c for c in crews["crews"] if c["name"] == "san-1")
    assert san1["active"] is False and san1["retired_at"] is not None and san1["open_tickets"] == 0


async def test_disabling_and_rotating_staff_tokens(admin: Api, world: World, pool: asyncpg.Pool) -> None:
    old = world.supervisors["street_services"]
    status, rotated = await admin.call("POST", "/v1/users/sup-street_services/rotate-token", {})
    assert status == 200 and rotated["token"].startswith("fsu_") and rotated["department"] == "street_services"
    status, err = await admin.call("GET", "/v1/crews", token=old)
    assert (status, err["error"]["code"]) == (401, "unauthorized")
    status, _ = await admin.call("GET", "/v1/crews", token=rotated["token"])
    assert status == 200

    status, user = await admin.call("POST", "/v1/users/sup-street_services/disable", {})
    assert status == 200 and user["disabled_at"] is not None
    status, err = await admin.call("GET", "/v1/crews", token=rotated["token"])
    assert (status, err["error"]["code"]) == (401, "token_revoked")
    status, err = await admin.call("POST", "/v1/users/sup-street_services/rotate-token", {})
    assert (status, err["error"]["code"]) == (409, "conflict")  # a disabled account gets no new token
    status, body = await admin.call("GET", "/v1/users")
    listed = {u["name"]: u for u in body["users"]}
    assert set(listed) == {"admin", "sup-sanitation", "sup-street_services"}
    assert listed["sup-street_services"]["disabled_at"] is not None and listed["sup-sanitation"]["disabled_at"] is None
    assert "token" not in listed["admin"] and "token_hash" not in listed["admin"]
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log WHERE actor = 'admin' ORDER BY id")]
    assert actions == ["user_rotate_token", "user_disable", "user_rotate_token_refused"]
