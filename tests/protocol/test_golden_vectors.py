"""Golden vectors: the wire forms a client author must reproduce byte for byte, fixed here and in SPEC.md §9.

Expected bytes are written by hand and their hashes were computed with hashlib from those bytes, never by
protocol/ itself, so a change to canonical form, ticket hash, scope checksum or cursor format fails here and
must be made deliberately (with SPEC.md §9 updated for every client).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import msgpack
import pytest

import protocol as p
from protocol.canonical import (
    ScopeChecksum, canonical_doc_bytes, doc_hash, mutation_digest, op_note_id, scope_checksum, ticket_hash,
)
from protocol.cursor import MAX_CURSOR_LEN, CursorSigner, CursorState

B64 = "b" * 64

# Ticket A: non-ASCII (2-, 3- and 4-byte UTF-8), JSON escapes, integral float, unsorted notes and items, nulls,
# an empty array, a datetime with an offset.
INPUT_A = (
    '{"id":"7C9E6679-7425-40DE-944B-E07FC1F90AE7","sr_number":"1-1523590121","service_type":"Bulky Items",'
    '"department":"Sanitation","status":"in_progress","priority":"high","address":"1200 W Niño St — Apt 3",'
    '"zip":"90015","lat":34.0407,"lon":-118,"council_district":1,"description":"Sofá \\"grande\\"\\ny colchón 🛋",'
    '"requested_at":"2020-01-01T08:15:00-08:00","service_date":"2020-01-02","crew":"SAN-East-3",'
    '"notes":[{"id":"00000000-0000-4000-8000-000000000002","text":"Vecino dice: «ya»","author":"dev-7",'
    '"device_time":"2020-01-02T09:00:00-08:00","created_at":"2020-01-02T17:00:01Z"},'
    '{"id":"00000000-0000-4000-8000-000000000001","text":"llegamos","author":"dev-7","device_time":null,'
    '"created_at":"2020-01-02T17:00:00Z"}],"photos":[],'
    '"items":[{"item_type":"sofa","count":1},{"item_type":"mattress","count":2}],'
    '"updated_at":"2020-01-02T17:05:00.123456Z","version":7}'
).encode("utf-8")
CANON_A = (
    r'{"address":"1200 W Niño St — Apt 3","council_district":1,"created_by_device":null,"crew":"SAN-East-3",'
    r'"department":"Sanitation","description":"Sofá \"grande\"\ny colchón 🛋","due_at":null,'
    r'"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","items":[{"count":2,"item_type":"mattress"},'
    r'{"count":1,"item_type":"sofa"}],"lat":34.0407,"lon":-118.0,"notes":[{"author":"dev-7",'
    r'"created_at":"2020-01-02T17:00:00.000000Z","device_time":null,"id":"00000000-0000-4000-8000-000000000001",'
    r'"text":"llegamos"},{"author":"dev-7","created_at":"2020-01-02T17:00:01.000000Z",'
    r'"device_time":"2020-01-02T17:00:00.000000Z","id":"00000000-0000-4000-8000-000000000002",'
    r'"text":"Vecino dice: «ya»"}],"photos":[],"priority":"high","reason_code":null,'
    r'"requested_at":"2020-01-01T16:15:00.000000Z","resolution_code":null,"service_date":"2020-01-02",'
    r'"service_type":"Bulky Items","source":null,"sr_number":"1-1523590121","status":"in_progress",'
    r'"updated_at":"2020-01-02T17:05:00.123456Z","version":7,"zip":"90015"}'
).encode("utf-8")
HASH_A = "0b7040c7d78abfa5c760fe4da10a7d9edfc0db514ebf6deac415fca0745faf4e"

# Ticket B: photos of one sha256 in both kinds (sorted by kind), a float with an exponent, nulls everywhere else.
INPUT_B = (
    '{"id":"0d4c6a8e-1111-4222-8333-444455556666","service_type":"Graffiti Removal",'
    '"department":"Community Beautification","status":"completed","priority":"normal","address":"",'
    '"requested_at":"2020-01-01T00:00:00Z","updated_at":"2020-01-01T00:00:00+00:00","version":1,'
    '"resolution_code":"painted_over","photos":['
    '{"sha256":"' + B64 + '","kind":"before","taken_at":"2020-01-01T00:00:00Z","state":"pending"},'
    '{"sha256":"' + B64 + '","kind":"after","taken_at":"2020-01-01T00:00:00Z","state":"available",'
    '"lat":0.00001,"lon":-0.5}]}'
).encode("ascii")
CANON_B = (
    '{"address":"","council_district":null,"created_by_device":null,"crew":null,'
    '"department":"Community Beautification","description":"","due_at":null,'
    '"id":"0d4c6a8e-1111-4222-8333-444455556666","items":[],"lat":null,"lon":null,"notes":[],'
    '"photos":[{"kind":"after","lat":1e-05,"lon":-0.5,"sha256":"' + B64 + '","state":"available",'
    '"taken_at":"2020-01-01T00:00:00.000000Z"},{"kind":"before","lat":null,"lon":null,"sha256":"' + B64 + '",'
    '"state":"pending","taken_at":"2020-01-01T00:00:00.000000Z"}],"priority":"normal","reason_code":null,'
    '"requested_at":"2020-01-01T00:00:00.000000Z","resolution_code":"painted_over","service_date":null,'
    '"service_type":"Graffiti Removal","source":null,"sr_number":null,"status":"completed",'
    '"updated_at":"2020-01-01T00:00:00.000000Z","version":1,"zip":null}'
).encode("ascii")
HASH_B = "fea9488c88d74dd2ae6601f3e9dc350d81a5d691193631fc4166bc3ba418f9db"

# Scope checksums: SHA-256("fieldsync-scope-v1\0" ‖ count u64be ‖ (Σ hashes mod 2^256) u256be).
CHECKSUM_EMPTY = "79f5659a634de48b7f33a74afeb233384988be6609957c77a81985f461f0d881"
CHECKSUM_A = "2122d9b282a26996fd6045e21108a458c7cbe61605433cefdb8437a21fbb3dae"
CHECKSUM_AB = "10ea88ee638a84794eff725c62aad05d01f310b4a81d04b1b6b259bf08506522"
CHECKSUM_AA = "d67ba7b252d101215a2cd7382f0a9ac1cc511e24625bd8314e187194855997ab"
CHECKSUM_WRAP = "82512b2f6fd413b08d37a3c82828f671292948b02510b6e75af2cbf54c4dfb37"  # ff…ff + 00…01 ≡ 0, count 2


def _ticket(body: bytes) -> p.Ticket:
    return p.decode(body, p.JSON, p.Ticket)


def test_the_hand_written_hashes_are_sha256_of_the_hand_written_bytes() -> None:
    assert hashlib.sha256(CANON_A).hexdigest() == HASH_A and len(CANON_A) == 981
    assert hashlib.sha256(CANON_B).hexdigest() == HASH_B and len(CANON_B) == 886


@pytest.mark.parametrize(("body", "canon", "digest"), [(INPUT_A, CANON_A, HASH_A), (INPUT_B, CANON_B, HASH_B)],
                         ids=["A", "B"])
def test_canonical_bytes_and_ticket_hash(body: bytes, canon: bytes, digest: str) -> None:
    t = _ticket(body)
    assert p.canonical_bytes(t) == canon
    assert ticket_hash(t).hex() == digest
    doc = t.model_dump(mode="json")
    assert canonical_doc_bytes(doc) == canon and doc_hash(doc).hex() == digest


def test_non_ascii_is_written_raw_never_escaped() -> None:
    out = p.canonical_bytes(_ticket(INPUT_A))
    assert b"\\u" not in out
    for ch in ("ñ", "—", "á", "«", "🛋"):
        assert ch.encode("utf-8") in out


def test_a_canonical_document_refuses_nan() -> None:
    doc = _ticket(INPUT_B).model_dump(mode="json")
    doc["lat"] = float("nan")
    with pytest.raises(ValueError):
        canonical_doc_bytes(doc)


def test_canonical_doc_bytes_does_not_reorder_the_callers_document() -> None:
    doc = _ticket(INPUT_A).model_dump(mode="json")
    notes = [n["id"] for n in doc["notes"]]
    canonical_doc_bytes(doc)
    assert [n["id"] for n in doc["notes"]] == notes


def test_scope_checksum_vectors() -> None:
    a, b = _ticket(INPUT_A), _ticket(INPUT_B)
    assert scope_checksum([]) == CHECKSUM_EMPTY
    assert scope_checksum([a]) == CHECKSUM_A
    assert scope_checksum([a, b]) == scope_checksum([b, a]) == CHECKSUM_AB
    assert scope_checksum([a, a]) == CHECKSUM_AA  # a sum, not XOR: twice is not zero times
    assert ScopeChecksum.of([b"\xff" * 32, b"\x00" * 31 + b"\x01"]).hexdigest() == CHECKSUM_WRAP


def test_scope_checksum_incremental_update_matches_the_vectors() -> None:
    c = ScopeChecksum.of([bytes.fromhex(HASH_A), bytes.fromhex(HASH_B)])
    assert (c.count, c.hexdigest()) == (2, CHECKSUM_AB)
    c.remove(bytes.fromhex(HASH_B))
    assert (c.count, c.hexdigest()) == (1, CHECKSUM_A)
    assert c == ScopeChecksum.of([bytes.fromhex(HASH_A)]) and hash(c) == hash(ScopeChecksum.of([bytes.fromhex(HASH_A)]))
    assert c != ScopeChecksum.of([bytes.fromhex(HASH_B)]) and c != ScopeChecksum()
    assert c.__eq__("x") is NotImplemented
    assert hash(c) != hash(ScopeChecksum())  # not required by hashing, but a constant hash would make sets useless
    c.remove(bytes.fromhex(HASH_A))
    assert (c.count, c.hexdigest()) == (0, CHECKSUM_EMPTY) and c == ScopeChecksum()
    assert repr(c) == f"ScopeChecksum(count=0, digest={CHECKSUM_EMPTY[:16]}…)"
    with pytest.raises(ValueError, match="^cannot remove from an empty scope checksum$"):
        c.remove(bytes.fromhex(HASH_A))
    for bad in (b"", b"\x00" * 31, b"\x00" * 33):
        with pytest.raises(ValueError, match="^ticket hashes are 32-byte SHA-256 digests$"):
            c.add(bad)


# ---- mutation digest (SPEC §5, seq_reused) and the ids of notes carried by status ops ------------------------------

# As sent (keys in the device's order); the digest is over the canonical text below, prefixed by the domain.
MUTATION_1_SENT = (
    '{"seq":12,"op":"complete","ticket_id":"0d4c6a8e-1111-4222-8333-444455556666",'
    '"args":{"resolution_code":"collected","note":"Recogido — 2 colchones"},"base_version":3,'
    '"device_time":"2020-01-02T09:00:00-08:00"}'
).encode("utf-8")
MUTATION_1_CANON = (
    '{"args":{"note":"Recogido — 2 colchones","resolution_code":"collected"},"base_version":3,'
    '"device_time":"2020-01-02T09:00:00-08:00","op":"complete","seq":12,'
    '"ticket_id":"0d4c6a8e-1111-4222-8333-444455556666"}'
).encode("utf-8")
MUTATION_1_DIGEST = "3a429329207d3843a9e218427455304a357f35a965e9802174ae9cee44d11e24"
MUTATION_2_SENT = (
    '{"seq":13,"op":"attach_photo","ticket_id":"0d4c6a8e-1111-4222-8333-444455556666",'
    '"args":{"sha256":"' + B64 + '","kind":"after","taken_at":"2020-01-02T17:00:00Z","lat":34,"lon":-118.25},'
    '"base_version":null,"device_time":"2020-01-02T17:00:00Z"}'
).encode("ascii")
MUTATION_2_CANON = (
    '{"args":{"kind":"after","lat":34,"lon":-118.25,"sha256":"' + B64 + '","taken_at":"2020-01-02T17:00:00Z"},'
    '"base_version":null,"device_time":"2020-01-02T17:00:00Z","op":"attach_photo","seq":13,'
    '"ticket_id":"0d4c6a8e-1111-4222-8333-444455556666"}'
).encode("ascii")
MUTATION_2_DIGEST = "5222fe7c9e83c7cfcff46ad1472480b9c8790da45e5271a2b603dbc636950bb1"  # 34 stays an integer: as sent
OP_NOTE_ID_DEV1_SEQ7 = "77c00954-e204-5dfe-8013-10039d3689fa"


def test_mutation_digest_vectors() -> None:
    assert hashlib.sha256(b"fieldsync-mutation-v1\x00" + MUTATION_1_CANON).hexdigest() == MUTATION_1_DIGEST
    assert hashlib.sha256(b"fieldsync-mutation-v1\x00" + MUTATION_2_CANON).hexdigest() == MUTATION_2_DIGEST
    for sent, digest in ((MUTATION_1_SENT, MUTATION_1_DIGEST), (MUTATION_2_SENT, MUTATION_2_DIGEST)):
        decoded = json.loads(sent)
        assert mutation_digest(decoded).hex() == digest
        # the same mutation in a msgpack body decodes to the same object, hence the same digest
        assert mutation_digest(msgpack.unpackb(msgpack.packb(decoded), raw=False)).hex() == digest


def test_mutation_digest_refuses_nan() -> None:
    """NaN is malformed on the wire (SPEC §1), so it never has a digest."""
    with pytest.raises(ValueError):
        mutation_digest({"seq": 1, "args": {"lat": float("nan")}})


def test_op_note_id_vector() -> None:
    assert str(op_note_id("dev-1", 7)) == OP_NOTE_ID_DEV1_SEQ7
    assert op_note_id("dev-1", 8) != op_note_id("dev-1", 7) != op_note_id("dev-2", 7)


# ---- cursor (opaque to clients; pinned so a format change is deliberate) ------------------------------------------

SECRET = b"0123456789abcdef"  # exactly the 16-byte minimum
STATE = CursorState(version=1, scope="crew:7", snapshot="100:104:101,103", issued_at=1_700_000_000)
TOKEN = "mQGmY3Jldzo3rzEwMDoxMDQ6MTAxLDEwM85lU_EAwMDAwgDR8vJCLg1-ENUf9y9wpK48"


def _sign(fields: list[object], secret: bytes = SECRET) -> str:
    """The cursor format built by hand: base64url(msgpack(fields) ‖ HMAC-SHA256(domain ‖ payload)[:16]), unpadded."""
    payload = msgpack.packb(fields, use_bin_type=True)
    mac = hmac.new(secret, b"fieldsync-cursor-v1\x00" + payload, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")


def test_cursor_golden_token() -> None:
    assert _sign([1, "crew:7", "100:104:101,103", 1_700_000_000, None, None, None, False, 0]) == TOKEN
    signer = CursorSigner(SECRET)
    assert signer.encode(STATE) == TOKEN
    assert signer.decode(TOKEN, scope="crew:7") == STATE


def test_cursor_secret_limit() -> None:
    CursorSigner(SECRET)
    CursorSigner(SECRET, [b"x" * 16])
    with pytest.raises(ValueError, match="at least 16 bytes"):
        CursorSigner(SECRET[:15])
    with pytest.raises(ValueError, match="at least 16 bytes"):
        CursorSigner(SECRET, [b"x" * 15])  # an old secret too


def test_cursor_at_exactly_the_length_limit_is_accepted_one_step_over_is_refused() -> None:
    assert MAX_CURSOR_LEN == 2048
    signer = CursorSigner(SECRET)
    at_limit = signer.encode(CursorState(version=1, scope="crew:7", snapshot="9" * 1498, issued_at=1_700_000_000))
    assert len(at_limit) == 2048  # 1520-byte payload + 16-byte MAC = 1536 bytes = 2048 base64 characters
    assert signer.decode(at_limit, scope="crew:7").snapshot == "9" * 1498
    over = signer.encode(CursorState(version=1, scope="crew:7", snapshot="9" * 1499, issued_at=1_700_000_000))
    assert len(over) == 2050  # the next length base64 can spell
    with pytest.raises(p.ProtocolError) as info:
        signer.decode(over, scope="crew:7")
    assert info.value.code is p.ErrorCode.CURSOR_INVALID


@pytest.mark.parametrize("fields", [
    [1, "crew:7", "s", 1, None, None, None, False],                 # 8 fields
    [1, "crew:7", "s", 1, None, None, None, False, 0, 0],           # 10 fields
    [True, "crew:7", "s", 1, None, None, None, False, 0],           # bool is not a version
    [1, "crew:7", "s", True, None, None, None, False, 0],           # bool is not a time
    [1, "crew:7", "s", 1, None, None, None, False, True],           # bool is not a count
    [1, "crew:7", "s", 1, None, None, None, False, -1],             # negative count
    [1, "crew:7", "s", 1, None, None, None, 0, 0],                  # int is not a flag
    [1, "crew:7", 5, 1, None, None, None, False, 0],
    [1, 7, "s", 1, None, None, None, False, 0],
    [1, "crew:7", "s", 1, 1, None, None, False, 0],
    [1, "crew:7", "s", 1, None, 1, None, False, 0],
    [1, "crew:7", "s", 1, None, None, 1, False, 0],
    [0, "crew:7", "s", 1, None, None, None, False, 0],              # below the oldest supported version
    [2, "crew:7", "s", 1, None, None, None, False, 0],              # newer than this server
    {"v": 1},
])
def test_cursor_signed_but_malformed_is_refused(fields: object) -> None:
    with pytest.raises(p.ProtocolError) as info:
        CursorSigner(SECRET).decode(_sign(fields), scope="crew:7")  # type: ignore[arg-type]
    assert info.value.code is p.ErrorCode.CURSOR_INVALID


def test_cursor_signed_with_every_optional_field_set_decodes() -> None:
    token = _sign([1, "crew:7", "s", 1, "h", "a", "c", True, 5])
    assert CursorSigner(SECRET).decode(token, scope="crew:7") == CursorState(1, "crew:7", "s", 1, "h", "a", "c", True, 5)


def test_cursor_old_secret_verifies_new_secret_signs() -> None:
    old = CursorSigner(b"o" * 16)
    rotated = CursorSigner(SECRET, [b"o" * 16])
    assert rotated.decode(old.encode(STATE), scope="crew:7") == STATE
    assert rotated.encode(STATE) == TOKEN
    assert rotated.decode(TOKEN, scope="crew:7") == STATE  # the current secret still verifies after the old ones
    with pytest.raises(p.ProtocolError):
        CursorSigner(b"n" * 16, [b"m" * 16]).decode(TOKEN, scope="crew:7")  # neither secret signed it


def test_spec_shows_the_same_vectors() -> None:
    """SPEC.md §9 is what client authors copy: it must carry exactly these bytes and hashes."""
    spec = (Path(p.__file__).with_name("SPEC.md")).read_text("utf-8")
    section = spec[spec.index("## 9. Golden vectors"):]
    for text in (INPUT_A.decode(), CANON_A.decode(), INPUT_B.decode(), CANON_B.decode(), HASH_A, HASH_B,
                 CHECKSUM_EMPTY, CHECKSUM_A, CHECKSUM_AB, CHECKSUM_AA, CHECKSUM_WRAP, MUTATION_1_SENT.decode(),
                 MUTATION_1_CANON.decode(), MUTATION_1_DIGEST, MUTATION_2_SENT.decode(), MUTATION_2_CANON.decode(),
                 MUTATION_2_DIGEST, OP_NOTE_ID_DEV1_SEQ7):
        assert f"\n{text}\n" in section or f"`{text}`" in section
