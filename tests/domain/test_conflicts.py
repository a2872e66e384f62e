"""The merge table pinned by hand: what each crew op does to a held ticket and to one that left the crew.

Every expectation below is written out from docs and SPEC §6 (status × op → result, reason, new status; every
late-report row), never read from sync_server/domain/conflicts.py, so a changed row there fails a test here.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from protocol import MutationStatus, ReasonCode, RemovalReason, TicketStatus
from protocol.push import (
    AddNoteArgs, AttachPhotoArgs, CompleteArgs, DeclineArgs, PauseArgs, SetItemsArgs, SetResolutionArgs,
    UnableToCompleteArgs,
)
from sync_server.domain.conflicts import DeviceCtx, Outcome, WorkTicket, apply, removed_reason

T0 = datetime(2026, 1, 1, 8, tzinfo=timezone.utc)
DEV = DeviceCtx("dev-a", crew_id=1, department_id=1)
DEV_B = DeviceCtx("dev-b", crew_id=1, department_id=1)
NOTE_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")

UN, AS, AK, IP, PA = "unassigned", "assigned", "acknowledged", "in_progress", "paused"
CO, UC, CL, CA, DU, RE = "completed", "unable_to_complete", "closed", "cancelled", "duplicate", "reopened"
ALL = (UN, AS, AK, IP, PA, CO, UC, CL, CA, DU, RE)
HELD = (AS, AK, IP, PA, RE, CO, UC)


def args_for(op: str) -> Any:
    """Fresh, fixed arguments for each op."""
    return {
        "acknowledge": None, "start": None, "resume": None,
        "pause": PauseArgs(reason=None),
        "complete": CompleteArgs(resolution_code="collected"),
        "unable_to_complete": UnableToCompleteArgs(reason_code="blocked"),
        "decline": DeclineArgs(reason_code="wrong_area"),
        "add_note": AddNoteArgs(note_id=NOTE_ID, text="left at curb"),
        "attach_photo": AttachPhotoArgs(sha256="a" * 64, kind="after", taken_at=T0, lat=34.5, lon=-118.25),
        "set_items": SetItemsArgs(items=[{"item_type": "mattress", "count": 2}]),
        "set_resolution": SetResolutionArgs(resolution_code="collected"),
    }[op]


def ticket(status: str, crew: int | None = 1, *, held_before: bool = True) -> WorkTicket:
    return WorkTicket(id=uuid.UUID(int=7), status=TicketStatus(status), crew_id=crew, department_id=1, version=3,
                      resolution_code=None, reason_code=None, items={}, note_ids=set(), photos=set(), field_meta={},
                      ever_held_by={1} if held_before else set())


def run(t: WorkTicket, op: str, dev: DeviceCtx = DEV, base: int | None = 3, at: datetime = T0) -> Outcome:
    return apply(t, op, args_for(op), dev, base_version=base, device_time=at)


def snapshot(t: WorkTicket) -> tuple[Any, ...]:
    return (t.status, t.crew_id, t.version, t.resolution_code, t.reason_code, dict(t.items), set(t.note_ids),
            set(t.photos), {k: dict(v) for k, v in t.field_meta.items()}, t.touched)


# ---- status ops on a ticket the crew holds -----------------------------------------------------------------------
# (op, current status) -> "→ new status" (applied), "stale" (merged, stale_transition, unchanged) or "illegal"
# (rejected, illegal_transition, unchanged). Stale: the ticket already reached or passed the target (never move
# backwards); a finished ticket (completed / unable_to_complete) treats every further move as stale.
A = "apply"
HELD_TABLE: dict[str, dict[str, str]] = {
    #                      assigned    acknowledged  in_progress  paused      reopened    completed  unable
    "acknowledge":        {AS: AK,     AK: "stale",  IP: "stale", PA: "stale", RE: AK,    CO: "stale", UC: "stale"},
    "start":              {AS: IP,     AK: IP,       IP: "stale", PA: "stale", RE: IP,    CO: "stale", UC: "stale"},
    "pause":              {AS: "illegal", AK: "illegal", IP: PA,  PA: "stale", RE: "illegal", CO: "stale", UC: "stale"},
    "resume":             {AS: "illegal", AK: "illegal", IP: "stale", PA: IP,  RE: "illegal", CO: "stale", UC: "stale"},
    "complete":           {AS: CO,     AK: CO,       IP: CO,      PA: CO,      RE: CO,    CO: "stale", UC: "stale"},
    "unable_to_complete": {AS: UC,     AK: UC,       IP: UC,      PA: UC,      RE: UC,    CO: "stale", UC: "stale"},
    "decline":            {AS: UN,     AK: UN,       IP: "stale", PA: "stale", RE: UN,    CO: "stale", UC: "stale"},
}
HELD_CELLS = [(op, s) for op in HELD_TABLE for s in HELD]


@pytest.mark.parametrize(("op", "src"), HELD_CELLS, ids=[f"{o}:{s}" for o, s in HELD_CELLS])
def test_status_op_on_held_ticket(op: str, src: str) -> None:
    t = ticket(src)
    before = snapshot(t)
    out = run(t, op)
    want = HELD_TABLE[op][src]
    if want == "illegal":
        assert (out.status, out.reason) == (MutationStatus.REJECTED, ReasonCode.ILLEGAL_TRANSITION)
        assert out.message == f"cannot {op} a ticket that is {src} (as crew)"
        assert snapshot(t) == before and not out.changed_ticket and not out.conflicts
    elif want == "stale":
        assert (out.status, out.reason) == (MutationStatus.MERGED, ReasonCode.STALE_TRANSITION)
        assert out.message == f"ticket is already {src}"
        assert snapshot(t) == before
        terminal_twice = op in ("complete", "unable_to_complete")  # two devices finished one job: kept for review
        assert [(c.kind, c.field, c.kept, c.discarded) for c in out.conflicts] == (
            [("terminal_conflict", "status", src, CO if op == "complete" else UC)] if terminal_twice else [])
        if terminal_twice:
            assert out.conflicts[0].detail == f"{op} arrived after the ticket was {src}"
        assert out.audit_action == ("conflict" if terminal_twice else None)
        assert out.changed_ticket is terminal_twice
    else:
        assert (out.status, out.reason, out.conflicts) == (MutationStatus.APPLIED, None, [])
        assert t.status is TicketStatus(want) and t.touched
        assert out.audit_action == op and out.changed_ticket


def test_completing_an_already_completed_ticket_records_the_terminal_conflict() -> None:
    t = ticket(IP)
    assert run(t, "complete").status is MutationStatus.APPLIED
    out = run(t, "unable_to_complete", DEV_B)
    assert out.status is MutationStatus.MERGED and t.status is TicketStatus.COMPLETED
    assert [(c.kind, c.kept, c.discarded) for c in out.conflicts] == [("terminal_conflict", CO, UC)]
    assert t.reason_code is None  # the losing report's reason code is not written onto the ticket


# ---- what each status move changes, field by field ----------------------------------------------------------------

def test_complete_sets_resolution_code_and_its_field_stamp() -> None:
    t = ticket(IP)
    run(t, "complete")
    assert (t.status, t.crew_id, t.resolution_code, t.reason_code) == (TicketStatus.COMPLETED, 1, "collected", None)
    assert t.field_meta == {"resolution_code": {"v": 4, "t": T0.isoformat(), "d": "dev-a"}}


def test_an_older_concurrent_resolution_edit_does_not_beat_the_completion() -> None:
    """Regression: the completion's code was stamped without a device time, so any concurrent edit won (SPEC §6)."""
    t = ticket(IP)
    apply(t, "complete", CompleteArgs(resolution_code="collected"), DEV, base_version=3,
          device_time=T0 + timedelta(minutes=10))
    older = apply(t, "set_resolution", SetResolutionArgs(resolution_code="partial"), DEV_B, base_version=3,
                  device_time=T0)
    assert (older.status, older.reason) == (MutationStatus.MERGED, ReasonCode.CONFLICT_RESOLVED)
    assert t.resolution_code == "collected"
    assert [(c.kept, c.discarded, c.detail) for c in older.conflicts] == [
        ("collected", "partial", "newer edit from dev-a kept")]
    newer = apply(t, "set_resolution", SetResolutionArgs(resolution_code="partial"), DEV_B, base_version=3,
                  device_time=T0 + timedelta(minutes=20))
    assert newer.status is MutationStatus.MERGED and t.resolution_code == "partial"


