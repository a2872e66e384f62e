"""Push parsing (I6): each mutation screened and validated on its own, so one bad mutation is rejected with a typed
reason without blocking the rest; only a broken seq run refuses the whole request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter, ValidationError

from protocol import OPS, ErrorCode, ProtocolError, ReasonCode
from protocol.canonical import mutation_digest
from protocol.fields import DEVICE_CLOCK_SKEW
from protocol.push import Mutation
from sync_server.domain.conflicts import Outcome, rejected

_MUTATION = TypeAdapter(Mutation)
_MUTATIONS = TypeAdapter(list[Mutation])
# Fields only a supervisor may set; a crew op naming one is refused as such, not as a generic typo (mass assignment).
SUPERVISOR_FIELDS = frozenset({"priority", "crew", "crew_id", "due_at", "service_date", "status", "department",
                               "assigned_to", "duplicate_of", "version", "cancelled"})


@dataclass
class Parsed:
    """One raw mutation after per-mutation validation: either a model or the rejection it earned."""

    seq: int
    raw: dict[str, Any]
    model: Any | None = None
    error: Outcome | None = None
    digest: bytes = b""

    @property
    def op(self) -> str:
        """The op name, even for an invalid mutation."""
        return self.model.op if self.model is not None else str(self.raw.get("op", ""))[:64]

    @property
    def ticket_id(self) -> UUID | None:
        """Ticket id when it parsed."""
        if self.model is not None:
            return self.model.ticket_id
        try:
            return UUID(str(self.raw.get("ticket_id")))
        except ValueError:
            return None


def parse_batch(raw: list[dict[str, Any]], now: datetime | None = None) -> list[Parsed]:
    """Validate each mutation on its own, so one bad mutation is rejected without blocking the rest (I6).

    `now` is the server clock device times are checked against (at most DEVICE_CLOCK_SKEW ahead).
    """
    out: list[Parsed] = []
    context = {"now": now or datetime.now(timezone.utc), "skew": DEVICE_CLOCK_SKEW}
    for item in raw:
        seq = item.get("seq") if isinstance(item, dict) else None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, "every mutation needs an integer seq >= 1")
        parsed = _screen(seq, item)
        parsed.digest = mutation_digest(item)
        out.append(parsed)
    seqs = [p.seq for p in out]
    if any(b != a + 1 for a, b in zip(seqs, seqs[1:])):
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "seqs in a push must be consecutive and ascending", {"seqs": seqs[:50]})
    _validate([p for p in out if p.error is None], context)
    return out


def _screen(seq: int, item: dict[str, Any]) -> Parsed:
    """The refusals decided before schema validation: an unknown op, a supervisor-owned field."""
    op = item.get("op")
    if op not in OPS:
        return Parsed(seq, item, error=rejected(ReasonCode.UNKNOWN_OP, f"unknown op {str(op)[:64]!r}"))
    args = item.get("args")
    owned = sorted(SUPERVISOR_FIELDS & set(args)) if isinstance(args, dict) else []
    if owned:
        return Parsed(seq, item, error=rejected(ReasonCode.SUPERVISOR_OWNED, f"crews cannot set {', '.join(owned)}"))
    return Parsed(seq, item)


def _validate(todo: list[Parsed], context: dict[str, Any]) -> None:
    """Models for the screened mutations: the whole list in one validator call (the common, all-valid batch), and
    only when that fails each on its own, so every invalid one gets its own rejection."""
    try:
        models = _MUTATIONS.validate_python([p.raw for p in todo], context=context)
    except ValidationError:
        for p in todo:
            try:
                p.model = _MUTATION.validate_python(p.raw, context=context)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(part) for part in first.get("loc", ()))
                p.error = rejected(ReasonCode.INVALID_ARGS, f"{loc}: {first.get('msg', 'invalid')}"[:500])
        return
    for p, m in zip(todo, models):
        p.model = m
