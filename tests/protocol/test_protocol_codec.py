"""Codec limits, strictness and content negotiation: every failure is a typed protocol error."""

from __future__ import annotations

import json
import struct
import tracemalloc
from typing import Any, Callable

import msgpack
import pytest

import protocol as p

TICKET_ID = "0d4c6a8e-1111-4222-8333-444455556666"
NOTE_ID = "0d4c6a8e-1111-4222-8333-444455556667"


def _mutation(seq: int = 1, **over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "seq": seq, "op": "add_note", "ticket_id": TICKET_ID,
        "args": {"note_id": NOTE_ID, "text": "left at curb"},
        "device_time": "2020-01-01T08:00:00-08:00",
    }
    m.update(over)
    return m


def _pack(obj: Any, media: str) -> bytes:
    if media == p.MSGPACK:
        return msgpack.packb(obj, use_bin_type=True)
    return json.dumps(obj).encode()


def _code(fn: Callable[[], Any]) -> p.ErrorCode:
    with pytest.raises(p.ProtocolError) as info:
        fn()
    return info.value.code


BOTH = pytest.mark.parametrize("media", [p.JSON, p.MSGPACK])


@BOTH
def test_valid_push_decodes(media: str) -> None:
    body = _pack({"mutations": [_mutation(1), _mutation(2, op="start", args={})]}, media)
    req = p.decode(body, media, p.PushRequest)
    assert [m.op for m in req.mutations] == ["add_note", "start"]
    assert req.mutations[0].device_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@BOTH
@pytest.mark.parametrize(
    "bad",
    [
        {"seq": "1"}, {"seq": 1.0}, {"seq": True}, {"seq": 0}, {"seq": 2**63},
        {"ticket_id": 5}, {"ticket_id": "not-a-uuid"}, {"ticket_id": "{" + TICKET_ID + "}"},
        {"device_time": "2020-01-01T08:00:00"},  # naive
        {"device_time": 1577836800},  # epoch numbers are not datetimes
        {"device_time": "yesterday"},
        {"base_version": -1}, {"base_version": "3"},
        {"gps": {"lat": 91, "lon": 0}}, {"gps": {"lat": True, "lon": 0}},
        {"gps": {"lat": "34", "lon": 0}},
        {"extra": 1},
        {"op": "teleport"},
        {"op": 7},
        {"args": {"note_id": NOTE_ID, "text": ""}},
        {"args": {"note_id": NOTE_ID, "text": "x", "colour": "red"}},
    ],
)
def test_strictness_is_identical_in_both_encodings(media: str, bad: dict[str, Any]) -> None:
    body = _pack({"mutations": [_mutation(**bad)]}, media)
    with pytest.raises(p.DecodeError) as info:
        p.decode(body, media, p.PushRequest)
    assert info.value.code is p.ErrorCode.VALIDATION_FAILED
    assert info.value.http_status == 422
    assert info.value.details["errors"]


@BOTH
def test_unknown_op_is_422_not_a_crash(media: str) -> None:
    body = _pack({"mutations": [_mutation(op="teleport", args={})]}, media)
    assert _code(lambda: p.decode(body, media, p.PushRequest)) is p.ErrorCode.VALIDATION_FAILED


@BOTH
def test_seqs_must_be_consecutive(media: str) -> None:
    body = _pack({"mutations": [_mutation(1), _mutation(3)]}, media)
    assert _code(lambda: p.decode(body, media, p.PushRequest)) is p.ErrorCode.VALIDATION_FAILED


@BOTH
def test_too_many_mutations_is_413(media: str) -> None:
    body = _pack({"mutations": [_mutation(i) for i in range(1, p.MAX_MUTATIONS + 2)]}, media)
    err_code = _code(lambda: p.decode(body, media, p.PushRequest))
    assert err_code is p.ErrorCode.TOO_MANY_MUTATIONS and err_code.http_status == 413


@BOTH
def test_validation_details_are_capped_and_do_not_echo_input(media: str) -> None:
    secret = "S" * 5000
    muts = [_mutation(i, ticket_id=secret) for i in range(1, 200)]
    with pytest.raises(p.DecodeError) as info:
        p.decode(_pack({"mutations": muts}, media), media, p.PushRequest)
    details = info.value.details
    assert len(details["errors"]) <= 20
    assert secret not in json.dumps(details)
    json.dumps(info.value.to_envelope().model_dump(mode="json"))  # JSON-able


@BOTH
def test_body_too_large_checked_first(media: str) -> None:
    limits = p.Limits(max_body_bytes=10)
    code = _code(lambda: p.decode(b"x" * 11, media, p.PullRequest, limits))
    assert code is p.ErrorCode.BODY_TOO_LARGE


@pytest.mark.parametrize("body", [b"{\"limit\": 5, \"limit\": 6}", b"{\"a\":{\"b\":1,\"b\":1}}"])
def test_duplicate_json_keys_rejected(body: bytes) -> None:
    assert _code(lambda: p.decode(body, p.JSON, p.PullRequest)) is p.ErrorCode.MALFORMED_BODY