def test_unable_to_complete_sets_reason_code_only() -> None:
    t = ticket(PA)
    run(t, "unable_to_complete")
    assert (t.status, t.crew_id, t.resolution_code, t.reason_code) == (TicketStatus.UNABLE_TO_COMPLETE, 1, None,
                                                                       "blocked")
    assert t.field_meta == {}


@pytest.mark.parametrize("src", [AS, AK, RE])
def test_decline_hands_the_ticket_back_unassigned_with_its_reason(src: str) -> None:
    t = ticket(src)
    t.items = {"mattress": 1}
    out = run(t, "decline")
    assert out.status is MutationStatus.APPLIED
    assert (t.status, t.crew_id, t.reason_code, t.resolution_code) == (TicketStatus.UNASSIGNED, None, "wrong_area",
                                                                       None)
    assert t.items == {"mattress": 1} and t.field_meta == {} and t.ever_held_by == {1}
    assert removed_reason(t, DEV, crew_changed=True) is RemovalReason.DECLINED


@pytest.mark.parametrize("op", ["acknowledge", "start", "pause", "resume"])
def test_plain_moves_change_only_the_status(op: str) -> None:
    src = {"acknowledge": AS, "start": AK, "pause": IP, "resume": PA}[op]
    t = ticket(src)
    run(t, op)
    assert (t.crew_id, t.resolution_code, t.reason_code, t.items, t.field_meta) == (1, None, None, {}, {})


