"""The dispatch board: filtered, sorted, paginated department tickets with the offline map, and the dispatch form whose
every action goes through engine/supervise.py (state machine, audit, change log) like the API."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode
from uuid import UUID
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from protocol import ErrorCode, Priority, ProtocolError, TicketStatus
from sync_server.domain.states import OPEN, Action
from sync_server.engine import supervise
from sync_server.engine.live_frames import encode_position
from sync_server.keys import POOL, SETTINGS
from sync_server.storage import board as store
from sync_server.storage import feed
from sync_server.web.console import mapsvg
from sync_server.web.console.frame import SESSION, page, read_form, render

PAGE_SIZE = 50
STATUSES = [s.value for s in TicketStatus]
PRIORITIES = [p.value for p in Priority]
OPEN_VALUES = sorted(s.value for s in OPEN)
MAX_SELECTION = 500


def _one(q: MultiDictProxy[str], name: str, limit: int = 200) -> str | None:
    """A single trimmed query value, or None when absent or empty."""
    value = (q.get(name) or "").strip()[:limit]
    return value or None


async def board_context(request: web.Request, q: MultiDictProxy[str]) -> dict[str, Any]:
    """Everything the board template shows for these filters, read in one snapshot."""
    sess = request[SESSION]
    who = sess.principal
    pool = request.app[POOL]
    statuses = [s for s in q.getall("status", []) if s in STATUSES]
    if "status" not in q and q.get("all") != "1":
        statuses = OPEN_VALUES  # a fresh board shows open work
    sort = q.get("sort", "requested") if q.get("sort") in store.SORTS else "requested"
    descending = q.get("dir", "desc") != "asc"
    try:
        page_no = min(max(1, int(q.get("page", "1"))), 1_000_000)  # an offset beyond bigint was a 500
    except ValueError:
        page_no = 1
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        crews, types = await store.options(conn, supervise.scope(who))
        crew_name = _one(q, "crew")
        crew_id = next((c["id"] for c in crews if c["name"] == crew_name), None)
        type_name = _one(q, "type")
        type_id = next((t["id"] for t in types if t["name"] == type_name), None)
        priority = _one(q, "priority")
        bq = store.BoardQuery(
            department_id=supervise.scope(who), statuses=statuses, crew_id=crew_id,
            unassigned=crew_name == "(none)", service_type_id=type_id,
            priority=priority if priority in PRIORITIES else None, overdue=q.get("overdue") == "1",
            text=_one(q, "q"), sort=sort, descending=descending,
        )
        rows, total = await store.page(conn, bq, (page_no - 1) * PAGE_SIZE, PAGE_SIZE)
        points = await store.points(conn, bq)
        position = encode_position((await feed.watermark(conn), 0))
    view = mapsvg.build(((p["lat"], p["lon"], p["status"]) for p in points), request.app[SETTINGS].map_tile_url)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    keep = [(k, v) for k, v in q.items() if k in ("status", "crew", "type", "priority", "overdue", "q", "all")]
    if "status" not in q:
        keep += [("status", s) for s in statuses]

    def link(**over: Any) -> str:
        """This board's URL with some parameters replaced (sorting and paging keep the filters)."""
        base = [(k, v) for k, v in keep] + [("sort", sort), ("dir", "desc" if descending else "asc"), ("page", str(page_no))]
        base = [(k, v) for k, v in base if k not in over] + [(k, str(v)) for k, v in over.items()]
        return "/console/?" + urlencode(base)

    return {
        "rows": rows, "total": total, "page_no": page_no, "pages": pages, "statuses": STATUSES, "selected_statuses": statuses,
        "priorities": PRIORITIES, "crews": crews, "types": types, "f": {k: (q.get(k) or "") for k in ("crew", "type", "priority", "overdue", "q")},
        "sort": sort, "descending": descending, "link": link, "map": view, "position": position,
        "view_query": urlencode(keep + [("sort", sort), ("dir", "desc" if descending else "asc"), ("page", str(page_no))]),
        "open_values": OPEN_VALUES,
    }


@page()
async def board(request: web.Request) -> web.Response:
    """GET /console/: the board."""
    ctx = await board_context(request, request.query)
    return render(request, "board.html", flash=None, error=None, stale=[], **ctx)


def _selection(form: MultiDictProxy[Any]) -> dict[UUID, int]:
    """Selected tickets with the version the page showed (`id:version`); malformed entries are a typed refusal."""
    out: dict[UUID, int] = {}
    for raw in form.getall("sel", []):
        try:
            tid, version = str(raw).split(":", 1)
            out[UUID(tid)] = int(version)
            if not 0 <= out[UUID(tid)] < 2**31:  # tickets.version is an integer: the driver refused more (a 500)
                raise ValueError
        except ValueError:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, "a selected ticket is malformed", {"field": "sel"}) from None
    if not out:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "Select at least one ticket first.", {"field": "sel"})
    if len(out) > MAX_SELECTION:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"Select at most {MAX_SELECTION} tickets at once.", {"field": "sel"})
    return out


