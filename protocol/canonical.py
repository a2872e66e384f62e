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
import struct
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .models import Ticket

try:  # optional: the server installs it; a client without it gets the same bytes from the standard library
    import orjson
except ImportError:  # pragma: no cover - exercised by clients, and by tests through _pure_doc_bytes
    orjson = None  # type: ignore[assignment]

__all__ = [
    "OP_NOTE_NAMESPACE",
    "ScopeChecksum",
    "canonical_bytes",
    "canonical_doc_bytes",
    "doc_hash",
    "mutation_digest",
    "op_note_id",
    "scope_checksum",
    "ticket_hash",
]

_MOD: Final = 1 << 256
_DOMAIN: Final = b"fieldsync-scope-v1\x00"
_MUTATION_DOMAIN: Final = b"fieldsync-mutation-v1\x00"
# The encoders json.dumps would build on every call with these arguments, built once (same output, byte for byte).
_MUTATION_JSON: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                                         default=repr)
_CANONICAL_JSON: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# Namespace of the ids of notes carried inside another op (complete, unable_to_complete, decline, self_report).
OP_NOTE_NAMESPACE: Final = uuid.UUID("6f1c1f57-64a4-4c5e-9a0f-5f0e3e6d8a11")


def mutation_digest(mutation: Mapping[str, Any]) -> bytes:
    """SHA-256 of one mutation exactly as decoded from the push body, so a seq reused for another body is caught.

    Canonical form: the decoded object as JSON, keys sorted at every level, separators `,` `:`, UTF-8 written raw,
    floats as shortest round-trip text, prefixed by `fieldsync-mutation-v1\\0`. It is taken over what the device
    sent (not over the validated model), so the same bytes digest alike whether the mutation was valid or rejected,
    and msgpack and JSON bodies of one mutation agree.
    """
    fast = _fast_bytes(mutation, 3) if isinstance(mutation, dict) else None  # mutation, args, item lines, an item
    raw = fast if fast is not None else _MUTATION_JSON.encode(mutation).encode("utf-8")
    return hashlib.sha256(_MUTATION_DOMAIN + raw).digest()


def op_note_id(device_id: str, seq: int) -> uuid.UUID:
    """The id of the note a status op carries: uuid5(OP_NOTE_NAMESPACE, "<device_id>/<seq>"). Deterministic, so a
    replayed mutation can never add it twice, and unique per (device, seq) like the mutation itself."""
    return uuid.uuid5(OP_NOTE_NAMESPACE, f"{device_id}/{seq}")


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
    fast = _fast_bytes(data, 1)
    return fast if fast is not None else _pure_doc_bytes(data)


def _pure_doc_bytes(data: dict[str, Any]) -> bytes:
    """The definition of the canonical bytes (standard library only); children already sorted."""
    return _CANONICAL_JSON.encode(data).encode("utf-8")


_EXACT_SCALARS: Final = frozenset({str, int, bool, type(None)})


def _same_float(value: float) -> bool:
    """orjson and `repr` write a float alike except in exponent notation, which `repr` uses below 1e-4 and from 1e16
    (tests/protocol/test_canonical_fast.py); NaN and infinities fail here, so the standard library refuses them."""
    return value == 0.0 or 1e-4 <= abs(value) < 1e15


def _flat(values: Iterable[Any], depth: int) -> bool:
    """Only JSON types orjson writes exactly as the standard library does: exact str/int/bool/None, floats outside
    exponent range, lists of those and, `depth` levels down, dicts of those (a ticket document needs two levels)."""
    for v in values:
        t = type(v)
        if t in _EXACT_SCALARS:
            continue
        if t is float:
            if not _same_float(v):
                return False
        elif t is list:
            if not _flat(v, depth):
                return False
        elif t is dict:
            if depth == 0 or not _flat(v.values(), depth - 1):
                return False
        else:
            return False
    return True


def _fast_bytes(data: dict[str, Any], depth: int) -> bytes | None:
    """The canonical bytes through orjson (several times faster on a server rendering every changed ticket and
    digesting every mutation) when `data` holds only values it writes byte for byte like the standard library's sorted,
    compact, raw-UTF-8 JSON, with dicts nested at most `depth` levels below it; None: take the pure path. Strings
    (escapes, raw UTF-8), key order and integers agree; integers beyond 64 bits, non-str keys and lone surrogates
    make orjson raise, and so fall back."""
    if orjson is None or not _flat(data.values(), depth):
        return None
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None


def ticket_hash(ticket: Ticket) -> bytes:
    """SHA-256 of the canonical bytes: the unit the scope checksum adds and removes."""
    return hashlib.sha256(canonical_bytes(ticket)).digest()


def doc_hash(doc: dict[str, Any]) -> bytes:
    """`ticket_hash` for a JSON-mode ticket document."""
    return hashlib.sha256(canonical_doc_bytes(doc)).digest()


_WORDS: dict[int, struct.Struct] = {}


def _words(n: int) -> struct.Struct:
    """A parser of n big-endian 64-bit words, kept per n (a crew's scope size recurs; bounded by the sizes seen)."""
    parser = _WORDS.get(n)
    if parser is None:
        if len(_WORDS) > 256:
            _WORDS.clear()
        parser = _WORDS[n] = struct.Struct(f">{n}Q")
    return parser


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
        """Build from all ticket hashes of a scope, in any order (one reduction at the end, not one per hash: a server
        sums a crew's whole scope on every snapshot and delta)."""
        total = count = 0
        for h in hashes:
            if len(h) != 32:
                raise ValueError("ticket hashes are 32-byte SHA-256 digests")
            total += int.from_bytes(h, "big")
            count += 1
        checksum = cls()
        checksum._total, checksum._count = total % _MOD, count
        return checksum

    @classmethod
    def of_joined(cls, joined: bytes) -> ScopeChecksum:
        """`of` for hashes given back to back in one value (how a server reads a crew's scope): each 256-bit hash as
        four big-endian 64-bit words, the words of each rank summed in C, ~3x faster than a Python loop of 200."""
        if len(joined) % 32:
            raise ValueError("ticket hashes are 32-byte SHA-256 digests")
        words = _words(len(joined) // 8).unpack(joined)
        total = (sum(words[0::4]) << 192) + (sum(words[1::4]) << 128) + (sum(words[2::4]) << 64) + sum(words[3::4])
        checksum = cls()
        checksum._total, checksum._count = total % _MOD, len(joined) // 32
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
