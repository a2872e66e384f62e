"""The canonical bytes through orjson (the server's fast path) are the standard library's bytes, or the fast path
steps aside: clients without orjson and the server must hash every ticket alike (I4)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol.canonical as canonical
from protocol.canonical import canonical_doc_bytes, mutation_digest
from tests.protocol.test_golden_vectors import CANON_A, CANON_B, INPUT_A, INPUT_B
import protocol as p


def _oracle(doc: dict[str, Any]) -> bytes:
    """SPEC's canonical form spelled out with the standard library (children here are already in canonical order)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _doc(**extra: Any) -> dict[str, Any]:
    return {"notes": [], "photos": [], "items": [], **extra}


@pytest.mark.parametrize(("value", "text"), [
    (34.0, b"34.0"), (-118.25, b"-118.25"), (0.0001, b"0.0001"), (1e-05, b"1e-05"), (2.5e-07, b"2.5e-07"),
    (1e16, b"1e+16"), (-0.0, b"-0.0"), (2**63 - 1, b"9223372036854775807"), (2**64, b"18446744073709551616"),
    ("caf\u00e9 \u2028\U0001f600\n\x7f\x1f\"\\", '"caf\u00e9 \u2028\U0001f600\\n\x7f\\u001f\\"\\\\"'.encode("utf-8")),
])
def test_values_orjson_writes_otherwise_take_the_pure_path(value: Any, text: bytes) -> None:
    # expected text written by hand: repr's exponent form below 1e-4 and from 1e16, integers beyond 64 bits, raw UTF-8
    assert canonical_doc_bytes(_doc(v=value)) == b'{"items":[],"notes":[],"photos":[],"v":' + text + b"}"
    assert canonical_doc_bytes(_doc(v=[{"lat": value}])) == b'{"items":[],"notes":[],"photos":[],"v":[{"lat":' + text + b"}]}"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_on_both_paths(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_doc_bytes(_doc(lat=bad))
    with pytest.raises(ValueError):
        canonical_doc_bytes(_doc(photos=[{"sha256": "a", "kind": "before", "lat": bad}]))


def test_non_json_values_are_refused_as_the_standard_library_refuses_them() -> None:
    # orjson would write a UUID or a datetime; the canonical form has no such values, so the pure path decides
    import uuid
    with pytest.raises(TypeError):
        canonical_doc_bytes(_doc(id=uuid.UUID(int=1)))


@pytest.mark.parametrize(("body", "canon", "fast"), [(INPUT_A, CANON_A, True), (INPUT_B, CANON_B, False)], ids=["A", "B"])
def test_golden_bytes_with_and_without_orjson(body: bytes, canon: bytes, fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = p.decode(body, p.JSON, p.Ticket).model_dump(mode="json")
    assert canonical_doc_bytes(doc) == canon
    # A takes the fast path (so the server really uses it); B's photo at lat 1e-05 is written in exponent form by
    # repr, not by orjson, so it must step aside
    assert canonical._fast_bytes(json.loads(canon), 1) == (canon if fast else None)
    monkeypatch.setattr(canonical, "orjson", None)  # a client without orjson
    assert canonical_doc_bytes(doc) == canon


_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
_child = st.dictionaries(st.text(max_size=6), _scalars, max_size=6)
_docs = st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("notes", "photos", "items")),
                        _scalars | st.lists(_scalars | _child, max_size=4) | _child, max_size=10)


@settings(max_examples=300, deadline=None)
@given(_docs, st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3))
def test_any_json_document_gives_the_oracles_bytes(doc: dict[str, Any], lats: list[float]) -> None:
    full = _doc(**doc)
    full["photos"] = [{"sha256": f"{i:064x}", "kind": "before", "lat": lat} for i, lat in enumerate(lats)]
    assert canonical_doc_bytes(full) == _oracle(full)


def _digest_oracle(mutation: Any) -> bytes:
    """protocol.canonical.mutation_digest as SPEC defines it, with the standard library only."""
    text = json.dumps(mutation, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=repr)
    return hashlib.sha256(b"fieldsync-mutation-v1\x00" + text.encode("utf-8")).digest()


_mutations = st.fixed_dictionaries({
    "seq": st.integers(min_value=-(2**70), max_value=2**70), "op": st.text(max_size=10),
    "args": st.dictionaries(st.text(max_size=6), _scalars | st.lists(_child | _scalars, max_size=3)
                            | st.dictionaries(st.text(max_size=4), _scalars | st.lists(_child, max_size=2), max_size=3),
                            max_size=5),
    "gps": st.none() | st.fixed_dictionaries({"lat": st.floats(allow_nan=False, allow_infinity=False),
                                              "lon": st.floats(allow_nan=False, allow_infinity=False)}),
})


@settings(max_examples=300, deadline=None)
@given(_mutations)
def test_mutation_digest_is_the_oracles_whatever_the_path(mutation: dict[str, Any]) -> None:
    assert mutation_digest(mutation) == _digest_oracle(mutation)


def test_mutation_digest_hand_written() -> None:
    # sha256 of the bytes written out by hand (not produced by protocol/): the digest stored results were kept with
    body = b'fieldsync-mutation-v1\x00{"args":{"items":[{"count":2,"item_type":"sof\xc3\xa4"}]},"gps":{"lat":1e-05,"lon":34.5},"op":"set_items","seq":3}'
    mutation = {"seq": 3, "op": "set_items", "args": {"items": [{"item_type": "sof\u00e4", "count": 2}]},
                "gps": {"lat": 1e-05, "lon": 34.5}}
    assert mutation_digest(mutation) == hashlib.sha256(body).digest()
    assert canonical._fast_bytes(mutation, 3) is None  # repr's exponent form: the pure path writes it
    mutation["gps"]["lat"] = 34.25
    assert canonical._fast_bytes(mutation, 3) is not None  # the server's common case takes the fast path
    assert mutation_digest(mutation) == hashlib.sha256(body.replace(b"1e-05", b"34.25")).digest()


def test_keys_sort_by_code_point_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python sorts str keys by code point, which is UTF-8 byte order; UTF-16 order would put U+10000 before U+E000.
    keys = {"\uffff": 1, "\U00010000": 2, "\ue000": 3, "a": 4, "\u00e9": 5}
    expected = '{"a":4,"items":[],"notes":[],"photos":[],"\u00e9":5,"\ue000":3,"\uffff":1,"\U00010000":2}'.encode("utf-8")
    assert canonical_doc_bytes(_doc(**keys)) == expected
    monkeypatch.setattr(canonical, "orjson", None)
    assert canonical_doc_bytes(_doc(**keys)) == expected
