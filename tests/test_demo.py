"""The demo city: deterministic, shaped like the real sample, seeded once through intake, credentials file kept."""

from __future__ import annotations

import json
import stat
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import asyncpg

from protocol import HELD_STATUSES, TicketStatus
from sync_server.demo import generate
from sync_server.demo.seed import CREDENTIALS_FILE, seed, update_server_url, write_credentials
from sync_server.ingest.mapping import SERVICE_TYPES
from sync_server.ingest.parse import LA
from sync_server.settings import Settings

NOW = datetime(2024, 5, 15, 18, 0, tzinfo=timezone.utc)  # a week with no DST switch in it
OPEN = {TicketStatus.UNASSIGNED, TicketStatus.ASSIGNED, TicketStatus.ACKNOWLEDGED, TicketStatus.IN_PROGRESS}


def test_generator_is_deterministic_and_shaped_like_the_sample() -> None:
    rows = generate.load_slice()
    assert len(rows) > 2000  # the shipped slice of real rows
    crew_ids = {c.name: i + 1 for i, c in enumerate(generate.crews(7))}
    a = generate.tickets(rows, 500, 7, crew_ids, NOW)
    b = generate.tickets(rows, 500, 7, crew_ids, NOW)
    c = generate.tickets(rows, 500, 8, crew_ids, NOW)
    assert a == b and a != c
    real_places = {(r.address, r.zip, r.lat, r.lon, r.council_district) for r in rows}
    real_minutes = {r.requested_at.astimezone(LA).strftime("%H:%M") for r in rows}
    assert all((t.address, t.zip, t.lat, t.lon, t.council_district) in real_places for t in a)
    assert all(t.requested_at.astimezone(LA).strftime("%H:%M") in real_minutes for t in a)
    assert all(t.requested_at <= NOW for t in a)
    assert all(t.status in OPEN for t in a)
    assert all((t.crew_id is None) == (t.status is TicketStatus.UNASSIGNED) for t in a)
    types = Counter(t.service_type for t in a)
    assert set(types) <= {s.name for s in SERVICE_TYPES}
    assert types.most_common(1)[0][0] == "Bulky Items"  # the sample's most common request stays the most common
    assert len({t.sr_number for t in a}) == 500


def test_crews_are_named_after_real_areas_with_two_to_four_devices() -> None:
    crews = generate.crews(20200101)
    names = {c.name for c in crews}
    assert {"san-ev", "san-wv", "san-nc", "san-sla", "san-wla", "san-hb"} <= names
    assert 10 <= len(crews) <= 14
    assert {c.department for c in crews} == {"sanitation", "street_services", "street_lighting", "community_beautification"}
    assert all(2 <= c.devices <= 4 for c in crews)


async def test_seed_fills_an_empty_database_once_through_the_change_log(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        creds = await seed(conn, tickets=300, seed=5, now=NOW)
        again = await seed(conn, tickets=300, seed=5, now=NOW)
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM departments) AS d, (SELECT count(*) FROM crews) AS c,"
            " (SELECT count(*) FROM devices) AS dev, (SELECT count(*) FROM users WHERE role = 'supervisor') AS s,"
            " (SELECT count(*) FROM users WHERE role = 'admin') AS a, (SELECT count(*) FROM tickets) AS t,"
            " (SELECT count(*) FROM changes) AS ch,"
            " (SELECT count(*) FROM tickets WHERE status = ANY($1::text[]) AND holder_crew_id IS NULL) AS orphans",
            sorted(HELD_STATUSES),
        )
    assert again is None
    assert creds is not None
    assert (counts["d"], counts["s"], counts["a"], counts["t"], counts["ch"]) == (4, 4, 1, 300, 300)
    assert counts["c"] == len(generate.crews(5)) and counts["dev"] == len(creds["devices"])
    assert counts["orphans"] == 0  # every crew-held ticket is in that crew's scope

    path = write_credentials(tmp_path, {**creds, "server": None})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    updated = update_server_url(tmp_path, "http://127.0.0.1:1234")
    on_disk = json.loads((tmp_path / CREDENTIALS_FILE).read_text())
    assert updated == on_disk and on_disk["server"] == "http://127.0.0.1:1234"
    assert on_disk["devices"] == creds["devices"] and on_disk["admin"] == creds["admin"]
    assert update_server_url(tmp_path / "elsewhere", "http://x") is None


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"| {name} | `FIELDSYNC_{name.upper()}` |" not in readme]
    assert not missing, (
        f"README configuration table lacks {missing}: run "
        "python -c 'from sync_server.cli import update_readme; update_readme()'"
    )
