"""Push results as the device reads them (I5, I7): JSON-mode dicts key for key as MutationResult dumps them, the
ticket document spliced in, one ticket travelling once per batch, replays answered as first sent."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from protocol import MutationResult, MutationStatus, ReasonCode, RemovalReason
from sync_server.domain.conflicts import Conflict, DeviceCtx, Where, WorkTicket, removed_reason
from sync_server.domain.ticket import TicketRecord


def wire_result(result: MutationResult, doc: dict[str, Any] | None) -> dict[str, Any]:
    """A result as it goes on the wire (JSON mode), with the pre-rendered ticket document spliced in."""
    return {**result.model_dump(mode="json"), "ticket": doc}


def result_dict(seq: int, status: MutationStatus, reason: ReasonCode | None, message: str | None,
                ticket: dict[str, Any] | None, removed: RemovalReason | None, conflicts: list[dict[str, Any]],
                server_version: int) -> dict[str, Any]:
    """A fresh MutationResult in its JSON-mode form (keys in the model's field order), with the ticket document."""
    # _value_, the member's stored value: `.value` is a Python-level descriptor, read 3 times per mutation
    return {"seq": seq, "status": status._value_, "reason": None if reason is None else reason._value_,
            "message": message, "ticket": ticket, "removed": None if removed is None else removed._value_,
            "conflicts": conflicts, "server_version": server_version, "replayed": False}


def holding(rec: TicketRecord | None, wt: WorkTicket | None, dev: DeviceCtx) -> tuple[Any, Any]:
    """(document, removal reason): the ticket if held, the reason if the crew lost it, nothing if never its own (I3)."""
    if rec is None:
        return None, None
    if rec.holder_crew_id == dev.crew_id:
        return rec.doc, None
    if wt is not None and wt.where(dev) is Where.LEFT:
        return None, removed_reason(wt, dev, crew_changed=rec.crew_id != dev.crew_id)
    return None, None


def last_carries_ticket(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ticket touched by several mutations of a batch travels once, on its last result (SPEC: push results)."""
    last = {r["ticket"]["id"]: i for i, r in enumerate(results) if r["ticket"] is not None}
    return [r if r["ticket"] is None or last[r["ticket"]["id"]] == i else {**r, "ticket": None} for i, r in enumerate(results)]


def conflict_info(c: Conflict) -> dict[str, Any]:
    """A conflict as ConflictInfo's JSON-mode dict."""
    return {"kind": c.kind, "field": c.field, "kept": _scalar(c.kept), "discarded": _scalar(c.discarded), "detail": c.detail}


def _scalar(v: Any) -> Any:
    """ConflictInfo carries JSON scalars; structured values travel as compact JSON text."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return json.dumps(v, separators=(",", ":"), default=str)


def replayed_result(stored: dict[str, Any], current: dict[UUID, TicketRecord], dev: DeviceCtx) -> tuple[MutationResult, dict[str, Any] | None]:
    """The original result of an already-applied seq, with the ticket as it stands now."""
    data = {k: v for k, v in stored.items() if k != "ticket_id"}
    tid = stored.get("ticket_id")
    rec = current.get(UUID(tid)) if tid else None
    data["replayed"] = True
    doc = rec.doc if rec is not None and rec.holder_crew_id == dev.crew_id else None
    return MutationResult.model_validate(data), doc
