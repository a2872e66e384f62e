"""The one ticket value: a ticket's wire document with the server-only columns the engine decides with, and the two
derivations a push needs, so no second form of a ticket is kept in step by hand: the fold's working state from the
value (TicketRecord.work) and the next value from the fold's state (TicketRecord.advanced). Pure (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from uuid import UUID

from protocol import Ticket, TicketStatus
from sync_server.domain.conflicts import WorkTicket
from sync_server.domain.document import NewNote, Rendered, next_doc, render
from sync_server.domain.states import holder


# not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs several times a plain one's, and a
# push builds two of these per ticket it changes
@dataclass
class TicketRecord:
    """A ticket's wire document plus the server-only columns the engine decides with."""

    doc: dict[str, Any]
    department_id: int
    crew_id: int | None
    holder_crew_id: int | None
    field_meta: dict[str, Any] = field(default_factory=dict)
    duplicate_of: UUID | None = None

    @cached_property
    def ticket(self) -> Ticket:
        """The validated model, built only when a caller needs one (supervisor answers, uploads)."""
        return Ticket.model_validate(self.doc)

    @cached_property
    def rendered(self) -> Rendered:
        """The document's stored forms, rendered once however many writers and answers need them (the document is
        never changed in place: a change is a new record)."""
        return render(self.doc)

    @cached_property
    def id(self) -> UUID:
        """Ticket id (parsed once: a push asks for it several times per ticket)."""
        return UUID(self.doc["id"])

    def known_id(self, tid: UUID) -> TicketRecord:
        """This record with its id already in place (the cache `id` fills), for a caller that holds the UUID: spares
        parsing it back from the document's text."""
        self.__dict__["id"] = tid
        return self

    def work(self, ever_held_by: set[int]) -> WorkTicket:
        """The fold's working state of this ticket, read from the value itself (`ever_held_by`: crews known to have
        held it, which the document does not say)."""
        d = self.doc
        return WorkTicket(
            id=self.id, status=TicketStatus(d["status"]), crew_id=self.crew_id, department_id=self.department_id,
            version=d["version"], resolution_code=d["resolution_code"], reason_code=d["reason_code"],
            items={i["item_type"]: i["count"] for i in d["items"]}, note_ids={UUID(n["id"]) for n in d["notes"]},
            photos={(p["sha256"], p["kind"]) for p in d["photos"]}, field_meta=dict(self.field_meta),
            ever_held_by=ever_held_by, created_by_device=d["created_by_device"],
        )

    def advanced(self, t: WorkTicket, *, crew_name: str, updated_at: str, notes: list[NewNote],
                 photos: list[dict[str, Any]] | None) -> TicketRecord:
        """The value after a fold left this ticket in state `t` (a version later), with the notes and photo entries
        the fold added; a crew the fold set can only be the pushing crew (`crew_name`)."""
        crew = self.doc["crew"] if t.crew_id == self.crew_id else (None if t.crew_id is None else crew_name)
        doc = next_doc(self.doc, status=t.status._value_, crew=crew, resolution_code=t.resolution_code,
                       reason_code=t.reason_code, items=t.items, notes=notes, version=t.version + 1,
                       updated_at=updated_at, photos=photos)
        return TicketRecord(doc=doc, department_id=self.department_id, crew_id=t.crew_id,
                            holder_crew_id=holder(t.status, t.crew_id), field_meta=t.field_meta,
                            duplicate_of=self.duplicate_of).known_id(t.id)