def test_duplicate_msgpack_keys_rejected() -> None:
    # fixmap with 2 entries, both "limit"
    body = b"\x82" + msgpack.packb("limit") + msgpack.packb(5) + msgpack.packb("limit") + msgpack.packb(6)
    assert _code(lambda: p.decode(body, p.MSGPACK, p.PullRequest)) is p.ErrorCode.MALFORMED_BODY


@pytest.mark.parametrize(
    "body",
    [
        b"\x81\xa5limit" + msgpack.packb(msgpack.ExtType(1, b"abc")),
        b"\x81\xa5limit\xd4\x01\x00",  # fixext1
        b"\x81\xa5limit\xc7\x00\x05",  # ext8 with zero length
        b"\x81\xa5limit" + msgpack.packb(msgpack.Timestamp(1, 0)),
        b"\x81\xa6cursor\xc4\x03abc",  # bin
        b"\x81\xa6cursor\xc4\x00",  # empty bin
        b"\x81\x01\x02",  # int key
        b"\x81\xa5limit\xa2\xff\xfe",  # invalid UTF-8 str
        b"\x81\xa6cursor\xa3a\x00b",  # NUL in string
        b"\x81\xa5limit\x05extra",  # trailing data
        b"\x81\xa5limit",  # truncated
        b"\xc1",  # never-used byte
    ],
)
def test_msgpack_oddities_rejected(body: bytes) -> None:
    assert _code(lambda: p.decode(body, p.MSGPACK, p.PullRequest)) is p.ErrorCode.MALFORMED_BODY


@pytest.mark.parametrize(
    "body",
    [
        b'{"limit": NaN}', b'{"limit": Infinity}', b'{"limit": -Infinity}', b'{"limit": 1e999}',
        b'{"cursor": "a\\u0000b"}', b'{"cursor": "\\ud800"}', b"\xef\xbb\xbf{}",
        b'{"cursor": "\xff"}', b"", b"   ", b"{", b"[1,]", b'{"limit": 1} x',
        b'{"limit": ' + b"9" * 5000 + b"}",
        "{}".encode("utf-16"),
    ],
)
def test_json_oddities_rejected(body: bytes) -> None:
    assert _code(lambda: p.decode(body, p.JSON, p.PullRequest)) is p.ErrorCode.MALFORMED_BODY


def _bounded(fn: Callable[[], Any], expect: p.ErrorCode, max_mib: int = 48) -> None:
    tracemalloc.start()
    try:
        assert _code(fn) is expect
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < max_mib * 2**20, f"peak {peak / 2**20:.1f} MiB"


MIB = 2**20


def test_bomb_json_nested_arrays() -> None:
    body = b"[" * (MIB // 2) + b"]" * (MIB // 2)
    _bounded(lambda: p.decode(body, p.JSON, p.PullRequest), p.ErrorCode.MALFORMED_BODY)


def test_bomb_json_nested_objects() -> None:
    body = b'{"a":' * (MIB // 6) + b"1" + b"}" * (MIB // 6)
    _bounded(lambda: p.decode(body, p.JSON, p.PullRequest), p.ErrorCode.MALFORMED_BODY)


def test_bomb_msgpack_nested_arrays() -> None:
    body = b"\x91" * (MIB - 1) + b"\x90"
    _bounded(lambda: p.decode(body, p.MSGPACK, p.PullRequest), p.ErrorCode.MALFORMED_BODY)


def test_bomb_json_many_empty_arrays() -> None:
    body = b"[" + b"[]," * ((MIB - 10) // 3) + b"[]]"
    _bounded(lambda: p.decode(body, p.JSON, p.PullRequest), p.ErrorCode.MALFORMED_BODY, 96)


def test_bomb_msgpack_many_empty_arrays() -> None:
    body = b"\xdc" + struct.pack(">H", 65535) + b"\x90" * 65535
    _bounded(lambda: p.decode(body, p.MSGPACK, p.PullRequest), p.ErrorCode.MALFORMED_BODY)


@pytest.mark.parametrize("header", [b"\xdd", b"\xdf", b"\xdb", b"\xc6"])
def test_bomb_msgpack_header_claims_2_32_items(header: bytes) -> None:
    body = header + struct.pack(">I", 2**32 - 1) + b"\x00" * 16
    _bounded(lambda: p.decode(body, p.MSGPACK, p.PullRequest), p.ErrorCode.MALFORMED_BODY, 4)


def test_depth_limit_applies_below_recursion_limit() -> None:
    obj: Any = 1
    for _ in range(40):
        obj = [obj]
    for media in (p.JSON, p.MSGPACK):
        code = _code(lambda: p.decode(_pack({"cursor": obj}, media), media, p.PullRequest))
        assert code is p.ErrorCode.MALFORMED_BODY


def test_long_string_limit() -> None:
    limits = p.Limits(max_str_len=100)
    for media in (p.JSON, p.MSGPACK):
        body = _pack({"cursor": "x" * 101}, media)
        assert _code(lambda: p.decode(body, media, p.PullRequest, limits)) is p.ErrorCode.MALFORMED_BODY


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", p.JSON),
        ("Application/JSON; charset=UTF-8", p.JSON),
        ('application/json; charset="utf-8"', p.JSON),
        ("application/msgpack", p.MSGPACK),
        ("application/x-msgpack", p.MSGPACK),
        ("application/vnd.msgpack ; foo=bar", p.MSGPACK),
    ],
)
def test_content_types_accepted(content_type: str, expected: str) -> None:
    assert p.parse_media_type(content_type) == expected


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/xml", "application/json; charset=latin-1", "json"],
)
def test_content_types_refused(content_type: str | None) -> None:
    code = _code(lambda: p.decode(b"{}", content_type, p.PullRequest))
    assert code is p.ErrorCode.UNSUPPORTED_MEDIA_TYPE and code.http_status == 415


