"""Organisation API: departments, crews, service types and staff accounts. Admins change, staff read their scope."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from sync_server.api.http import principal, read_model, respond
from sync_server.api.org_schemas import (
    CreateCrewRequest,
    CreateDepartmentRequest,
    CreateServiceTypeRequest,
    DepartmentInfo,
    DepartmentList,
    RetireCrewRequest,
    RetiredCrew,
    RotatedToken,
    ServiceTypeInfo,
    ServiceTypeList,
    ServiceTypeQuery,
    UserInfo,
    UserList,
)
from sync_server.api.registry import route
from sync_server.api.schemas import CrewInfo, read_query
from protocol import ErrorCode, ProtocolError
from sync_server.auth import Principal, Role
from sync_server.engine import org, supervise
from sync_server.keys import CODES, POOL, PRINCIPAL

STAFF = (Role.SUPERVISOR, Role.ADMIN)
TAGS = ("organisation",)


def department_info(r: asyncpg.Record) -> DepartmentInfo:
    """Wire form of a department row."""
    return DepartmentInfo(code=r["code"], name=r["name"], agency_code=r["agency_code"], created_at=r["created_at"])


def service_type_info(r: asyncpg.Record) -> ServiceTypeInfo:
    """Wire form of a service type row."""
    return ServiceTypeInfo(code=r["code"], name=r["name"], department=r["department"],
                           default_priority=r["default_priority"], resolution_codes=list(r["resolution_codes"]),
                           reason_codes=list(r["reason_codes"]))


def user_info(r: asyncpg.Record) -> UserInfo:
    """Wire form of a user row (never the token hash)."""
    return UserInfo(name=r["name"], role=r["role"], department=r["department"], created_at=r["created_at"],
                    disabled_at=r["revoked_at"])


def crew_info(r: asyncpg.Record | dict[str, Any]) -> CrewInfo:
    """Wire form of a crew row with its counts."""
    return CrewInfo(**{k: r[k] for k in CrewInfo.model_fields})


async def admin_only(request: web.Request, action: str) -> Principal:
    """403 before the body is read for anyone but an admin; the attempt is audited like any refused change."""
    who: Principal = request[PRINCIPAL]
    if who.role is not Role.ADMIN:
        err = ProtocolError(ErrorCode.FORBIDDEN, "only an admin may change the organisation")
        await org.record_refusal(request.app[POOL], who, action, {"path": request.path}, err)
        raise err
    return who


async def list_departments(request: web.Request) -> web.Response:
    """GET /v1/departments."""
    who = principal(request, *STAFF)
    rows = await org.list_departments(request.app[POOL], who)
    return respond(request, DepartmentList(departments=[department_info(r) for r in rows]))


async def create_department(request: web.Request) -> web.Response:
    """POST /v1/departments."""
    who = await admin_only(request, "department_create")
    body = await read_model(request, CreateDepartmentRequest)
    row = await org.create_department(request.app[POOL], who, body.code, body.name, body.agency_code)
    return respond(request, department_info(row), 201)


async def create_crew(request: web.Request) -> web.Response:
    """POST /v1/crews."""
    who = await admin_only(request, "crew_create")
    body = await read_model(request, CreateCrewRequest)
    pool = request.app[POOL]
    await org.create_crew(pool, who, body.name, body.display_name, body.department)
    rows = await supervise.list_crews(pool, who)
    return respond(request, crew_info(next(r for r in rows if r["name"] == body.name)), 201)


async def retire_crew(request: web.Request) -> web.Response:
    """POST /v1/crews/{name}/retire."""
    who = await admin_only(request, "crew_retire")
    body = await read_model(request, RetireCrewRequest)
    done = await org.retire_crew(request.app[POOL], who, request.match_info["name"], body.to)
    return respond(request, RetiredCrew(crew=done.crew, department=done.department, moved_to=done.to,
                                        moved=done.moved))


async def list_service_types(request: web.Request) -> web.Response:
    """GET /v1/service-types."""
    who = principal(request, *STAFF)
    q = read_query(request, ServiceTypeQuery)
    rows = await org.list_service_types(request.app[POOL], who, q.department)
    return respond(request, ServiceTypeList(service_types=[service_type_info(r) for r in rows]))


async def create_service_type(request: web.Request) -> web.Response:
    """POST /v1/service-types."""
    who = await admin_only(request, "service_type_create")
    body = await read_model(request, CreateServiceTypeRequest)
    row = await org.create_service_type(request.app[POOL], who, org.NewServiceType(
        code=body.code, name=body.name, department=body.department, default_priority=body.default_priority,
        resolution_codes=body.resolution_codes, reason_codes=body.reason_codes))
    request.app[CODES].clear()  # never stale (codes are fixed at creation), but a new type must not wait for a miss
    return respond(request, service_type_info(row), 201)


async def list_users(request: web.Request) -> web.Response:
    """GET /v1/users."""
    who = principal(request, Role.ADMIN)
    rows = await org.list_users(request.app[POOL], who)
    return respond(request, UserList(users=[user_info(r) for r in rows]))


async def disable_user(request: web.Request) -> web.Response:
    """POST /v1/users/{name}/disable."""
    who = await admin_only(request, "user_disable")
    row = await org.disable_user(request.app[POOL], who, request.match_info["name"])
    return respond(request, user_info(row))


async def rotate_token(request: web.Request) -> web.Response:
    """POST /v1/users/{name}/rotate-token."""
    who = await admin_only(request, "user_rotate_token")
    row, token = await org.rotate_user_token(request.app[POOL], who, request.match_info["name"])
    return respond(request, RotatedToken(name=row["name"], role=row["role"], department=row["department"], token=token))


def setup(app: web.Application) -> None:
    """Register the organisation routes."""
    staff = tuple(r.value for r in STAFF)
    admin = (Role.ADMIN.value,)
    route(app, "GET", "/v1/departments", list_departments, summary="Departments (admins: all; others: their own)",
          roles=staff, response=DepartmentList, tags=TAGS)
    route(app, "POST", "/v1/departments", create_department, summary="Create a department (admin only)",
          roles=admin, request=CreateDepartmentRequest, response=DepartmentInfo, status=201, tags=TAGS)
    route(app, "POST", "/v1/crews", create_crew, summary="Create a crew in a department (admin only)",
          roles=admin, request=CreateCrewRequest, response=CrewInfo, status=201, tags=TAGS)
    route(app, "POST", "/v1/crews/{name}/retire", retire_crew,
          summary="Retire a crew; open tickets refuse it (409 naming them) unless `to` names a crew to move them to",
          roles=admin, request=RetireCrewRequest, response=RetiredCrew, tags=TAGS)
    route(app, "GET", "/v1/service-types", list_service_types,
          summary="Service types with their allowed resolution and reason codes", roles=staff,
          query=ServiceTypeQuery, response=ServiceTypeList, tags=TAGS)
    route(app, "POST", "/v1/service-types", create_service_type, summary="Create a service type (admin only)",
          roles=admin, request=CreateServiceTypeRequest, response=ServiceTypeInfo, status=201, tags=TAGS)
    route(app, "GET", "/v1/users", list_users, summary="Supervisor and admin accounts (admin only)",
          roles=admin, response=UserList, tags=TAGS)
    route(app, "POST", "/v1/users/{name}/disable", disable_user,
          summary="Disable an account; its token answers 401 token_revoked from now on (admin only)",
          roles=admin, response=UserInfo, tags=TAGS)
    route(app, "POST", "/v1/users/{name}/rotate-token", rotate_token,
          summary="Issue a new token for an account, shown once; the old token stops working (admin only)",
          roles=admin, response=RotatedToken, tags=TAGS)