def test_removed_reason_is_none_while_the_crew_still_holds_it() -> None:
    for status in HELD:
        assert removed_reason(ticket(status), DEV, crew_changed=False) is None
    assert removed_reason(ticket(AS, crew=2), DEV, crew_changed=True) is RemovalReason.REASSIGNED
    assert removed_reason(ticket(CA), DEV, crew_changed=False) is RemovalReason.CANCELLED


# ---- late field reports: the crew held the ticket once, it left while the device was offline ------------------------
# The ticket either moved to another crew (held states, crew 2) or to a state nobody holds (crew stays 1, or none).
LEFT_CREW = {UN: None, AS: 2, AK: 2, IP: 2, PA: 2, RE: 2, CO: 2, UC: 2, CL: 1, CA: 1, DU: 1}
# (op, status now) -> "apply" (merged late_field_report, and the work is applied) | "keep" (merged
# late_field_report, ticket unchanged, the report kept for the supervisor) | "reject" (not_in_scope).
KEEP, APPLY, REJECT = "keep", "apply", "reject"
LATE_TABLE: dict[str, dict[str, str]] = {
    # a completed pickup stays completed even if cancelled or reassigned meanwhile: the truck took the mattress
    "complete": {UN: APPLY, AS: APPLY, AK: APPLY, IP: APPLY, PA: APPLY, RE: APPLY, CA: APPLY,
                 CO: KEEP, UC: KEEP, CL: KEEP, DU: KEEP},
    "unable_to_complete": {s: KEEP for s in ALL},
    "add_note": {s: APPLY for s in ALL},
    "attach_photo": {s: APPLY for s in ALL},
    "set_items": {s: KEEP for s in ALL},
    "set_resolution": {s: KEEP for s in ALL},
    **{op: {s: REJECT for s in ALL} for op in ("acknowledge", "start", "pause", "resume", "decline")},
}
LATE_CELLS = [(op, s) for op in LATE_TABLE for s in ALL]

KEPT_ARGS = {
    "complete": {"resolution_code": "collected", "note": None},
    "unable_to_complete": {"reason_code": "blocked", "note": None},
    "set_items": {"items": [{"item_type": "mattress", "count": 2}]},
    "set_resolution": {"resolution_code": "collected"},
}


