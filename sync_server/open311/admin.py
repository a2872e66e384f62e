"""Admin API for Open311 under /v1 (bearer tokens, FieldSync's error envelope): API keys, dispatch rules and the
Open311 face of service types. Registered with their models, so /openapi.json describes them."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web

from protocol import ErrorCode, ProtocolError
from sync_server.api.http import principal, read_model, respond
from sync_server.api.org import admin_only
from sync_server.api.params import ParamInt, ParamModel, read_path
from sync_server.api.registry import route
from sync_server.api.schemas import TicketPath
from sync_server.auth import Role
from sync_server.domain.dispatch import Rule
from sync_server.engine import supervise
from sync_server.keys import POOL
from sync_server.open311 import manage, store
from sync_server.open311.admin_schemas import (
    ApiKeyInfo,
    ApiKeyList,
    CreateRuleRequest,
    IssueApiKeyRequest,
    IssuedApiKey,
    Open311Intake,
    Open311ServiceConfig,
    Open311ServiceInfo,
    RuleInfo,
    RuleList,
)

TAGS = ("open311",)


def key_info(r: asyncpg.Record) -> dict[str, Any]:
    """Fields of a key row (never its hash)."""
    return {k: r[k] for k in ("name", "rate_per_minute", "created_at", "created_by", "revoked_at", "created_requests")}


def rule_info(r: asyncpg.Record) -> RuleInfo:
    """Wire form of a rule row."""
    rule: Rule = store.to_rule(r)
    return RuleInfo(id=r["id"], position=r["position"], service_type=r["service_type"], area=rule.area_kind.value,
                    council_district=r["council_district"], zip=r["zip"],
                    polygon=json.loads(r["polygon"]) if r["polygon"] is not None else None,
                    routing_area=r["routing_area"], crew=r["crew"], created_by=r["created_by"],
                    created_at=r["created_at"])


def config_info(r: asyncpg.Record) -> Open311ServiceInfo:
    """Wire form of a service type's Open311 configuration."""
    return Open311ServiceInfo(code=r["code"], description=r["open311_description"], group=r["open311_group"],
                              keywords=list(r["open311_keywords"]), attributes=json.loads(r["attributes"]),
                              status_notes=json.loads(r["status_notes"]))


async def issue_key(request: web.Request) -> web.Response:
    """POST /v1/api-keys."""
    who = await admin_only(request, "api_key_issue")
    body = await read_model(request, IssueApiKeyRequest)
    row, key = await manage.issue_api_key(request.app[POOL], who, body.name, body.rate_per_minute)
    return respond(request, IssuedApiKey(**key_info(row), api_key=key), 201)


async def list_keys(request: web.Request) -> web.Response:
    """GET /v1/api-keys."""
    who = await admin_only(request, "api_key_list")
    rows = await manage.list_api_keys(request.app[POOL], who)
    return respond(request, ApiKeyList(api_keys=[ApiKeyInfo(**key_info(r)) for r in rows]))


async def revoke_key(request: web.Request) -> web.Response:
    """POST /v1/api-keys/{name}/revoke."""
    who = await admin_only(request, "api_key_revoke")
    row = await manage.revoke_api_key(request.app[POOL], who, request.match_info["name"])
    return respond(request, ApiKeyInfo(**key_info(row)))


async def add_rule(request: web.Request) -> web.Response:
    """POST /v1/dispatch-rules."""
    who = await admin_only(request, "dispatch_rule_add")
    body = await read_model(request, CreateRuleRequest)
    row = await manage.add_rule(request.app[POOL], who, body.model_dump(mode="json"))
    return respond(request, rule_info(row), 201)


async def list_rules(request: web.Request) -> web.Response:
    """GET /v1/dispatch-rules."""
    who = await admin_only(request, "dispatch_rule_list")
    rows = await manage.list_rules(request.app[POOL], who)
    return respond(request, RuleList(rules=[rule_info(r) for r in rows]))


