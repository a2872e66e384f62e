"""Which code each crew op carries and when a service type refuses it, pinned by hand (pure: no database)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from protocol.push import CompleteArgs, DeclineArgs, SetResolutionArgs, UnableToCompleteArgs
from sync_server.domain.catalog import code_refusal

# (resolution codes, reason codes) a service type allows
ALLOWED = (["collected", "partial"], ["blocked", "wrong_area"])


@pytest.mark.parametrize(("op", "args"), [
    ("complete", CompleteArgs(resolution_code="collected")),
    ("set_resolution", SetResolutionArgs(resolution_code="partial")),
    ("unable_to_complete", UnableToCompleteArgs(reason_code="blocked")),
    ("decline", DeclineArgs(reason_code="wrong_area")),
])
def test_allowed_code_is_accepted(op: str, args: object) -> None:
    assert code_refusal(op, args, ALLOWED) is None


@pytest.mark.parametrize(("op", "args", "message"), [
    ("complete", CompleteArgs(resolution_code="blocked"),
     "resolution_code 'blocked' is not a resolution code of this service type (see GET /v1/catalog)"),
    ("set_resolution", SetResolutionArgs(resolution_code="wrong_area"),
     "resolution_code 'wrong_area' is not a resolution code of this service type (see GET /v1/catalog)"),
    ("unable_to_complete", UnableToCompleteArgs(reason_code="collected"),
     "reason_code 'collected' is not a reason code of this service type (see GET /v1/catalog)"),
    ("decline", DeclineArgs(reason_code="partial"),
     "reason_code 'partial' is not a reason code of this service type (see GET /v1/catalog)"),
])
def test_code_from_the_other_list_is_refused(op: str, args: object, message: str) -> None:
    assert code_refusal(op, args, ALLOWED) == message


def test_unknown_service_type_refuses_every_code() -> None:
    assert code_refusal("complete", CompleteArgs(resolution_code="collected"), None) == (
        "resolution_code 'collected' is not a resolution code of this service type (see GET /v1/catalog)")


@pytest.mark.parametrize("op", ["acknowledge", "start", "pause", "resume", "add_note", "attach_photo", "set_items"])
def test_ops_without_a_code_are_never_refused(op: str) -> None:
    assert code_refusal(op, None, None) is None


def test_self_report_carries_a_resolution_code() -> None:
    """A self-reported ticket is created closed, so its code must be one of the service type's resolution codes."""
    assert code_refusal("self_report", SimpleNamespace(resolution_code="collected"), ALLOWED) is None
    assert code_refusal("self_report", SimpleNamespace(resolution_code="blocked"), ALLOWED) == (
        "resolution_code 'blocked' is not a resolution code of this service type (see GET /v1/catalog)")
