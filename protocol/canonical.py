"""Canonical ticket bytes and the order-independent scope checksum (invariant I4).

Server and devices must compute these byte for byte alike, so the rules are few and
spelled out in SPEC.md §Canonical form:

* JSON, keys sorted, separators `,` `:`, no insignificant whitespace, UTF-8 (non-ASCII
  characters written raw, not `\\u` escaped);
* datetimes as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, dates `YYYY-MM-DD`, UUIDs lowercase;
* floats as Python `repr` (shortest text that round-trips; integral values keep `.0`);
* notes sorted by (created_at, id), photos by (sha256, kind), items by item_type, because
  these collections are sets whose arrival order differs between devices.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, Final

from .models import Ticket

__all__ = ["ScopeChecksum", "canonical_bytes", "canonical_doc_bytes", "doc_hash", "scope_checksum", "ticket_hash"]

_MOD: Final = 1 << 256
_DOMAIN: Final = b"fieldsync-scope-v1\x00"


def canonical_bytes(ticket: Ticket) -> bytes:
    """One byte string per ticket state, so replicas can be compared without a diff."""
    return canonical_doc_bytes(ticket.model_dump(mode="json"))


def canonical_doc_bytes(doc: dict[str, Any]) -> bytes:
    """The same bytes from a ticket's JSON-mode document (as `Ticket.model_dump(mode="json")` gives it), for
    callers that hold documents rather than models; `canonical_bytes` is defined through this, so they cannot drift.

    Sorting the rendered values is the same order as sorting the models: canonical UTC timestamps of fixed width
    sort chronologically as text, and UUIDs are lowercase.
    """
    data = dict(doc)
    data["notes"] = sorted(doc["notes"], key=lambda n: (n["created_at"], n["id"]))
    data["photos"] = sorted(doc["photos"], key=lambda p: (p["sha256"], p["kind"]))
    data["items"] = sorted(doc["items"], key=lambda i: i["item_type"])
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def ticket_hash(ticket: Ticket) -> bytes:
    """SHA-256 of the canonical bytes: the unit the scope checksum adds and removes."""
    return hashlib.sha256(canonical_bytes(ticket)).digest()


def doc_hash(doc: dict[str, Any]) -> bytes:
    """`ticket_hash` for a JSON-mode ticket document."""
    return hashlib.sha256(canonical_doc_bytes(doc)).digest()


class ScopeChecksum:
    """Multiset hash: sum of ticket hashes mod 2**256 plus a count.

    A sum (not XOR) because XOR cancels a hash added twice, hiding exactly the
    double-apply bug the checksum exists to catch; the count makes the empty scope
    differ from any non-empty one. It is incremental, so the server can keep it per
    scope and adjust it on each change without rereading the scope.
    """

    __slots__ = ("_count", "_total")

    def __init__(self) -> None:
        self._total = 0
        self._count = 0

    @classmethod
    def of(cls, hashes: Iterable[bytes]) -> ScopeChecksum:
        """Build from all ticket hashes of a scope, in any order."""
        checksum = cls()
        for h in hashes:
            checksum.add(h)
        return checksum

    @staticmethod
    def _value(h: bytes) -> int:
        """Interpret a 32-byte digest as a big-endian integer."""
        if len(h) != 32:
            raise ValueError("ticket hashes are 32-byte SHA-256 digests")
        return int.from_bytes(h, "big")

    def add(self, h: bytes) -> None:
        """A ticket entered the scope (or its new state after an update)."""
        self._total = (self._total + self._value(h)) % _MOD
        self._count += 1

    def remove(self, h: bytes) -> None:
        """A ticket left the scope (or its old state before an update)."""
        if self._count == 0:
            raise ValueError("cannot remove from an empty scope checksum")
        self._total = (self._total - self._value(h)) % _MOD
        self._count -= 1

    @property
    def count(self) -> int:
        """Number of tickets currently summed."""
        return self._count

    def hexdigest(self) -> str:
        """64 hex chars; hashing the state keeps the wire value fixed-size and opaque."""
        state = _DOMAIN + self._count.to_bytes(8, "big") + self._total.to_bytes(32, "big")
        return hashlib.sha256(state).hexdigest()

    def __eq__(self, other: object) -> bool:
        """Equal when the multisets of hashes are (almost surely) equal."""
        if not isinstance(other, ScopeChecksum):
            return NotImplemented
        return (self._count, self._total) == (other._count, other._total)

    def __hash__(self) -> int:
        """Hash consistent with equality (the object is mutable: do not key dicts by it)."""
        return hash((self._count, self._total))

    def __repr__(self) -> str:
        """Show the digest, which is what devices compare."""
        return f"ScopeChecksum(count={self._count}, digest={self.hexdigest()[:16]}…)"


def scope_checksum(tickets: Iterable[Ticket]) -> str:
    """The value a pull page carries and a device recomputes over its replica (I4)."""
    return ScopeChecksum.of(ticket_hash(t) for t in tickets).hexdigest()
