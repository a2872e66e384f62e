"""The state machine pinned by hand: every (action, status, actor) cell written out here, never read from the table.

The expectations come from docs and SPEC §2 (who may move a ticket where), so editing a row of
sync_server/domain/states.py without editing this file fails a test.
"""

from __future__ import annotations

import pytest

from protocol import RemovalReason, TicketStatus
from sync_server.domain.states import (
    RANK, Action, Actor, TransitionError, holder, open311_status, removal_reason, transition,
)

# Status short names, so each table row below reads like the design.
UN, AS, AK, IP, PA = "unassigned", "assigned", "acknowledged", "in_progress", "paused"
CO, UC, CL, CA, DU, RE = "completed", "unable_to_complete", "closed", "cancelled", "duplicate", "reopened"
ALL = (UN, AS, AK, IP, PA, CO, UC, CL, CA, DU, RE)

# action -> (the one actor the design grants it to, {source status: target status}); every other source is refused.
EXPECTED: dict[str, tuple[str, dict[str, str]]] = {
    "assign":             ("supervisor", {UN: AS, AS: AS, AK: AS, IP: AS, PA: AS, RE: AS}),
    "acknowledge":        ("crew", {AS: AK, RE: AK}),
    "start":              ("crew", {AS: IP, AK: IP, RE: IP}),
    "pause":              ("crew", {IP: PA}),
    "resume":             ("crew", {PA: IP}),
    "complete":           ("crew", {AS: CO, AK: CO, IP: CO, PA: CO, RE: CO}),
    "unable_to_complete": ("crew", {AS: UC, AK: UC, IP: UC, PA: UC, RE: UC}),
    "decline":            ("crew", {AS: UN, AK: UN, RE: UN}),
    "close":              ("supervisor", {CO: CL, UC: CL}),
    "reopen":             ("supervisor", {CL: RE}),
    "cancel":             ("supervisor", {UN: CA, AS: CA, AK: CA, IP: CA, PA: CA, RE: CA}),
    "mark_duplicate":     ("supervisor", {UN: DU, AS: DU, AK: DU, IP: DU, PA: DU, RE: DU}),
}
# The system (automatic close, intake) may do what a supervisor may, and nothing a crew may.
MAY = {"crew": {"crew"}, "supervisor": {"supervisor", "system"}}

CELLS = [(a, s, actor) for a in EXPECTED for s in ALL for actor in ("crew", "supervisor", "system")]


def test_the_hand_table_names_every_action_and_status() -> None:
    assert set(EXPECTED) == {a.value for a in Action}
    assert set(ALL) == {s.value for s in TicketStatus}


@pytest.mark.parametrize(("action", "src", "actor"), CELLS, ids=[f"{a}:{s}:{r}" for a, s, r in CELLS])
def test_transition_cell(action: str, src: str, actor: str) -> None:
    owner, moves = EXPECTED[action]
    current, act, who = TicketStatus(src), Action(action), Actor(actor)
    if actor in MAY[owner] and src in moves:
        assert transition(current, act, who) is TicketStatus(moves[src])
    else:
        with pytest.raises(TransitionError) as info:
            transition(current, act, who)
        assert (info.value.action, info.value.current, info.value.actor) == (act, current, who)
        assert str(info.value) == f"cannot {action} a ticket that is {src} (as {actor})"


def test_resume_goes_back_to_work_not_to_pause() -> None:
    assert transition(TicketStatus.PAUSED, Action.RESUME, Actor.CREW) is TicketStatus.IN_PROGRESS


def test_a_crew_cannot_do_supervisor_work_even_from_a_legal_state() -> None:
    for action, src in (("assign", UN), ("close", CO), ("reopen", CL), ("cancel", AS), ("mark_duplicate", IP)):
        with pytest.raises(TransitionError):
            transition(TicketStatus(src), Action(action), Actor.CREW)


def test_neither_supervisor_nor_system_can_do_crew_work() -> None:
    for actor in (Actor.SUPERVISOR, Actor.SYSTEM):
        for action, src in (("acknowledge", AS), ("start", AK), ("pause", IP), ("resume", PA), ("complete", IP),
                            ("unable_to_complete", IP), ("decline", AS)):
            with pytest.raises(TransitionError):
                transition(TicketStatus(src), Action(action), actor)


# Which crew's devices hold a ticket (I3): the assigned crew in these states, nobody in the others.
HELD = {AS, AK, IP, PA, RE, CO, UC}


@pytest.mark.parametrize("status", ALL)
def test_holder(status: str) -> None:
    expected = 7 if status in HELD else None
    assert holder(TicketStatus(status), 7) == expected
    assert holder(TicketStatus(status), None) is None
    assert holder(TicketStatus(status), 0) == (0 if status in HELD else None)  # crew id 0 is a crew, not "nobody"


# Why the previous holder lost the ticket: (new status, crew changed) -> reason told to its devices.
REMOVAL = {
    (CA, False): "cancelled", (CA, True): "cancelled",
    (DU, False): "duplicate", (DU, True): "duplicate",
    (CL, False): "closed", (CL, True): "closed",
    (UN, False): "declined", (UN, True): "declined",
    (AS, True): "reassigned", (AK, True): "reassigned", (IP, True): "reassigned", (PA, True): "reassigned",
    (RE, True): "reassigned", (CO, True): "reassigned", (UC, True): "reassigned",
    (AS, False): "unassigned", (AK, False): "unassigned", (IP, False): "unassigned", (PA, False): "unassigned",
    (RE, False): "unassigned", (CO, False): "unassigned", (UC, False): "unassigned",
}


@pytest.mark.parametrize(("status", "crew_changed"), sorted(REMOVAL), ids=[f"{s}:{c}" for s, c in sorted(REMOVAL)])
def test_removal_reason(status: str, crew_changed: bool) -> None:
    assert removal_reason(TicketStatus(status), crew_changed) is RemovalReason(REMOVAL[(status, crew_changed)])


OPEN311 = {UN: "open", AS: "open", AK: "open", IP: "open", PA: "open", RE: "open",
           CO: "closed", UC: "closed", CL: "closed", CA: "closed", DU: "closed"}


@pytest.mark.parametrize("status", ALL)
def test_open311_status(status: str) -> None:
    assert open311_status(TicketStatus(status)) == OPEN311[status]


def test_progress_order_of_the_design() -> None:
    """"Never move backwards" compares ranks: unassigned < assigned = reopened < acknowledged < in_progress = paused
    < completed = unable_to_complete < closed = cancelled = duplicate (the design's order, pause is not a step back)."""
    r = {s.value: n for s, n in RANK.items()}
    assert set(r) == set(ALL)
    assert r[UN] < r[AS] == r[RE] < r[AK] < r[IP] == r[PA] < r[CO] == r[UC] < r[CL] == r[CA] == r[DU]
