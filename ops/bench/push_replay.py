"""A push's own storage limit: capture the SQL one real push sends (1 and 25 mutations), replay it with pgbench at 8 and
32 clients, and print its tps beside pgbench's one-row UPDATE. The capture reruns against whatever the server does
today (statement logging around two real pushes), so it never goes stale when the push SQL changes.

Replay: each statement the push executed with parameters becomes PREPARE (its exact text, types inferred as the
server's unnamed-type Parse does) + EXECUTE with the logged values, on sessions with the server's startup settings.
Each pgbench client plays its own device with its own 25 tickets of one crew, and fresh seqs every transaction, so
clients contend like 32 phones of different crews do, not on one row. What it leaves out: HTTP, JSON/msgpack, the
Python fold and the asyncpg round-trip overhead -- that gap is the server's share.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import msgpack

from sync_server.app import session_settings
from sync_server.auth import enroll_device
from sync_server.embedded_pg import EmbeddedPostgres
from sync_server.engine.intake import NewTicket, insert_tickets
from sync_server.settings import Settings

from pg_limits import Counters, delta

BASE = 900_000_000  # the capture device's seqs: distinctive numbers, so every logged occurrence is found and templated
PER_PUSH = 25
MAX_CLIENTS = 32
LABEL = "pgbench-replay"
_ENTRY = re.compile(r"^(\d+\.\d+) \[(\d+)\] ([A-Z]+):  (.*)$")
_PARAM = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')", re.S)
_SEQ = re.compile(rf"(?<!\d)({BASE // 1000}\d{{3}})(?!\d)")


@dataclass
class Stmt:
    """One statement as a backend logged it: its text, and for the extended protocol its parameter literals."""

    ts: float
    pid: int
    sql: str
    params: list[str] | None  # None: simple protocol (sent as is); else SQL literals ('...' or NULL) by position


def parse_log(text: str) -> list[Stmt]:
    """Statements of a PostgreSQL log written with log_line_prefix '%n [%p] ' and log_statement = all."""
    entries: list[list[Any]] = []
    for line in text.splitlines():
        m = _ENTRY.match(line)
        if m:
            entries.append([float(m.group(1)), int(m.group(2)), m.group(3), m.group(4)])
        elif line.startswith("\t") and entries:
            entries[-1][3] += "\n" + line[1:]
    out: list[Stmt] = []
    for ts, pid, level, msg in entries:
        if level == "LOG" and msg.startswith("statement: "):
            out.append(Stmt(ts, pid, msg[len("statement: "):], None))
        elif level == "LOG" and msg.startswith("execute "):
            out.append(Stmt(ts, pid, msg.split(": ", 1)[1], []))
        elif level == "DETAIL" and msg.startswith("parameters: ") and out and out[-1].pid == pid and out[-1].params == []:
            found = {int(n): v for n, v in _PARAM.findall(msg)}
            out[-1].params = [found[i] for i in range(1, len(found) + 1)]
    return out


def push_statements(stmts: list[Stmt], t0: float, t1: float) -> list[Stmt]:
    """The statements of the one backend that ran a transaction between t0 and t1 (a push holds one connection from
    BEGIN to its after-commit NOTIFY; background loops on other connections are left out)."""
    # %n stamps are milliseconds, cut down: a statement of the push is stamped no later than t1 and at most 1 ms before t0
    window = [s for s in stmts if t0 - 0.002 <= s.ts <= t1]
    pids = {s.pid for s in window if s.params is None and s.sql.lstrip().upper().startswith("BEGIN")}
    if len(pids) != 1:
        raise RuntimeError(f"expected one push transaction in the capture window, found {len(pids)}")
    return [s for s in window if s.pid in pids]


def script(stmts: list[Stmt], device_id: str, tickets: list[str], first_seq: int, crew_id: int) -> str:
    """A pgbench script replaying `stmts` with this client's device, tickets and fresh seqs."""
    def template(literal: str) -> str:
        literal = literal.replace(device_id, ":dev")
        for i, t in enumerate(tickets):
            literal = literal.replace(t, f":t{i + 1}")
        # after a JSON colon ("seq":900000002) a space keeps pgbench from reading "::" as a cast
        return _SEQ.sub(lambda m: (" " if m.start() and m.string[m.start() - 1] == ":" else "")
                        + f":s{int(m.group(1)) - first_seq + 1}", literal)

    slots = ", ".join(f"a[:client_id * {PER_PUSH} + {PER_PUSH + i + 1}] AS t{i + 1}" for i in range(PER_PUSH))
    lines = ["\\set n :n + 1", f"\\set base :run * 100000000 + :n * {PER_PUSH + 2}"]
    lines += [f"\\set s{k} :base + {k}" for k in range(0, PER_PUSH + 2)]
    lines += ["\\if :n = 1",
              f"SELECT id AS dev FROM devices WHERE label = '{LABEL}' ORDER BY id OFFSET :client_id LIMIT 1 \\gset",
              f"SELECT {slots} FROM (SELECT array_agg(id ORDER BY id) AS a FROM tickets WHERE crew_id = {crew_id}) s \\gset"]
    body = []
    for i, s in enumerate(stmts):
        if s.params is None:
            body.append(_one_line(s.sql))
            continue
        lines.append(f"PREPARE r{i} AS {_one_line(s.sql)}")
        args = "(" + ", ".join(template(p) for p in s.params) + ")" if s.params else ""
        body.append(f"EXECUTE r{i}{args};")
    lines.append("\\endif")
    return "\n".join(lines + body) + "\n"


