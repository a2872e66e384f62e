"""Benchmark the wire codec: is msgpack worth it over JSON for pull pages and push batches?

Usage: python ops/bench/bench_protocol.py [--repeat 7] [--tickets 500] [--mutations 500]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import timeit
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import protocol as p  # noqa: E402

BASE = datetime(2020, 1, 1, 8, tzinfo=timezone.utc)
SERVICE_TYPES = ["Bulky Items", "Graffiti Removal", "Illegal Dumping Pickup", "Electronic Waste",
                 "Metal/Household Appliances", "Dead Animal Removal"]
ITEMS = ["Mattress", "Sofa", "Chair", "TV", "Refrigerator", "Tires", "Boxes"]


def make_ticket(rnd: random.Random) -> p.Ticket:
    """A realistic ticket: ~3 notes, 2 photos, 2 item lines."""
    t0 = BASE + timedelta(minutes=rnd.randrange(0, 60 * 24 * 30))
    return p.Ticket(
        id=uuid.UUID(int=rnd.getrandbits(128)),
        sr_number=f"1-{rnd.randrange(10**9, 10**10)}",
        service_type=rnd.choice(SERVICE_TYPES),
        department="Sanitation",
        status=rnd.choice(list(p.TicketStatus)),
        priority=rnd.choice(list(p.Priority)),
        address=f"{rnd.randrange(100, 20000)} W {rnd.choice(['7th', 'Sunset', 'Pico', 'Olympic'])} Blvd, Los Angeles",
        zip=f"900{rnd.randrange(10, 99)}",
        lat=34.0 + rnd.random() * 0.3,
        lon=-118.5 + rnd.random() * 0.3,
        council_district=rnd.randrange(1, 16),
        description="Items left on the curb next to the driveway, caller requests pickup.",
        source=rnd.choice(["Mobile App", "Call", "Self Service"]),
        requested_at=t0,
        service_date=(t0 + timedelta(days=1)).date(),
        due_at=t0 + timedelta(days=3),
        crew="SAN-East-3",
        notes=[
            p.Note(id=uuid.UUID(int=rnd.getrandbits(128)), text="Crew on site; two items loaded, one more pending.",
                   author="dev-7", device_time=t0 + timedelta(hours=i), created_at=t0 + timedelta(hours=i, seconds=5))
            for i in range(3)
        ],
        photos=[
            p.PhotoRef(sha256=rnd.getrandbits(256).to_bytes(32, "big").hex(), kind=kind,
                       taken_at=t0 + timedelta(hours=2), state=p.PhotoState.AVAILABLE,
                       lat=34.05, lon=-118.25)
            for kind in (p.PhotoKind.BEFORE, p.PhotoKind.AFTER)
        ],
        items=[p.ItemLine(item_type=name, count=rnd.randrange(1, 5)) for name in rnd.sample(ITEMS, 2)],
        resolution_code="collected",
        reason_code=None,
        created_by_device=None,
        updated_at=t0 + timedelta(hours=3),
        version=rnd.randrange(1, 50),
    )


def make_pull_page(rnd: random.Random, n: int) -> p.PullResponse:
    """One full pull page of n upserts."""
    return p.PullResponse(
        changes=[p.TicketUpsert(kind="upsert", ticket=make_ticket(rnd)) for _ in range(n)],
        cursor="x" * 120, has_more=True, reset=False, scope_checksum="ab" * 32,
        watermark=123456, server_time=BASE,
    )


def make_push(rnd: random.Random, n: int) -> p.PushRequest:
    """A push batch mixing the common ops (notes, transitions, photos, items)."""
    muts: list[Any] = []
    for i in range(n):
        common: dict[str, Any] = dict(
            seq=1000 + i, ticket_id=uuid.UUID(int=rnd.getrandbits(128)), base_version=3,
            device_time=BASE + timedelta(seconds=i), gps=p.GeoPoint(lat=34.05, lon=-118.25, accuracy_m=6.0),
        )
        kind = i % 4
        if kind == 0:
            muts.append(p.AddNoteMutation(op="add_note", args=p.AddNoteArgs(
                note_id=uuid.UUID(int=rnd.getrandbits(128)), text="Loaded two items, gate was locked."), **common))
        elif kind == 1:
            muts.append(p.StartMutation(op="start", args=p.StartArgs(), **common))
        elif kind == 2:
            muts.append(p.AttachPhotoMutation(op="attach_photo", args=p.AttachPhotoArgs(
                sha256=rnd.getrandbits(256).to_bytes(32, "big").hex(), kind=p.PhotoKind.AFTER,
                taken_at=BASE, lat=34.05, lon=-118.25), **common))
        else:
            muts.append(p.SetItemsMutation(op="set_items", args=p.SetItemsArgs(items=[
                p.ItemLine(item_type="Mattress", count=1), p.ItemLine(item_type="Sofa", count=2)]), **common))
    return p.PushRequest(mutations=muts)


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median of `repeat` timings of one call each (after autorange picks no loop: pages are big)."""
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeat))


def bench_model(label: str, model: Any, repeat: int) -> dict[str, dict[str, float]]:
    """Encode/decode medians and sizes for both encodings."""
    out: dict[str, dict[str, float]] = {}
    limits = p.Limits(max_body_bytes=64 << 20)
    for media in (p.JSON, p.MSGPACK):
        body = p.encode(model, media)
        enc = median_seconds(lambda: p.encode(model, media), repeat)
        dec = median_seconds(lambda: p.decode(body, media, type(model), limits), repeat)
        out[media] = {"bytes": len(body), "encode_ms": enc * 1e3, "decode_ms": dec * 1e3}
        print(f"{label:<28} {media:<20} {len(body):>10,} B  encode {enc * 1e3:8.1f} ms"
              f"  decode {dec * 1e3:8.1f} ms  total {(enc + dec) * 1e3:8.1f} ms")
    j, m = out[p.JSON], out[p.MSGPACK]
    print(f"{label:<28} msgpack/json: bytes {m['bytes'] / j['bytes']:.2f}  "
          f"encode {m['encode_ms'] / j['encode_ms']:.2f}  decode {m['decode_ms'] / j['decode_ms']:.2f}  "
          f"total {(m['encode_ms'] + m['decode_ms']) / (j['encode_ms'] + j['decode_ms']):.2f}")
    return out


def main() -> None:
    """Print medians and ratios; figures go in the issue's closing note."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--tickets", type=int, default=500)
    parser.add_argument("--mutations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    print(f"python {sys.version.split()[0]}, median of {args.repeat} runs")
    bench_model(f"pull page ({args.tickets} tickets)", make_pull_page(rnd, args.tickets), args.repeat)
    push = make_push(rnd, args.mutations)
    results = bench_model(f"push batch ({args.mutations} muts)", push, args.repeat)
    for media, r in results.items():
        rate = args.mutations / (r["decode_ms"] / 1e3)
        print(f"push decode throughput {media:<20} {rate:>10,.0f} mutations/s "
              f"({1e3 / r['decode_ms']:.0f} batches/s)")
    ticket = make_ticket(rnd)
    canon = median_seconds(lambda: p.canonical_bytes(ticket), max(args.repeat, 50))
    print(f"canonical_bytes per ticket: {canon * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
