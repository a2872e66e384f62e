"""The crew app (/app/) in headless Chromium on a phone-sized screen, against the real server: offline work that
survives a reload arrives exactly once, a late field report is explained in words, two phones of a crew converge, a
push whose answer the network lost is resent and applied once."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from clients.sim.photos import png_bytes
from tests.browser.conftest import TIMEOUT_MS
from tests.browser.relay import Relay
from tests.conftest import Server
from tests.factories import World, make_tickets

PHONE = {"width": 390, "height": 844}
# Reads the app's IndexedDB replica (the library's store) so two phones can be compared ticket by ticket.
READ_REPLICA = """async () => {
  const dbs = (await indexedDB.databases()).filter((d) => d.name.startsWith("fieldsync-"));
  if (dbs.length !== 1) return null;
  const db = await new Promise((ok, err) => { const r = indexedDB.open(dbs[0].name); r.onsuccess = () => ok(r.result); r.onerror = err; });
  const all = (store) => new Promise((ok) => { const r = db.transaction(store).objectStore(store).getAll(); r.onsuccess = () => ok(r.result); });
  const tickets = (await all("tickets")).sort((a, b) => a.id.localeCompare(b.id));
  const outbox = await all("outbox");
  db.close();
  return { tickets, outbox: outbox.length };
}"""


class Phone:
    """One browser context = one phone with the app open; records script errors and CSP violations."""

    def __init__(self, ctx: BrowserContext, page: Page) -> None:
        self.ctx, self.page, self.errors = ctx, page, []  # type: list[str]
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" and "Content Security Policy" in m.text else None)

    async def sign_in(self, server: Server, token: str, tickets: int) -> None:
        """Open the enrolment link (what the console's QR code holds) and wait for the crew's tickets."""
        await self.page.goto(f"{server.url}/app/#enrol={token}")
        await expect(self.page.locator("a.ticket")).to_have_count(tickets)
        for _ in range(600):  # bounded (60 s+); wait_for_function would need eval, which the app's CSP forbids
            if await self.page.evaluate("() => navigator.serviceWorker.controller !== null"):
                return
            await asyncio.sleep(0.1)
        state = await self.page.evaluate("""async () => { const r = await navigator.serviceWorker.getRegistration('/app/');
          return r ? {active: !!r.active, installing: r.installing && r.installing.state, waiting: !!r.waiting, scope: r.scope} : 'none'; }""")
        raise AssertionError(f"the service worker never took control of the app: {state}")

    async def open_ticket(self, ticket_id: str) -> None:
        await self.page.locator(f'a[data-ticket="{ticket_id}"]').click()
        await expect(self.page.locator("#details h1")).to_be_visible()

    async def tap(self, action: str, status: str | None = None) -> None:
        await self.page.locator(f'button[data-action="{action}"]').click()
        if status is not None:
            await expect(self.page.get_by_test_id("status")).to_have_text(status)

    async def replica(self) -> dict[str, Any]:
        return await self.page.evaluate(READ_REPLICA)


@pytest.fixture
async def phones(browser: Browser) -> AsyncIterator[list[Phone]]:
    """Factory-style list: tests append phones with `new_phone`; all are closed and checked for errors at the end."""
    made: list[Phone] = []
    yield made
    for p in made:
        await p.ctx.close()
    assert not [e for p in made for e in p.errors]


async def new_phone(browser: Browser, phones: list[Phone]) -> Phone:
    ctx = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="en-US", service_workers="allow")
    ctx.set_default_timeout(TIMEOUT_MS * 2)
    phone = Phone(ctx, await ctx.new_page())
    phones.append(phone)
    return phone


async def staff_get(server: Server, token: str, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(server.url + path, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        return json.loads(await r.text())


async def staff_post(server: Server, token: str, path: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as s, s.post(server.url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status in (200, 201), await r.text()
        return json.loads(await r.text())


async def test_three_tickets_worked_offline_survive_a_reload_and_arrive_exactly_once(
        browser: Browser, phones: list[Phone], live_server: Server, world: World, pool: asyncpg.Pool) -> None:
    tickets = await make_tickets(pool, world, 3, crew="san-1")
    phone = await new_phone(browser, phones)
    await phone.sign_in(live_server, world.device("san-1").token, 3)
    page = phone.page
    await phone.ctx.set_offline(True)
    await expect(page.get_by_test_id("sync-state")).to_have_text("Offline")
    photos: dict[str, list[bytes]] = {}
    for n, t in enumerate(tickets):
        tid = str(t.id)
        await phone.open_ticket(tid)
        await phone.tap("acknowledge", "Acknowledged")
        await phone.tap("start", "In progress")
        await page.locator("textarea[name=note-text]").fill(f"note {n} from the field")
        await phone.tap("add-note")
        await expect(page.locator(".notes li", has_text=f"note {n} from the field")).to_have_count(1)
        photos[tid] = [png_bytes(1000 + 2 * n), png_bytes(1001 + 2 * n)]
        for kind, data in zip(("before", "after"), photos[tid]):
            await page.locator(f"input[data-photo={kind}]").set_input_files(
                files=[{"name": f"{kind}.png", "mimeType": "image/png", "buffer": data}])
        await expect(page.locator("figure.photo")).to_have_count(2)
        await phone.tap("complete")
        await page.locator("#form textarea[name=note]").fill(f"completed {n}")
        await phone.tap("confirm-complete", "Completed")
        await page.locator("a.back").click()
    # 3 × (acknowledge, start, note, 2 photos, complete) waiting on the phone
    await expect(page.get_by_test_id("queued")).to_have_text("18 changes waiting")

    await page.reload()  # still offline: the service worker serves the app, IndexedDB still holds the work
    await expect(page.locator("a.ticket")).to_have_count(3)
    await expect(page.get_by_test_id("queued")).to_have_text("18 changes waiting")
    await expect(page.locator(".badge.completed")).to_have_count(3)

    await phone.ctx.set_offline(False)
    await expect(page.get_by_test_id("queued")).to_have_text("Nothing waiting", timeout=TIMEOUT_MS * 2)
    await expect(page.get_by_test_id("photos")).to_have_count(0, timeout=TIMEOUT_MS * 2)

    sup = world.supervisors["sanitation"]
    for n, t in enumerate(tickets):
        detail = await staff_get(live_server, sup, f"/v1/tickets/{t.id}")
        doc = detail["ticket"]
        assert doc["status"] == "completed"
        # the added note and the completion's note each became one ticket note, however often the pushes were resent
        assert sorted(x["text"] for x in doc["notes"]) == sorted([f"note {n} from the field", f"completed {n}"])
        want = sorted((hashlib.sha256(d).hexdigest(), k) for d, k in zip(photos[str(t.id)], ("before", "after")))
        assert sorted((p["sha256"], p["kind"]) for p in doc["photos"]) == want
        assert all(p["state"] == "available" for p in doc["photos"])
        actions = [h["action"] for h in detail["history"] if h["actor_kind"] == "device"]
        # each crew intent recorded once: no replay applied twice
        for op in ("acknowledge", "start", "complete"):
            assert actions.count(op) == 1, actions


async def test_reassigned_while_offline_shows_the_late_field_report_in_words(
        browser: Browser, phones: list[Phone], live_server: Server, world: World, pool: asyncpg.Pool) -> None:
    [ticket] = await make_tickets(pool, world, 1, crew="san-1")
    phone = await new_phone(browser, phones)
    await phone.sign_in(live_server, world.device("san-1").token, 1)
    await phone.ctx.set_offline(True)
    await phone.open_ticket(str(ticket.id))
    await phone.tap("start", "In progress")
    await phone.tap("complete")
    await phone.tap("confirm-complete", "Completed")
    await staff_post(live_server, world.supervisors["sanitation"], f"/v1/tickets/{ticket.id}/assign", {"crew": "san-2"})
    await phone.ctx.set_offline(False)
    message = phone.page.get_by_test_id("message").filter(has_text="Late field report")
    await expect(message).to_contain_text("was moved to another crew while you were offline", timeout=TIMEOUT_MS * 2)
    await expect(message).to_contain_text("kept and sent to the supervisor")
    await phone.page.locator("a.back").click()
    await expect(phone.page.locator("a.ticket")).to_have_count(0)
    conflicts = await staff_get(live_server, world.supervisors["sanitation"], f"/v1/conflicts?state=all&ticket_id={ticket.id}")
    assert [c["kind"] for c in conflicts["conflicts"]].count("late_field_report") == 1


async def test_two_phones_of_one_crew_converge(
        browser: Browser, phones: list[Phone], live_server: Server, world: World, pool: asyncpg.Pool) -> None:
    tickets = await make_tickets(pool, world, 2, crew="san-1")
    a, b = await new_phone(browser, phones), await new_phone(browser, phones)
    await a.sign_in(live_server, world.device("san-1", 0).token, 2)
    await b.sign_in(live_server, world.device("san-1", 1).token, 2)
    t1, t2 = (str(t.id) for t in tickets)
    await a.ctx.set_offline(True)
    await a.open_ticket(t1)
    await a.tap("start", "In progress")
    await a.page.locator("textarea[name=note-text]").fill("from phone A")
    await a.tap("add-note")
    await b.open_ticket(t1)
    await b.page.locator("textarea[name=note-text]").fill("from phone B")
    await b.tap("add-note")
    await b.page.locator("a.back").click()
    await b.open_ticket(t2)
    await b.tap("acknowledge", "Acknowledged")
    await a.ctx.set_offline(False)
    last: tuple[Any, Any] = (None, None)
    for _ in range(450):  # bounded: 90 s+ for pushes, live pokes and pulls on both phones (a loaded machine)
        last = (await a.replica(), await b.replica())
        if last[0] and last[1] and last[0]["outbox"] == last[1]["outbox"] == 0 and last[0]["tickets"] == last[1]["tickets"] \
                and sorted(n["text"] for n in next(t for t in last[0]["tickets"] if t["id"] == t1)["notes"]) == ["from phone A", "from phone B"]:
            break
        await asyncio.sleep(0.2)
    ra, rb = last
    assert ra is not None and rb is not None and ra["outbox"] == rb["outbox"] == 0
    assert ra["tickets"] == rb["tickets"]
    by_id = {t["id"]: t for t in ra["tickets"]}
    assert by_id[t1]["status"] == "in_progress" and by_id[t2]["status"] == "acknowledged"
    assert sorted(n["text"] for n in by_id[t1]["notes"]) == ["from phone A", "from phone B"]
    server_doc = (await staff_get(live_server, world.supervisors["sanitation"], f"/v1/tickets/{t1}"))["ticket"]
    assert server_doc == by_id[t1]
    await expect(a.page.get_by_test_id("status")).to_have_text("In progress")


async def test_self_report_creates_a_completed_ticket_for_the_crew(
        browser: Browser, phones: list[Phone], live_server: Server, world: World, pool: asyncpg.Pool) -> None:
    await make_tickets(pool, world, 1, crew="san-1")
    phone = await new_phone(browser, phones)
    device = world.device("san-1")
    await phone.sign_in(live_server, device.token, 1)
    page = phone.page
    await page.locator("a.tab", has_text="Report job").click()
    await page.locator("select[name=service_type]").select_option("Graffiti Removal")
    await page.locator("input[name=address]").fill("700 S Main St")
    await page.locator("textarea[name=description]").fill("Tag on utility box")
    await phone.tap("self-report")
    await expect(page.get_by_test_id("status")).to_have_text("Completed")
    await expect(page.get_by_test_id("queued")).to_have_text("Nothing waiting", timeout=TIMEOUT_MS * 2)
    ticket_id = page.url.rsplit("/", 1)[1]
    doc = (await staff_get(live_server, world.supervisors["sanitation"], f"/v1/tickets/{ticket_id}"))["ticket"]
    assert (doc["status"], doc["service_type"], doc["address"], doc["crew"]) == ("completed", "Graffiti Removal", "700 S Main St", "san-1")
    assert doc["created_by_device"] == device.device_id and doc["description"] == "Tag on utility box"


async def test_push_answer_lost_after_commit_is_resent_and_applied_once(
        browser: Browser, phones: list[Phone], live_server: Server, world: World, pool: asyncpg.Pool) -> None:
    """A dead spot right after the server committed a push: the phone never hears the answer and, with the browser still
    believing it is online, must say it cannot reach the server, keep the work, and resend it once the network is back."""
    [ticket] = await make_tickets(pool, world, 1, crew="san-1")
    relay = await Relay(int(live_server.url.rsplit(":", 1)[1])).start()
    try:
        phone = await new_phone(browser, phones)
        await phone.sign_in(Server(live_server.app, live_server.runner, relay.url), world.device("san-1").token, 1)
        page = phone.page
        await phone.open_ticket(str(ticket.id))
        relay.drop_answer_to(b"POST /v1/sync/push")
        await phone.tap("acknowledge", "Acknowledged")
        await asyncio.wait_for(relay.cut_event.wait(), TIMEOUT_MS / 1000)
        sup = world.supervisors["sanitation"]
        # the server did commit it: only the answer was lost
        assert (await staff_get(live_server, sup, f"/v1/tickets/{ticket.id}"))["ticket"]["status"] == "acknowledged"
        await expect(page.get_by_test_id("sync-state")).to_have_text("Offline")
        await page.locator("textarea[name=note-text]").fill("written in the dead spot")
        await phone.tap("add-note")
        await expect(page.get_by_test_id("queued")).to_have_text("2 changes waiting")
        assert await page.evaluate("() => navigator.onLine")  # the browser never knew: only failed requests told the app

        await relay.start()
        await expect(page.get_by_test_id("queued")).to_have_text("Nothing waiting", timeout=30_000)
        await expect(page.get_by_test_id("sync-state")).to_have_text("Up to date")
        assert relay.answers_dropped == 1
        detail = await staff_get(live_server, sup, f"/v1/tickets/{ticket.id}")
        assert detail["ticket"]["status"] == "acknowledged"
        assert [n["text"] for n in detail["ticket"]["notes"]] == ["written in the dead spot"]
        actions = [h["action"] for h in detail["history"] if h["actor_kind"] == "device"]
        assert actions.count("acknowledge") == 1, actions  # the resent push was answered from its stored result
        assert not [m for m in await page.get_by_test_id("message").all_text_contents() if "rejected" in m.lower()]
    finally:
        await relay.cut()
