"""Protocol versioning: one integer on every request, so old apps fail loudly, not subtly."""

from __future__ import annotations

from typing import Final

from .errors import ErrorCode, ProtocolError

__all__ = [
    "MIN_SUPPORTED_VERSION",
    "PROTOCOL_VERSION",
    "VERSION_HEADER",
    "check_version",
    "reset_required",
    "upgrade_required",
]

PROTOCOL_VERSION: Final = 1
MIN_SUPPORTED_VERSION: Final = 1
VERSION_HEADER: Final = "FieldSync-Protocol"
_MAX_HEADER_LEN: Final = 8


def _version_details() -> dict[str, int]:
    """Tell the client the supported range so it can pick or prompt for an update."""
    return {"min_supported": MIN_SUPPORTED_VERSION, "max_supported": PROTOCOL_VERSION}


def check_version(header_value: str | None) -> int:
    """Parse the version header and refuse versions the server cannot serve correctly."""
    text = (header_value or "").strip()
    if not text or len(text) > _MAX_HEADER_LEN or not (text.isascii() and text.isdigit()):
        raise ProtocolError(
            ErrorCode.PROTOCOL_VERSION_INVALID,
            f"{VERSION_HEADER} header must be a positive integer",
            _version_details(),
        )
    version = int(text)
    if version < 1:
        raise ProtocolError(
            ErrorCode.PROTOCOL_VERSION_INVALID,
            f"{VERSION_HEADER} header must be a positive integer",
            _version_details(),
        )
    if version < MIN_SUPPORTED_VERSION:
        raise upgrade_required(version)
    if version > PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol {version} is newer than this server ({PROTOCOL_VERSION})",
            _version_details(),
        )
    return version


def upgrade_required(client_version: int) -> ProtocolError:
    """Build the 426 answer for an app below the floor; the device keeps its outbox."""
    details: dict[str, int] = {"client_version": client_version, **_version_details()}
    return ProtocolError(
        ErrorCode.UPGRADE_REQUIRED,
        f"protocol {client_version} is below the supported floor {MIN_SUPPORTED_VERSION}",
        details,
    )


def reset_required(reason: str) -> ProtocolError:
    """Build the 409 that makes a device re-snapshot; its outbox survives the reset."""
    return ProtocolError(
        ErrorCode.RESET_REQUIRED,
        "drop the local replica and cursor, pull a snapshot, keep the outbox",
        {"reason": reason, "keep_outbox": True},
    )