class RulePath(ParamModel):
    """A dispatch rule id in the path: an integer column (int4), so a larger number names no rule (404), never a
    500 from the driver (a bigint bound let 2**31..2**63-1 through)."""

    id: ParamInt(1, 2**31 - 1)  # type: ignore[valid-type]


async def delete_rule(request: web.Request) -> web.Response:
    """DELETE /v1/dispatch-rules/{id}."""
    who = await admin_only(request, "dispatch_rule_delete")
    row = await manage.delete_rule(request.app[POOL], who, read_path(request, RulePath).id)
    return respond(request, rule_info(row))


async def intake_details(request: web.Request) -> web.Response:
    """GET /v1/tickets/{id}/open311: the reporter's data, for staff of the ticket's department (others: 404, I3)."""
    who = principal(request, Role.SUPERVISOR, Role.ADMIN)
    ticket_id = read_path(request, TicketPath).id
    async with request.app[POOL].acquire() as conn:
        row = await store.intake_details(conn, ticket_id)
    if row is None or not supervise.visible(who, row["department_id"]):
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such ticket")
    return respond(request, Open311Intake(
        service_request_id=row["service_request_id"], api_key=row["api_key"], reporter=json.loads(row["reporter"]),
        media_url=row["media_url"], attributes=json.loads(row["attributes"]), created_at=row["created_at"]))


async def configure_service(request: web.Request) -> web.Response:
    """PUT /v1/service-types/{code}/open311."""
    who = await admin_only(request, "service_type_open311")
    body = await read_model(request, Open311ServiceConfig)
    row = await manage.configure_service(request.app[POOL], who, request.match_info["code"],
                                         body.model_dump(mode="json", exclude_none=True))
    return respond(request, config_info(row))


def setup(app: web.Application) -> None:
    """Register the Open311 admin routes."""
    admin = (Role.ADMIN.value,)
    route(app, "POST", "/v1/api-keys", issue_key, summary="Issue an Open311 API key; the key is shown once (admin only)",
          roles=admin, request=IssueApiKeyRequest, response=IssuedApiKey, status=201, tags=TAGS)
    route(app, "GET", "/v1/api-keys", list_keys, summary="Open311 API keys with their request counts (admin only)",
          roles=admin, response=ApiKeyList, tags=TAGS)
    route(app, "POST", "/v1/api-keys/{name}/revoke", revoke_key,
          summary="Revoke an Open311 API key; its next POST answers 403 (admin only)", roles=admin,
          response=ApiKeyInfo, tags=TAGS)
    route(app, "POST", "/v1/dispatch-rules", add_rule,
          summary="Add a dispatch rule routing new requests by service type and area to a crew (admin only)",
          roles=admin, request=CreateRuleRequest, response=RuleInfo, status=201, tags=TAGS)
    route(app, "GET", "/v1/dispatch-rules", list_rules, summary="Dispatch rules in evaluation order (admin only)",
          roles=admin, response=RuleList, tags=TAGS)
    route(app, "DELETE", "/v1/dispatch-rules/{id}", delete_rule, summary="Delete a dispatch rule (admin only)",
          roles=admin, response=RuleInfo, tags=TAGS, path_model=RulePath)
    route(app, "GET", "/v1/tickets/{id:[0-9a-fA-F-]+}/open311", intake_details,
          summary="What a resident's app sent with an Open311 request (contact data, media_url, attributes, key); "
                  "staff of the ticket's department only", roles=(Role.SUPERVISOR.value, Role.ADMIN.value),
          response=Open311Intake, tags=TAGS, path_model=TicketPath)
    route(app, "PUT", "/v1/service-types/{code}/open311", configure_service,
          summary="Set a service type's Open311 description, group, keywords, attributes and public status notes "
                  "(admin only)", roles=admin, request=Open311ServiceConfig, response=Open311ServiceInfo, tags=TAGS)
