"""A device's local replica: applies a pull's page set all or nothing (I7) and checks itself against the scope checksum (I4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from protocol import PullResponse, Ticket, TicketRemoval, TicketUpsert, scope_checksum


@dataclass
class Replica:
    """Tickets by id plus the cursor; exactly what a phone persists."""

    tickets: dict[UUID, Ticket] = field(default_factory=dict)
    cursor: str | None = None
    checksum: str | None = None
    watermark: int = 0

    def apply_pages(self, pages: list[PullResponse]) -> None:
        """Apply one pull's complete page set; a reset replaces the replica (the outbox lives elsewhere and survives)."""
        if not pages:
            return
        staged = {} if pages[0].reset else dict(self.tickets)
        for page in pages:
            for ch in page.changes:
                if isinstance(ch, TicketUpsert):
                    staged[ch.ticket.id] = ch.ticket
                elif isinstance(ch, TicketRemoval):
                    staged.pop(ch.ticket_id, None)
        self.tickets = staged
        self.cursor = pages[-1].cursor
        self.checksum = pages[-1].scope_checksum
        self.watermark = pages[-1].watermark

    def local_checksum(self) -> str:
        """Checksum of what this replica holds, computed exactly as the server does."""
        return scope_checksum(self.tickets.values())

    def converged(self) -> bool:
        """Whether the replica equals the server's view of the scope as of the last pull."""
        return self.checksum is not None and self.local_checksum() == self.checksum