@pytest.mark.parametrize(("op", "status"), LATE_CELLS, ids=[f"{o}:{s}" for o, s in LATE_CELLS])
def test_late_report_cell(op: str, status: str) -> None:
    t = ticket(status, LEFT_CREW[status])
    before = snapshot(t)
    out = run(t, op)
    want = LATE_TABLE[op][status]
    if want == REJECT:
        assert (out.status, out.reason) == (MutationStatus.REJECTED, ReasonCode.NOT_IN_SCOPE)
        assert out.message == f"ticket left your crew's scope ({status})"
        assert snapshot(t) == before and not out.conflicts and not out.changed_ticket
        return
    assert (out.status, out.reason) == (MutationStatus.MERGED, ReasonCode.LATE_FIELD_REPORT)
    detail = f"{op} by dev-a after the ticket became {status}"
    assert out.message == detail
    assert len(out.conflicts) == 1 and out.conflicts[0].kind == "late_field_report"
    report = out.conflicts[0]
    assert report.detail == detail
    assert out.changed_ticket
    if want == KEEP:
        assert snapshot(t) == before
        assert out.audit_action == "late_report" and out.new_note is None and out.new_photo is None
        assert (report.field, report.kept) == (None, None)
        assert report.discarded == {"op": op, "args": KEPT_ARGS[op]}
    elif op == "complete":
        assert t.status is TicketStatus.COMPLETED and t.resolution_code == "collected" and t.touched
        # nobody owned it any more: the crew that did the work keeps the record; else the new owner keeps it
        assert t.crew_id == (1 if LEFT_CREW[status] is None else LEFT_CREW[status])
        assert (report.field, report.kept, report.discarded) == ("status", CO, status)
        assert t.field_meta == {"resolution_code": {"v": 4, "t": T0.isoformat(), "d": "dev-a"}}
        assert out.audit_action == "complete"
    elif op == "add_note":
        assert out.new_note == (NOTE_ID, "left at curb") and t.note_ids == {NOTE_ID} and t.touched
        assert t.status is TicketStatus(status) and out.audit_action == "add_note"
        assert (report.field, report.kept, report.discarded) == (None, None, None)
    else:
        assert out.new_photo == {"sha256": "a" * 64, "kind": "after", "taken_at": T0, "lat": 34.5, "lon": -118.25}
        assert t.photos == {("a" * 64, "after")} and t.touched and t.status is TicketStatus(status)
        assert out.audit_action == "attach_photo"


def test_late_note_repeated_is_a_duplicate_not_a_second_report() -> None:
    t = ticket(CA)
    assert run(t, "add_note").status is MutationStatus.MERGED
    again = run(t, "add_note")
    assert (again.status, again.reason, again.conflicts) == (MutationStatus.DUPLICATE, ReasonCode.ALREADY_EXISTS, [])


def test_self_reported_ticket_counts_as_left_for_its_device_only() -> None:
    t = ticket(CL, crew=None, held_before=False)
    t.created_by_device = "dev-a"
    assert run(t, "add_note").status is MutationStatus.MERGED
    assert run(t, "add_note", DeviceCtx("dev-c", crew_id=1, department_id=1)).reason is ReasonCode.NOT_IN_SCOPE


@pytest.mark.parametrize("op", sorted(LATE_TABLE))
def test_foreign_ticket_is_rejected_without_detail(op: str) -> None:
    t = ticket(AS, crew=2, held_before=False)
    before = snapshot(t)
    out = run(t, op)
    assert (out.status, out.reason, out.message) == (MutationStatus.REJECTED, ReasonCode.NOT_IN_SCOPE,
                                                     "ticket is not in your crew's scope")
    assert not out.conflicts and snapshot(t) == before


def test_unknown_op_on_a_held_ticket_is_rejected_on_its_own() -> None:
    out = apply(ticket(IP), "paint", None, DEV, base_version=3, device_time=T0)
    assert (out.status, out.reason, out.message) == (MutationStatus.REJECTED, ReasonCode.UNKNOWN_OP,
                                                     "unknown op 'paint'")


# ---- append-only and field-level ---------------------------------------------------------------------------------

def test_append_only_dedup_by_id() -> None:
    t = ticket(IP)
    first = run(t, "add_note")
    assert (first.status, first.new_note, first.audit_action) == (MutationStatus.APPLIED, (NOTE_ID, "left at curb"),
                                                                  "add_note")
    dup = run(t, "add_note")
    assert (dup.status, dup.reason, dup.message) == (MutationStatus.DUPLICATE, ReasonCode.ALREADY_EXISTS,
                                                     "note already recorded")
    assert not dup.changed_ticket
    assert run(t, "attach_photo").status is MutationStatus.APPLIED
    dup = run(t, "attach_photo")
    assert (dup.status, dup.reason, dup.message) == (MutationStatus.DUPLICATE, ReasonCode.ALREADY_EXISTS,
                                                     "photo already attached")
    other_kind = apply(t, "attach_photo", AttachPhotoArgs(sha256="a" * 64, kind="before", taken_at=T0), DEV,
                       base_version=3, device_time=T0)
    assert other_kind.status is MutationStatus.APPLIED  # a photo is (sha256, kind): the same bytes as "before" too
    assert t.photos == {("a" * 64, "after"), ("a" * 64, "before")}


