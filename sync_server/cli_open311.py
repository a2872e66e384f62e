"""`fieldsync api-key|dispatch-rule|open311-mirror`: Open311 from the shell, through the same audited use cases as
the admin API (sync_server/open311/manage.py), plus the mirror of an upstream Open311 server."""

from __future__ import annotations

import argparse
import json
from typing import Any

import asyncpg

from sync_server.runtime import CliError
from sync_server.cli_common import cli_principal, db_options, emit, json_arg, out, plain, run_use_case, table
from sync_server.settings import Settings


def _key(r: asyncpg.Record) -> dict[str, Any]:
    return {k: plain(r[k]) for k in ("name", "rate_per_minute", "created_at", "created_by", "revoked_at",
                                      "created_requests")}


def _rule(r: asyncpg.Record) -> dict[str, Any]:
    return {"id": r["id"], "position": r["position"], "service_type": r["service_type"],
            "council_district": r["council_district"], "zip": r["zip"],
            "polygon": json.loads(r["polygon"]) if r["polygon"] is not None else None,
            "routing_area": r["routing_area"], "crew": r["crew"]}


def add_open311_commands(sub: Any) -> None:
    """Register api-key, dispatch-rule and open311-mirror on the top-level subparsers."""
    p = sub.add_parser("api-key", help="issue, list and revoke Open311 API keys (POST requests)")
    ksub = p.add_subparsers(dest="api_key_command", required=True, metavar="ACTION")
    i = ksub.add_parser("issue", help="issue a key (printed once; only its hash is stored)")
    i.add_argument("name", help="who holds it, e.g. citizen-app")
    i.add_argument("--rate", type=int, default=60, help="POST requests per minute, shared by all processes (default 60)")
    i.set_defaults(func=cmd_key_issue)
    ls = ksub.add_parser("list", help="list keys with how many requests each created")
    ls.set_defaults(func=cmd_key_list)
    r = ksub.add_parser("revoke", help="revoke a key; its next POST answers 403")
    r.add_argument("name")
    r.set_defaults(func=cmd_key_revoke)
    for q in (i, ls, r):
        json_arg(q)
        db_options(q)

    p = sub.add_parser("dispatch-rule", help="add, list and delete rules routing new requests to crews")
    rsub = p.add_subparsers(dest="rule_command", required=True, metavar="ACTION")
    a = rsub.add_parser("add", help="route requests (of a service type) in an area to a crew; first match by position wins")
    a.add_argument("--crew", required=True)
    a.add_argument("--service-type", help="service code; omitted: any of the crew's department")
    a.add_argument("--position", type=int, default=100, help="rules are tried in ascending position (default 100)")
    area = a.add_mutually_exclusive_group()
    area.add_argument("--district", type=int, help="council district")
    area.add_argument("--zip", help="5-digit ZIP code")
    area.add_argument("--polygon", help='JSON [[lon, lat], ...] (3..1000 points)')
    area.add_argument("--routing-area", help="the city's routing area (MyLA311 AssignTo), for CSV imports")
    a.set_defaults(func=cmd_rule_add)
    ls = rsub.add_parser("list", help="list rules in evaluation order")
    ls.set_defaults(func=cmd_rule_list)
    d = rsub.add_parser("delete", help="delete a rule by id")
    d.add_argument("id", type=int)
    d.set_defaults(func=cmd_rule_delete)
    for q in (a, ls, d):
        json_arg(q)
        db_options(q)

    m = sub.add_parser("open311-mirror", help="pull new and updated requests from an upstream Open311 server")
    m.add_argument("--endpoint", required=True, help="GeoReport v2 base URL, e.g. https://311.example.gov/open311/v2")
    m.add_argument("--jurisdiction", help="jurisdiction_id to send upstream")
    m.add_argument("--api-key", help="api_key to send upstream (if it requires one for reads)")
    m.add_argument("--interval", type=float, default=60.0, help="seconds between runs (default 60)")
    m.add_argument("--once", action="store_true", help="one run, then exit (cron)")
    m.set_defaults(func=cmd_mirror)
    json_arg(m)
    db_options(m)


