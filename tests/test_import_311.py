"""MyLA311 import: pure row rules tested directly, then real slices of the city's file into real PostgreSQL."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from protocol import TicketStatus
from sync_server.ingest.importer import ImportSummary, Rejected, import_csv
from sync_server.ingest.mapping import SERVICE_TYPES, STATUS_TABLE, crew_name, resolve_status
from sync_server.ingest.parse import HeaderError, ParsedRow, normalise_header, parse_la_datetime, parse_row

SLICE = Path(__file__).parent / "data" / "la311_slice.csv"
KNOWN_TYPES = {"Bulky Items", "Graffiti Removal", "Illegal Dumping Pickup", "Metal/Household Appliances",
               "Electronic Waste", "Dead Animal Removal", "Homeless Encampment", "Single Streetlight Issue",
               "Multiple Streetlight Issue", "Pothole Repair", "Other"}
SANITATION_TYPES = {"Bulky Items", "Illegal Dumping Pickup", "Metal/Household Appliances", "Electronic Waste",
                    "Dead Animal Removal", "Homeless Encampment"}
# Written out independently of sync_server.ingest.mapping, so a wrong table there fails these tests.
EXPECTED_STATUS = {"Closed": "closed", "Cancelled": "cancelled", "Referred Out": "cancelled", "Open": "unassigned"}
CAMEL = {
    "srnumber": "SRNumber", "requesttype": "RequestType", "status": "Status", "actiontaken": "ActionTaken",
    "createddate": "CreatedDate", "updateddate": "UpdatedDate", "servicedate": "ServiceDate", "closeddate": "ClosedDate",
    "requestsource": "RequestSource", "owner": "Owner", "createdbyuserorganization": "CreatedByUserOrganization",
    "mobileos": "MobileOS", "anonymous": "Anonymous", "assignto": "AssignTo", "latitude": "Latitude",
    "longitude": "Longitude", "address": "Address", "zipcode": "ZipCode", "apc": "APC", "cd": "CD",
    "cdmember": "CDMember", "nc": "NC", "ncname": "NCName", "policeprecinct": "PolicePrecinct",
}


def slice_rows() -> list[dict[str, str]]:
    """The test slice as plain dicts, read with the stdlib only."""
    with open(SLICE, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    """Write rows back out (optionally renaming columns), one physical line per row."""
    keys = list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header or keys)
        for r in rows:
            w.writerow([r[k] for k in keys])
    return path


def valid_row(**over: str) -> dict[str, str]:
    """A row as normalise_header keys it, valid unless overridden."""
    row = {
        "srnumber": "1-1", "requesttype": "Bulky Items", "status": "Open", "createddate": "1/1/20 0:05",
        "updateddate": "1/2/20 8:43", "servicedate": "1/2/20 0:00", "latitude": "34.19", "longitude": "-118.49",
        "address": "16815 W VANOWEN ST, 91406", "zipcode": "91406", "cd": "6", "requestsource": "Call", "assignto": "WV",
    }
    row.update(over)
    return row


# ------------------------------------------------------------------------------------------------ pure rules

def test_headers_of_both_variants_normalise_to_the_same_keys() -> None:
    lower = list(CAMEL)
    camel = list(CAMEL.values())
    assert normalise_header(camel) == normalise_header(lower) == lower
    with pytest.raises(HeaderError, match="srnumber"):
        normalise_header(["RequestType", "Status", "CreatedDate"])


@pytest.mark.parametrize("text, expected", [
    ("1/1/20 0:05", datetime(2020, 1, 1, 8, 5, tzinfo=timezone.utc)),           # lowercase sample, PST
    ("01/01/2020 12:05:00 AM", datetime(2020, 1, 1, 8, 5, tzinfo=timezone.utc)),  # portal export
    ("01/01/2020 12:05:00 PM", datetime(2020, 1, 1, 20, 5, tzinfo=timezone.utc)),
    ("07/04/2020 01:30:00 PM", datetime(2020, 7, 4, 20, 30, tzinfo=timezone.utc)),  # PDT is UTC-7
    ("2020-01-01T00:05:00.000", datetime(2020, 1, 1, 8, 5, tzinfo=timezone.utc)),   # Socrata API
])
def test_la_local_times_become_aware_utc(text: str, expected: datetime) -> None:
    got = parse_la_datetime(text)
    assert got == expected and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("over, reason", [
    ({"srnumber": ""}, "missing SR number"),
    ({"createddate": "next tuesday"}, "unparseable CreatedDate"),
    ({"createddate": "13/45/20 1:00"}, "unparseable CreatedDate"),
    ({"updateddate": "1/1/20 25:00"}, "unparseable UpdatedDate"),
    ({"requesttype": "Report Water Waste"}, "unknown request type"),
    ({"status": "Frozen"}, "unknown status"),
    ({"latitude": "134.2"}, "latitude 134.2 out of range"),
    ({"longitude": "-218.5"}, "longitude -218.5 out of range"),
    ({"longitude": "west"}, "is not a number"),
])
def test_bad_rows_are_rejected_with_line_and_reason(over: dict[str, str], reason: str) -> None:
    got = parse_row(valid_row(**over), 42)
    assert isinstance(got, Rejected)
    assert got.line == 42 and reason in got.reason


def test_a_valid_row_maps_to_our_vocabulary() -> None:
    got = parse_row(valid_row(zipcode="91406-1234", cd="6.0", latitude="", longitude=""), 7)
    assert isinstance(got, ParsedRow)
    assert (got.sr_number, got.service_type, got.department, got.zip, got.council_district) == (
        "1-1", "Bulky Items", "sanitation", "91406", 6)
    assert got.lat is None and got.lon is None
    assert got.service_date is not None and got.service_date.isoformat() == "2020-01-02"
    assert got.source_updated_at > got.requested_at


@pytest.mark.parametrize("city, has_crew, ours, reason", [
    ("Closed", False, TicketStatus.CLOSED, None),
    ("Cancelled", True, TicketStatus.CANCELLED, None),
    ("Open", True, TicketStatus.UNASSIGNED, None),
    ("Pending", True, TicketStatus.ASSIGNED, None),
    ("Pending", False, TicketStatus.UNASSIGNED, None),
    ("Referred Out", False, TicketStatus.CANCELLED, "referred_out"),
])
def test_status_table(city: str, has_crew: bool, ours: TicketStatus, reason: str | None) -> None:
    rule = STATUS_TABLE[city.casefold()]
    assert resolve_status(rule, has_crew) is ours
    assert rule.reason_code == reason


def test_service_types_and_crew_names() -> None:
    assert {t.name for t in SERVICE_TYPES} == KNOWN_TYPES
    assert {t.name: t.code for t in SERVICE_TYPES}["Metal/Household Appliances"] == "metal_household_appliances"
    assert crew_name("sanitation", "EV") == "san-ev"
    assert crew_name("community_beautification", "NEGB_ELA") == "ocb-negb-ela"
    assert crew_name("sanitation", "") is None


# ------------------------------------------------------------------------------------------------ real PostgreSQL

async def _status_counts(pool: asyncpg.Pool) -> Counter[str]:
    async with pool.acquire() as conn:
        return Counter({r["status"]: r["n"] for r in await conn.fetch("SELECT status, count(*) AS n FROM tickets GROUP BY 1")})


async def _log_sizes(pool: asyncpg.Pool) -> tuple[int, int]:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM changes"), await conn.fetchval("SELECT count(*) FROM audit_log")


async def test_real_slice_imports_with_exact_counts_and_reimport_changes_nothing(pool: asyncpg.Pool) -> None:
    rows = slice_rows()
    assert len({r["srnumber"] for r in rows}) == len(rows)  # the slice has no repeated SR numbers
    good = [r for r in rows if r["requesttype"] in KNOWN_TYPES]
    # A crew for North Central sanitation: Pending sanitation rows routed to NC must land on it, others stay unassigned.
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO departments (code, name, agency_code) VALUES ('sanitation', 'Sanitation', 'BOS')")
        nc = await conn.fetchval("INSERT INTO crews (name, department_id) SELECT 'san-nc', id FROM departments RETURNING id")
    to_nc = [r for r in good if r["status"] == "Pending" and r["assignto"] == "NC" and r["requesttype"] in SANITATION_TYPES]
    expected = Counter(EXPECTED_STATUS.get(r["status"], "unassigned") for r in good if r not in to_nc)
    expected["assigned"] += len(to_nc)
    referred = [r for r in good if r["status"] == "Referred Out"]
    assert to_nc and referred  # the slice exercises both paths

    rejected: list[Rejected] = []
    first = await import_csv(pool, SLICE, on_reject=rejected.append)
    assert first == ImportSummary(read=len(rows), inserted=len(good), updated=0, unchanged=0, rejected=len(rows) - len(good))
    assert {r.reason for r in rejected} == {"unknown request type 'Report Water Waste'"}
    assert +await _status_counts(pool) == +expected
    async with pool.acquire() as conn:
        held = await conn.fetchval("SELECT count(*) FROM tickets WHERE holder_crew_id = $1", nc)
        reasons = await conn.fetch("SELECT reason_code FROM tickets WHERE sr_number = ANY($1::text[])", [r["srnumber"] for r in referred])
        sample = await conn.fetchrow("SELECT requested_at, zip, council_district FROM tickets WHERE sr_number = $1", good[0]["srnumber"])
    assert held == len(to_nc)
    assert [r["reason_code"] for r in reasons] == ["referred_out"] * len(referred)
    assert sample["requested_at"] == parse_la_datetime(good[0]["createddate"])
    assert (sample["zip"], sample["council_district"]) == (good[0]["zipcode"], int(good[0]["cd"]))
    changes, audits = await _log_sizes(pool)
    assert changes == len(good) + len(referred)  # one create each; referred-out rows also log their reason code

    second = await import_csv(pool, SLICE)
    assert second == ImportSummary(read=len(rows), inserted=0, updated=0, unchanged=len(good), rejected=len(rows) - len(good))
    assert await _log_sizes(pool) == (changes, audits)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tickets") == len(good)


async def test_newer_updated_date_updates_through_the_change_log(pool: asyncpg.Pool, tmp_path: Path) -> None:
    known = [r for r in slice_rows() if r["requesttype"] in KNOWN_TYPES]
    rows = known[:59] + [next(r for r in known if r["status"] == "Open")]
    await import_csv(pool, write_rows(tmp_path / "v1.csv", rows))
    changes, _ = await _log_sizes(pool)
    target = next(r for r in rows if r["status"] == "Open")
    touched = next(r for r in rows if r["status"] == "Closed")
    stale = next(r for r in rows if r["status"] == "Closed" and r is not touched)
    target.update(status="Closed", updateddate="12/31/21 9:00")
    touched.update(updateddate="12/31/21 9:00")  # newer, but nothing we track changed
    stale.update(status="Open")                # same UpdatedDate: the city row is not newer, so it is ignored
    summary = await import_csv(pool, write_rows(tmp_path / "v2.csv", rows))
    assert (summary.inserted, summary.updated, summary.unchanged) == (0, 1, len(rows) - 1)
    async with pool.acquire() as conn:
        t = await conn.fetchrow("SELECT id, status, version FROM tickets WHERE sr_number = $1", target["srnumber"])
        s = await conn.fetchval("SELECT status FROM tickets WHERE sr_number = $1", stale["srnumber"])
        log_rows = await conn.fetch("SELECT ticket_id, version FROM changes ORDER BY id OFFSET $1", changes)
        audit = await conn.fetchrow("SELECT actor_kind, action, before, after FROM audit_log WHERE ticket_id = $1 ORDER BY id DESC LIMIT 1", t["id"])
    assert (t["status"], t["version"], s) == ("closed", 2, "closed")
    assert [(r["ticket_id"], r["version"]) for r in log_rows] == [(t["id"], 2)]
    assert (audit["actor_kind"], audit["action"]) == ("import", "import_update")
    assert '"unassigned"' in audit["before"] and '"closed"' in audit["after"]


async def test_broken_rows_are_reported_by_line_and_the_rest_imported(pool: asyncpg.Pool, tmp_path: Path) -> None:
    rows = [r for r in slice_rows() if r["requesttype"] in KNOWN_TYPES][:40]
    breakage = {3: ("srnumber", ""), 9: ("createddate", "yesterday"), 17: ("requesttype", "Alien Landing"),
                25: ("latitude", "340.19")}
    for i, (col, value) in breakage.items():
        rows[i][col] = value
    path = write_rows(tmp_path / "broken.csv", rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write("1-999,Bulky Items,Open\n")  # a truncated last line
    rejected: list[Rejected] = []
    summary = await import_csv(pool, path, on_reject=rejected.append)
    # Line 1 is the header, so data row i sits on line i + 2; the truncated row is the 42nd line.
    assert [(r.line, r.reason.split(" ")[0]) for r in rejected] == [
        (5, "missing"), (11, "unparseable"), (19, "unknown"), (27, "latitude"), (len(rows) + 2, "expected"),
    ]
    assert summary == ImportSummary(read=len(rows) + 1, inserted=len(rows) - 4, updated=0, unchanged=0, rejected=5)


async def test_portal_camelcase_export_imports_like_the_lowercase_file(pool: asyncpg.Pool, tmp_path: Path) -> None:
    rows = [r for r in slice_rows() if r["requesttype"] in KNOWN_TYPES][:80]
    for r in rows:  # the portal writes zero-padded dates with AM/PM
        for col in ("createddate", "updateddate", "servicedate", "closeddate"):
            if r[col]:
                local = datetime.strptime(r[col], "%m/%d/%y %H:%M")
                r[col] = local.strftime("%m/%d/%Y %I:%M:%S %p")
    path = write_rows(tmp_path / "portal.csv", rows, header=[CAMEL[k] for k in rows[0]])
    summary = await import_csv(pool, path)
    assert summary == ImportSummary(read=80, inserted=80, updated=0, unchanged=0, rejected=0)
    original = slice_rows()[0]
    async with pool.acquire() as conn:
        got = await conn.fetchval("SELECT requested_at FROM tickets WHERE sr_number = $1", original["srnumber"])
    assert got == parse_la_datetime(original["createddate"])


async def test_admin_dispatch_rules_route_imported_rows_before_the_naming_convention(pool: asyncpg.Pool,
                                                                                  tmp_path: Path) -> None:
    """The importer's AssignTo -> crew mapping goes through the same dispatch rules as Open311 intake: a
    routing_area rule sends NC bulky items to a crew not named after the area, a district rule catches CD 6."""
    from sync_server.auth import Principal, Role
    from sync_server.ingest.upsert import ensure_catalog
    from sync_server.open311 import manage

    async with pool.acquire() as conn:
        await ensure_catalog(conn)
        dept = await conn.fetchval("SELECT id FROM departments WHERE code = 'sanitation'")
        for name in ("san-nc", "yard-9", "yard-6"):
            await conn.execute("INSERT INTO crews (name, department_id) VALUES ($1, $2)", name, dept)
    admin = Principal(Role.ADMIN, "test-admin")
    await manage.add_rule(pool, admin, {"position": 1, "service_type": "bulky_items", "routing_area": "NC",
                                        "crew": "yard-9"})
    await manage.add_rule(pool, admin, {"position": 2, "service_type": "illegal_dumping_pickup",
                                        "council_district": 6, "crew": "yard-6"})
    rows = [
        valid_row(srnumber="1-10", requesttype="Bulky Items", status="Pending", assignto="NC", cd="1"),
        valid_row(srnumber="1-11", requesttype="Illegal Dumping Pickup", status="Pending", assignto="NC", cd="1"),
        valid_row(srnumber="1-12", requesttype="Illegal Dumping Pickup", status="Pending", assignto="WV", cd="6"),
        valid_row(srnumber="1-13", requesttype="Illegal Dumping Pickup", status="Pending", assignto="WV", cd="5"),
    ]
    path = write_rows(tmp_path / "rules.csv", rows)
    summary = await import_csv(pool, path)
    assert summary.inserted == 4
    got = {r["sr_number"]: (r["crew"], r["status"]) for r in await pool.fetch(
        "SELECT t.sr_number, c.name AS crew, t.status FROM tickets t LEFT JOIN crews c ON c.id = t.crew_id")}
    assert got == {
        "1-10": ("yard-9", "assigned"),      # routing_area rule beats the san-nc naming convention
        "1-11": ("san-nc", "assigned"),      # no rule for illegal dumping in NC: convention
        "1-12": ("yard-6", "assigned"),      # district rule
        "1-13": (None, "unassigned"),        # no rule, no san-wv crew
    }