def test_first_field_edit_applies_and_is_stamped() -> None:
    t = ticket(IP)
    out = run(t, "set_items")
    assert (out.status, out.reason, out.conflicts, out.audit_action) == (MutationStatus.APPLIED, None, [], "set_items")
    assert t.items == {"mattress": 2} and t.touched
    assert t.field_meta == {"items.mattress": {"v": 4, "t": T0.isoformat(), "d": "dev-a"}}
    out = run(t, "set_resolution")
    assert t.resolution_code == "collected"
    assert t.field_meta["resolution_code"] == {"v": 4, "t": T0.isoformat(), "d": "dev-a"}


def test_setting_a_field_to_its_current_value_changes_nothing() -> None:
    t = ticket(IP)
    t.resolution_code = "collected"
    out = run(t, "set_resolution")
    assert out.status is MutationStatus.APPLIED and not out.conflicts
    assert t.field_meta == {} and not t.touched


def test_concurrent_field_edit_newer_device_time_wins_loser_kept() -> None:
    t = ticket(IP)
    first = apply(t, "set_resolution", SetResolutionArgs(resolution_code="collected"), DEV, base_version=3, device_time=T0)
    assert first.status is MutationStatus.APPLIED
    # device B edited the same field offline from the same base, later in wall time: B wins, A's value kept
    later = apply(t, "set_resolution", SetResolutionArgs(resolution_code="partial"), DEV_B, base_version=3,
                  device_time=T0 + timedelta(minutes=5))
    assert (later.status, later.reason) == (MutationStatus.MERGED, ReasonCode.CONFLICT_RESOLVED)
    assert t.resolution_code == "partial"
    c = later.conflicts[0]
    assert (c.kind, c.field, c.kept, c.discarded, c.detail) == (
        "field_conflict", "resolution_code", "partial", "collected", "newer edit from dev-b wins")
    # an older concurrent edit loses and is recorded, the field unchanged
    older = apply(t, "set_resolution", SetResolutionArgs(resolution_code="none"), DEV, base_version=3,
                  device_time=T0 - timedelta(minutes=5))
    assert (older.status, older.reason) == (MutationStatus.MERGED, ReasonCode.CONFLICT_RESOLVED)
    assert t.resolution_code == "partial"
    c = older.conflicts[0]
    assert (c.kind, c.field, c.kept, c.discarded, c.detail) == (
        "field_conflict", "resolution_code", "partial", "none", "newer edit from dev-b kept")
    assert t.field_meta["resolution_code"]["d"] == "dev-b"


def test_equal_device_times_break_ties_by_device_id() -> None:
    t = ticket(IP)
    apply(t, "set_resolution", SetResolutionArgs(resolution_code="collected"), DEV_B, base_version=3, device_time=T0)
    out = apply(t, "set_resolution", SetResolutionArgs(resolution_code="partial"), DEV, base_version=3, device_time=T0)
    assert out.status is MutationStatus.MERGED and t.resolution_code == "collected"  # "dev-b" > "dev-a"


def test_same_device_editing_again_is_never_a_conflict() -> None:
    t = ticket(IP)
    run(t, "set_resolution")
    out = apply(t, "set_resolution", SetResolutionArgs(resolution_code="partial"), DEV, base_version=3,
                device_time=T0 - timedelta(hours=1))
    assert out.status is MutationStatus.APPLIED and t.resolution_code == "partial"


def test_field_edit_from_fresh_base_is_not_a_conflict() -> None:
    t = ticket(IP)
    apply(t, "set_items", args_for("set_items"), DEV, base_version=3, device_time=T0)
    t.version = 4
    out = apply(t, "set_items", SetItemsArgs(items=[{"item_type": "mattress", "count": 3}]), DEV_B, base_version=4,
                device_time=T0 - timedelta(hours=1))
    assert out.status is MutationStatus.APPLIED and t.items == {"mattress": 3}


