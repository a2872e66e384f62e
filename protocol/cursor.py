"""Opaque, HMAC-signed pull cursors: a device can hold one but never forge or widen one.

The payload is msgpack of a fixed array of fields; the token is base64url(payload ‖ mac16)
without padding. A cursor that fails any check is CURSOR_INVALID with one message, so the
error never reveals whether the MAC, the version or the scope was wrong (I3).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgpack  # no stubs or py.typed upstream

from .errors import ErrorCode, ProtocolError
from .version import MIN_SUPPORTED_VERSION, PROTOCOL_VERSION

__all__ = ["CursorSigner", "CursorState", "MAX_CURSOR_LEN"]

MAX_CURSOR_LEN: Final = 2048
_MAC_LEN: Final = 16
_MAC_DOMAIN: Final = b"fieldsync-cursor-v1\x00"
_MIN_SECRET: Final = 16
_N_FIELDS: Final = 9


@dataclass(frozen=True, slots=True)
class CursorState:
    """Where a pull stands: snapshot (pg_snapshot text) and, mid-page-set, the continuation."""

    version: int
    scope: str
    snapshot: str
    issued_at: int
    head: str | None = None
    after: str | None = None
    checksum: str | None = None
    reset: bool = False
    sent: int = 0


_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")


def _b64encode(raw: bytes) -> str:
    """base64url without padding: base64.urlsafe_b64encode(raw).rstrip(b"=") without the module's Python layers."""
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")


def _b64decode(token: str) -> bytes:
    """base64.urlsafe_b64decode of an ASCII token with its padding restored, straight to binascii (same leniency:
    characters outside the alphabet are skipped, which the caller's canonical re-encoding check refuses)."""
    return binascii.a2b_base64(token.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(token) % 4))


def _invalid() -> ProtocolError:
    """The single answer for every cursor problem, so no check leaks information."""
    return ProtocolError(ErrorCode.CURSOR_INVALID, "cursor is not valid; pull with cursor null")


def _from_fields(fields: Any) -> CursorState:
    """Rebuild the state, checking every type, since a signed payload can still be old. The values come from msgpack,
    whose ints, strs and bools are exactly those types: `type(v) is int` keeps a bool from passing for an int."""
    if type(fields) is not list or len(fields) != _N_FIELDS:
        raise _invalid()
    version, scope, snapshot, issued_at, head, after, checksum, reset, sent = fields
    if not (
        type(version) is int
        and type(scope) is str
        and type(snapshot) is str
        and type(issued_at) is int
        and (head is None or type(head) is str)
        and (after is None or type(after) is str)
        and (checksum is None or type(checksum) is str)
        and type(reset) is bool
        and type(sent) is int
        and sent >= 0
    ):
        raise _invalid()
    if not MIN_SUPPORTED_VERSION <= version <= PROTOCOL_VERSION:
        raise _invalid()
    return CursorState(version, scope, snapshot, issued_at, head, after, checksum, reset, sent)


class CursorSigner:
    """Signs with the first secret and verifies with any, so secrets can be rotated live."""

    def __init__(self, secret: bytes, old_secrets: Iterable[bytes] = ()) -> None:
        self._secrets: tuple[bytes, ...] = (secret, *old_secrets)
        if any(len(s) < _MIN_SECRET for s in self._secrets):
            raise ValueError(f"cursor secrets must be at least {_MIN_SECRET} bytes")
        # Keyed once, with the domain prefix already fed: with OpenSSL 3 every hmac.new/hmac.digest fetches the digest
        # and sets the key up again (~5-30 us on a loaded server, twice per pull); copying a keyed state is ~1 us.
        self._keyed = tuple(hmac.new(s, _MAC_DOMAIN, hashlib.sha256) for s in self._secrets)

    @staticmethod
    def _mac(keyed: hmac.HMAC, payload: bytes) -> bytes:
        """Truncated HMAC-SHA256 of the domain prefix and the payload; 128 bits is ample against online forgery."""
        mac = keyed.copy()
        mac.update(payload)
        return mac.digest()[:_MAC_LEN]

    def encode(self, state: CursorState) -> str:
        """Serialise compactly and sign; the device treats the result as opaque text."""
        fields = [state.version, state.scope, state.snapshot, state.issued_at, state.head, state.after, state.checksum,
                  state.reset, state.sent]  # not dataclasses.astuple: it deep-copies every field, per request
        payload: bytes = msgpack.packb(fields, use_bin_type=True)
        return _b64encode(payload + self._mac(self._keyed[0], payload))

    def decode(self, token: str, *, scope: str) -> CursorState:
        """Verify MAC, version and scope; any failure is the same CURSOR_INVALID."""
        if not isinstance(token, str) or not 0 < len(token) <= MAX_CURSOR_LEN:
            raise _invalid()
        if not token.isascii() or "=" in token:
            raise _invalid()
        try:
            raw = _b64decode(token)
        except (binascii.Error, ValueError):
            raise _invalid() from None
        if _b64encode(raw) != token:
            raise _invalid()  # non-canonical spelling: one cursor, one text
        if len(raw) <= _MAC_LEN:
            raise _invalid()
        payload, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        # Check every secret (no early exit) so timing does not reveal which one matched.
        matched = False
        for keyed in self._keyed:
            matched |= hmac.compare_digest(self._mac(keyed, payload), mac)
        if not matched:
            raise _invalid()
        try:
            fields = msgpack.unpackb(
                payload, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0,
                max_array_len=_N_FIELDS, max_map_len=0, max_str_len=MAX_CURSOR_LEN,
            )
        except (ValueError, TypeError, msgpack.UnpackException):
            raise _invalid() from None
        state = _from_fields(fields)
        mine = state.scope.encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(mine, scope.encode("utf-8", "surrogatepass")):
            raise _invalid()
        return state
