"""Error table, versioning, tus metadata and SPEC.md: the parts a device team reads."""

from __future__ import annotations

import ast
import base64
import json
import re
from pathlib import Path

import pytest

import protocol as p
from protocol.errors import error_code_table_markdown, reason_code_table_markdown

SPEC = Path(p.__file__).with_name("SPEC.md")
TICKET_ID = "0d4c6a8e-1111-4222-8333-444455556666"
SHA = "ab" * 32


def test_every_error_code_has_status_and_retry_flag() -> None:
    for code in p.ErrorCode:
        assert 400 <= code.http_status < 600
        assert isinstance(code.retryable, bool)
        assert code.value == code.value.lower()
    assert {c for c in p.ErrorCode if c.retryable} == {
        p.ErrorCode.TOO_MANY_UPLOADS, p.ErrorCode.RATE_LIMITED,
        p.ErrorCode.SERVICE_UNAVAILABLE, p.ErrorCode.INTERNAL_ERROR, p.ErrorCode.REQUEST_TIMEOUT,
        p.ErrorCode.UPLOAD_BUSY,
    }
    assert p.ErrorCode.UPGRADE_REQUIRED.http_status == 426
    assert (p.ErrorCode.SEQ_REUSED.http_status, p.ErrorCode.SEQ_REUSED.retryable) == (409, False)
    assert p.ErrorCode.CHECKSUM_MISMATCH.http_status == 460


def test_protocol_error_envelope() -> None:
    err = p.ProtocolError(p.ErrorCode.SEQ_GAP, details={"expected_seq": 4})
    assert err.http_status == 409 and not err.retryable
    env = err.to_envelope().model_dump(mode="json")
    assert env == {"error": {"code": "seq_gap", "message": p.ErrorCode.SEQ_GAP.description, "details": {"expected_seq": 4}}}
    assert isinstance(p.DecodeError(), p.ProtocolError)
    assert p.DecodeError().code is p.ErrorCode.MALFORMED_BODY


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, p.ErrorCode.PROTOCOL_VERSION_INVALID), ("", p.ErrorCode.PROTOCOL_VERSION_INVALID),
        ("abc", p.ErrorCode.PROTOCOL_VERSION_INVALID), ("1.0", p.ErrorCode.PROTOCOL_VERSION_INVALID),
        ("-1", p.ErrorCode.PROTOCOL_VERSION_INVALID), ("0", p.ErrorCode.PROTOCOL_VERSION_INVALID),
        ("١", p.ErrorCode.PROTOCOL_VERSION_INVALID), ("9" * 50, p.ErrorCode.PROTOCOL_VERSION_INVALID),
        (str(p.PROTOCOL_VERSION + 1), p.ErrorCode.UNSUPPORTED_VERSION),
    ],
)
def test_check_version_refusals(header: str | None, code: p.ErrorCode) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.check_version(header)
    assert info.value.code is code
    assert info.value.details["max_supported"] == p.PROTOCOL_VERSION


def test_check_version_accepts_current() -> None:
    assert p.check_version(f" {p.PROTOCOL_VERSION} ") == p.PROTOCOL_VERSION
    assert p.VERSION_HEADER == "FieldSync-Protocol"


def test_upgrade_and_reset_helpers() -> None:
    up = p.upgrade_required(0)
    assert up.code is p.ErrorCode.UPGRADE_REQUIRED and up.http_status == 426
    reset = p.reset_required("cursor_epoch_changed")
    assert reset.code is p.ErrorCode.RESET_REQUIRED and reset.details["keep_outbox"] is True


def _tus(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def test_tus_metadata_parses() -> None:
    header = _tus(sha256=SHA, ticket_id=TICKET_ID, kind="after", taken_at="2020-01-01T10:00:00Z",
                  lat="34.05", lon="-118.25", filename="IMG_1.jpg", filetype="image/jpeg")
    meta = p.UploadMetadata.from_tus(header + ",is_confidential")
    assert meta.kind is p.PhotoKind.AFTER and meta.lat == 34.05 and meta.filename == "IMG_1.jpg"
    assert p.parse_tus_metadata("a YQ==, b")["b"] == ""


@pytest.mark.parametrize(
    "header",
    [
        "a YQ==,a Yg==",  # duplicate key
        "a !!!",  # bad base64
        "a YQ",  # missing padding
        "a " + base64.b64encode(b"\xff").decode(),  # not UTF-8
        "a YQ== extra",
        ",",
        "é YQ==",
        "x" * 5000,
    ],
)
def test_tus_metadata_refused(header: str) -> None:
    with pytest.raises(p.DecodeError) as info:
        p.parse_tus_metadata(header)
    assert info.value.code is p.ErrorCode.VALIDATION_FAILED


@pytest.mark.parametrize(
    "over",
    [{"lat": "nan"}, {"lat": "north"}, {"lat": "91"}, {"kind": "during"}, {"sha256": "AB" * 32},
     {"taken_at": "2020-01-01T10:00:00"}],
)
def test_upload_metadata_refused(over: dict[str, str]) -> None:
    values = dict(sha256=SHA, ticket_id=TICKET_ID, kind="before", taken_at="2020-01-01T10:00:00Z")
    values.update(over)
    with pytest.raises(p.DecodeError):
        p.UploadMetadata.from_tus(_tus(**values))


def _spec() -> str:
    return SPEC.read_text(encoding="utf-8")


def test_spec_embeds_generated_tables() -> None:
    spec = _spec()
    hint = "regenerate with protocol.errors.error_code_table_markdown() / reason_code_table_markdown()"
    assert error_code_table_markdown() in spec, hint
    assert reason_code_table_markdown() in spec, hint


@pytest.mark.parametrize(
    "enum", [p.ErrorCode, p.ReasonCode, p.TicketStatus, p.Priority, p.PhotoKind, p.PhotoState,
             p.MutationStatus, p.RemovalReason],
)
def test_spec_lists_every_enum_value(enum: type) -> None:
    spec = _spec()
    missing = [m.value for m in enum if f"`{m.value}`" not in spec]  # type: ignore[attr-defined]
    assert not missing, missing


def test_spec_lists_every_op_and_its_args() -> None:
    spec = _spec()
    for op in p.OPS:
        assert f"`{op}`" in spec, op


def test_spec_json_examples_are_valid_messages() -> None:
    """Every ```json block tagged with a model name decodes as that model."""
    blocks = re.findall(r"<!-- model: (\w+) -->\n```json\n(.*?)```", _spec(), re.S)
    assert len(blocks) >= 6
    for name, body in blocks:
        model = getattr(p, name)
        p.decode(json.dumps(json.loads(body)).encode(), p.JSON, model)


def test_protocol_package_is_pure() -> None:
    forbidden = {"asyncio", "aiohttp", "asyncpg", "sync_server", "clients", "socket"}
    for path in Path(p.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, (path.name, name)
        assert len(path.read_text(encoding="utf-8").splitlines()) < 500, path.name


def test_a_conflict_on_the_longest_item_type_is_a_valid_result() -> None:
    # An item line's conflict names `items.<item_type>`; item types may be 64 characters, so the answer to a set_items
    # conflict on one must still validate for a strict client (a 64-character field limit made it a poison pill).
    from protocol.push import ConflictInfo

    field = "items." + "x" * 64
    info = ConflictInfo.model_validate({"kind": "field_overwritten", "field": field, "kept": 2, "discarded": 3})
    assert info.field == field and len(field) == 70