def cmd_key_issue(args: argparse.Namespace, settings: Settings) -> int:
    """Issue an API key."""
    from sync_server.open311 import manage

    row, key = run_use_case(settings, lambda pool: manage.issue_api_key(pool, cli_principal(), args.name, args.rate))
    emit(args, {**_key(row), "api_key": key}, f"api key {row['name']} ({row['rate_per_minute']}/min): {key}")
    return 0


def cmd_key_list(args: argparse.Namespace, settings: Settings) -> int:
    """List API keys."""
    from sync_server.open311 import manage

    rows = [_key(r) for r in run_use_case(settings, lambda pool: manage.list_api_keys(pool, cli_principal()))]
    emit(args, {"api_keys": rows}, table(rows, ["name", "rate_per_minute", "created_requests", "revoked_at"]))
    return 0


def cmd_key_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke an API key."""
    from sync_server.open311 import manage

    row = run_use_case(settings, lambda pool: manage.revoke_api_key(pool, cli_principal(), args.name))
    emit(args, _key(row), f"api key {row['name']} revoked")
    return 0


def cmd_rule_add(args: argparse.Namespace, settings: Settings) -> int:
    """Add a dispatch rule."""
    from sync_server.open311 import manage

    polygon = None
    if args.polygon is not None:
        try:
            polygon = json.loads(args.polygon)
        except ValueError:
            raise CliError("--polygon must be JSON like [[-118.3, 34.0], [-118.2, 34.0], [-118.2, 34.1]]") from None
    spec = {"position": args.position, "service_type": args.service_type, "council_district": args.district,
            "zip": args.zip, "polygon": polygon, "routing_area": args.routing_area, "crew": args.crew}
    row = run_use_case(settings, lambda pool: manage.add_rule(pool, cli_principal(), spec))
    emit(args, _rule(row), f"dispatch rule {row['id']}: {row['service_type'] or 'any type'} -> {row['crew']}")
    return 0


def cmd_rule_list(args: argparse.Namespace, settings: Settings) -> int:
    """List dispatch rules."""
    from sync_server.open311 import manage

    rows = [_rule(r) for r in run_use_case(settings, lambda pool: manage.list_rules(pool, cli_principal()))]
    emit(args, {"rules": rows}, table(rows, ["id", "position", "service_type", "council_district", "zip",
                                                "routing_area", "crew"]))
    return 0


def cmd_rule_delete(args: argparse.Namespace, settings: Settings) -> int:
    """Delete a dispatch rule."""
    from sync_server.open311 import manage

    row = run_use_case(settings, lambda pool: manage.delete_rule(pool, cli_principal(), args.id))
    emit(args, _rule(row), f"dispatch rule {row['id']} deleted")
    return 0


def cmd_mirror(args: argparse.Namespace, settings: Settings) -> int:
    """Mirror an upstream Open311 server (once, or every --interval seconds until interrupted)."""
    from sync_server.open311 import mirror

    stats = run_use_case(settings, lambda pool: mirror.run(
        pool, args.endpoint, sr_format=settings.open311_sr_format, jurisdiction=args.jurisdiction,
        api_key=args.api_key, interval=args.interval, once=args.once))
    data = {"created": stats.created, "updated": stats.updated, "closed": stats.closed, "unchanged": stats.unchanged,
            "skipped": stats.skipped,
            "pages": stats.pages, "position": plain(stats.position)}
    out(json.dumps(data) if args.json else
         f"mirrored {args.endpoint}: {stats.created} new, {stats.updated} updated ({stats.closed} closed), "
         f"{stats.unchanged} unchanged, "
         f"skipped {stats.skipped or 0}; position {data['position']}")
    return 0
