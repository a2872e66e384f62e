"""Bytes ⇄ models for msgpack and JSON, with hard limits checked before big allocations.

Any input either becomes a model or raises DecodeError/ProtocolError carrying an error
code: handlers never see another exception from here (STYLE rule 12).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgpack  # no stubs or py.typed upstream
from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import DecodeError, ErrorCode, ProtocolError
from .live import LiveMessage
from .push import MAX_MUTATIONS, PushRequest

__all__ = [
    "DEFAULT_LIMITS",
    "JSON",
    "MSGPACK",
    "Limits",
    "decode",
    "decode_live",
    "encode",
    "encode_error",
    "negotiate",
    "parse_media_type",
]

MSGPACK: Final = "application/msgpack"
JSON: Final = "application/json"
_ALIASES: Final = {
    MSGPACK: MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
    JSON: JSON,
}
_MAX_ERRORS: Final = 20
_MAX_MSG: Final = 200
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-endpoint decode limits; bounds memory and CPU per request before validation."""

    max_body_bytes: int = 1 << 20
    max_depth: int = 32
    max_container_len: int = 10_000
    max_str_len: int = 65_536


DEFAULT_LIMITS: Final = Limits()


class _DuplicateKey(ValueError):
    """Raised inside a decoder hook; two values for one key could mean two things."""


def _pairs_to_dict(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """Reject duplicate keys so the validator and the handler can never disagree."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey("duplicate key in map")
    return result


def _reject_ext(code: int, data: bytes) -> Any:
    """msgpack ext types have no meaning in this protocol; refuse rather than pass through."""
    raise ValueError("msgpack ext types are not allowed")


def _finite_float(text: str) -> float:
    """JSON `1e999` parses to inf without calling parse_constant; refuse it here."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("non-finite number")
    return value


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; Python accepts them unless told otherwise."""
    raise ValueError(f"{name} is not allowed")


@functools.lru_cache(maxsize=64)  # clients send a handful of spellings; a refusal raises and is never cached
def parse_media_type(value: str | None) -> str:
    """Normalise a Content-Type (case, parameters, aliases) to one of the two we speak."""
    if value is None:
        raise ProtocolError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Content-Type is required")
    parts = value.split(";")
    base = parts[0].strip().lower()
    media = _ALIASES.get(base)
    if media is None:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "use application/msgpack or application/json",
            {"supported": [MSGPACK, JSON]},
        )
    for param in parts[1:]:
        name, _, raw = param.partition("=")
        if name.strip().lower() == "charset":
            charset = raw.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE, "only the UTF-8 charset is accepted"
                )
    return media


def _load_msgpack(body: bytes, limits: Limits) -> Any:
    """Unpack with every length capped by the header check, so a 2**32 claim allocates nothing; a map with a repeated
    key is refused.

    First without the duplicate-key hook (C speed: the hook builds a list of pairs per map in Python): a map that
    repeated a key decodes to a dict with fewer entries, so when the result packs back to exactly the body, no map of
    the body repeated a key. Any other body (repeated keys, a client's other but valid encoding such as float32 or a
    wider integer form, or no valid msgpack at all) is decoded again with the hook, which decides exactly as before.
    """
    try:
        fast = msgpack.unpackb(body, **_unpack_options(limits))
    except (ValueError, TypeError, msgpack.UnpackException):
        return _load_msgpack_checked(body, limits)  # refused there, with the message it always gave
    try:
        if msgpack.packb(fast, use_bin_type=True) == body:
            return fast
    except (ValueError, TypeError, OverflowError):  # nothing the decoder returns, but never decide on a failed re-pack
        pass
    return _load_msgpack_checked(body, limits)


def _unpack_options(limits: Limits) -> dict[str, Any]:
    """The decoder's options: strict keys, no ext or bin, every length capped."""
    return {"raw": False, "strict_map_key": True, "use_list": True, "ext_hook": _reject_ext,
            "max_str_len": limits.max_str_len, "max_bin_len": 0, "max_array_len": limits.max_container_len,
            "max_map_len": limits.max_container_len, "max_ext_len": 0}


def _load_msgpack_checked(body: bytes, limits: Limits) -> Any:
    """The body decoded with a hook that refuses a repeated map key."""
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            object_pairs_hook=_pairs_to_dict,
            ext_hook=_reject_ext,
            max_str_len=limits.max_str_len,
            max_bin_len=0,
            max_array_len=limits.max_container_len,
            max_map_len=limits.max_container_len,
            max_ext_len=0,
        )
    except _DuplicateKey:
        raise DecodeError(ErrorCode.MALFORMED_BODY, "duplicate map key") from None
    except (ValueError, TypeError, msgpack.UnpackException):
        # ExtraData, FormatError, StackError, invalid UTF-8 and limit breaches all land here.
        raise DecodeError(ErrorCode.MALFORMED_BODY, "body is not valid msgpack") from None


