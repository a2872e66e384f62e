"""How the shipped demo slice was cut from the full MyLA311 sample, so it can be rebuilt (public open data, 1–2 Jan 2020)."""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import sys
from pathlib import Path


def make_slice(src: Path, dest: Path, rows: int, seed: int = 311) -> int:
    """Keep every row of rare request types and a seeded random sample of the common ones, in file order."""
    with open(src, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        data = list(reader)
    type_col = [h.lower() for h in header].index("requesttype")
    counts: dict[str, int] = {}
    for r in data:
        counts[r[type_col]] = counts.get(r[type_col], 0) + 1
    rare = {t for t, n in counts.items() if n < 200}
    keep_rare = [i for i, r in enumerate(data) if r[type_col] in rare]
    common = [i for i, r in enumerate(data) if r[type_col] not in rare]
    rng = random.Random(seed)
    chosen = sorted(keep_rare + rng.sample(common, max(0, min(len(common), rows - len(keep_rare)))))
    opener = gzip.open if dest.suffix == ".gz" else open
    with opener(dest, "wt", newline="", encoding="utf-8") as out:  # type: ignore[operator]
        w = csv.writer(out)
        w.writerow(header)
        w.writerows(data[i] for i in chosen)
    return len(chosen)


def main() -> None:
    """python -m sync_server.demo.slice SRC DEST --rows N"""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--rows", type=int, default=3000)
    args = ap.parse_args()
    sys.stdout.write(f"{make_slice(args.src, args.dest, args.rows)}\n")


if __name__ == "__main__":
    main()
