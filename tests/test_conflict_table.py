"""The merge table row by row, with no I/O: each row of domain/conflicts.py and the crew rows of domain/states.py."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from protocol import MutationStatus, ReasonCode, TicketStatus
from protocol.push import (
    AddNoteArgs, AttachPhotoArgs, CompleteArgs, DeclineArgs, PauseArgs, SetItemsArgs, SetResolutionArgs,
    UnableToCompleteArgs,
)
from sync_server.domain.conflicts import LATE, STATUS_OPS, DeviceCtx, Rule, WorkTicket, apply
from sync_server.domain.states import RANK, TRANSITIONS, Actor

S = TicketStatus
T0 = datetime(2026, 1, 1, 8, tzinfo=timezone.utc)
DEV = DeviceCtx("dev-a", crew_id=1, department_id=1)
DEV_B = DeviceCtx("dev-b", crew_id=1, department_id=1)

ARGS = {
    "acknowledge": None, "start": None, "resume": None,
    "pause": PauseArgs(reason=None),
    "complete": CompleteArgs(resolution_code="collected"),
    "unable_to_complete": UnableToCompleteArgs(reason_code="blocked"),
    "decline": DeclineArgs(reason_code="wrong_area"),
    "add_note": AddNoteArgs(note_id=uuid.uuid4(), text="hi"),
    "attach_photo": AttachPhotoArgs(sha256="a" * 64, kind="after", taken_at=T0),
    "set_items": SetItemsArgs(items=[{"item_type": "mattress", "count": 2}]),
    "set_resolution": SetResolutionArgs(resolution_code="collected"),
}


def ticket(status: TicketStatus, crew: int | None = 1, *, held_before: bool = True) -> WorkTicket:
    return WorkTicket(id=uuid.uuid4(), status=status, crew_id=crew, department_id=1, version=3, resolution_code=None,
                      reason_code=None, items={}, note_ids=set(), photos=set(), field_meta={},
                      ever_held_by={1} if held_before else set())


def run(t: WorkTicket, op: str, dev: DeviceCtx = DEV, base: int | None = 3, at: datetime = T0):
    return apply(t, op, ARGS[op], dev, base_version=base, device_time=at)


CREW_ROWS = [(op, src, TRANSITIONS[a][2]) for op, a in STATUS_OPS.items() for src in TRANSITIONS[a][1]
             if TRANSITIONS[a][0] is Actor.CREW]


@pytest.mark.parametrize(("op", "src", "dst"), CREW_ROWS, ids=[f"{o}:{s}" for o, s, _ in CREW_ROWS])
def test_state_machine_row_applies(op: str, src: TicketStatus, dst: TicketStatus) -> None:
    t = ticket(src)
    out = run(t, op)
    assert out.status is MutationStatus.APPLIED and t.status is dst


@pytest.mark.parametrize("op", sorted(STATUS_OPS))
@pytest.mark.parametrize("src", [s for s in S if s in (S.ASSIGNED, S.ACKNOWLEDGED, S.IN_PROGRESS, S.PAUSED, S.COMPLETED, S.UNABLE_TO_COMPLETE, S.REOPENED)])
def test_held_ticket_never_moves_backwards(op: str, src: TicketStatus) -> None:
    """Whatever a crew op does on a held ticket, the ticket's rank never decreases (except an explicit decline)."""
    t = ticket(src)
    out = run(t, op)
    if out.status is MutationStatus.REJECTED:
        assert out.reason is ReasonCode.ILLEGAL_TRANSITION and t.status is src
    elif op != "decline" and not (op == "pause" and src is S.IN_PROGRESS):
        assert RANK[t.status] >= RANK[src]
    if src in (S.COMPLETED, S.UNABLE_TO_COMPLETE):
        assert t.status is src  # terminal wins over any concurrent transition


