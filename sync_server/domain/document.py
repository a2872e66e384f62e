"""A ticket's wire document rendered once: canonical JSON text, msgpack bytes and hash, stored beside the ticket row.

Pure (no I/O). The canonical bytes are `protocol.canonical.canonical_doc_bytes` (the bytes the scope checksum hashes);
the msgpack bytes encode the same document with the same key and child order, so a pull can splice either form into
its response without decoding it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import msgpack  # no stubs or py.typed upstream
import orjson

from protocol import Ticket
from protocol.canonical import canonical_doc_bytes
from protocol.fields import format_datetime


# not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs several times a plain one's, and a
# push builds one of these per ticket or per mutation
@dataclass(slots=True)
class Rendered:
    """The stored forms of one ticket document: `json` is the canonical text, `hash` its SHA-256 (I4). `exact`: the
    document's own key and child order is the canonical one, so `json` and `mp` are also exactly what encoding the
    document as it stands gives (an answer may copy them instead of encoding it again)."""

    json: str
    mp: bytes
    hash: bytes
    exact: bool = False


class RenderedDoc(dict[str, Any]):
    """A ticket document carried with its exact rendering: equal to, and encoded (by orjson, json and msgpack) like,
    the plain document; a writer that knows the type copies `rendered.json` / `rendered.mp` instead."""

    __slots__ = ("rendered",)

    def __init__(self, doc: dict[str, Any], rendered: Rendered) -> None:
        super().__init__(doc)
        self.rendered = rendered


def render(doc: dict[str, Any]) -> Rendered:
    """Canonical text, msgpack bytes and hash of a JSON-mode ticket document, computed once per change."""
    raw = canonical_doc_bytes(doc)
    try:  # the document as it stands, in its own order: the same bytes when its order is the canonical one
        exact = orjson.dumps(doc) == raw
    except TypeError:  # orjson.JSONEncodeError: a value it does not write (an integer beyond 64 bits)
        exact = False
    if exact:
        # the canonical text parses back to this very document (JSON types only, same order, floats round-trip), so
        # packing the document itself gives the bytes packing the parsed text would
        packed: bytes = msgpack.packb(doc, use_bin_type=True)
        return Rendered(raw.decode("utf-8"), packed, hashlib.sha256(raw).digest(), True)
    # The canonical text parsed back is the document with children sorted and keys sorted at every level, the order
    # the msgpack form lists them in, with the same values (floats round-trip exactly); orjson parses it faster than
    # Python can re-sort the dict.
    try:
        ordered = orjson.loads(raw)
    except orjson.JSONDecodeError:  # an integer beyond 64 bits: the standard library parses it alike
        ordered = json.loads(raw)
    packed = msgpack.packb(ordered, use_bin_type=True)
    return Rendered(raw.decode("utf-8"), packed, hashlib.sha256(raw).digest())


# not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs several times a plain one's, and a
# push builds one of these per ticket or per mutation
@dataclass(slots=True)
class NewNote:
    """A note the fold adds to a ticket: `created_at` is the transaction's time, the value the row will carry."""

    id: str
    text: str
    author: str
    device_time: str | None
    created_at: str


def photo_entry(sha256: str, kind: str, taken_at: str, lat: float | None, lon: float | None,
                verified: bool) -> dict[str, Any]:
    """One photo of a ticket document: `available` once the crew that attached it possesses the bytes."""
    return {"kind": kind, "lat": None if lat is None else float(lat), "lon": None if lon is None else float(lon),
            "sha256": sha256, "state": "available" if verified else "pending", "taken_at": taken_at}


def next_doc(before: dict[str, Any], *, status: str, crew: str | None, resolution_code: str | None,
             reason_code: str | None, items: dict[str, int], notes: list[NewNote], version: int,
             updated_at: str, photos: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The wire document after a fold changed a ticket's crew-owned state, built from the one before it, so a push
    renders its tickets in Python instead of re-reading them (the office-owned fields are carried over; `photos` are
    entries the push attaches, see photo_entry)."""
    doc = dict(before)
    doc.update(status=status, crew=crew, resolution_code=resolution_code, reason_code=reason_code, version=version,
               updated_at=updated_at)
    doc["items"] = [{"count": items[k], "item_type": k} for k in sorted(items)]
    if notes:
        doc["notes"] = sorted(
            [*before["notes"], *({"author": n.author, "created_at": n.created_at, "device_time": n.device_time,
                                  "id": n.id, "text": n.text} for n in notes)],
            key=lambda n: (n["created_at"], n["id"]))
    if photos:
        doc["photos"] = sorted([*before["photos"], *photos], key=lambda p: (p["sha256"], p["kind"]))
    return doc


def created_doc(*, id: str, service_type: str, department: str | None, status: str, address: str, zip: str | None,
                lat: float | None, lon: float | None, description: str, source: str | None, requested_at: str,
                crew: str | None, created_by_device: str | None, updated_at: str) -> dict[str, Any]:
    """The document of a ticket a push creates (self_report) as its row is inserted, before the fold's state is laid
    over it with next_doc: version 1, no children, the office fields a crew cannot set at their defaults."""
    return {"address": address, "council_district": None, "created_by_device": created_by_device, "crew": crew,
            "department": department, "description": description, "due_at": None, "id": id, "items": [],
            "lat": None if lat is None else float(lat), "lon": None if lon is None else float(lon), "notes": [],
            "photos": [], "priority": "normal", "reason_code": None, "requested_at": requested_at,
            "resolution_code": None, "service_date": None, "service_type": service_type, "source": source,
            "sr_number": None, "status": status, "updated_at": updated_at, "version": 1, "zip": zip}


# The document's own fields (everything but its children), named as on the wire: a reader selects them under these
# names, and the model, not a copy of its field list, says what they are.
SCALAR_FIELDS = tuple(k for k in Ticket.model_fields if k not in ("notes", "photos", "items"))


def _wire(value: Any) -> Any:
    """A column value in its wire form: the one UTC timestamp form, ISO dates, ids as text."""
    if isinstance(value, datetime):  # before date: a datetime is a date
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def ticket_doc(fields: Mapping[str, Any], notes: Iterable[tuple[Any, ...]], photos: Iterable[tuple[Any, ...]],
               items: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """A ticket's wire document from its typed row: `fields` has SCALAR_FIELDS as column values, notes are (id, text,
    author, device_time, created_at), photos (sha256, kind, taken_at, lat, lon, verified), items (item_type, count)."""
    doc = {k: _wire(fields[k]) for k in SCALAR_FIELDS}
    for k in ("lat", "lon"):
        if doc[k] is not None:
            doc[k] = float(doc[k])
    doc["notes"] = sorted(({"author": author, "created_at": format_datetime(created), "device_time": _wire(device_time),
                            "id": str(nid), "text": text} for nid, text, author, device_time, created in notes),
                          key=lambda n: (n["created_at"], n["id"]))
    doc["photos"] = sorted((photo_entry(sha, kind, format_datetime(taken), lat, lon, verified)
                            for sha, kind, taken, lat, lon, verified in photos), key=lambda p: (p["sha256"], p["kind"]))
    doc["items"] = [{"count": count, "item_type": kind} for kind, count in sorted(items)]
    return doc
