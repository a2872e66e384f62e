"""Which code field each crew op carries, and whether a code is one its service type allows (pure; data from
the service_types table, looked up by the push engine)."""

from __future__ import annotations

from typing import Any

# op -> (argument holding a code, which list of the service type allows it: 0 resolution codes, 1 reason codes)
CODE_FIELDS: dict[str, tuple[str, int]] = {
    "complete": ("resolution_code", 0),
    "set_resolution": ("resolution_code", 0),
    "self_report": ("resolution_code", 0),
    "unable_to_complete": ("reason_code", 1),
    "decline": ("reason_code", 1),
}
KIND = ("resolution", "reason")


def code_refusal(op: str, args: Any, allowed: tuple[list[str], list[str]] | None) -> str | None:
    """Why this op's code is not acceptable for the ticket's service type (None when it is, or the op has no code)."""
    spec = CODE_FIELDS.get(op)
    if spec is None:
        return None
    field, which = spec
    code = getattr(args, field)
    if allowed is None or code not in allowed[which]:
        return f"{field} {code!r} is not a {KIND[which]} code of this service type (see GET /v1/catalog)"
    return None
