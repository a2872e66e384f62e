"""The TypeScript client keeps its own copy of the crew's state-machine rows and of the workable statuses (it cannot
import Python): pinned here to sync_server/domain/states.py and protocol's WORKABLE_STATUSES, so they cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

from protocol import WORKABLE_STATUSES
from sync_server.domain.states import TRANSITIONS, Actor

VIEW = Path(__file__).resolve().parents[1] / "clients" / "js" / "src" / "view.ts"
_ROW = re.compile(r'^\s*(\w+): \{ from: \[([^\]]*)\], to: "(\w+)" \},$', re.M)
_WORKABLE = re.compile(r"export function isWorkable\(status: TicketStatus\): boolean \{\s*return \[([^\]]*)\]\.includes")


def _names(listing: str) -> frozenset[str]:
    return frozenset(re.findall(r'"(\w+)"', listing))


def test_js_crew_transitions_are_the_domain_table() -> None:
    source = VIEW.read_text(encoding="utf-8")
    js = {op: (_names(src), to) for op, src, to in _ROW.findall(source)}
    crew = {a.value: ({s.value for s in sources}, target.value)
            for a, (actor, sources, target) in TRANSITIONS.items() if actor is Actor.CREW}
    assert len(crew) == 7  # acknowledge, start, pause, resume, complete, unable_to_complete, decline
    assert js == crew


def test_js_workable_statuses_are_protocols() -> None:
    m = _WORKABLE.search(VIEW.read_text(encoding="utf-8"))
    assert m is not None, "isWorkable no longer lists its statuses inline: update this pin"
    assert _names(m.group(1)) == {s.value for s in WORKABLE_STATUSES}
