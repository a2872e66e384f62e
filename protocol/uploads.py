"""Photo upload metadata carried in the tus `Upload-Metadata` header (I8)."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated, Final, Self

from pydantic import StringConstraints, ValidationError

from .errors import DecodeError, ErrorCode
from .fields import Lat, Lon, PhotoKindField, Sha256Hex, WireDatetime, WireModel, WireUUID

__all__ = ["UploadMetadata", "parse_tus_metadata"]

MAX_METADATA_HEADER: Final = 4096
_FLOAT_KEYS: Final = frozenset({"lat", "lon"})


def _bad(message: str) -> DecodeError:
    """One error shape for every header problem; the header is never echoed back."""
    return DecodeError(ErrorCode.VALIDATION_FAILED, message, {"header": "Upload-Metadata"})


def parse_tus_metadata(header: str) -> dict[str, str]:
    """Parse `key base64value,...` strictly, because a duplicate key could hide a second value."""
    if len(header) > MAX_METADATA_HEADER:
        raise _bad("Upload-Metadata header too long")
    result: dict[str, str] = {}
    if not header.strip():
        return result
    for raw_pair in header.split(","):
        parts = raw_pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise _bad("Upload-Metadata pairs are `key base64value`")
        key = parts[0]
        if not key.isascii() or not key.isprintable():
            raise _bad("Upload-Metadata keys must be printable ASCII")
        if key in result:
            raise _bad(f"duplicate Upload-Metadata key {key!r}")
        value = ""
        if len(parts) == 2:
            try:
                value = base64.b64decode(parts[1], validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise _bad(f"Upload-Metadata value for {key!r} is not base64 UTF-8") from None
            if "\x00" in value:  # PostgreSQL text cannot hold NUL; refuse it here like the body codec does
                raise _bad(f"Upload-Metadata value for {key!r} contains a NUL character")
        result[key] = value
    return result


class UploadMetadata(WireModel):
    """What the server needs to link uploaded bytes to a ticket before they arrive."""

    sha256: Sha256Hex
    ticket_id: WireUUID
    kind: PhotoKindField
    taken_at: WireDatetime
    lat: Lat | None = None
    lon: Lon | None = None
    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None

    @classmethod
    def from_tus(cls, header: str) -> Self:
        """Build from the header; tus values are text, so lat/lon are parsed here, strictly."""
        # Standard tus clients add keys such as `filetype`; they carry nothing we use.
        known = cls.model_fields.keys()
        # tus lets a value be empty (`key` alone): an optional key sent empty (no GPS fix, no file name) is absent
        fields: dict[str, object] = {
            k: v for k, v in parse_tus_metadata(header).items() if k in known and (v or cls.model_fields[k].is_required())
        }
        for key in _FLOAT_KEYS & fields.keys():
            text = fields[key]
            try:
                number = float(str(text))
            except ValueError:
                raise _bad(f"{key} must be a decimal number") from None
            if not math.isfinite(number):
                raise _bad(f"{key} must be finite")
            fields[key] = number
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise _bad("; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:20]
            )) from None
