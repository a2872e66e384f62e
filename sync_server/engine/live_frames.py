"""What travels on a live socket and how it is addressed: positions, frames, subscribers, NOTIFY payloads.

Split from the hub (engine/live.py) so the fan-out loop reads on its own; see the hub's docstring for the position
rule (xid << 20 | rank, delivered only below the database watermark, I2).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgpack
import structlog
from aiohttp import web
from pydantic import ValidationError

from protocol import MSGPACK, encode
from protocol.live import LiveEvent
from protocol.models import Ticket

log = structlog.get_logger(__name__)

CHANNEL = "fieldsync_changes"
RANK_BITS = 20
RANK_MAX = (1 << RANK_BITS) - 1
PENDING_POLL = 0.02  # seconds between watermark checks while a notified change is not yet below it

# Close codes (the README's "Live feed" section lists them).
CLOSE_GOING_AWAY = 1001  # server shutting down: reconnect (to any process) and resume
CLOSE_TRY_AGAIN = 1013  # database unavailable while setting up the socket: reconnect with backoff
CLOSE_UNAUTHORIZED = 4001  # no valid token in time
CLOSE_REVOKED = 4003  # the device or user was revoked while connected
CLOSE_SLOW = 4008  # the client stopped reading (queue full for live_lag_timeout_s): reconnect and resume
CLOSE_BAD_REQUEST = 4400  # undecodable frame, wrong first message, or an admin without ?department=

# Frames are not written past this much unsent data in the transport: the rest waits in the bounded queue.
WRITE_LIMIT = 64 << 10

Key = tuple[int, int]


def encode_position(key: Key) -> int:
    """(xid, rank) as the wire integer; ranks beyond the field share its top value (see `decode_position`)."""
    return key[0] << RANK_BITS | min(key[1], RANK_MAX)


def decode_position(position: int) -> Key:
    """Inverse of encode_position."""
    return position >> RANK_BITS, position & RANK_MAX



async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` up to `seconds`; True if it was set.

    asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that races with the event being
    set, so a loop built on it can ignore shutdown and hang the app's cleanup (seen in the test suite).
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True

class Frame:
    """One message, encoded at most once per encoding however many sockets receive it."""

    __slots__ = ("model", "_bytes")

    def __init__(self, model: Any) -> None:
        self.model = model
        self._bytes: dict[str, bytes] = {}

    def data(self, media: str) -> bytes:
        """Encoded payload in `media`."""
        out = self._bytes.get(media)
        if out is None:
            out = self._bytes[media] = encode(self.model, media)
        return out


class Subscriber:
    """One live socket. Slots and a lazily created queue keep an idle socket to a few hundred bytes of our own."""

    __slots__ = ("ws", "transport", "media", "role", "crew_id", "department_id", "device_id", "user_id",
                 "pos", "queue", "closing", "poke_queued", "drained", "behind")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, media: str, role: str, *,
                 crew_id: int | None = None, department_id: int | None = None, device_id: str | None = None,
                 user_id: int | None = None) -> None:
        self.ws, self.transport, self.media, self.role = ws, transport, media, role
        self.crew_id, self.department_id, self.device_id, self.user_id = crew_id, department_id, device_id, user_id
        self.pos: Key = (0, 0)
        self.queue: deque[Frame] | None = None
        self.closing = False
        self.poke_queued = False
        self.drained: asyncio.Event | None = None
        self.behind = False  # dropped out of the live fan-out; a catch-up from the log is under way


@dataclass
class _Notice:
    """A parsed NOTIFY payload."""

    xid: int
    departments: set[int]
    crews: set[int] | None  # None: every crew


def parse_notice(payload: str) -> _Notice | None:
    """'<xid>;d=1,2;c=3,4' (c=* for all crews); anything else is ignored, since the log is the truth anyway."""
    try:
        head, *parts = payload.split(";")
        fields = dict(p.split("=", 1) for p in parts)
        ints = lambda s: {int(v) for v in s.split(",") if v}  # noqa: E731
        crews = None if fields.get("c") == "*" else ints(fields.get("c", ""))
        return _Notice(int(head), ints(fields.get("d", "")), crews)
    except ValueError:
        return None


class TicketEventFrame(Frame):
    """A `ticket_changed` event whose JSON is written around the stored canonical document (like a pull answer,
    api/splice.py): under a fleet's load, validating each document into a Ticket and dumping it again was half of
    the live reader's CPU. msgpack subscribers get the stored text parsed into the frame (not validated either)."""

    __slots__ = ("_position", "_ticket_id", "_doc", "_changed")

    def __init__(self, position: int, ticket_id: Any, doc: str, changed: list[str]) -> None:
        super().__init__(None)
        self._position, self._ticket_id, self._doc, self._changed = position, ticket_id, doc, changed

    def data(self, media: str) -> bytes:
        """Encoded payload in `media`; the JSON decodes to what encode(LiveEvent) gives, in LiveEvent's key order."""
        out = self._bytes.get(media)
        if out is not None:
            return out
        if media == MSGPACK:  # the stored text parsed, not validated: what a pull's stored doc_mp holds
            out = msgpack.packb({"type": "event", "position": self._position, "event": "ticket_changed",
                                 "ticket_id": str(self._ticket_id), "ticket": json.loads(self._doc),
                                 "changed": self._changed, "detail": {}}, use_bin_type=True)
        else:
            head = json.dumps({"type": "event", "position": self._position, "event": "ticket_changed",
                               "ticket_id": str(self._ticket_id)}, separators=(",", ":"), ensure_ascii=False)
            tail = json.dumps(self._changed, separators=(",", ":"), ensure_ascii=False)
            out = (head[:-1] + ',"ticket":' + self._doc + ',"changed":' + tail + ',"detail":{}}').encode("utf-8")
        self._bytes[media] = out
        return out


def event_frame(row: asyncpg.Record) -> Frame:
    """A log row as the supervisor's wire event."""
    position = encode_position((row["x"], row["rank"]))
    if row["src"] == 0:
        return TicketEventFrame(position, row["ticket_id"], row["doc"], list(row["changed"])[:64])
    else:
        kind = row["kind"]
        detail = {"conflict_id": row["id"], "kind": kind, "field": row["field"], "kept": row["kept"],
                  "discarded": row["discarded"], "detail": row["detail"], "crew_id": row["crew_id"],
                  "device_id": row["device_id"]}
        model = LiveEvent(type="event", position=position, ticket_id=row["ticket_id"],
                          event="late_report" if kind == "late_field_report" else "conflict", detail=detail)
    return Frame(model)


def _frame_or_none(row: asyncpg.Record) -> Frame | None:
    """A row the wire model refuses is logged and skipped: one bad document must not stall the feed for everyone."""
    try:
        return event_frame(row)
    except ValidationError:
        log.exception("live.bad_row", row_id=row["id"], src=row["src"])
        return None
