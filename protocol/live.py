"""Live-feed messages over `GET /v1/live`: pokes for devices, events for supervisors."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from .fields import BigInt, WireModel, WireUUID
from .models import Ticket

__all__ = [
    "LiveEvent",
    "LiveHello",
    "LiveMessage",
    "LivePoke",
    "LiveRefetch",
]

LiveScalar = str | int | float | bool | None
_Key = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class LiveHello(WireModel):
    """First client frame: authenticates the socket (browsers cannot set WS headers)."""

    type: Literal["hello"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    encoding: Literal["json", "msgpack"] = "json"
    after: BigInt | None = None


class LivePoke(WireModel):
    """The device's scope advanced past `watermark`: pull now instead of polling."""

    type: Literal["poke"]
    watermark: BigInt


class LiveEvent(WireModel):
    """One department event for supervisors; `position` lets a reconnect resume."""

    type: Literal["event"]
    position: BigInt
    event: Literal["ticket_changed", "conflict", "late_report"]
    ticket_id: WireUUID | None = None
    ticket: Ticket | None = None
    changed: Annotated[list[_Key], Field(max_length=64)] = Field(default_factory=list)
    detail: Annotated[dict[_Key, LiveScalar], Field(max_length=64)] = Field(
        default_factory=dict
    )


class LiveRefetch(WireModel):
    """The resume position is older than the retention window (or not one the server issued): reload state, the
    stream continues from now. (A consumer too slow to read is closed with 4008 instead and resumes by position.)"""

    type: Literal["refetch"]


LiveMessage = Annotated[
    LiveHello | LivePoke | LiveEvent | LiveRefetch, Field(discriminator="type")
]
