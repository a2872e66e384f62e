"""`fieldsync department|crew|service-type|user|admin ...`: set up a city from the shell, through the same audited
use cases as the admin API (engine/org.py), so a command and an API call leave identical audit rows."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from sync_server.auth import Role
from sync_server.cli_common import cli_principal, db_options, emit, json_arg, plain, run_use_case, table
from sync_server.runtime import CliError
from sync_server.settings import Settings



def _codes(text: str) -> list[str]:
    """A comma-separated code list, e.g. 'collected,partial'."""
    codes = [c.strip() for c in text.split(",") if c.strip()]
    if not codes:
        raise argparse.ArgumentTypeError("expected a comma-separated list of codes")
    return codes


def add_org_commands(sub: Any) -> None:
    """Register department, crew, service-type and admin commands on the top-level subparsers."""
    p = sub.add_parser("department", help="create and list departments")
    dsub = p.add_subparsers(dest="department_command", required=True, metavar="ACTION")
    c = dsub.add_parser("create", help="create a department")
    c.add_argument("code", help="lowercase slug, e.g. sanitation")
    c.add_argument("--name", required=True, help="display name, e.g. Sanitation")
    c.add_argument("--agency-code", help="MyLA311 owner code, e.g. BOS")
    c.set_defaults(func=cmd_department_create)
    ls = dsub.add_parser("list", help="list departments")
    ls.set_defaults(func=cmd_department_list)
    for q in (c, ls):
        json_arg(q)
        db_options(q)

    p = sub.add_parser("crew", help="create, list and retire crews")
    csub = p.add_subparsers(dest="crew_command", required=True, metavar="ACTION")
    c = csub.add_parser("create", help="create a crew in a department")
    c.add_argument("name", help="unique short name, e.g. san-ev")
    c.add_argument("--department", required=True, help="department code")
    c.add_argument("--display-name", help="human name, e.g. 'Sanitation East Valley'")
    c.set_defaults(func=cmd_crew_create)
    ls = csub.add_parser("list", help="list crews with device and open-ticket counts")
    ls.add_argument("--department", help="only this department")
    ls.set_defaults(func=cmd_crew_list)
    r = csub.add_parser("retire", help="retire a crew (refused while it has open tickets, unless --to moves them)")
    r.add_argument("name")
    r.add_argument("--to", metavar="CREW", help="move its open tickets to this crew of the same department first")
    r.set_defaults(func=cmd_crew_retire)
    for q in (c, ls, r):
        json_arg(q)
        db_options(q)

    p = sub.add_parser("service-type", help="create and list service types and their allowed codes")
    ssub = p.add_subparsers(dest="service_type_command", required=True, metavar="ACTION")
    c = ssub.add_parser("create", help="create a service type")
    c.add_argument("code", help="Open311 service_code slug, e.g. bulky_items")
    c.add_argument("--name", required=True, help="display name / MyLA311 RequestType, e.g. 'Bulky Items'")
    c.add_argument("--department", required=True, help="department code")
    c.add_argument("--default-priority", default="normal", choices=["low", "normal", "high", "urgent"])
    c.add_argument("--resolution-codes", type=_codes, help="comma-separated codes a crew may complete with (default: the standard list)")
    c.add_argument("--reason-codes", type=_codes, help="comma-separated codes for unable_to_complete/decline (default: the standard list)")
    c.set_defaults(func=cmd_service_type_create)
    ls = ssub.add_parser("list", help="list service types with their codes")
    ls.add_argument("--department", help="only this department")
    ls.set_defaults(func=cmd_service_type_list)
    for q in (c, ls):
        json_arg(q)
        db_options(q)

    p = sub.add_parser("admin", help="bootstrap admin accounts")
    asub = p.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    c = asub.add_parser("create", help="create an admin (applies migrations first) and print its token once")
    c.add_argument("--name", default="admin", help="account name (default: admin)")
    json_arg(c)
    db_options(c)
    c.set_defaults(func=cmd_admin_create)


def add_user_commands(usub: Any) -> None:
    """Register `user list|disable|rotate-token` next to the existing `user create`."""
    ls = usub.add_parser("list", help="list supervisor and admin accounts")
    ls.set_defaults(func=cmd_user_list)
    d = usub.add_parser("disable", help="disable an account; its token fails at once")
    d.add_argument("name")
    d.set_defaults(func=cmd_user_disable)
    r = usub.add_parser("rotate-token", help="issue a new token for an account (printed once); the old one stops working")
    r.add_argument("name")
    r.set_defaults(func=cmd_user_rotate_token)
    for q in (ls, d, r):
        json_arg(q)
        db_options(q)


# --------------------------------------------------------------------------------------------------- plumbing

def _dept(r: asyncpg.Record) -> dict[str, Any]:
    return {"code": r["code"], "name": r["name"], "agency_code": r["agency_code"], "created_at": plain(r["created_at"])}


def _stype(r: asyncpg.Record) -> dict[str, Any]:
    return {"code": r["code"], "name": r["name"], "department": r["department"], "default_priority": r["default_priority"],
            "resolution_codes": list(r["resolution_codes"]), "reason_codes": list(r["reason_codes"])}


def _user(r: asyncpg.Record) -> dict[str, Any]:
    return {"name": r["name"], "role": r["role"], "department": r["department"], "created_at": plain(r["created_at"]),
            "disabled_at": plain(r["revoked_at"])}


# --------------------------------------------------------------------------------------------------- commands

def cmd_department_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a department."""
    from sync_server.engine import org

    row = run_use_case(settings, lambda pool: org.create_department(pool, cli_principal(), args.code, args.name, args.agency_code))
    emit(args, _dept(row), f"department: {row['code']} ({row['name']})")
    return 0


