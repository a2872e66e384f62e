"""The error-code contract: one enum, one table of HTTP status and retryability, one envelope.

Devices decide between "retry later" and "reject and move on" from `retryable` alone, so a
permanently failing request never blocks an outbox (I6).
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Final, Mapping, NamedTuple

from pydantic import Field, Strict

from .fields import WireModel

__all__ = [
    "DecodeError",
    "ErrorBody",
    "ErrorCode",
    "ErrorEnvelope",
    "ErrorSpec",
    "ProtocolError",
    "ReasonCode",
    "error_code_table_markdown",
    "reason_code_table_markdown",
]


class ErrorCode(StrEnum):
    """Request-level failure codes; stable wire values, never renamed."""

    MALFORMED_BODY = "malformed_body"
    VALIDATION_FAILED = "validation_failed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_ACCEPTABLE = "not_acceptable"
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_MUTATIONS = "too_many_mutations"
    PROTOCOL_VERSION_INVALID = "protocol_version_invalid"
    UNSUPPORTED_VERSION = "unsupported_version"
    UPGRADE_REQUIRED = "upgrade_required"
    RESET_REQUIRED = "reset_required"
    UNAUTHORIZED = "unauthorized"
    TOKEN_REVOKED = "token_revoked"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CURSOR_INVALID = "cursor_invalid"
    SEQ_GAP = "seq_gap"
    SEQ_REUSED = "seq_reused"
    ILLEGAL_TRANSITION = "illegal_transition"
    CONFLICT = "conflict"
    TOO_MANY_UPLOADS = "too_many_uploads"
    RATE_LIMITED = "rate_limited"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"
    UPLOAD_OFFSET_MISMATCH = "upload_offset_mismatch"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    UPLOAD_TOO_LARGE = "upload_too_large"
    UNSUPPORTED_IMAGE = "unsupported_image"
    UPLOAD_EXPIRED = "upload_expired"
    REQUEST_TIMEOUT = "request_timeout"
    UPLOAD_BUSY = "upload_busy"
    CHECKSUM_UNSUPPORTED = "checksum_unsupported"

    @property
    def http_status(self) -> int:
        """HTTP status to send, looked up in the table so the rule stays data."""
        return ERROR_TABLE[self].http_status

    @property
    def retryable(self) -> bool:
        """Whether a device may resend the same request unchanged later."""
        return ERROR_TABLE[self].retryable

    @property
    def description(self) -> str:
        """Human meaning and the device's expected reaction, shown in SPEC.md."""
        return ERROR_TABLE[self].description


class ErrorSpec(NamedTuple):
    """One row of the error table."""

    http_status: int
    retryable: bool
    description: str