def _one_line(sql: str) -> str:
    """pgbench reads one SQL command per line (a trailing semicolon ends it)."""
    sql = " ".join(sql.split())
    return sql if sql.endswith(";") else sql + ";"


async def setup_crew(conn: asyncpg.Connection, department_id: int) -> dict[str, Any]:
    """A crew of its own: a capture device and MAX_CLIENTS replay devices, 25 tickets each, none of the benchmark's."""
    rnd = random.Random(3)
    async with conn.transaction():
        crew = await conn.fetchval("INSERT INTO crews (name, department_id) VALUES ('replay', $1) RETURNING id", department_id)
        dev, token = await enroll_device(conn, crew, "capture", "bench")
        for _ in range(MAX_CLIENTS):
            await enroll_device(conn, crew, LABEL, "bench")
        await insert_tickets(conn, [NewTicket(
            service_type="Bulky Items", address=f"{rnd.randint(100, 20000)} W VANOWEN ST, 91406", zip="91406",
            lat=34.19 + rnd.random() / 10, lon=-118.49 + rnd.random() / 10, crew_id=crew,
            description="Mattress, sofa and two chairs on the parkway") for _ in range(PER_PUSH * (MAX_CLIENTS + 1))],
            actor_kind="system", actor="bench")
        tickets = await conn.fetch("SELECT id::text FROM tickets WHERE crew_id = $1 ORDER BY id LIMIT $2", crew, PER_PUSH)
        await conn.execute("UPDATE devices SET last_seq = $2 WHERE id = $1", dev, BASE - 1)
    return {"crew": crew, "device": dev, "token": token, "tickets": [r[0] for r in tickets]}


def _mutations(first: int, tickets: list[str], variant: int) -> list[dict[str, Any]]:
    """Quantities and resolution codes (no notes: a replayed note id would hit ON CONFLICT DO NOTHING, not a write).
    Each `variant` sets other values than the one before, so no captured mutation is a no-op on its ticket."""
    now = datetime.now(timezone.utc).isoformat()
    out = []
    for k, t in enumerate(tickets):
        op, args = (("set_items", {"items": [{"item_type": "mattress", "count": 1 + (k + variant) % 9}]}) if k % 4
                    else ("set_resolution", {"resolution_code": ("collected", "partial", "not_found")[variant % 3]}))
        out.append({"seq": first + k, "op": op, "ticket_id": t, "args": args, "base_version": None, "device_time": now})
    return out