def _load_json(body: bytes) -> Any:
    """Parse strict UTF-8 JSON; deep nesting surfaces as RecursionError and is refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(ErrorCode.MALFORMED_BODY, "body is not valid UTF-8") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_pairs_to_dict,
            parse_float=_finite_float,
            parse_constant=_reject_constant,
        )
    except _DuplicateKey:
        raise DecodeError(ErrorCode.MALFORMED_BODY, "duplicate object key") from None
    except RecursionError:
        raise DecodeError(ErrorCode.MALFORMED_BODY, "nesting too deep") from None
    except ValueError:
        # JSONDecodeError, over-long integer literals, non-finite floats.
        raise DecodeError(ErrorCode.MALFORMED_BODY, "body is not valid JSON") from None


def _malformed(message: str) -> DecodeError:
    """Shorthand: every structural problem is the same 400 with a short reason."""
    return DecodeError(ErrorCode.MALFORMED_BODY, message)


def _check_strings(strings: list[str], limits: Limits) -> None:
    """Checked in one batch (C-speed joins): NUL and lone surrogates cannot be stored in
    PostgreSQL text or re-encoded as UTF-8, so they must never reach a handler."""
    if not strings:
        return
    if max(map(len, strings)) > limits.max_str_len:
        raise _malformed("string too long")
    joined = "".join(strings)
    if "\x00" in joined:
        raise _malformed("NUL character in string")
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            raise _malformed("lone surrogate in string") from None


_SCALARS: Final = (bool, int, float, type(None))


def _check_tree(root: Any, limits: Limits) -> None:
    """Walk level by level (no recursion, so no RecursionError) enforcing depth, container
    lengths, finite floats and plain JSON types; bytes (msgpack bin) and anything else are refused."""
    strings: list[str] = []
    level: list[Any] = [root]
    depth = 0
    while level:
        depth += 1
        below: list[Any] = []
        for node in level:
            kind = type(node)
            if kind is str:
                strings.append(node)
            elif kind is dict or kind is list:
                if depth > limits.max_depth:
                    raise _malformed("nesting too deep")
                if len(node) > limits.max_container_len:
                    raise _malformed("container too long")
                if kind is dict:
                    for key in node:
                        if type(key) is not str:
                            raise _malformed("map keys must be strings")
                        strings.append(key)
                    below.extend(node.values())
                else:
                    below.extend(node)
            elif kind is float:
                # msgpack carries NaN and +-Infinity as ordinary float32/64; JSON refuses them while parsing. Both
                # encodings answer the same (SPEC §1), and a non-finite float must never reach the mutation digest
                # (canonical JSON cannot write it) or a float field.
                if not math.isfinite(node):
                    raise _malformed("NaN and Infinity are not allowed")
            elif kind not in _SCALARS:
                raise _malformed(f"{kind.__name__} values are not allowed")
        level = below
    _check_strings(strings, limits)


def _precheck(model: type[BaseModel], obj: Any) -> None:
    """Answer 413 for an oversized push before validating thousands of mutations: any push body, the closed
    PushRequest or the server's open envelope of one mutation dict per item (sync_server/api/sync.PushEnvelope)."""
    if (model is PushRequest or "mutations" in model.model_fields) and isinstance(obj, dict):
        mutations = obj.get("mutations")
        if isinstance(mutations, list) and len(mutations) > MAX_MUTATIONS:
            raise ProtocolError(
                ErrorCode.TOO_MANY_MUTATIONS,
                f"at most {MAX_MUTATIONS} mutations per push",
                {"max_mutations": MAX_MUTATIONS, "received": len(mutations)},
            )


def _validation_details(exc: ValidationError) -> dict[str, Any]:
    """Compact, capped error list; never echoes the (possibly huge) input back."""
    errors = [
        {
            "loc": ".".join(str(part) for part in err["loc"])[:_MAX_MSG],
            "msg": err["msg"][:_MAX_MSG],
        }
        for err in exc.errors(include_url=False, include_input=False, include_context=False)[
            :_MAX_ERRORS
        ]
    ]
    return {"errors": errors, "error_count": exc.error_count()}