def test_field_edit_without_a_base_is_treated_as_concurrent() -> None:
    t = ticket(IP)
    apply(t, "set_items", args_for("set_items"), DEV, base_version=3, device_time=T0)
    out = apply(t, "set_items", SetItemsArgs(items=[{"item_type": "mattress", "count": 3}]), DEV_B, base_version=None,
                device_time=T0 - timedelta(hours=1))
    assert out.status is MutationStatus.MERGED and t.items == {"mattress": 2}


def test_copy_is_independent() -> None:
    t = ticket(IP)
    t.items, t.note_ids, t.photos = {"a": 1}, {NOTE_ID}, {("b" * 64, "after")}
    t.field_meta = {"items.a": {"v": 1}}
    c = t.copy()
    c.items["a"] = 2
    c.note_ids.clear()
    c.photos.clear()
    c.field_meta["items.a"]["v"] = 9
    c.ever_held_by.add(5)
    assert (t.items, t.note_ids, t.photos, t.field_meta, t.ever_held_by) == (
        {"a": 1}, {NOTE_ID}, {("b" * 64, "after")}, {"items.a": {"v": 1}}, {1})
    assert (c.id, c.status, c.version) == (t.id, t.status, t.version)


def test_item_lines_merge_one_by_one() -> None:
    """An unchanged line, or a line that loses its conflict, does not stop the lines after it."""
    t = ticket(IP)
    t.items = {"mattress": 2}
    out = apply(t, "set_items", SetItemsArgs(items=[{"item_type": "mattress", "count": 2},
                                                    {"item_type": "sofa", "count": 1}]),
                DEV, base_version=3, device_time=T0)
    assert out.status is MutationStatus.APPLIED and t.items == {"mattress": 2, "sofa": 1}
    assert set(t.field_meta) == {"items.sofa"}  # the unchanged line is not restamped
    # device B, concurrently and earlier: its mattress line loses, its tv line (new) still applies
    out = apply(t, "set_items", SetItemsArgs(items=[{"item_type": "sofa", "count": 5},
                                                    {"item_type": "tv", "count": 1}]),
                DEV_B, base_version=3, device_time=T0 - timedelta(minutes=1))
    assert (out.status, out.reason) == (MutationStatus.MERGED, ReasonCode.CONFLICT_RESOLVED)
    assert t.items == {"mattress": 2, "sofa": 1, "tv": 1}
    assert [(c.field, c.kept, c.discarded) for c in out.conflicts] == [("items.sofa", 1, 5)]


def test_setting_an_item_line_to_its_current_count_changes_nothing() -> None:
    t = ticket(IP)
    t.items = {"mattress": 2}
    out = apply(t, "set_items", SetItemsArgs(items=[{"item_type": "mattress", "count": 2}]), DEV, base_version=3,
                device_time=T0)
    assert (out.status, out.conflicts) == (MutationStatus.APPLIED, [])
    assert t.field_meta == {} and not t.touched


def test_a_stamp_without_device_time_loses_to_any_dated_edit() -> None:
    """Completions stamped before device times were recorded ({"v", "d"} only) lose a concurrent dated edit."""
    t = ticket(CO)
    t.resolution_code = "collected"
    t.field_meta = {"resolution_code": {"v": 4, "d": "dev-b"}}
    out = apply(t, "set_resolution", SetResolutionArgs(resolution_code="partial"), DEV, base_version=3,
                device_time=T0)
    assert out.status is MutationStatus.MERGED and t.resolution_code == "partial"
    assert [(c.kept, c.discarded) for c in out.conflicts] == [("partial", "collected")]


def test_a_stamp_without_a_version_is_never_concurrent() -> None:
    t = ticket(IP)
    t.resolution_code = "collected"
    t.field_meta = {"resolution_code": {"t": (T0 + timedelta(hours=1)).isoformat(), "d": "dev-b"}}
    out = apply(t, "set_resolution", SetResolutionArgs(resolution_code="partial"), DEV, base_version=0,
                device_time=T0)
    assert (out.status, out.conflicts) == (MutationStatus.APPLIED, []) and t.resolution_code == "partial"


