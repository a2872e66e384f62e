"""`fieldsync department|crew|service-type|user` as an operator scripts them: --json output, refusals as one line on
stderr with exit 2 and nothing changed, retiring a crew naming its open tickets or moving them with --to."""

from __future__ import annotations

import json

import asyncpg

from tests.factories import World, make_tickets
from tests.test_cli import _run


async def test_organisation_commands_print_json_and_refuse_bad_input(db_dsn: str, pool: asyncpg.Pool, world: World) -> None:
    url = ("--database-url", db_dsn)
    code, out, err = await _run("department", "list", "--json", *url)
    assert code == 0, err
    assert [d["code"] for d in json.loads(out)["departments"]] == ["sanitation", "street_services"]
    code, out, err = await _run("service-type", "create", "weeds", "--name", "Weed Abatement", "--department",
                                "street_services", "--default-priority", "high", "--resolution-codes", "cut,sprayed",
                                "--json", *url)
    assert code == 0, err
    assert json.loads(out) == {"code": "weeds", "name": "Weed Abatement", "department": "street_services",
                               "default_priority": "high", "resolution_codes": ["cut", "sprayed"],
                               "reason_codes": json.loads(out)["reason_codes"]}
    code, out, err = await _run("service-type", "list", "--department", "street_services", "--json", *url)
    assert [s["code"] for s in json.loads(out)["service_types"]] == ["pothole_repair", "weeds"]

    before = await pool.fetchval("SELECT count(*) FROM audit_log WHERE action NOT LIKE '%refused'")
    for args, says in ((("crew", "create", "san-1", "--department", "sanitation"), "a crew named 'san-1' exists"),
                       (("crew", "create", "x-1", "--department", "parks"), "unknown department 'parks'"),
                       (("department", "create", "sanitation", "--name", "Again"), "a department with this code exists"),
                       (("service-type", "create", "litter", "--name", "Litter", "--department", "parks"),
                        "unknown department 'parks'"),
                       (("user", "disable", "admin"), "cannot disable the last active admin")):
        code, out, err = await _run(*args, "--json", *url)
        assert (code, out) == (2, ""), (args, err)
        assert err.count("\n") == 1 and says in err, (args, err)
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action NOT LIKE '%refused'") == before
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE '%refused' AND actor LIKE 'cli:%'") == 5

    recs = await make_tickets(pool, world, 2, crew="san-1")
    await pool.execute("UPDATE tickets SET sr_number = 'SR-' || left(id::text, 8) WHERE id = ANY($1::uuid[])",
                       [r.ticket.id for r in recs])
    srs = await pool.fetch("SELECT sr_number FROM tickets WHERE id = ANY($1::uuid[])", [r.ticket.id for r in recs])
    code, out, err = await _run("crew", "retire", "san-1", *url)
    assert code == 2 and "san-1' has 2 open tickets" in err and all(r["sr_number"] in err for r in srs), err
    code, out, err = await _run("crew", "retire", "san-1", "--to", "san-2", "--json", *url)
    assert code == 0, err
    done = json.loads(out)
    assert (done["crew"], done["active"], done["moved_to"]) == ("san-1", False, "san-2")
    assert sorted(done["moved"]) == sorted(str(r.ticket.id) for r in recs)
    code, out, err = await _run("crew", "list", "--department", "sanitation", "--json", *url)
    crews = {c["name"]: c for c in json.loads(out)["crews"]}
    assert (crews["san-1"]["active"], crews["san-1"]["open_tickets"], crews["san-2"]["open_tickets"]) == (False, 0, 2)

    code, out, err = await _run("user", "rotate-token", "sup-sanitation", "--json", *url)
    assert code == 0 and json.loads(out)["token"].startswith("fsu_")
    code, out, err = await _run("user", "disable", "sup-sanitation", *url)
    assert code == 0 and out.startswith("disabled: sup-sanitation at ")
    code, out, err = await _run("user", "list", "--json", *url)
    users = {u["name"]: u for u in json.loads(out)["users"]}
    assert users["sup-sanitation"]["disabled_at"] is not None and users["admin"]["disabled_at"] is None