def _load(body: bytes, content_type: str | None, limits: Limits) -> Any:
    """Size, media type, parse and tree limits: everything before schema validation."""
    if len(body) > limits.max_body_bytes:
        raise ProtocolError(
            ErrorCode.BODY_TOO_LARGE,
            f"body exceeds {limits.max_body_bytes} bytes",
            {"max_body_bytes": limits.max_body_bytes},
        )
    media = parse_media_type(content_type)
    if not body:
        raise DecodeError(ErrorCode.MALFORMED_BODY, "empty body")
    obj = _load_msgpack(body, limits) if media == MSGPACK else _load_json(bytes(body))
    _check_tree(obj, limits)
    return obj


def _invalid(exc: ValidationError) -> DecodeError:
    """Map pydantic's error to the protocol's 422."""
    return DecodeError(
        ErrorCode.VALIDATION_FAILED, "message does not match the schema", _validation_details(exc)
    )


def decode(
    body: bytes,
    content_type: str | None,
    model: type[M],
    limits: Limits = DEFAULT_LIMITS,
) -> M:
    """Turn untrusted bytes into a validated model or a typed error, never anything else."""
    obj = _load(body, content_type, limits)
    _precheck(model, obj)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc) from None


_LIVE_ADAPTER: Final[TypeAdapter[LiveMessage]] = TypeAdapter(LiveMessage)
_LIVE_LIMITS: Final = Limits(max_body_bytes=256 * 1024)


def decode_live(
    frame: bytes | str, content_type: str, limits: Limits = _LIVE_LIMITS
) -> LiveMessage:
    """Decode one WebSocket frame (text frames are JSON) with the same guarantees as decode."""
    body = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    obj = _load(body, content_type, limits)
    try:
        return _LIVE_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _dump(data: Any, media_type: str) -> bytes:
    """Serialise plain JSON-mode data in the negotiated encoding."""
    if media_type == MSGPACK:
        packed: bytes = msgpack.packb(data, use_bin_type=True)
        return packed
    return json.dumps(
        data, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def encode(obj: BaseModel, media_type: str) -> bytes:
    """Encode via JSON-mode dump so both encodings carry the same text for dates and ids."""
    return _dump(obj.model_dump(mode="json"), parse_media_type(media_type))


def encode_error(err: ProtocolError, media_type: str) -> bytes:
    """Encode the error envelope; handlers call this for every non-2xx response."""
    return encode(err.to_envelope(), media_type)


def _parse_accept(accept: str) -> list[tuple[str, float, int]]:
    """Parse media ranges with q-values; malformed entries are skipped, not fatal."""
    ranges: list[tuple[str, float, int]] = []
    for index, entry in enumerate(accept.split(",")):
        parts = entry.split(";")
        media = parts[0].strip().lower()
        if media.count("/") != 1:
            continue
        q = 1.0
        for param in parts[1:]:
            name, _, raw = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = -1.0
        if not 0.0 <= q <= 1.0:
            continue
        ranges.append((_ALIASES.get(media, media), q, index))
    return ranges


def _quality(media: str, ranges: list[tuple[str, float, int]]) -> tuple[float, int] | None:
    """RFC 9110: the most specific matching range decides the q-value."""
    best: tuple[int, float, int] | None = None
    major = media.split("/")[0]
    for pattern, q, index in ranges:
        if pattern == media:
            specificity = 3
        elif pattern == f"{major}/*":
            specificity = 2
        elif pattern == "*/*":
            specificity = 1
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, q, index)
    return None if best is None else (best[1], best[2])


@functools.lru_cache(maxsize=128)  # pure in its two headers (bounded: at most ~2 MiB of header text), asked thrice per request
def negotiate(accept: str | None, content_type: str | None) -> str:
    """Pick the response encoding: Accept by q-value, ties mirror the request, else JSON."""
    try:
        mirrored = parse_media_type(content_type) if content_type else None
    except ProtocolError:
        mirrored = None
    ranges = _parse_accept(accept) if accept else []
    if not ranges:
        return mirrored or JSON
    scored: list[tuple[float, int, int, str]] = []
    for media in (MSGPACK, JSON):
        quality = _quality(media, ranges)
        if quality is not None and quality[0] > 0.0:
            q, index = quality
            # Higher q first; then the request's own type; then Accept order; JSON last resort.
            scored.append((-q, 0 if media == mirrored else 1, index, media))
    if not scored:
        raise ProtocolError(
            ErrorCode.NOT_ACCEPTABLE,
            "Accept names no media type this server produces",
            {"supported": [MSGPACK, JSON]},
        )
    return min(scored)[3]