_E = ErrorCode
ERROR_TABLE: Final[Mapping[ErrorCode, ErrorSpec]] = MappingProxyType({
    _E.MALFORMED_BODY: ErrorSpec(400, False, "Body is not valid msgpack/JSON or breaks a hard limit (depth, lengths, duplicate keys, ext types)."),
    _E.VALIDATION_FAILED: ErrorSpec(422, False, "Body decoded but does not match the message schema; `details.errors` lists up to 20 problems."),
    _E.UNSUPPORTED_MEDIA_TYPE: ErrorSpec(415, False, "Content-Type is missing or not `application/msgpack` / `application/json` (charset must be UTF-8)."),
    _E.NOT_ACCEPTABLE: ErrorSpec(406, False, "Accept names only media types the server does not produce."),
    _E.BODY_TOO_LARGE: ErrorSpec(413, False, "Body exceeds the size limit; split the batch."),
    _E.TOO_MANY_MUTATIONS: ErrorSpec(413, False, "A push carries more than MAX_MUTATIONS (500) mutations; send fewer per request."),
    _E.PROTOCOL_VERSION_INVALID: ErrorSpec(400, False, "The FieldSync-Protocol header is missing or not a positive integer."),
    _E.UNSUPPORTED_VERSION: ErrorSpec(400, False, "The client speaks a newer protocol than this server; retry with `details.max_supported`."),
    _E.UPGRADE_REQUIRED: ErrorSpec(426, False, "The client's protocol version is below the server's floor; the app must be updated. Keep the outbox."),
    _E.RESET_REQUIRED: ErrorSpec(409, False, "Drop the local replica and cursor, pull a fresh snapshot; KEEP the outbox and push it afterwards."),
    _E.UNAUTHORIZED: ErrorSpec(401, False, "Missing or invalid bearer token; re-enrol or refresh the token."),
    _E.TOKEN_REVOKED: ErrorSpec(401, False, "The device was revoked by an operator; stop syncing and show the crew."),
    _E.FORBIDDEN: ErrorSpec(403, False, "The caller may not perform this request."),
    _E.NOT_FOUND: ErrorSpec(404, False, "No such resource in the caller's scope (out-of-scope resources also answer this)."),
    _E.METHOD_NOT_ALLOWED: ErrorSpec(405, False, "HTTP method not supported on this endpoint."),
    _E.CURSOR_INVALID: ErrorSpec(400, False, "Cursor is malformed, tampered, from another scope or an unknown version; pull again with `cursor: null`."),
    _E.SEQ_GAP: ErrorSpec(409, False, "The push starts after a seq the server has not seen; resend from `details.expected_seq`."),
    _E.SEQ_REUSED: ErrorSpec(409, False, "A seq the server already applied came back with a different body (client bug); `details.seq`, `details.stored_digest`. Nothing in the request was applied."),
    _E.ILLEGAL_TRANSITION: ErrorSpec(409, False, "A request-level transition is not allowed by the state machine (supervisor API)."),
    _E.CONFLICT: ErrorSpec(409, False, "The resource changed concurrently; `details` carries the server's current version."),
    _E.TOO_MANY_UPLOADS: ErrorSpec(429, True, "Too many concurrent uploads for this device; retry after `Retry-After`."),
    _E.RATE_LIMITED: ErrorSpec(429, True, "Too many requests; retry after `Retry-After` with backoff."),
    _E.SERVICE_UNAVAILABLE: ErrorSpec(503, True, "Transient outage (database down, shutting down) or the server is at capacity (too many requests waiting for the database); retry after `Retry-After` with backoff."),
    _E.INTERNAL_ERROR: ErrorSpec(500, True, "Unexpected server failure; nothing was half-applied, retry the same request."),
    _E.UPLOAD_OFFSET_MISMATCH: ErrorSpec(409, False, "tus Upload-Offset differs from the server's; HEAD the upload and resume at its offset."),
    _E.CHECKSUM_MISMATCH: ErrorSpec(460, False, "Uploaded bytes do not hash to the declared SHA-256; re-read the file and upload again."),
    _E.UPLOAD_TOO_LARGE: ErrorSpec(413, False, "Upload-Length exceeds the server's tus max size."),
    _E.UNSUPPORTED_IMAGE: ErrorSpec(415, False, "The photo is not a supported image format (JPEG, PNG, HEIC, WebP)."),
    _E.UPLOAD_EXPIRED: ErrorSpec(410, False, "An unfinished upload was expired; start a new upload."),
    _E.REQUEST_TIMEOUT: ErrorSpec(408, True, "The request body did not arrive within the server's body timeout; resend it (the connection is closed)."),
    _E.CHECKSUM_UNSUPPORTED: ErrorSpec(400, False, "tus Upload-Checksum names an algorithm other than sha1/sha256, or its digest is not base64 of that algorithm's length; the chunk was discarded."),
    _E.UPLOAD_BUSY: ErrorSpec(409, True, "Another live request is writing this upload (often the client's own earlier PATCH); retry after `Retry-After`, then HEAD and resume."),
})


class ReasonCode(StrEnum):
    """Per-mutation reasons carried in push results (rejected or merged), I5."""

    NOT_IN_SCOPE = "not_in_scope"
    TICKET_NOT_FOUND = "ticket_not_found"
    ILLEGAL_TRANSITION = "illegal_transition"
    STALE_TRANSITION = "stale_transition"
    SUPERVISOR_OWNED = "supervisor_owned"
    INVALID_ARGS = "invalid_args"
    LATE_FIELD_REPORT = "late_field_report"
    ALREADY_EXISTS = "already_exists"
    PHOTO_PENDING = "photo_pending"
    TICKET_CLOSED = "ticket_closed"
    UNKNOWN_OP = "unknown_op"
    CONFLICT_RESOLVED = "conflict_resolved"


