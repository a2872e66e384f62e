"""The one path by which any ticket change becomes visible: reload the documents, log the change (I2/I3), audit it (I9)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg

from protocol import TicketStatus
from sync_server.domain.states import removal_reason
from sync_server.domain.ticket import TicketRecord
from sync_server.storage.tickets import ChangeEntry, audit, load_tickets, record_changes


_SKIP = frozenset({"version", "updated_at"})


def changed_fields(before: TicketRecord | None, after: TicketRecord) -> tuple[str, ...]:
    """Top-level fields that differ, compared on the wire documents."""
    new = after.doc
    if before is None:
        return tuple(sorted(k for k in new if k not in _SKIP))
    old = before.doc
    return tuple(sorted(k for k in new if k not in _SKIP and old.get(k) != new[k]))


def diff(before: TicketRecord | None, after: TicketRecord) -> tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]:
    """Changed fields with their before/after wire values, for audit rows."""
    changed = changed_fields(before, after)
    new = {k: after.doc[k] for k in changed}
    if before is None:
        return changed, {}, new
    return changed, {k: before.doc.get(k) for k in changed}, new


def change_entries(
    before: Mapping[UUID, TicketRecord | None],
    after: Mapping[UUID, TicketRecord],
    *,
    actor_kind: str,
    actor: str,
    action: str,
    reason: str | None = None,
    audit_rows: bool = True,
) -> tuple[list[ChangeEntry], list[tuple[str, str, str, UUID | None, int | None, Any, Any, str | None]]]:
    """Change-log entries (who lost each ticket and why, which fields changed) and audit rows, in `before`'s order."""
    entries: list[ChangeEntry] = []
    audits: list[tuple[str, str, str, UUID | None, int | None, Any, Any, str | None]] = []
    for tid, old in before.items():  # caller's order: the lock order, so log ids follow it
        rec = after[tid]
        prev_crew = old.holder_crew_id if old is not None and old.holder_crew_id not in (None, rec.holder_crew_id) else None
        why = None
        if prev_crew is not None:
            why = removal_reason(TicketStatus(rec.doc["status"]), crew_changed=old is not None and old.crew_id != rec.crew_id).value
        if audit_rows:
            changed, b, a = diff(old, rec)
            audits.append((actor_kind, actor, action, tid, rec.department_id, b or None, a, reason))
        else:
            changed = changed_fields(old, rec)
        entries.append(ChangeEntry(rec, prev_crew, why, changed))
    return entries, audits


async def commit_changes(
    conn: asyncpg.Connection,
    before: Mapping[UUID, TicketRecord | None],
    *,
    actor_kind: str,
    actor: str,
    action: str,
    reason: str | None = None,
    audit_rows: bool = True,
    notify: bool = True,
) -> dict[UUID, TicketRecord]:
    """After the caller changed rows of locked tickets: re-render them, store each document with its hash, append
    change-log rows and audit, return the new documents. Every writer of ticket state outside the push's one-statement
    path ends here, so no writer can leave a stored document behind its rows."""
    after = await load_tickets(conn, before.keys())
    entries, audits = change_entries(before, after, actor_kind=actor_kind, actor=actor, action=action, reason=reason,
                                     audit_rows=audit_rows)
    await record_changes(conn, entries, actor, notify=notify)
    await audit(conn, audits)
    return after