@pytest.mark.parametrize(
    ("accept", "content_type", "expected"),
    [
        (None, None, p.JSON),
        (None, "application/msgpack", p.MSGPACK),
        (None, "text/plain", p.JSON),
        ("", "application/msgpack", p.MSGPACK),
        ("*/*", "application/msgpack", p.MSGPACK),
        ("*/*", None, p.JSON),
        ("application/*", "application/msgpack", p.MSGPACK),
        ("application/json", "application/msgpack", p.JSON),
        ("application/msgpack", "application/json", p.MSGPACK),
        ("application/json;q=0.5, application/msgpack", None, p.MSGPACK),
        ("application/json, application/msgpack;q=0.9", "application/msgpack", p.JSON),
        ("application/msgpack, application/json", "application/json", p.JSON),
        ("application/msgpack, application/json", None, p.MSGPACK),
        ("text/html, application/json;q=0.1", None, p.JSON),
        ("*/*;q=0.1, application/json;q=0", None, p.MSGPACK),
        ("APPLICATION/X-MSGPACK", None, p.MSGPACK),
        ("garbage", "application/msgpack", p.MSGPACK),
        ("application/json;q=abc, application/msgpack", None, p.MSGPACK),
    ],
)
def test_negotiate_table(accept: str | None, content_type: str | None, expected: str) -> None:
    assert p.negotiate(accept, content_type) == expected


@pytest.mark.parametrize(
    "accept", ["text/html", "image/*", "application/json;q=0, application/msgpack;q=0", "text/*, */*;q=0"]
)
def test_negotiate_not_acceptable(accept: str) -> None:
    code = _code(lambda: p.negotiate(accept, "application/json"))
    assert code is p.ErrorCode.NOT_ACCEPTABLE and code.http_status == 406


@pytest.mark.parametrize("media", [p.JSON, p.MSGPACK])
def test_encode_error_envelope(media: str) -> None:
    err = p.ProtocolError(p.ErrorCode.SEQ_GAP, "gap", {"expected_seq": 7})
    env = p.decode(p.encode_error(err, media), media, p.ErrorEnvelope)
    assert env.error.code is p.ErrorCode.SEQ_GAP and env.error.details == {"expected_seq": 7}


def test_json_is_compact_and_utf8() -> None:
    body = p.encode(p.PullRequest(cursor="é", limit=3), p.JSON)
    assert body == '{"cursor":"é","limit":3}'.encode()


def test_int_accepted_for_float_fields_and_equal_across_encodings() -> None:
    j = p.decode(b'{"lat":34,"lon":-118}', p.JSON, p.GeoPoint)
    m = p.decode(msgpack.packb({"lat": 34.0, "lon": -118.0}), p.MSGPACK, p.GeoPoint)
    assert j == m and isinstance(j.lat, float)


def test_live_frames() -> None:
    assert isinstance(p.decode_live('{"type":"hello","token":"t"}', p.JSON), p.LiveHello)
    assert _code(lambda: p.decode_live('{"type":"shout"}', p.JSON)) is p.ErrorCode.VALIDATION_FAILED
    assert _code(lambda: p.decode_live('"\ud800"', p.JSON)) is p.ErrorCode.MALFORMED_BODY


@pytest.mark.parametrize(
    "text", ["1970-01-01T00:00:00Z", "2099-12-31T23:59:59.999999Z", "2020-02-29T12:00:00+14:00", "1970-01-01T01:00:00+01:00"]
)
def test_datetime_extremes_roundtrip(text: str) -> None:
    body = json.dumps({"type": "hello", "token": "t"}).encode()
    assert p.decode_live(body, p.JSON)
    note = {"id": TICKET_ID, "text": "x", "author": "a", "created_at": text}
    for media in (p.JSON, p.MSGPACK):
        model = p.decode(_pack(note, media), media, p.Note)
        assert p.decode(p.encode(model, media), media, p.Note) == model
        assert p.encode(model, p.JSON).count(b"Z") == 1


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z",
                                  "9999-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999Z", "2100-01-01T00:00:00Z",
                                  "2099-12-31T23:30:00-01:00"])
def test_datetime_overflow_is_a_validation_error(text: str) -> None:
    note = {"id": TICKET_ID, "text": "x", "author": "a", "created_at": text}
    assert _code(lambda: p.decode(_pack(note, p.JSON), p.JSON, p.Note)) is p.ErrorCode.VALIDATION_FAILED
