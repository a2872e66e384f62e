"""Hypothesis strategies for every wire model, shared by the protocol test modules."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

import protocol as p
from protocol import push

TEXT_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def text(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Any storable text: no NUL, no lone surrogates (the codec refuses those)."""
    return st.text(TEXT_CHARS, min_size=min_size, max_size=max_size)


uuids = st.uuids()
offsets = st.sampled_from([timezone.utc, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30))])
aware = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 30), timezones=offsets  # wire range ends 2100-01-01Z
)
dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
lat = st.floats(-90, 90, allow_nan=False) | st.integers(-90, 90).map(float)
lon = st.floats(-180, 180, allow_nan=False)
sha = st.binary(min_size=32, max_size=32).map(bytes.hex)
code64 = text(1, 64)
opt = st.none


def optional(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """None or a value."""
    return st.none() | s


geo = st.builds(
    p.GeoPoint, lat=lat, lon=lon, accuracy_m=optional(st.floats(0, 1e4, allow_nan=False))
)
notes = st.builds(
    p.Note, id=uuids, text=text(1, 60), author=text(1, 20), device_time=optional(aware),
    created_at=aware,
)
photos = st.builds(
    p.PhotoRef, sha256=sha, kind=st.sampled_from(p.PhotoKind), taken_at=aware,
    state=st.sampled_from(p.PhotoState), lat=optional(lat), lon=optional(lon),
)
item_lines = st.builds(p.ItemLine, item_type=text(1, 12), count=st.integers(0, 999))
items_list = st.lists(item_lines, max_size=10, unique_by=lambda i: i.item_type)

tickets = st.builds(
    p.Ticket,
    id=uuids,
    sr_number=optional(text(1, 14)),
    service_type=text(0, 30),
    department=text(0, 30),
    status=st.sampled_from(p.TicketStatus),
    priority=st.sampled_from(p.Priority),
    address=text(0, 60),
    zip=optional(text(0, 10)),
    lat=optional(lat),
    lon=optional(lon),
    council_district=optional(st.integers(0, 20)),
    description=text(0, 80),
    source=optional(text(0, 20)),
    requested_at=aware,
    service_date=optional(dates),
    due_at=optional(aware),
    crew=optional(text(1, 20)),
    notes=st.lists(notes, max_size=3, unique_by=lambda n: n.id),
    photos=st.lists(photos, max_size=2, unique_by=lambda ph: (ph.sha256, ph.kind)),
    items=items_list,
    resolution_code=optional(code64),
    reason_code=optional(code64),
    created_by_device=optional(text(1, 20)),
    updated_at=aware,
    version=st.integers(1, 2**63 - 1),
)

changes: st.SearchStrategy[Any] = st.builds(p.TicketUpsert, kind=st.just("upsert"), ticket=tickets) | st.builds(
    p.TicketRemoval, kind=st.just("remove"), ticket_id=uuids, reason=st.sampled_from(p.RemovalReason)
)
pull_requests = st.builds(
    p.PullRequest, cursor=optional(st.text("abcXYZ019-_", min_size=1, max_size=80)),
    limit=st.integers(1, 1000),
)
pull_responses = st.builds(
    p.PullResponse,
    changes=st.lists(changes, max_size=3),
    cursor=st.text("abcXYZ019-_", min_size=1, max_size=80),
    has_more=st.booleans(),
    reset=st.booleans(),
    scope_checksum=sha,
    watermark=st.integers(0, 2**63 - 1),
    server_time=aware,
)

ARGS: dict[str, st.SearchStrategy[Any]] = {
    "acknowledge": st.just(p.AcknowledgeArgs()),
    "start": st.just(p.StartArgs()),
    "pause": st.builds(p.PauseArgs, reason=optional(text(0, 30))),
    "resume": st.just(p.ResumeArgs()),
    "add_note": st.builds(p.AddNoteArgs, note_id=uuids, text=text(1, 60)),
    "set_items": st.builds(
        p.SetItemsArgs,
        items=st.lists(item_lines, min_size=1, max_size=10, unique_by=lambda i: i.item_type),
    ),
    "set_resolution": st.builds(p.SetResolutionArgs, resolution_code=code64),
    "attach_photo": st.builds(
        p.AttachPhotoArgs, sha256=sha, kind=st.sampled_from(p.PhotoKind), taken_at=aware,
        lat=optional(lat), lon=optional(lon),
    ),
    "complete": st.builds(p.CompleteArgs, resolution_code=code64, note=optional(text(1, 30))),
    "unable_to_complete": st.builds(
        p.UnableToCompleteArgs, reason_code=code64, note=optional(text(1, 30))
    ),
    "decline": st.builds(p.DeclineArgs, reason_code=code64, note=optional(text(1, 30))),
    "self_report": st.builds(
        p.SelfReportArgs, service_type=text(1, 30), address=text(1, 40), lat=lat, lon=lon,
        zip=optional(text(0, 10)), description=text(0, 40), resolution_code=code64,
        items=items_list, note=optional(text(1, 30)),
    ),
}
MUTATION_CLASSES: dict[str, type[Any]] = {
    cls.model_fields["op"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in push.Mutation.__origin__.__args__  # type: ignore[attr-defined]
}


@st.composite
def mutations(draw: st.DrawFn, seq: int | None = None) -> Any:
    """One mutation of any op with matching args."""
    op = draw(st.sampled_from(sorted(ARGS)))
    return MUTATION_CLASSES[op](
        seq=seq if seq is not None else draw(st.integers(1, 2**63 - 1)),
        op=op,
        ticket_id=draw(uuids),
        args=draw(ARGS[op]),
        base_version=draw(optional(st.integers(0, 2**40))),
        device_time=draw(aware),
        gps=draw(optional(geo)),
    )


@st.composite
def push_requests(draw: st.DrawFn) -> p.PushRequest:
    """A consecutive run of seqs, as a real outbox sends."""
    first = draw(st.integers(1, 10**9))
    n = draw(st.integers(1, 5))
    return p.PushRequest(mutations=[draw(mutations(seq=first + i)) for i in range(n)])


conflicts = st.builds(
    p.ConflictInfo, kind=text(1, 20), field=optional(text(0, 20)),
    kept=st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | text(0, 20),
    discarded=st.none() | st.integers(0, 999) | text(0, 20),
    detail=optional(text(0, 40)),
)


@st.composite
def mutation_results(draw: st.DrawFn) -> p.MutationResult:
    """Rejections always carry a reason, as the model demands."""
    status = draw(st.sampled_from(p.MutationStatus))
    reason = draw(st.sampled_from(p.ReasonCode)) if status == "rejected" else draw(
        optional(st.sampled_from(p.ReasonCode))
    )
    return p.MutationResult(
        seq=draw(st.integers(1, 2**63 - 1)), status=status, reason=reason,
        message=draw(optional(text(0, 40))), ticket=draw(optional(tickets)),
        removed=draw(optional(st.sampled_from(p.RemovalReason))),
        conflicts=draw(st.lists(conflicts, max_size=2)),
        server_version=draw(st.integers(0, 2**63 - 1)), replayed=draw(st.booleans()),
    )


push_responses = st.builds(
    p.PushResponse, results=st.lists(mutation_results(), max_size=3),
    server_version=st.integers(0, 2**63 - 1), last_seq=st.integers(0, 2**63 - 1),
)
live_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | text(0, 20)
live_messages: st.SearchStrategy[Any] = (
    st.builds(p.LiveHello, type=st.just("hello"), token=text(1, 40),
              encoding=st.sampled_from(["json", "msgpack"]), after=optional(st.integers(0, 2**40)))
    | st.builds(p.LivePoke, type=st.just("poke"), watermark=st.integers(0, 2**63 - 1))
    | st.builds(
        p.LiveEvent, type=st.just("event"), position=st.integers(0, 2**63 - 1),
        event=st.sampled_from(["ticket_changed", "conflict", "late_report"]),
        ticket_id=optional(uuids), ticket=optional(tickets),
        changed=st.lists(text(1, 10), max_size=3),
        detail=st.dictionaries(text(1, 10), live_scalars, max_size=3),
    )
    | st.builds(p.LiveRefetch, type=st.just("refetch"))
)
upload_metadata = st.builds(
    p.UploadMetadata, sha256=sha, ticket_id=uuids, kind=st.sampled_from(p.PhotoKind),
    taken_at=aware, lat=optional(lat), lon=optional(lon), filename=optional(text(1, 30)),
)
error_envelopes = st.builds(
    lambda code, msg, details: p.ProtocolError(code, msg, details).to_envelope(),
    st.sampled_from(p.ErrorCode), text(0, 40),
    st.dictionaries(text(1, 10), live_scalars, max_size=3),
)

ALL_MODELS: dict[str, st.SearchStrategy[Any]] = {
    "geo": geo,
    "note": notes,
    "photo": photos,
    "item": item_lines,
    "ticket": tickets,
    "pull_request": pull_requests,
    "pull_response": pull_responses,
    "push_request": push_requests(),
    "push_response": push_responses,
    "mutation_result": mutation_results(),
    "conflict": conflicts,
    "live": live_messages,
    "upload": upload_metadata,
    "error": error_envelopes,
    **{f"args_{op}": s for op, s in ARGS.items()},
}
