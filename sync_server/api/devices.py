"""Device self-service: token rotation with a grace window for the token used to ask."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from protocol import ErrorCode, ProtocolError, WireModel
from protocol.fields import WireDatetime
from sync_server.api.http import principal, respond
from sync_server.api.registry import route
from sync_server.auth import DEVICE_PREFIX, Role, bearer_token, hash_token, new_token
from sync_server.keys import AUTH_CACHE, POOL, SETTINGS
from sync_server.storage.credentials import rotate_device_token
from sync_server.storage.tickets import audit


class DeviceTokenRotated(WireModel):
    """The device's new token (shown once); the one it asked with keeps working until `previous_valid_until`."""

    device_id: str
    token: str
    previous_valid_until: WireDatetime


async def rotate(request: web.Request) -> web.Response:
    """POST /v1/devices/self/rotate: store the new token, keep the presented one for the grace window, audit it."""
    who = principal(request, Role.DEVICE)
    assert who.device_id is not None
    presented = hash_token(bearer_token(request.headers["Authorization"]) or "")
    token = new_token(DEVICE_PREFIX)
    grace = request.app[SETTINGS].device_token_grace_s
    async with request.app[POOL].acquire() as conn, conn.transaction():
        until: datetime | None = await rotate_device_token(conn, who.device_id, presented, hash_token(token), grace)
        if until is None:  # revoked or grace ended between authentication and now
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid token")
        await audit(conn, [("device", who.name, "device_token_rotated", None, who.department_id, None,
                            {"previous_valid_until": until.isoformat()}, None)])
    request.app[AUTH_CACHE].clear()  # a superseded token is refused at once here; other processes on its NOTIFY (within 1 s if they miss it)
    return respond(request, DeviceTokenRotated(device_id=who.device_id, token=token, previous_valid_until=until))


def setup(app: web.Application) -> None:
    """Register device self-service routes."""
    route(app, "POST", "/v1/devices/self/rotate", rotate, summary="Rotate this device's token (old one valid for "
          "device_token_grace_s)", roles=(Role.DEVICE.value,), response=DeviceTokenRotated, tags=("devices",))
