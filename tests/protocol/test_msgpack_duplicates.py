"""protocol.codec decodes msgpack without its duplicate-key hook when the body is the plain encoding of what it decoded;
every body must still get exactly the answer the hook-only decoder gave (value, or the same typed refusal)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import DEFAULT_LIMITS, Limits, _load_msgpack, _load_msgpack_checked
from protocol.errors import DecodeError, ErrorCode

keys = st.text(max_size=4)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
                      max_leaves=20)


def _map(pairs: list[tuple[str, Any]]) -> bytes:
    """A msgpack map written pair by pair, so a key may repeat."""
    out = bytearray(b"\xde" + len(pairs).to_bytes(2, "big"))
    for k, v in pairs:
        out += msgpack.packb(k) + msgpack.packb(v, use_bin_type=True)
    return bytes(out)


# bodies: plain encodings, maps written pair by pair (repeats allowed) nested in a list, float32 forms, and junk
bodies = st.one_of(
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.lists(st.tuples(st.sampled_from(["a", "b", "seq"]), values), max_size=5).map(_map),
    st.lists(st.tuples(st.sampled_from(["a", "b"]), scalars), max_size=4).map(lambda p: b"\x92" + _map(p) + b"\xc0"),
    st.floats(allow_nan=False, width=32).map(lambda f: msgpack.packb({"x": f}, use_single_float=True)),
    st.binary(max_size=24),
)


def _outcome(load: Any, body: bytes, limits: Limits) -> tuple[str, Any]:
    try:
        return "ok", load(body, limits)
    except DecodeError as exc:
        return "error", (exc.code, str(exc))


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_fast_and_hook_decoders_agree_on_every_body(body: bytes) -> None:
    fast, checked = _outcome(_load_msgpack, body, DEFAULT_LIMITS), _outcome(_load_msgpack_checked, body, DEFAULT_LIMITS)
    assert fast[0] == checked[0]
    if fast[0] == "ok":
        assert msgpack.packb(fast[1]) == msgpack.packb(checked[1])  # same value, same key order
    else:
        assert fast[1] == checked[1]


@pytest.mark.parametrize("body", [
    _map([("seq", 1), ("seq", 2)]),
    b"\x91" + _map([("op", "start"), ("args", {}), ("op", "complete")]),
    msgpack.packb({"mutations": []})[:-1] + b"\x91" + _map([("a", 1), ("a", 1)]),  # equal values, still two keys
])
def test_a_repeated_key_is_refused(body: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        _load_msgpack(body, DEFAULT_LIMITS)
    assert caught.value.code is ErrorCode.MALFORMED_BODY
    assert "duplicate map key" in str(caught.value)


def test_plain_and_other_valid_encodings_decode() -> None:
    assert _load_msgpack(msgpack.packb({"seq": 1, "op": "start"}), DEFAULT_LIMITS) == {"seq": 1, "op": "start"}
    # 1 as uint64 (0xcf) and 0.5 as float32 (0xca): valid, not the plain form, so decoded by the checking path
    assert _load_msgpack(b"\x82\xa1a\xcf" + (1).to_bytes(8, "big") + b"\xa1b\xca\x3f\x00\x00\x00", DEFAULT_LIMITS) == {"a": 1, "b": 0.5}