def _due(text: str, tz: ZoneInfo) -> datetime:
    """A due date means the end of that day in the city's time zone."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "The due date must be a date (YYYY-MM-DD).", {"field": "due"}) from None
    return datetime.combine(day, time(23, 59, 59), tz).astimezone(timezone.utc)


async def _original(request: web.Request, text: str) -> UUID:
    """The ticket named as the original of a duplicate: its id or SR number, in the caller's department."""
    try:
        return UUID(text)
    except ValueError:
        pass
    who = request[SESSION].principal
    async with request.app[POOL].acquire() as conn:
        tid = await conn.fetchval("SELECT id FROM tickets WHERE sr_number = $1 AND ($2::smallint IS NULL OR department_id = $2)",
                                  text, supervise.scope(who))
    if tid is None:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"No ticket {text!r} in your department to be the original.",
                            {"field": "of"})
    return tid


_STATUS_ACTIONS = {"cancel": Action.CANCEL, "duplicate": Action.MARK_DUPLICATE, "reopen": Action.REOPEN, "close": Action.CLOSE}


async def apply(request: web.Request, form: MultiDictProxy[Any]) -> str:
    """Run one dispatch action on the selection through the engine; returns what happened, in words."""
    who = request[SESSION].principal
    pool = request.app[POOL]
    action = str(form.get("action", ""))
    sel = _selection(form)
    ids = list(sel)
    tz = ZoneInfo(request.app[SETTINGS].city_timezone)
    if action == "assign":
        crew = str(form.get("crew", "")).strip()
        if not crew:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, "Choose a crew to assign to.", {"field": "crew"})
        _, changed = await supervise.assign(pool, who, ids, crew, bulk=True, expect=sel)
        return f"Assigned {len(changed)} ticket(s) to {crew}" + (f" ({len(ids) - len(changed)} already theirs)." if len(changed) < len(ids) else ".")
    if action in ("priority", "due"):
        if action == "priority":
            value = str(form.get("priority", ""))
            if value not in PRIORITIES:
                raise ProtocolError(ErrorCode.VALIDATION_FAILED, "Choose a priority.", {"field": "priority"})
            values: dict[str, Any] = {"priority": Priority(value)}
        else:
            values = {"due_at": _due(str(form.get("due", "")), tz)}
        _, changed = await supervise.update_fields(pool, who, ids, values, bulk=True,
                                                   action="set_priority" if action == "priority" else "update", expect=sel)
        return f"Updated {len(changed)} ticket(s)."
    if action in _STATUS_ACTIONS:
        act = _STATUS_ACTIONS[action]
        reason = str(form.get("reason", "")).strip()[:500] or None
        of = await _original(request, str(form.get("of", "")).strip()) if act is Action.MARK_DUPLICATE else None
        if act is Action.CANCEL and reason is None:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, "Give a reason to cancel.", {"field": "reason"})
        if len(ids) != 1 and act is not Action.CLOSE:
            raise ProtocolError(ErrorCode.VALIDATION_FAILED, f"Select exactly one ticket to {action} it.", {"field": "sel"})
        for tid in ids:  # close is per ticket; the version check still refuses a stale one before anything else
            await supervise.change_status(pool, who, tid, act, reason=reason, duplicate_of=of, expect=sel[tid])
        return {"cancel": "Cancelled", "duplicate": "Marked as duplicate", "reopen": "Reopened", "close": "Closed"}[action] + f" {len(ids)} ticket(s)."
    raise ProtocolError(ErrorCode.VALIDATION_FAILED, "Unknown action.", {"field": "action"})


@page()
async def dispatch(request: web.Request) -> web.Response:
    """POST /console/dispatch: apply, then show the board as it is now (with what changed when the page was stale)."""
    form = await read_form(request)
    flash, error, stale = None, None, []
    try:
        flash = await apply(request, form)
        status = 200
    except ProtocolError as err:
        error, status = err, err.http_status
        stale = list(err.details.get("stale", []))
    q = MultiDictProxy(MultiDict(parse_qsl(str(form.get("view", ""))[:2000])))
    ctx = await board_context(request, q)
    if request.headers.get("HX-Request") == "true":
        status = 200  # htmx swaps only 2xx answers; the refusal is in the page
    return render(request, "board.html", status, flash=flash, error=error, stale=stale, **ctx)
