"""The verdict: after the quiesce, compare what every device was told with what the server holds (I1, I4, I5, I8, I9).

Everything is read through the supervisor/admin API, as an auditor would: the ticket list (current state),
each touched ticket's audit history (one row per applied crew mutation, keyed by device and seq), the
conflict list (late field reports), and the photo endpoints (bytes hashed again here).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol import HELD_STATUSES, Ticket, canonical_bytes, scope_checksum
from protocol.canonical import op_note_id

from .supervisor import gather_bounded
from .transport import SimHttpError

if TYPE_CHECKING:
    from .fleet import Fleet

MARKER = re.compile(r"\[([^\[\]:]+):([0-9a-f]{8})\]")
KEEP_EXAMPLES = 20


@dataclass
class Verdict:
    """Counts of every kind of failure, with a few examples each; `ok` only when all are zero."""

    unresolved: int = 0
    lost: int = 0
    duplicated: int = 0
    diverged_devices: int = 0
    broken_devices: int = 0
    photos_verified: int = 0
    photo_failures: int = 0
    photos_stuck: int = 0
    late_reports_missing: int = 0
    audit_missing: int = 0
    conflicts: Counter[str] = field(default_factory=Counter)
    late_reports: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def fail(self, kind: str, text: str, n: int = 1) -> None:
        """Count a failure and keep an example for the report."""
        setattr(self, kind, getattr(self, kind) + n)
        if len(self.examples[kind]) < KEEP_EXAMPLES:
            self.examples[kind].append(text)

    @property
    def ok(self) -> bool:
        """Exit status 0 only if every check holds."""
        return not (self.unresolved or self.lost or self.duplicated or self.diverged_devices or self.broken_devices
                    or self.photo_failures or self.photos_stuck or self.late_reports_missing or self.audit_missing)


def _status(t: Ticket) -> str:
    return t.status.value if hasattr(t.status, "value") else str(t.status)


async def judge(fleet: Fleet) -> Verdict:
    """Run every check against the server's current state."""
    v = Verdict()
    ids = {d.id for d in fleet.devices}
    for msg in fleet.violations:
        v.fail("duplicated", msg)
    if fleet.quiesce_timed_out:
        v.fail("unresolved", f"quiesce did not finish within {fleet.config.quiesce_timeout_s:.0f} s")
    for d in fleet.devices:
        if d.broken is not None:
            v.fail("broken_devices", f"{d.id}: {d.broken}")
        if d.outbox:
            v.fail("unresolved", f"{d.id}: {len(d.outbox)} mutations still in the outbox", 0)
        for p in d.photos:  # a photo the quiesce could not deliver is field evidence the server never got (I8)
            v.fail("photos_stuck", f"{d.id}: photo {p.sha256[:12]} on {p.ticket_id} still in the gallery "
                                   f"(offset {p.offset}, {'session open' if p.url else 'no session'})")
    for e in fleet.ledger.values():
        if e.status is None:
            v.fail("unresolved", f"{e.device} seq {e.seq} {e.op}: no result")
    tickets = {t.id: t for t in await fleet.admin.tickets()}
    by_str = {str(k): t for k, t in tickets.items()}
    _check_effects(fleet, v, by_str)
    _check_duplicates(v, tickets.values(), ids)
    await _check_audit(fleet, v)
    _check_replicas(fleet, v, tickets.values())
    await _check_photos(fleet, v, by_str)
    await _check_conflicts(fleet, v, ids)
    return v


def _check_effects(fleet: Fleet, v: Verdict, tickets: dict[str, Ticket]) -> None:
    """Every applied or merged mutation's effect is on the server (zero lost, I5)."""
    for e in fleet.ledger.values():
        if e.status not in ("applied", "merged"):
            continue
        t = tickets.get(e.ticket_id)
        where = f"{e.device} seq {e.seq} {e.op} on {e.ticket_id}"
        note = e.args.get("note") if isinstance(e.args, dict) else None
        if note:  # a note riding on a status op or self-report must be a ticket note, under its derived id
            nid = str(op_note_id(e.device, e.seq))
            if t is None or (nid, note) not in {(str(n.id), n.text) for n in t.notes}:
                v.fail("lost", f"{where}: its note {nid} missing")
        if e.op == "add_note":
            if t is None or e.args["note_id"] not in {str(n.id) for n in t.notes}:
                v.fail("lost", f"{where}: note {e.args['note_id']} missing")
        elif e.op == "attach_photo":
            if t is None or (e.args["sha256"], e.args["kind"]) not in {(p.sha256, str(p.kind.value)) for p in t.photos}:
                v.fail("lost", f"{where}: photo ref missing")
        elif e.op == "self_report":
            if t is None or t.created_by_device != e.device:
                v.fail("lost", f"{where}: self-reported ticket missing")
        elif e.op == "complete" and (e.status == "applied" or any(c.get("kept") == "completed" for c in e.conflicts)):
            if t is None or _status(t) not in ("completed", "closed"):
                v.fail("lost", f"{where}: completion missing (ticket is {t and _status(t)})")
        elif e.op == "unable_to_complete" and e.status == "applied":
            if t is None or _status(t) not in ("unable_to_complete", "closed"):
                v.fail("lost", f"{where}: unable-to-complete missing (ticket is {t and _status(t)})")


