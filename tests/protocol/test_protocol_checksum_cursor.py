"""Canonical form, scope checksum (I4) and signed cursors (I3)."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol as p
from protocol_strategies import notes, photos, tickets

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = b"s" * 32


@SETTINGS
@given(st.lists(tickets, min_size=1, max_size=6, unique_by=lambda t: t.id), st.randoms())
def test_scope_checksum_is_order_independent(ts: list[p.Ticket], rnd: Any) -> None:
    shuffled = list(ts)
    rnd.shuffle(shuffled)
    assert p.scope_checksum(ts) == p.scope_checksum(shuffled)


@SETTINGS
# Notes are keyed by id and photos by (sha256, kind) (unique in storage, deduplicated by the merge table), so the
# sort keys are a total order only over such sets: duplicates would make the order depend on arrival.
@given(tickets, st.lists(notes, max_size=4, unique_by=lambda n: n.id),
       st.lists(photos, max_size=3, unique_by=lambda ph: (ph.sha256, ph.kind)), st.randoms())
def test_canonical_bytes_ignore_collection_order(
    ticket: p.Ticket, ns: list[p.Note], ps: list[p.PhotoRef], rnd: Any
) -> None:
    a = ticket.model_copy(update={"notes": ns, "photos": ps, "items": ticket.items})
    ns2, ps2, is2 = list(ns), list(ps), list(ticket.items)
    rnd.shuffle(ns2)
    rnd.shuffle(ps2)
    rnd.shuffle(is2)
    b = ticket.model_copy(update={"notes": ns2, "photos": ps2, "items": is2})
    assert p.canonical_bytes(a) == p.canonical_bytes(b)


@SETTINGS
@given(tickets)
def test_canonical_bytes_survive_both_encodings(ticket: p.Ticket) -> None:
    for media in (p.JSON, p.MSGPACK):
        back = p.decode(p.encode(ticket, media), media, p.Ticket)
        assert p.canonical_bytes(back) == p.canonical_bytes(ticket)


@SETTINGS
@given(tickets)
def test_canonical_bytes_ignore_timezone_of_input(ticket: p.Ticket) -> None:
    shifted = ticket.model_copy(
        update={"requested_at": ticket.requested_at.astimezone(timezone(timedelta(hours=-7)))}
    )
    assert p.canonical_bytes(shifted) == p.canonical_bytes(ticket)


def _variants(ticket: p.Ticket) -> dict[str, dict[str, Any]]:
    """One change per field, each guaranteed to differ from the current value."""
    t = ticket
    return {
        "id": {"id": __import__("uuid").UUID(int=t.id.int ^ 1)},
        "sr_number": {"sr_number": (t.sr_number or "") + "x"},
        "service_type": {"service_type": t.service_type + "x"},
        "department": {"department": t.department + "x"},
        "status": {"status": p.TicketStatus.CLOSED if t.status != "closed" else p.TicketStatus.PAUSED},
        "priority": {"priority": p.Priority.LOW if t.priority != "low" else p.Priority.HIGH},
        "address": {"address": t.address + "x"},
        "zip": {"zip": (t.zip or "") + "9"},
        "lat": {"lat": 1.5 if t.lat != 1.5 else 2.5},
        "lon": {"lon": 1.5 if t.lon != 1.5 else 2.5},
        "council_district": {"council_district": (t.council_district or 0) + 1},
        "description": {"description": t.description + "x"},
        "source": {"source": (t.source or "") + "x"},
        "requested_at": {"requested_at": t.requested_at + timedelta(microseconds=1)},
        "service_date": {"service_date": (t.service_date or t.requested_at.date()) + timedelta(days=1)},
        "due_at": {"due_at": (t.due_at or t.requested_at) + timedelta(seconds=1)},
        "crew": {"crew": (t.crew or "") + "x"},
        "notes": {"notes": [*t.notes[:-1]] if t.notes else [p.Note(id=t.id, text="n", author="a", created_at=t.updated_at)]},
        "photos": {"photos": [*t.photos[:-1]] if t.photos else [p.PhotoRef(sha256="0" * 64, kind="before", taken_at=t.updated_at, state="pending")]},  # type: ignore[arg-type]
        "items": {"items": [p.ItemLine(item_type=i.item_type, count=(i.count + 1) % 1000) for i in t.items] or [p.ItemLine(item_type="x", count=1)]},
        "resolution_code": {"resolution_code": (t.resolution_code or "") + "x"},
        "reason_code": {"reason_code": (t.reason_code or "") + "x"},
        "created_by_device": {"created_by_device": (t.created_by_device or "") + "x"},
        "updated_at": {"updated_at": t.updated_at + timedelta(microseconds=1)},
        "version": {"version": t.version + 1 if t.version < 2**63 - 1 else 1},
    }


@settings(max_examples=5, deadline=None)
@given(tickets)
def test_variants_cover_every_ticket_field(ticket: p.Ticket) -> None:
    assert set(_variants(ticket)) == set(p.Ticket.model_fields)


@SETTINGS
@given(st.lists(tickets, min_size=1, max_size=4, unique_by=lambda t: t.id), st.data())
def test_checksum_changes_when_any_single_field_changes(ts: list[p.Ticket], data: st.DataObject) -> None:
    before = p.scope_checksum(ts)
    index = data.draw(st.integers(0, len(ts) - 1))
    field = data.draw(st.sampled_from(sorted(p.Ticket.model_fields)))
    changed = ts[index].model_copy(update=_variants(ts[index])[field])
    assert p.canonical_bytes(changed) != p.canonical_bytes(ts[index]), field
    after = p.scope_checksum([*ts[:index], changed, *ts[index + 1:]])
    assert after != before, field


@SETTINGS
@given(st.lists(tickets, max_size=5, unique_by=lambda t: t.id), tickets)
def test_checksum_is_incremental(ts: list[p.Ticket], extra: p.Ticket) -> None:
    running = p.ScopeChecksum.of(p.ticket_hash(t) for t in ts)
    running.add(p.ticket_hash(extra))
    running.remove(p.ticket_hash(extra))
    assert running.hexdigest() == p.scope_checksum(ts)


def test_checksum_count_and_duplicates() -> None:
    h = hashlib.sha256(b"x").digest()
    empty = p.ScopeChecksum()
    twice = p.ScopeChecksum.of([h, h])
    assert empty.hexdigest() != twice.hexdigest()  # XOR would make these equal
    assert p.ScopeChecksum.of([h]).hexdigest() != twice.hexdigest()
    with pytest.raises(ValueError):
        empty.remove(h)
    with pytest.raises(ValueError):
        empty.add(b"short")
    assert len(empty.hexdigest()) == 64


def test_checksum_of_joined_hashes_sums_each_word_with_its_carry() -> None:
    """of_joined (hashes back to back, as the server reads a scope) is the same multiset sum: carries cross the 64-bit
    words it adds separately, and the sum wraps at 2**256. Expected totals written out by hand."""
    low = bytes(31) + b"\x01"  # 1
    carry = bytes(24) + b"\xff" * 8  # 2**64 - 1: adding it to itself carries into the next word
    top = b"\xff" * 32  # 2**256 - 1
    cases = [
        (b"", 0, 0),
        (low, 1, 1),
        (carry + carry + low, 3, (1 << 65) - 1),
        (top + top, 2, (1 << 256) - 2),  # wrapped
        (top + low, 2, 0),
    ]
    for joined, count, total in cases:
        got = p.ScopeChecksum.of_joined(joined)
        assert (got.count, got._total) == (count, total)
        assert got == p.ScopeChecksum.of([joined[i : i + 32] for i in range(0, len(joined), 32)])
    hashes = [hashlib.sha256(bytes([i])).digest() for i in range(200)]
    assert p.ScopeChecksum.of_joined(b"".join(hashes)).hexdigest() == p.ScopeChecksum.of(hashes).hexdigest()
    with pytest.raises(ValueError):
        p.ScopeChecksum.of_joined(low + b"\x00")


def test_canonical_bytes_golden() -> None:
    ticket = p.decode(
        b'{"id":"0D4C6A8E-1111-4222-8333-444455556666","service_type":"Graffiti Removal",'
        b'"department":"Community Beautification","status":"assigned","priority":"normal",'
        b'"address":"1 Main St","lat":34,"lon":-118.25,"requested_at":"2020-01-01T08:00:00-08:00",'
        b'"updated_at":"2020-01-01T16:00:00.5Z","version":3,'
        b'"items":[{"item_type":"b","count":1},{"item_type":"a","count":2}]}',
        p.JSON, p.Ticket,
    )
    assert p.canonical_bytes(ticket) == (
        b'{"address":"1 Main St","council_district":null,"created_by_device":null,"crew":null,'
        b'"department":"Community Beautification","description":"","due_at":null,'
        b'"id":"0d4c6a8e-1111-4222-8333-444455556666","items":[{"count":2,"item_type":"a"},'
        b'{"count":1,"item_type":"b"}],"lat":34.0,"lon":-118.25,"notes":[],"photos":[],'
        b'"priority":"normal","reason_code":null,"requested_at":"2020-01-01T16:00:00.000000Z",'
        b'"resolution_code":null,"service_date":null,"service_type":"Graffiti Removal",'
        b'"source":null,"sr_number":null,"status":"assigned",'
        b'"updated_at":"2020-01-01T16:00:00.500000Z","version":3,"zip":null}'
    )


# --- cursor ---

STATE = p.CursorState(
    version=1, scope="crew:7f0c", snapshot="1000:1010:1003,1007", issued_at=1_700_000_000,
    head="1010:1010:", after="0d4c6a8e-1111-4222-8333-444455556666", checksum="ab" * 32,
    reset=True, sent=500,
)


def _invalid(fn: Any) -> None:
    with pytest.raises(p.ProtocolError) as info:
        fn()
    assert info.value.code is p.ErrorCode.CURSOR_INVALID
    assert info.value.message == "cursor is not valid; pull with cursor null"


def test_cursor_roundtrip_and_is_compact() -> None:
    signer = p.CursorSigner(SECRET)
    token = signer.encode(STATE)
    assert signer.decode(token, scope="crew:7f0c") == STATE
    assert len(token) < 300 and "=" not in token
    assert signer.decode(signer.encode(p.CursorState(1, "s", "1:1:", 0)), scope="s").head is None


def test_cursor_every_flipped_byte_is_refused() -> None:
    signer = p.CursorSigner(SECRET)
    raw = base64.urlsafe_b64decode(signer.encode(STATE) + "==")
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            tampered = bytearray(raw)
            tampered[i] ^= bit
            token = base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
            _invalid(lambda: signer.decode(token, scope=STATE.scope))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_cursor_garbage_text_refused(token: str) -> None:
    _invalid(lambda: p.CursorSigner(SECRET).decode(token, scope=STATE.scope))


def test_cursor_truncated_extended_and_noncanonical_refused() -> None:
    signer = p.CursorSigner(SECRET)
    token = signer.encode(STATE)
    for bad in (token[:-1], token + "A", token + "==", "", "x" * 5000, token.replace("-", "+")):
        if bad != token:
            _invalid(lambda: signer.decode(bad, scope=STATE.scope))


def test_cursor_foreign_scope_refused_with_same_error() -> None:
    signer = p.CursorSigner(SECRET)
    _invalid(lambda: signer.decode(signer.encode(STATE), scope="crew:other"))


def test_cursor_other_secret_refused() -> None:
    token = p.CursorSigner(b"o" * 32).encode(STATE)
    _invalid(lambda: p.CursorSigner(SECRET).decode(token, scope=STATE.scope))


def test_cursor_unknown_version_refused() -> None:
    signer = p.CursorSigner(SECRET)
    for version in (0, p.PROTOCOL_VERSION + 1):
        token = signer.encode(p.CursorState(version, "s", "1:1:", 0))
        _invalid(lambda: signer.decode(token, scope="s"))


def test_cursor_key_rotation() -> None:
    old, new = b"o" * 32, b"n" * 32
    old_token = p.CursorSigner(old).encode(STATE)
    rotated = p.CursorSigner(new, old_secrets=[old])
    assert rotated.decode(old_token, scope=STATE.scope) == STATE
    new_token = rotated.encode(STATE)
    assert p.CursorSigner(new).decode(new_token, scope=STATE.scope) == STATE
    _invalid(lambda: p.CursorSigner(old).decode(new_token, scope=STATE.scope))
    _invalid(lambda: p.CursorSigner(new).decode(old_token, scope=STATE.scope))


def test_cursor_short_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        p.CursorSigner(b"short")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.text(alphabet=st.characters(max_codepoint=127), max_size=120))
def test_cursor_base64_helpers_equal_the_stdlib_functions(raw: bytes, text: str) -> None:
    """The cursor's binascii shortcuts answer exactly what base64.urlsafe_b64encode/decode would, errors included."""
    from protocol.cursor import _b64decode, _b64encode

    assert _b64encode(raw) == base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    assert _b64decode(_b64encode(raw)) == raw
    try:
        expected: bytes | type[Exception] = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:  # binascii.Error is a ValueError
        expected = type(exc)
    try:
        got: bytes | type[Exception] = _b64decode(text)
    except ValueError as exc:
        got = type(exc)
    assert got == expected


def test_cursor_base64_helpers_on_hand_written_values() -> None:
    from protocol.cursor import _b64decode, _b64encode

    assert _b64encode(b"\xfb\xff\xbf") == "-_-_"  # the two url-safe letters, both ways
    assert _b64encode(b"\x00") == "AA" and _b64encode(b"") == ""
    assert _b64decode("-_-_") == b"\xfb\xff\xbf" and _b64decode("AA") == b"\x00"
    assert _b64decode("+/+/") == b"\xfb\xff\xbf"  # lenient like the stdlib; decode() refuses it by re-encoding
