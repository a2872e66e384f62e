"""The ticket state machine as one table, so a reviewer reads who may move a ticket where instead of branches."""

from __future__ import annotations

from enum import StrEnum

from protocol import (
    FIELD_DONE_STATUSES,
    HELD_STATUSES,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    WORKABLE_STATUSES,
    RemovalReason,
    TicketStatus,
)

S = TicketStatus


class Actor(StrEnum):
    """Who asks for a transition; the table grants each action to exactly one kind of actor."""

    CREW = "crew"
    SUPERVISOR = "supervisor"
    SYSTEM = "system"


class Action(StrEnum):
    """Every status-changing intent, from the crew's ops and the supervisor API."""

    ASSIGN = "assign"
    ACKNOWLEDGE = "acknowledge"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    COMPLETE = "complete"
    UNABLE_TO_COMPLETE = "unable_to_complete"
    DECLINE = "decline"
    CLOSE = "close"
    REOPEN = "reopen"
    CANCEL = "cancel"
    MARK_DUPLICATE = "mark_duplicate"


# The status sets are protocol's (SPEC §2), shared with clients; the SQL holder rule (the generated column
# tickets.holder_crew_id, migration 0014) is pinned to HELD_BY_CREW by tests/test_holder_rule.py.
OPEN: frozenset[TicketStatus] = OPEN_STATUSES
CREW_WORKABLE: frozenset[TicketStatus] = WORKABLE_STATUSES
FIELD_DONE: frozenset[TicketStatus] = FIELD_DONE_STATUSES
TERMINAL: frozenset[TicketStatus] = TERMINAL_STATUSES
# A crew's devices hold a ticket in these states (I3); they keep a finished one until a supervisor closes it.
HELD_BY_CREW: frozenset[TicketStatus] = HELD_STATUSES

# (action) -> (actor, allowed source states, target state). ASSIGNED -> IN_PROGRESS and completing straight from
# ASSIGNED are allowed because crews routinely skip the acknowledge tap while offline; refusing that work would
# lose it (I5), and the audit log still shows the exact path.
TRANSITIONS: dict[Action, tuple[Actor, frozenset[TicketStatus], TicketStatus]] = {
    Action.ASSIGN:             (Actor.SUPERVISOR, OPEN, S.ASSIGNED),
    Action.ACKNOWLEDGE:        (Actor.CREW, frozenset({S.ASSIGNED, S.REOPENED}), S.ACKNOWLEDGED),
    Action.START:              (Actor.CREW, frozenset({S.ASSIGNED, S.ACKNOWLEDGED, S.REOPENED}), S.IN_PROGRESS),
    Action.PAUSE:              (Actor.CREW, frozenset({S.IN_PROGRESS}), S.PAUSED),
    Action.RESUME:             (Actor.CREW, frozenset({S.PAUSED}), S.IN_PROGRESS),
    Action.COMPLETE:           (Actor.CREW, CREW_WORKABLE, S.COMPLETED),
    Action.UNABLE_TO_COMPLETE: (Actor.CREW, CREW_WORKABLE, S.UNABLE_TO_COMPLETE),
    Action.DECLINE:            (Actor.CREW, frozenset({S.ASSIGNED, S.ACKNOWLEDGED, S.REOPENED}), S.UNASSIGNED),
    Action.CLOSE:              (Actor.SUPERVISOR, FIELD_DONE, S.CLOSED),
    Action.REOPEN:             (Actor.SUPERVISOR, frozenset({S.CLOSED}), S.REOPENED),
    Action.CANCEL:             (Actor.SUPERVISOR, OPEN, S.CANCELLED),
    Action.MARK_DUPLICATE:     (Actor.SUPERVISOR, OPEN, S.DUPLICATE),
}

# Progress order for "never move backwards": a transition to a lower rank than the current state is stale.
RANK: dict[TicketStatus, int] = {
    S.UNASSIGNED: 0, S.ASSIGNED: 1, S.REOPENED: 1, S.ACKNOWLEDGED: 2, S.IN_PROGRESS: 3, S.PAUSED: 3,
    S.COMPLETED: 4, S.UNABLE_TO_COMPLETE: 4, S.CLOSED: 5, S.CANCELLED: 5, S.DUPLICATE: 5,
}

_REMOVAL_BY_STATUS: dict[TicketStatus, RemovalReason] = {
    S.CANCELLED: RemovalReason.CANCELLED,
    S.DUPLICATE: RemovalReason.DUPLICATE,
    S.CLOSED: RemovalReason.CLOSED,
    S.UNASSIGNED: RemovalReason.DECLINED,
}


class TransitionError(ValueError):
    """An action the table does not allow from the ticket's current state or for this actor."""

    def __init__(self, action: Action, current: TicketStatus, actor: Actor) -> None:
        super().__init__(f"cannot {action.value} a ticket that is {current.value} (as {actor.value})")
        self.action, self.current, self.actor = action, current, actor


def transition(current: TicketStatus, action: Action, actor: Actor) -> TicketStatus:
    """Target state of `action`, or TransitionError; the system may do whatever a supervisor may."""
    owner, sources, target = TRANSITIONS[action]
    if owner is not actor and not (actor is Actor.SYSTEM and owner is Actor.SUPERVISOR):
        raise TransitionError(action, current, actor)
    if current not in sources:
        raise TransitionError(action, current, actor)
    return target


def holder(status: TicketStatus, crew_id: int | None) -> int | None:
    """Which crew's devices hold a ticket in this state (I3)."""
    return crew_id if crew_id is not None and status in HELD_BY_CREW else None


def removal_reason(new_status: TicketStatus, crew_changed: bool) -> RemovalReason:
    """Why the previous holder lost the ticket, as told to its devices."""
    if new_status in _REMOVAL_BY_STATUS:
        return _REMOVAL_BY_STATUS[new_status]
    return RemovalReason.REASSIGNED if crew_changed else RemovalReason.UNASSIGNED


def open311_status(status: TicketStatus) -> str:
    """Open311 GeoReport v2 knows only open and closed."""
    return "closed" if status in TERMINAL or status in FIELD_DONE else "open"
