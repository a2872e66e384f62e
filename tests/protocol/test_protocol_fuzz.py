"""Any bytes decode to a model or raise ProtocolError (STYLE rule 12), in both encodings."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol as p
from protocol_strategies import ALL_MODELS, push_requests, pull_responses, tickets

TARGETS: list[type[Any]] = [
    p.PushRequest, p.PullRequest, p.PullResponse, p.PushResponse, p.Ticket,
    p.ErrorEnvelope, p.UploadMetadata,
]
MEDIA = [p.JSON, p.MSGPACK]
FUZZ = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def assert_total(body: bytes, media: str, model: type[Any] | None) -> None:
    """The property itself: a model, or a protocol error with a known code."""
    try:
        if model is None:
            p.decode_live(body, media)
        else:
            p.decode(body, media, model)
    except p.ProtocolError as exc:
        assert isinstance(exc.code, p.ErrorCode)
        p.encode_error(exc, media)  # the error itself must always be encodable


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few byte-level edits: the inputs most likely to reach deep code."""
    model = draw(st.one_of(push_requests(), pull_responses, tickets))
    data = bytearray(p.encode(model, draw(st.sampled_from(MEDIA))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC1, 0xD4, 0xDC, 0xDD, 0xDF, 0xFF, 0x22, 0x5B, 0x7B, 0x5C]))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[i : i + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[i:]
        elif kind == "dup":
            j = draw(st.integers(i, len(data)))
            data[j:j] = data[i:j][:64]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(MEDIA), st.sampled_from(TARGETS + [None]))
def test_random_bytes(body: bytes, media: str, model: type[Any] | None) -> None:
    assert_total(body, media, model)


@FUZZ
@given(mutated(), st.sampled_from(MEDIA), st.sampled_from(TARGETS))
def test_mutated_valid_encodings(body: bytes, media: str, model: type[Any]) -> None:
    assert_total(body, media, model)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
), st.sampled_from(TARGETS))
def test_random_json_documents(doc: Any, model: type[Any]) -> None:
    import json

    assert_total(json.dumps(doc).encode("utf-8", "surrogatepass"), p.JSON, model)


def test_all_strategies_are_fuzzed() -> None:
    assert ALL_MODELS  # the shared module imports cleanly
