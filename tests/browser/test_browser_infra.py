"""The browser fixture itself: Debian Chromium starts headless and reaches the live test server on loopback."""

from __future__ import annotations

from playwright.async_api import Page

from tests.conftest import Server


async def test_chromium_reaches_live_server(page: Page, live_server: Server) -> None:
    """A real page load over 127.0.0.1 returns the server's health answer."""
    resp = await page.goto(live_server.url + "/healthz")
    assert resp is not None and resp.status == 200
    assert "ok" in (await page.content()).lower()
    assert "HeadlessChrome" in await page.evaluate("navigator.userAgent")