def cmd_department_list(args: argparse.Namespace, settings: Settings) -> int:
    """List departments."""
    from sync_server.engine import org

    rows = [_dept(r) for r in run_use_case(settings, lambda pool: org.list_departments(pool, cli_principal()))]
    emit(args, {"departments": rows}, table(rows, ["code", "name", "agency_code"]))
    return 0


def cmd_crew_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a crew."""
    from sync_server.engine import org

    run_use_case(settings, lambda pool: org.create_crew(pool, cli_principal(), args.name, args.display_name, args.department))
    data = {"name": args.name, "display_name": args.display_name, "department": args.department, "active": True}
    emit(args, data, f"crew: {args.name} ({args.department})")
    return 0


def cmd_crew_list(args: argparse.Namespace, settings: Settings) -> int:
    """List crews with their device and open-ticket counts."""
    from sync_server.engine import supervise

    rows = run_use_case(settings, lambda pool: supervise.list_crews(pool, cli_principal()))
    crews = [{"name": r["name"], "display_name": r["display_name"], "department": r["department"], "active": r["active"],
              "retired_at": plain(r["retired_at"]), "devices": r["devices"], "open_tickets": r["open_tickets"]}
             for r in rows if args.department is None or r["department"] == args.department]
    emit(args, {"crews": crews}, table(crews, ["name", "department", "active", "devices", "open_tickets", "display_name"]))
    return 0


def cmd_crew_retire(args: argparse.Namespace, settings: Settings) -> int:
    """Retire a crew, optionally moving its open tickets first."""
    from protocol import ErrorCode, ProtocolError
    from sync_server.engine import org

    try:
        done = run_use_case(settings, lambda pool: org.retire_crew(pool, cli_principal(), args.name, args.to))
    except ProtocolError as err:
        if err.code is ErrorCode.CONFLICT and "tickets" in err.details:
            named = ", ".join(t["sr_number"] or t["id"] for t in err.details["tickets"][:10])
            more = err.details["count"] - min(10, len(err.details["tickets"]))
            raise CliError(f"{err.message}: {named}{f' and {more} more' if more > 0 else ''}") from None
        raise
    data = {"crew": done.crew, "department": done.department, "active": False, "moved_to": done.to,
            "moved": [str(t) for t in done.moved]}
    emit(args, data, f"retired: {done.crew}" + (f" ({len(done.moved)} open tickets moved to {done.to})" if done.moved else ""))
    return 0


def cmd_service_type_create(args: argparse.Namespace, settings: Settings) -> int:
    """Create a service type with its allowed codes."""
    from sync_server.engine import org

    new = org.NewServiceType(code=args.code, name=args.name, department=args.department,
                             default_priority=args.default_priority, resolution_codes=args.resolution_codes,
                             reason_codes=args.reason_codes)
    row = run_use_case(settings, lambda pool: org.create_service_type(pool, cli_principal(), new))
    emit(args, _stype(row), f"service type: {row['code']} ({row['name']}, {row['department']})")
    return 0


def cmd_service_type_list(args: argparse.Namespace, settings: Settings) -> int:
    """List service types and their codes."""
    from sync_server.engine import org

    rows = [_stype(r) for r in run_use_case(settings, lambda pool: org.list_service_types(pool, cli_principal(), args.department))]
    shown = [{**r, "resolution_codes": ",".join(r["resolution_codes"]), "reason_codes": ",".join(r["reason_codes"])} for r in rows]
    emit(args, {"service_types": rows}, table(shown, ["code", "name", "department", "default_priority", "resolution_codes"]))
    return 0


def cmd_user_list(args: argparse.Namespace, settings: Settings) -> int:
    """List staff accounts."""
    from sync_server.engine import org

    rows = [_user(r) for r in run_use_case(settings, lambda pool: org.list_users(pool, cli_principal()))]
    emit(args, {"users": rows}, table(rows, ["name", "role", "department", "created_at", "disabled_at"]))
    return 0


def cmd_user_disable(args: argparse.Namespace, settings: Settings) -> int:
    """Disable a staff account."""
    from sync_server.engine import org

    row = run_use_case(settings, lambda pool: org.disable_user(pool, cli_principal(), args.name))
    emit(args, _user(row), f"disabled: {row['name']} at {row['revoked_at'].isoformat()}")
    return 0


def cmd_user_rotate_token(args: argparse.Namespace, settings: Settings) -> int:
    """Rotate a staff account's token; the new one is printed once."""
    from sync_server.engine import org

    row, token = run_use_case(settings, lambda pool: org.rotate_user_token(pool, cli_principal(), args.name))
    emit(args, {"name": row["name"], "role": row["role"], "department": row["department"], "token": token},
          f"user: {row['name']}\ntoken: {token}")
    return 0


def cmd_admin_create(args: argparse.Namespace, settings: Settings) -> int:
    """Bootstrap an admin on a fresh (or any) database: migrate, create, print the token once on stdout."""
    from sync_server.engine import supervise

    token, _ = run_use_case(settings, lambda pool: supervise.add_user(pool, cli_principal(), args.name, Role.ADMIN, None),
                    migrate_first=True)
    emit(args, {"name": args.name, "role": "admin", "token": token}, f"user: {args.name}\nrole: admin\ntoken: {token}")
    return 0