def _check_duplicates(v: Verdict, tickets: Any, ids: set[str]) -> None:
    """No note, photo or self-report twice (zero duplicated, I1)."""
    reports: Counter[str] = Counter()
    for t in tickets:
        note_ids = Counter(str(n.id) for n in t.notes)
        markers = Counter(m.group(0) for n in t.notes for m in [MARKER.search(n.text)] if m and m.group(1) in ids)
        photos = Counter((p.sha256, p.kind) for p in t.photos)
        for what, counts in (("note id", note_ids), ("note text", markers), ("photo", photos)):
            for key, n in counts.items():
                if n > 1:
                    v.fail("duplicated", f"ticket {t.id}: {what} {key} x{n}")
        if t.created_by_device in ids:
            m = MARKER.search(t.description)
            if m:
                reports[m.group(0)] += 1
    for key, n in reports.items():
        if n > 1:
            v.fail("duplicated", f"self-report {key} created {n} tickets")


async def _check_audit(fleet: Fleet, v: Verdict) -> None:
    """Each applied crew mutation has exactly one audit row (device, seq); two rows mean it was applied twice."""
    touched: dict[str, list[Any]] = defaultdict(list)
    for e in fleet.ledger.values():
        if e.status in ("applied", "merged"):
            touched[e.ticket_id].append(e)

    async def one(tid: str) -> tuple[str, dict[str, Any] | None]:
        try:
            return tid, await fleet.admin.call("GET", f"/v1/tickets/{tid}")
        except SimHttpError:
            return tid, None

    for tid, detail in await gather_bounded([one(t) for t in touched], 16):
        if detail is None:
            for e in touched[tid]:
                v.fail("lost", f"{e.device} seq {e.seq} {e.op}: ticket {tid} not found")
            continue
        rows: Counter[tuple[str, int]] = Counter()
        for h in detail["history"]:
            after = h.get("after") or {}
            if h.get("actor_kind") == "device" and isinstance(after, dict) and "seq" in after:
                rows[(h["actor"], after["seq"])] += 1
        for e in touched[tid]:
            n = rows.get((e.device, e.seq), 0)
            if n > 1:
                v.fail("duplicated", f"{e.device} seq {e.seq} {e.op}: {n} audit rows")
            elif n == 0 and e.status == "applied" and not detail.get("history_truncated"):
                v.fail("audit_missing", f"{e.device} seq {e.seq} {e.op} on {tid}: applied but no audit row")


def _check_replicas(fleet: Fleet, v: Verdict, tickets: Any) -> None:
    """Each replica equals the server's view of its crew's scope: checksum and ticket by ticket (I4)."""
    scopes: dict[str, dict[Any, Ticket]] = defaultdict(dict)
    for t in tickets:
        if t.crew is not None and _status(t) in HELD_STATUSES:
            scopes[t.crew][t.id] = t
    for d in fleet.devices:
        if d.broken is not None:
            continue
        server = scopes.get(d.creds.crew, {})
        rep = d.replica
        problems = []
        if rep.full_checksum() != rep.checksum:
            problems.append("replica does not match its last pull's scope checksum")
        if scope_checksum(server.values()) != rep.checksum:
            problems.append("last pull's scope checksum differs from the supervisor API's scope")
        missing, extra = server.keys() - rep.tickets.keys(), rep.tickets.keys() - server.keys()
        if missing or extra:
            problems.append(f"{len(missing)} tickets missing, {len(extra)} extra")
        differ = [tid for tid in server.keys() & rep.tickets.keys()
                  if canonical_bytes(server[tid]) != canonical_bytes(rep.tickets[tid])]
        if differ:
            problems.append(f"{len(differ)} tickets differ (e.g. {differ[0]})")
        if problems:
            v.fail("diverged_devices", f"{d.id} ({d.creds.crew}): " + "; ".join(problems))


async def _check_photos(fleet: Fleet, v: Verdict, tickets: dict[str, Ticket]) -> None:
    """Every uploaded photo is available on its ticket and its bytes hash to its name (I8)."""
    async def one(key: tuple[str, str, str]) -> None:
        sha, tid, kind = key
        t = tickets.get(tid)
        refs = {(p.sha256, p.kind.value): p for p in t.photos} if t is not None else {}
        ref = refs.get((sha, kind))
        if ref is None or ref.state.value != "available":
            v.fail("photo_failures", f"photo {sha[:12]} on {tid}: {'not available' if ref else 'no reference'}")
            return
        try:
            listing = await fleet.admin.call("GET", f"/v1/tickets/{tid}/photos")
            data = await fleet.admin.raw(f"/v1/photos/{sha}?variant=original")
        except SimHttpError as exc:
            v.fail("photo_failures", f"photo {sha[:12]} on {tid}: {exc}")
            return
        stored = Counter((p["sha256"], p["kind"]) for p in listing["photos"])
        if stored[(sha, kind)] != 1:
            v.fail("duplicated" if stored[(sha, kind)] > 1 else "photo_failures",
                   f"photo {sha[:12]} on {tid}: listed {stored[(sha, kind)]} times")
        if hashlib.sha256(data).hexdigest() != sha:
            v.fail("photo_failures", f"photo {sha[:12]}: downloaded bytes hash differently")
            return
        v.photos_verified += 1

    await gather_bounded([one(k) for k in fleet.uploaded], 8)


async def _check_conflicts(fleet: Fleet, v: Verdict, ids: set[str]) -> None:
    """Every late field report a device was told about is visible to supervisors (I5)."""
    rows = [c for c in await fleet.admin.conflicts() if c.get("device_id") in ids]
    seen = {(c["device_id"], c["seq"], c["kind"]) for c in rows}
    for c in rows:
        v.conflicts[c["kind"]] += 1
    for e in fleet.ledger.values():
        if e.status == "merged" and e.reason == "late_field_report":
            v.late_reports[e.op] += 1
            if (e.device, e.seq, "late_field_report") not in seen:
                v.fail("late_reports_missing", f"{e.device} seq {e.seq} {e.op}: no late_field_report row")