async def capture(url: str, headers: dict[str, str], admin: asyncpg.Connection, log_path: Path,
                  tickets: list[str]) -> dict[int, list[Stmt]]:
    """Log every statement around a 1-mutation and a 25-mutation push of the capture device (after one unlogged
    warm-up push, so its connection, codecs and auth cache are warm as in steady state)."""
    async with aiohttp.ClientSession() as http:
        async def push(first: int, n: int, variant: int) -> tuple[float, float]:
            t0 = time.time()
            body = msgpack.packb({"mutations": _mutations(first, tickets[:n], variant)})
            async with http.post(url + "/v1/sync/push", data=body,
                                 headers=headers) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(body[:300])
            return t0, time.time()

        await push(BASE, 1, 0)
        offset = log_path.stat().st_size
        await admin.execute("ALTER SYSTEM SET log_statement = 'all'")
        await admin.execute("ALTER SYSTEM SET log_line_prefix = '%n [%p] '")
        await admin.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.5)  # every backend rereads its configuration before its next command
        try:
            one = await push(BASE + 1, 1, 1)
            await asyncio.sleep(0.2)  # keeps the two windows apart whatever the clock resolution
            many = await push(BASE + 2, PER_PUSH, 2)
        finally:
            await admin.execute("ALTER SYSTEM RESET log_statement")
            await admin.execute("ALTER SYSTEM RESET log_line_prefix")
            await admin.execute("SELECT pg_reload_conf()")
    with log_path.open("rb") as f:
        f.seek(offset)
        stmts = parse_log(f.read().decode(errors="replace"))
    return {1: push_statements(stmts, *one), PER_PUSH: push_statements(stmts, *many)}


async def run(pg: EmbeddedPostgres, dsn: str, url: str, headers_for: Any, department_id: int, seconds: int,
              tcp: bool) -> dict[str, Any]:
    """Capture, then replay each push size at 8 and 32 clients; tps (pushes/s) and mutations/s with the WAL counters."""
    admin = await asyncpg.connect(dsn)
    try:
        crew = await setup_crew(admin, department_id)
        captured = await capture(url, headers_for(crew["token"]), admin, pg.pg_dir.resolve() / "server.log",
                                 crew["tickets"])
    finally:
        await admin.close()
    env = dict(os.environ, PGPASSWORD=(pg.data_dir / "pg-password").read_text().strip(),
               PGOPTIONS=" ".join(f"-c {k}={v}" for k, v in session_settings(Settings()).items()
                                  if k != "application_name"))
    host = "127.0.0.1" if tcp else str(pg.pg_dir.resolve())
    database = urlsplit(dsn).path.lstrip("/")
    out: dict[str, Any] = {}
    counters = await Counters.open(dsn, database)
    run_no = 0
    try:
        for size, stmts in captured.items():
            first = BASE + 1 if size == 1 else BASE + 2
            text = script(stmts, crew["device"], crew["tickets"][:size], first, crew["crew"])
            path = Path(tempfile.mkstemp(suffix=".sql", prefix=f"push{size}-")[1])
            path.write_text(text)
            row: dict[str, Any] = {"statements": len(stmts), "script": None}
            for clients in (8, MAX_CLIENTS):
                run_no += 1
                c0 = await counters.snapshot()
                res = await asyncio.to_thread(subprocess.run, [
                    str(pg.bin_dir / "pgbench"), "-h", host, "-p", str(pg.port), "-U", "fieldsync", "-n", "-M", "simple",
                    "-c", str(clients), "-j", "2", "-T", str(seconds), "-D", "n=0", "-D", f"run={run_no}", "-f", str(path),
                    database], env=env, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(f"pgbench replay failed: {res.stderr[-1500:]}")
                tps = float(next(ln for ln in res.stdout.splitlines() if ln.startswith("tps")).split("=")[1].split()[0])
                row[str(clients)] = {"pushes_per_s": round(tps, 1), "mutations_per_s": round(tps * size, 1),
                                     **delta(c0, await counters.snapshot(settle=True))}
            row["script"] = str(path)
            out[f"push_{size}"] = row
    finally:
        await counters.close()
    return out