@pytest.mark.parametrize(("op", "status"), sorted(LATE, key=str), ids=[f"{o}:{s}" for o, s in sorted(LATE, key=str)])
def test_late_report_row(op: str, status: TicketStatus) -> None:
    """Every late-report row: the work is kept (merged + late_field_report), applied only where the table says."""
    crew = 2 if status in (S.ASSIGNED, S.ACKNOWLEDGED, S.IN_PROGRESS, S.PAUSED, S.REOPENED, S.COMPLETED, S.UNABLE_TO_COMPLETE) else 1
    if status is S.UNASSIGNED:
        crew = None
    t = ticket(status, crew)
    out = run(t, op)
    assert out.status is MutationStatus.MERGED and out.reason is ReasonCode.LATE_FIELD_REPORT
    assert [c.kind for c in out.conflicts] == ["late_field_report"]
    rule = LATE[(op, status)]
    if rule is Rule.KEEP_LATE:
        assert t.status is status and not t.touched
    elif op == "complete":
        assert t.status is S.COMPLETED and t.resolution_code == "collected"
    else:
        assert t.touched and (out.new_note is not None or out.new_photo is not None)


@pytest.mark.parametrize("op", ["acknowledge", "start", "pause", "resume", "decline"])
def test_non_work_ops_on_a_ticket_that_left_are_rejected(op: str) -> None:
    t = ticket(S.ASSIGNED, crew=2)
    out = run(t, op)
    assert out.status is MutationStatus.REJECTED and out.reason is ReasonCode.NOT_IN_SCOPE


@pytest.mark.parametrize("op", sorted(ARGS))
def test_foreign_ticket_is_rejected_without_detail(op: str) -> None:
    t = ticket(S.ASSIGNED, crew=2, held_before=False)
    out = run(t, op)
    assert out.status is MutationStatus.REJECTED and out.reason is ReasonCode.NOT_IN_SCOPE and not out.conflicts


def test_append_only_dedup_by_id() -> None:
    t = ticket(S.IN_PROGRESS)
    assert run(t, "add_note").status is MutationStatus.APPLIED
    assert run(t, "add_note").status is MutationStatus.DUPLICATE
    assert run(t, "attach_photo").status is MutationStatus.APPLIED
    assert run(t, "attach_photo").status is MutationStatus.DUPLICATE


def test_concurrent_field_edit_newer_device_time_wins_loser_kept() -> None:
    t = ticket(S.IN_PROGRESS)
    first = apply(t, "set_resolution", SetResolutionArgs(resolution_code="collected"), DEV, base_version=3, device_time=T0)
    assert first.status is MutationStatus.APPLIED
    # device B edited the same field offline from the same base, later in wall time: B wins, A's value kept
    later = apply(t, "set_resolution", SetResolutionArgs(resolution_code="partial"), DEV_B, base_version=3,
                  device_time=T0 + timedelta(minutes=5))
    assert later.status is MutationStatus.MERGED and t.resolution_code == "partial"
    assert (later.conflicts[0].kept, later.conflicts[0].discarded) == ("partial", "collected")
    # an older concurrent edit loses and is recorded, the field unchanged
    older = apply(t, "set_resolution", SetResolutionArgs(resolution_code="none"), DEV, base_version=3,
                  device_time=T0 - timedelta(minutes=5))
    assert older.status is MutationStatus.MERGED and t.resolution_code == "partial"
    assert (older.conflicts[0].kept, older.conflicts[0].discarded) == ("partial", "none")


def test_field_edit_from_fresh_base_is_not_a_conflict() -> None:
    t = ticket(S.IN_PROGRESS)
    apply(t, "set_items", ARGS["set_items"], DEV, base_version=3, device_time=T0)
    t.version = 4
    out = apply(t, "set_items", SetItemsArgs(items=[{"item_type": "mattress", "count": 3}]), DEV_B, base_version=4,
                device_time=T0 - timedelta(hours=1))
    assert out.status is MutationStatus.APPLIED and t.items == {"mattress": 3}


def test_second_completion_is_a_terminal_conflict_not_a_second_closure() -> None:
    t = ticket(S.IN_PROGRESS)
    assert run(t, "complete").status is MutationStatus.APPLIED
    out = run(t, "unable_to_complete", DEV_B)
    assert out.status is MutationStatus.MERGED and t.status is S.COMPLETED
    assert out.conflicts[0].kind == "terminal_conflict"