# ---- a note carried by a status op becomes a ticket note (id from device and seq), unless the op is rejected -------
OP_NOTE = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


def test_note_on_complete_becomes_a_ticket_note() -> None:
    t = ticket(IP)
    out = apply(t, "complete", CompleteArgs(resolution_code="collected", note="left at curb"), DEV, base_version=3,
                device_time=T0, note_id=OP_NOTE)
    assert (out.status, out.new_note, out.audit_action) == (MutationStatus.APPLIED, (OP_NOTE, "left at curb"),
                                                            "complete")
    assert t.note_ids == {OP_NOTE} and t.touched


def test_note_on_a_stale_op_is_kept_and_audited_as_a_note() -> None:
    t = ticket(IP)
    out = apply(t, "decline", DeclineArgs(reason_code="wrong_area", note="already started"), DEV, base_version=3,
                device_time=T0, note_id=OP_NOTE)
    assert (out.status, out.reason) == (MutationStatus.MERGED, ReasonCode.STALE_TRANSITION)
    assert (out.new_note, out.audit_action, t.status) == ((OP_NOTE, "already started"), "add_note",
                                                         TicketStatus.IN_PROGRESS)
    assert t.note_ids == {OP_NOTE} and t.touched


def test_note_on_a_second_completion_keeps_the_conflict_audit() -> None:
    t = ticket(CO)
    out = apply(t, "unable_to_complete", UnableToCompleteArgs(reason_code="blocked", note="gate locked"), DEV,
                base_version=3, device_time=T0, note_id=OP_NOTE)
    assert (out.status, out.audit_action, out.new_note) == (MutationStatus.MERGED, "conflict", (OP_NOTE, "gate locked"))


def test_note_on_a_late_report_is_kept_on_the_ticket() -> None:
    t = ticket(AS, crew=2)
    out = apply(t, "unable_to_complete", UnableToCompleteArgs(reason_code="blocked", note="gate locked"), DEV,
                base_version=3, device_time=T0, note_id=OP_NOTE)
    assert (out.status, out.reason, out.audit_action) == (MutationStatus.MERGED, ReasonCode.LATE_FIELD_REPORT,
                                                          "late_report")
    assert out.new_note == (OP_NOTE, "gate locked") and t.note_ids == {OP_NOTE} and t.status is TicketStatus.ASSIGNED


@pytest.mark.parametrize("held_before", [True, False], ids=["left", "foreign"])
def test_no_note_from_a_rejected_op(held_before: bool) -> None:
    t = ticket(AS, 2, held_before=held_before)
    out = apply(t, "decline", DeclineArgs(reason_code="x", note="n"), DEV, base_version=3, device_time=T0,
                note_id=OP_NOTE)
    assert out.status is MutationStatus.REJECTED and out.new_note is None
    assert t.note_ids == set() and not t.touched and out.audit_action is None


def test_op_note_is_added_once_and_needs_an_id_and_text() -> None:
    t = ticket(IP)
    t.note_ids = {OP_NOTE}  # a replay: the note is already on the ticket
    out = apply(t, "pause", PauseArgs(reason=None), DEV, base_version=3, device_time=T0, note_id=OP_NOTE)
    assert out.new_note is None
    t = ticket(IP)
    out = apply(t, "complete", CompleteArgs(resolution_code="collected", note="x"), DEV, base_version=3,
                device_time=T0, note_id=None)
    assert out.new_note is None and t.note_ids == set()
    t = ticket(CO)
    out = apply(t, "complete", CompleteArgs(resolution_code="collected", note=None), DEV, base_version=3,
                device_time=T0, note_id=OP_NOTE)
    assert out.new_note is None and t.note_ids == set() and not t.touched
    t = ticket(CO)
    out = apply(t, "complete", CompleteArgs(resolution_code="collected", note="again"), DEV, base_version=3,
                device_time=T0, note_id=OP_NOTE)
    t.note_ids.add(uuid.uuid4())
    again = apply(t, "complete", CompleteArgs(resolution_code="collected", note="again"), DEV, base_version=3,
                  device_time=T0, note_id=OP_NOTE)
    assert out.new_note == (OP_NOTE, "again") and again.new_note is None and len(t.note_ids) == 2
