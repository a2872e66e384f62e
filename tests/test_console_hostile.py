"""Hostile input to the console and to bearer authentication, over real HTTP: each was a 500 and is now a typed 4xx
that changes nothing (no audit row, no session, no resolution, no revocation). Found by a hand sweep of the forms
and filters: NUL and bytes above 0x7f in fields, cookies and tokens, a multipart body without its boundary, ids and
page numbers beyond bigint."""

from __future__ import annotations

import re

import aiohttp
import asyncpg

from sync_server.passwords import set_password
from tests.conftest import Server
from tests.factories import World
from tests.rawhttp import send

PASSWORD = "correct horse battery"
SAN = "sup-sanitation"
ZERO = "00000000-0000-4000-8000-000000000000"


async def state(pool: asyncpg.Pool) -> tuple[int, ...]:
    """What a refused request must leave alone."""
    return tuple([await pool.fetchval(q) for q in (
        "SELECT count(*) FROM audit_log", "SELECT count(*) FROM console_sessions",
        "SELECT count(*) FROM devices WHERE revoked_at IS NOT NULL", "SELECT count(*) FROM conflicts WHERE resolved_at IS NOT NULL")])


async def login_form(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    """The sign-in page's CSRF field and the cookie header that goes with it."""
    async with http.get(url + "/console/login") as r:
        html = await r.text()
    field = re.search(r'name="login_csrf" value="([^"]+)"', html)
    assert field is not None
    return field.group(1), "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)


async def test_hostile_sign_in_and_cookies_are_typed_refusals(server: Server, world: World, pool: asyncpg.Pool) -> None:
    url = server.url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        field, cookie = await login_form(http, url)
        before = await state(pool)
        form = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
        r = await send(url, "POST", "/console/login", form, f"username=a%00b&password=x&login_csrf={field}".encode())
        assert r.status == 422 and b"cannot be stored" in r.body  # reached the audit INSERT with a NUL: a 500
        r = await send(url, "POST", "/console/login", {**form, "Content-Type": "multipart/form-data; boundary=xx"}, b"--xx-")
        assert r.status == 400  # aiohttp's ValueError for a body without its boundary was a 500
        login_cookie = cookie.split("=", 1)[0]
        r = await send(url, "POST", "/console/login", {**form, "Cookie": f"{login_cookie}=\xff\xfe"},
                       f"username={SAN}&password=x&login_csrf={field}".encode())
        assert r.status == 403  # a CSRF cookie that cannot be encoded never matches (was a 500)
        for name in ("fs_console", "__Host-fs_console"):
            r = await send(url, "GET", "/console/", {"Cookie": f"{name}=\xff\xfe"})
            assert r.status == 303 and r.headers["location"] == "/console/login"  # every page was a 500
        r = await send(url, "GET", "/v1/crews", {"Authorization": "Bearer fsu_\xff\xfe"})
        assert r.status == 401 and r.json()["error"]["code"] == "unauthorized"  # a bearer token, likewise
        assert await state(pool) == before


async def test_hostile_filters_ids_and_fields_of_a_signed_in_supervisor(server: Server, world: World,
                                                                         pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await set_password(conn, SAN, PASSWORD, actor="test")
    url = server.url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        field, _ = await login_form(http, url)
        async with http.post(url + "/console/login", data={"username": SAN, "password": PASSWORD, "login_csrf": field},
                             allow_redirects=False) as r:
            assert r.status == 303
        async with http.get(url + "/console/") as r:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        assert csrf is not None
        before = await state(pool)
        for path, status in [("/console/?q=%00", 422), ("/console/conflicts?kind=%00", 422),
                             ("/console/conflicts?crew=%00", 422), ("/console/?page=99999999999999999999999", 200)]:
            async with http.get(url + path, allow_redirects=False) as r:
                assert r.status == status, (path, r.status)
        for path, data, status in [
            ("/console/conflicts/99999999999999999999/resolve", {"resolution": "done"}, 404),
            ("/console/devices/%00/revoke", {}, 404),
            ("/console/devices", {"crew": "san-1", "label": "truck\x00"}, 422),
            ("/console/dispatch", {"action": "priority", "priority": "high", "sel": f"{ZERO}:{2**40}"}, 422),
        ]:
            async with http.post(url + path, data={**data, "csrf": csrf.group(1)}, allow_redirects=False) as r:
                assert r.status == status, (path, r.status)
        assert await state(pool) == before
