"""Streaming a MyLA311 export into the database in bounded batches, so memory stays flat however big the city's file is."""

from __future__ import annotations

import csv
import gzip
import io
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, BinaryIO

import asyncpg
import structlog

from sync_server.engine.tx import run_in_tx
from sync_server.ingest.parse import HeaderError, ParsedRow, Rejected, normalise_header, parse_row
from sync_server.ingest.upsert import crew_ids, ensure_catalog, upsert_batch

log = structlog.get_logger(__name__)

BATCH_ROWS = 500  # one transaction each: big enough for set-based SQL, small enough to keep locks short

csv.field_size_limit(1 << 20)  # free-text columns can be long; the default 128 KiB would reject them


@dataclass
class ImportSummary:
    """The five numbers an operator checks after an import; `--json` prints exactly these keys."""

    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain dict for JSON output."""
        return asdict(self)


class Progress:
    """A one-line progress bar on stderr, drawn only for a person at a terminal (never into logs or pipes)."""

    def __init__(self, total_bytes: int, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = max(total_bytes, 1)
        self.enabled = self.stream.isatty()
        self._last = 0.0

    def update(self, done_bytes: int, rows: int, final: bool = False) -> None:
        """Redraw at most ten times a second."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last < 0.1:
            return
        self._last = now
        frac = min(done_bytes / self.total, 1.0)
        bar = "#" * int(frac * 30)
        self.stream.write(f"\rimport [{bar:<30}] {frac:4.0%} {rows:,} rows")
        if final:
            self.stream.write("\n")
        self.stream.flush()


def _open(path: Path) -> tuple[BinaryIO, IO[str]]:
    """The raw file (whose position drives progress) and a text stream over it; .gz exports are read as they are."""
    raw = open(path, "rb")
    binary: IO[bytes] = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
    return raw, io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")


def check_header(path: Path) -> None:
    """Refuse what is not a MyLA311 export (directory, empty file, a .gz that is not gzip, wrong columns) in one
    line, before the caller starts a database for it."""
    if path.is_dir():
        raise HeaderError(f"{path} is a directory, not a MyLA311 CSV export")
    if not path.is_file():
        raise HeaderError(f"no such file: {path}")
    try:
        raw, text = _open(path)
        with raw, text:
            header = next(csv.reader(text), None)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise HeaderError(f"{path.name}: cannot read it as {'gzip' if path.suffix == '.gz' else 'CSV'} ({exc})") from None
    if not header or not any(h.strip() for h in header):
        raise HeaderError(f"{path.name} is empty: expected a MyLA311 CSV export with a header line")
    normalise_header(header)


def read_rows(text: IO[str]) -> Iterator[ParsedRow | Rejected]:
    """Parse rows one by one, numbering them by the physical line each starts on (what an editor shows)."""
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    keys = normalise_header(header)
    start = reader.line_num + 1
    for values in reader:
        line, start = start, reader.line_num + 1
        if not any(v.strip() for v in values):
            continue  # blank lines are not rows
        if len(values) != len(keys):
            yield Rejected(line, f"expected {len(keys)} fields, found {len(values)}")
            continue
        yield parse_row(dict(zip(keys, values)), line)


async def import_csv(
    pool: asyncpg.Pool,
    path: Path,
    *,
    on_reject: Callable[[Rejected], None] | None = None,
    progress: Progress | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ImportSummary:
    """Import one file: good rows are upserted batch by batch, bad rows reported and skipped, never aborting the rest."""
    path = Path(path)
    actor = f"import-311:{path.name}"[:255]
    async with pool.acquire() as conn:
        await ensure_catalog(conn)
        crews = await crew_ids(conn)
    summary = ImportSummary()
    raw, text = _open(path)
    batch: list[ParsedRow] = []
    in_batch: set[str] = set()

    async def flush() -> None:
        rows = list(batch)
        result = await run_in_tx(pool, lambda conn: upsert_batch(conn, rows, crews, actor))
        summary.inserted += result.inserted
        summary.updated += result.updated
        summary.unchanged += result.unchanged
        batch.clear()
        in_batch.clear()

    # Reading is blocking file I/O on the loop; acceptable here because the CLI's loop serves nothing else.
    with raw, text:
        for item in read_rows(text):
            summary.read += 1
            if isinstance(item, Rejected):
                summary.rejected += 1
                if on_reject is not None:
                    on_reject(item)
            else:
                if item.sr_number in in_batch:
                    await flush()  # a repeated SR is applied after the first, as a normal update
                batch.append(item)
                in_batch.add(item.sr_number)
                if len(batch) >= batch_rows:
                    await flush()
            if progress is not None:
                progress.update(raw.tell(), summary.read)
        if batch:
            await flush()
        if progress is not None:
            progress.update(raw.tell(), summary.read, final=True)
    log.info("import.done", file=str(path), **summary.as_dict())
    return summary
