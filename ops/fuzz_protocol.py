"""Long-running codec fuzzer: any bytes must decode or raise ProtocolError, never anything else.

The CI tests run a few thousand cases; run this for millions before a release or after
touching protocol/codec.py:

    python ops/fuzz_protocol.py --count 200000 --seed 7

Exits 1 and prints a reproducer (seed, case index, hex body) on the first violation.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import protocol as p  # noqa: E402
from bench_protocol import make_pull_page, make_push, make_ticket  # noqa: E402

TARGETS: list[Any] = [p.PushRequest, p.PullRequest, p.PullResponse, p.PushResponse, p.Ticket,
                      p.ErrorEnvelope, None]
MEDIA = [p.JSON, p.MSGPACK]
INTERESTING = [0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC4, 0xC7, 0xD4, 0xD9, 0xDC, 0xDD, 0xDE, 0xDF,
               0xFF, ord('"'), ord("["), ord("{"), ord("\\"), ord(","), ord(":")]
TOKENS = [b"NaN", b"1e999", b"-0", b"\\ud800", b"\\u0000", b'"a":1,"a":2', b"[[[[[[[[",
          b"\xdd\xff\xff\xff\xff", b"\xc7\x00\x05", b"\xd4\x01\x00", b"\xc4\x03abc"]


def corpus(rnd: random.Random) -> list[bytes]:
    """Valid encodings of every message family, in both encodings, as mutation seeds."""
    models: list[Any] = [
        make_pull_page(rnd, 3), make_push(rnd, 8), make_ticket(rnd), p.PullRequest(cursor="abc", limit=5),
        p.PushResponse(results=[], server_version=3, last_seq=2),
        p.ProtocolError(p.ErrorCode.SEQ_GAP, details={"expected_seq": 3}).to_envelope(),
        p.LivePoke(type="poke", watermark=9),
    ]
    return [p.encode(m, media) for m in models for media in MEDIA]


def mutate(rnd: random.Random, data: bytes) -> bytes:
    """Apply 1-6 byte-level edits biased towards structural bytes."""
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        i = rnd.randrange(len(buf) + 1)
        op = rnd.randrange(7)
        if op == 0 and buf:
            buf[min(i, len(buf) - 1)] ^= 1 << rnd.randrange(8)
        elif op == 1 and buf:
            buf[min(i, len(buf) - 1)] = rnd.choice(INTERESTING)
        elif op == 2:
            buf[i:i] = rnd.randbytes(rnd.randint(1, 8))
        elif op == 3:
            del buf[i : i + rnd.randint(1, 16)]
        elif op == 4:
            del buf[i:]
        elif op == 5:
            j = rnd.randrange(i, len(buf) + 1)
            buf[j:j] = buf[i:j][:256]
        else:
            buf[i:i] = rnd.choice(TOKENS)
    return bytes(buf)


def one(body: bytes, media: str, model: Any) -> None:
    """The property under test."""
    try:
        if model is None:
            p.decode_live(body, media)
        else:
            p.decode(body, media, model)
    except p.ProtocolError as exc:
        p.encode_error(exc, media)


def main() -> int:
    """Run the fuzzer; exit status says whether the property held."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    seeds = corpus(rnd)
    started = time.monotonic()
    for index in range(args.count):
        if rnd.random() < 0.1:
            body = rnd.randbytes(rnd.randint(0, 512))
        else:
            body = mutate(rnd, rnd.choice(seeds))
        media, model = rnd.choice(MEDIA), rnd.choice(TARGETS)
        try:
            one(body, media, model)
        except Exception:  # outermost loop of a harness: report any escape, that is the bug
            print(f"VIOLATION seed={args.seed} case={index} media={media} model={model}")
            print(f"body={body.hex()}")
            traceback.print_exc()
            return 1
        if index and index % 50_000 == 0:
            print(f"{index:,} cases, {index / (time.monotonic() - started):,.0f}/s", flush=True)
    elapsed = time.monotonic() - started
    print(f"ok: {args.count:,} cases in {elapsed:.1f}s ({args.count / max(elapsed, 1e-9):,.0f}/s), seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
