"""A device's local replica: applies a pull's page set all or nothing (I7) and checks itself against the scope checksum (I4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from protocol import PullResponse, ScopeChecksum, Ticket, TicketRemoval, TicketUpsert, ticket_hash


@dataclass
class Replica:
    """Tickets by id plus the cursor; exactly what a phone persists.

    Ticket hashes are cached per ticket object (tickets are frozen models), so checking the scope
    checksum after every pull costs one hash per changed ticket instead of one per held ticket;
    that is what lets one simulator process keep hundreds of replicas. `full_checksum` ignores
    the cache, for verdicts that must not trust anything computed earlier.
    """

    tickets: dict[UUID, Ticket] = field(default_factory=dict)
    cursor: str | None = None
    checksum: str | None = None
    watermark: int = 0
    _hashes: dict[UUID, tuple[Ticket, bytes]] = field(default_factory=dict, repr=False, compare=False)

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

    def put(self, ticket: Ticket) -> None:
        """Take the server's ticket from a push result (SPEC §5: replace the replica's copy)."""
        self.tickets[ticket.id] = ticket

    def drop(self, ticket_id: UUID) -> None:
        """The push result says the crew no longer holds the ticket."""
        self.tickets.pop(ticket_id, None)

    def _hash(self, ticket: Ticket) -> bytes:
        cached = self._hashes.get(ticket.id)
        if cached is not None and cached[0] is ticket:
            return cached[1]
        h = ticket_hash(ticket)
        self._hashes[ticket.id] = (ticket, h)
        return h

    def local_checksum(self) -> str:
        """Checksum of what this replica holds, computed exactly as the server does."""
        if len(self._hashes) > 2 * len(self.tickets) + 64:  # forget removed tickets now and then
            self._hashes = {k: v for k, v in self._hashes.items() if k in self.tickets}
        return ScopeChecksum.of(self._hash(t) for t in self.tickets.values()).hexdigest()

    def full_checksum(self) -> str:
        """The checksum recomputed from scratch (no cache)."""
        return ScopeChecksum.of(ticket_hash(t) for t in self.tickets.values()).hexdigest()

    def converged(self) -> bool:
        """Whether the replica equals the server's view of the scope as of the last pull."""
        return self.checksum is not None and self.local_checksum() == self.checksum
