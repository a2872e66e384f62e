"""Crews, devices and users: listing and enrolment for supervisors (own department) and admins, user creation for admins."""

from __future__ import annotations

from aiohttp import web

from sync_server.api.http import principal, read_model, respond
from sync_server.api.registry import route
from sync_server.api.schemas import (
    CreatedUser,
    CreateUserRequest,
    CrewInfo,
    CrewList,
    DeviceInfo,
    DeviceList,
    DeviceListQuery,
    EnrolledDevice,
    EnrollDeviceRequest,
    read_query,
)
from sync_server.auth import Role
from sync_server.engine import supervise
from sync_server.keys import AUTH_CACHE, POOL

STAFF = (Role.SUPERVISOR, Role.ADMIN)
TAGS = ("admin",)
_DEVICE_FIELDS = ("id", "crew", "department", "label", "enrolled_at", "last_seen_at", "revoked_at")


async def list_crews(request: web.Request) -> web.Response:
    """GET /v1/crews."""
    who = principal(request, *STAFF)
    rows = await supervise.list_crews(request.app[POOL], who)
    return respond(request, CrewList(crews=[CrewInfo(**{k: r[k] for k in CrewInfo.model_fields}) for r in rows]))


async def list_devices(request: web.Request) -> web.Response:
    """GET /v1/devices."""
    who = principal(request, *STAFF)
    q = read_query(request, DeviceListQuery)
    rows = await supervise.list_devices(request.app[POOL], who, q.crew)
    return respond(request, DeviceList(devices=[DeviceInfo(**{k: r[k] for k in _DEVICE_FIELDS}) for r in rows]))


async def enroll_device(request: web.Request) -> web.Response:
    """POST /v1/devices."""
    who = principal(request, *STAFF)
    body = await read_model(request, EnrollDeviceRequest)
    device_id, token, crew = await supervise.enroll(request.app[POOL], who, body.crew, body.label)
    return respond(request, EnrolledDevice(device_id=device_id, token=token, crew=crew), 201)


async def revoke_device(request: web.Request) -> web.Response:
    """POST /v1/devices/{id}/revoke."""
    who = principal(request, *STAFF)
    row = await supervise.revoke(request.app[POOL], who, request.match_info["id"])
    request.app[AUTH_CACHE].clear()  # refused at once here; other processes on its NOTIFY (within 1 s if they miss it)
    return respond(request, DeviceInfo(**{k: row[k] for k in _DEVICE_FIELDS}))


async def create_user(request: web.Request) -> web.Response:
    """POST /v1/users."""
    who = principal(request, Role.ADMIN)
    body = await read_model(request, CreateUserRequest)
    token, dept = await supervise.add_user(request.app[POOL], who, body.name, Role(body.role), body.department)
    return respond(request, CreatedUser(name=body.name, role=body.role, department=dept, token=token), 201)


def setup(app: web.Application) -> None:
    """Register crew, device and user routes."""
    staff = tuple(r.value for r in STAFF)
    route(app, "GET", "/v1/crews", list_crews, summary="Crews with device and open-ticket counts",
          roles=staff, response=CrewList, tags=TAGS)
    route(app, "GET", "/v1/devices", list_devices, summary="Enrolled devices (never token hashes)",
          roles=staff, query=DeviceListQuery, response=DeviceList, tags=TAGS)
    route(app, "POST", "/v1/devices", enroll_device, summary="Enrol a device to a crew; the token is shown once",
          roles=staff, request=EnrollDeviceRequest, response=EnrolledDevice, status=201, tags=TAGS)
    route(app, "POST", "/v1/devices/{id}/revoke", revoke_device, summary="Revoke a device; its token fails at once (other server processes drop it on the NOTIFY, within 1 s without it)",
          roles=staff, response=DeviceInfo, tags=TAGS)
    route(app, "POST", "/v1/users", create_user, summary="Create a supervisor or admin (admin only)",
          roles=(Role.ADMIN.value,), request=CreateUserRequest, response=CreatedUser, status=201, tags=TAGS)