REASON_DESCRIPTIONS: Final[Mapping[ReasonCode, str]] = MappingProxyType({
    ReasonCode.NOT_IN_SCOPE: "The ticket is not (or no longer) held by the device's crew and the op is not field work that can be kept.",
    ReasonCode.TICKET_NOT_FOUND: "No ticket with that id exists.",
    ReasonCode.ILLEGAL_TRANSITION: "The state machine does not allow this transition from the ticket's current status.",
    ReasonCode.STALE_TRANSITION: "The ticket already moved past this state (e.g. `start` after `complete`); status never moves backwards.",
    ReasonCode.SUPERVISOR_OWNED: "The op tried to change a supervisor-owned field.",
    ReasonCode.INVALID_ARGS: "Arguments are well-formed but not acceptable (unknown resolution code, item type, ...).",
    ReasonCode.LATE_FIELD_REPORT: "Field work on a ticket that left the crew while offline; kept and shown to the supervisor.",
    ReasonCode.ALREADY_EXISTS: "The note, photo or self-reported ticket already exists: with status `duplicate` nothing changed; with `rejected` the existing one differs.",
    ReasonCode.PHOTO_PENDING: "The transition needs an available photo whose upload has not completed yet; upload, then retry as a new mutation.",
    ReasonCode.TICKET_CLOSED: "The ticket is closed/cancelled and accepts no more crew changes.",
    ReasonCode.UNKNOWN_OP: "The op name is not one this server knows (e.g. a newer client); rejected on its own, its seq advances.",
    ReasonCode.CONFLICT_RESOLVED: "Applied with adjustments; `conflicts` lists what was kept and what was discarded.",
})


class ErrorBody(WireModel):
    """The body of every error response: a stable code plus human text and small details."""

    code: Annotated[ErrorCode, Strict(False)]
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(WireModel):
    """Every non-2xx response has exactly this shape, in the negotiated encoding."""

    error: ErrorBody


class ProtocolError(Exception):
    """The client's fault (or a transient refusal); carries the status to send, as h11 does."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message if message is not None else code.description
        self.details: dict[str, Any] = dict(details) if details else {}
        super().__init__(f"{code.value}: {self.message}")

    @property
    def http_status(self) -> int:
        """HTTP status for the response, taken from the error table."""
        return self.code.http_status

    @property
    def retryable(self) -> bool:
        """Whether the client may retry unchanged."""
        return self.code.retryable

    def to_envelope(self) -> ErrorEnvelope:
        """Build the one wire shape for errors, so handlers never hand-roll dicts."""
        return ErrorEnvelope(
            error=ErrorBody(code=self.code, message=self.message, details=self.details)
        )


class DecodeError(ProtocolError):
    """Bytes could not become a model; the only exception the codec lets out besides ProtocolError."""

    def __init__(
        self,
        code: ErrorCode = ErrorCode.MALFORMED_BODY,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(code, message, details)


def error_code_table_markdown() -> str:
    """Render the table SPEC.md embeds, so the spec is generated from the code, not copied."""
    lines = ["| code | HTTP | retry | meaning and device reaction |", "|---|---|---|---|"]
    for code in ErrorCode:
        spec = ERROR_TABLE[code]
        retry = "yes" if spec.retryable else "no"
        lines.append(f"| `{code.value}` | {spec.http_status} | {retry} | {spec.description} |")
    return "\n".join(lines)


def reason_code_table_markdown() -> str:
    """Render the per-mutation reason table SPEC.md embeds."""
    lines = ["| reason | meaning |", "|---|---|"]
    for reason in ReasonCode:
        lines.append(f"| `{reason.value}` | {REASON_DESCRIPTIONS[reason]} |")
    return "\n".join(lines)
