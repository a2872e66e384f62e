"""A fresh push result is built as a plain dict (engine.push_results.result_dict): it must be exactly the JSON-mode dump of
the MutationResult it stands for, key order included, because the wire bytes and the stored replay text come from it."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from protocol import ConflictInfo, MutationResult, MutationStatus, ReasonCode, RemovalReason
from sync_server.engine.push_results import result_dict

DOC = {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "version": 3}


def _model_form(doc: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    """What the engine sent before: the model dumped in JSON mode, its ticket replaced by the stored document."""
    return {**MutationResult(**fields).model_dump(mode="json"), "ticket": doc}


@pytest.mark.parametrize(("args", "model_fields", "doc"), [
    ((4, MutationStatus.APPLIED, None, None, DOC, None, [], 77),
     {"seq": 4, "status": "applied", "server_version": 77}, DOC),
    ((5, MutationStatus.REJECTED, ReasonCode.NOT_IN_SCOPE, "ticket is not in your crew's scope", None, None, [], 0),
     {"seq": 5, "status": "rejected", "reason": "not_in_scope", "message": "ticket is not in your crew's scope",
      "server_version": 0}, None),
    ((6, MutationStatus.MERGED, ReasonCode.CONFLICT_RESOLVED, None, None, RemovalReason.UNASSIGNED,
      [{"kind": "field_conflict", "field": "items.sofa", "kept": 3, "discarded": 2, "detail": "newer edit from d wins"}], 9),
     {"seq": 6, "status": "merged", "reason": "conflict_resolved", "removed": "unassigned", "server_version": 9,
      "conflicts": [ConflictInfo(kind="field_conflict", field="items.sofa", kept=3, discarded=2,
                                 detail="newer edit from d wins")]}, None),
])
def test_result_dict_is_the_models_json_dump(args: tuple[Any, ...], model_fields: dict[str, Any], doc: Any) -> None:
    fast = result_dict(*args)
    assert fast == _model_form(doc, **model_fields)
    assert list(fast) == list(_model_form(doc, **model_fields))  # key order: the bytes on the wire and in storage
    assert msgpack.packb(fast) == msgpack.packb(_model_form(doc, **model_fields))


def test_result_dict_hand_written() -> None:
    assert result_dict(7, MutationStatus.DUPLICATE, ReasonCode.ALREADY_EXISTS, "note already recorded", None, None, [], 12) == {
        "seq": 7, "status": "duplicate", "reason": "already_exists", "message": "note already recorded", "ticket": None,
        "removed": None, "conflicts": [], "server_version": 12, "replayed": False}
