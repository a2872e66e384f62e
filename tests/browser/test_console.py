"""The supervisor console in a real browser (Debian Chromium via Playwright) against the real server and database."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from uuid import UUID

import aiohttp
import asyncpg
import pytest
import segno
from playwright.async_api import Browser, BrowserContext, Page, expect

from sync_server.engine.intake import NewTicket, insert_tickets
from sync_server.passwords import set_password
from sync_server.settings import Settings
from tests.conftest import Server
from tests.factories import World, make_tickets
from tests.syncclient import DeviceClient, SupervisorClient

PASSWORD = "correct horse battery"
SAN = "sup-sanitation"  # tests/factories.py names supervisors sup-<department>


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A sign-in back-off far longer than any test step, so the throttle test cannot pass or fail by the clock."""
    return settings.model_copy(update={"login_backoff_s": 120.0})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for device and API calls next to the browser."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def staff(pool: asyncpg.Pool, world: World) -> World:
    """The world's supervisors with console passwords."""
    async with pool.acquire() as conn:
        for name in (SAN, "sup-street_services"):
            await set_password(conn, name, PASSWORD, actor="test")
    return world


async def sign_in(page: Page, url: str, name: str = SAN, password: str = PASSWORD) -> None:
    """Fill the login form the way a person would: by its labels."""
    await page.goto(url + "/console/login")
    await page.get_by_label("Username").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_sign_in_and_out(page: Page, context: BrowserContext, live_server: Server, staff: World,
                               pool: asyncpg.Pool) -> None:
    await page.goto(live_server.url + "/console/")
    await expect(page).to_have_url(live_server.url + "/console/login")
    await sign_in(page, live_server.url)
    await expect(page).to_have_url(live_server.url + "/console/")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page.locator(".who")).to_have_text(SAN)
    (cookie,) = [c for c in await context.cookies() if c["name"] == "fs_console"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 1
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(live_server.url + "/console/login")
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0
    await context.add_cookies([cookie])  # a copied cookie is worthless after sign-out
    await page.goto(live_server.url + "/console/")
    await expect(page).to_have_url(live_server.url + "/console/login")
    rows = await pool.fetch("SELECT actor_kind, actor, action, after->>'address' AS addr FROM audit_log"
                            " WHERE action IN ('sign_in', 'sign_out') ORDER BY id")
    assert [tuple(r) for r in rows] == [("supervisor", SAN, "sign_in", "127.0.0.1"), ("supervisor", SAN, "sign_out", None)]


async def test_wrong_password_is_refused_then_slowed(page: Page, live_server: Server, staff: World,
                                                     pool: asyncpg.Pool) -> None:
    for _ in range(3):
        await sign_in(page, live_server.url, password="wrong password!")
        await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0
    # The account is now slowed down: even the right password waits, and says for how long.
    await sign_in(page, live_server.url)
    await expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins. Wait")
    assert await pool.fetchval("SELECT count(*) FROM console_sessions") == 0
    assert await pool.fetchval("SELECT failures FROM login_throttle WHERE key = 'addr:127.0.0.1'") == 3
    # Every attempt is audited for city IT, with where it came from and why it failed (never the password).
    rows = await pool.fetch("SELECT actor, action, reason, after->>'address' AS addr, after::text AS a FROM audit_log"
                            " WHERE action LIKE 'sign_in%' ORDER BY id")
    assert [(r["actor"], r["action"], r["reason"], r["addr"]) for r in rows] == [
        (SAN, "sign_in_failed", "wrong_password", "127.0.0.1")] * 3 + [(SAN, "sign_in_refused", "throttled", "127.0.0.1")]
    assert all("wrong password" not in r["a"] for r in rows)


async def test_csrf_refusal_changes_nothing(page: Page, live_server: Server, staff: World, pool: asyncpg.Pool) -> None:
    (t,) = await make_tickets(pool, staff, 1)
    await sign_in(page, live_server.url)
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    form = {"sel": f"{t.ticket.id}:{t.ticket.version}", "crew": "san-2", "action": "assign"}
    origin = {"Origin": live_server.url}
    forged = await page.request.post(live_server.url + "/console/dispatch", form=form, headers=origin)
    assert forged.status == 403 and "security check failed" in await forged.text()
    token = await page.locator("#dispatch input[name=csrf]").input_value()
    cross = await page.request.post(live_server.url + "/console/dispatch", form={**form, "csrf": token},
                                    headers={"Origin": "http://evil.example"})
    assert cross.status == 403
    assert await pool.fetchval("SELECT c.name FROM tickets t JOIN crews c ON c.id = t.crew_id WHERE t.id = $1",
                               t.ticket.id) == "san-1"
    ok = await page.request.post(live_server.url + "/console/dispatch", form={**form, "csrf": token}, headers=origin)
    assert ok.status == 200 and "Assigned 1 ticket(s) to san-2." in await ok.text()


async def test_bulk_reassign_reaches_devices_next_pull(page: Page, live_server: Server, staff: World, pool: asyncpg.Pool,
                                                       http: aiohttp.ClientSession) -> None:
    tickets = await make_tickets(pool, staff, 5)
    old = DeviceClient(http, live_server.url, staff.device("san-1").token)
    new = DeviceClient(http, live_server.url, staff.device("san-2").token)
    await old.pull(), await new.pull()
    assert len(old.replica.tickets) == 5 and len(new.replica.tickets) == 0
    await sign_in(page, live_server.url)
    for t in tickets:
        await page.get_by_label(f"Select {t.ticket.id}").check()
    await page.locator("#dispatch").get_by_label("Crew").select_option("san-2")
    await page.get_by_role("button", name="Assign", exact=True).click()
    await expect(page.locator(".flash.ok")).to_have_text("Assigned 5 ticket(s) to san-2.")
    await expect(page.locator("#rows td", has_text="san-2")).to_have_count(5)
    (pulled,) = await old.pull()
    assert sorted((c.kind, c.reason) for c in pulled.changes) == [("remove", "reassigned")] * 5
    await new.pull()
    assert {t.crew for t in new.replica.tickets.values()} == {"san-2"} and len(new.replica.tickets) == 5


async def test_device_push_appears_on_open_board(page: Page, live_server: Server, staff: World, pool: asyncpg.Pool,
                                                 http: aiohttp.ClientSession) -> None:
    (t,) = await make_tickets(pool, staff, 1)
    await sign_in(page, live_server.url)
    await expect(page.locator("#live-status")).to_have_text("Live")
    await page.evaluate("window.notReloaded = true")
    row = page.locator(f"#row-{t.ticket.id}")
    await expect(row.locator(".badge")).to_have_text("assigned")
    dev = DeviceClient(http, live_server.url, staff.device("san-1").token)
    await dev.pull()
    res = await dev.push([dev.mutation("start", t.ticket.id)])
    assert res.results[0].status == "applied"
    await expect(row.locator(".badge")).to_have_text("in progress")
    assert await page.evaluate("window.notReloaded") is True


async def test_conflict_resolution(page: Page, live_server: Server, staff: World, pool: asyncpg.Pool,
                                   http: aiohttp.ClientSession) -> None:
    (t,) = await make_tickets(pool, staff, 1)
    dev = DeviceClient(http, live_server.url, staff.device("san-1").token)
    await dev.pull()
    queued = [dev.mutation("complete", t.ticket.id, {"resolution_code": "collected"})]
    await SupervisorClient(http, live_server.url, staff.supervisors["sanitation"]).assign(t.ticket.id, "san-2")
    res = await dev.push(queued)  # the truck was offline: a late field report
    assert res.results[0].reason == "late_field_report"
    cid = await pool.fetchval("SELECT id FROM conflicts WHERE ticket_id = $1", t.ticket.id)
    await sign_in(page, live_server.url)
    await page.get_by_role("link", name="Conflicts").click()
    await expect(page.locator(f"#conflict-{cid}")).to_contain_text("late field report")
    await page.get_by_label("Resolution comment").fill("san-2 told to skip <b>it</b>")
    await page.get_by_role("button", name=f"Resolve #{cid}").click()
    await expect(page.locator(".flash.ok")).to_have_text(f"Conflict {cid} resolved.")
    row = await pool.fetchrow("SELECT resolved_by, resolution FROM conflicts WHERE id = $1", cid)
    assert (row["resolved_by"], row["resolution"]) == (SAN, "san-2 told to skip <b>it</b>")
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'resolve_conflict' AND actor = $1", SAN) == 1


async def test_enrol_and_revoke_device(page: Page, live_server: Server, staff: World, pool: asyncpg.Pool,
                                       http: aiohttp.ClientSession) -> None:
    await sign_in(page, live_server.url)
    await page.get_by_role("link", name="Crews & devices").click()
    await page.locator("form.enroll").get_by_label("Crew").select_option("san-2")
    await page.get_by_label("Label").fill("truck 12 tablet")
    await page.get_by_role("button", name="Enrol device").click()
    token = await page.locator("#new-token").text_content()
    assert token is not None and token.startswith("fsd_")
    await expect(page.locator("figure.qr svg path.qrline")).to_have_count(1)
    link = f"{live_server.url}/app/#enrol={token}"  # what a phone camera opens (fsd_ tokens are URL-safe)
    await expect(page.locator("#enrol-link")).to_have_text(link)
    # The QR encodes exactly that link: the same text drawn by segno gives the same modules.
    drawn = await page.locator("figure.qr svg path.qrline").get_attribute("d")
    expected = segno.make(link, error="m").svg_inline(scale=5)
    assert drawn is not None and f'd="{drawn}"' in expected
    app = await page.context.new_page()  # the link signs the crew app in and it syncs
    await app.goto(link)
    await expect(app.get_by_test_id("sync-state")).to_have_text("Up to date")
    assert "enrol" not in app.url  # the token leaves the address bar
    await app.close()
    device_id = await pool.fetchval("SELECT id FROM devices WHERE label = 'truck 12 tablet'")
    dev = DeviceClient(http, live_server.url, token)
    await dev.pull()  # the shown token works
    await page.get_by_role("button", name=f"Revoke {device_id}").click()
    await expect(page.locator(".flash.ok")).to_have_text(f"Device {device_id} revoked.")
    await page.reload()
    await expect(page.locator("#new-token")).to_have_count(0)  # shown once only
    status, body = await dev.raw("/v1/sync/pull", b'{"cursor": null}')
    assert status == 401 and b"token_revoked" in body


async def test_supervisor_never_sees_another_department(page: Page, live_server: Server, staff: World,
                                                        pool: asyncpg.Pool) -> None:
    (mine,) = await make_tickets(pool, staff, 1)
    (theirs,) = await make_tickets(pool, staff, 1, crew="ss-1", service_type="Pothole Repair")
    await sign_in(page, live_server.url)
    await page.goto(live_server.url + "/console/?all=1")
    await expect(page.locator("#rows tr")).to_have_count(1)
    await expect(page.locator(f"#row-{mine.ticket.id}")).to_have_count(1)
    await expect(page.locator("#dispatch").get_by_label("Crew").locator("option", has_text="ss-1")).to_have_count(0)
    resp = await page.goto(live_server.url + f"/console/tickets/{theirs.ticket.id}")
    assert resp is not None and resp.status == 404
    assert "Pothole" not in await page.content()
    await page.goto(live_server.url + "/console/")
    token = await page.locator("#dispatch input[name=csrf]").input_value()
    forged = await page.request.post(live_server.url + "/console/dispatch", headers={"Origin": live_server.url}, form={
        "csrf": token, "action": "assign", "crew": "san-2", "sel": f"{theirs.ticket.id}:{theirs.ticket.version}"})
    assert forged.status == 422 and "unknown tickets; nothing was changed" in await forged.text()
    assert await pool.fetchval("SELECT version FROM tickets WHERE id = $1", theirs.ticket.id) == theirs.ticket.version


async def test_stale_page_shows_what_changed_and_html_is_escaped(browser: Browser, live_server: Server, staff: World,
                                                                 pool: asyncpg.Pool, http: aiohttp.ClientSession) -> None:
    async with pool.acquire() as conn, conn.transaction():
        recs = await insert_tickets(conn, [NewTicket(
            service_type="Bulky Items", address='<img src=x id=pwned> 1 MAIN ST', crew_id=staff.crews["san-1"],
            lat=34.05, lon=-118.25, description="<script>alert(1)</script>")], actor_kind="system", actor="test")
    (t,) = recs.values()
    # Without JavaScript nothing refreshes the page by itself: the plain-HTML path, and a page that goes stale.
    ctx = await browser.new_context(java_script_enabled=False)
    try:
        page = await ctx.new_page()
        await sign_in(page, live_server.url)
        await expect(page.locator(f"#row-{t.ticket.id}")).to_contain_text("<img src=x id=pwned> 1 MAIN ST")
        assert await page.locator("#pwned").count() == 0
        await page.get_by_label(f"Select {t.ticket.id}").check()
        await SupervisorClient(http, live_server.url, staff.supervisors["sanitation"]).assign(t.ticket.id, "san-2")
        await page.locator("#dispatch").get_by_label("Priority").select_option("urgent")
        await page.get_by_role("button", name="Set priority").click()
        alert = page.locator(".flash.err").filter(has_text="changed since your page was loaded")
        await expect(alert).to_contain_text("crew san-2")
        row = await pool.fetchrow("SELECT priority, version FROM tickets WHERE id = $1", t.ticket.id)
        assert row["priority"] == "normal" and row["version"] == t.ticket.version + 1
        await page.goto(live_server.url + f"/console/tickets/{t.ticket.id}")
        await expect(page.locator(".desc")).to_have_text("<script>alert(1)</script>")
        assert re.search(r"<script>alert", await page.content()) is None
    finally:
        await ctx.close()
